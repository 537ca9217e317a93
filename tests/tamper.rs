//! Damage detection: flip one byte in a pack, an index or a snapshot object and check that
//! `check --read-data` names it, restore refuses exactly the affected files, and the rest restores.

mod common;

use common::*;
use predicates::prelude::*;
use std::fs;
use std::path::Path;

fn setup() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("album")).unwrap();
    for i in 0..6u64 {
        fs::write(
            src.join(format!("album/IMG_{i:04}.JPG")),
            noise(3 * 1024 * 1024 + 1000 * i as usize, i + 10),
        )
        .unwrap();
    }
    // A video of some 24 blobs: restored with its blobs read ahead on a second thread, whose
    // errors must fail the file like any other.
    fs::write(src.join("album/VID_0001.MP4"), noise(24 * 1024 * 1024, 99)).unwrap();
    fs::write(src.join("small.txt"), b"tiny").unwrap();
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    (env, src)
}

fn no_temp_files(dir: &Path) {
    if !dir.exists() {
        return;
    }
    for f in all_files(dir) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".vault-restore-"),
            "partial file left: {}",
            f.display()
        );
    }
}

fn check_json(env: &Env) -> (i32, serde_json::Value) {
    let out = env
        .vault()
        .args(["check", "--read-data", "--json"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

/// A flip in the padding of a pack (a small tree pack is mostly padding) fails `check
/// --read-data` though no file is affected: every byte of every pack is verified. Regression:
/// chunks holding only padding were never decrypted, and check passed.
#[test]
fn a_flip_in_a_packs_padding_fails_check_and_costs_no_file() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("one.txt"), b"a small file").unwrap();
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    // The data pack: one 12-byte chunk padded to the minimum of 512 KiB, its middle chunks
    // padding only (a tree pack of 64 KiB has none: the header and table reads cover it).
    let packs = objects(&env.repo(), "data");
    let big: Vec<_> = packs
        .iter()
        .filter(|p| fs::metadata(p).unwrap().len() > 4 * 65_536)
        .collect();
    assert_eq!(big.len(), 1, "{packs:?}");
    for pack in big {
        let len = fs::metadata(pack).unwrap().len() as i64;
        flip_byte(pack, len / 2);
        let (code, report) = check_json(&env);
        assert_eq!(code, 1, "{report}");
        assert!(
            report["errors"].to_string().contains("padding damaged"),
            "{report}"
        );
        assert_eq!(report["damaged_files"].as_array().unwrap().len(), 0);
        env.assert_restores(&src, "out");
        fs::remove_dir_all(env.path("out")).unwrap();
        flip_byte(pack, len / 2);
    }
    env.check_read_data();
}

#[test]
fn flipped_byte_in_any_pack_is_found_and_only_affected_files_fail() {
    let (env, src) = setup();
    let packs = objects(&env.repo(), "data");
    assert!(
        packs.len() >= 2,
        "expected data and tree packs, got {}",
        packs.len()
    );
    for (n, pack) in packs.iter().enumerate() {
        let name = pack.file_name().unwrap().to_string_lossy().into_owned();
        let len = fs::metadata(pack).unwrap().len() as i64;
        flip_byte(pack, len / 2);

        let (code, report) = check_json(&env);
        assert_eq!(code, 1, "check must fail for damaged pack {name}");
        let errors = report["errors"].to_string();
        assert!(errors.contains(&format!("pack {}", &name[..8])), "{errors}");
        let damaged: Vec<String> = report["damaged_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().split_once(':').unwrap().1.to_string())
            .collect();
        let tree_copy = env.repo().join("copies/trees").join(&name[..2]).join(&name);
        if tree_copy.exists() {
            // A tree pack: its second copy (design.md §2.2) serves, no file is damaged.
            assert!(damaged.is_empty(), "{errors}");
            assert!(errors.contains("nothing is lost"), "{errors}");
            env.assert_restores(&src, &format!("out{n}"));
            // Both copies damaged: now the files below its trees are.
            flip_byte(&tree_copy, len / 2);
            let (code, report) = check_json(&env);
            assert_eq!(code, 1);
            assert!(
                !report["damaged_files"].as_array().unwrap().is_empty(),
                "{report}"
            );
            flip_byte(&tree_copy, len / 2);
            flip_byte(pack, len / 2);
            continue;
        }
        if errors.contains("padding damaged") {
            // A flip in a pack's padding: the object is damaged, no file is.
            assert!(damaged.is_empty(), "{errors}");
            env.assert_restores(&src, &format!("out{n}"));
            flip_byte(pack, len / 2);
            continue;
        }
        assert!(!damaged.is_empty(), "check must name the affected files");
        env.vault()
            .args(["check", "--read-data"])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("damaged:"));

        let out = env.path(&format!("out{n}"));
        env.vault()
            .args(["restore", "--target"])
            .arg(&out)
            .assert()
            .code(1)
            .stderr(predicate::str::contains("damaged").or(predicate::str::contains("unreadable")));
        no_temp_files(&out);
        let whole_folder = damaged.iter().any(|d| d.ends_with("(whole folder)"));
        if !whole_folder {
            // Data pack: the named files are absent, every other file is intact.
            for entry in fs::read_dir(src.join("album")).unwrap() {
                let p = entry.unwrap().path();
                let r = restored(&out, &p);
                let shown = p.to_string_lossy().into_owned();
                if damaged.contains(&shown) {
                    assert!(!r.exists(), "damaged file {shown} must not be restored");
                } else {
                    assert_eq!(fs::read(&r).unwrap(), fs::read(&p).unwrap(), "{shown}");
                }
            }
        }
        flip_byte(pack, len / 2);
    }
    env.check_read_data();
}

#[test]
fn flipped_byte_in_an_index_is_reported_and_data_stays_restorable() {
    let (env, src) = setup();
    let idx = objects(&env.repo(), "index");
    assert_eq!(idx.len(), 1);
    let name = idx[0].file_name().unwrap().to_string_lossy().into_owned();
    flip_byte(&idx[0], -20);
    env.vault()
        .args(["check", "--read-data"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("index {}", &name[..8])));
    // On a new machine (no local index) the packs' own tables stand in for the damaged index.
    let out = env.path("out");
    env.vault()
        .args(["--no-cache", "restore", "--target"])
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("unreadable"));
    assert_same_tree(&src, &restored(&out, &src));
    // This machine merged the index before it was damaged: its local index still serves.
    env.assert_restores(&src, "out2");
}

#[test]
fn flipped_byte_in_a_snapshot_is_reported_and_other_snapshots_restore() {
    let (env, src) = setup();
    fs::write(src.join("second.txt"), b"added later").unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    let snaps = objects(&env.repo(), "snapshots");
    assert_eq!(snaps.len(), 2);
    let victim = &snaps[0];
    let vname = victim.file_name().unwrap().to_string_lossy().into_owned();
    let other = snaps[1].file_name().unwrap().to_string_lossy().into_owned();
    flip_byte(victim, -5);
    env.vault()
        .args(["check"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "snapshot {}",
            &vname[..8]
        )));
    // A new machine (no local index) reads its second copy (design.md §2.2) and says so...
    env.vault()
        .args(["--no-cache", "restore", &vname[..8], "--target"])
        .arg(env.path("second"))
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "snapshot {} is damaged",
            &vname[..8]
        )));
    assert!(restored(&env.path("second"), &src.join("album/IMG_0001.JPG")).exists());
    // ...and with both copies damaged cannot use it...
    flip_byte(&env.repo().join("copies/snapshots").join(&vname), -5);
    env.vault()
        .args(["--no-cache", "restore", &vname[..8], "--target"])
        .arg(env.path("bad"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("damaged snapshot"));
    assert!(!env.path("bad").join("src").exists());
    // ...while this machine kept the copy it verified when the snapshot was written.
    env.vault()
        .args(["restore", &vname[..8], "--target"])
        .arg(env.path("cached"))
        .assert()
        .success();
    assert!(restored(&env.path("cached"), &src.join("album/IMG_0001.JPG")).exists());
    let out = env.path("good");
    env.vault()
        .args(["restore", &other[..8], "--target"])
        .arg(&out)
        .assert()
        .success();
    assert!(restored(&out, &src.join("album/IMG_0001.JPG")).exists());
}

#[test]
fn a_swapped_snapshot_object_is_detected() {
    // age has no sender authentication: the server can rename objects. The keyed id catches it.
    let (env, src) = setup();
    fs::write(src.join("second.txt"), b"added later").unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    let snaps = objects(&env.repo(), "snapshots");
    let a = fs::read(&snaps[0]).unwrap();
    fs::write(&snaps[0], fs::read(&snaps[1]).unwrap()).unwrap();
    let name = snaps[0].file_name().unwrap().to_string_lossy().into_owned();
    env.vault()
        .args(["check"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not match its name"));
    fs::write(&snaps[0], a).unwrap();
    env.vault()
        .args(["restore", &name[..8], "--target"])
        .arg(env.path("o"))
        .assert()
        .success();
}

/// Snapshot ids, oldest first, as `vault snapshots --json` lists them.
fn snapshot_ids(env: &Env) -> Vec<String> {
    let out = env.vault().args(["snapshots", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn deleted_or_rolled_back_snapshots_are_reported() {
    // vault never deletes a snapshot, so one that goes missing was deleted by whoever can write
    // to the storage, or the storage was rolled back to hide the newest backups.
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    env.init();
    for i in 0..3 {
        fs::write(src.join("note.txt"), format!("version {i}")).unwrap();
        env.vault().arg("backup").arg(&src).assert().success();
    }
    let ids = snapshot_ids(&env);
    assert_eq!(ids.len(), 3);
    // Whoever deletes or rolls back takes both copies (design.md §2.2).
    let remove = |id: &str| {
        for dir in ["snapshots", "copies/snapshots"] {
            fs::remove_file(env.repo().join(dir).join(id)).unwrap();
        }
    };
    let gone = predicate::str::contains("missing from the repository");
    env.vault()
        .arg("snapshots")
        .assert()
        .success()
        .stderr(gone.clone().not());

    // The newest one removed: this computer saw it, and says so on every run until someone
    // looks (a backup at night would otherwise report it once, to nobody).
    remove(&ids[2]);
    for _ in 0..2 {
        env.vault().arg("snapshots").assert().success().stderr(
            predicate::str::contains("1 snapshot(s) missing")
                .and(predicate::str::contains(&ids[2][..8])),
        );
    }
    env.vault()
        .arg("backup")
        .arg(&src)
        .assert()
        .success()
        .stderr(predicate::str::contains(&ids[2][..8]));
    // The warning says to run `check`, and `check` on this computer finds it too.
    env.vault()
        .arg("check")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "snapshot {} is missing",
            &ids[2][..8]
        )));
    // A computer that never saw it cannot tell: the chain left ends in a snapshot that exists.
    env.vault()
        .args(["--no-cache", "snapshots"])
        .assert()
        .success()
        .stderr(gone.clone().not());

    // One in the middle removed: the snapshot made after it names it, so even a new computer
    // notices, and `check` fails.
    remove(&ids[1]);
    env.vault()
        .args(["--no-cache", "snapshots"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("1 snapshot(s) missing")
                .and(predicate::str::contains(&ids[1][..8])),
        );
    env.vault()
        .args(["--no-cache", "check"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "snapshot {} is missing",
            &ids[1][..8]
        )));
    // Once the user knows why, acknowledging them stops the warning on this computer, for both
    // kinds; `check` passes and still notes them. Nothing else forgets them.
    env.vault()
        .args(["snapshots", "--acknowledge-missing"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("acknowledged 2 missing snapshot(s)")
                .and(predicate::str::contains(&ids[1][..8]))
                .and(predicate::str::contains(&ids[2][..8])),
        );
    env.vault()
        .arg("snapshots")
        .assert()
        .success()
        .stderr(gone.clone().not());
    env.vault()
        .arg("backup")
        .arg(&src)
        .assert()
        .success()
        .stderr(gone.clone().not());
    env.vault()
        .arg("check")
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "snapshot {} is missing; acknowledged",
            &ids[1][..8]
        )));
    // Another computer (here: no local index) still says so about the one it can tell.
    env.vault()
        .args(["--no-cache", "snapshots"])
        .assert()
        .success()
        .stderr(predicate::str::contains(&ids[1][..8]));
    // A new deletion after the acknowledgement is reported again.
    let now = snapshot_ids(&env);
    remove(&now[0]);
    env.vault().arg("snapshots").assert().success().stderr(
        predicate::str::contains("1 snapshot(s) missing")
            .and(predicate::str::contains(&now[0][..8])),
    );
}
