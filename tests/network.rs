//! Real networks against the real S3 server, through a fault proxy (design.md §2.1): a silent
//! stall, a minute-long outage, bytes flipped on the way down and on the way up. Default
//! settings throughout: what a user gets.

mod common;

use common::proxy::{self, Fault, Request};
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Photos enough for a backup of a few dozen requests.
fn photos(env: &Env, n: u64) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..n {
        std::fs::write(
            src.join(format!("IMG_{i:03}.JPG")),
            noise(700_000 + i as usize * 50_000, 40 + i),
        )
        .unwrap();
    }
    src
}

/// An environment on the test server whose commands go through a proxy with this plan, from
/// the moment the plan is armed (the repository is made without it).
fn through_proxy(
    ep: &str,
    plan: impl Fn(&Request<'_>) -> Fault + Send + Sync + 'static,
) -> (Env, proxy::Proxy) {
    let mut env = Env::s3(ep);
    env.init();
    let px = proxy::start_with(proxy::upstream(ep), plan);
    env.endpoint = Some(px.url());
    (env, px)
}

/// A window of `len` that opens at the `after`-th request and in which every request meets
/// `fault`.
fn window(after: u64, len: Duration, fault: Fault) -> impl Fn(&Request<'_>) -> Fault {
    let opened: Mutex<Option<Instant>> = Mutex::new(None);
    move |r| {
        let mut o = opened.lock().unwrap();
        if o.is_none() && r.n >= after {
            *o = Some(Instant::now());
        }
        match *o {
            Some(t) if t.elapsed() < len => fault,
            _ => Fault::Pass,
        }
    }
}

#[test]
fn a_twenty_second_silent_stall_costs_under_a_minute() {
    let Some(ep) = s3_endpoint() else { return };
    let (env, px) = through_proxy(&ep, window(10, Duration::from_secs(20), Fault::Hang));
    let src = photos(&env, 30);
    let t = Instant::now();
    env.backup_json(&src);
    let took = t.elapsed();
    let hung = px.stats.faults.load(Ordering::Relaxed);
    eprintln!("backup through a 20 s stall ({hung} requests hung) took {took:?}");
    assert!(hung >= 1, "the stall met no request");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    env.assert_restores(&src, "out");
}

#[test]
fn a_one_minute_outage_in_the_middle_of_a_backup_is_survived() {
    let Some(ep) = s3_endpoint() else { return };
    let (env, px) = through_proxy(&ep, window(10, Duration::from_secs(60), Fault::Reset));
    let src = photos(&env, 30);
    let t = Instant::now();
    env.backup_json(&src);
    let took = t.elapsed();
    let refused = px.stats.faults.load(Ordering::Relaxed);
    eprintln!("backup through a 60 s outage ({refused} requests refused) took {took:?}");
    assert!(
        took >= Duration::from_secs(60),
        "the outage did not fall in the backup"
    );
    env.assert_restores(&src, "out");
}

#[test]
fn bytes_flipped_in_a_download_are_fetched_again() {
    let Some(ep) = s3_endpoint() else { return };
    let flipped = Arc::new(AtomicU64::new(0));
    let f = flipped.clone();
    // The first two downloads of pack data larger than 100 kB each get one bit flipped.
    let (env, _px) = through_proxy(&ep, move |r| {
        if r.method == "GET" && r.target.contains("/data/") && f.load(Ordering::SeqCst) < 2 {
            f.fetch_add(1, Ordering::SeqCst);
            Fault::FlipDown(70_000)
        } else {
            Fault::Pass
        }
    });
    let mut direct = Env::s3(&ep);
    direct.url = env.url.clone();
    let src = photos(&direct, 6);
    direct.vault().arg("backup").arg(&src).assert().success();
    flipped.store(0, Ordering::SeqCst);
    let target = env.path("out");
    let out = env
        .vault()
        .args(["restore", "--json", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_same_tree(&src, &restored(&target, &src));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(flipped.load(Ordering::SeqCst) >= 1, "nothing was flipped");
    assert!(
        v["download"]["refetched"].as_u64().unwrap() >= 1,
        "{}",
        v["download"]
    );
    assert!(v["errors"].as_array().unwrap().is_empty());
    // check reads every pack: a flip on the way is fetched again, not called damage.
    flipped.store(0, Ordering::SeqCst);
    env.vault()
        .args(["check", "--read-data"])
        .assert()
        .success();
    assert!(flipped.load(Ordering::SeqCst) >= 1, "check met no flip");
}

#[test]
fn an_upload_flipped_on_the_way_is_sent_again() {
    let Some(ep) = s3_endpoint() else { return };
    let flipped = Arc::new(AtomicU64::new(0));
    let f = flipped.clone();
    let (env, _px) = through_proxy(&ep, move |r| {
        let pack = r.method == "PUT" && r.target.contains("/data/") && r.body_len > 1000;
        if pack && f.fetch_add(1, Ordering::SeqCst) == 0 {
            return Fault::FlipUp(500);
        }
        Fault::Pass
    });
    let src = photos(&env, 4);
    let out = env
        .vault()
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        flipped.load(Ordering::SeqCst) >= 2,
        "no flipped upload was retried"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["requests"]["retries"].as_u64().unwrap() >= 1);
    env.check_read_data();
    env.assert_restores(&src, "out");
}
