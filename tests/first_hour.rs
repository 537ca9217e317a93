//! What a new user tripped over in their first hour (issue 23), one regression test each:
//! commands the README shows, and errors that name the next step.

mod common;

use common::*;
use std::fs;

/// `vault ls --vault-only PATH` (the README's form) lists the moved files under PATH; the
/// first positional argument used to be parsed as a snapshot, which `--vault-only` refused.
/// `restore --vault-only PATH` takes its path the same way.
#[test]
fn vault_only_takes_a_path_as_its_argument() {
    let env = Env::new();
    env.init();
    let pics = env.path("home/Pictures");
    fs::create_dir_all(pics.join("Private")).unwrap();
    fs::create_dir_all(pics.join("Public")).unwrap();
    fs::write(pics.join("Private/secret_2.jpg"), noise(40_000, 1)).unwrap();
    fs::write(pics.join("Public/beach.jpg"), noise(30_000, 2)).unwrap();
    let out = env
        .vault()
        .args(["move", "--copies", "1"])
        .arg(&pics)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!pics.join("Private/secret_2.jpg").exists());

    let secret = pics.join("Private/secret_2.jpg");
    let out = env
        .vault()
        .args(["ls", "--vault-only"])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("secret_2.jpg"), "{listed}");
    assert!(
        !listed.contains("beach.jpg"),
        "only under the path: {listed}"
    );

    // Two positional arguments with --vault-only: a message saying what to give instead.
    let out = env
        .vault()
        .args(["ls", "--vault-only", "latest"])
        .arg(&secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give only a path"), "{err}");

    // restore --vault-only PATH brings back only what is under PATH.
    let out = env
        .vault()
        .args(["restore", "--vault-only"])
        .arg(pics.join("Private"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(&secret).unwrap(), noise(40_000, 1));
    assert!(!pics.join("Public/beach.jpg").exists());
}

/// A missing repository names the commands that fix it.
#[test]
fn a_missing_repository_says_how_to_make_one() {
    let env = Env::new();
    let out = env.vault().arg("snapshots").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no vault repository at"), "{err}");
    assert!(err.contains("`vault init`"), "{err}");
    assert!(err.contains("vault repo add"), "{err}");
}

/// A restore of a path the snapshot does not hold fails before it creates anything: no empty
/// target folder is left behind, and the message says how to see what the snapshot holds.
#[test]
fn a_restore_of_a_missing_path_creates_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.jpg"), noise(10_000, 3)).unwrap();
    let out = env.vault().arg("backup").arg(&src).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let target = env.path("restored/deep/target");
    let out = env
        .restore_cmd(&target)
        .arg("--include")
        .arg(src.join("no-such-file.jpg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not in snapshot"), "{err}");
    assert!(err.contains("vault ls"), "{err}");
    assert!(!env.path("restored").exists(), "the target was created");
}

/// `vault backup SRC` with no repository named: into the default one.
fn backup_default(env: &Env, src: &std::path::Path) -> std::process::Output {
    env.vault()
        .env_remove("VAULT_REPO")
        .arg("backup")
        .arg(src)
        .output()
        .unwrap()
}

/// The first backup into the default repository, on the same disk as the photos, says so and
/// names the next step; a later backup does not repeat it, and a repository on another
/// filesystem is not warned about.
#[test]
fn the_first_backup_on_the_same_disk_says_so() {
    let env = Env::new();
    let src = env.path("home/Pictures");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.jpg"), noise(1000, 9)).unwrap();
    let first = backup_default(&env, &src);
    assert!(first.status.success(), "{first:?}");
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(
        err.contains("on the same disk as the files it holds"),
        "{err}"
    );
    assert!(err.contains("vault repo add"), "{err}");
    assert!(err.contains("vault copy --from"), "{err}");
    fs::write(src.join("b.jpg"), noise(1000, 10)).unwrap();
    let again = backup_default(&env, &src);
    assert!(again.status.success(), "{again:?}");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!err.contains("same disk"), "said once: {err}");
    // Photos on another filesystem (/dev/shm, a tmpfs of its own): no warning.
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        return;
    };
    fs::write(shm.path().join("c.jpg"), noise(1000, 11)).unwrap();
    let other = Env::new();
    let out = backup_default(&other, shm.path());
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("creating the default one"), "{err}");
    assert!(!err.contains("same disk"), "{err}");
}

/// `ls` does not show the folders above a backed-up path as dated 1970: their time is not
/// recorded, and `ls` says so with a dash (`null` in --json); the backed-up folder has its own.
#[test]
fn ls_shows_no_1970_for_the_folders_above_a_backup() {
    let env = Env::new();
    env.init();
    let src = env.path("home/Pictures/2024");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.jpg"), noise(5_000, 4)).unwrap();
    let out = env.vault().arg("backup").arg(&src).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = env.vault().arg("ls").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("1970-01-01"), "{text}");
    let home_line = text
        .lines()
        .find(|l| l.ends_with("/home/Pictures"))
        .unwrap_or_else(|| panic!("no ancestor line in {text}"));
    assert!(home_line.contains(" - "), "{home_line}");
    let own = text
        .lines()
        .find(|l| l.ends_with("/Pictures/2024"))
        .unwrap();
    assert!(!own.contains(" - "), "{own}");
    let out = env.vault().args(["ls", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    let anc = rows
        .iter()
        .find(|r| r["path"].as_str().unwrap().ends_with("/home/Pictures"))
        .unwrap();
    assert!(anc["mtime"].is_null(), "{anc}");
    let own = rows
        .iter()
        .find(|r| r["path"].as_str().unwrap().ends_with("/Pictures/2024"))
        .unwrap();
    assert!(own["mtime"].as_i64().unwrap() > 0, "{own}");
}

/// `vault` run on a pseudo-terminal (util-linux `script`), answering prompts: each step waits
/// until the output so far holds `expect`, then types `send` and Enter. Returns the exit code
/// and everything the terminal showed.
fn on_terminal(env: &Env, args: &[&str], steps: &[(&str, &str)]) -> (i32, String) {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let bin = assert_cmd::cargo::cargo_bin("vault");
    let cmd = std::iter::once(bin.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env_clear()
        .envs(
            env.envs()
                .into_iter()
                .filter(|(k, _)| k != "VAULT_PASSWORD"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux script");
    let seen = Arc::new(Mutex::new(String::new()));
    let mut out = child.stdout.take().unwrap();
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut from = 0;
    for (expect, send) in steps {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let text = seen.lock().unwrap().clone();
            if let Some(i) = text[from..].find(expect) {
                from += i + expect.len();
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "waited for {expect:?}; the terminal shows:\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let answer = if *send == "<last4>" {
            let text = seen.lock().unwrap().clone();
            let key = text
                .split_whitespace()
                .find(|w| w.starts_with("AGE-SECRET-KEY-1"))
                .expect("a recovery key on the terminal");
            key[key.len() - 4..].to_string()
        } else {
            send.to_string()
        };
        stdin.write_all(format!("{answer}\r").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    let text = seen.lock().unwrap().clone();
    (status.code().unwrap_or(-1), text)
}

/// The recovery key is shown only on a terminal, and the run waits until the user typed how it
/// ends; a new passphrase that is short gets a warning.
#[test]
fn the_recovery_key_waits_on_a_terminal_until_it_is_confirmed() {
    let env = Env::new();
    let (code, text) = on_terminal(
        &env,
        &["init", "--kdf-log-n", "10"],
        &[
            ("New passphrase", "short"),
            ("Repeat the passphrase", "short"),
            ("to confirm you saved it", "nope"),
            ("not how the key ends", "<last4>"),
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("this passphrase is 5 characters long"),
        "{text}"
    );
    assert!(text.contains("RECOVERY KEY"), "{text}");
    assert!(text.contains("confirmed."), "{text}");
    let out = env
        .vault()
        .env("VAULT_PASSWORD", "short")
        .args(["key", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("recovery key"),
        "{out:?}"
    );
}

/// Without a terminal the recovery key is never written to stderr (a log, a pipe, --json's
/// reader): with --recovery-key-file it goes to the file only, without one none is made and the
/// user hears how to make one; `key add --recovery` then fails rather than lose it.
#[test]
fn the_recovery_key_never_goes_to_a_log() {
    let env = Env::new();
    let out = env
        .vault()
        .args(["init", "--kdf-log-n", "10", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("AGE-SECRET-KEY"), "{all}");
    assert!(all.contains("no recovery key was made"), "{all}");
    assert!(all.contains("vault key add --recovery"), "{all}");
    let kinds: Vec<_> = env.key_list().iter().map(|k| k["kind"].clone()).collect();
    assert_eq!(kinds, vec![serde_json::json!("passphrase")]);
    let out = env
        .vault()
        .args(["key", "add", "--recovery"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--recovery-key-file"));

    let rk = env.path("recovery.txt");
    let out = env
        .vault()
        .args(["key", "add", "--recovery", "--recovery-key-file"])
        .arg(&rk)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("AGE-SECRET-KEY"), "{err}");
    assert!(err.contains("saved to"), "{err}");
    assert!(fs::read_to_string(&rk)
        .unwrap()
        .contains("AGE-SECRET-KEY-1"));
}

/// A mistyped passphrase on a terminal gets more tries; a wrong one says where the recovery
/// key comes in.
#[test]
fn a_wrong_passphrase_gets_retries_and_names_the_recovery_key() {
    let env = Env::new();
    env.init();
    let (code, text) = on_terminal(
        &env,
        &["snapshots"],
        &[("Passphrase for", "wrong one"), ("try again", PASS)],
    );
    assert_eq!(code, 0, "{text}");
    let out = env
        .vault()
        .env("VAULT_PASSWORD", "not it")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(
        err.contains("recovery key") && err.contains("--identity FILE"),
        "{err}"
    );
}

/// `vault ls --vault-only` names the files listed as vault-only.
fn vault_only_names(env: &Env) -> Vec<String> {
    let out = env
        .vault()
        .args(["ls", "--vault-only", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let p = r["path"].as_str().unwrap();
            p.rsplit('/').next().unwrap().to_string()
        })
        .collect();
    names.sort();
    names
}

/// A vault-only file that was brought back and backed up again lives on the device again: it
/// is no longer listed as vault-only. A backup that does not hold it (it is still only in the
/// vault), or a write-only device's snapshot that claims it, changes nothing.
#[test]
fn vault_only_marks_end_when_the_file_is_backed_up_again() {
    let env = Env::new();
    env.init();
    let pics = env.path("home/Pictures");
    fs::create_dir_all(pics.join("Private")).unwrap();
    for (i, n) in ["a.jpg", "b.jpg", "c.jpg"].iter().enumerate() {
        fs::write(pics.join("Private").join(n), noise(10_000, 20 + i as u64)).unwrap();
    }
    let out = env
        .vault()
        .args(["move", "--copies", "1"])
        .arg(pics.join("Private"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(vault_only_names(&env), ["a.jpg", "b.jpg", "c.jpg"]);
    // Snapshot times are in seconds: the next ones must be later than the move's.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // A backup of the folder while the files are only in the vault: still vault-only.
    fs::create_dir_all(pics.join("Private")).unwrap();
    fs::write(pics.join("Private/new.jpg"), noise(5_000, 30)).unwrap();
    let out = env.vault().arg("backup").arg(&pics).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(vault_only_names(&env), ["a.jpg", "b.jpg", "c.jpg"]);
    // A write-only device claims a.jpg is an ordinary file again: not believed.
    let profile = env.phone_profile();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(pics.join("Private/a.jpg"), b"forged").unwrap();
    let out = env
        .vault()
        .env_remove("VAULT_PASSWORD")
        .arg("--profile")
        .arg(&profile)
        .arg("backup")
        .arg(pics.join("Private/a.jpg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    fs::remove_file(pics.join("Private/a.jpg")).unwrap();
    assert_eq!(vault_only_names(&env), ["a.jpg", "b.jpg", "c.jpg"]);
    // Two come back and are backed up again: only the third stays vault-only.
    let out = env
        .vault()
        .args(["restore", "--vault-only", "--include"])
        .arg(pics.join("Private/a.jpg"))
        .args(["--include"])
        .arg(pics.join("Private/b.jpg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(pics.join("Private/a.jpg").exists());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = env.vault().arg("backup").arg(&pics).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(vault_only_names(&env), ["c.jpg"]);
}

/// `snapshots` shows local time (`TZ`), `--json` seconds since the epoch; `--host`, `--tag`
/// and `--path` narrow the list.
#[test]
fn snapshots_show_local_time_and_filter() {
    let env = Env::new();
    env.init();
    let a = env.path("home/Pictures");
    let b = env.path("home/Videos");
    fs::create_dir_all(a.join("2024")).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("2024/x.jpg"), noise(3_000, 40)).unwrap();
    fs::write(b.join("y.mp4"), noise(3_000, 41)).unwrap();
    for (src, host, tag) in [(&a, "laptop", "daily"), (&b, "desk", "weekly")] {
        let out = env
            .vault()
            .args(["backup", "--host", host, "--tag", tag])
            .arg(src)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let list = |args: &[&str], tz: &str| -> String {
        let out = env
            .vault()
            .env("TZ", tz)
            .arg("snapshots")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = env.vault().args(["snapshots", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = v[0]["time"].as_i64().unwrap();
    // POSIX TZ: "XYZ-5" is five hours east of UTC.
    let east = list(&[], "XYZ-5");
    let shifted = utc_format(t + 5 * 3600);
    assert!(east.contains(&shifted), "expected {shifted} in\n{east}");
    assert!(list(&[], "UTC").contains(&utc_format(t)));

    let host = list(&["--host", "laptop"], "UTC");
    assert!(
        host.contains("Pictures") && !host.contains("Videos"),
        "{host}"
    );
    assert!(host.contains("1 of 2 snapshot(s)"), "{host}");
    let tag = list(&["--tag", "weekly"], "UTC");
    assert!(tag.contains("Videos") && !tag.contains("Pictures"), "{tag}");
    let inside = a.join("2024/x.jpg");
    let path = list(&["--path", inside.to_str().unwrap()], "UTC");
    assert!(
        path.contains("Pictures") && !path.contains("Videos"),
        "{path}"
    );
    let none = list(&["--host", "laptop", "--tag", "weekly"], "UTC");
    assert!(none.contains("0 of 2 snapshot(s)"), "{none}");
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS` in UTC, by GNU date rather than vault's
/// own code.
fn utc_format(secs: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Found by trying the README as a new user (issue 23's note): a mistyped repository name is
/// said to be one, not taken for a new folder, and `--to a,typo` stops before backing up into
/// `a` (an address with no repository, a drive not plugged in, is reported in its turn);
/// an existing --recovery-key-file stops `init` before it creates anything; a move into a
/// repository without a recovery key says what that risks; `ls` takes a relative path, and a
/// lone path argument.
#[test]
fn typos_and_risks_found_by_a_new_user() {
    let env = Env::new();
    let drive = env.path("drive");
    let out = env
        .vault()
        .args(["repo", "add", "drive"])
        .arg(&drive)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = env
        .vault()
        .env_remove("VAULT_REPO")
        .args(["--repo", "drvie", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no repository named drvie (named: drive)"),
        "{err}"
    );
    let out = env
        .vault()
        .env_remove("VAULT_REPO")
        .args(["--repo", "s3:/bucket/photos", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3://bucket/photos"));

    // An existing key file: init stops before it creates the repository.
    let rk = env.path("rk.txt");
    fs::write(&rk, "something precious").unwrap();
    let out = env
        .vault()
        .args([
            "--repo",
            "drive",
            "init",
            "--kdf-log-n",
            "10",
            "--recovery-key-file",
        ])
        .arg(&rk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert!(!drive.exists(), "nothing created");
    assert_eq!(fs::read_to_string(&rk).unwrap(), "something precious");

    let out = env
        .vault()
        .args(["--repo", "drive", "init", "--kdf-log-n", "10"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pics = env.path("home/Pictures");
    fs::create_dir_all(pics.join("Phone")).unwrap();
    fs::write(pics.join("Phone/p.jpg"), noise(4_000, 50)).unwrap();
    let out = env
        .vault()
        .args(["backup", "--to", "drive,clodu"])
        .arg(&pics)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no repository named clodu"), "{err}");
    assert!(
        fs::read_dir(drive.join("snapshots"))
            .unwrap()
            .next()
            .is_none(),
        "no snapshot in drive"
    );

    let out = env
        .vault()
        .args(["backup", "--to", "drive"])
        .arg(&pics)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // ls from the home folder, with a relative path; and a lone path argument.
    for args in [vec!["latest", "Pictures/Phone"], vec!["Pictures/Phone"]] {
        let out = env
            .vault()
            .current_dir(env.path("home"))
            .args(["--repo", "drive", "ls"])
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("p.jpg"));
    }

    let out = env
        .vault()
        .args(["move", "--copies", "1", "--to", "drive"])
        .arg(pics.join("Phone"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("drive has no recovery key"), "{err}");
}
