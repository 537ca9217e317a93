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
        let _ = job.reply.send(res);
    }
}

pub(super) fn read_file(
    shared: &Shared,
    job: &FileJob,
    buf: &mut [u8],
    comp: &mut Compressor,
    full: &Sender<FinishedPack>,
) -> FileResult {
    let mut f = File::open(&job.path).map_err(|e| e.to_string())?;
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
    let changed = after.len() != job.meta.size
        || after.mtime() != job.meta.mtime
        || nanos(after.mtime_nsec()) != job.meta.mtime_nanos
        || total != job.meta.size;
    let hash = hasher.finalize();
    // Only a file read whole and quietly is worth remembering.
    let entry = if changed || job.meta.mtime >= shared.racy_after {
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
    })
}
