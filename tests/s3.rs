//! S3 repositories against the real SeaweedFS server that scripts/test-all.sh starts: round trip,
//! error messages, Object Lock, request accounting and injected network faults.

mod common;

use common::proxy::{self, Fault};
use common::*;
use predicates::prelude::*;
use std::fs;
use std::sync::atomic::Ordering;
use std::time::Duration;
use vault::backend::FileType;

#[test]
fn s3_backup_restore_check_round_trip() {
    let Some(ep) = s3_endpoint() else { return };
    let env = Env::s3(&ep);
    let src = env.path("src");
    make_tree(&src);
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    // Packs went through the upload spool (design.md §2.1): owner-only, and nothing left in it.
    let spool = env.path("home/.cache/vault/spool");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&spool).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    assert_eq!(fs::read_dir(&spool).unwrap().count(), 0);
    let second = env
        .vault()
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(second.status.success());
    let v: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(v["packs_written"], 0, "unchanged data writes no pack");
    assert_eq!(
        v["requests"]["list"], 8,
        "LIST only to load state: keys, condemned, index, forgotten, snapshots and their \
         second copies (§2.2); and before the snapshot is written index and condemned again \
         (§13.2)"
    );
    env.assert_restores(&src, "out");
    env.vault()
        .args(["check", "--read-data"])
        .assert()
        .success()
        .stdout(predicate::str::contains("no errors"));
    // A single photo restores with ranged reads, not whole packs.
    let one = env.path("one");
    let pick = src.join("photos/Ünïcødé 写真 🌅.jpg");
    let o = env
        .vault()
        .args(["restore", "--json", "--target"])
        .arg(&one)
        .arg("--include")
        .arg(&pick)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        fs::read(restored(&one, &pick)).unwrap(),
        fs::read(&pick).unwrap()
    );
}

fn one_line_error(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(!err.contains("vaultsecret"), "never print a secret");
}

#[test]
fn s3_errors_are_one_clear_line() {
    let Some(ep) = s3_endpoint() else { return };
    let env = Env::s3(&ep);
    env.init();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let closed = format!("http://{closed}");
    let https = ep.replacen("http://", "https://", 1);
    // Environment changes (None: removed) and the message expected.
    type Case<'a> = (Vec<(&'a str, Option<&'a str>)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("AWS_SECRET_ACCESS_KEY", Some("wrong-secret"))],
            "the S3 secret key is wrong",
        ),
        (
            vec![("AWS_ACCESS_KEY_ID", Some("nobody"))],
            "does not know this access key",
        ),
        (
            vec![("VAULT_REPO", Some("s3://vault-no-such-bucket/x"))],
            "the bucket vault-no-such-bucket does not exist (`vault init` creates it",
        ),
        // An http server given as https (issue 23): said so, not rustls's
        // "received corrupt message of type InvalidContentType".
        (
            vec![("AWS_ENDPOINT_URL", Some(https.as_str()))],
            "did not answer in TLS: if the server speaks plain HTTP, give its address as http://",
        ),
        (
            vec![
                ("AWS_ENDPOINT_URL", Some(closed.as_str())),
                ("VAULT_S3_ATTEMPTS", Some("2")),
            ],
            "cannot reach the S3 endpoint",
        ),
        (
            vec![
                ("AWS_ENDPOINT_URL", Some("http://no-such-host.invalid:9")),
                ("VAULT_S3_ATTEMPTS", Some("2")),
            ],
            "cannot resolve the S3 endpoint",
        ),
        (
            vec![
                ("AWS_ACCESS_KEY_ID", None),
                ("AWS_SECRET_ACCESS_KEY", None),
                ("AWS_EC2_METADATA_DISABLED", Some("true")),
                ("VAULT_S3_ATTEMPTS", Some("1")),
            ],
            "no S3 credentials found",
        ),
    ];
    for (changes, expected) in cases {
        let mut c = env.vault();
        for (k, v) in changes {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        one_line_error(&c.arg("snapshots").output().unwrap(), expected);
    }
}

fn sdk_client(endpoint: &str) -> (tokio::runtime::Runtime, aws_sdk_s3::Client) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conf = rt.block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load());
    let c = aws_sdk_s3::config::Builder::from(&conf)
        .endpoint_url(endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .force_path_style(true)
        .build();
    (rt, aws_sdk_s3::Client::from_conf(c))
}

#[test]
fn object_lock_objects_cannot_be_deleted() {
    let Some(ep) = s3_endpoint() else { return };
    if !s3_has_object_lock() {
        eprintln!("skipping: this S3 server has no Object Lock");
        return;
    }
    let env = Env::s3(&ep);
    env.vault()
        .args(["init", "--kdf-log-n", "10", "--object-lock-days", "1"])
        .assert()
        .success();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.jpg"), noise(2_000_000, 1)).unwrap();
    env.vault().arg("backup").arg(&src).assert().success();

    let bucket = env
        .url
        .as_ref()
        .unwrap()
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (rt, client) = sdk_client(&ep);
    let versions = rt
        .block_on(client.list_object_versions().bucket(&bucket).send())
        .unwrap();
    let vs = versions.versions();
    assert!(
        vs.len() >= 5,
        "marker, config, key, pack(s), index, snapshot"
    );
    let mut refused = 0;
    for v in vs {
        let r = rt.block_on(
            client
                .delete_object()
                .bucket(&bucket)
                .key(v.key().unwrap())
                .version_id(v.version_id().unwrap())
                .send(),
        );
        if r.is_err() {
            refused += 1;
        }
    }
    assert_eq!(
        refused,
        vs.len(),
        "every locked object version must refuse deletion"
    );
    // Everything is still there and readable.
    env.check_read_data();

    // A bucket without Object Lock is refused with a clear message.
    let plain = Env::s3(&ep);
    plain.init();
    let other_prefix = format!(
        "{}/second",
        plain.url.as_ref().unwrap().rsplit_once('/').unwrap().0
    );
    plain
        .vault()
        .env("VAULT_REPO", &other_prefix)
        .args(["init", "--kdf-log-n", "10", "--object-lock-days", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "does not have Object Lock enabled",
        ));
    // And a folder repository cannot lock at all.
    Env::new()
        .vault()
        .args(["init", "--kdf-log-n", "10", "--object-lock-days", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "Object Lock needs an S3 repository",
        ));
}

fn corpus(src: &std::path::Path, n: u64, seed: u64) {
    fs::create_dir_all(src).unwrap();
    for i in 0..n {
        fs::write(
            src.join(format!("IMG_{seed}_{i:03}.JPG")),
            noise(1_500_000 + (i as usize * 37_000), seed * 1000 + i),
        )
        .unwrap();
    }
    fs::write(
        src.join(format!("notes_{seed}.txt")),
        b"text that compresses well\n".repeat(20_000),
    )
    .unwrap();
}

#[test]
fn request_counts_match_what_the_server_saw() {
    let Some(ep) = s3_endpoint() else { return };
    let px = proxy::start(proxy::upstream(&ep), |_| Fault::Pass);
    let mut env = Env::s3(&ep);
    env.init();
    env.endpoint = Some(px.url());
    let src = env.path("src");
    corpus(&src, 30, 1);
    let out = env
        .vault()
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen = px.stats.requests();
    let get = |k: &str| seen.get(k).copied().unwrap_or(0);
    let r = &v["requests"];
    eprintln!("vault reported {r}, the proxy saw {seen:?}");
    assert_eq!(r["put"].as_u64().unwrap(), get("PUT"));
    assert_eq!(r["get"].as_u64().unwrap(), get("GET"));
    assert_eq!(r["list"].as_u64().unwrap(), get("LIST"));
    assert_eq!(r["head"].as_u64().unwrap(), get("HEAD"));
    assert_eq!(r["delete"].as_u64().unwrap(), get("DELETE"));
    // PUTs: one per pack and one per tree pack's second copy (design.md §2.2), plus one index
    // and the snapshot with its second copy; nothing per chunk or per file.
    let packs = v["packs_written"].as_u64().unwrap();
    let tree_copies = env.store().list(FileType::TreePackCopy).unwrap().len() as u64;
    assert!(tree_copies >= 1);
    assert_eq!(get("PUT"), packs + tree_copies + 3);
}

#[test]
fn backups_survive_injected_network_faults() {
    let Some(ep) = s3_endpoint() else { return };
    // Deterministic plan: about 30% of requests meet a fault, each of which ends its connection.
    let plan = |n: u64| {
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        match h % 20 {
            0 => Fault::CutUp(200 + (h >> 8) as usize % 300_000),
            1 => Fault::CutDown((h >> 8) as usize % 400),
            2 => Fault::CutDown(0),
            3 => Fault::Reset,
            4 => Fault::Blackhole(Duration::from_secs(4)),
            5 => Fault::Delay(Duration::from_millis(300)),
            _ => Fault::Pass,
        }
    };
    let px = proxy::start(proxy::upstream(&ep), plan);
    let mut env = Env::s3(&ep);
    env.init();
    env.endpoint = Some(px.url());
    let src = env.path("src");
    let mut completed = 0;
    let mut failed_cleanly = 0;
    let mut retries = 0;
    for round in 0..3u64 {
        corpus(&src.join(format!("r{round}")), 12, round + 10);
        let mut ok = false;
        for _attempt in 0..4 {
            let out = env
                .vault()
                .env("VAULT_S3_TIMEOUT", "2")
                .env("VAULT_S3_ATTEMPTS", "6")
                .args(["--json", "backup"])
                .arg(&src)
                .output()
                .unwrap();
            match out.status.code() {
                Some(0) => {
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    retries += v["requests"]["retries"].as_u64().unwrap();
                    ok = true;
                    completed += 1;
                    break;
                }
                Some(1) => {
                    failed_cleanly += 1;
                    let err = String::from_utf8_lossy(&out.stderr);
                    assert_eq!(
                        err.trim_end().lines().count(),
                        1,
                        "clean one-line failure: {err}"
                    );
                }
                _ => panic!("unexpected outcome {out:?}"),
            }
        }
        assert!(ok, "round {round} never completed");
    }
    let conns = px.stats.connections.load(Ordering::Relaxed);
    let faults = px.stats.faults.load(Ordering::Relaxed);
    let faulted = px.stats.faulted_connections.load(Ordering::Relaxed);
    println!(
        "fault proxy: {faults} faults injected ({faulted} of {conns} connections cut, reset or blackholed); {completed} backups completed after {retries} retried requests, {failed_cleanly} failed cleanly and were re-run"
    );
    assert!(
        faulted * 5 >= conns,
        "at least 20% of connections faulted ({faulted}/{conns})"
    );
    assert!(faults >= 10, "enough faults to mean something");
    // Verify directly against the server: every snapshot complete, every byte readable.
    env.endpoint = Some(ep.clone());
    env.check_read_data();
    env.assert_restores(&src, "out");
}

/// Prune through the fault proxy (design.md §13.2): each run completes or stops with one line,
/// and whatever it managed, the repository stays valid: no snapshot ever names a deleted pack.
#[test]
fn prunes_survive_injected_network_faults() {
    let Some(ep) = s3_endpoint() else { return };
    let plan = |n: u64| {
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23);
        match h % 16 {
            0 => Fault::CutUp(100 + (h >> 8) as usize % 100_000),
            1 => Fault::CutDown((h >> 8) as usize % 300),
            2 => Fault::CutDown(0),
            3 => Fault::Reset,
            4 => Fault::Delay(Duration::from_millis(200)),
            _ => Fault::Pass,
        }
    };
    let px = proxy::start(proxy::upstream(&ep), plan);
    let mut env = Env::s3(&ep);
    env.init();
    let src = env.path("src");
    for round in 0..4u64 {
        corpus(&src.join(format!("r{round}")), 3, round + 40);
        env.vault()
            .args(["backup", "-q"])
            .arg(&src)
            .assert()
            .success();
        if round % 2 == 1 {
            fs::remove_dir_all(src.join(format!("r{}", round - 1))).unwrap();
        }
    }
    env.vault()
        .args(["backup", "-q"])
        .arg(&src)
        .assert()
        .success();
    env.vault()
        .args(["forget", "--keep-last", "1", "-q"])
        .assert()
        .success();
    let (mut completed, mut failed) = (0, 0);
    let mut deleted = 0;
    for _ in 0..12 {
        env.endpoint = Some(px.url());
        let out = env
            .vault()
            .env("VAULT_S3_TIMEOUT", "2")
            .env("VAULT_S3_ATTEMPTS", "3")
            .args(["--json", "prune", "--grace", "0"])
            .output()
            .unwrap();
        match out.status.code() {
            Some(0) => {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                deleted += v["deleted_packs"].as_u64().unwrap();
                completed += 1;
            }
            Some(1) => {
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
                failed += 1;
            }
            _ => panic!("unexpected outcome {out:?}"),
        }
        // Straight to the server: the repository is valid whatever the run managed.
        env.endpoint = Some(ep.clone());
        env.vault().arg("check").assert().success();
        if completed >= 3 && deleted > 0 {
            break;
        }
    }
    let faults = px.stats.faults.load(Ordering::Relaxed);
    println!(
        "prune through the fault proxy: {faults} faults injected; {completed} runs completed, \
         {failed} stopped cleanly, {deleted} packs deleted"
    );
    assert!(faults >= 10, "{faults} faults");
    assert!(
        completed >= 3 && deleted > 0,
        "{completed} completed, {deleted} deleted"
    );
    env.endpoint = Some(ep.clone());
    env.check_read_data();
    env.assert_restores(&src, "out");
}

/// With Object Lock, forget and prune delete nothing still under retention: they say until
/// when, the forgotten snapshots stay hidden, and the repository stays valid (§13.2).
#[test]
fn object_lock_forget_and_prune_wait_for_retention() {
    let Some(ep) = s3_endpoint() else { return };
    if !s3_has_object_lock() {
        eprintln!("skipping: this S3 server has no Object Lock");
        return;
    }
    let env = Env::s3(&ep);
    env.vault()
        .args(["init", "--kdf-log-n", "10", "--object-lock-days", "1"])
        .assert()
        .success();
    let src = env.path("src");
    for round in 0..3u64 {
        corpus(&src.join(format!("r{round}")), 2, round + 60);
        env.vault()
            .args(["backup", "-q"])
            .arg(&src)
            .assert()
            .success();
        fs::remove_dir_all(src.join(format!("r{round}"))).unwrap();
    }
    corpus(&src.join("last"), 1, 70);
    env.vault()
        .args(["backup", "-q"])
        .arg(&src)
        .assert()
        .success();
    let out = env
        .vault()
        .args(["--json", "forget", "--keep-last", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["snapshot_objects_deleted"], 0, "{v}");
    let locked = v["locked"].as_array().unwrap();
    assert_eq!(locked.len(), 6, "3 snapshots, 2 copies each: {v}");
    let now = vault::repo::now().0;
    assert!(
        locked
            .iter()
            .all(|l| l["until"].as_i64().unwrap() > now + 80_000),
        "{v}"
    );
    // Still stored, but forgotten everywhere.
    assert_eq!(env.store().list(FileType::Snapshot).unwrap().len(), 4);
    let list = env.vault().args(["--json", "snapshots"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    for _ in 0..2 {
        let out = env
            .vault()
            .args(["--json", "prune", "--grace", "0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(p["deleted_packs"], 0, "{p}");
        assert_eq!(p["snapshot_objects_removed"], 0, "{p}");
        assert!(!p["locked"].as_array().unwrap().is_empty(), "{p}");
    }
    assert_eq!(env.store().list(FileType::Snapshot).unwrap().len(), 4);
    env.check_read_data();
    env.assert_restores(&src, "out");
}
