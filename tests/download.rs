//! Restores from S3 download what they restore (design.md §12.3): a whole snapshot, one small
//! photo, and the same in a repository with 20 snapshots over a changing tree, measured both by
//! vault's own figures and by a proxy that counts every byte the server sent.

mod common;

use common::proxy::{self, Fault};
use common::*;
use std::fs;
use std::path::Path;
use vault::backend::FileType;

/// Bytes of every object a restore may have to read besides file content: key files, config,
/// marker, snapshots, index objects and tree packs (both copies).
fn metadata_bound(env: &Env) -> u64 {
    let store = env.store();
    let mut n = 0;
    for t in [
        FileType::Key,
        FileType::Snapshot,
        FileType::Index,
        FileType::SnapshotCopy,
        FileType::TreePackCopy,
    ] {
        n += store.list(t).unwrap().iter().map(|(_, s)| *s).sum::<u64>();
    }
    // Tree packs live among the data packs: their second copies have the same sizes.
    n += store
        .list(FileType::TreePackCopy)
        .unwrap()
        .iter()
        .map(|(_, s)| *s)
        .sum::<u64>();
    // The config and its copy, the marker.
    n + 64 * 1024
}

/// About 1,000 files of mixed sizes: many small photos, some larger ones.
fn mixed_tree(root: &Path, files: usize, seed: u64) {
    for i in 0..files {
        let dir = root.join(format!("{}", 2000 + i % 7));
        fs::create_dir_all(&dir).unwrap();
        // Mostly small (thumbnails, screenshots, messenger photos), one in twelve a camera
        // photo of about a megabyte.
        let size = if i % 12 == 0 {
            600_000 + (i * 9_871) % 1_000_000
        } else {
            8_000 + (i * 7_919) % 150_000
        };
        fs::write(
            dir.join(format!("IMG_{seed}_{i:04}.JPG")),
            noise(size, seed * 100_000 + i as u64),
        )
        .unwrap();
    }
}

struct Measured {
    json: serde_json::Value,
    /// Bytes the server sent, as the proxy counted them.
    seen_down: u64,
}

/// `vault restore --json` through a counting proxy, on a fresh computer (no local index): the
/// repository alone, as on the day it is needed.
fn restore_measured(env: &Env, target: &Path, extra: &[&std::ffi::OsStr]) -> Measured {
    let ep = env.endpoint.clone().unwrap();
    let px = proxy::start(proxy::upstream(&ep), |_| Fault::Pass);
    let fresh = Env::new();
    let out = env
        .vault()
        .env("HOME", fresh.path("home"))
        .env("XDG_DATA_HOME", fresh.path("home/.local/share"))
        .env("AWS_ENDPOINT_URL", px.url())
        .args(["restore", "--json", "--target"])
        .arg(target)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    Measured {
        json: serde_json::from_slice(&out.stdout).unwrap(),
        seen_down: px.stats.bytes_down(),
    }
}

/// The whole snapshot: content downloaded at most 1.1x what is restored; everything else within
/// the metadata the repository holds.
fn assert_whole_restore(env: &Env, src: &Path, label: &str) {
    let target = env.path(&format!("whole-{label}"));
    let m = restore_measured(env, &target, &[]);
    assert_same_tree(src, &restored(&target, src));
    let d = &m.json["download"];
    let restored_bytes = d["restored"].as_u64().unwrap();
    let content = d["content"].as_u64().unwrap();
    let metadata = d["metadata"].as_u64().unwrap();
    let total = d["total"].as_u64().unwrap();
    let bound = metadata_bound(env);
    eprintln!(
        "{label}: restored {restored_bytes} B; content downloaded {content} B ({:.3}x) in {} \
         requests; metadata {metadata} B (bound {bound}); total {total} B, the proxy saw {} B \
         down in {} GETs",
        content as f64 / restored_bytes as f64,
        d["content_requests"],
        m.seen_down,
        m.json["requests"]["get"],
    );
    assert_eq!(restored_bytes, dir_bytes(src));
    assert!(
        content as f64 <= 1.1 * restored_bytes as f64,
        "{label}: content {content} for {restored_bytes} restored"
    );
    assert!(metadata <= bound, "{label}: metadata {metadata} > {bound}");
    // vault's own count is the server's (HTTP framing aside).
    assert!(total <= m.seen_down && m.seen_down <= total + total / 20 + 200_000);
    assert!(
        m.seen_down as f64 <= 1.1 * restored_bytes as f64 + bound as f64 * 1.05,
        "{label}: the server sent {} B",
        m.seen_down
    );
}

/// One small photo: at most the chunks that hold it (with its pack's age header), besides
/// metadata.
fn assert_one_photo(env: &Env, photo: &Path, label: &str) {
    let target = env.path(&format!("one-{label}"));
    let m = restore_measured(env, &target, &["--include".as_ref(), photo.as_os_str()]);
    assert_eq!(
        fs::read(restored(&target, photo)).unwrap(),
        fs::read(photo).unwrap()
    );
    let size = fs::metadata(photo).unwrap().len();
    let d = &m.json["download"];
    let content = d["content"].as_u64().unwrap();
    // The 64 KiB chunks it touches (one more where it straddles a boundary), with their tags,
    // and the pack's age header.
    let range = (size.div_ceil(65_536) + 1) * 65_552 + 1024;
    eprintln!(
        "{label}: one photo of {size} B: content downloaded {content} B (bound {range}), \
         metadata {} B, the proxy saw {} B",
        d["metadata"], m.seen_down
    );
    assert!(content <= range, "{label}: {content} > {range}");
    assert!(d["metadata"].as_u64().unwrap() <= metadata_bound(env));
}

fn dir_bytes(root: &Path) -> u64 {
    all_files(root)
        .iter()
        .map(|p| fs::symlink_metadata(p).unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[test]
fn restores_from_s3_download_what_they_restore() {
    let Some(ep) = s3_endpoint() else { return };
    let env = Env::s3(&ep);
    env.init();
    let src = env.path("src");
    mixed_tree(&src, 1000, 1);
    env.vault().arg("backup").arg(&src).assert().success();
    assert_whole_restore(&env, &src, "one snapshot");
    assert_one_photo(&env, &src.join("2003/IMG_1_0010.JPG"), "one snapshot");
    // check --read-data says what it downloaded against what it verified: every pack once.
    let out = env
        .vault()
        .args(["check", "--read-data", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (total, verified) = (
        v["download"]["total"].as_u64().unwrap(),
        v["download"]["verified"].as_u64().unwrap(),
    );
    let packs: u64 = env
        .store()
        .list(FileType::Pack)
        .unwrap()
        .iter()
        .map(|(_, s)| *s)
        .sum();
    eprintln!(
        "check --read-data: downloaded {total} B for {verified} B verified (packs {packs} B)"
    );
    assert!(verified >= packs, "{verified} < {packs}");
    assert!(total >= verified && total <= verified + metadata_bound(&env));
}

#[test]
fn restores_after_twenty_snapshots_of_a_changing_tree_download_what_they_restore() {
    let Some(ep) = s3_endpoint() else { return };
    let env = Env::s3(&ep);
    env.init();
    let src = env.path("src");
    mixed_tree(&src, 600, 1);
    env.vault().arg("backup").arg(&src).assert().success();
    for round in 2..=20u64 {
        // New photos arrive, some are edited (rewritten), some deleted.
        mixed_tree(&src.join(format!("import-{round}")), 20, round);
        let mut files: Vec<_> = all_files(&src)
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for (k, f) in files.iter().enumerate() {
            // About one file in 150 edited and one deleted per backup.
            let h = u64::from_le_bytes(noise(8, round << 32 | k as u64).try_into().unwrap()) % 150;
            if h == 0 {
                fs::remove_file(f).unwrap();
            } else if h == 1 {
                let mut data = fs::read(f).unwrap();
                let n = data.len();
                data[n / 2..].copy_from_slice(&noise(n - n / 2, round * 7 + k as u64));
                fs::write(f, data).unwrap();
            }
        }
        env.vault().arg("backup").arg(&src).assert().success();
    }
    assert_whole_restore(&env, &src, "20 snapshots");
    let mut photos: Vec<_> = all_files(&src.join("import-11"))
        .into_iter()
        .filter(|p| p.is_file() && fs::metadata(p).unwrap().len() < 120_000)
        .collect();
    photos.sort();
    assert_one_photo(&env, &photos[0], "20 snapshots");
}
