//! Restore: recreate a snapshot's files under a target folder, verifying every byte, and never
//! writing outside the target whatever the snapshot says (names are untrusted input).

mod batch;
mod files;
mod journal;
mod meta;
mod walk;

use files::{restore_file, WorkerBufs};
use journal::Journal;
pub use journal::JOURNAL_DIR;
use meta::{
    chown_fd, chown_symlink, describe_write_error, mode_mismatch, name_hint, set_dir_meta,
    unsupported_here, DirUpdate,
};
use walk::Walk;

use crate::directio::{FileWriter, Staging};
use crate::error::{os_error_in, Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{
    name_is_safe, FolderCursor, Node, NodeKind, FLAG_ANCESTOR, FLAG_VAULT_ONLY, MAX_DEPTH,
};
use crate::format::BlobType;
use crate::ids::Id;
use crate::progress::{Progress, Skipped};
use crate::repo::{PackReaders, PlanCounters, PlanReader, Repository};
use crate::treewalk::{show_path, Budget};
use crate::workers::Pool;
use cap_fs_ext::DirExt;
use cap_std::fs::{Dir, OpenOptions};
use crossbeam_channel::bounded;
use rustix::io::Errno;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, UNIX_EPOCH};

pub struct RestoreOptions {
    pub target: PathBuf,
    /// Paths inside the snapshot (components, see [`split_path`]) to restore; empty means
    /// everything.
    pub includes: Vec<Vec<Vec<u8>>>,
    pub overwrite: bool,
    /// File workers; 0 means two per core.
    pub threads: usize,
    /// Only files and symlinks marked vault-only (with the folders leading to them).
    pub vault_only: bool,
    /// Where the journal that lets a re-run finish a killed restore is kept (a private folder
    /// of this user's, never the target); `None`: no journal.
    pub journal_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreSummary {
    pub snapshot: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Files and symlinks found in the target already as the snapshot has them (a restore run
    /// again after it was interrupted or the disk filled up): left as they are.
    pub already: u64,
    /// Not restored because something different is in the way (without --overwrite).
    pub skipped: Vec<Skipped>,
    /// Not restored because of damage or refusal (unsafe names, unreadable data).
    pub errors: Vec<Skipped>,
    /// Requests made to the repository storage by this run (opening it included).
    pub requests: crate::backend::RequestStats,
    /// What was downloaded for what was restored (§12.3).
    pub download: Download,
    /// Run as root, items whose recorded owner could not be set (a filesystem without owners,
    /// such as exFAT), and the first reason. Their content and times are restored.
    pub owners_not_set: u64,
    pub owner_failure: Option<String>,
    /// Files and folders whose permissions, read back, are not the recorded ones: the target's
    /// filesystem does not keep them (FAT, exFAT, some network shares), whether its chmod
    /// succeeded silently or refused.
    pub modes_not_kept: u64,
    /// Of those, the ones recorded private (no access for group or others) that are not here.
    pub private_exposed: u64,
    /// Files restored as stored that kept changing while they were backed up (§10,
    /// `FLAG_TORN`): their content may mix two versions.
    pub torn: Vec<String>,
}

/// Bytes downloaded against bytes restored.
#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct Download {
    /// Everything received from the repository storage by this run, opening it included.
    pub total: u64,
    /// File content: the planned pack ranges, with their age headers.
    pub content: u64,
    /// The requests that brought it.
    pub content_requests: u64,
    /// The rest: key files, config, snapshots, index, folder listings (and content read blob
    /// by blob: a file whose planned range failed, or that was found in the way).
    pub metadata: u64,
    /// Bytes of the files restored.
    pub restored: u64,
    /// `content / restored`: 1.0 downloads exactly what is restored.
    pub content_ratio: f64,
    /// Ranges downloaded a second time because the first download failed authentication
    /// (bytes damaged on the way, not at rest).
    pub refetched: u64,
    /// Blobs read again long after their planned reads, each fetched alone.
    pub extra_reads: u64,
}

impl Download {
    /// Complete the figures once the run's total is known.
    pub fn finish(&mut self, total_received: u64) {
        self.total = total_received;
        self.metadata = total_received.saturating_sub(self.content);
        self.content_ratio = if self.restored == 0 {
            0.0
        } else {
            self.content as f64 / self.restored as f64
        };
    }
}

impl RestoreSummary {
    /// Add the counts and lists of another run (one restore per snapshot, as `--vault-only` does).
    pub fn absorb(&mut self, other: RestoreSummary) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.symlinks += other.symlinks;
        self.bytes += other.bytes;
        self.already += other.already;
        self.skipped.extend(other.skipped);
        self.errors.extend(other.errors);
        self.owners_not_set += other.owners_not_set;
        self.owner_failure = self.owner_failure.take().or(other.owner_failure);
        self.modes_not_kept += other.modes_not_kept;
        self.private_exposed += other.private_exposed;
        self.torn.extend(other.torn);
        self.download.content += other.download.content;
        self.download.content_requests += other.download.content_requests;
        self.download.restored += other.download.restored;
        self.download.refetched += other.download.refetched;
        self.download.extra_reads += other.download.extra_reads;
    }
}

/// Refuse any name that is not one plain path component.
pub fn safe_name(name: &[u8]) -> std::result::Result<&OsStr, String> {
    if !name_is_safe(name) {
        return Err(format!(
            "refused unsafe name {:?} from the snapshot",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(OsStr::from_bytes(name))
}

/// Split a snapshot path into components.
pub fn split_path(p: &str) -> Vec<Vec<u8>> {
    p.as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| c.to_vec())
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sel {
    All,
    Partial,
    None,
}

/// The paths to restore, arranged so that each node costs O(depth) whatever their number
/// (`restore --vault-only` passes one per moved file).
struct Selection {
    /// Index of each include in the caller's list.
    includes: HashMap<Vec<Vec<u8>>, usize>,
    /// Every proper prefix of an include.
    prefixes: HashSet<Vec<Vec<u8>>>,
}

impl Selection {
    fn new(list: &[Vec<Vec<u8>>]) -> Self {
        let mut prefixes = HashSet::new();
        for inc in list {
            for k in 0..inc.len() {
                prefixes.insert(inc[..k].to_vec());
            }
        }
        Selection {
            includes: list
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i))
                .collect(),
            prefixes,
        }
    }

    fn select(&self, path: &[Vec<u8>]) -> Sel {
        if self.includes.is_empty() {
            return Sel::All;
        }
        if (0..=path.len()).any(|k| self.includes.contains_key(&path[..k])) {
            return Sel::All;
        }
        if self.prefixes.contains(path) {
            Sel::Partial
        } else {
            Sel::None
        }
    }

    fn mark(&self, path: &[Vec<u8>], matched: &mut [bool]) {
        if let Some(&i) = self.includes.get(path) {
            matched[i] = true;
        }
    }
}

struct FileJob {
    dir: Arc<Dir>,
    name: Vec<u8>,
    node: Node,
    shown: String,
}

struct DirMeta {
    path: Vec<Vec<u8>>,
    ancestor: bool,
    /// The folder existed before this restore: its metadata is left as it is, unless the
    /// user asked to overwrite (restoring into `/` must never chmod `/home` or `/tmp`).
    existed: bool,
    mode: u32,
    mtime: i64,
    mtime_nanos: u32,
    uid: u32,
    gid: u32,
}

/// A recorded time as the system's. Total: a time the system cannot represent (a hostile
/// snapshot's extreme value) becomes the nearest end of the representable range, never a panic.
fn system_time(secs: i64, nanos: u32) -> std::time::SystemTime {
    let nanos = Duration::from_nanos(u64::from(nanos.min(999_999_999)));
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    match t.and_then(|t| t.checked_add(nanos)) {
        Some(t) => t,
        None if secs >= 0 => far(true),
        None => far(false),
    }
}

/// Set the modification time of `name` in `dir` (the entry itself, never a symlink's target),
/// leaving the access time. Any recorded time, before 1970 included: fs-set-times (behind
/// cap-std's `set_times`) panics on times before the epoch; the kernel clamps what its
/// filesystem cannot store.
fn set_mtime_at(dir: &Dir, name: &OsStr, secs: i64, nanos: u32) -> std::io::Result<()> {
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: nanos.min(999_999_999).into(),
        },
    };
    rustix::fs::utimensat(dir, name, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .map_err(std::io::Error::from)
}

/// The latest (or earliest) time this system represents, to a second.
fn far(future: bool) -> std::time::SystemTime {
    let mut step = Duration::from_secs(1 << 62);
    let mut t = UNIX_EPOCH;
    while step >= Duration::from_secs(1) {
        let next = if future {
            t.checked_add(step)
        } else {
            t.checked_sub(step)
        };
        if let Some(n) = next {
            t = n;
        } else {
            step /= 2;
        }
    }
    t
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn extreme_recorded_times_do_not_panic() {
        for (s, n) in [
            (i64::MAX, 999_999_999),
            (i64::MIN, 999_999_999),
            (i64::MAX, u32::MAX),
            (-1, 5),
            (0, 0),
        ] {
            let _ = system_time(s, n);
        }
        assert_eq!(system_time(1, 5), UNIX_EPOCH + Duration::new(1, 5));
        assert!(system_time(i64::MAX, 0) > system_time(4_000_000_000, 0));
        assert!(system_time(i64::MIN, 0) < UNIX_EPOCH);
    }
}

struct Ctx<'a> {
    repo: &'a Repository,
    sel: Selection,
    overwrite: bool,
    vault_only: bool,
    summary: Mutex<RestoreSummary>,
    progress: Arc<Progress>,
    /// Workers: a large file read while others idle gets its blobs read ahead on a second
    /// thread.
    workers: Pool,
    /// Give items their recorded owner: only root can, as with tar and restic.
    owners: bool,
    /// What this run creates and writes into, for a re-run after a kill.
    journal: Journal,
    /// The target ran out of space: nothing more is attempted.
    full: std::sync::atomic::AtomicBool,
    /// Per filesystem (device number), whether it tells `IMG.JPG` from `img.jpg` apart (FAT,
    /// exFAT, NTFS and APFS by default do not); asked only of folders where it matters.
    ignores_case: Mutex<HashMap<u64, bool>>,
    /// What the download plans fetched (§12.3).
    planned: Arc<PlanCounters>,
}

/// Whether names in `dir` that differ only in upper and lower case are one name there: create a
/// lower-case probe file and look it up in upper case. `None` where nothing can be created.
fn ignores_case(dir: &Dir) -> Option<bool> {
    let name = format!(".vault-case-{}", Id::random().short());
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    dir.open_with(&name, &opts).ok()?;
    let folded = dir.symlink_metadata(name.to_uppercase()).is_ok();
    let _ = dir.remove_file(&name);
    Some(folded)
}

impl Ctx<'_> {
    /// Describe a failed write, noting a full target (or quota): once it is full, every other file
    /// would fail the same way, each with its own message.
    fn write_error(&self, what: &str, e: std::io::Error) -> String {
        if os_error_in(&e, &[Errno::NOSPC, Errno::DQUOT]) {
            self.full.store(true, Ordering::Relaxed);
        }
        describe_write_error(what, &e)
    }

    /// `write_error` for creating `name` (a folder, a symlink, a file moved into place), with
    /// what the filesystem may not allow in names.
    fn name_error(&self, what: &str, e: std::io::Error, name: &[u8]) -> String {
        self.write_error(what, e) + name_hint(name)
    }

    /// Stop starting new work: interrupted, or the target is full.
    fn stopping(&self) -> bool {
        crate::interrupt::requested() || self.full.load(Ordering::Relaxed)
    }

    /// Run `chown` when run as root. A failure is counted, not fatal: the content is what a
    /// restore is for.
    fn set_owner(&self, chown: impl FnOnce() -> std::io::Result<()>) {
        if !self.owners {
            return;
        }
        if let Err(e) = chown() {
            let mut s = self.summary.lock().unwrap_or_else(|p| p.into_inner());
            s.owners_not_set += 1;
            s.owner_failure.get_or_insert_with(|| e.to_string());
        }
    }

    /// Whether the filesystem holding `dir` ignores case, probed once per filesystem (in the
    /// first folder of it where a probe file can be created; until then, no).
    fn ignores_case_at(&self, dir: &Dir) -> bool {
        let Ok(dev) = dir
            .dir_metadata()
            .map(|m| cap_std::fs::MetadataExt::dev(&m))
        else {
            return false;
        };
        let mut known = self.ignores_case.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = known.get(&dev) {
            return *k;
        }
        match ignores_case(dir) {
            Some(k) => *known.entry(dev).or_insert(k),
            None => false,
        }
    }

    /// Count an item whose permissions did not stick (see `mode_mismatch`).
    fn check_mode(&self, wanted: u32, actual: std::io::Result<u32>) {
        let Ok(actual) = actual else { return };
        let (differs, exposed) = mode_mismatch(wanted, actual);
        if differs {
            let mut s = self.summary.lock().unwrap_or_else(|p| p.into_inner());
            s.modes_not_kept += 1;
            s.private_exposed += u64::from(exposed);
        }
    }

    fn error(&self, shown: &str, reason: impl Into<String>) {
        self.summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .errors
            .push(Skipped {
                path: shown.to_string(),
                reason: reason.into(),
            });
    }

    /// An item already in the target as the snapshot has it (`file_bytes`: a file, its size).
    fn already_there(&self, file_bytes: Option<u64>) {
        self.summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .already += 1;
        if let Some(bytes) = file_bytes {
            self.progress.files_done.fetch_add(1, Ordering::Relaxed);
            self.progress.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn skipped(&self, shown: &str, reason: impl Into<String>) {
        self.summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .skipped
            .push(Skipped {
                path: shown.to_string(),
                reason: reason.into(),
            });
    }
}

/// Threads fetching planned ranges ahead of the workers: two requests in flight hide most of
/// a service's latency; on a local disk the second overlaps reading with decrypting.
const AHEAD_THREADS: usize = 2;

/// Restore `snap` into `opts.target`.
pub fn restore(
    repo: &Repository,
    snap_id: &Id,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreSummary> {
    // A path the snapshot does not hold fails before anything is created: a mistyped
    // `--include` leaves no empty target folder behind. A path whose lookup fails (a damaged
    // tree on the way) is left to the walk, which restores what it can and names the damage.
    let mut readers = PackReaders::default();
    for inc in &opts.includes {
        if let Ok(None) = crate::treewalk::resolve(repo, &snap.root, inc, &mut readers) {
            return Err(not_in_snapshot(inc, snap_id));
        }
    }
    drop(readers);
    std::fs::create_dir_all(&opts.target)
        .map_err(|e| Error::io(format!("cannot create {}", opts.target.display()), e))?;
    let root = Dir::open_ambient_dir(&opts.target, cap_std::ambient_authority())
        .map_err(|e| Error::io(format!("cannot open {}", opts.target.display()), e))?;
    let journal = Journal::open(opts.journal_dir.as_deref(), &root, &opts.target)?;
    journal.note(&[], None);
    let root = Arc::new(root);
    // Twice as many workers as cores by default: with direct writes a worker waits for the
    // disk while another decrypts.
    let threads = if opts.threads == 0 {
        2 * crate::worker_count(0)
    } else {
        opts.threads
    };
    let ctx = Ctx {
        repo,
        workers: Pool::new(threads),
        sel: Selection::new(&opts.includes),
        overwrite: opts.overwrite,
        vault_only: opts.vault_only,
        summary: Mutex::new(RestoreSummary {
            snapshot: snap_id.to_hex(),
            ..Default::default()
        }),
        progress: progress.clone(),
        owners: rustix::process::geteuid().is_root(),
        journal,
        full: Default::default(),
        ignores_case: Default::default(),
        planned: Default::default(),
    };
    if opts.includes.is_empty() {
        progress
            .total_files
            .store(snap.summary.files, Ordering::Relaxed);
        progress
            .total_bytes
            .store(snap.summary.bytes, Ordering::Relaxed);
        progress.scan_finished.store(true, Ordering::Relaxed);
    }
    let (dirs, matched, walked) = walk_with_workers(&ctx, &root, (snap_id, snap), opts, threads);
    // Folder metadata last, children before parents, so later writes do not change it.
    let stopped =
        walked.is_err() || crate::interrupt::requested() || ctx.full.load(Ordering::Relaxed);
    finish_folders(&ctx, &root, &dirs, stopped, opts.overwrite);
    walked?;
    if !stopped {
        ctx.journal.finish();
    }
    if crate::interrupt::requested() {
        return Err(Error::Interrupted);
    }
    if ctx.full.load(Ordering::Relaxed) {
        let s = ctx.summary.lock().unwrap_or_else(|p| p.into_inner());
        return Err(Error::TargetFull {
            files: s.files + s.already,
            target: opts.target.display().to_string(),
        });
    }
    for (i, m) in matched.iter().enumerate() {
        if !m {
            return Err(not_in_snapshot(&opts.includes[i], snap_id));
        }
    }
    let mut s = ctx.summary.into_inner().unwrap_or_else(|p| p.into_inner());
    s.requests = repo.store().stats();
    let planned = ctx.planned.figures();
    s.download = Download {
        content: planned.bytes_fetched,
        content_requests: planned.requests,
        refetched: planned.refetched,
        extra_reads: planned.extra_reads,
        restored: s.bytes,
        ..Default::default()
    };
    s.download.finish(s.requests.bytes_received);
    Ok(s)
}

fn not_in_snapshot(path: &[Vec<u8>], snap_id: &Id) -> Error {
    Error::Invalid(format!(
        "{} is not in snapshot {} (`vault ls {}` lists what it holds)",
        show_path(path),
        snap_id.short(),
        snap_id.short()
    ))
}

/// The walk on this thread, files restored by `threads` workers; returns the folders entered,
/// which `--include` paths were found, and how the walk ended.
fn walk_with_workers(
    ctx: &Ctx<'_>,
    root: &Arc<Dir>,
    (snap_id, snap): (&Id, &Snapshot),
    opts: &RestoreOptions,
    threads: usize,
) -> (Vec<DirMeta>, Vec<bool>, Result<()>) {
    thread::scope(|scope| {
        // Room for a whole batch and the next: the walk plans one while the workers restore
        // the other.
        let (tx, rx) = bounded::<batch::Planned<'_>>(2 * batch::BATCH_FILES);
        for _ in 0..threads {
            let rx = rx.clone();
            scope.spawn(move || {
                let mut bufs = WorkerBufs::default();
                for (job, plan) in rx {
                    let plan = plan.as_ref().map(|p| &*p.0);
                    ctx.workers.busy(|| restore_file(ctx, &mut bufs, plan, job));
                }
            });
        }
        drop(rx);
        let (ahead_tx, ahead_rx) = bounded::<Arc<PlanReader<'_>>>(64);
        for _ in 0..AHEAD_THREADS {
            let ahead_rx = ahead_rx.clone();
            scope.spawn(move || {
                for plan in ahead_rx {
                    plan.fetch_ahead();
                }
            });
        }
        drop(ahead_rx);
        let mut w = Walk {
            ctx,
            readers: PackReaders::for_trees(),
            jobs: batch::Batcher {
                ctx,
                jobs: &tx,
                ahead: &ahead_tx,
                ahead_threads: AHEAD_THREADS,
                readers: threads,
                pending: Vec::new(),
                bytes: 0,
            },
            dirs: Vec::new(),
            matched: vec![false; opts.includes.len()],
            budget: Budget::of(snap_id, snap),
        };
        let mut r = w.folder(&snap.root, root.clone(), Vec::new(), ctx.sel.select(&[]));
        if r.is_ok() {
            r = w.jobs.flush();
        }
        let (dirs, matched) = (w.dirs, w.matched);
        // The workers end once the queue is closed and empty.
        drop(w.jobs);
        drop(tx);
        drop(ahead_tx);
        (dirs, matched, r)
    })
}

/// Give folders their recorded metadata, children before parents. Folders that were there
/// before keep their mode and owner, and the ancestors of the backed-up paths keep everything
/// (restoring into `/` must not chmod /tmp); with --overwrite the backed-up ones get theirs
/// back. Their recorded mtime they get back either way: what this run (or an interrupted one)
/// added to them changed it. A run that stopped early leaves the folders it made writable, for
/// the run that finishes it.
fn finish_folders(ctx: &Ctx<'_>, root: &Dir, dirs: &[DirMeta], stopped: bool, overwrite: bool) {
    for d in dirs.iter().rev() {
        let how = match (d.existed, stopped) {
            (true, true) => continue,
            (true, false) if d.ancestor => continue,
            (true, false) if !overwrite => DirUpdate::Mtime,
            (_, false) => DirUpdate::All,
            (false, true) => DirUpdate::AllButWritable,
        };
        if let Err(e) = set_dir_meta(ctx, root, d, how) {
            ctx.error(
                &show_path(&d.path),
                format!("cannot set folder metadata: {e}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_fat_refuses_are_explained() {
        assert!(name_hint(b"12:30 lunch.jpg").contains("FAT and exFAT do not allow"));
        assert!(name_hint(b"what?.png").contains("FAT"));
        assert!(name_hint(b"a\\b").contains("FAT"));
        assert_eq!(name_hint(b"IMG_0001.JPG"), "");
        assert_eq!(name_hint("été à Paris.jpg".as_bytes()), "");
    }

    #[test]
    fn a_file_too_large_for_the_target_says_why() {
        let e = std::io::Error::from(rustix::io::Errno::FBIG);
        let msg = describe_write_error("write error", &e);
        assert!(msg.starts_with("write error: "), "{msg}");
        assert!(msg.contains("FAT32 cannot hold a file of 4 GiB"), "{msg}");
        let e = std::io::Error::from(rustix::io::Errno::IO);
        assert!(!describe_write_error("write error", &e).contains("FAT32"));
    }

    #[test]
    fn a_filesystem_that_cannot_store_modes_does_not_fail_the_file() {
        use rustix::io::Errno;
        for refused in [Errno::PERM, Errno::NOSYS, Errno::OPNOTSUPP] {
            assert!(unsupported_here(&std::io::Error::from(refused)));
        }
        for other in [Errno::IO, Errno::NOSPC, Errno::ROFS] {
            assert!(!unsupported_here(&std::io::Error::from(other)));
        }
    }

    #[test]
    fn permissions_that_did_not_stick_are_counted_and_exposed_private_items_named() {
        assert_eq!(mode_mismatch(0o644, 0o100644), (false, false));
        // exFAT mounted as root reports 0777 whatever chmod asked for.
        assert_eq!(mode_mismatch(0o644, 0o777), (true, false));
        assert_eq!(mode_mismatch(0o600, 0o777), (true, true));
        assert_eq!(mode_mismatch(0o700, 0o755), (true, true));
        // Mounted with fmask=077: other permissions, but still private.
        assert_eq!(mode_mismatch(0o600, 0o700), (true, false));
        // Only the permission bits count: setuid is never restored.
        assert_eq!(mode_mismatch(0o4755, 0o755), (false, false));
    }

    #[test]
    fn unsafe_names_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"x\0y"] {
            assert!(safe_name(bad).is_err(), "{bad:?}");
        }
        assert!(safe_name(b"photo 1.jpg").is_ok());
        assert!(safe_name(b"\xff\xfe").is_ok());
    }

    #[test]
    fn selection() {
        let s = Selection::new(&[split_path("/a/b"), split_path("/d")]);
        assert!(s.select(&split_path("/")) == Sel::Partial);
        assert!(s.select(&split_path("/a")) == Sel::Partial);
        assert!(s.select(&split_path("/a/b")) == Sel::All);
        assert!(s.select(&split_path("/a/b/c")) == Sel::All);
        assert!(s.select(&split_path("/a/c")) == Sel::None);
        assert!(s.select(&split_path("/d/e")) == Sel::All);
        assert!(Selection::new(&[]).select(&split_path("/x")) == Sel::All);
        let mut m = vec![false; 2];
        s.mark(&split_path("/d"), &mut m);
        assert_eq!(m, [false, true]);
    }
}
