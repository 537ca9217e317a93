//! An interrupted backup indexes the packs it stored, so the next run reuses them (regression:
//! interrupted runs used to leave their packs unindexed and the next run uploaded everything again).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vault::archiver::{backup, BackupOptions, Progress};
use vault::backend::local::LocalBackend;
use vault::backend::Store;
use vault::crypto::Passphrase;
use vault::repo::{InitOptions, Repository};

/// A new folder repository under `dir`, and its passphrase.
fn new_repo(dir: &std::path::Path) -> (Repository, Passphrase) {
    let store = Store::new(Arc::new(LocalBackend::new(dir.join("repo")))).unwrap();
    let pass = Passphrase::new("pw".into());
    let repo = Repository::init(
        store,
        &pass,
        &InitOptions {
            scrypt_log_n: 10,
            ..Default::default()
        },
    )
    .unwrap();
    (repo, pass)
}

#[test]
fn interrupted_backup_is_resumed_not_repeated() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..40u8 {
        let mut data = vec![0u8; 4 * 1024 * 1024];
        vault::crypto::fill_random(&mut data);
        std::fs::write(src.join(format!("clip{i}.mp4")), data).unwrap();
    }
    let (repo, pass) = new_repo(tmp.path());
    let opts = BackupOptions {
        paths: vec![src.clone()],
        tags: vec![],
        excludes: vec![],
        host: "h".into(),
        threads: 2,
        uploads: 2,
        exclude_paths: vec![],
        force_reread: false,
        count_first: true,
        time: None,
        skip_if_unchanged: false,
    };
    let progress = Arc::new(Progress::default());
    let watcher = {
        let p = progress.clone();
        std::thread::spawn(move || {
            // Stop once about 100 MiB went through: several packs are stored by then.
            while p.bytes_done.load(Ordering::Relaxed) < 100 << 20 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            vault::interrupt::request();
        })
    };
    let r = backup(&repo, &opts, progress);
    watcher.join().unwrap();
    assert!(
        matches!(r, Err(vault::Error::Interrupted)),
        "expected an interruption"
    );
    vault::interrupt::reset();

    // A fresh in-memory local index: what counts is what the repository holds.
    let repo = Repository::open(repo.store().clone(), &pass).unwrap();
    let indexed = repo.cache().unwrap().blob_count().unwrap() as usize;
    assert!(indexed > 0, "the interrupted run must index what it stored");
    let s = backup(&repo, &opts, Arc::new(Progress::default())).unwrap();
    assert!(
        s.blobs_reused as usize >= indexed,
        "reused {} of {indexed}",
        s.blobs_reused
    );
}

/// Regression (issue 21, item 1): packs stored by a run that failed before its index object
/// was written (the disk filled up just then) were in no index, and the next run stored their
/// data again; now the local index remembers them and the next writer indexes them first.
#[test]
fn packs_a_failed_run_stored_but_never_indexed_are_indexed_by_the_next() {
    use vault::backend::FileType;
    use vault::blobwriter::BlobWriter;
    use vault::format::BlobType;
    let tmp = tempfile::tempdir().unwrap();
    let (repo, pass) = new_repo(tmp.path());
    let mut ids = Vec::new();
    {
        let w = BlobWriter::new(&repo, 1).unwrap();
        for i in 0..20u8 {
            let mut data = vec![i; 300_000];
            vault::crypto::fill_random(&mut data[..1000]);
            ids.push(w.add(BlobType::Data, &data).unwrap());
        }
        for pack in w.flush().unwrap() {
            w.store_pack(pack).unwrap();
        }
        // The run fails here: no index object, no salvage.
    }
    assert_eq!(repo.store().list(FileType::Index).unwrap().len(), 0);
    let cache = repo.cache().unwrap();
    assert!(ids.iter().all(|id| !cache.has_blob(id).unwrap()));
    let w = BlobWriter::new(&repo, 1).unwrap();
    assert_eq!(repo.store().list(FileType::Index).unwrap().len(), 1);
    for id in &ids {
        assert!(!w.claim(*id).unwrap(), "stored already: not claimed again");
    }
    // A fresh computer sees them too: they are in the repository's index.
    let other = Repository::open(repo.store().clone(), &pass).unwrap();
    assert!(ids
        .iter()
        .all(|id| other.cache().unwrap().has_blob(id).unwrap()));
}
