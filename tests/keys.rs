//! Unlock methods: passphrase, recovery key, identity file; adding and removing them; distinct
//! errors; hostile key files; the recovery drill on a fresh machine.

mod common;

use common::*;
use predicates::prelude::*;
use std::fs;
use std::time::Instant;

fn identity_file(env: &Env, name: &str) -> (std::path::PathBuf, String) {
    let id = vault::crypto::DataIdentity::generate();
    let path = env.path(name);
    let secret = id.to_secret_string();
    fs::write(
        &path,
        format!(
            "# created by the test\n# public key: {}\n{}\n",
            id.recipient(),
            *secret
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut fs::metadata(&path).unwrap().permissions(),
        0o600,
    );
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (path, id.recipient().to_string())
}

fn setup() -> (Env, std::path::PathBuf, std::path::PathBuf) {
    let env = Env::new();
    let rk = env.path("recovery.txt");
    env.vault()
        .args(["init", "--kdf-log-n", "10", "--recovery-key-file"])
        .arg(&rk)
        .assert()
        .success()
        .stderr(predicate::str::contains("RECOVERY KEY"));
    let src = env.path("src");
    make_tree(&src);
    env.vault().arg("backup").arg(&src).assert().success();
    (env, src, rk)
}

fn restore_with(env: &Env, src: &std::path::Path, out: &str, args: &[&std::ffi::OsStr]) {
    let out = env.path(out);
    env.vault()
        .env_remove("VAULT_PASSWORD")
        .args(args)
        .args(["restore", "--target"])
        .arg(&out)
        .assert()
        .success();
    assert_same_tree(src, &restored(&out, src));
}

#[test]
fn each_method_unlocks_and_restores_identical_data() {
    let (env, src, rk) = setup();
    // Passphrase.
    env.assert_restores(&src, "by-pass");
    // Recovery key written by init.
    assert_eq!(
        fs::metadata(&rk).unwrap().permissions().mode() & 0o777,
        0o600
    );
    restore_with(
        &env,
        &src,
        "by-recovery",
        &["--identity".as_ref(), rk.as_os_str()],
    );
    // An age identity file added later.
    let (idf, _) = identity_file(&env, "me.key");
    env.vault()
        .args(["key", "add", "--identity-file"])
        .arg(&idf)
        .assert()
        .success();
    restore_with(
        &env,
        &src,
        "by-identity",
        &["--identity".as_ref(), idf.as_os_str()],
    );
    // A second passphrase.
    env.vault()
        .env("VAULT_NEW_PASSWORD", "second passphrase")
        .args(["key", "add", "--passphrase", "--kdf-log-n", "10"])
        .assert()
        .success();
    let out = env.path("by-second");
    env.vault()
        .env("VAULT_PASSWORD", "second passphrase")
        .args(["restore", "--target"])
        .arg(&out)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&out, &src));
    let v = serde_json::Value::Array(env.key_list());
    assert_eq!(v.as_array().unwrap().len(), 4);
}

use std::os::unix::fs::PermissionsExt;

fn fails_with(out: std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
}

#[test]
fn wrong_passphrase_wrong_identity_and_removed_method_fail_distinctly() {
    let (env, _src, _rk) = setup();
    fails_with(
        env.vault()
            .env("VAULT_PASSWORD", "guess")
            .arg("snapshots")
            .output()
            .unwrap(),
        "wrong passphrase",
    );
    let (stranger, _) = identity_file(&env, "stranger.key");
    fails_with(
        env.vault()
            .env_remove("VAULT_PASSWORD")
            .arg("--identity")
            .arg(&stranger)
            .arg("snapshots")
            .output()
            .unwrap(),
        "this identity does not unlock the repository",
    );
    let (idf, _) = identity_file(&env, "me.key");
    let added = env
        .vault()
        .args(["key", "add", "--identity-file"])
        .arg(&idf)
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&added.stdout)
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    env.vault()
        .arg("--identity")
        .arg(&idf)
        .arg("snapshots")
        .assert()
        .success();
    env.vault().args(["key", "remove", &id]).assert().success();
    fails_with(
        env.vault()
            .env_remove("VAULT_PASSWORD")
            .arg("--identity")
            .arg(&idf)
            .arg("snapshots")
            .output()
            .unwrap(),
        "this identity was removed from the repository",
    );
    // A removed passphrase is recognised too.
    env.vault()
        .env("VAULT_NEW_PASSWORD", "old passphrase")
        .args(["key", "add", "--passphrase", "--kdf-log-n", "10"])
        .assert()
        .success();
    let keys = env
        .vault()
        .args(["key", "list", "--json"])
        .env("VAULT_PASSWORD", "old passphrase")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    let current = v
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let full_id = objects(&env.repo(), "keys")
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&current)
        })
        .unwrap();
    let copy = std::fs::read(&full_id).unwrap();
    env.vault()
        .args(["key", "remove", &current])
        .assert()
        .success();
    fails_with(
        env.vault()
            .env("VAULT_PASSWORD", "old passphrase")
            .arg("snapshots")
            .output()
            .unwrap(),
        "this passphrase was removed from the repository",
    );
    // Someone kept a copy of the removed key file and puts it back: it stays removed.
    std::fs::write(&full_id, &copy).unwrap();
    fails_with(
        env.vault()
            .env("VAULT_PASSWORD", "old passphrase")
            .arg("snapshots")
            .output()
            .unwrap(),
        "this passphrase was removed from the repository",
    );
    // The original passphrase still works.
    env.vault().arg("snapshots").assert().success();
}

/// A key file with a work factor above the default is tried after cheaper ones and, when it is
/// the one that opens, the user is told what every unlock costs.
#[test]
fn a_costly_key_file_is_tried_last_and_warned_about() {
    let env = Env::new();
    env.init();
    env.vault()
        .env("VAULT_NEW_PASSWORD", "slow passphrase")
        .args(["key", "add", "--passphrase", "--kdf-log-n", "19"])
        .assert()
        .success();
    let out = env
        .vault()
        .env("VAULT_PASSWORD", "slow passphrase")
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2^19") && err.contains("planted"), "{err}");
    let out = env.vault().arg("snapshots").output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("2^19"));
    // The header tells the work factor without running scrypt.
    let factors: Vec<Option<u8>> = objects(&env.repo(), "keys")
        .iter()
        .map(|p| vault::crypto::scrypt_work_factor(&std::fs::read(p).unwrap()))
        .collect();
    assert!(
        factors.contains(&Some(10)) && factors.contains(&Some(19)),
        "{factors:?}"
    );
    assert!(
        factors.contains(&None),
        "the recovery key is no passphrase file"
    );
}

#[test]
fn the_last_method_cannot_be_removed() {
    let env = Env::new();
    env.init();
    let v = serde_json::Value::Array(env.key_list());
    let keys = v.as_array().unwrap();
    assert_eq!(keys.len(), 2, "passphrase and recovery key");
    let other = keys.iter().find(|k| k["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mine = keys.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.vault()
        .args(["key", "remove", &other])
        .assert()
        .success();
    env.vault()
        .args(["key", "remove", &mine])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("refusing to remove the last key"));
    env.vault().arg("snapshots").assert().success();
}

#[test]
fn a_hostile_work_factor_is_refused_quickly() {
    let env = Env::new();
    env.vault()
        .args(["init", "--kdf-log-n", "10"])
        .assert()
        .success();
    let keys = objects(&env.repo(), "keys");
    let mut hostile = 0;
    for k in &keys {
        let data = fs::read(k).unwrap();
        if let Some(pos) = data.windows(10).position(|w| w == b"-> scrypt ") {
            // Same salt, work factor 2^40: hours of CPU and a terabyte of RAM if honoured.
            let line_end = pos + data[pos..].iter().position(|b| *b == b'\n').unwrap();
            let mut patched = data[..line_end - 2].to_vec();
            patched.extend_from_slice(b"40");
            patched.extend_from_slice(&data[line_end..]);
            // Planted under the name its bytes give (§4.3), as an attacker would.
            let name = vault::format::keyfile::envelope_name(&patched).to_hex();
            fs::remove_file(k).unwrap();
            fs::write(k.with_file_name(name), patched).unwrap();
            hostile += 1;
        }
    }
    assert_eq!(hostile, 1);
    let start = Instant::now();
    let out = env.vault().arg("snapshots").output().unwrap();
    let took = start.elapsed();
    fails_with(out, "work factor of 2^40");
    println!("hostile key file refused in {took:?}");
    assert!(took.as_secs_f64() < 5.0, "refusal took {took:?}");
}

#[test]
fn recovery_drill_on_a_new_machine() {
    let (env, src, rk) = setup();
    env.vault()
        .env_remove("VAULT_PASSWORD")
        .arg("--identity")
        .arg(&rk)
        .args(["key", "verify-recovery"])
        .assert()
        .success()
        .stdout(predicate::str::contains("unlocks repository"));
    let (stranger, _) = identity_file(&env, "stranger.key");
    env.vault()
        .arg("--identity")
        .arg(&stranger)
        .args(["key", "verify-recovery"])
        .assert()
        .code(1);
    // A different machine: new HOME, no cache, no config, no passphrase; only the repository
    // and the recovery key the user kept.
    let laptop = Env::new();
    let out = laptop.path("restored");
    laptop
        .vault()
        .env_remove("VAULT_PASSWORD")
        .env("VAULT_REPO", env.repo())
        .arg("--identity")
        .arg(&rk)
        .args(["restore", "--target"])
        .arg(&out)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&out, &src));
    assert!(
        !laptop.path("home/.local/share/vault").exists(),
        "the drill writes no local state"
    );
}

/// Regression (issue 21, item 4): one flipped byte in the recovery key's file went unnoticed
/// by `check` (the user learned it the day the passphrase was lost), and a damaged passphrase
/// key file was reported as "wrong passphrase".
#[test]
fn a_damaged_key_file_is_named_by_check_and_at_unlock() {
    let (env, src, rk) = setup();
    let list = env.key_list();
    let file_of = |kind: &str| -> std::path::PathBuf {
        let id = list
            .iter()
            .find(|k| k["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {list:?}"))["id"]
            .as_str()
            .unwrap()
            .to_string();
        objects(&env.repo(), "keys")
            .into_iter()
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&id))
            .unwrap()
    };
    let recovery = file_of("recovery key");
    let passphrase = file_of("passphrase");
    env.vault().arg("check").assert().success();
    // The recovery key's file is damaged; the passphrase still works, and check says so.
    flip_byte(&recovery, -100);
    let out = env.vault().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("recovery key"), "{text}");
    assert!(text.contains("no longer match its name"), "{text}");
    assert!(text.contains("vault key add"), "{text}");
    // Unlocking with the damaged recovery key names the damage.
    let out = env
        .vault()
        .env_remove("VAULT_PASSWORD")
        .arg("--identity")
        .arg(&rk)
        .arg("snapshots")
        .output()
        .unwrap();
    fails_with(out, "is damaged");
    // A damaged passphrase key file is not "wrong passphrase"; the recovery key still works
    // once its own file is whole again.
    flip_byte(&recovery, -100);
    env.vault().arg("check").assert().success();
    // A file of no legible kind is no reason to doubt a wrong passphrase.
    let junk = env.repo().join("keys").join("00".repeat(32));
    fs::write(&junk, b"garbage").unwrap();
    let out = env
        .vault()
        .env("VAULT_PASSWORD", "guess")
        .arg("snapshots")
        .output()
        .unwrap();
    fails_with(out, "wrong passphrase");
    fs::remove_file(&junk).unwrap();
    flip_byte(&passphrase, 60);
    let out = env.vault().arg("snapshots").output().unwrap();
    fails_with(out, "(passphrase) is damaged");
    restore_with(
        &env,
        &src,
        "by-recovery",
        &["--identity".as_ref(), rk.as_os_str()],
    );
}
