//! An interrupted backup indexes the packs it stored, so the next run reuses them (regression:
//! interrupted runs used to leave their packs unindexed and the next run uploaded everything again).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vault::archiver::{backup, BackupOptions, Progress};
use vault::backend::local::LocalBackend;
use vault::backend::Store;
use vault::crypto::Passphrase;
use vault::repo::{InitOptions, Repository};

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
    let store = Store::new(Arc::new(LocalBackend::new(tmp.path().join("repo")))).unwrap();
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
