//! Backup: walk the given paths, chunk, hash and compress files on worker threads, pack,
//! encrypt and upload, then write the index and finally the snapshot.
//!
//! Threads and bounded queues:
//! walker -> (file jobs) -> file workers -> open packs -> (full packs) -> uploaders.
//! A file worker adds each new chunk from its read buffer to an open pack, which streams its
//! ciphertext to the store (a local folder's writing thread takes it to disk). While every worker
//! is busy the worker encrypts the chunk itself; while some idle (one large file, the end of a
//! run) the pack encrypts on a thread of its own, so the cores stay in use. Full packs go to the
//! uploader threads, which commit them (sync and link into place, or upload)
//! and write the checkpoint indexes. The walker also sends an ordered event stream
//! to the assembler (the calling thread), which collects each file's result in order and builds
//! the trees bottom-up.

mod assemble;
mod reader;
mod walker;

use assemble::{assemble, CacheUpdates};
use reader::file_worker;
use walker::{display, scan, Meta, Walker};
pub(crate) use walker::{prepare_paths, Excludes};

use crate::backend::RequestStats;
use crate::blobwriter::{BlobWriter, WriterStats};
use crate::cache::{
    FileEntry, FolderFiles, FolderRow, FolderWrite, LocalCache, RowCursor, RowWriter,
};
use crate::changes::{self, FileStat, Verdict};
use crate::chunker::Chunker;
use crate::compress::Compressor;
use crate::error::{Error, Result};
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{
    check_node, Node, NodeKind, StoreTree, TreeWriter, FLAG_ANCESTOR, FLAG_TORN, MAX_DEPTH,
};
use crate::format::BlobType;
use crate::ids::Id;
use crate::keys::Keys;
use crate::packer::FinishedPack;
use crate::repo::Repository;
use crate::workers::Pool;
use crossbeam_channel::{bounded, Receiver, Sender};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What to back up and how.
#[derive(Clone, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    pub excludes: Vec<String>,
    pub host: String,
    /// Worker threads for each CPU stage; 0 means one per core.
    pub threads: usize,
    /// Packs uploaded at the same time (each holds one pack in memory); 0 means 2.
    pub uploads: usize,
    /// Paths never backed up whatever the patterns say (the repository itself, when it lies
    /// inside a backed-up folder).
    pub exclude_paths: Vec<PathBuf>,
    /// Read every file even when the local index says it is unchanged.
    pub force_reread: bool,
    /// Count files and bytes first (on another thread) so that progress can show totals; only
    /// worth its extra `stat` per file when someone watches.
    pub count_first: bool,
    /// The snapshot's time (Unix seconds and nanoseconds) instead of now: for importing old
    /// backups, and for tests of retention policies.
    pub time: Option<(i64, u32)>,
    /// Write no snapshot when the trees equal those of the parent snapshot (same host, paths
    /// and tags): an hourly schedule then adds nothing while nothing changes.
    pub skip_if_unchanged: bool,
}

pub use crate::progress::{Progress, Skipped};

/// The result of a backup run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BackupSummary {
    pub snapshot: String,
    /// `--skip-if-unchanged` found nothing changed: no snapshot was written, `snapshot` is the
    /// parent's id.
    pub unchanged: bool,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Total size of the files in the snapshot.
    pub bytes: u64,
    /// File content bytes read (not counting the head-and-tail samples).
    pub bytes_read: u64,
    /// Files taken from the local index without reading their content.
    pub files_unchanged: u64,
    /// Bytes read to re-verify files whose inode or device changed (head and tail samples).
    pub bytes_sampled: u64,
    /// Bytes of new blobs as stored (after compression, before encryption and padding).
    pub bytes_added: u64,
    /// Of those, the bytes of folder listings (tree blobs).
    pub tree_bytes_added: u64,
    pub blobs_new: u64,
    pub blobs_reused: u64,
    /// Of the reused: chunks only a write-only device had recorded, read back and verified
    /// before reuse (design.md §13.1).
    pub blobs_verified: u64,
    /// Index entries of write-only devices that failed that check: the chunks were stored
    /// again; `check` names the entries.
    pub locations_refused: u64,
    pub packs_written: u64,
    pub skipped: Vec<Skipped>,
    /// Files listed that were gone when their turn came to be read (not an error: the run saw
    /// them deleted or renamed away).
    pub vanished: u64,
    /// Files backed up with a caveat (they changed while being read).
    pub warnings: Vec<Skipped>,
    /// Requests this run made to the repository storage, retries included.
    pub requests: RequestStats,
}

struct FileDone {
    blobs: Vec<Id>,
    hash: Id,
    size: u64,
    changed: bool,
    /// The local-index entry for the file, when it may be remembered.
    entry: Option<FileEntry>,
    /// The entry differs from the one the local index holds.
    fresh: bool,
    /// The file's metadata as it was read (it may have been replaced since the listing);
    /// `None`: the listing's. Boxed: most results come from the local index without one.
    meta: Option<Box<Meta>>,
}

type FileResult = std::result::Result<FileDone, String>;

/// A file's result: known at once (unchanged, from the local index) or from a file worker.
enum Pending {
    Ready(FileResult),
    Wait(Receiver<FileResult>),
}

/// A folder's key in the local index and the row it held at the start of the run.
struct FolderCtx {
    key: Id,
    old: Option<Arc<FolderRow>>,
}

struct FileJob {
    path: PathBuf,
    meta: Meta,
    reply: Sender<FileResult>,
}

enum Event {
    Enter {
        name: Vec<u8>,
        meta: Meta,
        ancestor: bool,
        folder: FolderCtx,
    },
    Leave,
    File {
        name: Vec<u8>,
        path: PathBuf,
        meta: Meta,
        result: Pending,
    },
    Symlink {
        name: Vec<u8>,
        meta: Meta,
        target: Vec<u8>,
    },
    Skipped(Skipped),
}

/// State shared by all stages.
struct Shared<'a> {
    keys: Arc<Keys>,
    cache: &'a LocalCache,
    chunker: Chunker,
    zstd_level: u8,
    force_reread: bool,
    /// Files modified this close to the start of the run (seconds) get no local-index entry:
    /// a change within the same timestamp tick after we read them would go unnoticed (FAT
    /// stores mtimes to 2 s).
    racy_after: i64,
    today: i64,
    /// Dedup, packing, storing and indexing of the run's new blobs.
    writer: BlobWriter<'a>,
    /// File workers: when some idle, packs encrypt on threads of their own so the busy ones keep
    /// the cores in use.
    workers: Pool,
    failure: Mutex<Option<Error>>,
    abort: AtomicBool,
    progress: Arc<Progress>,
    bytes_read: AtomicU64,
    files_unchanged: AtomicU64,
    /// Entries listed and gone before they were looked at (see `BackupSummary::vanished`).
    vanished: AtomicU64,
    bytes_sampled: AtomicU64,
}

impl<'a> Shared<'a> {
    fn new(
        repo: &'a Repository,
        opts: &BackupOptions,
        threads: usize,
        progress: Arc<Progress>,
    ) -> Result<Self> {
        let cfg = repo.config();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Ok(Shared {
            keys: repo.keys().clone(),
            cache: repo.cache()?,
            chunker: Chunker::new(&repo.keys().chunker, cfg),
            zstd_level: cfg.zstd_level,
            force_reread: opts.force_reread,
            racy_after: started - 2,
            today: crate::cache::today(),
            writer: BlobWriter::new(repo, threads.clamp(2, MAX_OPEN_PACKS))?
                .with_checkpoints(CHECKPOINT_EVERY),
            workers: Pool::new(threads),
            failure: Mutex::new(None),
            abort: AtomicBool::new(false),
            progress,
            bytes_read: AtomicU64::new(0),
            files_unchanged: AtomicU64::new(0),
            vanished: AtomicU64::new(0),
            bytes_sampled: AtomicU64::new(0),
        })
    }

    /// The run's counters into its summary.
    fn count_into(&self, summary: &mut BackupSummary) {
        summary.bytes_read = self.bytes_read.load(Ordering::Relaxed);
        let w = &self.writer.stats;
        summary.bytes_added = WriterStats::get(&w.bytes_added);
        summary.tree_bytes_added = WriterStats::get(&w.tree_bytes_added);
        summary.blobs_new = WriterStats::get(&w.blobs_new);
        summary.blobs_reused = WriterStats::get(&w.blobs_reused);
        summary.blobs_verified = WriterStats::get(&w.blobs_verified);
        summary.locations_refused = WriterStats::get(&w.locations_refused);
        summary.packs_written = WriterStats::get(&w.packs_written);
        summary.files_unchanged = self.files_unchanged.load(Ordering::Relaxed);
        summary.vanished += self.vanished.load(Ordering::Relaxed);
        summary.bytes_sampled = self.bytes_sampled.load(Ordering::Relaxed);
    }

    fn fail(&self, e: Error) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
        self.abort.store(true, Ordering::SeqCst);
    }
    fn aborted(&self) -> bool {
        if crate::interrupt::requested() && !self.abort.load(Ordering::Relaxed) {
            self.fail(Error::Interrupted);
        }
        self.abort.load(Ordering::Relaxed)
    }
    /// Compress a new blob where that pays and add it to an open pack; a pack that became full
    /// goes to the uploaders.
    fn store_blob(
        &self,
        comp: &mut Compressor,
        id: Id,
        blob_type: BlobType,
        data: &[u8],
        full: &Sender<FinishedPack>,
    ) -> bool {
        let offload = self.workers.some_idle();
        match self.writer.add_claimed(comp, id, blob_type, data, offload) {
            Ok(Some(pack)) => full.send(pack).is_ok(),
            Ok(None) => true,
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    /// Claim a blob id: true when it is new and the caller must store it.
    fn claim(&self, id: Id) -> bool {
        self.writer.claim(id).unwrap_or_else(|e| {
            self.fail(e);
            false
        })
    }
}

/// Events per batch sent to the assembler.
const EVENT_BATCH: usize = 256;

/// Index the stored packs at least this often (also every 256 packs or 50,000 blobs), so that a
/// killed backup leaves most of its work indexed and the next run reuses it instead of
/// uploading it again (an interrupted one indexes everything it stored). Every checkpoint is one
/// more object in the repository, so a backup that takes less time writes one index at the end.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(120);

/// Stack of the walker thread.
const WALKER_STACK: usize = 64 << 20;

/// Most data packs open at once. Each is one more partly filled object at the end of every
/// backup; more threads than packs only wait for one another while encrypting.
const MAX_OPEN_PACKS: usize = 4;

/// Store finished packs (folder: sync and link into place; S3: upload) and write the checkpoint
/// indexes. Several threads, so that uploads overlap one another and the file workers' reading
/// and encryption.
fn uploader(shared: &Shared, full: Receiver<FinishedPack>) {
    for pack in full {
        if shared.aborted() {
            continue;
        }
        if let Err(e) = shared.writer.store_pack(pack) {
            shared.fail(e);
        }
    }
}

/// Run a backup into `repo`.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupSummary> {
    // A prune on another computer may condemn packs this run deduplicated against (§13.2):
    // `write_snapshot` then refuses, and the run is made again, storing what it relied on.
    let mut attempt = 0;
    loop {
        let (mut summary, snap) = backup_draft(repo, opts, progress.clone())?;
        if opts.skip_if_unchanged {
            if let Some(parent) = snap.parent {
                let p = repo.read_snapshot(&parent)?;
                if p.root == snap.root && p.tags == snap.tags {
                    summary.snapshot = parent.to_hex();
                    summary.unchanged = true;
                    summary.requests = repo.store().stats();
                    return Ok(summary);
                }
            }
        }
        match repo.write_snapshot(&snap) {
            Ok(id) => {
                summary.snapshot = id.to_hex();
                repo.cache()?.expire_folders()?;
                summary.requests = repo.store().stats();
                return Ok(summary);
            }
            Err(Error::Condemned(_)) if attempt < 2 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Store the data and trees of a backup and return the snapshot that would describe it, without
/// writing the snapshot (`vault move` writes it only after reading the data back). Until a
/// snapshot refers to them, the stored packs are harmless leftovers that later runs reuse.
pub fn backup_draft(
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<(BackupSummary, Snapshot)> {
    let roots = prepare_paths(&opts.paths)?;
    let excludes = Excludes::new(&opts.excludes, &opts.exclude_paths)?;
    let threads = crate::worker_count(opts.threads);
    let shared = Shared::new(repo, opts, threads, progress)?;
    let cache = shared.cache;
    let (parent, previous, sequence) = place_in_history(repo, opts, &roots)?;
    let mut summary = BackupSummary::default();
    let mut updates = CacheUpdates::new(shared.today);
    let root_id = run_pipeline(
        &shared,
        &Pipeline {
            roots: &roots,
            excludes: &excludes,
            threads,
            uploads: if opts.uploads == 0 { 2 } else { opts.uploads },
            count_first: opts.count_first,
        },
        &mut summary,
        &mut updates,
    );
    // Entries are safe to keep even from a failed run: each is used only while every blob it
    // lists is in the repository's index.
    let flushed = updates.flush(cache);
    // Write order: packs are all stored; now the index; the snapshot last.
    let failure = shared
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let root_id = match (failure, root_id) {
        (None, Ok(id)) => id,
        (Some(e), _) | (None, Err(e)) => {
            // Index what was stored so that the next run reuses it instead of uploading again.
            shared.writer.salvage();
            return Err(e);
        }
    };
    flushed?;
    shared.writer.index_stored()?;
    // Everything this run stored is indexed: its folder rows need no blob checks from now on.
    cache.confirm_run(updates.run)?;
    shared.count_into(&mut summary);
    let (time, time_nanos) = opts.time.unwrap_or_else(crate::repo::now);
    let snap = Snapshot {
        repo_id: repo.repo_id(),
        time,
        time_nanos,
        host: opts.host.clone(),
        paths: path_bytes(&roots),
        tags: opts.tags.clone(),
        root: root_id,
        parent,
        previous,
        sequence,
        original: None,
        summary: Summary {
            // Every entry of the trees (§11): readers stop a walk that meets more.
            files: summary.files + summary.symlinks,
            dirs: summary.dirs,
            bytes: summary.bytes,
            vault_only: 0,
        },
        writer: repo.keys().written_by(),
    };
    summary.requests = repo.store().stats();
    Ok((summary, snap))
}

fn path_bytes(roots: &[PathBuf]) -> Vec<Vec<u8>> {
    roots
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect()
}

/// The new snapshot's `parent` (the last one of this host and these paths) and its place in the
/// chain (§11). A write-only device cannot read snapshots: no parent, and no place in the chain.
fn place_in_history(
    repo: &Repository,
    opts: &BackupOptions,
    roots: &[PathBuf],
) -> Result<(Option<Id>, Option<Id>, u64)> {
    let (snapshots, _) = if repo.keys().is_write_only() {
        (Vec::new(), Vec::new())
    } else {
        repo.snapshots()?
    };
    let paths = path_bytes(roots);
    let parent = snapshots
        .iter()
        .rev()
        .find(|(_, s)| s.host == opts.host && s.paths == paths)
        .map(|(id, _)| *id);
    let (previous, sequence) = crate::snapshots::chain_after(&snapshots);
    Ok((parent, previous, sequence))
}

/// What the threads of one backup run over.
struct Pipeline<'p> {
    roots: &'p [PathBuf],
    excludes: &'p Excludes,
    threads: usize,
    uploads: usize,
    count_first: bool,
}

/// The walker, the file workers and the uploaders on threads of their own, the assembler on
/// this one; returns the root tree's id once every pack is stored.
fn run_pipeline(
    shared: &Shared<'_>,
    p: &Pipeline<'_>,
    summary: &mut BackupSummary,
    updates: &mut CacheUpdates,
) -> Result<Id> {
    thread::scope(|scope| -> Result<Id> {
        let (job_tx, job_rx) = bounded::<FileJob>(p.threads * 4);
        let (ev_tx, ev_rx) = bounded::<Vec<Event>>(32);
        // A full pack is handed straight to a free uploader: queued packs would each hold
        // another pack's worth of memory.
        let (full_tx, full_rx) = bounded::<FinishedPack>(0);
        let (roots, excludes) = (p.roots, p.excludes);
        if p.count_first {
            scope.spawn(move || scan(roots, excludes, &shared.progress, &shared.abort));
        }
        let walker_jobs = job_tx.clone();
        let walker = move || {
            Walker {
                shared,
                excludes,
                events: ev_tx,
                batch: std::cell::RefCell::new(Vec::with_capacity(EVENT_BATCH)),
                jobs: walker_jobs,
            }
            .run(roots)
        };
        // The walker recurses once per folder level, up to MAX_DEPTH: room for that (only the
        // pages touched count).
        if let Err(e) = thread::Builder::new()
            .stack_size(WALKER_STACK)
            .spawn_scoped(scope, walker)
        {
            shared.fail(Error::io("cannot start the folder walker", e));
        }
        drop(job_tx);
        let file_workers: Vec<_> = (0..p.threads)
            .map(|_| {
                let (rx, tx) = (job_rx.clone(), full_tx.clone());
                scope.spawn(move || file_worker(shared, rx, tx))
            })
            .collect();
        drop(job_rx);
        let uploaders: Vec<_> = (0..p.uploads)
            .map(|_| {
                let rx = full_rx.clone();
                scope.spawn(move || uploader(shared, rx))
            })
            .collect();
        drop(full_rx);

        let root = assemble(shared, ev_rx, &full_tx, summary, updates);
        for w in file_workers {
            let _ = w.join();
        }
        if !shared.aborted() {
            match shared.writer.flush() {
                Ok(rest) => {
                    for b in rest {
                        let _ = full_tx.send(b);
                    }
                }
                Err(e) => shared.fail(e),
            }
        }
        drop(full_tx);
        for u in uploaders {
            let _ = u.join();
        }
        shared.abort.store(true, Ordering::SeqCst); // stop the scanner if still running
        root
    })
}
