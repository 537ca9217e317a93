//! Write-only device profiles: they back up (deduplicating against the repository) and can read
//! nothing back: no content, no file name, no snapshot.

mod common;

use common::*;
use std::fs;

#[test]
fn a_write_only_device_backs_up_and_reads_nothing() {
    let env = Env::new();
    env.init();
    // The owner backs up one album from the laptop.
    let laptop = env.path("laptop");
    fs::create_dir_all(&laptop).unwrap();
    let shared = noise(3_000_000, 42);
    fs::write(laptop.join("CANARYNAME_shared.jpg"), &shared).unwrap();
    env.vault().arg("backup").arg(&laptop).assert().success();

    // A phone gets a write-only profile.
    let profile = env.path("phone.profile");
    env.vault()
        .args([
            "key",
            "add",
            "--write-only",
            "--label",
            "phone",
            "--profile-file",
        ])
        .arg(&profile)
        .assert()
        .success();
    assert_eq!(
        fs::metadata(&profile).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let phone = Env::new(); // a different device: own HOME, no passphrase
    let src = phone.path("DCIM");
    fs::create_dir_all(src.join("CANARYDIR_private")).unwrap();
    fs::write(
        src.join("CANARYDIR_private/CANARYNAME_secret.jpg"),
        noise(2_000_000, 7),
    )
    .unwrap();
    fs::write(src.join("copy_of_shared.jpg"), &shared).unwrap();
    let run = |args: &[&str]| {
        phone
            .vault()
            .env_remove("VAULT_PASSWORD")
            .env("VAULT_REPO", env.repo())
            .env("VAULT_PROFILE_FILE", &profile)
            .args(args)
            .output()
            .unwrap()
    };
    let out = phone
        .vault()
        .env_remove("VAULT_PASSWORD")
        .env("VAULT_REPO", env.repo())
        .env("VAULT_PROFILE_FILE", &profile)
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The shared file's chunks all come from the laptop's upload: only the private 2 MB (and
    // the trees) are added. Counting reused chunks instead depended on how many chunks the
    // repository's random gear cut the shared 3 MB into (one, now and then).
    assert!(
        v["blobs_reused"].as_u64().unwrap() >= 1 && v["bytes_added"].as_u64().unwrap() < 2_100_000,
        "deduplicates against the laptop's upload: {v}"
    );

    // Everything that reads fails with the same clear message.
    for args in [
        &["snapshots"][..],
        &["ls"],
        &["restore", "--target", "/tmp/never-restored"],
        &["check"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("write-only key"), "{args:?}: {err}");
    }
    assert!(!std::path::Path::new("/tmp/never-restored").exists());

    // The owner sees the phone's snapshot, marked as a write-only device's, and restores it by
    // its id: `latest` is the newest snapshot of a full device (design.md §11).
    let listed = env.vault().args(["snapshots", "--json"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let writers: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["writer"].as_str().unwrap())
        .collect();
    assert_eq!(writers, ["full", "write-only"]);
    let phone_snap = listed[1]["id"].as_str().unwrap().to_string();
    let text = env.vault().arg("snapshots").output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("(write-only device)"));
    let out = env.path("out");
    let latest = env
        .vault()
        .args(["restore", "--target"])
        .arg(&out)
        .arg("--include")
        .arg(&src)
        .output()
        .unwrap();
    assert!(!latest.status.success());
    assert!(String::from_utf8_lossy(&latest.stderr).contains("written by a write-only device"));
    env.vault()
        .args(["restore", &phone_snap, "--target"])
        .arg(&out)
        .arg("--include")
        .arg(&src)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&out, &src));

    // What the phone can read: its own local state and, with its keys, the index and config.
    // No canary name may be there.
    for f in all_files(phone.dir.path()) {
        if f.starts_with(&src) {
            continue; // the phone's own photos
        }
        let data = fs::read(&f).unwrap();
        assert!(!data.windows(6).any(|w| w == b"CANARY"), "{}", f.display());
    }
    let material = vault::repo::parse_profile(&fs::read_to_string(&profile).unwrap()).unwrap();
    assert!(material.data_identity.is_none());
    let idx = &material.index_identity;
    for f in all_files(&env.repo()) {
        let ct = fs::read(&f).unwrap();
        let rel = f
            .strip_prefix(env.repo())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        match idx.decrypt(&ct, "object") {
            Ok(plain) => {
                assert!(
                    rel.starts_with("index/") || rel == "config" || rel == "copies/config",
                    "the phone can decrypt {rel}"
                );
                assert!(!plain.windows(6).any(|w| w == b"CANARY"), "names in {rel}");
            }
            Err(_) => assert!(
                !rel.starts_with("index/"),
                "index {rel} must be readable for dedup"
            ),
        }
    }
}

use std::os::unix::fs::PermissionsExt;
