//! `vault forget` and `vault prune` (design.md §11.1, §13.2) on folder and S3 repositories: a
//! retention policy over 30 daily snapshots, two prune runs a grace period apart, every kept
//! snapshot restored byte-exact and the repository smaller by what the forgotten data weighed;
//! vault-only files kept; forgotten snapshots not reported missing; write-only devices refused.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;
use vault::backend::FileType;

const DAY: i64 = 86_400;
/// 2026-10-01 00:00:00 UTC, a Thursday.
const START: i64 = 1_790_812_800;
const PHOTO: usize = 300_000;

/// The tree on day `d`: the photos of the last three days (older ones deleted) and a notes file.
fn state(root: &Path, d: i64) {
    let _ = fs::remove_dir_all(root);
    fs::create_dir_all(root).unwrap();
    for k in (d - 2).max(0)..=d {
        fs::write(root.join(format!("IMG_{k:04}.JPG")), noise(PHOTO, k as u64)).unwrap();
        set_mtime(&root.join(format!("IMG_{k:04}.JPG")), START + k * DAY);
    }
    fs::write(root.join("notes.txt"), format!("day {d}\n")).unwrap();
    set_mtime(&root.join("notes.txt"), START + d * DAY);
}

fn json(env: &Env, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = env.vault().arg("--json").args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap(), v, err)
}

fn repository_bytes(env: &Env) -> u64 {
    let store = env.store();
    [FileType::Pack, FileType::Index, FileType::Snapshot]
        .iter()
        .flat_map(|t| store.list(*t).unwrap())
        .map(|(_, size)| size)
        .sum()
}

fn thirty_days_then_keep_daily_7_weekly_4(env: &Env) {
    env.init();
    let src = env.path("Pictures");
    for d in 0..30 {
        state(&src, d);
        env.vault()
            .args(["backup", "-q", "--time"])
            .arg((START + d * DAY + 3600).to_string())
            .arg(&src)
            .assert()
            .success();
    }
    let before = repository_bytes(env);

    // Without a policy it refuses, and changes nothing.
    let out = env.vault().arg("forget").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Nor does --keep-none say which groups by itself.
    let out = env
        .vault()
        .args(["forget", "--keep-none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // A policy that would keep nothing of a group is refused whole.
    let out = env
        .vault()
        .args(["forget", "--keep-tag", "nonesuch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--keep-none"),
        "{out:?}"
    );

    let (code, plan, err) = json(
        env,
        &[
            "forget",
            "--dry-run",
            "--keep-daily",
            "7",
            "--keep-weekly",
            "4",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let snaps = plan["groups"][0]["snapshots"].as_array().unwrap().clone();
    assert_eq!(snaps.len(), 30);
    // Days 23..29 daily, and the newest of each of the last four ISO weeks: days 29 (Friday),
    // 24, 17 and 10 (Sundays). restic keeps the same set.
    let kept: Vec<i64> = snaps
        .iter()
        .filter(|s| s["keep"] == true)
        .map(|s| (s["time"].as_i64().unwrap() - START) / DAY)
        .collect();
    assert_eq!(kept, vec![10, 17, 23, 24, 25, 26, 27, 28, 29], "{plan}");
    for s in &snaps {
        let reasons = s["reasons"].as_array().unwrap();
        assert_eq!(s["keep"] == true, !reasons.is_empty(), "{s}");
    }
    assert_eq!(env.store().list(FileType::Snapshot).unwrap().len(), 30);

    let (code, done, err) = json(env, &["forget", "--keep-daily", "7", "--keep-weekly", "4"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(done["removed"].as_array().unwrap().len(), 21, "{done}");
    assert_eq!(done["snapshot_objects_deleted"], 21, "{done}");
    // Other computers (a fresh local index) see no missing snapshot, and check passes.
    let fresh = Env::new();
    let out = env
        .vault()
        .env("HOME", fresh.path("home"))
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("missing"),
        "{out:?}"
    );
    env.vault().arg("check").assert().success();

    // stats: what each kept snapshot added sums to what they need; the rest is unused.
    let (code, st, err) = json(env, &["stats"]);
    assert_eq!(code, 0, "{err}");
    let lines = st["snapshots"].as_array().unwrap();
    assert_eq!(lines.len(), kept.len(), "{st}");
    let added: u64 = lines
        .iter()
        .map(|l| l["added_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(added, st["deduplicated_bytes"].as_u64().unwrap(), "{st}");
    assert!(
        st["unused_bytes"].as_u64().unwrap() >= 15 * PHOTO as u64 * 9 / 10,
        "{st}"
    );
    let (_, one, _) = json(env, &["stats", "latest"]);
    assert!(one["snapshots"][0]["deduplicated_bytes"].as_u64().unwrap() >= 3 * PHOTO as u64);

    // First prune: condemns; nothing is deleted before the grace period.
    let (code, p1, err) = json(env, &["prune", "--grace", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(p1["condemned_packs"].as_u64().unwrap() > 0, "{p1}");
    assert_eq!(p1["deleted_packs"], 0, "{p1}");
    env.vault().arg("check").assert().success();
    // Second: deletes what the first condemned.
    let (code, p2, err) = json(env, &["prune", "--grace", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(p2["deleted_packs"].as_u64().unwrap() > 0, "{p2}");
    assert!(p2["requests"]["delete"].as_u64().unwrap() > 0, "{p2}");
    env.check_read_data();

    // Kept days 10, 17 and 23..29 hold the photos of days 8..10, 15..17 and 21..29; those of
    // days 0..7, 11..14 and 18..20 (15 photos) are in no kept snapshot.
    let after = repository_bytes(env);
    let removed = 15 * PHOTO as u64;
    assert!(
        before - after >= removed * 9 / 10,
        "before {before}, after {after}, removed data {removed}"
    );
    // And nothing kept was lost: 15 photos are still needed.
    assert!(after >= 15 * PHOTO as u64, "after {after}");

    // Every kept snapshot restores byte-exact, on a fresh computer.
    let (_, list, _) = json(env, &["snapshots"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), kept.len());
    let expected = env.path("expected");
    for s in list {
        let d = (s["time"].as_i64().unwrap() - START) / DAY;
        state(&expected, d);
        let target = env.path(&format!("out-{d}"));
        env.vault()
            .env("HOME", fresh.path("home"))
            .args(["restore", "-q", s["id"].as_str().unwrap(), "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_same_tree(&expected, &restored(&target, &src));
    }

    let (_, st, _) = json(env, &["stats"]);
    assert!(
        st["unused_bytes"].as_u64().unwrap() < 5 * PHOTO as u64,
        "after prune: {st}"
    );

    // A third run has nothing left to do, and a snapshot deleted behind vault's back is still
    // reported.
    let (_, p3, _) = json(env, &["prune", "--grace", "0"]);
    assert_eq!(p3["deleted_packs"], 0, "{p3}");
    assert_eq!(p3["condemned_packs"], 0, "{p3}");
    let victim = list[0]["id"].as_str().unwrap();
    env.store().delete(FileType::Snapshot, victim).unwrap();
    let out = env.vault().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn folder_thirty_days_then_keep_daily_7_weekly_4() {
    thirty_days_then_keep_daily_7_weekly_4(&Env::new());
}

#[test]
fn s3_thirty_days_then_keep_daily_7_weekly_4() {
    let Some(ep) = s3_endpoint() else { return };
    thirty_days_then_keep_daily_7_weekly_4(&Env::s3(&ep));
}

#[test]
fn vault_only_files_are_never_forgotten_by_a_policy() {
    let env = Env::new();
    env.init();
    let pics = env.path("Pictures");
    state(&pics, 0);
    let private = env.path("Private");
    fs::create_dir_all(&private).unwrap();
    for k in 0..3 {
        fs::write(private.join(format!("p{k}.jpg")), noise(100_000, 100 + k)).unwrap();
    }
    let expected: BTreeMap<_, _> = snapshot_tree(&private);
    env.vault()
        .args(["move", "--copies", "1", "-q"])
        .arg(&private)
        .assert()
        .success();
    assert!(!private.join("p0.jpg").exists());
    // Later backups of another folder (the move's snapshot is no longer the newest).
    for d in 1..5 {
        state(&pics, d);
        env.vault()
            .args(["backup", "-q"])
            .arg(&pics)
            .assert()
            .success();
    }
    // One group for all (--group-by ''): keep-last 1 would drop the move's snapshot.
    let (code, v, err) = json(&env, &["forget", "--keep-last", "1", "--group-by", ""]);
    assert_eq!(code, 0, "{err}");
    let snaps = v["groups"][0]["snapshots"].as_array().unwrap();
    let moved: Vec<&serde_json::Value> = snaps
        .iter()
        .filter(|s| s["vault_only_held"].as_u64() == Some(3))
        .collect();
    assert_eq!(moved.len(), 1, "{v}");
    assert_eq!(moved[0]["keep"], true, "{v}");
    assert_eq!(
        moved[0]["reasons"][0], "holds 3 vault-only file(s) (the only copy)",
        "{v}"
    );
    let moved_id = moved[0]["id"].as_str().unwrap().to_string();
    let (_, st, _) = json(&env, &["stats"]);
    assert_eq!(st["vault_only_files"], 3, "{st}");
    assert_eq!(st["vault_only_bytes"], 300_000, "{st}");
    // forget --prune: the prune runs too, and reports with the forget.
    let (code, v, err) = json(
        &env,
        &[
            "forget",
            "--keep-last",
            "1",
            "--group-by",
            "",
            "--prune",
            "--grace",
            "0",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["prune"]["snapshots"], 2, "{v}");
    env.vault()
        .args(["prune", "--grace", "0", "-q"])
        .assert()
        .success();
    env.check_read_data();
    env.vault()
        .args(["restore", "--vault-only", "-q"])
        .assert()
        .success();
    assert_eq!(snapshot_tree(&private), expected);

    // Named explicitly, it is still kept (exit 3) unless its files are named too, and then
    // only with confirmation: without a terminal, --yes.
    let out = env
        .vault()
        .args(["forget", &moved_id[..8]])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = env
        .vault()
        .args(["forget", &moved_id[..8], "--vault-only"])
        .arg(&private)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{out:?}"
    );
    assert!(env
        .store()
        .list(FileType::Snapshot)
        .unwrap()
        .iter()
        .any(|(n, _)| n.to_hex() == moved_id));
    env.vault()
        .args(["forget", &moved_id[..8], "--yes", "--vault-only"])
        .arg(&private)
        .assert()
        .success();
    assert!(!env
        .store()
        .list(FileType::Snapshot)
        .unwrap()
        .iter()
        .any(|(n, _)| n.to_hex() == moved_id));
    env.vault().arg("check").assert().success();
}

#[test]
fn write_only_devices_cannot_forget_or_prune() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    state(&src, 0);
    env.vault().arg("backup").arg(&src).assert().success();
    let profile = env.phone_profile();
    for args in [&["forget", "--keep-last", "1"][..], &["prune"][..]] {
        let out = env
            .vault()
            .env_remove("VAULT_PASSWORD")
            .arg("--profile")
            .arg(&profile)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("write-only"), "{err}");
    }
    for dir in ["forgotten", "condemned"] {
        assert!(!env.repo().join(dir).exists(), "{dir}");
    }
}

#[test]
fn skip_if_unchanged_writes_no_snapshot() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    state(&src, 0);
    env.vault().arg("backup").arg(&src).assert().success();
    let (code, v, err) = json(
        &env,
        &["backup", "--skip-if-unchanged", src.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["unchanged"], true, "{v}");
    assert_eq!(env.store().list(FileType::Snapshot).unwrap().len(), 1);
    fs::write(src.join("new.txt"), "new").unwrap();
    let (_, v, _) = json(
        &env,
        &["backup", "--skip-if-unchanged", src.to_str().unwrap()],
    );
    assert_eq!(v["unchanged"], false, "{v}");
    assert_eq!(env.store().list(FileType::Snapshot).unwrap().len(), 2);
}

#[test]
fn prune_merges_many_small_index_objects() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for k in 0..36 {
        fs::write(src.join(format!("f{k}.txt")), format!("file {k}")).unwrap();
        env.vault()
            .args(["backup", "-q"])
            .arg(&src)
            .assert()
            .success();
    }
    assert!(env.store().list(FileType::Index).unwrap().len() >= 36);
    let (code, v, err) = json(&env, &["prune", "--grace", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(v["index_objects_removed"].as_u64().unwrap() >= 36, "{v}");
    assert!(env.store().list(FileType::Index).unwrap().len() <= 3, "{v}");
    env.check_read_data();
    env.assert_restores(&src, "out");
}

/// A snapshot gone without a forget record (deleted by hand, a storage rolled back) may come
/// back: prune refuses to delete its data until the user has acknowledged it (found by a
/// new-user trial: two prunes deleted the data of a snapshot deleted by hand).
#[test]
fn prune_refuses_while_a_snapshot_is_missing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("unique.jpg"), noise(PHOTO, 77)).unwrap();
    let first = env.backup_json(&src)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_file(src.join("unique.jpg")).unwrap();
    fs::write(src.join("other.jpg"), noise(PHOTO, 78)).unwrap();
    env.vault()
        .args(["backup", "-q"])
        .arg(&src)
        .assert()
        .success();
    // Both copies go (design.md §2.2: a second copy alone is listed and read).
    let saved = fs::read(env.repo().join("snapshots").join(&first)).unwrap();
    env.store().delete(FileType::Snapshot, &first).unwrap();
    env.store().delete(FileType::SnapshotCopy, &first).unwrap();
    for _ in 0..2 {
        let out = env
            .vault()
            .args(["prune", "--grace", "0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("missing") && err.contains("acknowledge"),
            "{err}"
        );
    }
    // Put back, it restores whole.
    fs::write(env.repo().join("snapshots").join(&first), &saved).unwrap();
    fs::write(env.repo().join("copies/snapshots").join(&first), &saved).unwrap();
    env.check_read_data();
    // Gone for good (both copies, design.md §2.2) and acknowledged: prune goes on.
    env.store().delete(FileType::Snapshot, &first).unwrap();
    env.store().delete(FileType::SnapshotCopy, &first).unwrap();
    env.vault()
        .args(["snapshots", "--acknowledge-missing"])
        .assert()
        .success();
    env.vault()
        .args(["prune", "--grace", "0", "-q"])
        .assert()
        .success();
}

/// A reader that goes away is not an error (`vault snapshots | true`).
#[test]
fn a_closed_pipe_ends_listings_quietly() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), "a").unwrap();
    env.vault()
        .args(["backup", "-q"])
        .arg(&src)
        .assert()
        .success();
    for cmd in ["snapshots", "stats"] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vault"))
            .env_clear()
            .envs(env.envs())
            .arg(cmd)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{cmd}: {err}");
        assert_eq!(out.status.code(), Some(0), "{cmd}: {err}");
    }
}

#[test]
fn forget_usage_errors_exit_2() {
    let env = Env::new();
    env.init();
    for args in [
        &["forget", "--group-by", "foo", "--keep-last", "1"][..],
        &["forget", "--keep-last", "1", "abcd"][..],
        &["forget", "--keep-none"][..],
        &["prune", "--max-unused", "200"][..],
        &["prune", "--grace", "1y"][..],
    ] {
        let out = env.vault().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.lines().count() <= 3, "{args:?}: {err}");
    }
}

/// Issue 21, item 8: packs a killed backup left on another computer (no index lists them, and
/// this computer's local index has no record of them) are collected by prune, and only once
/// they are older than the grace period: a running backup's packs are safe.
#[test]
fn prune_collects_the_packs_of_killed_backups_after_the_grace_period() {
    use vault::blobwriter::BlobWriter;
    use vault::format::BlobType;
    let env = Env::new();
    let src = env.path("src");
    state(&src, 0);
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    let packs_before = env.store().list(FileType::Pack).unwrap().len();
    {
        // Another computer's backup, killed after storing a pack and before indexing it.
        let repo = vault::repo::Repository::open(
            env.store(),
            &vault::crypto::Passphrase::new(PASS.into()),
        )
        .unwrap();
        let w = BlobWriter::new(&repo, 1).unwrap();
        w.add(BlobType::Data, &noise(500_000, 99)).unwrap();
        for p in w.flush().unwrap() {
            w.store_pack(p).unwrap();
        }
    }
    assert_eq!(
        env.store().list(FileType::Pack).unwrap().len(),
        packs_before + 1
    );
    // Within the grace period: left alone.
    let (code, r, err) = json(&env, &["prune"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["young_packs"], packs_before as u64 + 1, "{r}");
    assert_eq!(r["condemned_packs"], 0, "{r}");
    assert_eq!(r["deleted_packs"], 0, "{r}");
    // Past it (here: a grace period of 0 s): condemned, then deleted by the next prune.
    let (code, r, err) = json(&env, &["prune", "--grace", "0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["condemned_packs"], 1, "{r}");
    let (code, r, err) = json(&env, &["prune", "--grace", "0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["deleted_packs"], 1, "{r}");
    assert_eq!(
        env.store().list(FileType::Pack).unwrap().len(),
        packs_before
    );
    env.check_read_data();
    env.assert_restores_fresh(&src);
}
