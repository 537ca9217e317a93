//! One damaged object of each kind (key file, config, snapshot, index, tree pack, data pack), on
//! a folder and on an S3 repository: `check` names it and what it affects, restore brings back
//! everything that does not depend on it, and a damaged snapshot or tree pack loses no file
//! (each is kept twice, design.md §2.2); `vault repair metadata` rewrites the damaged copy.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use vault::backend::FileType;

/// Twelve photos in two folders, backed up once: one snapshot, one tree pack, two data packs.
fn backed_up(env: &Env) -> PathBuf {
    let src = env.path("src");
    for (i, folder) in ["a", "b"].iter().enumerate() {
        fs::create_dir_all(src.join(folder)).unwrap();
        for j in 0..6 {
            let seed = (i * 10 + j) as u64;
            fs::write(
                src.join(folder).join(format!("IMG_{j}.jpg")),
                noise(90_000 + 7_000 * j, seed),
            )
            .unwrap();
        }
    }
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    src
}

fn names(env: &Env, t: FileType) -> Vec<String> {
    let mut v: Vec<String> = env
        .store()
        .list(t)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.to_hex())
        .collect();
    v.sort();
    v
}

/// Flip one byte in the middle of an object, on whatever store holds it.
fn damage(env: &Env, t: FileType, name: &str) {
    let len = env.store().get(t, name).unwrap().len();
    damage_at(env, t, name, len / 2);
}

fn damage_at(env: &Env, t: FileType, name: &str, i: usize) {
    let store = env.store();
    let mut b = store.get(t, name).unwrap();
    b[i] ^= 0x01;
    store.delete(t, name).unwrap();
    store.put(t, name, &b).unwrap();
}

/// `vault check --json` (with `--read-data` when asked): its exit code and report.
fn check(env: &Env, read_data: bool) -> (i32, serde_json::Value) {
    let mut c = env.vault();
    c.args(["check", "--json"]);
    if read_data {
        c.arg("--read-data");
    }
    let out = c.output().unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v)
}

fn errors(report: &serde_json::Value) -> String {
    report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Restore the latest snapshot on a fresh computer (no local index): exit code, stderr, target.
fn restore_fresh(env: &Env, dir: &str) -> (i32, String, PathBuf) {
    let fresh = Env::new();
    let target = env.path(dir);
    let out = env
        .vault()
        .env("HOME", fresh.path("home"))
        .env("XDG_DATA_HOME", fresh.path("home/.local/share"))
        .args(["restore", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        target,
    )
}

fn repair_metadata(env: &Env) -> String {
    let out = env.vault().args(["repair", "metadata"]).output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    all
}

/// After the damage is repaired, the repository is whole again: `check --read-data` passes and
/// a fresh computer restores every file.
fn whole_again(env: &Env, src: &Path, dir: &str) {
    let (code, report) = check(env, true);
    assert_eq!(code, 0, "{report}");
    let (code, err, target) = restore_fresh(env, dir);
    assert_eq!(code, 0, "{err}");
    assert_same_tree(src, &restored(&target, src));
}

fn a_damaged_snapshot_loses_no_file(env: &Env) {
    let src = backed_up(env);
    let snap = names(env, FileType::Snapshot).remove(0);
    damage(env, FileType::Snapshot, &snap);
    let short = &snap[..8];
    // On this computer the local index holds the snapshot, but restore checks the repository's
    // copy and says it is damaged.
    let out = env.restore_cmd(&env.path("here")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("snapshot {short} is damaged")) && err.contains("repair metadata"),
        "{err}"
    );
    assert_same_tree(src.as_path(), &restored(&env.path("here"), &src));
    // A new computer reads the second copy: every file comes back.
    let (code, err, target) = restore_fresh(env, "fresh");
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&src, &restored(&target, &src));
    assert!(
        err.contains(&format!("snapshot {short} is damaged")),
        "{err}"
    );
    // check names it, says nothing is lost, and what repairs it.
    let (code, report) = check(env, false);
    assert_eq!(code, 1, "{report}");
    let e = errors(&report);
    assert!(
        e.contains(&format!("snapshot {short}")) && e.contains("nothing is lost"),
        "{e}"
    );
    assert_eq!(report["damaged_files"].as_array().unwrap().len(), 0);
    let said = repair_metadata(env);
    assert!(
        said.contains(&format!("rewrote snapshot {short} (first copy)")),
        "{said}"
    );
    whole_again(env, &src, "after");

    // Both copies damaged: this computer's local index still holds it, and repair writes it
    // back from there.
    damage(env, FileType::Snapshot, &snap);
    damage(env, FileType::SnapshotCopy, &snap);
    let out = env.restore_cmd(&env.path("here2")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("both copies of snapshot"), "{err}");
    let said = repair_metadata(env);
    assert!(said.contains("(second copy)"), "{said}");
    whole_again(env, &src, "after2");
}

fn a_damaged_tree_pack_loses_no_file(env: &Env) {
    let src = backed_up(env);
    // The only tree pack: it holds the root tree and every folder's.
    let trees = names(env, FileType::TreePackCopy);
    assert_eq!(trees.len(), 1, "{trees:?}");
    let pack = &trees[0];
    damage(env, FileType::Pack, pack);
    let (code, err, target) = restore_fresh(env, "fresh");
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&src, &restored(&target, &src));
    assert!(
        err.contains(&format!("tree pack {} is damaged", &pack[..8])),
        "{err}"
    );
    for read_data in [false, true] {
        let (code, report) = check(env, read_data);
        assert_eq!(code, 1, "{report}");
        let e = errors(&report);
        assert!(
            e.contains(&format!("pack {}", &pack[..8])) && e.contains("nothing is lost"),
            "{e}"
        );
        assert_eq!(
            report["damaged_files"].as_array().unwrap().len(),
            0,
            "{report}"
        );
    }
    let said = repair_metadata(env);
    assert!(
        said.contains(&format!("rewrote tree pack {} (first copy)", &pack[..8])),
        "{said}"
    );
    whole_again(env, &src, "after");
    // A lost first copy is put back the same way.
    env.store().delete(FileType::Pack, pack).unwrap();
    let (code, err, target) = restore_fresh(env, "fresh2");
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&src, &restored(&target, &src));
    repair_metadata(env);
    whole_again(env, &src, "after2");
}

fn a_damaged_config_is_read_from_its_copy(env: &Env) {
    let src = backed_up(env);
    damage(env, FileType::Config, "");
    let (code, err, target) = restore_fresh(env, "fresh");
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&src, &restored(&target, &src));
    let (code, report) = check(env, false);
    assert_eq!(code, 1, "{report}");
    let e = errors(&report);
    assert!(e.contains("config") && e.contains("nothing is lost"), "{e}");
    let said = repair_metadata(env);
    assert!(said.contains("rewrote config (first copy)"), "{said}");
    whole_again(env, &src, "after");
}

fn a_damaged_index_object_is_named_and_restore_goes_on(env: &Env) {
    let src = backed_up(env);
    let index = names(env, FileType::Index);
    assert_eq!(index.len(), 1, "{index:?}");
    damage(env, FileType::Index, &index[0]);
    let (code, report) = check(env, false);
    assert_eq!(code, 1, "{report}");
    let e = errors(&report);
    assert!(e.contains(&format!("index {}", &index[0][..8])), "{e}");
    assert_eq!(report["repair_index"], true, "{report}");
    // The packs' own tables describe what the index did: nothing depends on the index alone.
    let (code, err, target) = restore_fresh(env, "fresh");
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&src, &restored(&target, &src));
    assert!(err.contains(&format!("index {}", &index[0][..8])), "{err}");
    env.vault().args(["repair", "index"]).assert().success();
    whole_again(env, &src, "after");
}

fn a_damaged_data_pack_costs_only_its_files(env: &Env) {
    let src = backed_up(env);
    let trees: BTreeSet<String> = names(env, FileType::TreePackCopy).into_iter().collect();
    let data: Vec<String> = names(env, FileType::Pack)
        .into_iter()
        .filter(|p| !trees.contains(p))
        .collect();
    assert!(data.len() >= 2, "{data:?}");
    let pack = &data[0];
    // In the first 64 KiB chunk (past the age header): it holds the first blob, never padding.
    damage_at(env, FileType::Pack, pack, 1000);
    let (code, report) = check(env, true);
    assert_eq!(code, 1, "{report}");
    let e = errors(&report);
    assert!(e.contains(&format!("pack {}", &pack[..8])), "{e}");
    let damaged: BTreeSet<String> = report["damaged_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let d = d.as_str().unwrap();
            d.split_once(':').unwrap().1.to_string()
        })
        .collect();
    let all: BTreeSet<String> = all_files(&src)
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert!(!damaged.is_empty(), "{report}");
    assert!(damaged.len() < all.len(), "{report}");
    assert!(damaged.is_subset(&all), "{damaged:?} {all:?}");
    // Restore brings back every other file, byte-exact, and names the ones it could not.
    let (code, err, target) = restore_fresh(env, "fresh");
    assert_ne!(code, 0, "{err}");
    for f in &all {
        let back = restored(&target, Path::new(f));
        if damaged.contains(f) {
            assert!(!back.exists(), "{f} restored from a damaged pack");
            let name = Path::new(f).file_name().unwrap().to_string_lossy();
            assert!(err.contains(name.as_ref()), "{name} not named: {err}");
        } else {
            assert_eq!(fs::read(&back).unwrap(), fs::read(f).unwrap(), "{f}");
        }
    }
}

fn a_damaged_key_file_is_named_and_the_other_keys_still_open(env: &Env) {
    let src = backed_up(env);
    let rk = env.path("recovery.txt");
    env.vault()
        .args(["key", "add", "--recovery", "--recovery-key-file"])
        .arg(&rk)
        .assert()
        .success();
    let keys = env.key_list();
    let recovery = keys
        .iter()
        .find(|k| k["current"] == false)
        .and_then(|k| k["id"].as_str())
        .unwrap_or_else(|| panic!("{keys:?}"))
        .to_string();
    let full = names(env, FileType::Key)
        .into_iter()
        .find(|n| n.starts_with(&recovery[..8]))
        .unwrap();
    damage(env, FileType::Key, &full);
    let (code, report) = check(env, false);
    assert_eq!(code, 1, "{report}");
    let e = errors(&report);
    assert!(e.contains(&format!("key file {}", &full[..8])), "{e}");
    assert!(e.contains("vault key add"), "{e}");
    // The passphrase still opens the repository and everything restores.
    let (code, err, target) = restore_fresh(env, "fresh");
    assert_eq!(code, 0, "{err}");
    assert_same_tree(&src, &restored(&target, &src));
}

macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[test]
            fn folder() {
                super::$name(&Env::new());
            }
            #[test]
            fn s3() {
                let Some(ep) = s3_endpoint() else { return };
                super::$name(&Env::s3(&ep));
            }
        }
    };
}

on_both!(a_damaged_snapshot_loses_no_file);
on_both!(a_damaged_tree_pack_loses_no_file);
on_both!(a_damaged_config_is_read_from_its_copy);
on_both!(a_damaged_index_object_is_named_and_restore_goes_on);
on_both!(a_damaged_data_pack_costs_only_its_files);
on_both!(a_damaged_key_file_is_named_and_the_other_keys_still_open);

/// A snapshot stored only as its second copy (its first lost) is listed, restored and kept by
/// prune, and `vault repair metadata` puts the first back; second copies of tree packs that no
/// index lists and whose pack is gone are removed by prune after the grace period, and one
/// whose pack is only missing is kept (it may be all that is left).
fn prune_keeps_what_only_a_second_copy_holds(env: &Env) {
    let src = backed_up(env);
    let first_tree = src.join("a/IMG_0.jpg");
    let first_bytes = fs::read(&first_tree).unwrap();
    fs::remove_file(&first_tree).unwrap();
    fs::write(src.join("a/new.jpg"), noise(50_000, 99)).unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    let snaps = names(env, FileType::Snapshot);
    assert_eq!(snaps.len(), 2);
    // The snapshot that alone holds IMG_0.jpg loses its first copy.
    let listed = env.vault().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let oldest = v[0]["id"].as_str().unwrap().to_string();
    env.store().delete(FileType::Snapshot, &oldest).unwrap();
    // A new computer still lists it, and says what it read.
    let out = env
        .vault()
        .args(["--no-cache", "snapshots"])
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(so.contains(&oldest[..8]), "{so}{se}");
    assert!(se.contains(&format!("snapshot {}", &oldest[..8])), "{se}");
    // Prune keeps what it needs: IMG_0.jpg restores from it afterwards.
    let out = env
        .vault()
        .args(["--json", "prune", "--grace", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = env
        .vault()
        .args(["--no-cache", "restore", &oldest[..8], "--target"])
        .arg(env.path("old"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        fs::read(restored(&env.path("old"), &first_tree)).unwrap(),
        first_bytes
    );
    let said = repair_metadata(env);
    assert!(
        said.contains(&format!("rewrote snapshot {} (first copy)", &oldest[..8])),
        "{said}"
    );
    let mut now = names(env, FileType::Snapshot);
    now.sort();
    assert_eq!(now, snaps);
    fs::write(&first_tree, &first_bytes).unwrap();
    fs::remove_file(src.join("a/new.jpg")).unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    whole_again(env, &src, "after");
}

fn prune_removes_orphan_tree_copies_and_keeps_lone_ones(env: &Env) {
    let src = backed_up(env);
    // An orphan second copy (a backup stopped between the two writes) and a tree pack whose
    // first copy is lost.
    let trees = names(env, FileType::TreePackCopy);
    let orphan = "ab".repeat(32);
    env.store()
        .put(FileType::TreePackCopy, &orphan, &noise(70_000, 5))
        .unwrap();
    env.store().delete(FileType::Pack, &trees[0]).unwrap();
    let out = env
        .vault()
        .args(["--json", "prune", "--grace", "0"])
        .output()
        .unwrap();
    // Its trees are needed and only the second copy holds them: prune refuses, deleting nothing.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped before changing anything"),
        "{out:?}"
    );
    let left = names(env, FileType::TreePackCopy);
    assert!(left.contains(&trees[0]), "the only copy left must stay");
    repair_metadata(env);
    let out = env
        .vault()
        .args(["--json", "prune", "--grace", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["orphan_copies_removed"], 1, "{v}");
    let left = names(env, FileType::TreePackCopy);
    assert!(!left.contains(&orphan), "{left:?}");
    assert!(left.contains(&trees[0]), "{left:?}");
    whole_again(env, &src, "after");
}

on_both!(prune_keeps_what_only_a_second_copy_holds);
on_both!(prune_removes_orphan_tree_copies_and_keeps_lone_ones);

/// A tree pack's first copy replaced by another genuine tree pack of the repository (a storage
/// that swaps objects): readers take the second copy, `repair index` keeps describing it, and
/// `repair metadata` puts the first back without ever writing over the only copy of a tree.
fn a_tree_pack_swapped_for_another_loses_no_file(env: &Env) {
    let src = backed_up(env);
    let before = names(env, FileType::TreePackCopy);
    fs::write(src.join("b/later.jpg"), noise(60_000, 77)).unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    let newest = names(env, FileType::TreePackCopy)
        .into_iter()
        .find(|n| !before.contains(n))
        .unwrap();
    let older = &before[0];
    let store = env.store();
    let other = store.get(FileType::Pack, older).unwrap();
    store.delete(FileType::Pack, &newest).unwrap();
    store.put(FileType::Pack, &newest, &other).unwrap();
    for (i, fresh) in [false, true].into_iter().enumerate() {
        let target = env.path(&format!("swapped{i}"));
        let mut c = env.vault();
        if fresh {
            c.arg("--no-cache");
        }
        let out = c
            .args(["restore", "--target"])
            .arg(&target)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_same_tree(&src, &restored(&target, &src));
    }
    let (code, report) = check(env, false);
    assert_eq!(code, 1, "{report}");
    assert!(errors(&report).contains("nothing is lost"), "{report}");
    // Whoever runs `repair index` first loses nothing either.
    env.vault().args(["repair", "index"]).assert().success();
    let said = repair_metadata(env);
    assert!(
        said.contains(&format!("rewrote tree pack {} (first copy)", &newest[..8])),
        "{said}"
    );
    whole_again(env, &src, "after");
}

on_both!(a_tree_pack_swapped_for_another_loses_no_file);

/// A snapshot neither copy of which can be read holds prune back (what it needs is unknown);
/// `forget ID` lets it go, and prune goes on.
fn an_unreadable_snapshot_can_be_forgotten_by_id(env: &Env) {
    let src = backed_up(env);
    fs::write(src.join("a/new.jpg"), noise(50_000, 98)).unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    let listed = env.vault().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let oldest = v[0]["id"].as_str().unwrap().to_string();
    damage(env, FileType::Snapshot, &oldest);
    damage(env, FileType::SnapshotCopy, &oldest);
    let out = env
        .vault()
        .args(["--no-cache", "prune", "--grace", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        names(env, FileType::Condemned).is_empty(),
        "a refused prune leaves no marker"
    );
    let out = env
        .vault()
        .args(["--no-cache", "forget", &oldest[..8]])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!names(env, FileType::Snapshot).contains(&oldest));
    assert!(!names(env, FileType::SnapshotCopy).contains(&oldest));
    env.vault()
        .args(["--no-cache", "prune", "--grace", "0", "-q"])
        .assert()
        .success();
    whole_again(env, &src, "after");
}

on_both!(an_unreadable_snapshot_can_be_forgotten_by_id);
