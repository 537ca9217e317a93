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
        env.check_read_data();
    }
    env.vault().arg("backup").arg(&src).assert().success();
    env.check_read_data();
    env.assert_restores(&src, "out");
}

fn sigint_after(mut cmd: std::process::Command, delay_ms: u64) -> std::process::Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(delay_ms));
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    child.wait_with_output().unwrap()
}

#[test]
fn ctrl_c_stops_cleanly_and_leaves_no_partial_files() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..40u64 {
        fs::write(
            src.join(format!("IMG_{i:03}.HEIC")),
            noise(3 * 1024 * 1024, 300 + i),
        )
        .unwrap();
    }
    env.init();
    let bin = assert_cmd::cargo::cargo_bin("vault");
    let base = |args: &[&std::ffi::OsStr]| {
        let mut c = std::process::Command::new(&bin);
        c.env("VAULT_PASSWORD", PASS)
            .env("VAULT_REPO", env.repo())
            .env("HOME", env.path("home"))
            .args(args);
        c
    };
    let out = sigint_after(base(&["backup".as_ref(), src.as_os_str()]), 150);
    let code = out.status.code();
    assert!(code == Some(130) || code == Some(0), "{out:?}");
    if code == Some(130) {
        assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    }
    env.check_read_data();
    env.vault().arg("backup").arg(&src).assert().success();

    let target = env.path("out");
    let out = sigint_after(
        base(&["restore".as_ref(), "--target".as_ref(), target.as_os_str()]),
        100,
    );
    let code = out.status.code();
    assert!(code == Some(130) || code == Some(0), "{out:?}");
    for f in all_files(&target) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".vault-restore-"),
            "temporary file left: {name}"
        );
    }
    // Running it again finishes the job without touching what is already there.
    let again = env
        .vault()
        .args(["restore", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        matches!(again.status.code(), Some(0) | Some(3)),
        "{again:?}"
    );
    assert_same_tree(&src, &restored(&target, &src));
    assert_eq!(env.restore_journals(), Vec::<std::path::PathBuf>::new());
}
