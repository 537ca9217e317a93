//! Security properties: wrong passphrases, names never stored in the clear, and restore of a
//! malicious snapshot never writing outside the target.

mod common;

use common::*;
use predicates::prelude::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use vault::backend::local::LocalBackend;
use vault::backend::Store;
use vault::crypto::Passphrase;
use vault::format::snapshot::Snapshot;
use vault::format::tree::{Node, NodeKind, Tree};
use vault::format::BlobType;
use vault::repo::{InitOptions, Repository};
use vault::restorer::{restore, RestoreOptions};

fn repo_state(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    all_files(repo)
        .into_iter()
        .map(|p| (p.to_string_lossy().into_owned(), fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn wrong_passphrase_is_one_clear_line_exit_1_and_writes_nothing() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"data").unwrap();
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    let before = repo_state(&env.repo());
    for args in [
        vec!["backup", src.to_str().unwrap()],
        vec!["snapshots"],
        vec!["check"],
        vec!["restore", "-t", "/tmp/never"],
    ] {
        let out = env
            .vault()
            .env("VAULT_PASSWORD", "not the passphrase")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one line, got: {err}");
        assert!(err.contains("wrong passphrase"), "{err}");
        assert!(!err.contains("not the passphrase"), "never echo the secret");
    }
    assert_eq!(before, repo_state(&env.repo()), "nothing may be written");
    assert!(!Path::new("/tmp/never").exists());
}

#[test]
fn no_passphrase_without_a_terminal_is_a_clear_error() {
    let env = Env::new();
    env.init();
    env.vault()
        .env_remove("VAULT_PASSWORD")
        .arg("snapshots")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no passphrase"));
    let pwfile = env.path("pw");
    fs::write(&pwfile, format!("{PASS}\n")).unwrap();
    env.vault()
        .env_remove("VAULT_PASSWORD")
        .arg("--password-file")
        .arg(&pwfile)
        .arg("snapshots")
        .assert()
        .success();
    // A password file given on the command line wins over VAULT_PASSWORD, and one that cannot
    // be read is an error rather than silently ignored (found in the issue 21 trial).
    fs::write(&pwfile, "not the passphrase\n").unwrap();
    env.vault()
        .arg("--password-file")
        .arg(&pwfile)
        .arg("snapshots")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("wrong passphrase"));
    env.vault()
        .arg("--password-file")
        .arg(env.path("missing"))
        .arg("snapshots")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot read the password file"));
}

#[test]
fn no_name_or_exif_text_reaches_the_repository() {
    let env = Env::new();
    let src = env.path("src");
    let dir = src.join("CANARYDIR_private_album");
    fs::create_dir_all(&dir).unwrap();
    // Text that would sit in a photo's EXIF block, in a compressible file and an incompressible one.
    let mut jpeg =
        b"\xff\xd8\xff\xe1Exif\0\0CANARYEXIF_Camera_Model_Leica_M11 GPS 48.8584N".to_vec();
    jpeg.extend(noise(600_000, 5));
    fs::write(dir.join("CANARYFILE_holiday_nude.jpg"), &jpeg).unwrap();
    fs::write(
        dir.join("CANARYFILE_notes.txt"),
        b"CANARYEXIF_text ".repeat(5000),
    )
    .unwrap();
    std::os::unix::fs::symlink("CANARYLINK_target", dir.join("CANARYLINK_name")).unwrap();
    let tmp = env.path("tmp");
    fs::create_dir_all(&tmp).unwrap();
    env.init();
    // Two backups (the second uses the local index), a listing and a restore: everything that
    // writes to the local index or to temporary files.
    for _ in 0..2 {
        env.vault()
            .env("TMPDIR", &tmp)
            .args(["backup", "--tag", "t"])
            .arg(&src)
            .assert()
            .success();
    }
    env.vault().env("TMPDIR", &tmp).arg("ls").assert().success();
    env.vault()
        .env("TMPDIR", &tmp)
        .args(["restore", "--target"])
        .arg(env.path("out"))
        .assert()
        .success();
    let cache = env.path("home/.cache/vault");
    let cache_files = all_files(&cache);
    assert!(
        cache_files.iter().any(|f| f.ends_with("index.sqlite")),
        "the local index is where the docs say: {cache_files:?}"
    );
    for f in &cache_files {
        let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is not private", f.display());
    }
    let searched: Vec<_> = [all_files(&env.repo()), cache_files, all_files(&tmp)].concat();
    for f in searched {
        let name = f.to_string_lossy().into_owned();
        assert!(!name.contains("CANARY"), "object name leaks: {name}");
        let data = fs::read(&f).unwrap();
        assert!(
            !data.windows(6).any(|w| w == b"CANARY"),
            "plaintext canary in {}",
            f.display()
        );
        assert!(
            !data.windows(4).any(|w| w == b"Exif"),
            "EXIF marker in {}",
            f.display()
        );
    }
}

fn node(name: &[u8], kind: NodeKind, size: u64) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        mtime: 1_600_000_000,
        mtime_nanos: 0,
        size,
        uid: 0,
        gid: 0,
        flags: 0,
    }
}

#[test]
fn malicious_snapshot_restores_nothing_outside_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
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

    let content = b"attacker payload".to_vec();
    let ids =
        vault::blobwriter::write_blobs(&repo, vec![(BlobType::Data, content.clone())]).unwrap();
    let hash = repo.keys().file_hash.keyed_hash(&content);
    let file = |name: &[u8]| {
        node(
            name,
            NodeKind::File {
                blobs: ids.clone(),
                hash,
            },
            content.len() as u64,
        )
    };

    // A folder whose listing names "evil" twice: first a symlink to the outside, then a folder.
    let evil_inner = Tree {
        nodes: vec![file(b"pwned")],
    };
    let inner_id =
        vault::blobwriter::write_blobs(&repo, vec![(BlobType::Tree, evil_inner.encode())]).unwrap()
            [0];
    let dup = Tree {
        nodes: vec![
            node(
                b"evil",
                NodeKind::Symlink {
                    target: outside.as_os_str().as_encoded_bytes().to_vec(),
                },
                0,
            ),
            node(b"evil", NodeKind::Dir { subtree: inner_id }, 0),
        ],
    };
    let dup_id =
        vault::blobwriter::write_blobs(&repo, vec![(BlobType::Tree, dup.encode())]).unwrap()[0];
    // A folder the target already has as a symlink to the outside.
    let pre_id = vault::blobwriter::write_blobs(
        &repo,
        vec![(
            BlobType::Tree,
            Tree {
                nodes: vec![file(b"pwned2")],
            }
            .encode(),
        )],
    )
    .unwrap()[0];
    let mut nodes = vec![
        file(b"../escape"),
        file(b".."),
        file(outside.join("abs").as_os_str().as_encoded_bytes()),
        file(b"ok.txt"),
        node(b"dupdir", NodeKind::Dir { subtree: dup_id }, 0),
        node(b"prelinked", NodeKind::Dir { subtree: pre_id }, 0),
    ];
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let root =
        vault::blobwriter::write_blobs(&repo, vec![(BlobType::Tree, Tree { nodes }.encode())])
            .unwrap()[0];
    let snap = Snapshot {
        host: "mallory".into(),
        ..bare_snapshot(&repo, root, b"/")
    };
    let sid = repo.write_snapshot(&snap).unwrap();

    let target = tmp.path().join("target");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("prelinked")).unwrap();
    let s = restore(
        &repo,
        &sid,
        &snap,
        &RestoreOptions {
            target: target.clone(),
            includes: vec![],
            overwrite: true,
            threads: 2,
            vault_only: false,
            journal_dir: None,
        },
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside"
    );
    assert!(!tmp.path().join("escape").exists());
    assert_eq!(
        fs::read(target.join("ok.txt")).unwrap(),
        content,
        "safe entries still restore"
    );
    let errs = serde_json::to_string(&s.errors).unwrap();
    assert!(errs.contains("refused unsafe name"), "{errs}");
    assert!(errs.contains("out of order or twice"), "{errs}");
    assert!(errs.contains("in the way"), "{errs}");
    assert_eq!(s.files, 1);
}
