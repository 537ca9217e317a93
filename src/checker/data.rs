//! `vault check --read-data`: every pack downloaded and decrypted, its header and blob table
//! compared with the index, and every blob verified against its id.

use std::collections::HashSet;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::backend::FileType;
use crate::crypto;
use crate::error::{Error, Result};
use crate::format::index::PackInfo;
use crate::format::{self, BlobType};
use crate::ids::Id;
use crate::progress::Progress;
use crate::repo::{Index, Repository};

use super::CheckReport;

/// Read and verify every pack of `index` except those already known bad, several at once.
/// Returns the ids of the blobs found damaged.
pub(super) fn read_packs(
    repo: &Repository,
    (index, descs, bad_packs, no_copy): (
        &Index,
        &super::Descriptions<'_>,
        &HashSet<Id>,
        &HashSet<Id>,
    ),
    threads: usize,
    progress: &Progress,
    rep: &mut CheckReport,
) -> Result<Vec<Id>> {
    progress.total_bytes.store(
        index.packs.iter().map(|p| p.object_len).sum(),
        Ordering::Relaxed,
    );
    progress.total_files.store(rep.packs, Ordering::Relaxed);
    progress.scan_finished.store(true, Ordering::Relaxed);
    let todo: Vec<(usize, &PackInfo)> = index
        .packs
        .iter()
        .enumerate()
        .filter(|(_, p)| !bad_packs.contains(&p.id))
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let verified_bytes = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                if crate::interrupt::requested() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((pos, p)) = todo.get(i) else { return };
                let entries = index.pack_entries(*pos);
                let descs = descs.get(&p.id).map_or(&[][..], |d| d.as_slice());
                let twin = p.pack_type == BlobType::Tree && !no_copy.contains(&p.id);
                let r = if twin {
                    read_tree_pack(repo, p, &entries, descs)
                } else {
                    read_pack(repo, p, &entries, descs, FileType::Pack)
                };
                // Bytes read and verified: both copies of a tree pack.
                verified_bytes
                    .fetch_add(p.object_len * if twin { 2 } else { 1 }, Ordering::Relaxed);
                progress.files_done.fetch_add(1, Ordering::Relaxed);
                progress
                    .bytes_done
                    .fetch_add(p.object_len, Ordering::Relaxed);
                results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            });
        }
    });
    if crate::interrupt::requested() {
        return Err(Error::Interrupted);
    }
    rep.download.verified = verified_bytes.into_inner();
    let mut damaged_blobs = Vec::new();
    for (errs, damaged, verified) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        rep.errors.extend(errs);
        damaged_blobs.extend(damaged);
        rep.blobs_verified += verified;
        rep.packs_read += 1;
    }
    Ok(damaged_blobs)
}

/// Both copies of a tree pack (§2.2), each read whole: a blob is damaged only when it is
/// damaged in both, and damage to either copy is named with what repairs it.
fn read_tree_pack(
    repo: &Repository,
    p: &PackInfo,
    entries: &[format::BlobEntry],
    descs: &[(Option<Id>, &[format::BlobEntry], u64)],
) -> (Vec<String>, Vec<Id>, u64) {
    let (first_errors, first_damaged, verified) =
        read_pack(repo, p, entries, descs, FileType::Pack);
    let (second_errors, second_damaged, _) =
        read_pack(repo, p, entries, &[], FileType::TreePackCopy);
    let second_ok = second_errors.is_empty();
    let first_ok = first_errors.is_empty();
    let mut errors = Vec::new();
    let fix = "`vault repair metadata` rewrites it from the other";
    for e in first_errors {
        errors.push(if second_ok {
            format!("{e} (first copy; its second copy is intact and nothing is lost: {fix})")
        } else {
            e
        });
    }
    for e in second_errors {
        errors.push(format!(
            "{} (second copy, copies/trees/{}/{}{})",
            e,
            &p.id.to_hex()[..2],
            p.id.to_hex(),
            if first_ok {
                format!("; the first copy is intact: {fix}")
            } else {
                String::new()
            }
        ));
    }
    let second: HashSet<Id> = second_damaged.into_iter().collect();
    let damaged: Vec<Id> = first_damaged
        .into_iter()
        .filter(|b| second.contains(b))
        .collect();
    (errors, damaged, verified)
}

/// Download one pack (or a tree pack's second copy, `t`) and verify its header, table and
/// every blob. Returns the errors, the ids of the damaged blobs and the number verified.
/// A pack that fails is downloaded once more, and only what fails again is reported: bytes
/// damaged on the way (a plain-HTTP endpoint, a flaky link) are not damage at rest.
fn read_pack(
    repo: &Repository,
    p: &PackInfo,
    entries: &[format::BlobEntry],
    descs: &[(Option<Id>, &[format::BlobEntry], u64)],
    t: FileType,
) -> (Vec<String>, Vec<Id>, u64) {
    let first = read_pack_once(repo, p, entries, descs, t);
    if first.0.is_empty() {
        return first;
    }
    read_pack_once(repo, p, entries, descs, t)
}

fn read_pack_once(
    repo: &Repository,
    p: &PackInfo,
    entries: &[format::BlobEntry],
    descs: &[(Option<Id>, &[format::BlobEntry], u64)],
    t: FileType,
) -> (Vec<String>, Vec<Id>, u64) {
    let what = format!("pack {}", p.id.short());
    let mut errors = vec![];
    let all_damaged = |errors: &mut Vec<String>, e: Error| {
        errors.push(format!("{what}: {e}"));
        (entries.iter().map(|e| e.id).collect::<Vec<_>>(), 0)
    };
    let bytes = match repo.store().get(t, &p.id.to_hex()) {
        Ok(b) => b,
        Err(e) => {
            let (d, v) = all_damaged(&mut errors, e);
            return (errors, d, v);
        }
    };
    let open = || {
        repo.keys()
            .data_identity()?
            .open(Cursor::new(&bytes[..]), &what)
    };
    let mut s = match open() {
        Ok(s) => s,
        Err(e) => {
            let (d, v) = all_damaged(&mut errors, e);
            return (errors, d, v);
        }
    };
    // The table inside the pack must agree with every description of it.
    // A damaged header is reported, but costs only the blobs in the chunks that fail: restore
    // reads blobs by their chunks, each authenticated, each blob checked against its keyed id
    // (§12.2), so a blob in an intact chunk is restored, and counts as intact here.
    if let Err(e) = repo.check_pack_header(&mut s, &what) {
        errors.push(format!("{what}: header unreadable: {e}"));
        if let Ok(fresh) = open() {
            s = fresh;
        }
    }
    let table = crate::repo::read_table_from_end(&mut s, &what);
    let mut blobs_end = None;
    match table {
        Ok((len, t)) => {
            errors.extend(super::disagreements(&p.id, (len, &t), descs));
            // Where the padding lies: after the last blob, before the table.
            let table_start = len.saturating_sub(4 + 50 * t.len() as u64);
            let last = t
                .iter()
                .map(|e| e.offset.saturating_add(u64::from(e.stored_len)))
                .max()
                .unwrap_or(format::HEADER_LEN as u64);
            blobs_end = Some((last, table_start));
        }
        Err(e) => errors.push(format!("{what}: its table is unreadable: {e}")),
    }
    let mut damaged = vec![];
    let mut verified = 0;
    for e in entries {
        let r = (|| -> Result<()> {
            s.seek(SeekFrom::Start(e.offset))
                .map_err(|x| crypto::read_error(&what, x))?;
            let mut buf = vec![0u8; e.stored_len as usize];
            s.read_exact(&mut buf)
                .map_err(|x| crypto::read_error(&what, x))?;
            repo.decode_blob(e, buf)?;
            Ok(())
        })();
        match r {
            Ok(()) => verified += 1,
            Err(err) => {
                // After a failed chunk the stream's position is unknown: start a fresh reader.
                if let Ok(fresh) = open() {
                    s = fresh;
                }
                errors.push(format!(
                    "{what}: {} blob {}: {err}",
                    if e.blob_type == BlobType::Tree {
                        "tree"
                    } else {
                        "data"
                    },
                    e.id.short()
                ));
                damaged.push(e.id);
            }
        }
    }
    // The padding is part of the object too: every byte of it is decrypted (each STREAM chunk's
    // tag checked) and must be zero (§8), though no file depends on it.
    if let Some((from, to)) = blobs_end.filter(|(from, to)| from < to) {
        if let Err(e) = zeros(&mut s, from, to, &what) {
            errors.push(format!(
                "{what}: padding damaged (no file is affected): {e}"
            ));
        }
    }
    (errors, damaged, verified)
}

/// Read the plaintext in `[from, to)` and check it is all zeros.
fn zeros(s: &mut (impl Read + Seek), from: u64, to: u64, what: &str) -> Result<()> {
    s.seek(SeekFrom::Start(from))
        .map_err(|x| crypto::read_error(what, x))?;
    let mut left = to - from;
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.read_exact(&mut buf[..n])
            .map_err(|x| crypto::read_error(what, x))?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(Error::corrupt(what, "its padding is not zeros"));
        }
        left -= n as u64;
    }
    Ok(())
}
