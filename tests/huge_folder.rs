//! Folders of any size (issue 17): a folder of a million photos backs up, restores byte for
//! byte, lists and checks; its listing is split over tree blobs, so a new photo stores a small
//! part of it again; a lost tree blob costs only the entries it held; and what readers refuse
//! (folders nested too deep, files of too many chunks, unsafe names) is never stored.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use vault::backend::local::LocalBackend;
use vault::backend::Store;
use vault::crypto::Passphrase;
use vault::format::snapshot::{Snapshot, Summary};
use vault::format::tree::{Node, NodeKind, SplitRule, TreeBlob, TreeWriter};
use vault::format::BlobType;
use vault::repo::{InitOptions, PackReaders, Repository};
use vault::treewalk::{self, Found};

/// `n` small photos named as a phone's camera uploads are, `IMG_0000000.jpg` onwards: each a
/// few dozen bytes of its own, so that every file is a blob of its own.
fn camera_uploads(dir: &Path, n: usize, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    let pool = noise(1 << 20, seed);
    for i in 0..n {
        let o = (i * 7919) % ((1 << 20) - 64);
        let mut f = fs::File::create(dir.join(format!("IMG_{i:07}.jpg"))).unwrap();
        f.write_all(&pool[o..o + 40 + i % 24]).unwrap();
        f.write_all(i.to_string().as_bytes()).unwrap();
    }
}

fn backup_json(env: &Env, src: &Path) -> serde_json::Value {
    let out = env
        .vault()
        .args(["backup", "--json"])
        .arg(src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file of `src` is in `restored` with the same content, mode and mtime, and nothing else;
/// compared one file at a time (a million files are never held in memory).
fn assert_same_flat_folder(src: &Path, restored: &Path) -> usize {
    let names = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let (a, b) = (names(src), names(restored));
    assert_eq!(a.len(), b.len(), "file counts differ");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
        let (p, q) = (src.join(x), restored.join(y));
        let (m, n) = (fs::metadata(&p).unwrap(), fs::metadata(&q).unwrap());
        assert_eq!(fs::read(&p).unwrap(), fs::read(&q).unwrap(), "{x:?}");
        assert_eq!(m.mode(), n.mode(), "{x:?}");
        assert_eq!(
            (m.mtime(), m.mtime_nsec()),
            (n.mtime(), n.mtime_nsec()),
            "{x:?}"
        );
    }
    a.len()
}

/// Open a local test repository through the library.
fn open_repo(env: &Env) -> Repository {
    let store = Store::new(Arc::new(LocalBackend::new(env.repo()))).unwrap();
    Repository::open(store, &Passphrase::new(PASS.into())).unwrap()
}

/// The top tree blob of `path` in the latest snapshot, decoded.
fn top_blob(repo: &Repository, path: &Path) -> TreeBlob {
    let (_, snap) = repo.find_snapshot("latest").unwrap();
    let comps = vault::restorer::split_path(path.to_str().unwrap());
    let mut readers = PackReaders::default();
    let Some(Found::Folder(top)) =
        treewalk::resolve(repo, &snap.root, &comps, &mut readers).unwrap()
    else {
        panic!("{} is not a folder of the snapshot", path.display());
    };
    let data = repo.read_blob(&top, BlobType::Tree, &mut readers).unwrap();
    TreeBlob::decode(&data).unwrap()
}

/// The case: a flat folder of 1,000,000 photos (VAULT_TEST_HUGE_FOLDER_FILES sets
/// another number). Before format 6 its listing was one tree blob above the 64 MiB limit:
/// backed up "successfully" and not restorable.
#[test]
fn a_folder_of_a_million_photos_backs_up_restores_lists_and_checks() {
    let n: usize = std::env::var("VAULT_TEST_HUGE_FOLDER_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let dir = src.join("Camera Uploads");
    camera_uploads(&dir, n, 1);
    // Files changed within 2 s of a run's start are read again by the next one (§16).
    std::thread::sleep(std::time::Duration::from_secs(3));

    let first = backup_json(&env, &src);
    assert_eq!(first["files"], n as u64);
    let listing = first["tree_bytes_added"].as_u64().unwrap();

    let again = backup_json(&env, &src);
    assert_eq!(again["files_unchanged"], n as u64, "{again}");
    assert_eq!(again["bytes_read"], 0, "a no-change run reads no content");
    assert_eq!(again["bytes_added"], 0);

    // One new photo in the middle of the folder.
    fs::write(
        dir.join(format!("IMG_{:07}.jpg", n / 2) + "_edit.jpg"),
        noise(3000, 7),
    )
    .unwrap();
    let one = backup_json(&env, &src);
    assert_eq!(one["files"], n as u64 + 1);
    let added = one["tree_bytes_added"].as_u64().unwrap();
    eprintln!(
        "{n} photos: listing {listing} bytes stored; one new photo stored {added} bytes of \
         listings ({:.3}% of it), {} bytes in all",
        100.0 * added as f64 / listing as f64,
        one["bytes_added"]
    );
    // A leaf or two (each 256 KiB to at most 4 MiB of entries, usually under 1 MiB; stored
    // compressed) and the index above, not the listing.
    assert!(added < 8 << 20, "{added} bytes of listings for one photo");
    if n >= 1_000_000 {
        assert!(added * 8 < listing, "{added} of {listing} bytes rewritten");
    }
    if n >= 100_000 {
        let repo = open_repo(&env);
        assert!(
            matches!(top_blob(&repo, &dir), TreeBlob::Index { .. }),
            "the listing is split"
        );
    }

    // ls streams the folder; one file is found without listing the others.
    let out = env
        .vault()
        .args(["ls", "latest"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), n + 1, "the folder's files");
    assert!(
        lines[0].ends_with("/Camera Uploads/IMG_0000000.jpg"),
        "{}",
        lines[0]
    );
    assert!(
        lines[n].ends_with(&format!("/IMG_{:07}.jpg", n - 1)),
        "{}",
        lines[n]
    );
    let one_file = dir.join(format!("IMG_{:07}.jpg", n / 3));
    let out = env
        .vault()
        .args(["ls", "latest"])
        .arg(&one_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);

    let target = env.path("restored");
    env.restore_cmd(&target).assert().success();
    let count = assert_same_flat_folder(&dir, &restored(&target, &dir));
    assert_eq!(count, n + 1);

    let out = env.vault().args(["check", "--read-data"]).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("no errors"), "{report}");
}

/// Back up a folder of `n` photos, restore it and compare. Returns whether its listing was
/// split over several tree blobs.
fn round_trip(env: &Env, n: usize, seed: u64) -> bool {
    let src = env.path(&format!("src-{seed}"));
    let dir = src.join("DCIM");
    camera_uploads(&dir, n, seed);
    // Names of other lengths and bytes, so that cuts fall at other places.
    for i in 0..(seed as usize % 50) {
        fs::write(
            dir.join(format!("vacation {i} é {}.heic", "x".repeat(i))),
            noise(100, seed + i as u64),
        )
        .unwrap();
    }
    backup_json(env, &src);
    let target = env.path(&format!("restored-{seed}"));
    env.restore_cmd(&target).assert().success();
    assert_same_tree(&src, &restored(&target, &src));
    if env.url.is_some() {
        return true;
    }
    matches!(top_blob(&open_repo(env), &dir), TreeBlob::Index { .. })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// Folder sizes around the first split points (a leaf holds at least 256 KiB of entries,
    /// about 1,900 of these photos): backup then restore is the identity.
    #[test]
    fn folders_around_the_split_points_restore_exactly(n in 1_500usize..9_000, seed in 1u64..1000) {
        let env = Env::new();
        env.init();
        round_trip(&env, n, seed);
    }
}

/// Past 4 MiB of entries (40,000 of these photos) a listing is always split: on a folder and on
/// S3, it reads back whole.
#[test]
fn a_split_listing_restores_from_a_folder_and_from_s3() {
    let env = Env::new();
    env.init();
    assert!(
        round_trip(&env, 32_000, 3),
        "32,000 photos are more than one leaf"
    );
    env.check_read_data();
    if let Some(endpoint) = s3_endpoint() {
        let env = Env::s3(&endpoint);
        env.init();
        round_trip(&env, 40_000, 4);
        env.check_read_data();
    }
}

/// A snapshot whose large folder lost one leaf (a damaged or missing tree blob): restore brings
/// back every other entry and reports the folder; check names it as partly damaged.
#[test]
fn a_lost_leaf_costs_only_its_entries() {
    let env = Env::new();
    env.init();
    let repo = open_repo(&env);
    let content = b"photo bytes".to_vec();
    let ids =
        vault::blobwriter::write_blobs(&repo, vec![(BlobType::Data, content.clone())]).unwrap();
    let hash = repo.keys().file_hash.keyed_hash(&content);
    let nodes: Vec<Node> = (0..400)
        .map(|i| Node {
            name: format!("IMG_{i:04}.jpg").into_bytes(),
            kind: NodeKind::File {
                blobs: ids.clone(),
                hash,
            },
            mode: 0o100644,
            mtime: 1_700_000_000,
            mtime_nanos: 0,
            size: content.len() as u64,
            uid: 0,
            gid: 0,
            flags: 0,
        })
        .collect();
    // Small blobs, so that 400 entries make many leaves; the third leaf is never stored.
    let rule = SplitRule {
        min: 4000,
        avg: 4000,
        max: 8000,
    };
    let keys = repo.keys().clone();
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut leaves = 0;
    let mut lost_first = None;
    let mut store = |b: &[u8]| {
        let id = keys.blob_id(b);
        if let Ok(TreeBlob::Leaf(nodes)) = TreeBlob::decode(b) {
            leaves += 1;
            if leaves == 3 {
                lost_first = Some((nodes.len(), nodes[0].name.clone()));
                return Ok(id);
            }
        }
        blobs.push(b.to_vec());
        Ok(id)
    };
    let mut w = TreeWriter::with_rule(&keys.tree_split, rule);
    for n in &nodes {
        w.push(n, &mut store).unwrap();
    }
    let folder = w.finish(&mut store).unwrap();
    let (lost, lost_name) = lost_first.unwrap();
    let mut root = TreeWriter::new(&keys.tree_split);
    let mut store_root = |b: &[u8]| {
        blobs.push(b.to_vec());
        Ok(keys.blob_id(b))
    };
    root.push(
        &Node {
            name: b"album".to_vec(),
            kind: NodeKind::Dir { subtree: folder },
            mode: 0o40755,
            size: 0,
            ..nodes[0].clone()
        },
        &mut store_root,
    )
    .unwrap();
    let root = root.finish(&mut store_root).unwrap();
    vault::blobwriter::write_blobs(
        &repo,
        blobs.into_iter().map(|b| (BlobType::Tree, b)).collect(),
    )
    .unwrap();
    repo.write_snapshot(&Snapshot {
        summary: Summary {
            files: 400,
            dirs: 1,
            bytes: 400 * content.len() as u64,
            vault_only: 0,
        },
        ..bare_snapshot(&repo, root, b"/album")
    })
    .unwrap();

    let target = env.path("out");
    let out = env.restore_cmd(&target).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/album: folder contents unreadable"), "{err}");
    assert!(err.contains(&format!("{lost} entries from")), "{err}");
    let restored = fs::read_dir(target.join("album")).unwrap().count();
    assert_eq!(restored, 400 - lost, "every entry but the lost leaf's");
    assert!(!target
        .join("album")
        .join(String::from_utf8(lost_name).unwrap())
        .exists());

    let out = env.vault().args(["check", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged = report["damaged_files"].to_string();
    assert!(damaged.contains("/album (part of the folder)"), "{damaged}");
}

/// Readers refuse folders nested deeper than 1,024 levels; backup skips them, names them, and
/// keeps everything above.
#[test]
fn folders_nested_too_deep_are_skipped_and_named() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let base = src.components().count() - 1; // components below "/"
    let mut deep = src.clone();
    for _ in 0..(1030 - base) {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("too deep.jpg"), b"x").unwrap();
    let mut ok = src.clone();
    for _ in 0..(1020 - base) {
        ok.push("d");
    }
    fs::write(ok.join("deep but fine.jpg"), b"y").unwrap();
    let out = env.vault().arg("backup").arg(&src).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nested more than 1024 levels deep"), "{err}");
    let mut first_refused = src.clone();
    for _ in 0..(1025 - base) {
        first_refused.push("d");
    }
    assert!(
        err.contains(first_refused.to_str().unwrap()),
        "names the folder"
    );
    let target = env.path("out");
    env.restore_cmd(&target).assert().success();
    assert_eq!(
        fs::read(restored(&target, &ok).join("deep but fine.jpg")).unwrap(),
        b"y"
    );
    env.vault().arg("check").assert().success();
}

/// A file of more chunks than one folder entry can list (about 2,100,000: 2 TiB at the default
/// chunk size, reached here with the smallest chunks a repository may have) is skipped and
/// named; nothing refers to it.
#[test]
fn a_file_of_too_many_chunks_is_skipped_and_named() {
    let env = Env::new();
    let store = Store::new(Arc::new(LocalBackend::new(env.repo()))).unwrap();
    let repo = Repository::init(
        store,
        &Passphrase::new(PASS.into()),
        &InitOptions {
            scrypt_log_n: 10,
            chunking: Some((64, 256, 1024)),
            ..Default::default()
        },
    )
    .unwrap();
    // How this repository's chunker cuts zeros, to make a file of just over the limit.
    let chunker = vault::chunker::Chunker::new(&repo.keys().chunker, repo.config());
    let zeros = vec![0u8; 1 << 20];
    let cuts = chunker.cuts(&zeros);
    let chunk = zeros.len() / cuts.len();
    let limit = (vault::format::tree::MAX_NODE_LEN - 100) / 32;
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("huge.raw");
    fs::File::create(&big)
        .unwrap()
        .set_len(((limit + 50_000) * chunk) as u64)
        .unwrap();
    fs::write(src.join("small.jpg"), b"small").unwrap();
    drop(repo);
    let out = env.vault().arg("backup").arg(&src).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(big.to_str().unwrap()), "{err}");
    assert!(err.contains("too large to list"), "{err}");
    let out = env
        .vault()
        .args(["ls", "latest"])
        .arg(&src)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listed.contains("huge.raw") && listed.contains("small.jpg"),
        "{listed}"
    );
    env.vault().arg("check").assert().success();
}

/// `vault copy` of a snapshot whose tree no reader would accept (a name `..`, written by
/// someone holding the keys) refuses it instead of storing it in the destination.
#[test]
fn a_copy_never_stores_a_tree_readers_refuse() {
    let a = Env::new();
    a.init();
    let b = Env::new();
    b.init();
    let src = open_repo(&a);
    let content = b"data".to_vec();
    let ids =
        vault::blobwriter::write_blobs(&src, vec![(BlobType::Data, content.clone())]).unwrap();
    let node = |name: &[u8]| Node {
        name: name.to_vec(),
        kind: NodeKind::File {
            blobs: ids.clone(),
            hash: src.keys().file_hash.keyed_hash(&content),
        },
        mode: 0o100644,
        mtime: 0,
        mtime_nanos: 0,
        size: 4,
        uid: 0,
        gid: 0,
        flags: 0,
    };
    let tree = vault::format::tree::Tree {
        nodes: vec![node(b".."), node(b"ok.jpg")],
    };
    let root =
        vault::blobwriter::write_blobs(&src, vec![(BlobType::Tree, tree.encode())]).unwrap()[0];
    let sid = src
        .write_snapshot(&bare_snapshot(&src, root, b"/"))
        .unwrap();
    let dst = open_repo(&b);
    let e = vault::copier::copy(&src, &dst, &[sid], 2, Default::default())
        .expect_err("the copy is refused")
        .to_string();
    assert!(e.contains("not a single path component"), "{e}");
    assert!(
        dst.snapshots().unwrap().0.is_empty(),
        "no snapshot in the destination"
    );
}

/// A backup stopped in the middle of a large folder (Ctrl-C, or kill -9) leaves the next run the
/// entries of the files it finished: they are not read again. Before, a folder's local-index row
/// was written only when the folder was complete, so every file of it was read again.
#[test]
fn a_backup_stopped_in_a_large_folder_keeps_what_it_did() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let dir = src.join("Camera Uploads");
    let n = 200_000;
    camera_uploads(&dir, n, 5);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut stopped = 0;
    for signal in ["-INT", "-KILL"] {
        let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vault"))
            .env("VAULT_PASSWORD", PASS)
            .env("VAULT_REPO", env.repo())
            .env("HOME", env.path("home"))
            .args(["--quiet", "backup"])
            .arg(&src)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Stop it once a first index object is stored: some files are then fully backed up.
        let index = env.repo().join("index");
        let start = std::time::Instant::now();
        while fs::read_dir(&index).map(|d| d.count()).unwrap_or(0) == 0 {
            assert!(start.elapsed().as_secs() < 600, "no index object appeared");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::process::Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            continue; // it finished first: nothing to learn from this round
        }
        stopped += 1;
        let again = backup_json(&env, &src);
        let unchanged = again["files_unchanged"].as_u64().unwrap();
        assert!(unchanged > 0 && unchanged < n as u64, "{signal}: {again}");
        assert_eq!(again["files"], n as u64);
        // Start over for the next signal.
        fs::remove_dir_all(env.repo()).unwrap();
        fs::remove_dir_all(env.path("home")).unwrap();
        env.init();
    }
    assert!(
        stopped > 0,
        "no backup was stopped in the middle of the folder"
    );
}
