//! The progress model (issue 23): what a display is given, not how it draws it. A backup's
//! unchanged files are not work; a move names each stage and starts its counters afresh.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use vault::archiver::{self, BackupOptions, Progress};
use vault::backend::local::LocalBackend;
use vault::backend::Store;
use vault::cache::CachePlace;
use vault::crypto::Passphrase;
use vault::mover::{self, Destination, MoveOptions};
use vault::repo::{InitOptions, Repository};

/// The repository at `dir` opened again, as the next run of the command would.
fn reopen(dir: &Path) -> Repository {
    let store = Store::new(Arc::new(LocalBackend::new(dir))).unwrap();
    let mut repo = Repository::open(
        store,
        &Passphrase::new("correct horse battery staple".into()),
    )
    .unwrap();
    repo.set_cache_place(CachePlace::Dir(dir.with_extension("cache")));
    repo
}

fn repo_at(dir: &Path) -> Repository {
    let store = Store::new(Arc::new(LocalBackend::new(dir))).unwrap();
    let mut repo = Repository::init(
        store,
        &Passphrase::new("correct horse battery staple".into()),
        &InitOptions {
            scrypt_log_n: 10,
            ..Default::default()
        },
    )
    .unwrap();
    // A cache folder: the local index is what tells a backup which files are unchanged.
    repo.set_cache_place(CachePlace::Dir(dir.with_extension("cache")));
    repo
}

fn options(src: &Path) -> BackupOptions {
    BackupOptions {
        paths: vec![src.to_path_buf()],
        host: "laptop".into(),
        threads: 2,
        uploads: 2,
        count_first: true,
        ..Default::default()
    }
}

/// An incremental backup's work is the changed file alone: the unchanged ones are counted
/// apart, so "200 MiB of 1.35 GiB at 7.67 GiB/s" cannot happen.
#[test]
fn an_incremental_backup_counts_only_changed_files_as_work() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // Written an hour ago: files changed within two seconds of a backup are read again by the
    // next one (the racy-file rule), which is not what this test is about.
    let hour_ago = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - 3600
    };
    for i in 0..5u8 {
        let p = src.join(format!("p{i}.jpg"));
        fs::write(&p, vec![i; 50_000]).unwrap();
        common::set_mtime(&p, hour_ago());
    }
    let repo = repo_at(&dir.path().join("repo"));
    let first = Arc::new(Progress::default());
    first.begin("backing up");
    archiver::backup(&repo, &options(&src), first.clone()).unwrap();
    let s = first.state();
    assert_eq!((s.files_done, s.files_total), (5, 5));
    assert_eq!(
        (s.bytes_done, s.bytes_total, s.unchanged_files),
        (250_000, 250_000, 0)
    );

    fs::write(src.join("p2.jpg"), vec![9u8; 70_000]).unwrap();
    common::set_mtime(&src.join("p2.jpg"), hour_ago() + 60);
    let second = Arc::new(Progress::default());
    second.begin("backing up");
    drop(repo);
    let repo = reopen(&dir.path().join("repo"));
    let summary = archiver::backup(&repo, &options(&src), second.clone()).unwrap();
    assert_eq!(
        summary.files_unchanged, 4,
        "the local index knew the others"
    );
    let s = second.state();
    assert_eq!(s.stage.as_deref(), Some("backing up"));
    assert!(!s.counting);
    assert_eq!(s.unchanged_files, 4);
    assert_eq!((s.files_done, s.files_total), (1, 1), "{s:?}");
    assert_eq!((s.bytes_done, s.bytes_total), (70_000, 70_000), "{s:?}");
    assert_eq!(s.bytes_left(), Some(0));
}

/// A move is a sequence of named stages, each with its own counters: the bar no longer goes
/// backwards (12.00 → 2.89 MiB) without saying why.
#[test]
fn a_move_names_its_stages() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Private");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.jpg"), vec![1u8; 40_000]).unwrap();
    fs::write(src.join("b.jpg"), vec![2u8; 30_000]).unwrap();
    let drive = repo_at(&dir.path().join("drive"));
    let cloud = repo_at(&dir.path().join("cloud"));
    let dests = [
        Destination {
            name: "drive".into(),
            repo: &drive,
        },
        Destination {
            name: "cloud".into(),
            repo: &cloud,
        },
    ];
    let progress = Arc::new(Progress::default());
    let report = mover::run(
        &dests,
        &MoveOptions {
            backup: options(&src),
            copies: 2,
            threads: 2,
        },
        progress.clone(),
    )
    .unwrap();
    assert!(!src.join("a.jpg").exists(), "moved");
    assert_eq!(report.repositories.len(), 2);
    assert_eq!(
        progress.stages(),
        [
            "backing up to drive",
            "reading back from drive",
            "backing up to cloud",
            "reading back from cloud",
            "comparing with the files here",
            "recording what moved",
            "deleting the originals",
        ]
    );
}
