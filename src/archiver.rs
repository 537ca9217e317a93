//! Backup: walk the given paths, chunk and hash files on worker threads, compress on others,
//! pack, encrypt and upload, then write the index and finally the snapshot.
//!
//! Threads and bounded queues:
//! walker -> (file jobs) -> file workers -> (new blobs) -> blob workers -> packers -> uploaders.
//! The walker also sends an ordered event stream to the assembler (the calling thread), which
//! collects each file's result in order and builds the trees bottom-up.

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
use crate::cache::{FileEntry, LocalCache};
use crate::changes::{self, FileStat, Verdict};
use crate::chunker::Chunker;
use crate::compress::Compressor;
use crate::error::{Error, Result};
use crate::format::index::PackDesc;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree, FLAG_ANCESTOR};
use crate::format::BlobType;
use crate::ids::Id;
use crate::keys::Keys;
use crate::packer::{self, PackBuilder, Packer, SealedPack};
use crate::repo::Repository;

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
}

/// Live counters, read by the progress display.
#[derive(Default)]
pub struct Progress {
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    pub scan_finished: AtomicBool,
}

/// A path that was not backed up, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// The result of a backup run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BackupSummary {
    pub snapshot: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// File content bytes read (not counting the head-and-tail samples).
    pub bytes_read: u64,
    /// Files taken from the local index without reading their content.
    pub files_unchanged: u64,
    /// Bytes read to re-verify files whose inode or device changed (head and tail samples).
    pub bytes_sampled: u64,
    /// Bytes of new blobs as stored (after compression, before encryption and padding).
    pub bytes_added: u64,
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
    /// What the local index must learn about this path.
    update: CacheUpdate,
}

enum CacheUpdate {
    None,
    /// Unchanged, but not yet marked as seen today.
    Seen(Id),
    Write(Id, FileEntry),
}

type FileResult = std::result::Result<FileDone, String>;

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
    },
    Leave,
    File {
        name: Vec<u8>,
        path: PathBuf,
        meta: Meta,
        result: Receiver<FileResult>,
    },
    Symlink {
        name: Vec<u8>,
        meta: Meta,
        target: Vec<u8>,
    },
    Skipped(Skipped),
}

struct NewBlob {
    id: Id,
    blob_type: BlobType,
    data: Vec<u8>,
}

/// State shared by all stages.
struct Shared<'a> {
    keys: Arc<Keys>,
    cache: &'a LocalCache,
    chunker: Chunker,
    zstd_level: u8,
    pack_min: u64,
    force_reread: bool,
    /// Files modified this close to the start of the run (seconds) get no local-index entry:
    /// a change within the same timestamp tick after we read them would go unnoticed (FAT
    /// stores mtimes to 2 s).
    racy_after: i64,
    today: i64,
    /// Blobs first seen in this run (the repository's are looked up in the local index).
    claimed: Mutex<HashSet<Id>>,
    data_packer: Mutex<Packer>,
    tree_packer: Mutex<Packer>,
    written: Mutex<Vec<PackDesc>>,
    failure: Mutex<Option<Error>>,
    abort: AtomicBool,
    progress: Arc<Progress>,
    packs_indexed: AtomicU64,
    bytes_read: AtomicU64,
    bytes_added: AtomicU64,
    blobs_new: AtomicU64,
    blobs_reused: AtomicU64,
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
    /// Claim a blob id: true when it is new and the caller must store it.
    fn claim(&self, id: Id) -> bool {
        let claimed = || self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        let new = !claimed().contains(&id)
            && match self.cache.has_blob(&id) {
                Ok(stored) => !stored && claimed().insert(id),
                Err(e) => {
                    self.fail(e);
                    false
                }
            };
        if new {
            self.blobs_new.fetch_add(1, Ordering::Relaxed);
        } else {
            self.blobs_reused.fetch_add(1, Ordering::Relaxed);
        }
        new
    }
}

fn display(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

struct Excludes {
    full: GlobSet,
    base: GlobSet,
    paths: Vec<PathBuf>,
}

impl Excludes {
    fn new(patterns: &[String], paths: &[PathBuf]) -> Result<Excludes> {
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
    fn matches(&self, path: &Path) -> bool {
        self.paths.iter().any(|p| p == path)
            || self.full.is_match(path)
            || path
                .file_name()
                .map(|n| self.base.is_match(Path::new(n)))
                .unwrap_or(false)
    }
}

/// Absolute, symlink-resolved, de-nested backup roots in tree order.
fn prepare_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
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
    events: Sender<Event>,
    jobs: Sender<FileJob>,
}

impl Walker<'_> {
    fn send(&self, e: Event) -> bool {
        !self.shared.aborted() && self.events.send(e).is_ok()
    }

    fn skip(&self, path: &Path, reason: impl Into<String>) -> bool {
        self.send(Event::Skipped(Skipped {
            path: display(path),
            reason: reason.into(),
        }))
    }

    /// Emit one entry (and everything under it). Returns false when the run is aborting.
    fn item(&self, path: &Path, name: Vec<u8>) -> bool {
        if self.excludes.matches(path) {
            return true;
        }
        let md = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => return self.skip(path, e.to_string()),
        };
        let meta = Meta::of(&md);
        let ft = md.file_type();
        if ft.is_dir() {
            let entries = match read_dir_sorted(path) {
                Ok(v) => v,
                Err(e) => return self.skip(path, format!("cannot list folder: {e}")),
            };
            if !self.send(Event::Enter {
                name,
                meta,
                ancestor: false,
            }) {
                return false;
            }
            for (child_name, child_path) in entries {
                if !self.item(&child_path, child_name) {
                    return false;
                }
            }
            self.send(Event::Leave)
        } else if ft.is_file() {
            let (tx, rx) = bounded(1);
            let job = FileJob {
                path: path.to_path_buf(),
                meta,
                reply: tx,
            };
            if self.jobs.send(job).is_err() {
                return false;
            }
            self.send(Event::File {
                name,
                path: path.to_path_buf(),
                meta,
                result: rx,
            })
        } else if ft.is_symlink() {
            match fs::read_link(path) {
                Ok(t) => self.send(Event::Symlink {
                    name,
                    meta,
                    target: t.as_os_str().as_bytes().to_vec(),
                }),
                Err(e) => self.skip(path, format!("cannot read link: {e}")),
            }
        } else {
            self.skip(path, "not a regular file, folder or symlink")
        }
    }

    fn run(&self, roots: &[PathBuf]) {
        let mut stack: Vec<Vec<u8>> = Vec::new();
        for root in roots {
            let comps: Vec<Vec<u8>> = root
                .components()
                .skip(1)
                .map(|c| c.as_os_str().as_bytes().to_vec())
                .collect();
            if comps.is_empty() {
                // Backing up "/" itself: its entries become the snapshot root's entries.
                match read_dir_sorted(root) {
                    Ok(entries) => {
                        for (n, p) in entries {
                            if !self.item(&p, n) {
                                return;
                            }
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
                if !self.send(Event::Enter {
                    name: c.clone(),
                    meta,
                    ancestor: true,
                }) {
                    return;
                }
            }
            if !self.item(root, comps[comps.len() - 1].clone()) {
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

fn read_dir_sorted(dir: &Path) -> io::Result<Vec<(Vec<u8>, PathBuf)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        v.push((e.file_name().as_bytes().to_vec(), e.path()));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Count files and bytes ahead of the backup so progress can show an ETA.
fn scan(roots: &[PathBuf], excludes: &Excludes, progress: &Progress, abort: &AtomicBool) {
    let mut stack: Vec<PathBuf> = roots.to_vec();
    while let Some(p) = stack.pop() {
        if abort.load(Ordering::Relaxed) {
            return;
        }
        if excludes.matches(&p) {
            continue;
        }
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if md.is_file() {
            progress.total_files.fetch_add(1, Ordering::Relaxed);
            progress.total_bytes.fetch_add(md.len(), Ordering::Relaxed);
        }
    }
    progress.scan_finished.store(true, Ordering::Relaxed);
}

fn file_worker(shared: &Shared, jobs: Receiver<FileJob>, blobs: Sender<NewBlob>) {
    let mut buf = vec![0u8; shared.chunker.max_size() * 2];
    for job in jobs {
        let res = if shared.aborted() {
            Err("backup aborted".to_string())
        } else {
            let key = shared.keys.name.keyed_hash(job.path.as_os_str().as_bytes());
            match from_cache(shared, &job, &key) {
                Ok(Some(done)) => Ok(done),
                Ok(None) => read_file(shared, &job, &key, &mut buf, &blobs),
                Err(e) => {
                    shared.fail(e);
                    Err("backup aborted".to_string())
                }
            }
        };
        let _ = job.reply.send(res);
    }
}

/// The file's content as the local index remembers it, when the rules in `changes` say it
/// is unchanged and every blob it lists is in the repository.
fn from_cache(shared: &Shared, job: &FileJob, key: &Id) -> Result<Option<FileDone>> {
    if shared.force_reread {
        return Ok(None);
    }
    let Some((entry, seen)) = shared.cache.file(key)? else {
        return Ok(None);
    };
    let now = job.meta.stat();
    let update = match changes::classify(&entry, &now) {
        Verdict::Changed => return Ok(None),
        Verdict::Unchanged if seen == shared.today => CacheUpdate::None,
        Verdict::Unchanged => CacheUpdate::Seen(*key),
        Verdict::MetadataOnly => CacheUpdate::Write(*key, changes::refreshed(&entry, &now)),
        Verdict::VerifySample => {
            let Ok(f) = File::open(&job.path) else {
                return Ok(None);
            };
            let Ok((sample, n)) = changes::sample_hash(&shared.keys.sample, &f, now.size) else {
                return Ok(None);
            };
            shared.bytes_sampled.fetch_add(n, Ordering::Relaxed);
            if sample != entry.sample {
                return Ok(None);
            }
            CacheUpdate::Write(*key, changes::refreshed(&entry, &now))
        }
    };
    if !shared.cache.has_blobs(&entry.blobs)? {
        return Ok(None);
    }
    shared.files_unchanged.fetch_add(1, Ordering::Relaxed);
    shared
        .progress
        .bytes_done
        .fetch_add(entry.stat.size, Ordering::Relaxed);
    Ok(Some(FileDone {
        size: entry.stat.size,
        hash: entry.hash,
        blobs: entry.blobs,
        changed: false,
        update,
    }))
}

fn read_file(
    shared: &Shared,
    job: &FileJob,
    key: &Id,
    buf: &mut [u8],
    out: &Sender<NewBlob>,
) -> FileResult {
    let mut f = File::open(&job.path).map_err(|e| e.to_string())?;
    let mut hasher = shared.keys.file_hash.hasher();
    let mut blobs = Vec::new();
    let max = shared.chunker.max_size();
    let (mut start, mut end, mut total, mut eof) = (0usize, 0usize, 0u64, false);
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
            if shared.claim(id) {
                let nb = NewBlob {
                    id,
                    blob_type: BlobType::Data,
                    data: chunk.to_vec(),
                };
                if out.send(nb).is_err() {
                    return Err("backup aborted".into());
                }
            }
            start += n;
        }
        if eof {
            break;
        }
        if shared.aborted() {
            return Err("backup aborted".into());
        }
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
    let update = if changed || job.meta.mtime >= shared.racy_after {
        CacheUpdate::None
    } else {
        match changes::sample_hash(&shared.keys.sample, &f, total) {
            Ok((sample, _)) => CacheUpdate::Write(
                *key,
                FileEntry {
                    stat: job.meta.stat(),
                    hash,
                    sample,
                    blobs: blobs.clone(),
                },
            ),
            Err(_) => CacheUpdate::None,
        }
    };
    Ok(FileDone {
        blobs,
        hash,
        size: total,
        changed,
        update,
    })
}

fn blob_worker(shared: &Shared, blobs: Receiver<NewBlob>, sealed: Sender<SealedPack>) {
    let mut comp = match Compressor::new(shared.zstd_level) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(e);
            return;
        }
    };
    for nb in blobs {
        if shared.aborted() {
            continue;
        }
        let (compression, out) = comp.compress(&nb.data);
        let stored = out.as_deref().unwrap_or(&nb.data);
        shared
            .bytes_added
            .fetch_add(stored.len() as u64, Ordering::Relaxed);
        let packer = match nb.blob_type {
            BlobType::Data => &shared.data_packer,
            BlobType::Tree => &shared.tree_packer,
        };
        let full = packer.lock().unwrap_or_else(|p| p.into_inner()).add(
            nb.id,
            compression,
            nb.data.len(),
            stored,
        );
        if let Some(full) = full {
            seal_and_send(shared, full, &sealed);
        }
    }
}

fn seal_and_send(shared: &Shared, b: PackBuilder, sealed: &Sender<SealedPack>) {
    match packer::seal(b, &shared.keys, shared.pack_min) {
        Ok(s) => {
            let _ = sealed.send(s);
        }
        Err(e) => shared.fail(e),
    }
}

/// Index the stored packs every this many packs (about 512 MiB), so that an interrupted or
/// killed backup leaves its work indexed and the next run reuses it instead of uploading again.
const CHECKPOINT_PACKS: usize = 32;

fn uploader(shared: &Shared, repo: &Repository, sealed: Receiver<SealedPack>) {
    for s in sealed {
        if shared.aborted() {
            continue;
        }
        if let Err(e) = repo.put_pack(&s.desc.id, s.bytes) {
            shared.fail(e);
            continue;
        }
        let batch = {
            let mut w = shared.written.lock().unwrap_or_else(|p| p.into_inner());
            w.push(s.desc);
            if w.len() >= CHECKPOINT_PACKS {
                std::mem::take(&mut *w)
            } else {
                Vec::new()
            }
        };
        if !batch.is_empty() {
            shared
                .packs_indexed
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            if let Err(e) = repo.put_index(&batch) {
                shared.fail(e);
            }
        }
    }
}

struct DirBuilder {
    name: Vec<u8>,
    meta: Option<Meta>,
    ancestor: bool,
    nodes: Vec<Node>,
}

/// Largest number of blobs one index object describes.
const INDEX_BLOBS_PER_OBJECT: usize = 50_000;

/// Run a backup into `repo`.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupSummary> {
    let roots = prepare_paths(&opts.paths)?;
    let excludes = Excludes::new(&opts.excludes, &opts.exclude_paths)?;
    let threads = crate::worker_count(opts.threads);
    let cfg = repo.config().clone();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let cache = repo.cache()?;
    let shared = Shared {
        keys: repo.keys().clone(),
        cache,
        chunker: Chunker::new(&repo.keys().chunker, &cfg),
        zstd_level: cfg.zstd_level,
        pack_min: cfg.pack_min as u64,
        force_reread: opts.force_reread,
        racy_after: started - 2,
        today: crate::cache::today(),
        claimed: Mutex::new(HashSet::new()),
        data_packer: Mutex::new(Packer::new(BlobType::Data, 2, cfg.pack_target as usize)),
        tree_packer: Mutex::new(Packer::new(BlobType::Tree, 1, cfg.pack_target as usize)),
        written: Mutex::new(Vec::new()),
        failure: Mutex::new(None),
        abort: AtomicBool::new(false),
        progress: progress.clone(),
        packs_indexed: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        bytes_added: AtomicU64::new(0),
        blobs_new: AtomicU64::new(0),
        blobs_reused: AtomicU64::new(0),
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
    let previous = snapshots
        .iter()
        .max_by_key(|(_, s)| s.sequence)
        .map(|(id, s)| (*id, s.sequence));

    let mut summary = BackupSummary::default();
    let mut updates = CacheUpdates::default();
    let repo_ro: &Repository = repo;
    let root_id = thread::scope(|scope| -> Result<Id> {
        let (job_tx, job_rx) = bounded::<FileJob>(threads * 4);
        let (ev_tx, ev_rx) = bounded::<Event>(8192);
        let (blob_tx, blob_rx) = bounded::<NewBlob>(threads * 2);
        let uploads = if opts.uploads == 0 { 2 } else { opts.uploads };
        let (seal_tx, seal_rx) = bounded::<SealedPack>(uploads);
        let shared = &shared;
        let excludes = &excludes;
        let roots = &roots;
        scope.spawn(move || scan(roots, excludes, &shared.progress, &shared.abort));
        {
            let job_tx = job_tx.clone();
            scope.spawn(move || {
                Walker {
                    shared,
                    excludes,
                    events: ev_tx,
                    jobs: job_tx,
                }
                .run(roots)
            });
        }
        drop(job_tx);
        for _ in 0..threads {
            let (rx, tx) = (job_rx.clone(), blob_tx.clone());
            scope.spawn(move || file_worker(shared, rx, tx));
        }
        drop(job_rx);
        let mut blob_workers = Vec::new();
        for _ in 0..threads {
            let (rx, tx) = (blob_rx.clone(), seal_tx.clone());
            blob_workers.push(scope.spawn(move || blob_worker(shared, rx, tx)));
        }
        drop(blob_rx);
        let mut uploaders = Vec::new();
        for _ in 0..uploads {
            let rx = seal_rx.clone();
            uploaders.push(scope.spawn(move || uploader(shared, repo_ro, rx)));
        }
        drop(seal_rx);

        let root = assemble(shared, ev_rx, &blob_tx, &mut summary, &mut updates);
        drop(blob_tx);
        for w in blob_workers {
            let _ = w.join();
        }
        let mut rest = shared
            .data_packer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush();
        rest.extend(
            shared
                .tree_packer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .flush(),
        );
        for b in rest {
            if !shared.aborted() {
                seal_and_send(shared, b, &seal_tx);
            }
        }
        drop(seal_tx);
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
    let written = std::mem::take(&mut *shared.written.lock().unwrap_or_else(|p| p.into_inner()));
    let failure = shared
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let root_id = match (failure, root_id) {
        (None, Ok(id)) => id,
        (Some(e), _) | (None, Err(e)) => {
            // Index what was stored so that the next run reuses it instead of uploading again.
            if !written.is_empty() {
                let _ = repo.put_index(&written);
            }
            return Err(e);
        }
    };
    flushed?;
    summary.packs_written = written.len() as u64 + shared.packs_indexed.load(Ordering::Relaxed);
    let mut batch: Vec<PackDesc> = Vec::new();
    let mut count = 0;
    for p in written {
        count += p.blobs.len();
        batch.push(p);
        if count >= INDEX_BLOBS_PER_OBJECT {
            repo.put_index(&batch)?;
            batch.clear();
            count = 0;
        }
    }
    if !batch.is_empty() {
        repo.put_index(&batch)?;
    }
    summary.bytes_read = shared.bytes_read.load(Ordering::Relaxed);
    summary.bytes_added = shared.bytes_added.load(Ordering::Relaxed);
    summary.blobs_new = shared.blobs_new.load(Ordering::Relaxed);
    summary.blobs_reused = shared.blobs_reused.load(Ordering::Relaxed);
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
        previous: previous.map(|p| p.0),
        sequence: previous.map(|p| p.1 + 1).unwrap_or(1),
        summary: Summary {
            files: summary.files,
            dirs: summary.dirs,
            bytes: summary.bytes_read,
        },
    };
    let id = repo.write_snapshot(&snap)?;
    summary.snapshot = id.to_hex();
    cache.expire_files()?;
    summary.requests = repo.store().stats();
    Ok(summary)
}

/// Local-index writes collected by the assembler, written in batches (one transaction each).
#[derive(Default)]
struct CacheUpdates {
    entries: Vec<(Id, FileEntry)>,
    seen: Vec<Id>,
}

const CACHE_BATCH: usize = 2048;

impl CacheUpdates {
    fn add(&mut self, u: CacheUpdate, cache: &LocalCache) -> Result<()> {
        match u {
            CacheUpdate::None => return Ok(()),
            CacheUpdate::Seen(k) => self.seen.push(k),
            CacheUpdate::Write(k, e) => self.entries.push((k, e)),
        }
        if self.entries.len() + self.seen.len() >= CACHE_BATCH {
            self.flush(cache)?;
        }
        Ok(())
    }
    fn flush(&mut self, cache: &LocalCache) -> Result<()> {
        let r = cache.put_files(&self.entries, &self.seen);
        self.entries.clear();
        self.seen.clear();
        r
    }
}

/// Consume the walker's events in order, build trees bottom-up, return the root tree id.
fn assemble(
    shared: &Shared,
    events: Receiver<Event>,
    blobs: &Sender<NewBlob>,
    summary: &mut BackupSummary,
    updates: &mut CacheUpdates,
) -> Result<Id> {
    let mut stack = vec![DirBuilder {
        name: vec![],
        meta: None,
        ancestor: true,
        nodes: vec![],
    }];
    let save_tree = |nodes: Vec<Node>| -> Result<Id> {
        let mut t = Tree { nodes };
        t.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let data = t.encode();
        let id = shared.keys.blob_id(&data);
        if shared.claim(id) {
            blobs
                .send(NewBlob {
                    id,
                    blob_type: BlobType::Tree,
                    data,
                })
                .map_err(|_| Error::Interrupted)?;
        }
        Ok(id)
    };
    for ev in events {
        match ev {
            Event::Enter {
                name,
                meta,
                ancestor,
            } => stack.push(DirBuilder {
                name,
                meta: Some(meta),
                ancestor,
                nodes: vec![],
            }),
            Event::Leave => {
                let d = stack.pop().ok_or(Error::Interrupted)?;
                let id = save_tree(d.nodes)?;
                summary.dirs += 1;
                let meta = d.meta.ok_or(Error::Interrupted)?;
                let parent = stack.last_mut().ok_or(Error::Interrupted)?;
                let mut node = meta.node(d.name, NodeKind::Dir { subtree: id }, 0);
                if d.ancestor {
                    node.flags |= FLAG_ANCESTOR;
                }
                parent.nodes.push(node);
            }
            Event::File {
                name,
                path,
                meta,
                result,
            } => {
                let res = result
                    .recv()
                    .unwrap_or_else(|_| Err("backup aborted".into()));
                match res {
                    Ok(done) => {
                        if done.changed {
                            summary.warnings.push(Skipped {
                                path: display(&path),
                                reason:
                                    "changed while it was read; the stored copy may be inconsistent"
                                        .into(),
                            });
                        }
                        summary.files += 1;
                        shared.progress.files_done.fetch_add(1, Ordering::Relaxed);
                        updates.add(done.update, shared.cache)?;
                        let parent = stack.last_mut().ok_or(Error::Interrupted)?;
                        parent.nodes.push(meta.node(
                            name,
                            NodeKind::File {
                                blobs: done.blobs,
                                hash: done.hash,
                            },
                            done.size,
                        ));
                    }
                    Err(reason) => summary.skipped.push(Skipped {
                        path: display(&path),
                        reason,
                    }),
                }
            }
            Event::Symlink { name, meta, target } => {
                summary.symlinks += 1;
                let parent = stack.last_mut().ok_or(Error::Interrupted)?;
                parent
                    .nodes
                    .push(meta.node(name, NodeKind::Symlink { target }, 0));
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
    save_tree(root.nodes)
}
