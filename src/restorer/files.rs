//! Restoring one file: written to a temporary name, its whole-file hash verified, its metadata
//! set, then linked into place; a file already there with the snapshot's content is left alone.

use super::*;
use std::sync::atomic::AtomicUsize;

/// What a file worker reuses from file to file.
#[derive(Default)]
pub(super) struct WorkerBufs {
    pub(super) packs: PackReaders,
    pub(super) stage: Staging,
    pub(super) blob: Vec<u8>,
}

pub(super) fn restore_file(
    ctx: &Ctx<'_>,
    readers: &mut WorkerBufs,
    plan: Option<&PlanReader<'_>>,
    job: FileJob,
) {
    let read = AtomicUsize::new(0);
    restore_planned(ctx, readers, Source { plan, read: &read }, &job);
    // Planned reads this file did not make free the ranges only they needed.
    if let (Some(plan), NodeKind::File { blobs, .. }) = (plan, &job.node.kind) {
        let made = read.load(Ordering::Relaxed).min(blobs.len());
        plan.forgo(&blobs[made..]);
    }
}

/// Where a file's blobs come from: its batch's plan, or blob by blob; and how many of them
/// were read (the rest are given back to the plan).
#[derive(Clone, Copy)]
pub(super) struct Source<'p, 'r> {
    plan: Option<&'p PlanReader<'r>>,
    read: &'p AtomicUsize,
}

impl Source<'_, '_> {
    fn read(
        &self,
        ctx: &Ctx<'_>,
        id: &Id,
        readers: &mut PackReaders,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        self.read.fetch_add(1, Ordering::Relaxed);
        match self.plan {
            Some(p) => p.read_blob_into(id, readers, out),
            None => ctx.repo.read_blob_into(id, BlobType::Data, readers, out),
        }
        .map_err(|e| format!("not restored: {e}"))
    }
}

fn restore_planned(ctx: &Ctx<'_>, readers: &mut WorkerBufs, src: Source<'_, '_>, job: &FileJob) {
    if ctx.stopping() {
        return;
    }
    let name = OsStr::from_bytes(&job.name);
    if let Ok(md) = job.dir.symlink_metadata(name) {
        if !ctx.overwrite {
            if md.is_file() && md.len() == job.node.size && same_content(ctx, readers, job, name) {
                ctx.already_there(Some(job.node.size));
                return;
            }
            ctx.skipped(
                &job.shown,
                "exists and differs; use --overwrite to replace it",
            );
            return;
        }
        if md.is_dir() {
            ctx.error(&job.shown, "a folder is in the way");
            return;
        }
    }
    let tmp = format!(
        "{}{}{}",
        journal::TMP_PREFIX,
        Id::random().short(),
        journal::TMP_SUFFIX
    );
    match write_verified(ctx, readers, src, job, &tmp) {
        Ok(bytes) => {
            let mut s = ctx.summary.lock().unwrap_or_else(|p| p.into_inner());
            s.files += 1;
            s.bytes += bytes;
            if job.node.flags & crate::format::tree::FLAG_TORN != 0 {
                s.torn.push(job.shown.clone());
            }
            ctx.progress.files_done.fetch_add(1, Ordering::Relaxed);
        }
        Err(msg) => {
            let _ = job.dir.remove_file(&tmp);
            ctx.error(&job.shown, msg);
        }
    }
}

/// Whether the regular file `name` (never followed if it is a symlink) holds the content the
/// snapshot records for `job`, by its keyed whole-file hash: reading the local copy costs far less
/// than restoring it again.
pub(super) fn same_content(
    ctx: &Ctx<'_>,
    bufs: &mut WorkerBufs,
    job: &FileJob,
    name: &OsStr,
) -> bool {
    use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
    let NodeKind::File { hash, .. } = &job.node.kind else {
        return false;
    };
    let mut opts = OpenOptions::new();
    opts.read(true).follow(FollowSymlinks::No);
    let Ok(mut f) = job.dir.open_with(name, &opts) else {
        return false;
    };
    let mut hasher = [ctx.repo.keys().file_hash.hasher()];
    bufs.blob.resize(1 << 20, 0);
    crate::crypto::hash_reader(&mut f, &mut bufs.blob, &mut hasher)
        .is_ok_and(|total| total == job.node.size && hasher[0].finalize() == *hash)
}

/// Files of at least this many blobs may be read ahead.
pub(super) const READ_AHEAD_MIN: usize = 8;

/// Read, decrypt and verify a large file's blobs on a second thread, in order and a few blobs
/// ahead, while this one hashes and writes them: a large file alone (a long video) keeps two
/// cores and the disk busy instead of one at a time.
pub(super) fn read_ahead(
    ctx: &Ctx<'_>,
    src: Source<'_, '_>,
    blobs: &[Id],
    write: &mut impl FnMut(&[u8]) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    thread::scope(|s| {
        // Created inside the scope: on an early return they are dropped before the scope
        // waits for the reader, which then stops at its next send.
        let (tx, rx) = bounded::<std::result::Result<Vec<u8>, String>>(2);
        let (back_tx, back_rx) = bounded::<Vec<u8>>(4);
        s.spawn(move || {
            let mut readers = PackReaders::default();
            for id in blobs {
                let r = if crate::interrupt::requested() {
                    Err("interrupted".to_string())
                } else {
                    let mut buf = back_rx.try_recv().unwrap_or_default();
                    src.read(ctx, id, &mut readers, &mut buf).map(|()| buf)
                };
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    return;
                }
            }
        });
        for _ in blobs {
            let data = rx
                .recv()
                .map_err(|_| "not restored: the reading thread stopped".to_string())??;
            write(&data)?;
            let _ = back_tx.try_send(data);
        }
        Ok(())
    })
}

/// Write to a temporary name, verify the whole-file hash, set metadata, then move into place.
pub(super) fn write_verified(
    ctx: &Ctx<'_>,
    readers: &mut WorkerBufs,
    src: Source<'_, '_>,
    job: &FileJob,
    tmp: &str,
) -> std::result::Result<u64, String> {
    let NodeKind::File { blobs, hash } = &job.node.kind else {
        return Err("not a file".into());
    };
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    let f = job
        .dir
        .open_with(tmp, &opts)
        .map_err(|e| ctx.write_error("cannot create file", e))?;
    let mut f = FileWriter::new(f.into_std(), job.node.size, &mut readers.stage);
    let mut hasher = ctx.repo.keys().file_hash.hasher();
    let mut total = 0u64;
    let mut write = |data: &[u8]| -> std::result::Result<(), String> {
        hasher.update(data);
        total += data.len() as u64;
        f.write_all(data)
            .map_err(|e| ctx.write_error("write error", e))?;
        ctx.progress
            .bytes_done
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    };
    if src.plan.is_none() && blobs.len() >= READ_AHEAD_MIN && ctx.workers.some_idle() {
        read_ahead(ctx, src, blobs, &mut write)?;
    } else {
        for id in blobs {
            if crate::interrupt::requested() {
                return Err("interrupted".into());
            }
            src.read(ctx, id, &mut readers.packs, &mut readers.blob)?;
            write(&readers.blob)?;
        }
    }
    if total != job.node.size || hasher.finalize() != *hash {
        return Err("not restored: content does not match the hash recorded at backup".into());
    }
    let f = f.finish().map_err(|e| ctx.write_error("write error", e))?;
    // Before the mode: a change of owner may clear mode bits.
    ctx.set_owner(|| chown_fd(&f, job.node.uid, job.node.gid));
    // setuid, setgid and sticky bits are never restored.
    match f.set_permissions(std::fs::Permissions::from_mode(job.node.mode & 0o777)) {
        Err(e) if !unsupported_here(&e) => return Err(format!("cannot set permissions: {e}")),
        _ => {}
    }
    ctx.check_mode(job.node.mode, f.metadata().map(|m| m.permissions().mode()));
    f.set_modified(system_time(job.node.mtime, job.node.mtime_nanos))
        .map_err(|e| format!("cannot set modification time: {e}"))?;
    drop(f);
    let name = OsStr::from_bytes(&job.name);
    if ctx.overwrite {
        job.dir
            .rename(tmp, &job.dir, name)
            .map_err(|e| ctx.name_error("cannot move into place", e, &job.name))?;
    } else {
        // A hard link never replaces an existing name, even one created since we checked.
        match job.dir.hard_link(tmp, &job.dir, name) {
            Ok(()) => {
                let _ = job.dir.remove_file(tmp);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err("appeared during restore; left alone".into());
            }
            Err(_) => job
                .dir
                .rename(tmp, &job.dir, name)
                .map_err(|e| ctx.name_error("cannot move into place", e, &job.name))?,
        }
    }
    Ok(total)
}
