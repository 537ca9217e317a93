//! kill -9 at any moment of a backup leaves a repository that `check` accepts, and the next
//! backup completes.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

#[test]
fn killed_backups_leave_a_valid_repository() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..24u64 {
        fs::write(
            src.join(format!("VID_{i:03}.MP4")),
            noise(3 * 1024 * 1024, 100 + i),
        )
        .unwrap();
    }
    env.init();
    let bin = assert_cmd::cargo::cargo_bin("vault");
    for (round, delay_ms) in [5u64, 40, 120, 300, 700].into_iter().enumerate() {
        // A new file each round so every run has something new to write.
        fs::write(
            src.join(format!("new_{round}.bin")),
            noise(2 * 1024 * 1024, 900 + round as u64),
        )
        .unwrap();
        let mut child = std::process::Command::new(&bin)
            .env("VAULT_PASSWORD", PASS)
            .env("VAULT_REPO", env.repo())
            .env("HOME", env.path("home"))
            .arg("--quiet")
            .arg("backup")
            .arg(&src)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        env.vault()
            .args(["check", "--read-data"])
            .assert()
            .success();
    }
    env.vault().arg("backup").arg(&src).assert().success();
    env.vault()
        .args(["check", "--read-data"])
        .assert()
        .success();
    let out = env.path("out");
    env.vault()
        .args(["restore", "--target"])
        .arg(&out)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&out, &src));
}
