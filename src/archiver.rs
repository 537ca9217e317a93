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

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crossbeam_channel::{bounded, Receiver, Sender};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;

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
use crate::format::tree::{check_node, Node, NodeKind, TreeWriter, FLAG_ANCESTOR, MAX_DEPTH};
use crate::format::BlobType;
use crate::ids::Id;
use crate::keys::Keys;
use crate::packer::FinishedPack;
use crate::repo::Repository;
use crate::workers::Pool;

/// What to back up and how.
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
}

pub use crate::progress::{Progress, Skipped};

/// The result of a backup run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BackupSummary {
    pub snapshot: String,
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
    pub packs_written: u64,
    pub skipped: Vec<Skipped>,
    /// Files backed up with a caveat (they changed while being read).
    pub warnings: Vec<Skipped>,
    /// Requests this run made to the repository storage, retries included.
    pub requests: RequestStats,
}

#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    mtime: i64,
    mtime_nanos: u32,
    size: u64,
    uid: u32,
    gid: u32,
    ctime: i64,
    ctime_nanos: u32,
    ino: u64,
    dev: u64,
}

fn nanos(n: i64) -> u32 {
    n.clamp(0, 999_999_999) as u32
}

impl Meta {
    fn of(m: &fs::Metadata) -> Meta {
        Meta {
            mode: m.mode(),
            mtime: m.mtime(),
            mtime_nanos: nanos(m.mtime_nsec()),
            size: m.len(),
            uid: m.uid(),
            gid: m.gid(),
            ctime: m.ctime(),
            ctime_nanos: nanos(m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
    /// From `fstatat` on the folder being listed (no path to resolve again).
    fn from_stat(st: &rustix::fs::Stat) -> Meta {
        // The field types differ between architectures; on Linux they all fit these.
        #[allow(clippy::unnecessary_cast)]
        Meta {
            mode: st.st_mode as u32,
            mtime: st.st_mtime as i64,
            mtime_nanos: nanos(st.st_mtime_nsec as i64),
            size: st.st_size as u64,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            ctime: st.st_ctime as i64,
            ctime_nanos: nanos(st.st_ctime_nsec as i64),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
        }
    }
    fn kind(&self) -> rustix::fs::FileType {
        rustix::fs::FileType::from_raw_mode(self.mode as rustix::fs::RawMode)
    }
    fn stat(&self) -> FileStat {
        FileStat {
            size: self.size,
            mtime: self.mtime,
            mtime_nanos: self.mtime_nanos,
            ctime: self.ctime,
            ctime_nanos: self.ctime_nanos,
            ino: self.ino,
            dev: self.dev,
        }
    }
    fn node(&self, name: Vec<u8>, kind: NodeKind, size: u64) -> Node {
        Node {
            name,
            kind,
            mode: self.mode,
            mtime: self.mtime,
            mtime_nanos: self.mtime_nanos,
            size,
            uid: self.uid,
            gid: self.gid,
            flags: 0,
        }
    }
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
    bytes_sampled: AtomicU64,
}

impl Shared<'_> {
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

fn display(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub(crate) struct Excludes {
    full: GlobSet,
    base: GlobSet,
    paths: Vec<PathBuf>,
}

impl Excludes {
    pub(crate) fn new(patterns: &[String], paths: &[PathBuf]) -> Result<Excludes> {
        let mut full = GlobSetBuilder::new();
        let mut base = GlobSetBuilder::new();
        for p in patterns {
            let g = Glob::new(p)
                .map_err(|e| Error::Invalid(format!("bad --exclude pattern {p:?}: {e}")))?;
            if p.contains('/') {
                full.add(g);
            } else {
                base.add(g);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Invalid(format!("bad --exclude pattern: {e}")))
        };
        Ok(Excludes {
            full: build(full)?,
            base: build(base)?,
            paths: paths
                .iter()
                .filter_map(|p| fs::canonicalize(p).ok())
                .collect(),
        })
    }
    pub(crate) fn matches(&self, path: &Path) -> bool {
        // Called for every entry: the common no-pattern case must not build glob candidates.
        self.paths.iter().any(|p| p.as_os_str() == path.as_os_str())
            || (!self.full.is_empty() && self.full.is_match(path))
            || (!self.base.is_empty()
                && path
                    .file_name()
                    .map(|n| self.base.is_match(Path::new(n)))
                    .unwrap_or(false))
    }
}

/// Absolute, symlink-resolved, de-nested backup roots in tree order.
/// Canonical absolute roots, sorted, without duplicates or paths inside another root.
pub fn prepare_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::Invalid(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let mut out = Vec::new();
    for p in paths {
        let c = fs::canonicalize(p)
            .map_err(|e| Error::io(format!("cannot back up {}", display(p)), e))?;
        out.push(c);
    }
    let key = |p: &PathBuf| -> Vec<Vec<u8>> {
        p.components()
            .skip(1)
            .map(|c| c.as_os_str().as_bytes().to_vec())
            .collect()
    };
    out.sort_by_key(key);
    out.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in out {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    Ok(kept)
}

struct Walker<'a> {
    shared: &'a Shared<'a>,
    excludes: &'a Excludes,
    events: Sender<Vec<Event>>,
    /// Events not yet sent: they travel in batches, because a hand-off per file costs more
    /// than looking the file up when most files are unchanged.
    batch: std::cell::RefCell<Vec<Event>>,
    jobs: Sender<FileJob>,
}

/// Events per batch sent to the assembler.
const EVENT_BATCH: usize = 256;

impl Walker<'_> {
    fn send(&self, e: Event) -> bool {
        if self.shared.aborted() {
            return false;
        }
        let full = {
            let mut b = self.batch.borrow_mut();
            b.push(e);
            b.len() >= EVENT_BATCH
        };
        !full || self.flush()
    }

    fn flush(&self) -> bool {
        let b = std::mem::take(&mut *self.batch.borrow_mut());
        b.is_empty() || self.events.send(b).is_ok()
    }

    fn skip(&self, path: &Path, reason: impl Into<String>) -> bool {
        self.send(Event::Skipped(Skipped {
            path: display(path),
            reason: reason.into(),
        }))
    }

    /// The local-index row of a folder (none with --force-reread).
    fn folder(&self, path: &Path) -> FolderCtx {
        let key = self
            .shared
            .keys
            .name
            .keyed_hash(path.as_os_str().as_bytes());
        let old = if self.shared.force_reread {
            None
        } else {
            match self.shared.cache.folder(&key) {
                Ok(r) => r.map(Arc::new),
                Err(e) => {
                    self.shared.fail(e);
                    None
                }
            }
        };
        FolderCtx { key, old }
    }

    /// The file's result from the local index, when the rules in `changes` say its content is
    /// unchanged and every blob it lists is in the repository.
    fn reuse(
        &self,
        path: &Path,
        name: &[u8],
        meta: &Meta,
        row: &mut RowCursor,
    ) -> Option<FileDone> {
        let shared = self.shared;
        let confirmed = row.row().confirmed;
        let entry = match row.get(shared.cache, name) {
            Ok(e) => e?,
            Err(e) => {
                shared.fail(e);
                return None;
            }
        };
        let now = meta.stat();
        let (entry, fresh) = match changes::classify(entry, &now) {
            Verdict::Changed => return None,
            Verdict::Unchanged => (entry.clone(), false),
            Verdict::MetadataOnly => (changes::refreshed(entry, &now), true),
            Verdict::VerifySample => {
                let f = File::open(path).ok()?;
                let (sample, n) = changes::sample_hash(&shared.keys.sample, &f, now.size).ok()?;
                shared.bytes_sampled.fetch_add(n, Ordering::Relaxed);
                if sample != entry.sample {
                    return None;
                }
                (changes::refreshed(entry, &now), true)
            }
        };
        if !confirmed {
            match shared.cache.has_blobs(&entry.blobs) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    shared.fail(e);
                    return None;
                }
            }
        }
        shared.files_unchanged.fetch_add(1, Ordering::Relaxed);
        shared
            .progress
            .bytes_done
            .fetch_add(entry.stat.size, Ordering::Relaxed);
        Some(FileDone {
            size: entry.stat.size,
            hash: entry.hash,
            blobs: entry.blobs.clone(),
            changed: false,
            entry: Some(entry),
            fresh,
        })
    }

    /// Emit one entry (and everything under it). `row` is the parent folder's local-index row,
    /// `depth` the number of components of `path`. Returns false when the run is aborting.
    fn item(&self, path: &Path, name: Vec<u8>, row: Option<&mut RowCursor>, depth: usize) -> bool {
        let md = fs::symlink_metadata(path).map(|m| Meta::of(&m));
        self.item_with(path, name, row, md, depth)
    }

    /// [`Self::item`] with the metadata already read (`fstatat` on the folder being listed
    /// instead of resolving the whole path again).
    fn item_with(
        &self,
        path: &Path,
        name: Vec<u8>,
        row: Option<&mut RowCursor>,
        meta: io::Result<Meta>,
        depth: usize,
    ) -> bool {
        use rustix::fs::FileType;
        if self.excludes.matches(path) {
            return true;
        }
        let meta = match meta {
            Ok(m) => m,
            Err(e) => return self.skip(path, e.to_string()),
        };
        match meta.kind() {
            FileType::Directory => {
                if depth > MAX_DEPTH {
                    return self.skip(
                        path,
                        format!(
                            "folder nested more than {MAX_DEPTH} levels deep: not backed up                              (vault does not read folders that deep back)"
                        ),
                    );
                }
                let listing = match Listing::open(path) {
                    Ok(v) => v,
                    Err(e) => return self.skip(path, format!("cannot list folder: {e}")),
                };
                let folder = self.folder(path);
                let mut cursor = folder.old.clone().map(|r| RowCursor::new(folder.key, r));
                if !self.send(Event::Enter {
                    name,
                    meta,
                    ancestor: false,
                    folder,
                }) {
                    return false;
                }
                if !self.children(path, listing, cursor.as_mut(), depth) {
                    return false;
                }
                self.send(Event::Leave)
            }
            FileType::RegularFile => {
                let result = match row.and_then(|r| self.reuse(path, &name, &meta, r)) {
                    Some(done) => Pending::Ready(Ok(done)),
                    None => {
                        let (tx, rx) = bounded(1);
                        let job = FileJob {
                            path: path.to_path_buf(),
                            meta,
                            reply: tx,
                        };
                        if self.jobs.send(job).is_err() {
                            return false;
                        }
                        Pending::Wait(rx)
                    }
                };
                self.send(Event::File {
                    name,
                    path: path.to_path_buf(),
                    meta,
                    result,
                })
            }
            FileType::Symlink => match fs::read_link(path) {
                Ok(t) => self.send(Event::Symlink {
                    name,
                    meta,
                    target: t.as_os_str().as_bytes().to_vec(),
                }),
                Err(e) => self.skip(path, format!("cannot read link: {e}")),
            },
            _ => self.skip(path, "not a regular file, folder or symlink"),
        }
    }

    /// Emit the entries of the folder `path` (at `depth`), in name order, each `stat`ed through
    /// the folder's descriptor. False when the run is aborting.
    fn children(
        &self,
        path: &Path,
        listing: Listing,
        mut row: Option<&mut RowCursor>,
        depth: usize,
    ) -> bool {
        let Listing { fd, names } = listing;
        for child in names {
            let name = match child {
                Ok(n) => n,
                Err(e) => {
                    self.shared.fail(Error::io(
                        format!(
                            "cannot sort the names of a large folder in {}",
                            std::env::temp_dir().display()
                        ),
                        e,
                    ));
                    return false;
                }
            };
            let child_path = path.join(std::ffi::OsStr::from_bytes(&name));
            let md =
                rustix::fs::statat(&fd, name.as_slice(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| Meta::from_stat(&st))
                    .map_err(io::Error::from);
            if !self.item_with(&child_path, name, row.as_deref_mut(), md, depth + 1) {
                return false;
            }
        }
        true
    }

    fn run(&self, roots: &[PathBuf]) {
        self.walk_roots(roots);
        self.flush();
    }

    fn walk_roots(&self, roots: &[PathBuf]) {
        let mut stack: Vec<Vec<u8>> = Vec::new();
        // Local-index rows of the ancestor folders on `stack`.
        let mut rows: Vec<Option<RowCursor>> = Vec::new();
        for root in roots {
            let comps: Vec<Vec<u8>> = root
                .components()
                .skip(1)
                .map(|c| c.as_os_str().as_bytes().to_vec())
                .collect();
            if comps.is_empty() {
                // Backing up "/" itself: its entries become the snapshot root's entries.
                match Listing::open(root) {
                    Ok(listing) => {
                        if !self.children(root, listing, None, 0) {
                            return;
                        }
                    }
                    Err(e) => {
                        self.skip(root, format!("cannot list folder: {e}"));
                    }
                }
                continue;
            }
            let parents = &comps[..comps.len() - 1];
            while !parents.starts_with(&stack) {
                stack.pop();
                rows.pop();
                if !self.send(Event::Leave) {
                    return;
                }
            }
            for c in &parents[stack.len()..] {
                stack.push(c.clone());
                let mut p = PathBuf::from("/");
                for s in &stack {
                    p.push(std::ffi::OsStr::from_bytes(s));
                }
                let meta = match fs::symlink_metadata(&p) {
                    Ok(m) => Meta::of(&m),
                    Err(e) => {
                        self.skip(&p, e.to_string());
                        return;
                    }
                };
                // Ancestors change mtime whenever anything beside the backed-up path changes;
                // recording it would make every run write new trees for nothing.
                let meta = Meta {
                    mtime: 0,
                    mtime_nanos: 0,
                    ..meta
                };
                let folder = self.folder(&p);
                rows.push(folder.old.clone().map(|r| RowCursor::new(folder.key, r)));
                if !self.send(Event::Enter {
                    name: c.clone(),
                    meta,
                    ancestor: true,
                    folder,
                }) {
                    return;
                }
            }
            let row = rows.last_mut().and_then(|r| r.as_mut());
            if !self.item(root, comps[comps.len() - 1].clone(), row, comps.len()) {
                return;
            }
        }
        while stack.pop().is_some() {
            if !self.send(Event::Leave) {
                return;
            }
        }
    }
}

/// A folder being walked: its descriptor (children are `stat`ed through it) and its names in
/// byte order, sorted with bounded memory.
struct Listing {
    fd: std::os::fd::OwnedFd,
    names: crate::namesort::SortedNames,
}

impl Listing {
    fn open(dir: &Path) -> io::Result<Listing> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let tmp = std::env::temp_dir();
        let mut sorter = crate::namesort::NameSorter::new(crate::namesort::MEMORY_LIMIT, &tmp);
        let mut entries = rustix::fs::Dir::read_from(&fd)?;
        while let Some(e) = entries.read() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                sorter.push(name)?;
            }
        }
        Ok(Listing {
            fd,
            names: sorter.finish(),
        })
    }
}

/// Count files and bytes ahead of the backup so progress can show an ETA.
fn scan(roots: &[PathBuf], excludes: &Excludes, progress: &Progress, abort: &AtomicBool) {
    // Only folders wait on the stack; files are counted as their folder is read, so a folder of
    // a million photos is never held as a list of paths.
    let mut dirs: Vec<PathBuf> = Vec::new();
    let count = |p: &Path, md: &fs::Metadata, dirs: &mut Vec<PathBuf>| {
        if md.is_dir() {
            dirs.push(p.to_path_buf());
        } else if md.is_file() {
            progress.total_files.fetch_add(1, Ordering::Relaxed);
            progress.total_bytes.fetch_add(md.len(), Ordering::Relaxed);
        }
    };
    for r in roots {
        if let (false, Ok(md)) = (excludes.matches(r), fs::symlink_metadata(r)) {
            count(r, &md, &mut dirs);
        }
    }
    while let Some(d) = dirs.pop() {
        let Ok(rd) = fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if abort.load(Ordering::Relaxed) {
                return;
            }
            let p = e.path();
            if excludes.matches(&p) {
                continue;
            }
            if let Ok(md) = e.metadata() {
                count(&p, &md, &mut dirs);
            }
        }
    }
    progress.scan_finished.store(true, Ordering::Relaxed);
}

fn file_worker(shared: &Shared, jobs: Receiver<FileJob>, full: Sender<FinishedPack>) {
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

fn read_file(
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

/// A folder being assembled: its listing streams into a tree writer, and its files' entries
/// into its new local-index row.
struct DirBuilder<'k> {
    name: Vec<u8>,
    meta: Option<Meta>,
    ancestor: bool,
    tree: TreeWriter<'k>,
    /// The folder's local-index row at the start of the run, and the parts it lists.
    folder: Option<FolderCtx>,
    old_parts: HashSet<Id>,
    /// Its new row (not for ancestors, whose entries are merged with the old row at the end).
    row: Option<RowWriter>,
    /// Entries of the files walked in an ancestor folder.
    walked: FolderFiles,
    /// Some entry differs from the old row.
    changed: bool,
}

impl<'k> DirBuilder<'k> {
    fn new(
        shared: &'k Shared<'_>,
        name: Vec<u8>,
        meta: Option<Meta>,
        ancestor: bool,
        folder: Option<FolderCtx>,
    ) -> Self {
        let old_parts = folder
            .as_ref()
            .and_then(|f| f.old.as_ref())
            .map(|o| o.part_ids())
            .unwrap_or_default();
        let row = match &folder {
            Some(f) if !ancestor => Some(RowWriter::new(f.key, &shared.keys.name)),
            _ => None,
        };
        DirBuilder {
            name,
            meta,
            ancestor,
            tree: TreeWriter::new(&shared.keys.tree_split),
            folder,
            old_parts,
            row,
            walked: Vec::new(),
            changed: false,
        }
    }

    /// Remember a file's entry for the folder's new row.
    fn remember(&mut self, name: &[u8], e: FileEntry) {
        match self.row.as_mut() {
            Some(r) => r.push(name, &e),
            None => self.walked.push((name.to_vec(), e)),
        }
    }
}

/// Run a backup into `repo`.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupSummary> {
    let (mut summary, snap) = backup_draft(repo, opts, progress)?;
    let id = repo.write_snapshot(&snap)?;
    summary.snapshot = id.to_hex();
    repo.cache()?.expire_folders()?;
    summary.requests = repo.store().stats();
    Ok(summary)
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
    let cfg = repo.config().clone();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let cache = repo.cache()?;
    let uploads = if opts.uploads == 0 { 2 } else { opts.uploads };
    let shared = Shared {
        keys: repo.keys().clone(),
        cache,
        chunker: Chunker::new(&repo.keys().chunker, &cfg),
        zstd_level: cfg.zstd_level,
        force_reread: opts.force_reread,
        racy_after: started - 2,
        today: crate::cache::today(),
        writer: BlobWriter::new(repo, threads.clamp(2, MAX_OPEN_PACKS))?
            .with_checkpoints(CHECKPOINT_EVERY),
        workers: Pool::new(threads),
        failure: Mutex::new(None),
        abort: AtomicBool::new(false),
        progress: progress.clone(),
        bytes_read: AtomicU64::new(0),
        files_unchanged: AtomicU64::new(0),
        bytes_sampled: AtomicU64::new(0),
    };
    // A write-only device cannot read snapshots: no parent, and no place in the chain.
    let (snapshots, _) = if repo.keys().is_write_only() {
        (Vec::new(), Vec::new())
    } else {
        repo.snapshots()?
    };
    let parent = snapshots
        .iter()
        .rev()
        .find(|(_, s)| {
            s.host == opts.host
                && s.paths
                    == roots
                        .iter()
                        .map(|p| p.as_os_str().as_bytes().to_vec())
                        .collect::<Vec<_>>()
        })
        .map(|(id, _)| *id);
    let (previous, sequence) = crate::snapshots::chain_after(&snapshots);

    let mut summary = BackupSummary::default();
    let mut updates = CacheUpdates::new(shared.today);
    let root_id = thread::scope(|scope| -> Result<Id> {
        let (job_tx, job_rx) = bounded::<FileJob>(threads * 4);
        let (ev_tx, ev_rx) = bounded::<Vec<Event>>(32);
        // A full pack is handed straight to a free uploader: queued packs would each hold
        // another pack's worth of memory.
        let (full_tx, full_rx) = bounded::<FinishedPack>(0);
        let shared = &shared;
        let excludes = &excludes;
        let roots = &roots;
        if opts.count_first {
            scope.spawn(move || scan(roots, excludes, &shared.progress, &shared.abort));
        }
        {
            let job_tx = job_tx.clone();
            let walker = move || {
                Walker {
                    shared,
                    excludes,
                    events: ev_tx,
                    batch: std::cell::RefCell::new(Vec::with_capacity(EVENT_BATCH)),
                    jobs: job_tx,
                }
                .run(roots)
            };
            // The walker recurses once per folder level, up to MAX_DEPTH: room for that (only
            // the pages touched count).
            if let Err(e) = thread::Builder::new()
                .stack_size(WALKER_STACK)
                .spawn_scoped(scope, walker)
            {
                shared.fail(Error::io("cannot start the folder walker", e));
            }
        }
        drop(job_tx);
        let mut file_workers = Vec::new();
        for _ in 0..threads {
            let (rx, tx) = (job_rx.clone(), full_tx.clone());
            file_workers.push(scope.spawn(move || file_worker(shared, rx, tx)));
        }
        drop(job_rx);
        let mut uploaders = Vec::new();
        for _ in 0..uploads {
            let rx = full_rx.clone();
            uploaders.push(scope.spawn(move || uploader(shared, rx)));
        }
        drop(full_rx);

        let root = assemble(shared, ev_rx, &full_tx, &mut summary, &mut updates);
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
    });
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
    summary.bytes_read = shared.bytes_read.load(Ordering::Relaxed);
    let w = &shared.writer.stats;
    summary.bytes_added = WriterStats::get(&w.bytes_added);
    summary.tree_bytes_added = WriterStats::get(&w.tree_bytes_added);
    summary.blobs_new = WriterStats::get(&w.blobs_new);
    summary.blobs_reused = WriterStats::get(&w.blobs_reused);
    summary.packs_written = WriterStats::get(&w.packs_written);
    summary.files_unchanged = shared.files_unchanged.load(Ordering::Relaxed);
    summary.bytes_sampled = shared.bytes_sampled.load(Ordering::Relaxed);
    let (time, time_nanos) = {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (d.as_secs() as i64, d.subsec_nanos())
    };
    let snap = Snapshot {
        repo_id: repo.repo_id(),
        time,
        time_nanos,
        host: opts.host.clone(),
        paths: roots
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect(),
        tags: opts.tags.clone(),
        root: root_id,
        parent,
        previous,
        sequence,
        original: None,
        summary: Summary {
            files: summary.files,
            dirs: summary.dirs,
            bytes: summary.bytes,
            vault_only: 0,
        },
    };
    summary.requests = repo.store().stats();
    Ok((summary, snap))
}

/// Local-index writes collected by the assembler, written in batches (one transaction each).
struct CacheUpdates {
    rows: Vec<FolderWrite>,
    parts: Vec<crate::cache::PartWrite>,
    pending_bytes: usize,
    seen: Vec<Id>,
    today: i64,
    /// This run's id: its rows count as confirmed once everything it stored is indexed.
    run: i64,
}

/// Bytes of rows and parts written per transaction.
const CACHE_BATCH: usize = 1 << 20;
/// Rows marked as seen per transaction.
const CACHE_SEEN_BATCH: usize = 4096;

impl CacheUpdates {
    fn new(today: i64) -> CacheUpdates {
        CacheUpdates {
            rows: Vec::new(),
            parts: Vec::new(),
            pending_bytes: 0,
            seen: Vec::new(),
            today,
            run: 1 + crate::crypto::random_below(i64::MAX as usize - 1) as i64,
        }
    }

    /// Queue the parts a folder's new row finished, leaving out those its old row has.
    fn add_parts(
        &mut self,
        folder: Id,
        parts: Vec<(Id, Vec<u8>)>,
        old: &HashSet<Id>,
        cache: &LocalCache,
    ) -> Result<()> {
        for (id, plain) in parts {
            if !old.contains(&id) {
                self.pending_bytes += plain.len();
                self.parts.push((folder, id, plain));
            }
        }
        self.maybe_flush(cache)
    }

    /// Parts a folder's row finished while it was being built are stored as they come, so that
    /// a huge folder's new row is never held whole; when any is new, with a provisional row
    /// listing the parts so far, so that a run killed in the middle of the folder leaves the next
    /// one these entries (an unconfirmed row's entries are used once their blobs are indexed).
    fn take_parts(&mut self, d: &mut DirBuilder<'_>, cache: &LocalCache) -> Result<()> {
        let (Some(row), Some(f)) = (d.row.as_mut(), d.folder.as_ref()) else {
            return Ok(());
        };
        let parts = row.take_parts();
        if !parts.iter().any(|(id, _)| !d.old_parts.contains(id)) {
            return Ok(());
        }
        if let Some(p) = row.provisional() {
            self.rows.push(FolderWrite {
                key: f.key,
                row: p,
                provisional: true,
            });
        }
        self.add_parts(f.key, parts, &d.old_parts, cache)
    }

    /// The run stops before these folders are complete: keep what their rows have so far
    /// (unless nothing in a folder changed: its old row is then worth more).
    fn stopped(&mut self, open: &mut [DirBuilder<'_>], cache: &LocalCache) -> Result<()> {
        for d in open.iter_mut().filter(|d| d.changed) {
            if let Some(row) = d.row.as_mut() {
                row.close_part();
            }
            self.take_parts(d, cache)?;
        }
        Ok(())
    }

    /// A folder is complete: write its row when anything in it changed.
    fn folder_done(&mut self, d: &mut DirBuilder<'_>, shared: &Shared<'_>) -> Result<()> {
        let cache = shared.cache;
        let Some(FolderCtx { key, old }) = d.folder.take() else {
            return Ok(());
        };
        let row = match d.row.take() {
            Some(r) => r,
            None => {
                // Only some entries of an ancestor folder were walked: keep the others.
                let mut r = RowWriter::new(key, &shared.keys.name);
                let mut walked = std::mem::take(&mut d.walked).into_iter().peekable();
                let mut kept = old.clone().map(|o| RowCursor::new(key, o));
                let mut next_old = match kept.as_mut() {
                    Some(k) => k.next_entry(cache)?,
                    None => None,
                };
                loop {
                    let take_old = match (&next_old, walked.peek()) {
                        (None, None) => break,
                        (Some(_), None) => true,
                        (None, Some(_)) => false,
                        (Some((o, _)), Some((w, _))) => o < w,
                    };
                    if take_old {
                        if let Some((n, e)) = next_old.take() {
                            r.push(&n, &e);
                        }
                        next_old = match kept.as_mut() {
                            Some(k) => k.next_entry(cache)?,
                            None => None,
                        };
                    } else if let Some((n, e)) = walked.next() {
                        if next_old.as_ref().is_some_and(|(o, _)| *o == n) {
                            next_old = match kept.as_mut() {
                                Some(k) => k.next_entry(cache)?,
                                None => None,
                            };
                        }
                        r.push(&n, &e);
                    }
                }
                r
            }
        };
        let same = !d.changed
            && match &old {
                Some(o) => o.confirmed && o.entries() == row.entries(),
                None => row.entries() == 0,
            };
        if same {
            // Unchanged entries cut the same parts as before: nothing to store.
            if old.is_some_and(|o| o.seen != self.today) {
                self.seen.push(key);
            }
        } else {
            let (new, parts) = row.finish();
            self.add_parts(key, parts, &d.old_parts, cache)?;
            self.pending_bytes += new.body.len();
            self.rows.push(FolderWrite {
                key,
                row: new,
                provisional: false,
            });
        }
        self.maybe_flush(cache)
    }

    fn maybe_flush(&mut self, cache: &LocalCache) -> Result<()> {
        if self.pending_bytes >= CACHE_BATCH || self.seen.len() >= CACHE_SEEN_BATCH {
            self.flush(cache)?;
        }
        Ok(())
    }

    fn flush(&mut self, cache: &LocalCache) -> Result<()> {
        let r = cache.put_folders(&self.rows, &self.parts, &self.seen, self.run);
        self.rows.clear();
        self.parts.clear();
        self.seen.clear();
        self.pending_bytes = 0;
        r
    }
}

/// Consume the walker's events in order, build trees bottom-up, return the root tree id. A run
/// that stops early keeps the local-index entries of the folders it was in the middle of.
fn assemble(
    shared: &Shared,
    events: Receiver<Vec<Event>>,
    full: &Sender<FinishedPack>,
    summary: &mut BackupSummary,
    updates: &mut CacheUpdates,
) -> Result<Id> {
    let mut stack = vec![DirBuilder::new(shared, vec![], None, true, None)];
    let r = assemble_into(shared, events, full, summary, updates, &mut stack);
    if r.is_err() {
        updates.stopped(&mut stack, shared.cache)?;
    }
    r
}

fn assemble_into<'k>(
    shared: &'k Shared,
    events: Receiver<Vec<Event>>,
    full: &Sender<FinishedPack>,
    summary: &mut BackupSummary,
    updates: &mut CacheUpdates,
    stack: &mut Vec<DirBuilder<'k>>,
) -> Result<Id> {
    let comp = std::cell::RefCell::new(Compressor::new(shared.zstd_level)?);
    // Tree blobs are stored as each folder's listing fills them.
    let mut save = |data: &[u8]| -> Result<Id> {
        let id = shared.keys.blob_id(data);
        if shared.claim(id)
            && !shared.store_blob(&mut comp.borrow_mut(), id, BlobType::Tree, data, full)
        {
            return Err(Error::Interrupted);
        }
        Ok(id)
    };
    for ev in events.into_iter().flatten() {
        match ev {
            Event::Enter {
                name,
                meta,
                ancestor,
                folder,
            } => stack.push(DirBuilder::new(
                shared,
                name,
                Some(meta),
                ancestor,
                Some(folder),
            )),
            Event::Leave => {
                let mut d = stack.pop().ok_or(Error::Interrupted)?;
                updates.folder_done(&mut d, shared)?;
                let DirBuilder {
                    name,
                    meta,
                    ancestor,
                    tree,
                    ..
                } = d;
                let id = tree.finish(&mut save)?;
                summary.dirs += 1;
                let meta = meta.ok_or(Error::Interrupted)?;
                let parent = stack.last_mut().ok_or(Error::Interrupted)?;
                let mut node = meta.node(name, NodeKind::Dir { subtree: id }, 0);
                if ancestor {
                    node.flags |= FLAG_ANCESTOR;
                }
                parent.tree.push(&node, &mut save)?;
            }
            Event::File {
                name,
                path,
                meta,
                result,
            } => {
                let res = match result {
                    Pending::Ready(r) => r,
                    Pending::Wait(rx) => rx.recv().unwrap_or_else(|_| Err("backup aborted".into())),
                };
                let parent = stack.last_mut().ok_or(Error::Interrupted)?;
                let mut done = match res {
                    Ok(done) => done,
                    Err(reason) => {
                        parent.changed = true;
                        summary.skipped.push(Skipped {
                            path: display(&path),
                            reason,
                        });
                        continue;
                    }
                };
                let node = meta.node(
                    name,
                    NodeKind::File {
                        blobs: std::mem::take(&mut done.blobs),
                        hash: done.hash,
                    },
                    done.size,
                );
                // What no reader would accept is not stored: the file is skipped and named.
                if let Err(why) = check_node(&node) {
                    parent.changed = true;
                    summary.skipped.push(Skipped {
                        path: display(&path),
                        reason: format!("not backed up: {why}"),
                    });
                    continue;
                }
                match done.entry.take() {
                    Some(e) => {
                        parent.remember(&node.name, e);
                        parent.changed |= done.fresh;
                        updates.take_parts(parent, shared.cache)?;
                    }
                    None => parent.changed = true,
                }
                if done.changed {
                    summary.warnings.push(Skipped {
                        path: display(&path),
                        reason: "changed while it was read; the stored copy may be inconsistent"
                            .into(),
                    });
                }
                summary.files += 1;
                summary.bytes += done.size;
                shared.progress.files_done.fetch_add(1, Ordering::Relaxed);
                parent.tree.push(&node, &mut save)?;
            }
            Event::Symlink { name, meta, target } => {
                summary.symlinks += 1;
                let parent = stack.last_mut().ok_or(Error::Interrupted)?;
                let node = meta.node(name, NodeKind::Symlink { target }, 0);
                parent.tree.push(&node, &mut save)?;
            }
            Event::Skipped(s) => summary.skipped.push(s),
        }
        if shared.aborted() {
            return Err(Error::Interrupted);
        }
    }
    if stack.len() != 1 {
        return Err(Error::Interrupted);
    }
    let root = stack.pop().ok_or(Error::Interrupted)?;
    root.tree.finish(&mut save)
}
