//! Device keys in a real OS keyring store: the Linux kernel keyutils store, which
//! scripts/test-all.sh provides by running the tests inside `keyctl session`.

mod common;

use common::*;
use predicates::prelude::*;
use std::fs;

fn keyring_store() -> Option<String> {
    match std::env::var("VAULT_TEST_KEYRING") {
        Ok(k) if !k.is_empty() => Some(k),
        _ => {
            assert!(
                std::env::var_os("VAULT_TEST_KEYRING_REQUIRED").is_none(),
                "VAULT_TEST_KEYRING_REQUIRED is set but VAULT_TEST_KEYRING is not"
            );
            eprintln!("skipping keyring test: no keyring store (run scripts/test-all.sh)");
            None
        }
    }
}

#[test]
fn remembered_device_key_runs_backup_and_restore_without_a_passphrase() {
    let Some(store) = keyring_store() else { return };
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    let unattended = || {
        let mut c = env.vault();
        c.env_remove("VAULT_PASSWORD").env("VAULT_KEYRING", &store);
        c
    };
    // Without a remembered key there is no way in.
    unattended()
        .arg("snapshots")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no passphrase"));
    env.vault()
        .env("VAULT_KEYRING", &store)
        .args(["key", "remember"])
        .assert()
        .success()
        .stdout(predicate::str::contains("now unlocks"));
    unattended().arg("backup").arg(&src).assert().success();
    let out = env.path("out");
    unattended()
        .args(["restore", "--target"])
        .arg(&out)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&out, &src));
    // The device key is a key file of its own, and nothing secret was written to disk.
    let v = serde_json::Value::Array(env.key_list());
    assert_eq!(
        v.as_array().unwrap().len(),
        3,
        "passphrase, recovery, device"
    );
    let home = env.path("home");
    for f in if home.exists() {
        all_files(&home)
    } else {
        vec![]
    } {
        let data = fs::read(&f).unwrap();
        assert!(
            !data.windows(15).any(|w| w == b"AGE-SECRET-KEY-"),
            "secret in {}",
            f.display()
        );
    }

    unattended()
        .args(["key", "forget-device"])
        .assert()
        .success();
    unattended()
        .arg("backup")
        .arg(&src)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no passphrase"));
    let v = serde_json::Value::Array(env.key_list());
    assert_eq!(
        v.as_array().unwrap().len(),
        2,
        "the device key file is gone too"
    );
}

#[test]
fn no_store_means_a_clear_message_not_a_file() {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
        return; // a desktop with a Secret Service: the platform store exists
    }
    let env = Env::new();
    env.init();
    env.vault()
        .env("VAULT_KEYRING", "platform")
        .args(["key", "remember"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no OS keyring is available"));
    let v = serde_json::Value::Array(env.key_list());
    assert_eq!(
        v.as_array().unwrap().len(),
        2,
        "no device key file was left behind"
    );
    assert!(!env.path("home").exists() || all_files(&env.path("home")).is_empty());
}

#[test]
fn a_device_key_alone_does_not_authorise_a_move_until_the_recovery_key_is_proven() {
    let Some(store) = keyring_store() else { return };
    let env = Env::new();
    env.init();
    let src = env.path("Private");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.jpg"), noise(300_000, 1)).unwrap();
    let recovery = env.path("recovery.txt");
    env.vault()
        .args(["key", "add", "--recovery", "--recovery-key-file"])
        .arg(&recovery)
        .assert()
        .success();
    env.vault()
        .env("VAULT_KEYRING", &store)
        .args(["key", "remember"])
        .assert()
        .success();
    let unattended = || {
        let mut c = env.vault();
        c.env_remove("VAULT_PASSWORD").env("VAULT_KEYRING", &store);
        c
    };
    // Opened from the keyring only: if this computer died, could the user still get in?
    unattended()
        .args(["move", "--copies", "1"])
        .arg(&src)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("key verify-recovery"));
    assert!(src.join("a.jpg").exists());
    unattended()
        .args(["key", "verify-recovery", "--identity"])
        .arg(&recovery)
        .assert()
        .success();
    unattended()
        .args(["move", "--copies", "1"])
        .arg(&src)
        .assert()
        .success();
    assert!(!src.exists());
}
