//! The README's examples run as written (issue 23): every command block of "Moving files into
//! the vault" and "S3-compatible storage" is run by bash in a fresh home against the test S3
//! server, with only its placeholders (drive paths, bucket names, endpoints) replaced, so a
//! README example can never again be a command that fails.

mod common;

use common::*;
use std::fs;
use std::path::Path;

const README: &str = include_str!("../README.md");

/// The ```sh blocks of the README section headed `## {title}`.
fn blocks(title: &str) -> Vec<String> {
    let head = format!("## {title}\n");
    let start = README
        .find(&head)
        .unwrap_or_else(|| panic!("README has no section {title:?}"));
    let body = &README[start + head.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("```sh\n") {
        let b = &rest[i + 6..];
        let end = b.find("```").expect("unclosed code block");
        out.push(b[..end].to_string());
        rest = &b[end + 3..];
    }
    assert!(!out.is_empty(), "no command blocks in {title:?}");
    out
}

fn photo(p: &Path, seed: u64) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, noise(20_000 + seed as usize * 1000, seed)).unwrap();
}

/// Run `block` with bash, placeholders replaced; it must exit 0 with every command.
fn run_block(env: &Env, ep: &str, block: &str, subs: &[(&str, String)]) {
    let mut script = block.to_string();
    for (from, to) in subs {
        script = script.replace(from, to);
    }
    for left in [
        "/media/",
        "my-bucket",
        "example.com",
        "backblazeb2",
        "/tmp/restored",
        "=...",
    ] {
        assert!(
            !script.contains(left),
            "a placeholder this test does not replace: {left:?} in\n{script}"
        );
    }
    let bin = assert_cmd::cargo::cargo_bin("vault");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euxo pipefail\n{script}"))
        .env_clear()
        .envs(
            env.envs()
                .into_iter()
                .filter(|(k, _)| k != "VAULT_REPO" && k != "AWS_ENDPOINT_URL"),
        )
        .env("PATH", path)
        // Commands without --s3-endpoint reach the test server as AWS_ENDPOINT_URL would.
        .env("AWS_ENDPOINT_URL", ep)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "README block failed:\n{script}\n--- stderr (bash -x trace):\n{}\n--- stdout:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn readme_examples_run_as_written() {
    let Some(ep) = s3_endpoint() else { return };
    let env = Env::new();
    let home = env.path("home");
    for (i, p) in [
        "Pictures/Private/2024/a.jpg",
        "Pictures/Private/2024/b.jpg",
        "Pictures/Private/2023/c.jpg",
        "Pictures/2024/holiday/d.jpg",
        "Pictures/2024/e.jpg",
        "Videos/f.mp4",
    ]
    .iter()
    .enumerate()
    {
        photo(&home.join(p), i as u64 + 1);
    }
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default();
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
    let subs = vec![
        (
            "export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...",
            format!("export AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret}"),
        ),
        ("https://s3.example.com", ep.clone()),
        ("https://s3.eu-central-003.backblazeb2.com", ep.clone()),
        ("s3://my-bucket/", format!("s3://{}/", unique_bucket())),
        (
            "/media/me/photo-disk/vault",
            env.path("drive/vault").display().to_string(),
        ),
        (
            "/media/usb/photo-vault",
            env.path("usb/photo-vault").display().to_string(),
        ),
        ("/tmp/restored", env.path("restored").display().to_string()),
    ];
    let moving = blocks("Moving files into the vault");
    for b in &moving {
        run_block(&env, &ep, b, &subs);
    }
    // The move took the private photos; the vault-only restore brought back 2024's.
    assert!(home.join("Pictures/Private/2024/a.jpg").exists());
    assert!(!home.join("Pictures/Private/2023/c.jpg").exists());
    for b in &blocks("S3-compatible storage") {
        run_block(&env, &ep, b, &subs);
    }
    assert_eq!(
        fs::read(
            env.path("restored")
                .join(home.strip_prefix("/").unwrap())
                .join("Pictures/2024/holiday/d.jpg")
        )
        .unwrap(),
        fs::read(home.join("Pictures/2024/holiday/d.jpg")).unwrap()
    );
}

/// The README says how to put `vault` on PATH, and the release build it installs is shipped
/// without debug info (it was 178 MB with line tables, 33 MB without).
#[test]
fn readme_says_how_to_install_a_small_binary() {
    assert!(README.contains("cargo install --locked --path ."));
    let manifest: toml::Table = include_str!("../Cargo.toml").parse().unwrap();
    let release = &manifest["profile"]["release"];
    let debug = release.get("debug");
    assert!(
        matches!(debug, None | Some(toml::Value::Boolean(false)))
            || debug.and_then(|d| d.as_str()) == Some("none"),
        "release builds carry debug info: {debug:?}"
    );
    assert_ne!(
        release.get("strip").and_then(|s| s.as_str()),
        Some("none"),
        "release builds must be stripped"
    );
}
