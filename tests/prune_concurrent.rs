//! Prune while another computer backs up (design.md §13.2), on a folder repository and on S3:
//! a prune stopped at 20 different storage requests (planning, repacking, the marker, the index
//! rewrite, the deletions) while a second computer runs a whole backup, and backups stopped at
//! 8 points while prunes condemn and delete what they were reusing; then `kill -9` of prune at
//! 20 moments. Afterwards `check --read-data` passes and every snapshot restores byte-exact.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Seconds of grace: short, so that the test can wait it out.
const GRACE: &str = "1";
const WAIT: Duration = Duration::from_millis(2200);
const PHOTO: usize = 150_000;

/// Two computers (separate HOMEs and local indexes) on one repository.
struct Two {
    env: Env,
    a_src: PathBuf,
    b_src: PathBuf,
    /// What each of B's snapshots holds, by snapshot id.
    b_expected: BTreeMap<String, PathBuf>,
    round: u64,
}

fn total_requests(v: &serde_json::Value) -> u64 {
    ["put", "get", "list", "head", "delete"]
        .iter()
        .map(|k| v["requests"][k].as_u64().unwrap_or(0))
        .sum()
}

impl Two {
    fn new(env: Env) -> Two {
        env.init();
        let a_src = env.path("alpha/Pictures");
        let b_src = env.path("beta/Camera");
        fs::create_dir_all(&a_src).unwrap();
        fs::create_dir_all(&b_src).unwrap();
        Two {
            env,
            a_src,
            b_src,
            b_expected: BTreeMap::new(),
            round: 0,
        }
    }

    fn cmd(&self, computer: &str) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("vault"));
        c.env_clear().envs(self.env.envs());
        c.env("HOME", self.env.path(&format!("{computer}-home")));
        c.env(
            "XDG_CACHE_HOME",
            self.env.path(&format!("{computer}-home/.cache")),
        );
        c
    }

    fn run(&self, computer: &str, args: &[&str]) -> serde_json::Value {
        let out = self
            .cmd(computer)
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Computer A stores a photo and forgets the snapshot that held it: its data is now
    /// unused, and what computer B backs up next reuses it. Waits the grace period out, so
    /// that a prune condemns it.
    fn make_unused_data(&mut self) -> Vec<u8> {
        self.round += 1;
        let photo = noise(PHOTO, 1000 + self.round);
        let p = self.a_src.join(format!("r{}.jpg", self.round));
        fs::write(&p, &photo).unwrap();
        let a = self.a_src.to_str().unwrap().to_string();
        self.run("a", &["backup", "--host", "alpha", &a]);
        fs::remove_file(&p).unwrap();
        fs::write(
            self.a_src.join("notes.txt"),
            format!("round {}", self.round),
        )
        .unwrap();
        self.run("a", &["backup", "--host", "alpha", &a]);
        self.run("a", &["forget", "--keep-last", "1", "--host", "alpha"]);
        std::thread::sleep(WAIT);
        photo
    }

    /// B's next change: the photo A forgot, and one of its own.
    fn change_b(&self, reused: &[u8]) {
        fs::write(self.b_src.join(format!("copy{}.jpg", self.round)), reused).unwrap();
        fs::write(
            self.b_src.join(format!("own{}.jpg", self.round)),
            noise(PHOTO, 5000 + self.round),
        )
        .unwrap();
    }

    fn record_b(&mut self, out: &std::process::Output) -> serde_json::Value {
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = v["snapshot"].as_str().unwrap().to_string();
        let copy = self.env.path(&format!("expected/{}", &id[..12]));
        copy_dir(&self.b_src, &copy);
        self.b_expected.insert(id, copy);
        v
    }

    fn backup_b(&mut self) -> serde_json::Value {
        let out = self
            .cmd("b")
            .args(["--json", "backup", "--host", "beta"])
            .arg(&self.b_src)
            .output()
            .unwrap();
        self.record_b(&out)
    }

    fn prune_args(&self) -> Vec<&'static str> {
        vec!["--json", "prune", "--grace", GRACE]
    }

    /// Everything is still there: check --read-data, and every snapshot of B and A's latest
    /// restore byte-exact on a computer with no local index.
    fn verify_all(&self) {
        std::thread::sleep(WAIT);
        let out = self
            .cmd("c")
            .arg("prune")
            .args(["--grace", GRACE])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        std::thread::sleep(WAIT);
        let out = self
            .cmd("c")
            .arg("prune")
            .args(["--grace", GRACE])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = self
            .cmd("c")
            .args(["check", "--read-data"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let list = self.run("c", &["snapshots"]);
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), self.b_expected.len() + 1, "{list:?}");
        for (id, expected) in &self.b_expected {
            let target = self.env.path(&format!("restored/{}", &id[..12]));
            let out = self
                .cmd("fresh")
                .args(["restore", "-q", id, "--target"])
                .arg(&target)
                .output()
                .unwrap();
            assert!(out.status.success(), "{id}: {out:?}");
            assert_same_tree(expected, &restored(&target, &self.b_src));
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    // `cp -a` keeps the mtimes to the nanosecond, as restore does.
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A command stopped before its `at`-th storage request; `None` when it finished first.
struct Stopped {
    child: Child,
    dir: tempfile::TempDir,
}

fn start_paused(mut cmd: Command, at: u64) -> Result<Stopped, std::process::Output> {
    let dir = tempfile::tempdir().unwrap();
    cmd.env("VAULT_TEST_PAUSE_AT", at.to_string())
        .env("VAULT_TEST_PAUSE_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if dir.path().join("paused").exists() {
            return Ok(Stopped { child, dir });
        }
        if child.try_wait().unwrap().is_some() {
            return Err(child.wait_with_output().unwrap());
        }
        assert!(Instant::now() < deadline, "never paused");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Stopped {
    fn resume(self) -> std::process::Output {
        fs::write(self.dir.path().join("resume"), b"").unwrap();
        self.child.wait_with_output().unwrap()
    }
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn prune_during_backups(env: Env) {
    let mut t = Two::new(env);
    fs::write(t.a_src.join("notes.txt"), "start").unwrap();
    let b0 = t.backup_b();
    let mut span = total_requests(&b0).max(10) * 3;

    // A prune stopped at 20 points, a whole backup from B at each.
    let mut points = 0;
    let mut i = 0u64;
    let want: u64 = std::env::var("PHASE1")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    while points < want {
        i += 1;
        assert!(i < 60, "only {points} points reached");
        let reused = t.make_unused_data();
        let at = 1 + (i * 37) % span;
        let mut prune = t.cmd("a");
        prune.args(t.prune_args());
        match start_paused(prune, at) {
            Ok(stopped) => {
                t.change_b(&reused);
                t.backup_b();
                let out = stopped.resume();
                assert!(out.status.success(), "prune stopped at {at}: {out:?}");
                points += 1;
            }
            Err(out) => {
                // Finished before that request: learn how long a prune is.
                assert!(out.status.success(), "{out:?}");
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                span = total_requests(&v).max(10);
                t.change_b(&reused);
                t.backup_b();
            }
        }
        let out = t.cmd("c").arg("check").output().unwrap();
        assert!(
            out.status.success(),
            "after a prune stopped at {at}: {out:?}"
        );
    }

    // Backups from B stopped at 8 points while A prunes twice (condemning, then deleting what
    // B was reusing).
    let b_span = total_requests(&t.backup_b()).max(8);
    for k in 0..8u64 {
        let reused = t.make_unused_data();
        t.change_b(&reused);
        let at = 1 + (k * (b_span - 4)) / 8;
        let mut backup = t.cmd("b");
        backup
            .args(["--json", "backup", "--host", "beta"])
            .arg(&t.b_src);
        let stopped = match start_paused(backup, at) {
            Ok(s) => s,
            Err(out) => panic!("backup finished before request {at}: {out:?}"),
        };
        t.run("a", &["prune", "--grace", GRACE]);
        std::thread::sleep(WAIT);
        t.run("a", &["prune", "--grace", GRACE]);
        let out = stopped.resume();
        t.record_b(&out);
        let out = t.cmd("c").arg("check").output().unwrap();
        assert!(
            out.status.success(),
            "after a backup stopped at {at}: {out:?}"
        );
    }
    t.verify_all();
}

fn prune_killed_anywhere(env: Env) {
    let mut t = Two::new(env);
    fs::write(t.a_src.join("notes.txt"), "start").unwrap();
    t.backup_b();
    let mut span = 40;
    let mut kills = 0;
    let mut i = 0u64;
    while kills < 20 {
        i += 1;
        assert!(i < 60, "only {kills} kills");
        let reused = t.make_unused_data();
        t.change_b(&reused);
        t.backup_b();
        let at = 1 + (i * 53 + 7) % span;
        let mut prune = t.cmd("a");
        prune.args(["--json", "prune", "--grace", "0"]);
        match start_paused(prune, at) {
            Ok(stopped) => {
                stopped.kill();
                kills += 1;
            }
            Err(out) => {
                assert!(out.status.success(), "{out:?}");
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                span = total_requests(&v).max(10);
            }
        }
        // The repository stays valid, and the next prune finishes the job.
        let out = t.cmd("c").arg("check").output().unwrap();
        assert!(
            out.status.success(),
            "after kill -9 at request {at}: {out:?}"
        );
        let v = t.run("a", &["prune", "--grace", "0"]);
        let _ = v;
    }
    t.verify_all();
}

/// Ctrl-C stops a prune at its next step (exit 130) and leaves the repository valid; the next
/// prune finishes the job. (A new-user trial found SIGINT ignored until the end.)
#[test]
fn ctrl_c_stops_a_prune() {
    let mut t = Two::new(Env::new());
    fs::write(t.a_src.join("notes.txt"), "start").unwrap();
    t.backup_b();
    let reused = t.make_unused_data();
    t.change_b(&reused);
    t.backup_b();
    for at in [3, 12, 20] {
        let mut prune = t.cmd("a");
        prune.args(["prune", "--grace", "0"]);
        let stopped = match start_paused(prune, at) {
            Ok(s) => s,
            Err(out) => panic!("finished before request {at}: {out:?}"),
        };
        let pid = stopped.child.id();
        let ok = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        std::thread::sleep(Duration::from_millis(100));
        let out = stopped.resume();
        assert_eq!(out.status.code(), Some(130), "stopped at {at}: {out:?}");
        let out = t.cmd("c").arg("check").output().unwrap();
        assert!(out.status.success(), "after Ctrl-C at {at}: {out:?}");
    }
    t.verify_all();
}

#[test]
fn folder_prune_during_backups() {
    prune_during_backups(Env::new());
}

#[test]
fn s3_prune_during_backups() {
    let Some(ep) = s3_endpoint() else { return };
    prune_during_backups(Env::s3(&ep));
}

#[test]
fn folder_prune_killed_anywhere() {
    prune_killed_anywhere(Env::new());
}

#[test]
fn s3_prune_killed_anywhere() {
    let Some(ep) = s3_endpoint() else { return };
    prune_killed_anywhere(Env::s3(&ep));
}
