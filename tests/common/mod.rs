//! Helpers shared by the CLI integration tests: an isolated environment, tree generators and
//! tree comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub mod proxy;

pub const PASS: &str = "correct horse battery staple";

/// The S3 server started by scripts/test-all.sh, if any. With VAULT_TEST_S3_REQUIRED set, a
/// missing server is a failure rather than a skip.
pub fn s3_endpoint() -> Option<String> {
    match std::env::var("VAULT_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var_os("VAULT_TEST_S3_REQUIRED").is_none(),
                "VAULT_TEST_S3_REQUIRED is set but VAULT_TEST_S3_ENDPOINT is not"
            );
            eprintln!("skipping S3 test: no S3 server (run scripts/test-all.sh)");
            None
        }
    }
}

/// True when the test S3 server supports Object Lock (Garage does not).
pub fn s3_has_object_lock() -> bool {
    std::env::var_os("VAULT_TEST_S3_NO_OBJECT_LOCK").is_none()
}

/// A fresh bucket name for one test.
pub fn unique_bucket() -> String {
    let mut b = [0u8; 6];
    vault::crypto::fill_random(&mut b);
    format!("vault-test-{}", hex::encode(b))
}

/// An isolated world: its own HOME, data dir and repository.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// `s3://...` for S3 repositories; the local folder `repo` otherwise.
    pub url: Option<String>,
    /// S3 endpoint the `vault` commands use (may be a fault proxy).
    pub endpoint: Option<String>,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
            url: None,
            endpoint: None,
        }
    }
    /// An environment whose repository is a new bucket on the test S3 server (or a new prefix in
    /// VAULT_TEST_S3_BUCKET, for servers where tests cannot create buckets).
    pub fn s3(endpoint: &str) -> Env {
        let mut e = Env::new();
        e.url = Some(match std::env::var("VAULT_TEST_S3_BUCKET") {
            Ok(b) if !b.is_empty() => format!("s3://{b}/{}/repo", unique_bucket()),
            _ => format!("s3://{}/repo", unique_bucket()),
        });
        e.endpoint = Some(endpoint.to_string());
        e
    }
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    pub fn repo_arg(&self) -> std::ffi::OsString {
        match &self.url {
            Some(u) => u.into(),
            None => self.repo().into_os_string(),
        }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    /// `vault` with the passphrase and repository set, and nothing from the real HOME.
    pub fn vault(&self) -> Command {
        let mut c = Command::cargo_bin("vault").expect("binary");
        c.env_clear().envs(self.envs());
        c
    }
    /// The whole environment `vault()` runs with.
    pub fn envs(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        let mut v: Vec<(std::ffi::OsString, std::ffi::OsString)> = vec![
            ("PATH".into(), std::env::var_os("PATH").unwrap_or_default()),
            ("HOME".into(), self.path("home").into()),
            (
                "XDG_DATA_HOME".into(),
                self.path("home/.local/share").into(),
            ),
            ("VAULT_PASSWORD".into(), PASS.into()),
            ("VAULT_REPO".into(), self.repo_arg()),
        ];
        for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
            if let Some(val) = std::env::var_os(k) {
                v.push((k.into(), val));
            }
        }
        if let Some(e) = &self.endpoint {
            v.push(("AWS_ENDPOINT_URL".into(), e.into()));
        }
        v
    }
    /// The repository's key files, as `vault key list --json` reports them.
    pub fn key_list(&self) -> Vec<serde_json::Value> {
        let out = self
            .vault()
            .args(["key", "list", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array().unwrap().clone()
    }

    /// `vault restore --target TARGET` of the latest snapshot, for more arguments and
    /// assertions.
    pub fn restore_cmd(&self, target: &Path) -> Command {
        let mut c = self.vault();
        c.args(["restore", "--target"]).arg(target);
        c
    }
    /// `vault restore` of the latest snapshot into `dir` (under the environment) succeeds.
    pub fn restore_into(&self, dir: &str) -> PathBuf {
        let out = self.path(dir);
        self.restore_cmd(&out).assert().success();
        out
    }
    /// The latest snapshot restores into `dir` as an exact copy of `src`.
    pub fn assert_restores(&self, src: &Path, dir: &str) {
        let out = self.restore_into(dir);
        assert_same_tree(src, &restored(&out, src));
    }
    /// `vault backup --json SRC` succeeds; its summary.
    pub fn backup_json(&self, src: &Path) -> serde_json::Value {
        let out = self
            .vault()
            .args(["backup", "--json"])
            .arg(src)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
    /// The latest snapshot restores as an exact copy of `src` on a fresh computer (no local
    /// index, no settings): what the repository alone holds.
    pub fn assert_restores_fresh(&self, src: &Path) {
        let fresh = Env::new();
        let target = fresh.path("out");
        self.vault()
            .env("HOME", fresh.path("home"))
            .args(["restore", "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_same_tree(src, &restored(&target, src));
    }
    /// The repository's store, opened by the library (a folder or the test S3 bucket), to
    /// damage or inspect objects as a test needs.
    pub fn store(&self) -> vault::backend::Store {
        let mut loc =
            vault::backend::open::Location::new(self.repo_arg().to_string_lossy().to_string());
        if let Some(e) = &self.endpoint {
            loc.options.insert("endpoint".into(), e.clone());
        }
        vault::backend::open::open(&loc, &Default::default()).unwrap()
    }
    /// A write-only profile for a phone, made by the owner with `vault key add --write-only`;
    /// its file.
    pub fn phone_profile(&self) -> PathBuf {
        let profile = self.path("phone.profile");
        self.vault()
            .args(["key", "add", "--write-only", "--label", "phone"])
            .arg("--profile-file")
            .arg(&profile)
            .assert()
            .success();
        profile
    }
    /// `vault check --read-data` passes.
    pub fn check_read_data(&self) {
        self.vault()
            .args(["check", "--read-data"])
            .assert()
            .success();
    }

    /// The journals of unfinished restores (design.md §12), kept in the cache folder.
    pub fn restore_journals(&self) -> Vec<PathBuf> {
        let dir = self
            .path("home/.cache/vault")
            .join(vault::restorer::JOURNAL_DIR);
        fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// `vault init`, with a recovery key saved to [`Env::recovery_key`] (without a terminal
    /// none is made otherwise).
    pub fn init(&self) {
        // Tests that start over with a new repository in the same place save its key afresh.
        let _ = fs::remove_file(self.recovery_key());
        self.vault()
            .args(["init", "--kdf-log-n", "10", "--recovery-key-file"])
            .arg(self.recovery_key())
            .assert()
            .success();
    }
    /// Where [`Env::init`] saved the recovery key.
    pub fn recovery_key(&self) -> PathBuf {
        self.path("init-recovery-key.txt")
    }
}

/// A snapshot of the hand-made tree `root` (tests that play someone who holds the keys), with
/// one backed-up path and no history.
pub fn bare_snapshot(
    repo: &vault::repo::Repository,
    root: vault::Id,
    path: &[u8],
) -> vault::format::snapshot::Snapshot {
    vault::format::snapshot::Snapshot {
        repo_id: repo.repo_id(),
        time: 1_700_000_000,
        time_nanos: 0,
        host: "test".into(),
        paths: vec![path.to_vec()],
        tags: vec![],
        root,
        parent: None,
        previous: None,
        sequence: 1,
        original: None,
        // Readers stop a walk that meets more entries than a snapshot declares; hand-made
        // trees here declare plenty.
        summary: vault::format::snapshot::Summary {
            files: 1 << 40,
            ..Default::default()
        },
        writer: repo.keys().written_by(),
    }
}

/// Deterministic pseudo-random bytes (incompressible).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// The tree the foundation issue asks for.
pub fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("empty dir")).unwrap();
    fs::create_dir_all(root.join("photos/2024")).unwrap();
    fs::create_dir_all(root.join("copies")).unwrap();
    fs::write(root.join("empty file"), b"").unwrap();
    fs::write(root.join("one byte"), b"x").unwrap();
    fs::write(
        root.join("photos/2024/big video.mp4"),
        noise(5 * 1024 * 1024 + 12345, 1),
    )
    .unwrap();
    let twenty = noise(20 * 1024 * 1024, 2);
    fs::write(root.join("photos/2024/random-20MiB.bin"), &twenty).unwrap();
    fs::write(root.join("copies/random-20MiB copy.bin"), &twenty).unwrap();
    fs::write(root.join("photos/Ünïcødé 写真 🌅.jpg"), noise(300_000, 3)).unwrap();
    fs::write(
        root.join(OsStr::from_bytes(b"non-utf8-\xff\xfe.raw")),
        noise(1000, 4),
    )
    .unwrap();
    fs::write(
        root.join("notes.txt"),
        b"some compressible text\n".repeat(10_000),
    )
    .unwrap();
    let exe = root.join("run me.sh");
    fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("photos/2024/big video.mp4", root.join("link to video")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling link")).unwrap();
    // Distinct, old mtimes so that restoring them is visible.
    set_mtime(&root.join("one byte"), 1_500_000_000);
    set_mtime(&root.join("photos/2024"), 1_600_000_000);
}

pub fn set_mtime(p: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    let f = fs::File::options().read(true).open(p).unwrap();
    f.set_modified(t).unwrap();
}

#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        mode: u32,
        mtime: (i64, i64),
        content: Vec<u8>,
    },
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    Link {
        target: Vec<u8>,
    },
}

/// Everything below `root` (not root itself), by relative path bytes.
pub fn snapshot_tree(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Entry>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let md = fs::symlink_metadata(&p).unwrap();
        let mtime = (md.mtime(), md.mtime_nsec());
        if md.file_type().is_symlink() {
            out.insert(
                rel,
                Entry::Link {
                    target: fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
                },
            );
        } else if md.is_dir() {
            walk(root, &p, out);
            out.insert(
                rel,
                Entry::Dir {
                    mode: md.mode() & 0o7777,
                    mtime,
                },
            );
        } else {
            out.insert(
                rel,
                Entry::File {
                    mode: md.mode() & 0o7777,
                    mtime,
                    content: fs::read(&p).unwrap(),
                },
            );
        }
    }
}

/// Assert two trees are identical in content, mode and mtime, with a readable message.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = snapshot_tree(expected);
    let b = snapshot_tree(actual);
    let ka: Vec<_> = a
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let kb: Vec<_> = b
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(ka, kb, "different file lists");
    for (k, va) in &a {
        let vb = &b[k];
        assert!(
            va == vb,
            "{} differs: {}",
            String::from_utf8_lossy(k),
            describe(va, vb)
        );
    }
}

fn describe(a: &Entry, b: &Entry) -> String {
    match (a, b) {
        (
            Entry::File {
                mode: m1,
                mtime: t1,
                content: c1,
            },
            Entry::File {
                mode: m2,
                mtime: t2,
                content: c2,
            },
        ) => format!(
            "mode {m1:o} vs {m2:o}, mtime {t1:?} vs {t2:?}, content equal: {}",
            c1 == c2
        ),
        (a, b) => format!("{a:?} vs {b:?}").chars().take(300).collect(),
    }
}

/// All files in a directory tree, recursively (for repository inspection).
pub fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut v = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// Object files of one kind in a local repository.
pub fn objects(repo: &Path, dir: &str) -> Vec<PathBuf> {
    all_files(&repo.join(dir))
}

/// Flip one bit of a file at `pos` (negative counts from the end).
pub fn flip_byte(p: &Path, pos: i64) {
    let mut b = fs::read(p).unwrap();
    let i = if pos < 0 {
        (b.len() as i64 + pos) as usize
    } else {
        pos as usize
    };
    b[i] ^= 0x01;
    // Repository files are written read-only for the group/others but owner-writable.
    fs::write(p, b).unwrap();
}

/// Where a backed-up absolute path ends up below a restore target.
pub fn restored(target: &Path, original: &Path) -> PathBuf {
    target.join(original.strip_prefix("/").unwrap())
}

/// A small tmpfs mounted for one test, unmounted when dropped (also when the test fails).
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    /// None where this process cannot mount (not root, or a container without the right).
    pub fn mount(at: &Path, mib: u32) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }

    pub fn grow(&self, mib: u32) {
        let s = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(s.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
