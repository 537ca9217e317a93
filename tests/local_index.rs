//! The local index: incremental backups that read only what changed, a cache that can be
//! deleted at any time, and several clients backing up into one repository at once.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

/// Files with old mtimes (the local index does not remember files modified in the last
/// seconds before a run) and enough content that reading it shows in the byte counts.
fn library(root: &Path, files: usize) -> u64 {
    let mut total = 0;
    for i in 0..files {
        let dir = root.join(format!("album {}", i % 4));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("IMG_{i:04}.JPG"));
        let data = noise(200_000 + i * 1000, i as u64 + 1);
        total += data.len() as u64;
        fs::write(&p, data).unwrap();
        set_mtime(&p, 1_600_000_000 + i as i64);
    }
    total
}

fn backup(env: &Env, src: &Path, extra: &[&str]) -> Value {
    let out = env
        .vault()
        .args(["--json", "backup"])
        .args(extra)
        .arg(src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// Bytes the `vault backup` process read through read(2) and friends, from the kernel's
/// accounting (/proc/PID/io `rchar`, which a parent inherits from reaped children): an
/// independent check of vault's own counters.
fn backup_rchar(env: &Env, src: &Path) -> u64 {
    let out = std::process::Command::new("sh")
        .env_clear()
        .envs(env.envs())
        .env("VAULT_BIN", assert_cmd::cargo::cargo_bin("vault"))
        .env("SRC", src)
        .args([
            "-c",
            r#""$VAULT_BIN" --quiet backup "$SRC" >/dev/null || exit 1; grep '^rchar' /proc/$$/io"#,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8(out.stdout).unwrap();
    s.trim()
        .strip_prefix("rchar:")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn ls(env: &Env, snapshot: &str) -> String {
    let out = env.vault().args(["ls", snapshot]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn snapshots(env: &Env) -> Value {
    let out = env.vault().args(["--json", "snapshots"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn unchanged_and_chmodded_files_are_not_read_and_force_reread_catches_hidden_edits() {
    let env = Env::new();
    let src = env.path("src");
    let total = library(&src, 24);
    env.init();
    let first = backup(&env, &src, &[]);
    assert_eq!(n(&first, "bytes_read"), total);
    assert_eq!(n(&first, "files_unchanged"), 0);

    let again = backup(&env, &src, &[]);
    assert_eq!(n(&again, "files"), 24);
    // Regression: the snapshot's size is the files' total, not what this run happened to read.
    assert_eq!(n(&again, "bytes"), total);
    let listed = snapshots(&env);
    assert_eq!(listed[1]["bytes"].as_u64(), Some(total), "{listed}");
    assert_eq!(n(&again, "files_unchanged"), 24);
    assert_eq!(n(&again, "bytes_read"), 0);
    assert_eq!(n(&again, "bytes_sampled"), 0);
    assert_eq!(n(&again, "packs_written"), 0);
    // The kernel agrees: a no-change run reads a small fraction of the content (the local
    // index, repository metadata); the first run read all of it.
    let quiet = backup_rchar(&env, &src);
    assert!(
        quiet < total / 4,
        "no-change run read {quiet} bytes of {total}"
    );

    // chmod changes ctime only: metadata is refreshed, no content read.
    for f in all_files(&src) {
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    }
    let chmod = backup(&env, &src, &[]);
    assert_eq!(n(&chmod, "files_unchanged"), 24);
    assert_eq!(n(&chmod, "bytes_read"), 0);
    assert_eq!(n(&chmod, "bytes_sampled"), 0);
    let chmod_rchar = backup_rchar(&env, &src);
    assert!(
        chmod_rchar < total / 4,
        "chmod run read {chmod_rchar} bytes"
    );
    env.assert_restores(&src, "chmod-restore");

    // Same size, same mtime, content edited in place: the documented blind spot of a
    // metadata check...
    let victim = src.join("album 1/IMG_0005.JPG");
    let mut data = fs::read(&victim).unwrap();
    data[100_000] ^= 0xff;
    fs::write(&victim, &data).unwrap();
    set_mtime(&victim, 1_600_000_005);
    let blind = backup(&env, &src, &[]);
    assert_eq!(n(&blind, "bytes_read"), 0);
    // ...which --force-reread closes: every file is read, the edit is stored.
    let forced = backup(&env, &src, &["--force-reread"]);
    assert_eq!(n(&forced, "bytes_read"), total);
    assert_eq!(n(&forced, "files_unchanged"), 0);
    assert!(n(&forced, "blobs_new") >= 1);
    let out = env.path("forced-restore");
    env.vault()
        .args(["restore", "--target"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(fs::read(restored(&out, &victim)).unwrap(), data);
}

#[test]
fn new_inode_with_same_times_is_verified_by_sample_and_edits_are_caught() {
    let env = Env::new();
    let src = env.path("src");
    library(&src, 6);
    env.init();
    backup(&env, &src, &[]);

    // A copy with preserved times replaces the original (new inode): the sample matches, the
    // content is not read again.
    let copied = src.join("album 0/IMG_0000.JPG");
    let tmp = src.join("album 0/.tmp");
    fs::copy(&copied, &tmp).unwrap();
    set_mtime(&tmp, 1_600_000_000);
    fs::rename(&tmp, &copied).unwrap();
    let s = backup(&env, &src, &[]);
    assert_eq!(n(&s, "bytes_read"), 0);
    assert_eq!(n(&s, "bytes_sampled"), 128 * 1024);
    assert_eq!(n(&s, "files_unchanged"), 6);

    // What exiftool -P does: rewrite the metadata at the head into a new file, keep the
    // mtime. Same size, same mtime, new inode: the sample differs and the file is read.
    let edited = src.join("album 1/IMG_0001.JPG");
    let mut data = fs::read(&edited).unwrap();
    data[20..30].copy_from_slice(b"GPS 0.0000");
    let size = data.len() as u64;
    fs::write(&tmp, &data).unwrap();
    set_mtime(&tmp, 1_600_000_001);
    fs::rename(&tmp, &edited).unwrap();
    let s = backup(&env, &src, &[]);
    assert_eq!(n(&s, "bytes_read"), size);
    assert_eq!(n(&s, "files_unchanged"), 5);
    env.assert_restores(&src, "out");

    // A renamed file is read again (its path is new) but its data is not stored again.
    fs::rename(
        src.join("album 2/IMG_0002.JPG"),
        src.join("album 3/moved.JPG"),
    )
    .unwrap();
    let s = backup(&env, &src, &[]);
    assert!(n(&s, "bytes_read") > 0);
    assert_eq!(n(&s, "files_unchanged"), 5);
    let data_added = n(&s, "bytes_added");
    assert!(
        data_added < 10_000,
        "a moved photo was stored again ({data_added} bytes)"
    );
}

#[test]
fn deleting_the_local_index_changes_no_result() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    // Files written seconds ago are re-read until they are older (see `racy_after`).
    for f in all_files(&src) {
        if fs::symlink_metadata(&f).unwrap().is_file() {
            set_mtime(&f, 1_650_000_000);
        }
    }
    library(&src.join("library"), 8);
    env.init();
    let first = backup(&env, &src, &[]);
    let snap = first["snapshot"].as_str().unwrap().to_string();
    let listed = snapshots(&env);
    let listing = ls(&env, &snap[..8]);
    let cache = env.path("home/.cache/vault");
    assert!(cache.is_dir());

    fs::remove_dir_all(&cache).unwrap();
    assert_eq!(snapshots(&env), listed);
    fs::remove_dir_all(&cache).unwrap();
    assert_eq!(ls(&env, &snap[..8]), listing);
    fs::remove_dir_all(&cache).unwrap();
    env.assert_restores(&src, "out");

    // The next backup after losing the index reads the files again, stores nothing new and
    // records the same tree; the one after that reads nothing.
    fs::remove_dir_all(&cache).unwrap();
    let after = backup(&env, &src, &[]);
    assert_eq!(n(&after, "packs_written"), 0);
    assert_eq!(n(&after, "blobs_new"), 0);
    assert_eq!(n(&after, "files_unchanged"), 0);
    let snap2 = after["snapshot"].as_str().unwrap().to_string();
    assert_eq!(ls(&env, &snap2[..8]), listing);
    let next = backup(&env, &src, &[]);
    assert_eq!(n(&next, "bytes_read"), 0);
    assert_eq!(n(&next, "files_unchanged"), n(&next, "files"));

    // A damaged database is replaced, not trusted and not fatal.
    let db = fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("index.sqlite");
    fs::write(&db, vec![0x5a; 64 * 1024]).unwrap();
    let _ = fs::remove_file(db.with_extension("sqlite-wal"));
    let _ = fs::remove_file(db.with_extension("sqlite-shm"));
    assert_eq!(snapshots(&env).as_array().unwrap().len(), 3);
}

#[test]
fn cache_dir_option_and_no_cache() {
    let env = Env::new();
    let src = env.path("src");
    library(&src, 2);
    env.init();
    let dir = env.path("elsewhere");
    env.vault()
        .env("VAULT_CACHE_DIR", &dir)
        .arg("backup")
        .arg(&src)
        .assert()
        .success();
    assert!(dir.is_dir(), "VAULT_CACHE_DIR is used");
    assert!(!env.path("home/.cache/vault").exists());
    // Regression: --no-cache conflicted with a VAULT_CACHE_DIR from the environment.
    let other = env.path("unused");
    let s: Value = serde_json::from_slice(
        &env.vault()
            .env("VAULT_CACHE_DIR", &other)
            .args(["--no-cache", "--json", "backup"])
            .arg(&src)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        n(&s, "files_unchanged"),
        0,
        "memory only: nothing remembered"
    );
    assert!(!other.exists());
}

#[test]
fn a_pruned_repository_is_the_truth_not_the_local_index() {
    // Someone deletes every snapshot, index and pack (vault itself never deletes): this
    // machine's local index still lists the files and their blobs, and must not trust it.
    let env = Env::new();
    let src = env.path("src");
    let total = library(&src, 10);
    env.init();
    backup(&env, &src, &[]);
    let first = objects(&env.repo(), "snapshots");
    let first = first[0].file_name().unwrap().to_string_lossy().into_owned();
    // Second copies too (design.md §2.2): whoever deletes everything deletes them as well.
    for dir in [
        "snapshots",
        "index",
        "data",
        "copies/snapshots",
        "copies/trees",
    ] {
        for f in objects(&env.repo(), dir) {
            fs::remove_file(f).unwrap();
        }
    }
    let s = backup(&env, &src, &[]);
    assert_eq!(n(&s, "bytes_read"), total, "{s}");
    assert!(n(&s, "packs_written") > 0);
    // The data of the new snapshot is all there; the one error is the snapshot that vanished.
    let out = env.vault().args(["check", "--read-data"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("snapshot {} is missing", &first[..8])),
        "{stderr}"
    );
    assert!(
        !stderr.contains("pack ") && !stderr.contains("blob "),
        "{stderr}"
    );
    env.assert_restores(&src, "out");
}

/// Two `vault backup` processes started together into one repository. `shared_home`: both
/// use the same local index (two runs on one machine); otherwise two devices.
fn concurrent_backups(env: &Env, shared_home: bool) {
    let a = env.path("a");
    let b = env.path("b");
    library(&a, 12);
    library(&b.join("other"), 6);
    // Both trees hold one identical photo.
    fs::copy(a.join("album 0/IMG_0000.JPG"), b.join("shared.JPG")).unwrap();
    env.init();
    let home_b = if shared_home {
        env.path("home")
    } else {
        env.path("home-b")
    };
    let spawn = |src: &Path, home: &Path, host: &str| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("vault"))
            .env_clear()
            .envs(env.envs())
            .env("HOME", home)
            .args(["--json", "backup", "--host", host])
            .arg(src)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let pa = spawn(&a, &env.path("home"), "laptop");
    let pb = spawn(&b, &home_b, "desktop");
    let (oa, ob) = (
        pa.wait_with_output().unwrap(),
        pb.wait_with_output().unwrap(),
    );
    assert!(oa.status.success(), "{oa:?}");
    assert!(ob.status.success(), "{ob:?}");
    env.check_read_data();
    let snaps = snapshots(env);
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    for (src, out) in [(&a, "out-a"), (&b, "out-b")] {
        let json: Value =
            serde_json::from_slice(if src == &a { &oa.stdout } else { &ob.stdout }).unwrap();
        let id = json["snapshot"].as_str().unwrap();
        let target = env.path(out);
        env.vault()
            .args(["restore", &id[..8], "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_same_tree(src, &restored(&target, src));
    }
    // Each device now dedups against what the other uploaded: the laptop backing up the
    // desktop's folder stores no file data.
    let s = backup(env, &b, &["--host", "laptop"]);
    assert_eq!(n(&s, "packs_written"), 0, "{s}");
    assert_eq!(n(&s, "blobs_new"), 0, "{s}");
}

#[test]
fn two_devices_back_up_into_one_folder_repository_at_once() {
    concurrent_backups(&Env::new(), false);
}

#[test]
fn two_runs_on_one_machine_share_the_local_index_at_once() {
    concurrent_backups(&Env::new(), true);
}

#[test]
fn two_devices_back_up_into_one_bucket_at_once() {
    let Some(endpoint) = s3_endpoint() else {
        return;
    };
    concurrent_backups(&Env::s3(&endpoint), false);
}
