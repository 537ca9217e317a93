//! `vault repair index` on folder and S3 repositories: a lost and a damaged index object are
//! rebuilt from the packs' own tables, a run stopped anywhere is finished by running it again,
//! and nothing a pack holds is lost on the way (design.md §9.1).

mod common;

use std::fs;

use common::*;
use vault::backend::FileType;

fn repair_json(env: &Env, args: &[&str]) -> (i32, serde_json::Value) {
    let out = env
        .vault()
        .args(["repair", "index", "--json"])
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (code, v)
}

fn index_names(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = env
        .store()
        .list(FileType::Index)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.to_hex())
        .collect();
    v.sort();
    v
}

/// Two backups, then one index object lost and another overwritten with garbage.
fn damaged_repository(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    make_tree(&src);
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    fs::write(src.join("later.jpg"), noise(1_500_000, 7)).unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    let names = index_names(env);
    assert!(names.len() >= 2, "{names:?}");
    let store = env.store();
    store.delete(FileType::Index, &names[0]).unwrap();
    store.delete(FileType::Index, &names[1]).unwrap();
    store
        .put(FileType::Index, &names[1], &noise(70_000, 3))
        .unwrap();
    src
}

fn lost_and_damaged_index_objects_are_rebuilt(env: &Env) {
    let src = damaged_repository(env);
    let before = index_names(env);
    let out = env.vault().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("vault repair index"),
        "{out:?}"
    );

    // A dry run changes nothing and says what it found.
    let (code, v) = repair_json(env, &["--dry-run"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["damaged_index_objects"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    assert!(v["blobs_verified"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(index_names(env), before);

    let (code, v) = repair_json(env, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["blobs_refused"], 0, "{v}");
    assert_eq!(v["index_objects_removed"], before.len() as u64, "{v}");
    let after = index_names(env);
    assert!(after.iter().all(|n| !before.contains(n)), "{after:?}");
    assert_eq!(
        after.len() as u64,
        v["index_objects_written"].as_u64().unwrap()
    );

    env.vault()
        .args(["check", "--read-data"])
        .assert()
        .success();
    env.assert_restores_fresh(&src);
    // Nothing is stored again: the rebuilt index vouches for every chunk.
    let b = env.backup_json(&src);
    assert_eq!(
        b["bytes_added"].as_u64().unwrap(),
        b["tree_bytes_added"].as_u64().unwrap(),
        "{b}"
    );
    // A second repair of a sound repository finds every entry vouched for.
    let (code, v) = repair_json(env, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["blobs_verified"], 0, "{v}");
    assert_eq!(v["entries_dropped"], 0, "{v}");
}

#[test]
fn folder_lost_and_damaged_index_objects_are_rebuilt() {
    lost_and_damaged_index_objects_are_rebuilt(&Env::new());
}

#[test]
fn s3_lost_and_damaged_index_objects_are_rebuilt() {
    let Some(ep) = s3_endpoint() else { return };
    lost_and_damaged_index_objects_are_rebuilt(&Env::s3(&ep));
}

fn a_stopped_repair_is_finished_by_running_it_again(env: &Env) {
    let src = damaged_repository(env);
    // Stopped after writing every new index object, before removing an old one: the state is
    // put together by hand (the old objects put back after a full run).
    let store = env.store();
    let old: Vec<(String, Vec<u8>)> = index_names(env)
        .into_iter()
        .map(|n| {
            let b = store.get(FileType::Index, &n).unwrap();
            (n, b)
        })
        .collect();
    let (code, _) = repair_json(env, &[]);
    assert_eq!(code, 0);
    for (n, b) in &old {
        store.put(FileType::Index, n, b).unwrap();
    }
    // Restores work in that state; check names only the damaged object.
    env.assert_restores_fresh(&src);
    let (code, v) = repair_json(env, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["damaged_index_objects"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    env.vault().arg("check").assert().success();

    // kill -9 at a few moments of a real run (fractions of how long one takes here), then once
    // more to the end.
    let bin = assert_cmd::cargo::cargo_bin("vault");
    let t = std::time::Instant::now();
    repair_json(env, &[]);
    let whole = t.elapsed();
    for (k, frac) in [0.3f64, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0, 1.1]
        .into_iter()
        .enumerate()
    {
        fs::write(src.join(format!("k{k}.jpg")), noise(800_000, k as u64)).unwrap();
        env.vault().arg("backup").arg(&src).assert().success();
        let mut child = std::process::Command::new(&bin)
            .env_clear()
            .envs(env.envs())
            .args(["--quiet", "repair", "index"])
            .spawn()
            .unwrap();
        std::thread::sleep(whole.mul_f64(frac));
        let _ = child.kill();
        let _ = child.wait();
        env.assert_restores_fresh(&src);
    }
    let (code, v) = repair_json(env, &[]);
    assert_eq!(code, 0, "{v}");
    env.vault()
        .args(["check", "--read-data"])
        .assert()
        .success();
    env.assert_restores_fresh(&src);
}

#[test]
fn folder_a_stopped_repair_is_finished_by_running_it_again() {
    a_stopped_repair_is_finished_by_running_it_again(&Env::new());
}

#[test]
fn s3_a_stopped_repair_is_finished_by_running_it_again() {
    let Some(ep) = s3_endpoint() else { return };
    a_stopped_repair_is_finished_by_running_it_again(&Env::s3(&ep));
}

#[test]
fn a_write_only_device_cannot_repair() {
    let env = Env::new();
    env.init();
    let profile = env.phone_profile();
    let out = env
        .vault()
        .env_remove("VAULT_PASSWORD")
        .env("VAULT_PROFILE_FILE", &profile)
        .args(["repair", "index"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("write-only"),
        "{out:?}"
    );
}
