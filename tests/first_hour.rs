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
