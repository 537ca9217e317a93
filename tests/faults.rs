//! Faults that must not leave the user stuck (issue 21): a killed restore finished by running
//! it again, a backup that ran out of space re-run after space is freed, and more.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A library with nested folders of several modes, files of several sizes and a symlink.
fn library(src: &Path) {
    for (i, (dir, mode)) in [
        ("2023/Summer", 0o755),
        ("2023/Winter", 0o750),
        ("2024/Trip/raw", 0o711),
        ("2024/Trip/jpg", 0o755),
        ("Private", 0o700),
    ]
    .iter()
    .enumerate()
    {
        let d = src.join(dir);
        fs::create_dir_all(&d).unwrap();
        for j in 0..6u64 {
            let n = (i as u64) * 10 + j;
            let size = 200_000 + (n as usize * 37_717) % 1_500_000;
            fs::write(d.join(format!("IMG_{n:04}.JPG")), noise(size, n)).unwrap();
            set_mtime(&d.join(format!("IMG_{n:04}.JPG")), 1_600_000_000 + n as i64);
        }
        fs::set_permissions(&d, fs::Permissions::from_mode(*mode)).unwrap();
    }
    std::os::unix::fs::symlink("2023/Summer/IMG_0000.JPG", src.join("cover.jpg")).unwrap();
    for d in ["2023", "2024", "2024/Trip"] {
        set_mtime(&src.join(d), 1_500_000_000);
    }
}

/// A repository holding one snapshot of [`library`], and a quiet `vault restore` into `target`
/// to spawn.
fn backed_up_library(env: &Env, target: &Path) -> (std::path::PathBuf, std::process::Command) {
    let src = env.path("src");
    library(&src);
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("vault"));
    c.env_clear()
        .envs(env.envs())
        .args(["restore", "--target"])
        .arg(target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    (src, c)
}

fn leftovers(root: &Path) -> Vec<String> {
    all_files(root)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.contains(".vault-restore-"))
        .collect()
}

/// Regression (issue 21, item 3): after a kill, folders stayed 0700 and temporary files stayed
/// behind, and running the same command again fixed neither.
#[test]
fn a_killed_restore_is_finished_by_running_it_again() {
    let env = Env::new();
    let target = env.path("out");
    let (src, cmd) = backed_up_library(&env, &target);
    let restore = || {
        let mut c = std::process::Command::new(cmd.get_program());
        c.env_clear()
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .args(cmd.get_args())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    // How long a whole restore takes here, so that the kills fall inside one.
    let t = Instant::now();
    assert!(restore().status().unwrap().success());
    let whole = t.elapsed();
    assert_same_tree(&src, &restored(&target, &src));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut killed_mid_run = 0;
    for trial in 0..10 {
        fs::remove_dir_all(&target).unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = whole.mul_f64((seed % 1000) as f64 / 1000.0);
        let mut child = restore().spawn().unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            killed_mid_run += 1;
        }
        let rerun = restore().output().unwrap();
        assert!(
            rerun.status.success(),
            "trial {trial} (killed at {at:?}): {rerun:?}"
        );
        assert_same_tree(&src, &restored(&target, &src));
        assert_eq!(leftovers(&target), Vec::<String>::new(), "trial {trial}");
        assert_eq!(env.restore_journals(), Vec::<std::path::PathBuf>::new());
    }
    assert!(killed_mid_run >= 3, "only {killed_mid_run} kills hit a run");
}

/// Regression (issue 21, items 1, 2 and 8): a backup that ran out of space left complete packs
/// no index listed and a temporary file; the next run neither reused nor removed them, so it
/// failed again after space was freed, and the repository ended at twice the data.
#[test]
fn a_backup_that_ran_out_of_space_runs_again_once_space_is_freed() {
    let env = Env::new();
    let Some(disk) = SmallDisk::mount(&env.path("disk"), 40) else {
        eprintln!("cannot mount a small tmpfs here (needs root): nothing to test");
        return;
    };
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut data = 0u64;
    for i in 0..12u64 {
        let size = 2_900_000 + i as usize * 10_000;
        fs::write(src.join(format!("IMG_{i:04}.JPG")), noise(size, i)).unwrap();
        data += size as u64;
    }
    let repo = disk.0.join("repo");
    let filler = disk.0.join("filler");
    let vault = || {
        let mut c = env.vault();
        c.env("VAULT_REPO", &repo);
        c
    };
    let mut failures = 0;
    // Fillers of several sizes stop the run at several points: while packs are written, and
    // once they are all stored but their index is not.
    for filler_kib in [9000u64, 7000, 6000, 5500, 5000, 4500] {
        let _ = fs::remove_dir_all(&repo);
        let _ = fs::remove_dir_all(env.path("home/.cache"));
        vault()
            .args(["init", "--kdf-log-n", "10"])
            .assert()
            .success();
        fs::write(&filler, vec![0u8; (filler_kib * 1024) as usize]).unwrap();
        let out = vault().arg("backup").arg(&src).output().unwrap();
        fs::remove_file(&filler).unwrap();
        if out.status.success() {
            continue;
        }
        failures += 1;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("No space left on device"),
            "the cause is named: {stderr}"
        );
        assert!(
            !stderr.contains("thread stopped"),
            "the cause is not hidden: {stderr}"
        );
        let tmp: Vec<_> = all_files(&repo.join("tmp"));
        assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
        // Space freed: the same command works, and reuses what the failed run stored.
        vault().arg("backup").arg(&src).assert().success();
        let stored: u64 = all_files(&repo)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert!(
            stored as f64 <= 1.1 * data as f64,
            "filler {filler_kib} KiB: {stored} bytes stored for {data}"
        );
        vault().args(["check", "--read-data"]).assert().success();
        let back = env.path("back");
        let _ = fs::remove_dir_all(&back);
        vault()
            .args(["restore", "--target"])
            .arg(&back)
            .assert()
            .success();
        assert_same_tree(&src, &restored(&back, &src));
    }
    assert!(failures >= 2, "only {failures} runs ran out of space");
}

/// The journal of a restore: a second restore into the same target while one runs is refused.
#[test]
fn two_restores_into_one_target_do_not_run_at_once() {
    let env = Env::new();
    let target = env.path("out");
    let (_, mut first) = backed_up_library(&env, &target);
    let mut child = first.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.restore_journals().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = env.restore_cmd(&target).output().unwrap();
    let first_done = child.wait().unwrap();
    assert!(first_done.success());
    if second.status.success() {
        // The first finished before the second started: nothing to assert about overlap.
        return;
    }
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another restore"), "{stderr}");
}

/// Regression (issue 21, item 9): with --json a failed command printed nothing on standard
/// output, so a script could not tell an error from a crash.
#[test]
fn json_errors_are_an_object_on_standard_output() {
    let env = Env::new();
    let error = |args: &[&str], code: i32| {
        let out = env.vault().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {out:?}"));
        assert_eq!(v["error"]["exit_code"], code, "{v}");
        v["error"]["message"].as_str().unwrap().to_string()
    };
    // No repository yet.
    assert!(error(&["snapshots", "--json"], 1).contains("no vault repository"));
    env.init();
    // A usage error found by vault, and one found by the parser.
    assert!(error(&["forget", "--json"], 2).contains("nothing to forget"));
    assert!(error(&["snapshots", "--json", "--bogus"], 2).contains("--bogus"));
    // A wrong passphrase.
    let out = env
        .vault()
        .env("VAULT_PASSWORD", "wrong")
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("passphrase"));
}

/// A thread that keeps changing `path` until the returned flag is set: `in_place` rewrites its
/// bytes where they are (an editor saving in place), otherwise each version is written to a
/// temporary file and renamed over it (an atomic save). Returns the versions' seeds written.
fn keep_changing(
    path: &Path,
    size: usize,
    in_place: bool,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    use std::io::{Seek, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (s, path) = (stop.clone(), path.to_path_buf());
    let h = std::thread::spawn(move || {
        let mut k = 1000u64;
        while !s.load(Ordering::Relaxed) {
            k += 1;
            let data = noise(size, k);
            if in_place {
                let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
                for piece in data.chunks(1 << 20) {
                    f.write_all(piece).unwrap();
                }
                f.rewind().unwrap();
            } else {
                // Beside the folder, not in it: a temporary file caught half-written would be
                // (rightly) reported as torn, and this test is about the file renamed over.
                let tmp = path.parent().unwrap().with_extension("tmp-save");
                fs::write(&tmp, &data).unwrap();
                fs::rename(&tmp, &path).unwrap();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        k
    });
    (stop, h)
}

/// `vault backup --json SRC` while [`keep_changing`] changes `path`; its output and the last
/// version written.
fn back_up_while_changing(
    env: &Env,
    src: &Path,
    path: &Path,
    size: usize,
    in_place: bool,
) -> (std::process::Output, u64) {
    let (stop, writer) = keep_changing(path, size, in_place);
    std::thread::sleep(Duration::from_millis(30));
    let out = env
        .vault()
        .args(["backup", "--json"])
        .arg(src)
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (out, writer.join().unwrap())
}

/// Regression (issue 21, item 6): a file rewritten in place while it was read was stored as a
/// mix of two versions, and `ls` and `restore` later gave no hint of it. It is now read again,
/// and when it never holds still it is stored marked, and `ls`, `restore` and `check` say so.
#[test]
fn a_file_that_never_holds_still_is_marked_torn_everywhere() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let doc = src.join("edited.psd");
    fs::write(&doc, noise(24 << 20, 999)).unwrap();
    fs::write(src.join("still.jpg"), noise(100_000, 1)).unwrap();
    env.init();
    let (out, _) = back_up_while_changing(&env, &src, &doc, 24 << 20, true);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["warnings"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("3 tries"));
    // ls marks it, and only it.
    let ls = env
        .vault()
        .args(["ls", "--json", "latest"])
        .output()
        .unwrap();
    let entries: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let torn: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["torn"] == true)
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(torn.len(), 1, "{entries}");
    assert!(torn[0].ends_with("edited.psd"));
    let ls = env.vault().args(["ls", "latest"]).output().unwrap();
    let text = String::from_utf8_lossy(&ls.stdout);
    let line = text.lines().find(|l| l.contains("edited.psd")).unwrap();
    assert!(line.contains("may mix two versions"), "{line}");
    // restore says so, and still restores it.
    let out = env.restore_cmd(&env.path("back")).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("edited.psd") && stderr.contains("may mix two versions"),
        "{stderr}"
    );
    assert!(restored(&env.path("back"), &doc).exists());
    // check notes it without calling it damage.
    let out = env.vault().args(["check", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["torn_files"], 1, "{c}");
    assert!(
        c["notes"].to_string().contains("may mix two versions"),
        "{c}"
    );
}

/// Regression (issue 21, item 6): a file replaced by an atomic rename while the backup ran was
/// flagged as changed every time, though what was stored was one whole version.
#[test]
fn a_file_replaced_by_atomic_renames_is_not_flagged() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let doc = src.join("saved.psd");
    let size = 8 << 20;
    fs::write(&doc, noise(size, 999)).unwrap();
    for i in 0..20u64 {
        fs::write(src.join(format!("IMG_{i:04}.JPG")), noise(400_000, i)).unwrap();
    }
    env.init();
    let (out, last) = back_up_while_changing(&env, &src, &doc, size, false);
    assert!(last > 1001, "the file was replaced during the backup");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["warnings"].as_array().map_or(0, |w| w.len()), 0, "{v}");
    // What was stored is one whole version.
    let back = env.restore_into("back");
    let got = fs::read(restored(&back, &doc)).unwrap();
    assert!(
        (999..=last).any(|k| k == 999 && got == noise(size, 999) || got == noise(size, k)),
        "the stored copy is no single version"
    );
}
