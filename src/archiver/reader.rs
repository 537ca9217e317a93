//! File workers: read a file, cut it into chunks, and hand each new chunk to the blob writer.

use super::*;

pub(super) fn file_worker(shared: &Shared, jobs: Receiver<FileJob>, full: Sender<FinishedPack>) {
    let mut comp = match Compressor::new(shared.zstd_level) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(e);
            return;
        }
    };
    let mut buf = vec![0u8; shared.chunker.max_size() * 2];
    for job in jobs {
        let res = if shared.aborted() {
            Err("backup aborted".to_string())
        } else {
            shared
                .workers
                .busy(|| read_file(shared, &job, &mut buf, &mut comp, &full))
        };
        // Counted as it is read, not when its folder is assembled (which waits for the
        // folder's order): "0/196 files" no longer stands until the end.
        shared
            .progress
            .files_done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = job.reply.send(res);
    }
}

/// Times a file that changed while it was read is read again before it is stored as read and
/// marked possibly torn (§10, `FLAG_TORN`).
const READ_ATTEMPTS: usize = 3;

pub(super) fn read_file(
    shared: &Shared,
    job: &FileJob,
    buf: &mut [u8],
    comp: &mut Compressor,
    full: &Sender<FinishedPack>,
) -> FileResult {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let done = read_once(shared, job, buf, comp, full)?;
        // Stable: what was read is one version of the file. A file replaced by a rename since
        // the folder was listed is simply the new version (its metadata is taken from the open
        // file), not a torn one.
        if !done.changed || attempt >= READ_ATTEMPTS {
            return Ok(done);
        }
    }
}

/// Whether the open file changed while it was read: its size, mtime or inode, or its ctime
/// without a change of link count (an atomic save renames a new file over this one, which
/// unlinks it and so changes its ctime, while what was read is one whole version).
fn changed_while_read(before: &fs::Metadata, after: &fs::Metadata) -> bool {
    let content = |m: &fs::Metadata| (m.len(), m.mtime(), m.mtime_nsec(), m.ino());
    let ctime = |m: &fs::Metadata| (m.ctime(), m.ctime_nsec());
    content(before) != content(after)
        || (ctime(before) != ctime(after) && before.nlink() == after.nlink())
}

/// Why a file is not backed up when it vanished between the listing and the read: the run saw
/// a state in which it no longer exists (an editor's temporary file renamed away), which is not
/// a fault to report.
pub(super) const VANISHED: &str = "vanished before it was read";

fn read_once(
    shared: &Shared,
    job: &FileJob,
    buf: &mut [u8],
    comp: &mut Compressor,
    full: &Sender<FinishedPack>,
) -> FileResult {
    // Never through a symlink put in the file's place since the listing.
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&job.path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => VANISHED.to_string(),
            _ => e.to_string(),
        })?;
    let before = f.metadata().map_err(|e| e.to_string())?;
    if !before.is_file() {
        return Err("no longer a regular file".into());
    }
    let mut hasher = shared.keys.file_hash.hasher();
    let mut blobs = Vec::new();
    let max = shared.chunker.max_size();
    let (mut start, mut end, mut total, mut eof) = (0usize, 0usize, 0u64, false);
    // The whole file is still in `buf` when it was read in one fill.
    let mut one_fill = true;
    loop {
        while !eof && end < buf.len() {
            match f.read(&mut buf[end..]) {
                Ok(0) => eof = true,
                Ok(n) => {
                    end += n;
                    total += n as u64;
                    shared.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
                    shared
                        .progress
                        .bytes_done
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read error: {e}")),
            }
        }
        while end - start >= max || (eof && start < end) {
            let n = shared.chunker.next_cut(&buf[start..end]);
            let chunk = &buf[start..start + n];
            hasher.update(chunk);
            let id = shared.keys.blob_id(chunk);
            blobs.push(id);
            if shared.claim(id) && !shared.store_blob(comp, id, BlobType::Data, chunk, full) {
                return Err("backup aborted".into());
            }
            start += n;
        }
        if eof {
            break;
        }
        if shared.aborted() {
            return Err("backup aborted".into());
        }
        one_fill = false;
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
    }
    let after = f.metadata().map_err(|e| e.to_string())?;
    let changed = changed_while_read(&before, &after) || total != before.len();
    let meta = Meta::of(&before);
    let hash = hasher.finalize();
    // Only a file read whole and quietly, as the listing saw it, is worth remembering.
    let as_listed = meta.stat() == job.meta.stat();
    let entry = if changed || !as_listed || meta.mtime >= shared.racy_after {
        None
    } else {
        let sample = if one_fill {
            Ok(changes::sample_hash_of(
                &shared.keys.sample,
                &buf[..total as usize],
            ))
        } else {
            changes::sample_hash(&shared.keys.sample, &f, total).map(|(s, _)| s)
        };
        sample.ok().map(|sample| FileEntry {
            stat: job.meta.stat(),
            hash,
            sample,
            blobs: blobs.clone(),
        })
    };
    Ok(FileDone {
        blobs,
        hash,
        size: total,
        changed,
        entry,
        fresh: true,
        meta: Some(Box::new(meta)),
    })
}
