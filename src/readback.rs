//! Reading a backup back: the files and symlinks a snapshot's trees hold under some paths (each
//! tree read from the repository, not taken from memory), and every file's blobs downloaded,
//! decrypted and hashed against the whole-file hash the backup recorded. `vault move` does this
//! before it unlinks anything, and `copy --verify` after it copies.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::format::tree::{FolderCursor, NodeKind, MAX_DEPTH};
use crate::ids::Id;
use crate::progress::Progress;
use crate::repo::{PackReaders, PlanReader, Repository};
use crate::treewalk::show_path;

/// A path in a snapshot, as components (trees mirror absolute paths, without the leading `/`).
pub type Comps = Vec<Vec<u8>>;

/// The components of an absolute local path.
pub fn comps_of(p: &Path) -> Comps {
    p.components()
        .skip(1)
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect()
}

/// A file or symlink as a snapshot's trees record it.
#[derive(Clone)]
pub struct Stored {
    pub size: u64,
    pub content: StoredContent,
}

#[derive(Clone)]
pub enum StoredContent {
    File { blobs: Vec<Id>, hash: Id },
    Symlink { target: Vec<u8> },
}

/// Readers follow folders only down to [`MAX_DEPTH`] (a hostile snapshot could nest them
/// without end).
fn too_deep(tree: &Id, path: &Comps) -> Result<()> {
    if path.len() > MAX_DEPTH {
        return Err(Error::corrupt(
            format!("tree {}", tree.short()),
            format!("a folder nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(())
}

/// Every file and symlink under `roots`, from the snapshot's trees as stored (each tree
/// is read back from the repository, not taken from memory).
pub fn collect(
    repo: &Repository,
    root: &Id,
    roots: &[Comps],
    readers: &mut PackReaders,
) -> Result<HashMap<Comps, Stored>> {
    let mut out = HashMap::new();
    let mut stack: Vec<(Id, Comps)> = vec![(*root, Vec::new())];
    while let Some((t, path)) = stack.pop() {
        too_deep(&t, &path)?;
        let mut cursor = FolderCursor::new(t);
        while let Some(n) = cursor.next(&mut repo.trees(readers))? {
            let mut c = path.clone();
            c.push(n.name.clone());
            let under = roots.iter().any(|r| c.starts_with(r));
            let above = roots.iter().any(|r| r.starts_with(&c) && r.len() > c.len());
            if !under && !above {
                continue;
            }
            match n.kind {
                NodeKind::Dir { subtree } => stack.push((subtree, c)),
                NodeKind::File { blobs, hash } if under => {
                    out.insert(
                        c,
                        Stored {
                            size: n.size,
                            content: StoredContent::File { blobs, hash },
                        },
                    );
                }
                NodeKind::Symlink { target } if under => {
                    out.insert(
                        c,
                        Stored {
                            size: n.size,
                            content: StoredContent::Symlink { target },
                        },
                    );
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Read every file's blobs back from the repository and check the whole-file hash. Adds what
/// verified to `ok`; returns what did not, with the reason.
pub fn read_back(
    repo: &Repository,
    stored: &HashMap<Comps, Stored>,
    threads: usize,
    progress: &Progress,
    ok: &mut HashSet<Comps>,
) -> Result<Vec<(Comps, String)>> {
    let mut items: Vec<(&Comps, &Stored)> = stored.iter().collect();
    // In path order, as the backup wrote them: each pack's blobs are then read together.
    items.sort_by(|a, b| a.0.cmp(b.0));
    progress
        .total_files
        .store(items.len() as u64, Ordering::Relaxed);
    progress
        .total_bytes
        .store(items.iter().map(|(_, s)| s.size).sum(), Ordering::Relaxed);
    progress.files_done.store(0, Ordering::Relaxed);
    progress.bytes_done.store(0, Ordering::Relaxed);
    progress.scan_finished.store(true, Ordering::Relaxed);
    let good = Mutex::new(Vec::new());
    let bad = Mutex::new(Vec::new());
    // In batches, each read through one download plan (design.md §12.2): each needed pack
    // range is fetched once, ahead of the workers.
    for batch in items.chunks(READ_BACK_BATCH) {
        let uses = batch.iter().map(|(_, s)| match &s.content {
            StoredContent::File { blobs, .. } => blobs.iter().copied(),
            StoredContent::Symlink { .. } => [].iter().copied(),
        });
        let plan = PlanReader::new(repo, uses, crate::worker_count(threads))?;
        let next = AtomicUsize::new(0);
        let workers = AtomicUsize::new(crate::worker_count(threads));
        std::thread::scope(|scope| {
            for _ in 0..AHEAD_THREADS {
                scope.spawn(|| plan.fetch_ahead());
            }
            for _ in 0..crate::worker_count(threads) {
                scope.spawn(|| {
                    let mut readers = PackReaders::default();
                    // One blob buffer per worker, reused: no allocation per chunk read back.
                    let mut blob = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((c, s)) = batch.get(i).filter(|_| !crate::interrupt::requested())
                        else {
                            break;
                        };
                        let r = match &s.content {
                            StoredContent::File { blobs, hash } => {
                                let file = (blobs.as_slice(), hash, s.size);
                                verify_file(&plan, file, &mut readers, &mut blob, progress)
                            }
                            // The target is in the tree, which was read back already.
                            StoredContent::Symlink { .. } => Ok(()),
                        };
                        progress.files_done.fetch_add(1, Ordering::Relaxed);
                        match r {
                            Ok(()) => good
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((*c).clone()),
                            Err(e) => bad
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(((*c).clone(), e.to_string())),
                        }
                    }
                    // The last worker out lets the fetch-ahead threads go.
                    if workers.fetch_sub(1, Ordering::AcqRel) == 1 {
                        plan.stop();
                    }
                });
            }
        });
        if crate::interrupt::requested() {
            break;
        }
    }
    if crate::interrupt::requested() {
        return Err(Error::Interrupted);
    }
    ok.extend(good.into_inner().unwrap_or_else(|p| p.into_inner()));
    Ok(bad.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Files read back per download plan.
const READ_BACK_BATCH: usize = 4096;
/// Threads fetching planned ranges ahead of the workers, as restore has.
const AHEAD_THREADS: usize = 2;

fn verify_file(
    plan: &PlanReader<'_>,
    (blobs, hash, size): (&[Id], &Id, u64),
    readers: &mut PackReaders,
    data: &mut Vec<u8>,
    progress: &Progress,
) -> Result<()> {
    let mut h = plan.repo().keys().file_hash.hasher();
    let mut total = 0u64;
    for (k, b) in blobs.iter().enumerate() {
        if let Err(e) = plan.read_blob_into(b, readers, data) {
            // What this file would have read after the failure is not wanted any more.
            plan.forgo(&blobs[k + 1..]);
            return Err(e);
        }
        total += data.len() as u64;
        progress
            .bytes_done
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        h.update(data);
    }
    if total != size || h.finalize() != *hash {
        return Err(Error::corrupt(
            "file",
            "content read back does not match the hash recorded at backup",
        ));
    }
    Ok(())
}

/// Read back from `repo` every file of the snapshot tree `root` under `paths` (absolute, as a
/// snapshot records them): trees, blobs and whole-file hashes. Returns the number of files and
/// symlinks that verified and, for the others, the path and the reason.
pub fn verify_tree(
    repo: &Repository,
    root: &Id,
    paths: &[Vec<u8>],
    threads: usize,
    progress: &Progress,
) -> Result<(u64, Vec<(String, String)>)> {
    let roots: Vec<Comps> = paths
        .iter()
        .map(|p| comps_of(Path::new(OsStr::from_bytes(p))))
        .collect();
    let mut readers = PackReaders::default();
    let stored = collect(repo, root, &roots, &mut readers)?;
    let mut ok = HashSet::new();
    let bad = read_back(repo, &stored, threads, progress, &mut ok)?;
    Ok((
        ok.len() as u64,
        bad.into_iter().map(|(c, e)| (show_path(&c), e)).collect(),
    ))
}
