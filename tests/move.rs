//! `vault move`: files leave the device only after their data was read back and verified in
//! enough repositories; vault-only files are listed, restored to their places and checked; a
//! kill -9 anywhere loses nothing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// An environment with two repositories: a folder ("drive") and, when the test S3 server runs,
/// a bucket ("cloud"); else a second folder.
struct Two {
    env: Env,
    drive: PathBuf,
    cloud: String,
    /// One bucket for all these tests (the test server has room for a limited number of
    /// buckets); each repository in it gets its own prefix.
    bucket: String,
}

fn shared_bucket() -> String {
    static B: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    B.get_or_init(unique_bucket).clone()
}

impl Two {
    fn new() -> Two {
        let mut env = Env::new();
        env.endpoint = s3_endpoint();
        let drive = env.path("drive");
        let mut t = Two {
            env,
            drive,
            cloud: String::new(),
            bucket: shared_bucket(),
        };
        t.cloud = t.s3_or_folder("cloud");
        t.init_named("drive", &t.drive.to_string_lossy());
        t.init_named("cloud", &t.cloud.clone());
        t
    }

    fn init_named(&self, name: &str, address: &str) {
        self.env
            .vault()
            .args(["repo", "add", name, address])
            .assert()
            .success();
        self.env
            .vault()
            .args(["--repo", name, "init", "--kdf-log-n", "10"])
            .assert()
            .success();
    }

    fn vault(&self) -> assert_cmd::Command {
        self.env.vault()
    }

    /// A repository address in the test bucket, or a folder when no S3 server runs.
    fn s3_or_folder(&self, name: &str) -> String {
        match &self.env.endpoint {
            Some(_) => format!("s3://{}/{}/{name}", self.bucket, unique_bucket()),
            None => self.env.path(name).to_string_lossy().into_owned(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.env.path(p)
    }

    /// `vault move ... --json`, whatever its exit status; the parsed report and the status.
    fn move_json(&self, args: &[&str]) -> (serde_json::Value, i32, String) {
        let out = self
            .vault()
            .args(["move", "--json"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (v, out.status.code().unwrap_or(-1), stderr)
    }
}

/// A small photo folder: JPEG-sized noise, a video-sized file, small sidecars, a symlink, an
/// empty folder, distinct modes and mtimes.
fn photo_folder(root: &Path, big: usize, small: usize) {
    fs::create_dir_all(root.join("2024/trip")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    for i in 0..big {
        fs::write(
            root.join(format!("2024/IMG_{i:04}.JPG")),
            noise(1_200_000 + i * 7919, i as u64 + 10),
        )
        .unwrap();
    }
    for i in 0..small {
        fs::write(
            root.join(format!("2024/trip/IMG_{i:04}.xmp")),
            noise(20_000 + i * 13, i as u64 + 100),
        )
        .unwrap();
    }
    fs::write(root.join("video.mp4"), noise(3_000_000, 7)).unwrap();
    fs::set_permissions(root.join("video.mp4"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("2024/IMG_0000.JPG", root.join("cover.jpg")).unwrap();
    set_mtime(&root.join("video.mp4"), 1_600_000_000);
    set_mtime(&root.join("2024/trip"), 1_650_000_000);
}

/// `cp -a`: a pristine copy to compare with later.
fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Every folder below `root` (not `root` itself).
fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        if e.file_type().unwrap().is_dir() {
            out.push(e.path());
            out.extend(walkdir(&e.path()));
        }
    }
    out
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    if !root.exists() {
        return vec![];
    }
    all_files(root)
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
        .collect()
}

fn str_list(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn move_to_a_folder_and_a_bucket_then_restore_vault_only_in_place() {
    let t = Two::new();
    let src = t.path("Pictures/Private");
    photo_folder(&src, 3, 5);
    let expected = t.path("expected");
    copy_tree(&src, &expected);
    let total: u64 = files_under(&src)
        .iter()
        .filter(|p| !src.join(p).is_symlink())
        .map(|p| fs::metadata(src.join(p)).unwrap().len())
        .sum();

    // The dry run changes nothing.
    let out = t
        .vault()
        .args(["move", "--dry-run", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["files"].as_array().unwrap().len(), 10);
    assert_eq!(plan["bytes"].as_u64().unwrap(), total);
    assert_same_tree(&expected, &src);
    for repo in ["drive", "cloud"] {
        let out = t
            .vault()
            .args(["--repo", repo, "snapshots", "--json"])
            .output()
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
            serde_json::json!([])
        );
    }

    let (r, code, stderr) = t.move_json(&[src.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("not securely erased"), "{stderr}");
    assert_eq!(r["files_moved"], 10, "{r}");
    assert_eq!(r["bytes_freed"].as_u64().unwrap(), total);
    assert_eq!(r["skipped"], serde_json::json!([]));
    assert_eq!(str_list(&r["moved"]).len(), 10);
    for rr in r["repositories"].as_array().unwrap() {
        assert_eq!(rr["files_verified"], 10, "{rr}");
        assert!(rr["snapshot"].is_string());
    }
    // The originals and the folders they emptied are gone; a folder that was empty before
    // stays (nothing would bring it back).
    assert_eq!(
        snapshot_tree(&src).keys().collect::<Vec<_>>(),
        [&b"empty".to_vec()]
    );
    assert_eq!(r["dirs_removed"], 2);

    for repo in ["drive", "cloud"] {
        let out = t
            .vault()
            .args(["--repo", repo, "ls", "--vault-only", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let rows = v.as_array().unwrap();
        assert_eq!(rows.len(), 10);
        assert!(rows.iter().all(|x| x["on_disk"] == false));
    }
    let out = t.vault().args(["check", "--all"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("10 vault-only files"));
    let out = t
        .vault()
        .args(["check", "--all", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for repo in ["drive", "cloud"] {
        assert_eq!(v[repo]["vault_only_files"], 10, "{v}");
        assert_eq!(v[repo]["vault_only_damaged"], serde_json::json!([]));
    }

    // Back to their original places, from the bucket, with mode and mtime.
    t.vault()
        .args(["--repo", "cloud", "restore", "--vault-only"])
        .assert()
        .success();
    assert_same_tree(&expected, &src);
    // Again: every file is already in place, and the summary of the per-snapshot runs says so.
    let again = t
        .vault()
        .args(["--repo", "cloud", "--json", "restore", "--vault-only"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{again:?}");
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["files"], 0, "{v}");
    assert_eq!(v["already"], 10, "{v}");
    assert!(v["dirs"].as_u64().unwrap() > 0, "{v}");
    // And from the drive into another folder, one file only.
    let target = t.path("elsewhere");
    let one = src.join("video.mp4");
    t.vault()
        .args(["--repo", "drive", "restore", "--vault-only", "--target"])
        .arg(&target)
        .arg("--include")
        .arg(&one)
        .assert()
        .success();
    let got = restored(&target, &one);
    assert_eq!(fs::read(&got).unwrap(), fs::read(&one).unwrap());
    assert_eq!(files_under(&target).len(), 1);

    // Damage in one repository: check names the vault-only files it affects, apart.
    let pack = objects(&t.drive, "data")
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let len = fs::metadata(&pack).unwrap().len() as i64;
    flip_byte(&pack, len / 2);
    let out = t
        .vault()
        .args(["check", "--all", "--read-data"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("== cloud") && stdout.contains("== drive"),
        "{stdout}"
    );
    assert!(stdout.contains("of them in vault-only files"), "{stdout}");
    let flagged: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: vault-only file damaged or missing"))
        .collect();
    assert!(!flagged.is_empty(), "{stderr}");
    assert!(
        flagged.iter().all(|l| l.contains(src.to_str().unwrap())),
        "{stderr}"
    );
}

#[test]
fn a_repository_inside_the_moved_folder_is_left_alone() {
    let t = Two::new();
    let src = t.path("Disk");
    photo_folder(&src, 1, 1);
    // The second repository lives inside the folder being moved.
    let inner = src.join("vault-repo");
    t.init_named("inner", inner.to_str().unwrap());
    let (r, code, stderr) = t.move_json(&["--to", "drive,inner", src.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["files_moved"], 4);
    t.vault()
        .args(["--repo", "inner", "check", "--read-data"])
        .assert()
        .success();
    let mut left: Vec<_> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["empty", "vault-repo"]);
}

#[test]
fn one_repository_is_refused_unless_copies_1() {
    let t = Two::new();
    let src = t.path("Private");
    photo_folder(&src, 1, 2);
    let before = snapshot_tree(&src);
    let out = t
        .vault()
        .args(["move", "--to", "drive"])
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--copies 1") && err.contains("not backed up"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(snapshot_tree(&src) == before);
    assert!(objects(&t.drive, "snapshots").is_empty());
    // The same repository under two names is still one copy.
    let out = t
        .vault()
        .args(["move", "--to"])
        .arg(format!("drive,{}/.", t.drive.display()))
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the same repository"),
        "{out:?}"
    );
    assert!(snapshot_tree(&src) == before);

    let (r, code, stderr) = t.move_json(&["--to", "drive", "--copies", "1", src.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("one repository only"), "{stderr}");
    assert_eq!(r["files_moved"], 5);
    assert_eq!(
        snapshot_tree(&src).keys().collect::<Vec<_>>(),
        [&b"empty".to_vec()]
    );
}

/// A `vault move` running in the background, killed if the test fails before it ends.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

/// Start `vault move` in the background with the test pause points enabled: it stops at each
/// point of `hold` until the test writes `<point>.go`, and passes the others.
fn spawn_move(
    t: &Two,
    pause: &Path,
    hold: &[&str],
    extra: &[(&str, &str)],
    args: &[&str],
) -> Running {
    fs::create_dir_all(pause).unwrap();
    for p in ["verify-0", "verify-1", "unlink"] {
        let go = pause.join(format!("{p}.go"));
        if hold.contains(&p) {
            let _ = fs::remove_file(go);
        } else {
            fs::write(go, b"").unwrap();
        }
    }
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("vault"));
    c.env_clear()
        .envs(t.env.envs())
        .env("VAULT_TEST_PAUSE_DIR", pause)
        .args(["move", "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        c.env(k, v);
    }
    Running(Some(c.spawn().unwrap()))
}

fn wait_for(p: &Path, running: &mut Running) {
    let child = running.child();
    let start = Instant::now();
    while !p.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("vault exited ({st}) before reaching {}", p.display());
        }
        assert!(start.elapsed() < Duration::from_secs(120), "timed out");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn finish(mut running: Running) -> (serde_json::Value, i32, String) {
    let out = running.0.take().unwrap().wait_with_output().unwrap();
    (
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_damaged_pack_keeps_every_file_whose_data_is_in_it() {
    let t = Two::new();
    let src = t.path("Private");
    photo_folder(&src, 4, 40);
    let expected = t.path("expected");
    copy_tree(&src, &expected);
    let pause = t.path("pause");
    // Repositories run in name order: cloud (0), then drive (1).
    let mut child = spawn_move(&t, &pause, &["verify-1"], &[], &[src.to_str().unwrap()]);
    // The drive's packs are uploaded; damage the largest (a data pack) before it is read back.
    wait_for(&pause.join("verify-1.ready"), &mut child);
    let pack = objects(&t.drive, "data")
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let len = fs::metadata(&pack).unwrap().len() as i64;
    flip_byte(&pack, len / 3);
    fs::write(pause.join("verify-1.go"), b"").unwrap();
    let (r, code, stderr) = finish(child);
    assert_eq!(code, 3, "{stderr}");
    let kept = r["skipped"].as_array().unwrap();
    assert!(!kept.is_empty(), "the damage was not noticed: {r}");
    for k in kept {
        assert!(
            k["reason"]
                .as_str()
                .unwrap()
                .contains("verified in 1 of the 2"),
            "{k}"
        );
    }
    assert!(r["files_moved"].as_u64().unwrap() > 0, "{r}");
    // Every file check names as damaged in the drive is still on disk, unchanged.
    let out = t
        .vault()
        .args(["--repo", "drive", "check", "--read-data", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged = str_list(&rep["damaged_files"]);
    assert!(!damaged.is_empty());
    for d in &damaged {
        let path = PathBuf::from(d.split_once(':').unwrap().1);
        let rel = path.strip_prefix(&src).unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            fs::read(expected.join(rel)).unwrap(),
            "{d} was deleted although its data is damaged"
        );
    }
    // Nothing vault-only is damaged: the damaged files were never marked.
    assert_eq!(rep["vault_only_damaged"], serde_json::json!([]));
    // What was moved restores from both repositories.
    for repo in ["drive", "cloud"] {
        let target = t.path(&format!("back-{repo}"));
        t.vault()
            .args(["--repo", repo, "restore", "--vault-only", "--target"])
            .arg(&target)
            .assert()
            .success();
        for m in str_list(&r["moved"]) {
            let rel = Path::new(&m).strip_prefix(&src).unwrap().to_path_buf();
            let got = restored(&target, Path::new(&m));
            let want = expected.join(&rel);
            if want.is_symlink() {
                assert_eq!(fs::read_link(got).unwrap(), fs::read_link(want).unwrap());
            } else {
                assert_eq!(fs::read(got).unwrap(), fs::read(want).unwrap(), "{m}");
            }
        }
    }
}

#[test]
fn files_that_verify_nowhere_are_reported_too() {
    let t = Two::new();
    let src = t.path("Private");
    photo_folder(&src, 2, 0);
    let expected = t.path("expected");
    copy_tree(&src, &expected);
    let pause = t.path("pause");
    let child = spawn_move(
        &t,
        &pause,
        &["verify-0"],
        &[],
        &["--to", "drive", "--copies", "1", src.to_str().unwrap()],
    );
    let mut child = child;
    wait_for(&pause.join("verify-0.ready"), &mut child);
    // Every data pack (tree packs are the small ones: data packs are padded to 512 KiB).
    for pack in objects(&t.drive, "data") {
        let len = fs::metadata(&pack).unwrap().len() as i64;
        if len > 500_000 {
            flip_byte(&pack, len / 2);
        }
    }
    fs::write(pause.join("verify-0.go"), b"").unwrap();
    let (r, code, stderr) = finish(child);
    assert_eq!(code, 3, "{stderr}");
    // Every item is either moved or reported, and what did not verify anywhere is still here.
    let kept = r["skipped"].as_array().unwrap();
    assert!(!kept.is_empty(), "{r}");
    assert_eq!(
        r["files_moved"].as_u64().unwrap() as usize + kept.len(),
        4,
        "{r}"
    );
    for k in kept {
        assert!(
            k["reason"]
                .as_str()
                .unwrap()
                .contains("verified in 0 of the 1"),
            "{k}"
        );
        let p = PathBuf::from(k["path"].as_str().unwrap());
        let rel = p.strip_prefix(&src).unwrap();
        assert_eq!(fs::read(&p).unwrap(), fs::read(expected.join(rel)).unwrap());
    }
    // Now the trees too, both copies (design.md §2.2): the repository fails as a whole, and
    // every file left is still listed.
    for pack in objects(&t.drive, "data")
        .into_iter()
        .chain(objects(&t.drive, "copies/trees"))
    {
        let len = fs::metadata(&pack).unwrap().len() as i64;
        if len <= 500_000 {
            flip_byte(&pack, len / 2);
        }
    }
    let (r, code, stderr) = t.move_json(&["--to", "drive", "--copies", "1", src.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(r["files_moved"], 0);
    assert!(
        r["repositories"][0]["error"]
            .as_str()
            .unwrap()
            .contains("damaged"),
        "{r}"
    );
    let kept = r["skipped"].as_array().unwrap();
    assert_eq!(kept.len(), files_under(&src).len(), "{r}");
    assert!(
        kept.iter()
            .all(|k| k["reason"].as_str().unwrap().contains("drive: ")),
        "{r}"
    );
}

#[test]
fn files_changed_after_the_backup_are_kept_and_reported() {
    let t = Two::new();
    let src = t.path("Private");
    photo_folder(&src, 2, 3);
    let pause = t.path("pause");
    let mut child = spawn_move(
        &t,
        &pause,
        &["verify-0", "unlink"],
        &[],
        &[src.to_str().unwrap()],
    );
    // Edited after the backup, before it is read back and compared.
    wait_for(&pause.join("verify-0.ready"), &mut child);
    let early = src.join("2024/IMG_0000.JPG");
    let mut data = fs::read(&early).unwrap();
    data[100] ^= 0xff;
    fs::write(&early, &data).unwrap();
    fs::write(pause.join("verify-0.go"), b"").unwrap();
    // Edited after it was verified, just before it would be deleted.
    wait_for(&pause.join("unlink.ready"), &mut child);
    let late = src.join("video.mp4");
    fs::OpenOptions::new()
        .append(true)
        .open(&late)
        .map(|mut f| std::io::Write::write_all(&mut f, b"edited"))
        .unwrap()
        .unwrap();
    fs::write(pause.join("unlink.go"), b"").unwrap();
    let (r, code, stderr) = finish(child);
    assert_eq!(code, 3, "{stderr}");
    let kept: Vec<(String, String)> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["path"].as_str().unwrap().to_string(),
                k["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0].0, early.to_str().unwrap());
    // Repositories run in name order: "cloud" was backed up before the edit, "drive" after.
    assert!(
        kept[0]
            .1
            .contains("changed since it was backed up to cloud"),
        "{kept:?}"
    );
    assert_eq!(kept[1].0, late.to_str().unwrap());
    assert!(
        kept[1].1.contains("changed since it was verified"),
        "{kept:?}"
    );
    assert!(stderr.contains("kept (not moved)"), "{stderr}");
    assert_eq!(fs::read(&early).unwrap(), data);
    assert!(fs::read(&late).unwrap().ends_with(b"edited"));
    assert_eq!(r["files_moved"], 5);
    // The kept files are not marked vault-only: only the five moved are listed.
    let out = t
        .vault()
        .args(["--repo", "drive", "ls", "--vault-only", "--json"])
        .output()
        .unwrap();
    // Marked before that last-moment edit, the late file is listed, and shown as still on disk.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 6);
    let on_disk: Vec<&str> = rows
        .iter()
        .filter(|x| x["on_disk"] == true)
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(on_disk, [late.to_str().unwrap()]);
    // The next run moves them.
    let (r, code, stderr) = t.move_json(&[src.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["files_moved"], 2);
    assert_eq!(
        snapshot_tree(&src).keys().collect::<Vec<_>>(),
        [&b"empty".to_vec()]
    );
}

#[test]
fn a_write_only_device_cannot_move() {
    let t = Two::new();
    let src = t.path("Private");
    photo_folder(&src, 1, 1);
    // A write-only profile can never read its data back, so it cannot verify, so it cannot move.
    let profile = t.path("profile.txt");
    t.vault()
        .args([
            "--repo",
            "drive",
            "key",
            "add",
            "--write-only",
            "--profile-file",
        ])
        .arg(&profile)
        .assert()
        .success();
    let out = t
        .vault()
        .env_remove("VAULT_PASSWORD")
        .arg("--profile")
        .arg(&profile)
        .args(["move", "--copies", "1", "--to", "drive"])
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("write-only"),
        "{out:?}"
    );
    assert_eq!(files_under(&src).len(), 4);
    assert!(objects(&t.drive, "snapshots").is_empty());
}

/// Every original is either on disk, unchanged, or restorable from both repositories.
fn assert_nothing_lost(t: &Two, round: usize, src: &Path, expected: &Path, repos: &[String]) {
    let missing: Vec<PathBuf> = files_under(expected)
        .into_iter()
        .filter(|rel| fs::symlink_metadata(src.join(rel)).is_err())
        .collect();
    for rel in files_under(expected) {
        let p = src.join(&rel);
        if fs::symlink_metadata(&p).is_ok() && !p.is_symlink() {
            assert_eq!(
                fs::read(&p).unwrap(),
                fs::read(expected.join(&rel)).unwrap(),
                "round {round}: {} was altered",
                rel.display()
            );
        }
    }
    if missing.is_empty() {
        return;
    }
    for (i, repo) in repos.iter().enumerate() {
        let target = t.path(&format!("check-{round}-{i}"));
        let out = t
            .vault()
            .args([
                "--no-cache",
                "--repo",
                repo,
                "restore",
                "--vault-only",
                "--target",
            ])
            .arg(&target)
            .output()
            .unwrap();
        assert!(out.status.success(), "round {round}, {repo}: {out:?}");
        for rel in &missing {
            let got = restored(&target, &src.join(rel));
            let want = expected.join(rel);
            if want.is_symlink() {
                assert_eq!(fs::read_link(&got).unwrap(), fs::read_link(&want).unwrap());
            } else {
                assert_eq!(
                    fs::read(&got).ok().as_deref(),
                    Some(&fs::read(&want).unwrap()[..]),
                    "round {round}: {} is gone from disk and not restorable from {repo}",
                    rel.display()
                );
            }
        }
        fs::remove_dir_all(&target).unwrap();
    }
}

/// Regression (issue 21, item 7): once a move had taken a whole folder, running it again failed
/// with "cannot move …: No such file or directory"; it now says the folder is in the vault.
#[test]
fn moving_a_folder_again_once_it_is_in_the_vault_is_not_an_error() {
    let t = Two::new();
    let src = t.path("Private");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/b/IMG_0001.JPG"), noise(300_000, 1)).unwrap();
    fs::write(src.join("a/IMG_0002.JPG"), noise(200_000, 2)).unwrap();
    let (r, code, stderr) = t.move_json(&["--to", "drive,cloud", src.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["files_moved"], 2);
    assert!(!src.exists(), "the emptied folder is removed");
    let snapshots = objects(&t.drive, "snapshots").len();
    let (r, code, stderr) = t.move_json(&["--to", "drive,cloud", src.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        str_list(&r["already_moved"]),
        [src.to_string_lossy().into_owned()]
    );
    assert_eq!(objects(&t.drive, "snapshots").len(), snapshots);
    let out = t
        .vault()
        .args(["move", "--to", "drive,cloud"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already in the vault"));
    // A path that never was anywhere is still an error.
    let (_, code, stderr) = t.move_json(&["--to", "drive,cloud", t.path("typo").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("No such file"), "{stderr}");
}

#[test]
fn kill_9_at_twenty_points_of_a_move_loses_nothing() {
    let t = Two::new();
    let originals = t.path("originals");
    photo_folder(&originals, 3, 24);
    // Unlinking 29 files takes a few milliseconds; slowed down, it is about half of the run, so
    // the kills land in the backup, the read-back, the recording and the unlinking alike.
    let delay = [("VAULT_TEST_UNLINK_DELAY_MS", "10")];
    let pause = t.path("pause");
    let round_repos = |round: usize| -> Vec<String> {
        let drive = t.path(&format!("drive-{round}"));
        let cloud = t.s3_or_folder(&format!("cloud-{round}"));
        for r in [drive.to_string_lossy().into_owned(), cloud.clone()] {
            t.vault()
                .args(["--repo", &r, "init", "--kdf-log-n", "10"])
                .assert()
                .success();
        }
        vec![drive.to_string_lossy().into_owned(), cloud]
    };
    let src_of = |round: usize| {
        let s = t.path(&format!("src-{round}/Private"));
        fs::create_dir_all(s.parent().unwrap()).unwrap();
        copy_tree(&originals, &s);
        s
    };
    // Round 0, not killed, measures how long a whole move takes.
    let repos = round_repos(0);
    let src = src_of(0);
    let to = repos.join(",");
    let start = Instant::now();
    let (r, code, stderr) = finish(spawn_move(
        &t,
        &pause,
        &[],
        &delay,
        &["--to", &to, src.to_str().unwrap()],
    ));
    let whole = start.elapsed();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["files_moved"], 29);
    eprintln!("a whole move takes {whole:?}");
    // What a move that was not killed leaves: the folder that was empty before, nothing else.
    let folders_left = |src: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walkdir(src)
            .into_iter()
            .map(|p| p.strip_prefix(src).unwrap().to_path_buf())
            .collect();
        v.sort();
        v
    };
    let left_whole = folders_left(&src);
    assert_eq!(left_whole, [PathBuf::from("empty")]);
    let mut states = std::collections::BTreeMap::new();
    for round in 1..=20 {
        let repos = round_repos(round);
        let src = src_of(round);
        let to = repos.join(",");
        let child = spawn_move(
            &t,
            &pause,
            &[],
            &delay,
            &["--to", &to, src.to_str().unwrap()],
        );
        std::thread::sleep(whole * round as u32 / 21);
        drop(child); // SIGKILL, then reap
        let left = files_under(&src).len();
        let recorded = !objects(Path::new(&repos[0]), "snapshots").is_empty();
        *states
            .entry(match (left, recorded) {
                (29, false) => "backing up or verifying",
                (29, true) => "recorded, nothing deleted yet",
                (0, _) => "all deleted",
                _ => "partly deleted",
            })
            .or_insert(0) += 1;
        assert_nothing_lost(&t, round, &src, &originals, &repos);
        // A re-run finishes the job: the files left, and the folders the killed run emptied
        // (regression, issue 21: they stayed). With nothing left it writes no snapshot.
        let snapshots_before = objects(Path::new(&repos[0]), "snapshots").len();
        let (r, code, stderr) = t.move_json(&["--to", &to, src.to_str().unwrap()]);
        assert_eq!(code, 0, "round {round}: {stderr}");
        assert_eq!(
            r["files_moved"].as_u64().unwrap() as usize,
            left,
            "round {round}"
        );
        if left == 0 {
            assert_eq!(
                objects(Path::new(&repos[0]), "snapshots").len(),
                snapshots_before,
                "round {round}: a re-run with nothing to move wrote a snapshot"
            );
        }
        assert!(files_under(&src).is_empty(), "round {round}");
        assert_eq!(folders_left(&src), left_whole, "round {round}");
        assert_nothing_lost(&t, round, &src, &originals, &repos);
    }
    eprintln!("states after the kill: {states:?}");
    assert!(
        states.contains_key("partly deleted"),
        "no kill landed while unlinking: {states:?}"
    );
    assert!(states.contains_key("backing up or verifying"), "{states:?}");
}

#[test]
fn copy_replicates_snapshots_with_their_vault_only_marks_and_verifies_them() {
    let t = Two::new();
    let keep = t.path("Albums");
    photo_folder(&keep, 2, 3);
    let private = t.path("Private");
    photo_folder(&private, 1, 2);
    let expected = t.path("expected");
    copy_tree(&private, &expected);
    t.vault()
        .args(["backup", "--to", "drive"])
        .arg(&keep)
        .assert()
        .success();
    let (_, code, stderr) =
        t.move_json(&["--to", "drive", "--copies", "1", private.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    // Now in one place only; the copy makes it two.
    let copy = |args: &[&str]| {
        let out = t
            .vault()
            .args(["copy", "--from", "drive", "--to", "cloud", "--json"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let r = copy(&[]);
    assert_eq!(r["copied"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["files_verified"], 7 + 5);
    assert_eq!(r["failed"], serde_json::json!([]));
    let again = copy(&[]);
    assert_eq!(again["copied"], serde_json::json!([]));
    assert_eq!(again["already_there"], 2);
    assert_eq!(again["blobs_new"], 0);
    let ls = |repo: &str| {
        let out = t
            .vault()
            .args(["--repo", repo, "ls", "--vault-only", "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["path"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ls("cloud"), ls("drive"));
    assert_eq!(ls("cloud").len(), 5);
    t.vault()
        .args(["--repo", "cloud", "check", "--read-data"])
        .assert()
        .success();
    t.vault()
        .args(["--repo", "cloud", "restore", "--vault-only"])
        .assert()
        .success();
    assert_same_tree(&expected, &private);
}

#[test]
fn backup_to_several_named_repositories_keeps_going_past_one_that_fails() {
    let t = Two::new();
    let src = t.path("Albums");
    photo_folder(&src, 1, 2);
    let out = t.vault().args(["repo", "list", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["drive"]["address"], t.drive.to_str().unwrap());
    assert_eq!(v["cloud"]["address"], t.cloud.as_str());
    let missing = t.path("unplugged-disk");
    let out = t
        .vault()
        .args(["backup", "--json", "--to"])
        .arg(format!("drive,{},cloud", missing.display()))
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["summary"]["files"], 4);
    assert!(
        rows[1]["error"]
            .as_str()
            .unwrap()
            .contains("no vault repository"),
        "{v}"
    );
    assert_eq!(rows[2]["summary"]["files"], 4);
    for repo in ["drive", "cloud"] {
        let out = t
            .vault()
            .args(["--repo", repo, "snapshots", "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1, "{repo}");
    }
    assert!(
        !missing.exists(),
        "a missing repository must not be created by backup --to"
    );
    // Forgetting --repo when only named repositories exist gets a hint, not just "no repository".
    let out = t
        .vault()
        .env_remove("VAULT_REPO")
        .args(["ls", "--vault-only"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("name one with --repo: cloud, drive"), "{err}");
}
