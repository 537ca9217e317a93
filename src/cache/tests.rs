//! Tests of the local index: round trips, persistence, privacy of the files, damaged and
//! tampered databases, folders stored in parts, and the SQLite settings.

use super::*;
use crate::format::Compression;

fn keys() -> Keys {
    Keys::generate()
}

fn pack(n: u8, blobs: &[Id]) -> PackDesc {
    PackDesc {
        id: Id([n; 32]),
        pack_type: BlobType::Data,
        object_len: 1000,
        payload_offset: 200,
        plain_len: 800,
        blobs: blobs
            .iter()
            .enumerate()
            .map(|(i, id)| BlobEntry {
                id: *id,
                blob_type: BlobType::Data,
                compression: Compression::None,
                offset: 10 * i as u64,
                stored_len: 10,
                raw_len: 10,
            })
            .collect(),
    }
}

use rows::tests::entry;

/// A folder row holding `files` (written as a backup writes it).
fn row_of(k: &Keys, key: Id, files: &[(&[u8], FileEntry)]) -> (Vec<FolderWrite>, Vec<PartWrite>) {
    let mut w = RowWriter::new(key, &k.name);
    for (n, e) in files {
        w.push(n, e);
    }
    let (row, parts) = w.finish();
    (
        vec![FolderWrite {
            key,
            row,
            provisional: false,
        }],
        parts.into_iter().map(|(p, b)| (key, p, b)).collect(),
    )
}

#[test]
fn blobs_packs_and_files_round_trip_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let place = CachePlace::Dir(dir.path().to_path_buf());
    {
        let c = LocalCache::open(&place, &k).unwrap();
        assert!(c.fallback.is_none());
        c.add_packs(Some("idx1"), true, &[pack(1, &[Id([2; 32]), Id([3; 32])])])
            .unwrap();
        let (rows, parts) = row_of(&k, Id([4; 32]), &[(b"a.jpg", entry())]);
        c.put_folders(&rows, &parts, &[], 77).unwrap();
        c.put_snapshot(&Id([5; 32]), b"snapshot bytes").unwrap();
    }
    let c = LocalCache::open(&place, &k).unwrap();
    assert_eq!(c.index_objects().unwrap().len(), 1);
    assert!(c.has_blob(&Id([3; 32])).unwrap());
    assert!(!c.has_blob(&Id([6; 32])).unwrap());
    assert!(c.has_blobs(&[Id([2; 32]), Id([3; 32])]).unwrap());
    assert!(!c.has_blobs(&[Id([2; 32]), Id([6; 32])]).unwrap());
    let (p, e) = c.blob(&Id([3; 32])).unwrap().remove(0);
    assert_eq!(p.id, Id([1; 32]));
    assert_eq!(
        (p.object_len, p.payload_offset, p.plain_len),
        (1000, 200, 800)
    );
    assert_eq!((e.offset, e.stored_len), (10, 10));
    let row = c.folder(&Id([4; 32])).unwrap().unwrap();
    assert!(!row.confirmed);
    let mut cur = RowCursor::new(Id([4; 32]), std::sync::Arc::new(row));
    assert_eq!(cur.get(&c, b"a.jpg").unwrap(), Some(&entry()));
    assert_eq!(cur.get(&c, b"b.jpg").unwrap(), None);
    c.confirm_run(77).unwrap();
    assert!(c.folder(&Id([4; 32])).unwrap().unwrap().confirmed);
    assert_eq!(
        &c.snapshot(&Id([5; 32])).unwrap().unwrap()[..],
        b"snapshot bytes"
    );
    c.clear_index().unwrap();
    assert!(!c.has_blob(&Id([3; 32])).unwrap());
    assert!(!c.folder(&Id([4; 32])).unwrap().unwrap().confirmed);
    assert!(c.index_objects().unwrap().is_empty());
}

#[test]
fn another_key_starts_empty_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let place = CachePlace::Dir(dir.path().to_path_buf());
    let k = keys();
    let c = LocalCache::open(&place, &k).unwrap();
    c.add_packs(Some("a"), true, &[pack(1, &[Id([2; 32])])])
        .unwrap();
    drop(c);
    let sub = dir.path().join(k.repo_id.to_hex());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sub), 0o700);
    for f in std::fs::read_dir(&sub).unwrap() {
        assert_eq!(mode(&f.unwrap().path()), 0o600);
    }
    // Same repository id, different keys (cannot happen in practice): nothing is trusted.
    let mut m = k.material();
    m.secret = crate::crypto::SecretKey::generate();
    let k2 = Keys::from_material(m);
    let c2 = LocalCache::open(&place, &k2).unwrap();
    assert!(!c2.has_blob(&Id([2; 32])).unwrap());
}

#[test]
fn a_damaged_database_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let place = CachePlace::Dir(dir.path().to_path_buf());
    let k = keys();
    let sub = dir.path().join(k.repo_id.to_hex());
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("index.sqlite"), vec![0x55u8; 8192]).unwrap();
    let c = LocalCache::open(&place, &k).unwrap();
    assert!(c.fallback.is_none(), "{:?}", c.fallback);
    c.add_packs(Some("a"), true, &[pack(1, &[Id([2; 32])])])
        .unwrap();
    assert!(c.has_blob(&Id([2; 32])).unwrap());
}

#[test]
fn an_unusable_dir_falls_back_to_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let c = LocalCache::open(&CachePlace::Dir(file), &keys()).unwrap();
    assert!(c.fallback.is_some());
    c.add_packs(Some("a"), true, &[pack(1, &[Id([2; 32])])])
        .unwrap();
    assert!(c.has_blob(&Id([2; 32])).unwrap());
}

#[test]
fn tampered_rows_are_not_trusted() {
    let k = keys();
    let c = LocalCache::open(&CachePlace::Memory, &k).unwrap();
    let (rows, parts) = row_of(&k, Id([4; 32]), &[(b"a", entry())]);
    c.put_folders(&rows, &parts, &[], 1).unwrap();
    // Move the row to another key: it must not open there.
    c.lock()
        .execute("UPDATE folders SET key = ?1", [&[1u8; 32][..]])
        .unwrap();
    assert!(c.folder(&Id([1; 32])).unwrap().is_none());
}

/// A folder too large for one row is cut into parts; reading it back finds every entry,
/// and a changed entry rewrites one part and leaves the others in place.
#[test]
fn large_folders_are_stored_in_parts() {
    let k = keys();
    let c = LocalCache::open(&CachePlace::Memory, &k).unwrap();
    let key = Id([4; 32]);
    // More than 4 MiB of entries: at least two parts whatever the key.
    let names: Vec<Vec<u8>> = (0..30_000)
        .map(|i| format!("IMG_{i:06}.JPG").into_bytes())
        .collect();
    let files: Vec<(&[u8], FileEntry)> = names.iter().map(|n| (n.as_slice(), entry())).collect();
    let (rows, parts) = row_of(&k, key, &files);
    assert!(parts.len() >= 2, "{} parts", parts.len());
    c.put_folders(&rows, &parts, &[], 1).unwrap();
    let row = std::sync::Arc::new(c.folder(&key).unwrap().unwrap());
    assert_eq!(row.entries(), 30_000);
    let mut cur = RowCursor::new(key, row.clone());
    for n in names.iter().step_by(7) {
        assert_eq!(cur.get(&c, n).unwrap(), Some(&entry()));
        assert_eq!(cur.get(&c, &[n.as_slice(), b"x"].concat()).unwrap(), None);
    }
    // Asked out of order: still right.
    assert_eq!(cur.get(&c, &names[3]).unwrap(), Some(&entry()));
    let mut all = RowCursor::new(key, row.clone());
    let mut n = 0;
    while let Some((name, _)) = all.next_entry(&c).unwrap() {
        assert_eq!(name, names[n]);
        n += 1;
    }
    assert_eq!(n, 30_000);

    let mut changed = entry();
    changed.stat.size = 99;
    let mut files2 = files.clone();
    files2[10_000].1 = changed.clone();
    let (rows2, parts2) = row_of(&k, key, &files2);
    let old = row.part_ids();
    let new: Vec<_> = parts2.iter().filter(|p| !old.contains(&p.1)).collect();
    assert_eq!(new.len(), 1, "one part rewritten");
    c.put_folders(&rows2, &parts2, &[], 2).unwrap();
    let count: i64 = c
        .lock()
        .query_row("SELECT count(*) FROM folder_parts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count as usize, parts2.len(), "the replaced part is gone");
    let mut cur = RowCursor::new(key, std::sync::Arc::new(c.folder(&key).unwrap().unwrap()));
    assert_eq!(cur.get(&c, &names[10_000]).unwrap(), Some(&changed));
    // A part that disappeared (another process rewrote the folder) reads as no entries.
    c.lock().execute("DELETE FROM folder_parts", []).unwrap();
    let mut cur = RowCursor::new(key, std::sync::Arc::new(c.folder(&key).unwrap().unwrap()));
    assert_eq!(cur.get(&c, &names[5]).unwrap(), None);
}

// Regression: these settings were once silently lost in an edit.
#[test]
fn page_cache_and_mmap_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCache::open(
        &CachePlace::Dir(dir.path().into()),
        &crate::keys::Keys::generate(),
    )
    .unwrap();
    let v: i64 = c
        .lock()
        .query_row("PRAGMA mmap_size", [], |r| r.get(0))
        .unwrap();
    let cs: i64 = c
        .lock()
        .query_row("PRAGMA cache_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!((v, cs), (256 << 20, -65536));
}

#[test]
fn only_full_devices_entries_count_for_deduplication_and_every_location_is_kept() {
    let k = keys();
    let c = LocalCache::open(&CachePlace::Memory, &k).unwrap();
    let phone = crate::format::WrittenBy::Device(crate::format::DeviceId([7; 16]));
    // A write-only device's index object claims blob 2 in pack 1: readable, not vouched for.
    c.add_packs(Some("w"), phone.is_full(), &[pack(1, &[Id([2; 32])])])
        .unwrap();
    assert!(!c.has_blob(&Id([2; 32])).unwrap());
    assert_eq!(c.blob(&Id([2; 32])).unwrap().len(), 1);
    // A full device stores it again in pack 9: both locations kept, the full device's first.
    c.add_packs(Some("f"), true, &[pack(9, &[Id([2; 32])])])
        .unwrap();
    assert!(c.has_blob(&Id([2; 32])).unwrap());
    let locs = c.blob(&Id([2; 32])).unwrap();
    assert_eq!(locs.len(), 2);
    assert_eq!(locs[0].0.id, Id([9; 32]));
    assert_eq!(locs[1].0.id, Id([1; 32]));
    // The same location vouched for later by a full device becomes trusted.
    c.add_packs(Some("g"), true, &[pack(1, &[Id([2; 32])])])
        .unwrap();
    assert_eq!(c.blob(&Id([2; 32])).unwrap().len(), 2);
    assert_eq!(c.blob_count().unwrap(), 1);
    // A write-only device trusts every entry: it can check nothing it reads.
    let wo = Keys::from_material(k.write_only_material().unwrap());
    let c = LocalCache::open(&CachePlace::Memory, &wo).unwrap();
    c.add_packs(Some("w"), phone.is_full(), &[pack(1, &[Id([2; 32])])])
        .unwrap();
    assert!(c.has_blob(&Id([2; 32])).unwrap());
}

#[test]
fn a_reader_tries_every_vouched_location_but_only_a_few_unvouched_ones() {
    let k = keys();
    let c = LocalCache::open(&CachePlace::Memory, &k).unwrap();
    // A stolen profile floods the index with locations for one blob.
    for n in 10..60 {
        c.add_packs(Some(&format!("w{n}")), false, &[pack(n, &[Id([2; 32])])])
            .unwrap();
    }
    let locs = c.blob(&Id([2; 32])).unwrap();
    assert_eq!(locs.len(), crate::cache::MAX_UNVOUCHED_LOCATIONS as usize);
    // The first merged are kept: forgeries written after an honest entry cannot push it out.
    assert_eq!(locs[0].0.id, Id([10; 32]));
    c.add_packs(Some("f1"), true, &[pack(1, &[Id([2; 32])])])
        .unwrap();
    c.add_packs(Some("f2"), true, &[pack(2, &[Id([2; 32])])])
        .unwrap();
    let locs = c.blob(&Id([2; 32])).unwrap();
    let ids: Vec<u8> = locs.iter().map(|(p, _)| p.id.0[0]).collect();
    assert_eq!(ids, [1, 2, 10, 11, 12]);
}

#[test]
fn a_write_only_profile_cannot_open_a_full_devices_local_index() {
    let dir = tempfile::tempdir().unwrap();
    let place = CachePlace::Dir(dir.path().to_path_buf());
    let k = keys();
    let c = LocalCache::open(&place, &k).unwrap();
    c.add_packs(Some("a"), true, &[pack(1, &[Id([2; 32])])])
        .unwrap();
    let (rows, parts) = row_of(&k, Id([4; 32]), &[(b"CANARY.jpg", entry())]);
    c.put_folders(&rows, &parts, &[], 77).unwrap();
    drop(c);
    // The thief copies the full device's database where its own profile would look for it.
    let wo = Keys::from_material(k.write_only_material().unwrap());
    assert_ne!(wo.cache.expose(), k.cache.expose());
    let full_dir = dir.path().join(k.repo_id.to_hex());
    let stolen = dir
        .path()
        .join(format!("{}-write-only", k.repo_id.to_hex()));
    std::fs::create_dir_all(&stolen).unwrap();
    std::fs::copy(full_dir.join("index.sqlite"), stolen.join("index.sqlite")).unwrap();
    let c = LocalCache::open(&place, &wo).unwrap();
    assert!(!c.has_blob(&Id([2; 32])).unwrap());
    assert!(c.folder(&Id([4; 32])).unwrap().is_none());
    // And its rows do not open under the profile's key.
    let row = {
        let conn = rusqlite::Connection::open(full_dir.join("index.sqlite")).unwrap();
        conn.query_row("SELECT loc FROM blobs", [], |r| r.get::<_, Vec<u8>>(0))
            .unwrap()
    };
    assert!(crate::crypto::RowCipher::new(&wo.cache)
        .open(&[2; 32], &row)
        .is_none());
    assert!(crate::crypto::RowCipher::new(&k.cache)
        .open(&[2; 32], &row)
        .is_some());
}
