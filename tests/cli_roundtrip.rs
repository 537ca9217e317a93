//! Backup and restore of a tree with every awkward kind of entry, through the CLI.

mod common;

use common::*;
use predicates::prelude::*;
use std::fs;

#[test]
fn backup_restore_is_byte_identical_with_metadata() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    let out = env.path("out");
    env.vault()
        .args(["restore", "latest", "--target"])
        .arg(&out)
        .assert()
        .success();
    assert_same_tree(&src, &restored(&out, &src));
    env.vault()
        .args(["check", "--read-data"])
        .assert()
        .success()
        .stdout(predicate::str::contains("no errors"));
}

#[test]
fn unchanged_rebackup_writes_no_pack_and_duplicates_are_stored_once() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init();
    let first = env
        .vault()
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(first.status.success());
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let packs_before = objects(&env.repo(), "data").len();
    // Two identical 20 MiB files: the stored bytes are well under twice their size.
    let added = first["bytes_added"].as_u64().unwrap();
    assert!(added < 20 * 1024 * 1024 + 8 * 1024 * 1024, "added {added}");
    assert!(first["blobs_reused"].as_u64().unwrap() >= 10);

    let second = env
        .vault()
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(second.status.success());
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(second["blobs_new"], 0);
    assert_eq!(second["packs_written"], 0);
    assert_eq!(objects(&env.repo(), "data").len(), packs_before);
    let snaps = env.vault().args(["snapshots", "--json"]).output().unwrap();
    let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
}

#[test]
fn include_restores_a_sub_path_and_existing_files_are_not_overwritten() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    let out = env.path("out");
    let sub = src.join("photos");
    let restore_sub = |extra: &[&str]| {
        let mut c = env.restore_cmd(&out);
        c.arg("--include").arg(&sub).args(extra);
        c
    };
    restore_sub(&[]).assert().success();
    assert_same_tree(&sub, &restored(&out, &sub));
    assert!(!restored(&out, &src.join("notes.txt")).exists());

    // Restoring again (as after an interrupted restore): what is there as the snapshot has it is
    // left alone and is no error; a file that differs is not replaced, and is named, exit 3.
    let items = all_files(&sub).len();
    restore_sub(&[])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "{items} item(s) were already there"
        )))
        .stderr(predicate::str::is_empty());
    let victim = restored(&out, &sub.join("2024/big video.mp4"));
    let len = fs::metadata(&victim).unwrap().len() as usize;
    // Same size, other bytes: only the content tells them apart.
    fs::write(&victim, vec![7u8; len]).unwrap();
    let other = restored(&out, &sub.join("Ünïcødé 写真 🌅.jpg"));
    fs::remove_file(&other).unwrap();
    restore_sub(&[])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("restored 1 files"))
        .stdout(predicate::str::contains(format!(
            "{} item(s) were already there",
            items - 2
        )))
        .stderr(predicate::str::contains(
            "big video.mp4: exists and differs; use --overwrite",
        ))
        .stderr(predicate::str::contains("skipped:").count(1));
    assert_eq!(fs::read(&victim).unwrap(), vec![7u8; len]);
    assert!(other.exists());
    restore_sub(&["--overwrite"]).assert().success();
    assert_same_tree(&sub, &restored(&out, &sub));

    env.vault()
        .args(["restore", "--target"])
        .arg(&out)
        .args(["--include", "/no/such/path"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not in snapshot"));

    // The whole tree twice: symlinks (one dangling) are recognised as already there too.
    let full = env.restore_into("full");
    env.vault()
        .args(["restore", "--target"])
        .arg(&full)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "{} item(s) were already there",
            all_files(&src).len()
        )))
        .stderr(predicate::str::is_empty());
    assert_same_tree(&src, &restored(&full, &src));
}

#[test]
fn ls_lists_names_and_json() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init();
    env.vault()
        .args(["backup", "--tag", "phone"])
        .arg(&src)
        .assert()
        .success();
    env.vault()
        .arg("ls")
        .assert()
        .success()
        .stdout(predicate::str::contains("Ünïcødé 写真 🌅.jpg"))
        .stdout(predicate::str::contains(
            "link to video -> photos/2024/big video.mp4",
        ));
    let out = env
        .vault()
        .args(["ls", "latest"])
        .arg(src.join("photos"))
        .arg("--json")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths
        .iter()
        .any(|p| p.ends_with("photos/2024/random-20MiB.bin")));
    assert!(paths.iter().all(|p| p.contains("/photos")));
    env.vault()
        .arg("snapshots")
        .assert()
        .success()
        .stdout(predicate::str::contains("[phone]"));
}

#[test]
fn exclude_skips_matching_paths() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.init();
    env.vault()
        .args(["backup", "--exclude", "*.bin", "--exclude"])
        .arg(src.join("copies"))
        .arg(&src)
        .assert()
        .success();
    let out = env.vault().args(["ls", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(!paths
        .iter()
        .any(|p| p.ends_with(".bin") || p.contains("/copies")));
    assert!(paths.iter().any(|p| p.ends_with("notes.txt")));
}

#[test]
fn unreadable_files_are_skipped_with_exit_3() {
    // Root reads everything, so this test means something only for ordinary users.
    if unsafe_is_root() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok"), b"fine").unwrap();
    fs::write(src.join("secret"), b"no").unwrap();
    fs::set_permissions(
        src.join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    env.init();
    env.vault()
        .arg("backup")
        .arg(&src)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("secret"));
}

fn unsafe_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

#[test]
fn special_files_are_skipped_and_reported_with_exit_3() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok.jpg"), noise(5000, 1)).unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(src.join("a pipe"))
        .status()
        .unwrap();
    assert!(st.success());
    env.init();
    let out = env
        .vault()
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 1);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 1);
    assert!(v["skipped"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("a pipe"));
    // The rest of the run completed: the good file is in the snapshot.
    env.vault()
        .arg("ls")
        .assert()
        .success()
        .stdout(predicate::str::contains("ok.jpg"));
}

#[test]
fn a_file_that_changes_while_read_is_reported() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let log = src.join("growing.mov");
    fs::write(&log, noise(30 * 1024 * 1024, 77)).unwrap();
    env.init();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
            let block = noise(4096, 5);
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&block).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = env
        .vault()
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = &v["warnings"][0];
    assert!(w["path"].as_str().unwrap().ends_with("growing.mov"));
    assert!(w["reason"]
        .as_str()
        .unwrap()
        .contains("kept changing while it was read"));
    assert_eq!(v["files"], 1, "the file is still stored");
}

#[test]
fn missing_folder_is_a_clear_error_and_creates_nothing() {
    let env = Env::new();
    env.vault()
        .env_remove("VAULT_REPO")
        .arg("backup")
        .arg(env.path("does-not-exist"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot back up"))
        .stderr(predicate::str::contains("No such file"));
    assert!(!env.path("home/.local/share/vault").exists());
}

#[test]
fn backup_creates_the_default_repository_on_first_use() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.jpg"), noise(1000, 9)).unwrap();
    env.vault()
        .env_remove("VAULT_REPO")
        .arg("backup")
        .arg(&src)
        .assert()
        .success()
        .stderr(predicate::str::contains("creating the default one"));
    assert!(env.path("home/.local/share/vault/repo/VAULT").exists());
    env.vault()
        .env_remove("VAULT_REPO")
        .arg("snapshots")
        .assert()
        .success();
}

#[test]
fn init_refuses_a_folder_that_holds_other_files() {
    let env = Env::new();
    fs::create_dir_all(env.repo()).unwrap();
    fs::write(env.repo().join("IMG_0001.JPG"), b"a photo").unwrap();
    env.vault()
        .args(["init", "--kdf-log-n", "10"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not empty"));
    let names: Vec<_> = fs::read_dir(env.repo())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("IMG_0001.JPG")],
        "nothing was added"
    );
}

#[test]
fn a_repository_inside_the_backed_up_folder_is_not_backed_up_into_itself() {
    let env = Env::new();
    let home = env.path("home-folder");
    fs::create_dir_all(home.join("Pictures")).unwrap();
    fs::write(home.join("Pictures/a.jpg"), noise(10_000, 1)).unwrap();
    let repo = home.join(".local/share/vault/repo");
    env.vault()
        .env("VAULT_REPO", &repo)
        .args(["init", "--kdf-log-n", "10"])
        .assert()
        .success();
    env.vault()
        .env("VAULT_REPO", &repo)
        .arg("backup")
        .arg(&home)
        .assert()
        .success();
    let out = env
        .vault()
        .env("VAULT_REPO", &repo)
        .args(["ls", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.ends_with("Pictures/a.jpg")));
    assert!(
        !paths.iter().any(|p| p.contains("/vault/repo")),
        "{paths:?}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    env.vault().arg("backup").assert().code(2);
    env.vault().arg("frobnicate").assert().code(2);
    env.vault().args(["restore"]).assert().code(2);
    env.vault().arg("--help").assert().success();
    for cmd in ["init", "backup", "snapshots", "ls", "restore", "check"] {
        env.vault().args([cmd, "--help"]).assert().success();
    }
}

#[test]
fn restore_as_root_gives_back_the_recorded_owners() {
    // Only root can give a file to another user (as with tar and restic).
    if !unsafe_is_root() {
        eprintln!("not root: ownership is not restored, nothing to test");
        return;
    }
    use std::os::unix::fs::{lchown, symlink, MetadataExt};
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("album")).unwrap();
    fs::write(src.join("album/IMG_0001.JPG"), b"photo").unwrap();
    fs::write(src.join("mine.txt"), b"root's").unwrap();
    symlink("album/IMG_0001.JPG", src.join("cover")).unwrap();
    let owners = [
        ("album", 4321, 8765),
        ("album/IMG_0001.JPG", 4322, 8766),
        ("cover", 4323, 8767),
        ("mine.txt", 0, 0),
    ];
    for (p, u, g) in owners {
        lchown(src.join(p), Some(u), Some(g)).unwrap();
    }
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    let out = env.path("out");
    env.restore_cmd(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("owner").not());
    let back = restored(&out, &src);
    for (p, u, g) in owners {
        let m = fs::symlink_metadata(back.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (u, g), "owner of {p}");
    }
    assert_same_tree(&src, &back);
}

#[test]
fn a_full_target_stops_the_restore_and_running_it_again_finishes_it() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    let Some(disk) = SmallDisk::mount(&env.path("card"), 8) else {
        eprintln!("cannot mount a small tmpfs here (needs root): nothing to test");
        return;
    };
    let src = env.path("src");
    fs::create_dir_all(src.join("album")).unwrap();
    for i in 0..12u64 {
        fs::write(
            src.join(format!("album/IMG_{i:04}.JPG")),
            noise(1024 * 1024 + i as usize, i),
        )
        .unwrap();
    }
    // Not what a new folder gets by default: the first run must set it, though it stops early.
    fs::set_permissions(src.join("album"), fs::Permissions::from_mode(0o750)).unwrap();
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    let out = disk.0.join("out");
    let restore = || env.restore_cmd(&out);
    // One message for the whole run, not one per file still to come.
    let failed = restore().assert().code(1).get_output().clone();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("is full: stopped after"), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // The journal that lets the next run finish what this one made stays until then, outside
    // the target.
    assert_eq!(env.restore_journals().len(), 1);
    let partial = all_files(&out);
    assert!(partial.len() < 12, "{partial:?}");
    let album = restored(&out, &src.join("album"));
    assert_eq!(fs::metadata(&album).unwrap().mode() & 0o777, 0o750);
    assert!(
        partial
            .iter()
            .all(|p| !p.to_string_lossy().contains(".vault-restore-")),
        "temporary files left: {partial:?}"
    );
    // With room, the same command finishes the job and keeps what the first run wrote.
    disk.grow(64);
    restore()
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "{} item(s) were already there",
            partial.len()
        )));
    assert_same_tree(&src, &restored(&out, &src));
    assert_eq!(env.restore_journals(), Vec::<std::path::PathBuf>::new());
}

/// What camera cards and USB sticks carry. exFAT through the kernel and FUSE alike, FAT through
/// FUSE here (this machine's kernel has no vfat module).
#[derive(Clone, Copy, PartialEq)]
enum CardFs {
    Exfat,
    Fat32,
}

/// A card filesystem in an image file, mounted through FUSE for one test; unmounted (and its
/// loop device detached) when dropped.
struct CardDisk {
    mnt: std::path::PathBuf,
    loop_dev: Option<String>,
}

impl CardDisk {
    /// None where this process cannot: not root, or no losetup, mkfs.exfat and exfat-fuse, or
    /// no mkfs.vfat and fusefat (scripts/test-all.sh installs them where it can).
    fn mount(env: &Env, fs_kind: CardFs, mib: u64) -> Option<CardDisk> {
        use std::process::Command;
        let run = |cmd: &str, args: &[&std::ffi::OsStr]| {
            Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
        };
        let img = env.path("card.img");
        fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
        let mnt = env.path("card");
        fs::create_dir_all(&mnt).unwrap();
        if fs_kind == CardFs::Fat32 {
            run(
                "mkfs.vfat",
                &["-F".as_ref(), "32".as_ref(), img.as_os_str()],
            )?;
            run(
                "fusefat",
                &[
                    "-o".as_ref(),
                    "rw+".as_ref(),
                    img.as_os_str(),
                    mnt.as_os_str(),
                ],
            )?;
            return Some(CardDisk {
                mnt,
                loop_dev: None,
            });
        }
        run("mkfs.exfat", &[img.as_os_str()])?;
        let out = run(
            "losetup",
            &["-f".as_ref(), "--show".as_ref(), img.as_os_str()],
        )?;
        let loop_dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if run("mount.exfat-fuse", &[loop_dev.as_ref(), mnt.as_os_str()]).is_none() {
            let _ = Command::new("losetup").args(["-d", &loop_dev]).status();
            return None;
        }
        Some(CardDisk {
            mnt,
            loop_dev: Some(loop_dev),
        })
    }
}

impl Drop for CardDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
        if let Some(dev) = &self.loop_dev {
            let _ = std::process::Command::new("losetup")
                .args(["-d", dev])
                .status();
        }
    }
}

/// FAT and exFAT keep no permissions, owners or symlinks. exFAT's chmod succeeds without doing
/// anything; FAT's fails (ENOSYS through FUSE, EPERM through the kernel). Either way the restore
/// must put every file back, byte for byte, and say what the card could not keep, above all
/// that private files are not private there.
fn restore_onto_card(fs_kind: CardFs) {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let Some(card) = CardDisk::mount(&env, fs_kind, 64) else {
        eprintln!(
            "cannot mount exFAT or FAT here (needs root, losetup, mkfs.exfat and exfat-fuse, \
             mkfs.vfat and fusefat): nothing to test"
        );
        return;
    };
    let src = env.path("src");
    fs::create_dir_all(src.join("album")).unwrap();
    fs::create_dir_all(src.join("private")).unwrap();
    fs::write(src.join("album/IMG_0001.JPG"), noise(300 * 1024, 1)).unwrap();
    // Two photos whose names differ only in case: one file on a card.
    fs::write(src.join("album/IMG_0002.JPG"), noise(1000, 2)).unwrap();
    fs::write(src.join("album/img_0002.jpg"), noise(1000, 3)).unwrap();
    // A name cards refuse.
    fs::write(src.join("album/12:30 lunch.jpg"), noise(1000, 4)).unwrap();
    fs::write(src.join("private/notes.txt"), b"the safe's code").unwrap();
    fs::set_permissions(
        src.join("private/notes.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("album/IMG_0001.JPG", src.join("cover.jpg")).unwrap();
    env.init();
    env.vault().arg("backup").arg(&src).assert().success();
    let out = card.mnt.join("restored");
    let o = env.restore_cmd(&out).assert().code(1).get_output().clone();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stdout.contains("restored 3 files"), "{stdout}");
    assert!(
        stderr.contains("img_0002.jpg: not restored: \"IMG_0002.JPG\" is already in this folder")
            && stderr.contains("does not tell names apart by upper and lower case"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cover.jpg: cannot create symlink")
            && stderr.contains("may not store symlinks"),
        "{stderr}"
    );
    assert!(stderr.contains("does not keep permissions"), "{stderr}");
    assert!(
        stderr.contains("12:30 lunch.jpg: cannot move into place")
            && stderr.contains("FAT and exFAT do not allow"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 item(s) could not be restored"),
        "{stderr}"
    );
    if fs_kind == CardFs::Exfat {
        // Mounted by root without options, exFAT shows everything as 0777: notes.txt and its
        // folder were the private ones.
        assert!(stderr.contains("2 of them were private"), "{stderr}");
    }
    let left: Vec<_> = all_files(&out)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/.vault-"))
        .collect();
    assert!(left.is_empty(), "temporary or probe files left: {left:?}");
    let back = restored(&out, &src);
    for f in [
        "album/IMG_0001.JPG",
        "album/IMG_0002.JPG",
        "private/notes.txt",
    ] {
        assert_eq!(
            fs::read(back.join(f)).unwrap(),
            fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    // Run again: the files are recognised as there; only the link is reported again, and the
    // name that cannot be there.
    let again = env.restore_cmd(&out).assert().code(1).get_output().clone();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("3 item(s) were already there"),
        "{again:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stderr)
            .matches("does not tell names apart")
            .count(),
        1
    );
    // What the message says to do: the other one, alone, into another folder of the card.
    let other = card.mnt.join("other");
    env.restore_cmd(&other)
        .arg("--include")
        .arg(src.join("album/img_0002.jpg"))
        .assert()
        .success();
    assert_eq!(
        fs::read(restored(&other, &src).join("album/img_0002.jpg")).unwrap(),
        fs::read(src.join("album/img_0002.jpg")).unwrap()
    );
    // Where case matters, both are restored.
    let elsewhere = env.path("elsewhere");
    env.restore_cmd(&elsewhere).assert().success();
    assert_same_tree(&src, &restored(&elsewhere, &src));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr)
            .matches("cannot create symlink")
            .count(),
        1
    );
}

#[test]
fn restoring_onto_exfat_says_what_the_card_could_not_keep() {
    restore_onto_card(CardFs::Exfat);
}

#[test]
fn restoring_onto_fat_restores_every_file_although_chmod_fails() {
    restore_onto_card(CardFs::Fat32);
}
