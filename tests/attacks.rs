//! Someone stole a write-only profile (a phone's): they hold what it holds and write objects with
//! their own encoder straight into the store. The full device must refuse or flag all of it,
//! replace no original, create nothing the user did not ask for, and never report a backup that
//! stored less than its data (design.md §4.1, §11, §13.1; SECURITY.md "Write-only devices").

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::*;
use vault::backend::local::LocalBackend;
use vault::backend::{FileType, Store};
use vault::chunker::Chunker;
use vault::crypto::SecretKey;
use vault::format::index::PackDesc;
use vault::format::snapshot::Snapshot;
use vault::format::tree::{Node, NodeKind, Tree, FLAG_VAULT_ONLY};
use vault::format::{BlobEntry, BlobType, Compression, WrittenBy};
use vault::repo::Repository;
use vault::Id;

/// The owner makes a phone profile; the thief opens the repository with it.
fn steal_profile(env: &Env) -> Repository {
    let profile = env.phone_profile();
    let material = vault::repo::parse_profile(&fs::read_to_string(&profile).unwrap()).unwrap();
    let store = Store::new(Arc::new(LocalBackend::new(env.repo()))).unwrap();
    Repository::open_with_material(store, material).unwrap()
}

/// The thief's own encoder: a snapshot MAC-ed with `key`, whatever writer it claims.
fn put_snapshot(thief: &Repository, snap: &Snapshot, key: &SecretKey) -> Id {
    let plain = snap.encode(key);
    let id = thief.keys().snapshot_id.keyed_hash(&plain);
    let ct = thief.keys().recipient.encrypt(&plain).unwrap();
    thief
        .store()
        .put(FileType::Snapshot, &id.to_hex(), &ct)
        .unwrap();
    id
}

/// The thief's own encoder: an index object claiming `packs`, as its device or claiming to be a
/// full device.
fn put_index(thief: &Repository, packs: &[PackDesc], claim_full: bool) {
    let own = thief.keys().written_by();
    let key = thief.keys().mac_key(&own, true).unwrap();
    let by = if claim_full { WrittenBy::Full } else { own };
    let plain = vault::format::index::encode(&thief.repo_id(), &by, &key, packs);
    let ct = thief.keys().index_recipient.encrypt(&plain).unwrap();
    thief
        .store()
        .put(FileType::Index, &Id::random().to_hex(), &ct)
        .unwrap();
}

fn file_node(name: &[u8], blobs: Vec<Id>, hash: Id, size: u64, mode: u32, flags: u32) -> Node {
    Node {
        name: name.to_vec(),
        kind: NodeKind::File { blobs, hash },
        mode,
        mtime: 1_700_000_000,
        mtime_nanos: 0,
        size,
        uid: 0,
        gid: 0,
        flags,
    }
}

/// Trees for `leaf` nodes placed in the folder `dir` (absolute), written by the thief.
fn tree_at(thief: &Repository, dir: &Path, mut leaf: Vec<Node>) -> Id {
    leaf.sort_by(|a, b| a.name.cmp(&b.name));
    let write = |t: Tree| {
        vault::blobwriter::write_blobs(thief, vec![(BlobType::Tree, t.encode())]).unwrap()[0]
    };
    let mut id = write(Tree { nodes: leaf });
    let comps: Vec<Vec<u8>> = dir
        .components()
        .skip(1)
        .map(|c| c.as_os_str().as_encoded_bytes().to_vec())
        .collect();
    for name in comps.iter().rev() {
        let mut n = file_node(name, vec![], Id::default(), 0, 0o40755, 0);
        n.kind = NodeKind::Dir { subtree: id };
        id = write(Tree { nodes: vec![n] });
    }
    id
}

fn now() -> i64 {
    vault::repo::now().0
}

#[test]
fn forged_vault_only_records_and_future_snapshots_replace_nothing() {
    let env = Env::new();
    env.init();
    let pics = env.path("Pictures");
    fs::create_dir_all(&pics).unwrap();
    let a = noise(300_000, 1);
    fs::write(pics.join("a.jpg"), &a).unwrap();
    fs::write(pics.join("b.jpg"), noise(200_000, 2)).unwrap();
    let thief = steal_profile(&env);
    // The owner moves the album into the vault: the originals are gone.
    env.vault()
        .arg("move")
        .arg("--to")
        .arg(env.repo())
        .args(["--copies", "1"])
        .arg(&pics)
        .assert()
        .success();
    assert!(!pics.join("a.jpg").exists());

    // The thief's snapshot: a.jpg (their bytes) and a new executable, both marked vault-only,
    // dated ten days ahead so that it looks newest.
    let evil = b"#!/bin/sh\necho pwned\n".to_vec();
    let ids = vault::blobwriter::write_blobs(&thief, vec![(BlobType::Data, evil.clone())]).unwrap();
    let hash = thief.keys().file_hash.keyed_hash(&evil);
    let n = evil.len() as u64;
    let root = tree_at(
        &thief,
        &pics,
        vec![
            file_node(b"a.jpg", ids.clone(), hash, n, 0o100644, FLAG_VAULT_ONLY),
            file_node(b"run.sh", ids.clone(), hash, n, 0o100755, FLAG_VAULT_ONLY),
        ],
    );
    let forged = Snapshot {
        time: now() + 10 * 86_400,
        summary: vault::format::snapshot::Summary {
            files: 2,
            dirs: 1,
            bytes: 2 * n,
            vault_only: 2,
        },
        ..bare_snapshot(&thief, root, pics.as_os_str().as_encoded_bytes())
    };
    let device_key = thief
        .keys()
        .mac_key(&thief.keys().written_by(), false)
        .unwrap();
    let as_phone = put_snapshot(&thief, &forged, &device_key);
    // The same, claiming a full device wrote it: the MAC cannot be made without the master
    // secret.
    let as_full = put_snapshot(
        &thief,
        &Snapshot {
            writer: WrittenBy::Full,
            time: now() + 20 * 86_400,
            ..forged.clone()
        },
        &device_key,
    );

    // Listing: the phone's snapshot is marked, the forged full one unreadable.
    let out = env.vault().args(["snapshots", "--json"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreadable snapshot is an error"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&as_full.short()) && err.contains("MAC"),
        "{err}"
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phone = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == as_phone.to_hex())
        .unwrap();
    assert_eq!(phone["writer"], "write-only");
    assert_eq!(phone["future"], true);

    // Nothing of the thief's is listed or restored as vault-only.
    let ls = env.vault().args(["ls", "--vault-only"]).output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("a.jpg") && ls.contains("b.jpg"), "{ls}");
    assert!(!ls.contains("run.sh"), "{ls}");
    let out = env
        .vault()
        .args(["restore", "--vault-only"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        fs::read(pics.join("a.jpg")).unwrap(),
        a,
        "the original came back"
    );
    assert!(
        !pics.join("run.sh").exists(),
        "nothing of the thief's was created"
    );

    // `latest` is the owner's move, and says what it passed over.
    let target = env.path("out");
    let out = env
        .vault()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&as_phone.short()) && err.contains("write-only device"),
        "{err}"
    );
    assert!(
        err.contains(&as_full.short()) && err.contains("could not be read"),
        "{err}"
    );
    assert!(!restored(&target, &pics).join("run.sh").exists());

    // check names both forgeries.
    let out = env.vault().args(["check", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = rep["errors"].to_string();
    assert!(errors.contains(&as_full.short()), "{errors}");
    assert!(
        errors.contains(&as_phone.short()) && errors.contains("forged"),
        "{errors}"
    );
    assert_eq!(rep["write_only_snapshots"], 1);
}

#[test]
fn a_full_devices_snapshot_dated_in_the_future_is_flagged_and_not_latest() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x.jpg"), noise(50_000, 3)).unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    // A full device with its clock a year ahead.
    let store = Store::new(Arc::new(LocalBackend::new(env.repo()))).unwrap();
    let owner = Repository::open(store, &vault::crypto::Passphrase::new(PASS.into())).unwrap();
    let (snaps, _) = owner.snapshots().unwrap();
    let ahead = Snapshot {
        time: now() + 365 * 86_400,
        host: "wrong-clock".into(),
        ..snaps[0].1.clone()
    };
    let id = owner.write_snapshot(&ahead).unwrap();
    let out = env.vault().args(["snapshots"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(dated in the future)"), "{text}");
    let out = env.vault().args(["ls", "latest"]).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&id.short()) && err.contains("in the future"),
        "{err}"
    );
    let out = env.vault().args(["check", "--json"]).output().unwrap();
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rep["notes"].to_string().contains(&id.short()), "{rep}");
}

#[test]
fn poisoned_index_entries_do_not_make_a_backup_store_less() {
    let env = Env::new();
    env.init();
    let thief = steal_profile(&env);
    // The thief knows a photo the owner will back up (it was sent to them), chunks it with the
    // profile's keys and claims every chunk is stored, in a pack that does not exist and, to
    // be thorough, as a full device.
    let photo = noise(3_000_000, 9);
    let cuts = Chunker::new(&thief.keys().chunker, thief.config()).cuts(&photo);
    let mut off = 0usize;
    let mut blobs = Vec::new();
    for c in &cuts {
        blobs.push(BlobEntry {
            id: thief.keys().blob_id(&photo[off..off + c]),
            blob_type: BlobType::Data,
            compression: Compression::None,
            offset: 45,
            stored_len: *c as u32,
            raw_len: *c as u32,
        });
        off += c;
    }
    let claim = PackDesc {
        id: Id::random(),
        pack_type: BlobType::Data,
        object_len: 4 << 20,
        payload_offset: 200,
        plain_len: 4 << 20,
        blobs,
    };
    put_index(&thief, std::slice::from_ref(&claim), false);
    put_index(&thief, std::slice::from_ref(&claim), true);

    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("sent.jpg"), &photo).unwrap();
    let v = env.backup_json(&src);
    assert!(
        v["bytes_added"].as_u64().unwrap() >= photo.len() as u64,
        "the backup stored the whole photo: {v}"
    );
    // A later backup of the same file keeps trusting its own index, not the claim.
    fs::write(src.join("copy.jpg"), &photo).unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    // Restored byte for byte on a fresh computer (no local index).
    let fresh = Env::new();
    let target = fresh.path("out");
    env.vault()
        .env("HOME", fresh.path("home"))
        .args(["restore", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(
        fs::read(restored(&target, &src).join("sent.jpg")).unwrap(),
        photo
    );
    // check reports the claims: a missing pack, and an index object that claims to be a full
    // device's without its MAC.
    let out = env.vault().args(["check", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = rep["errors"].to_string();
    assert!(
        errors.contains(&claim.id.short()) && errors.contains("missing"),
        "{errors}"
    );
    assert!(errors.contains("MAC"), "{errors}");
    assert_eq!(rep["damaged_files"].as_array().unwrap().len(), 0, "{rep}");
}

#[test]
fn re_pointed_index_entries_cost_a_read_not_a_file() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("p{i}.jpg")), noise(1_500_000, 20 + i)).unwrap();
    }
    env.vault().arg("backup").arg(&src).assert().success();
    let thief = steal_profile(&env);
    // The thief reads the index (the profile can) and describes the owner's packs again with
    // every blob pointed at another blob's bytes.
    let mut lies = Vec::new();
    for (name, _) in thief.store().list(FileType::Index).unwrap() {
        let (_, packs) = thief.read_index_object(&name).unwrap();
        for mut p in packs {
            let n = p.blobs.len();
            if n < 2 {
                continue;
            }
            // Consistent entries (they decode), each with another blob's place.
            let places: Vec<BlobEntry> = p.blobs.clone();
            for (k, b) in p.blobs.iter_mut().enumerate() {
                *b = BlobEntry {
                    id: b.id,
                    ..places[(k + 1) % n]
                };
            }
            lies.push(p);
        }
    }
    assert!(!lies.is_empty());
    put_index(&thief, &lies, false);

    // Restores on fresh computers read past the lies, whatever order the index objects come in.
    for _ in 0..3 {
        let fresh = Env::new();
        let target = fresh.path("out");
        env.vault()
            .env("HOME", fresh.path("home"))
            .args(["restore", "--target"])
            .arg(&target)
            .assert()
            .success();
        assert_same_tree(&src, &restored(&target, &src));
    }
    // check names the lie without --read-data, and --read-data blames no intact file.
    let out = env.vault().args(["check", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rep["errors"]
            .to_string()
            .contains("disagree with the pack's own table"),
        "{rep}"
    );
    let out = env
        .vault()
        .args(["check", "--read-data", "--json"])
        .output()
        .unwrap();
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["damaged_files"].as_array().unwrap().len(), 0, "{rep}");
}

/// What the storage sees of a small backup: backups of 1, 37 and 100 new small files give index
/// objects and tree packs of the same size (design.md §8, §9). Sizes compared are the age
/// payloads: the age header differs by up to a few hundred bytes from object to object by
/// itself (a random "grease" stanza), whatever the content.
#[test]
fn small_backups_give_index_and_tree_objects_of_one_size() {
    let mut seen: Vec<(usize, u64, u64)> = Vec::new();
    for n in [1usize, 37, 100] {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        for i in 0..n {
            fs::write(src.join(format!("IMG_{i:04}.JPG")), noise(2_000, i as u64)).unwrap();
        }
        env.vault().arg("backup").arg(&src).assert().success();
        let payload = |t: FileType, name: &str| {
            let rel = vault::backend::object_path(t, name);
            let ct = fs::read(env.repo().join(rel)).unwrap();
            ct.len() as u64 - vault::crypto::age_payload_offset(&ct).unwrap()
        };
        let store = Store::new(Arc::new(LocalBackend::new(env.repo()))).unwrap();
        let owner = Repository::open(store, &vault::crypto::Passphrase::new(PASS.into())).unwrap();
        let (index, _) = owner.full_index().unwrap();
        let names = owner.store().list(FileType::Index).unwrap();
        assert_eq!(names.len(), 1);
        let index_size = payload(FileType::Index, &names[0].0.to_hex());
        let trees: Vec<u64> = index
            .packs
            .iter()
            .filter(|p| p.pack_type == BlobType::Tree)
            .map(|p| payload(FileType::Pack, &p.id.to_hex()))
            .collect();
        assert_eq!(trees.len(), 1);
        eprintln!(
            "{n} files: index payload {index_size} B, tree pack payload {} B",
            trees[0]
        );
        seen.push((n, index_size, trees[0]));
    }
    assert!(seen.iter().all(|s| s.1 == seen[0].1), "{seen:?}");
    assert!(seen.iter().all(|s| s.2 == seen[0].2), "{seen:?}");
}

/// A file name cannot drive the terminal or fake lines of output; `--json` keeps it exactly.
#[test]
fn names_printed_for_humans_escape_control_characters() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let name = "evil\x1b[2J\rrestored 0 files\nfake\u{202e}gpj.exe";
    fs::write(src.join(name), b"x").unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    let out = env.vault().arg("ls").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b') && !text.contains('\r') && !text.contains('\u{202e}'));
    let line = text.lines().find(|l| l.contains("evil")).unwrap();
    assert!(
        line.contains("evil\\x1b[2J\\rrestored 0 files\\nfake\\u{202e}gpj.exe"),
        "{line}"
    );
    assert!(!text.lines().any(|l| l.starts_with("fake")), "{text}");
    let out = env.vault().args(["ls", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"].as_str().unwrap().ends_with(name)),
        "{v}"
    );
    // Errors that carry a name are escaped too.
    let missing = format!("{}/{name}-gone", src.display());
    let out = env
        .vault()
        .args(["ls", "latest", &missing])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains('\x1b') && err.contains("\\x1b"), "{err}");
}

/// An age plugin (for a hardware key) that vault starts gets neither the passphrase nor the
/// cloud keys in its environment.
#[test]
fn an_age_plugin_inherits_no_secret() {
    let env = Env::new();
    env.init();
    let bin = env.path("bin");
    fs::create_dir_all(&bin).unwrap();
    let plugin = bin.join("age-plugin-envdump");
    fs::write(&plugin, "#!/bin/sh\nenv > \"$ENVDUMP_OUT\"\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).unwrap();
    // A plugin identity (bech32, 32 zero bytes) for the plugin above.
    let id = env.path("id.txt");
    fs::write(
        &id,
        "AGE-PLUGIN-ENVDUMP-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQW8LEXH\n",
    )
    .unwrap();
    fs::set_permissions(&id, fs::Permissions::from_mode(0o600)).unwrap();
    let dump = env.path("env.txt");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = env
        .vault()
        .env("PATH", path)
        .env("ENVDUMP_OUT", &dump)
        .env("AWS_ACCESS_KEY_ID", "AKIDCANARY")
        .env("AWS_SECRET_ACCESS_KEY", "SECRETCANARY")
        .env("AWS_SESSION_TOKEN", "TOKENCANARY")
        .arg("--identity")
        .arg(&id)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the plugin unlocks nothing");
    let seen = fs::read_to_string(&dump).expect("vault ran the plugin");
    assert!(seen.contains("ENVDUMP_OUT="), "{seen}");
    for secret in [PASS, "SECRETCANARY", "TOKENCANARY", "AKIDCANARY"] {
        assert!(!seen.contains(secret), "the plugin saw {secret}");
    }
}

/// Extreme values in a snapshot's nodes (times at the ends of i64) restore without a panic:
/// content verified, what the system cannot represent clamped.
#[test]
fn extreme_node_values_do_not_crash_restore() {
    let env = Env::new();
    env.init();
    let thief = steal_profile(&env);
    let content = b"photo".to_vec();
    let ids =
        vault::blobwriter::write_blobs(&thief, vec![(BlobType::Data, content.clone())]).unwrap();
    let hash = thief.keys().file_hash.keyed_hash(&content);
    let mut nodes = Vec::new();
    for (i, (mtime, nanos)) in [(i64::MAX, 999_999_999u32), (i64::MIN, 0), (-1, 1)]
        .into_iter()
        .enumerate()
    {
        let mut n = file_node(
            format!("f{i}").as_bytes(),
            ids.clone(),
            hash,
            content.len() as u64,
            0o100644,
            0,
        );
        (n.mtime, n.mtime_nanos) = (mtime, nanos);
        n.uid = u32::MAX;
        n.gid = u32::MAX;
        nodes.push(n);
    }
    let root = tree_at(&thief, Path::new("/album"), nodes);
    let snap = bare_snapshot(&thief, root, b"/album");
    let id = thief.write_snapshot(&snap).unwrap();
    let target = env.path("out");
    let out = env
        .vault()
        .args(["restore", &id.to_hex(), "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(1) | Some(3)),
        "{out:?}"
    );
    for i in 0..3 {
        assert_eq!(
            fs::read(target.join(format!("album/f{i}"))).unwrap(),
            content
        );
    }
    // Nanoseconds out of range are refused where the tree is decoded.
    let mut bad = file_node(b"x", ids, hash, 5, 0o100644, 0);
    bad.mtime_nanos = 1_000_000_000;
    let enc = Tree { nodes: vec![bad] }.encode();
    assert!(Tree::decode(&enc).is_err());
}

/// The phone uploaded photos first; the laptop backs up the same photos. It reuses the phone's
/// chunks only after reading each back and verifying it, and records them as its own: a later
/// backup and a check trust them without reading them again (design.md §13.1).
#[test]
fn a_phones_chunks_are_verified_before_a_full_device_reuses_them() {
    let env = Env::new();
    env.init();
    let _ = steal_profile(&env); // here simply the phone's profile, doing its job
    let photos: Vec<Vec<u8>> = (0..3).map(|i| noise(1_200_000, 40 + i)).collect();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for (i, p) in photos.iter().enumerate() {
        fs::write(src.join(format!("{i}.jpg")), p).unwrap();
    }
    // The phone backs them up first.
    let phone = Env::new();
    phone
        .vault()
        .env_remove("VAULT_PASSWORD")
        .env("VAULT_REPO", env.repo())
        .env("VAULT_PROFILE_FILE", env.path("phone.profile"))
        .arg("backup")
        .arg(&src)
        .assert()
        .success();
    let size = |env: &Env| {
        all_files(&env.repo().join("data"))
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum::<u64>()
    };
    let before = size(&env);
    let v = env.backup_json(&src);
    assert!(v["blobs_verified"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(v["bytes_added"], 0, "nothing stored again: {v}");
    assert!(
        size(&env) - before < 1_000_000,
        "the photos were not stored again: {v}"
    );
    // The second run and check take them as the laptop's own now.
    fs::write(src.join("3.jpg"), &photos[0]).unwrap();
    let out = env
        .vault()
        .args(["backup", "--json"])
        .arg(&src)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["blobs_verified"], 0, "{v}");
    env.vault().arg("check").assert().success();
    env.assert_restores_fresh(&src);
}

#[test]
fn a_flood_of_forged_locations_costs_a_few_reads_per_chunk() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("old.jpg"), noise(2_000_000, 60)).unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    let thief = steal_profile(&env);
    // The thief knows the next photo and claims each of its chunks at 40 places, inside the
    // owner's real packs and in packs that do not exist: every claim the owner tries costs a
    // read before it fails.
    let real: Vec<PackDesc> = thief
        .store()
        .list(FileType::Index)
        .unwrap()
        .iter()
        .flat_map(|(name, _)| thief.read_index_object(name).unwrap().1)
        .filter(|p| p.pack_type == BlobType::Data)
        .collect();
    let claim = |photo: &[u8]| {
        let cuts = Chunker::new(&thief.keys().chunker, thief.config()).cuts(photo);
        let mut claims = Vec::new();
        for k in 0..40usize {
            // Other packs than the owner's too: a location is one per blob and pack.
            let mut p = real[k % real.len()].clone();
            if k >= real.len() {
                p.id = Id::random();
            }
            let mut off = 0usize;
            p.blobs = cuts
                .iter()
                .map(|c| {
                    let b = BlobEntry {
                        id: thief.keys().blob_id(&photo[off..off + c]),
                        blob_type: BlobType::Data,
                        compression: Compression::None,
                        offset: (k * 1000) as u64,
                        stored_len: 1000,
                        raw_len: 1000,
                    };
                    off += c;
                    b
                })
                .collect();
            claims.push(p);
        }
        for c in claims.chunks(4) {
            put_index(&thief, c, false);
        }
        cuts
    };
    let photo = noise(3_000_000, 61);
    let cuts = claim(&photo);
    fs::write(src.join("sent.jpg"), &photo).unwrap();
    let v = env.backup_json(&src);
    assert!(
        v["bytes_added"].as_u64().unwrap() >= photo.len() as u64,
        "the photo was stored: {v}"
    );
    // At most MAX_UNVOUCHED_LOCATIONS reads a chunk, each refused, and the user is told.
    assert_eq!(vault::cache::MAX_UNVOUCHED_LOCATIONS, 3);
    let refused = v["locations_refused"].as_u64().unwrap();
    assert!(
        refused > 0 && refused <= cuts.len() as u64 * 3,
        "{refused} reads refused for {} chunks: {v}",
        cuts.len()
    );
    // Told in words too.
    claim(&noise(2_000_000, 62));
    fs::write(src.join("sent2.jpg"), noise(2_000_000, 62)).unwrap();
    let out = env.vault().arg("backup").arg(&src).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not match what their packs hold"), "{err}");
    // Restored byte for byte on a fresh computer, past the claims.
    env.assert_restores_fresh(&src);
}

#[test]
fn repair_keeps_who_vouched_for_each_entry_and_drops_forgeries() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("own.jpg"), noise(1_500_000, 70)).unwrap();
    fs::write(src.join("own2.jpg"), noise(1_500_000, 71)).unwrap();
    env.vault().arg("backup").arg(&src).assert().success();
    let thief = steal_profile(&env);
    // The phone backs up a photo of its own, honestly.
    let phone_src = env.path("phone");
    fs::create_dir_all(&phone_src).unwrap();
    let sent = noise(1_200_000, 72);
    fs::write(phone_src.join("sent.jpg"), &sent).unwrap();
    Env::new()
        .vault()
        .env_remove("VAULT_PASSWORD")
        .env("VAULT_REPO", env.repo())
        .env("VAULT_PROFILE_FILE", env.path("phone.profile"))
        .arg("backup")
        .arg(&phone_src)
        .assert()
        .success();
    // The thief re-points the owner's entries, and claims a pack that does not exist.
    let mut lies = Vec::new();
    for (name, _) in thief.store().list(FileType::Index).unwrap() {
        let (by, packs) = thief.read_index_object(&name).unwrap();
        if !by.is_full() {
            continue;
        }
        for mut p in packs.into_iter().filter(|p| p.blobs.len() >= 2) {
            p.blobs.rotate_left(1);
            let places = p.blobs.clone();
            p.blobs.rotate_right(1);
            for (b, place) in p.blobs.iter_mut().zip(places) {
                *b = BlobEntry { id: b.id, ..place };
            }
            lies.push(p);
        }
    }
    assert!(!lies.is_empty());
    let mut ghost = lies[0].clone();
    ghost.id = Id::random();
    lies.push(ghost);
    put_index(&thief, &lies, false);

    let out = env
        .vault()
        .args(["repair", "index", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a missing pack is an error");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["missing_packs"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["entries_dropped"].as_u64().unwrap() > 0, "{v}");
    assert!(v["blobs_device"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["blobs_verified"], 0, "nothing needed reading: {v}");
    assert_eq!(v["blobs_refused"], 0, "{v}");
    env.vault()
        .args(["check", "--read-data"])
        .assert()
        .success();
    env.assert_restores_fresh(&src);
    // The phone's entries are still the phone's word: the owner verifies before reusing them.
    fs::write(src.join("sent.jpg"), &sent).unwrap();
    let v = env.backup_json(&src);
    assert!(v["blobs_verified"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["locations_refused"], 0, "{v}");
}

/// A few KB of trees that name one folder over and over expand to a million entries: `check`
/// reports the snapshot, and `ls` and `restore` stop after the entries it declares.
#[test]
fn trees_that_name_one_folder_over_and_over_are_bounded() {
    let env = Env::new();
    env.init();
    let thief = steal_profile(&env);
    let content = b"x".to_vec();
    let ids =
        vault::blobwriter::write_blobs(&thief, vec![(BlobType::Data, content.clone())]).unwrap();
    let hash = thief.keys().file_hash.keyed_hash(&content);
    let write = |t: Tree| {
        vault::blobwriter::write_blobs(&thief, vec![(BlobType::Tree, t.encode())]).unwrap()[0]
    };
    let dir = |name: String, subtree: Id| {
        let mut n = file_node(name.as_bytes(), vec![], Id::default(), 0, 0o40755, 0);
        n.kind = NodeKind::Dir { subtree };
        n
    };
    let leaf = write(Tree {
        nodes: (0..100)
            .map(|i| {
                file_node(
                    format!("f{i:03}").as_bytes(),
                    ids.clone(),
                    hash,
                    1,
                    0o100644,
                    0,
                )
            })
            .collect(),
    });
    let mid = write(Tree {
        nodes: (0..100).map(|i| dir(format!("d{i:03}"), leaf)).collect(),
    });
    let top = write(Tree {
        nodes: (0..100).map(|i| dir(format!("d{i:03}"), mid)).collect(),
    });
    let root = write(Tree {
        nodes: vec![dir("bomb".into(), top)],
    });
    let snap = Snapshot {
        summary: vault::format::snapshot::Summary {
            files: 30,
            dirs: 30,
            bytes: 30,
            vault_only: 0,
        },
        ..bare_snapshot(&thief, root, b"/bomb")
    };
    let id = thief.write_snapshot(&snap).unwrap().to_hex();

    let out = env.vault().args(["check", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = rep["errors"].to_string();
    assert!(
        errors.contains("1010101 entries, more than the 60 it declares"),
        "{errors}"
    );

    let out = env.vault().args(["ls", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.split(|b| *b == b'\n').count() <= 61);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("more than the 60 entries it declares"),
        "{out:?}"
    );

    let target = env.path("out");
    let out = env
        .vault()
        .args(["restore", &id, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let made = walkdir(&target);
    assert!(made <= 61, "{made} entries created");
}

fn walkdir(p: &Path) -> usize {
    fs::read_dir(p).map_or(0, |rd| {
        rd.map(|e| {
            let e = e.unwrap();
            1 + if e.file_type().unwrap().is_dir() {
                walkdir(&e.path())
            } else {
                0
            }
        })
        .sum()
    })
}

/// A thief with delete rights removes the owner's snapshots and leaves forget records and condemn
/// markers MAC-ed with the keys a profile holds: the owner's computers still report the snapshots
/// missing and `check` names the forgeries; prune deletes nothing they name; and a policy run
/// over the thief's flood of newer snapshots keeps every one of the owner's (design.md §11.1,
/// §13.2).
#[test]
fn forged_forget_records_and_markers_are_refused() {
    use vault::format::records::{CondemnMarker, ForgetRecord};
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    for _ in 0..3 {
        fs::write(src.join("day.txt"), now().to_string()).unwrap();
        env.vault().arg("backup").arg(&src).assert().success();
    }
    let thief = steal_profile(&env);
    let own = thief.keys().written_by();
    let key = thief.keys().mac_key(&own, false).unwrap();
    let snaps: Vec<Id> = thief
        .store()
        .list(FileType::Snapshot)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let victim = snaps[0];
    let rec = ForgetRecord {
        time: now(),
        host: "owner".into(),
        snapshots: vec![victim],
    };
    let ct = thief
        .keys()
        .recipient
        .encrypt(&rec.encode(&thief.repo_id(), &key))
        .unwrap();
    thief
        .store()
        .put(FileType::Forgotten, &Id::random().to_hex(), &ct)
        .unwrap();
    // Both copies (design.md §2.2): a second copy alone is put back by `vault repair metadata`.
    for t in [FileType::Snapshot, FileType::SnapshotCopy] {
        thief.store().delete(t, &victim.to_hex()).unwrap();
    }
    // A marker condemning every pack.
    let packs: Vec<Id> = thief
        .store()
        .list(FileType::Pack)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let m = CondemnMarker {
        time: now() - 10 * 86_400,
        packs,
    };
    let ct = thief
        .keys()
        .index_recipient
        .encrypt(&m.encode(&thief.repo_id(), &key))
        .unwrap();
    thief
        .store()
        .put(FileType::Condemned, &Id::random().to_hex(), &ct)
        .unwrap();

    let out = env.vault().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("forget record"), "{err}");
    assert!(err.contains("condemn marker"), "{err}");
    assert!(
        err.contains(&format!("snapshot {} is missing", victim.short())),
        "{err}"
    );
    // Prune will not run while a snapshot is missing without a record: its data may be all
    // that is left of it.
    let packs_before = thief.store().list(FileType::Pack).unwrap().len();
    let out = env
        .vault()
        .args(["prune", "--grace", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing"),
        "{out:?}"
    );
    // Once the owner has looked and acknowledged it, prune runs; the forged marker condemns
    // nothing (it is removed), and what the victim alone held goes only through a marker of
    // this prune's own, a grace period later.
    env.vault()
        .args(["snapshots", "--acknowledge-missing"])
        .assert()
        .success();
    let out = env
        .vault()
        .args(["--json", "prune", "--grace", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deleted_packs"], 0, "{v}");
    assert_eq!(v["bad_markers"].as_array().unwrap().len(), 1, "{v}");
    assert!(thief.store().list(FileType::Pack).unwrap().len() >= packs_before);
    // What is left restores (the victim may have been the newest: `latest` is the one before).
    env.restore_into("out");

    // Forged newer snapshots from the phone's device, claiming the owner's host and paths, do
    // not push the owner's out: the policy groups each writer apart.
    let host = gethostname_of(&env);
    let root = tree_at(&thief, &src, vec![]);
    for k in 0..5 {
        let snap = Snapshot {
            time: now() + k,
            host: host.clone(),
            ..bare_snapshot(&thief, root, src.as_os_str().as_encoded_bytes())
        };
        put_snapshot(&thief, &snap, &key);
    }
    let out = env
        .vault()
        .args(["--json", "forget", "--dry-run", "--keep-last", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    for g in groups {
        let snaps = g["snapshots"].as_array().unwrap();
        let kept = snaps.iter().filter(|s| s["keep"] == true).count();
        if g["group"].as_str().unwrap().contains("written by full") {
            assert_eq!((snaps.len(), kept), (2, 2), "{g}");
        } else {
            assert_eq!((snaps.len(), kept), (5, 2), "{g}");
        }
    }
}

/// The host name the owner's backups recorded.
fn gethostname_of(env: &Env) -> String {
    let out = env.vault().args(["--json", "snapshots"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["host"].as_str().unwrap().to_string()
}
