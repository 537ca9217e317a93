//! Restore: recreate a snapshot's files under a target folder, verifying every byte, and never
//! writing outside the target whatever the snapshot says (names are untrusted input).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, UNIX_EPOCH};

use cap_fs_ext::{DirExt, SystemTimeSpec};
use cap_std::fs::{Dir, OpenOptions};
use crossbeam_channel::bounded;
use rustix::io::Errno;
use serde::Serialize;

use crate::directio::{FileWriter, Staging};
use crate::error::{os_error_in, Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{
    name_is_safe, FolderCursor, Node, NodeKind, FLAG_ANCESTOR, FLAG_VAULT_ONLY, MAX_DEPTH,
};
use crate::format::BlobType;
use crate::ids::Id;
use crate::progress::{Progress, Skipped};
use crate::repo::{PackReaders, Repository};
use crate::workers::Pool;

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
    }
}

/// A failed write in words, with the likely reason where the bare error would puzzle: a video
/// of 4 GiB or more restored onto a FAT32 card or stick fails with "File too large".
fn describe_write_error(what: &str, e: &std::io::Error) -> String {
    if os_error_in(e, &[Errno::FBIG]) {
        format!("{what}: {e} (FAT32 cannot hold a file of 4 GiB or more: restore it onto exFAT, NTFS or another filesystem)")
    } else {
        format!("{what}: {e}")
    }
}

/// Why creating `name` may have failed: FAT and exFAT refuse some characters that Linux and
/// macOS allow (a phone's `12:30 lunch.jpg`). Appended to the error of a name that has them.
fn name_hint(name: &[u8]) -> &'static str {
    if name.iter().any(|c| b"\"*:<>?\\|".contains(c) || *c < 0x20) {
        " (FAT and exFAT do not allow \" * : < > ? \\ | in names: restore it onto another \
         filesystem, or rename it after restoring it elsewhere)"
    } else {
        ""
    }
}

/// The filesystem cannot do this at all: chmod (FAT and exFAT through the kernel give EPERM for
/// any mode their mount options do not already give, FAT through FUSE ENOSYS) or symlinks (FAT
/// EPERM, FUSE ENOSYS). A refused mode does not fail the file: `check_mode` counts it from the
/// mode read back.
fn unsupported_here(e: &std::io::Error) -> bool {
    os_error_in(e, &[Errno::PERM, Errno::NOSYS, Errno::OPNOTSUPP])
}

/// Permissions wanted and read back differ; `(differs, private item exposed)`.
fn mode_mismatch(wanted: u32, actual: u32) -> (bool, bool) {
    let (wanted, actual) = (wanted & 0o777, actual & 0o777);
    (wanted != actual, wanted & 0o077 == 0 && actual & 0o077 != 0)
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

/// Show a snapshot path.
pub fn show_path(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
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

fn system_time(secs: i64, nanos: u32) -> std::time::SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, nanos)
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
    /// The target ran out of space: nothing more is attempted.
    full: std::sync::atomic::AtomicBool,
    /// Per filesystem (device number), whether it tells `IMG.JPG` from `img.jpg` apart (FAT,
    /// exFAT, NTFS and APFS by default do not); asked only of folders where it matters.
    ignores_case: Mutex<HashMap<u64, bool>>,
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

/// Restore `snap` into `opts.target`.
pub fn restore(
    repo: &Repository,
    snap_id: &Id,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreSummary> {
    std::fs::create_dir_all(&opts.target)
        .map_err(|e| Error::io(format!("cannot create {}", opts.target.display()), e))?;
    let root = Dir::open_ambient_dir(&opts.target, cap_std::ambient_authority())
        .map_err(|e| Error::io(format!("cannot open {}", opts.target.display()), e))?;
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
        full: Default::default(),
        ignores_case: Default::default(),
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
    let (dirs, matched, walked) = thread::scope(|scope| {
        let (tx, rx) = bounded::<FileJob>(threads * 8);
        let ctx_ref = &ctx;
        for _ in 0..threads {
            let rx = rx.clone();
            scope.spawn(move || {
                let mut bufs = WorkerBufs::default();
                for job in rx {
                    ctx_ref
                        .workers
                        .busy(|| restore_file(ctx_ref, &mut bufs, job));
                }
            });
        }
        drop(rx);
        let mut readers = PackReaders::default();
        let mut dirs = Vec::new();
        let mut matched = vec![false; opts.includes.len()];
        let r = walk(
            ctx_ref,
            &mut readers,
            &snap.root,
            root.clone(),
            Vec::new(),
            ctx_ref.sel.select(&[]),
            &tx,
            &mut dirs,
            &mut matched,
        );
        drop(tx);
        (dirs, matched, r)
    });
    // Folder metadata last, children before parents, so later writes do not change it.
    let stopped =
        walked.is_err() || crate::interrupt::requested() || ctx.full.load(Ordering::Relaxed);
    for d in dirs.iter().rev() {
        // Folders that were there before keep their mode and owner, and the ancestors of the
        // backed-up paths keep everything (restoring into `/` must not chmod /tmp); with
        // --overwrite the backed-up ones get theirs back. Their recorded mtime they get back
        // either way: what this run (or an interrupted one) added to them changed it. A run
        // that stops early leaves the folders it made writable, for the run that finishes it.
        let how = match (d.existed, stopped) {
            (true, true) => continue,
            (true, false) if d.ancestor => continue,
            (true, false) if !opts.overwrite => DirUpdate::Mtime,
            (_, false) => DirUpdate::All,
            (false, true) => DirUpdate::AllButWritable,
        };
        if let Err(e) = set_dir_meta(&ctx, &root, d, how) {
            ctx.error(
                &show_path(&d.path),
                format!("cannot set folder metadata: {e}"),
            );
        }
    }
    walked?;
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
            return Err(Error::Invalid(format!(
                "{} is not in snapshot {}",
                show_path(&opts.includes[i]),
                snap_id.short()
            )));
        }
    }
    let mut s = ctx.summary.into_inner().unwrap_or_else(|p| p.into_inner());
    s.requests = repo.store().stats();
    Ok(s)
}

/// How much of its recorded metadata a folder gets back.
#[derive(Clone, Copy)]
enum DirUpdate {
    All,
    /// All, but the owner keeps the right to add to it (a restore that stopped early).
    AllButWritable,
    /// Only the modification time (a folder that was there before).
    Mtime,
}

fn set_dir_meta(ctx: &Ctx<'_>, root: &Dir, d: &DirMeta, how: DirUpdate) -> std::io::Result<()> {
    let Some((last, parents)) = d.path.split_last() else {
        return Ok(());
    };
    let mut cur = root.try_clone()?;
    for c in parents {
        cur = cur.open_dir_nofollow(OsStr::from_bytes(c))?;
    }
    let name = OsStr::from_bytes(last);
    let md = cur.symlink_metadata(name)?;
    if !md.is_dir() {
        return Err(std::io::Error::other("no longer a folder"));
    }
    let mtime = SystemTimeSpec::Absolute(cap_std::time::SystemTime::from_std(system_time(
        d.mtime,
        d.mtime_nanos,
    )));
    let wanted = match how {
        DirUpdate::Mtime => return cur.set_times(name, None, Some(mtime)),
        DirUpdate::All => d.mode & 0o777,
        DirUpdate::AllButWritable => d.mode & 0o777 | 0o700,
    };
    let mode = cap_std::fs::Permissions::from_std(std::fs::Permissions::from_mode(wanted));
    if d.ancestor {
        // Only the permission bits were recorded for folders above the backed-up paths.
        return match cur.set_permissions(name, mode) {
            Err(e) if !unsupported_here(&e) => Err(e),
            _ => Ok(()),
        };
    }
    // Owner before mode: a change of owner may clear mode bits. On the opened folder, not its
    // name: see `chown_fd`.
    ctx.set_owner(|| {
        // A descriptor fchown accepts (cap-std's folder handles are O_PATH on Linux).
        let flags = rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&cur, name, flags, rustix::fs::Mode::empty())?;
        chown_fd(&fd, d.uid, d.gid)
    });
    cur.set_times(name, None, Some(mtime))?;
    match cur.set_permissions(name, mode) {
        Err(e) if !unsupported_here(&e) => return Err(e),
        _ => {}
    }
    ctx.check_mode(
        wanted,
        cur.symlink_metadata(name)
            .map(|m| cap_std::fs::PermissionsExt::mode(&m.permissions())),
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn walk(
    ctx: &Ctx<'_>,
    readers: &mut PackReaders,
    tree_id: &Id,
    dir: Arc<Dir>,
    path: Vec<Vec<u8>>,
    sel: Sel,
    jobs: &crossbeam_channel::Sender<FileJob>,
    dirs: &mut Vec<DirMeta>,
    matched: &mut Vec<bool>,
) -> Result<()> {
    ctx.sel.mark(&path, matched);
    let shown = show_path(&path);
    if path.len() > MAX_DEPTH {
        ctx.error(
            &shown,
            format!("refused: folder nested deeper than {MAX_DEPTH} levels"),
        );
        return Ok(());
    }
    // Names that differ only in case are one name on a filesystem that ignores case: there the
    // first one restored stays and the others are reported. Only there are the names of a folder
    // remembered (lower-cased), so a restore onto an ordinary filesystem holds none of them
    // whatever the folder's size.
    let mut folded: Option<HashMap<String, String>> = ctx.ignores_case_at(&dir).then(HashMap::new);
    let mut cursor = FolderCursor::new(*tree_id);
    loop {
        let node = match cursor.next(&mut ctx.repo.trees(readers)) {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(e) => {
                // A damaged blob of a split listing costs the entries it holds; the cursor goes
                // on with the next.
                ctx.error(&shown, format!("folder contents unreadable: {e}"));
                continue;
            }
        };
        if crate::interrupt::requested() {
            return Err(Error::Interrupted);
        }
        if ctx.full.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut child = path.clone();
        child.push(node.name.clone());
        let child_shown = show_path(&child);
        let name = match safe_name(&node.name) {
            Ok(n) => n,
            Err(msg) => {
                ctx.error(&child_shown, msg);
                continue;
            }
        };
        let csel = if sel == Sel::All {
            Sel::All
        } else {
            ctx.sel.select(&child)
        };
        if csel == Sel::None {
            continue;
        }
        if csel == Sel::All {
            ctx.sel.mark(&child, matched);
        }
        if ctx.vault_only
            && !matches!(node.kind, NodeKind::Dir { .. })
            && node.flags & FLAG_VAULT_ONLY == 0
        {
            continue;
        }
        if let Some(folded) = folded.as_mut() {
            let shown_name = String::from_utf8_lossy(&node.name).into_owned();
            let first = folded
                .entry(shown_name.to_lowercase())
                .or_insert_with(|| shown_name.clone());
            if *first != shown_name {
                ctx.skipped(
                    &child_shown,
                    format!(
                        "not restored: \"{first}\" is already in this folder, and the target's \
                     filesystem does not tell names apart by upper and lower case; restore this \
                     one into another folder (--include it, with another --target)"
                    ),
                );
                continue;
            }
        }
        match &node.kind {
            NodeKind::Dir { subtree } => {
                let mut existed = true;
                match dir.symlink_metadata(name) {
                    Ok(md) if md.is_dir() => {}
                    Ok(_) => {
                        ctx.error(&child_shown, "something other than a folder is in the way");
                        continue;
                    }
                    Err(_) => {
                        // Private until the end of the run, when it gets its recorded mode:
                        // nobody else lists the names going into it meanwhile.
                        let mut private = cap_std::fs::DirBuilder::new();
                        cap_std::fs::DirBuilderExt::mode(&mut private, 0o700);
                        if let Err(e) = dir.create_dir_with(name, &private) {
                            let msg = ctx.name_error("cannot create folder", e, &node.name);
                            ctx.error(&child_shown, msg);
                            continue;
                        }
                        existed = false;
                    }
                }
                let sub = match dir.open_dir_nofollow(name) {
                    Ok(d) => Arc::new(d),
                    Err(e) => {
                        ctx.error(&child_shown, format!("cannot open folder: {e}"));
                        continue;
                    }
                };
                ctx.summary.lock().unwrap_or_else(|p| p.into_inner()).dirs += 1;
                dirs.push(DirMeta {
                    path: child.clone(),
                    mode: node.mode,
                    mtime: node.mtime,
                    mtime_nanos: node.mtime_nanos,
                    uid: node.uid,
                    gid: node.gid,
                    ancestor: node.flags & FLAG_ANCESTOR != 0,
                    existed,
                });
                walk(ctx, readers, subtree, sub, child, csel, jobs, dirs, matched)?;
            }
            NodeKind::File { .. } if csel == Sel::All => {
                let job = FileJob {
                    dir: dir.clone(),
                    name: node.name.clone(),
                    node,
                    shown: child_shown,
                };
                jobs.send(job).map_err(|_| Error::Interrupted)?;
            }
            NodeKind::Symlink { target } if csel == Sel::All => {
                restore_symlink(ctx, &dir, name, target, &node, &child_shown);
            }
            _ => {}
        }
    }
    Ok(())
}

fn restore_symlink(
    ctx: &Ctx<'_>,
    dir: &Dir,
    name: &OsStr,
    target: &[u8],
    node: &Node,
    shown: &str,
) {
    if let Ok(md) = dir.symlink_metadata(name) {
        if !ctx.overwrite {
            if md.is_symlink()
                && dir
                    .read_link_contents(name)
                    .is_ok_and(|t| t.as_os_str().as_bytes() == target)
            {
                ctx.already_there(None);
                return;
            }
            ctx.skipped(shown, "exists and differs; use --overwrite to replace it");
            return;
        }
        if let Err(e) = dir.remove_file(name) {
            ctx.error(shown, format!("cannot replace: {e}"));
            return;
        }
    }
    // symlinkat relative to the folder handle: the link is created, never followed. (cap-std's own
    // symlink() refuses absolute targets, which are legitimate content of a backup.)
    match rustix::fs::symlinkat(OsStr::from_bytes(target), dir, name).map_err(std::io::Error::from)
    {
        Ok(()) => {
            ctx.summary
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .symlinks += 1;
            ctx.set_owner(|| chown_symlink(dir, name, node.uid, node.gid));
            let t = cap_std::time::SystemTime::from_std(system_time(node.mtime, node.mtime_nanos));
            // Not every filesystem can time-stamp a symlink; the link itself is what matters.
            let _ = dir.set_symlink_times(name, None, Some(SystemTimeSpec::Absolute(t)));
        }
        Err(e) => {
            let unsupported = unsupported_here(&e);
            let mut msg = ctx.name_error("cannot create symlink", e, name.as_bytes());
            if unsupported {
                msg.push_str(" (the target's filesystem may not store symlinks, as FAT and exFAT)");
            }
            ctx.error(shown, msg)
        }
    }
}

fn owner_ids(uid: u32, gid: u32) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    // All ones means "leave unchanged" to chown(2), never an owner.
    (
        (uid != u32::MAX).then(|| rustix::fs::Uid::from_raw(uid)),
        (gid != u32::MAX).then(|| rustix::fs::Gid::from_raw(gid)),
    )
}

/// Owners are set through a descriptor of what this restore created, never through a name: as
/// root, a name in a folder another user can write to could be swapped, between our write and
/// the chown, for a hard link to a file of theirs choosing (which root would then give away).
fn chown_fd(fd: impl std::os::fd::AsFd, uid: u32, gid: u32) -> std::io::Result<()> {
    let (u, g) = owner_ids(uid, gid);
    rustix::fs::fchown(fd, u, g).map_err(std::io::Error::from)
}

/// A symlink cannot be opened for writing: open the link itself (`O_PATH`), check that it still
/// is a symlink, and chown that descriptor. Elsewhere than Linux symlinks keep root as owner
/// (their owner matters only in sticky folders).
#[cfg(target_os = "linux")]
fn chown_symlink(dir: &Dir, name: &OsStr, uid: u32, gid: u32) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::Symlink {
        return Err(std::io::Error::other("no longer a symlink"));
    }
    let (u, g) = owner_ids(uid, gid);
    rustix::fs::chownat(&fd, "", u, g, AtFlags::EMPTY_PATH).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn chown_symlink(_: &Dir, _: &OsStr, _: u32, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// What a file worker reuses from file to file.
#[derive(Default)]
struct WorkerBufs {
    packs: PackReaders,
    stage: Staging,
    blob: Vec<u8>,
}

fn restore_file(ctx: &Ctx<'_>, readers: &mut WorkerBufs, job: FileJob) {
    if ctx.stopping() {
        return;
    }
    let name = OsStr::from_bytes(&job.name);
    if let Ok(md) = job.dir.symlink_metadata(name) {
        if !ctx.overwrite {
            if md.is_file() && md.len() == job.node.size && same_content(ctx, readers, &job, name) {
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
    let tmp = format!(".vault-restore-{}.tmp", Id::random().short());
    match write_verified(ctx, readers, &job, &tmp) {
        Ok(bytes) => {
            let mut s = ctx.summary.lock().unwrap_or_else(|p| p.into_inner());
            s.files += 1;
            s.bytes += bytes;
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
fn same_content(ctx: &Ctx<'_>, bufs: &mut WorkerBufs, job: &FileJob, name: &OsStr) -> bool {
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
const READ_AHEAD_MIN: usize = 8;

/// Read, decrypt and verify a large file's blobs on a second thread, in order and a few blobs
/// ahead, while this one hashes and writes them: a large file alone (a long video) keeps two
/// cores and the disk busy instead of one at a time.
fn read_ahead(
    ctx: &Ctx<'_>,
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
                    ctx.repo
                        .read_blob_into(id, BlobType::Data, &mut readers, &mut buf)
                        .map(|()| buf)
                        .map_err(|e| format!("not restored: {e}"))
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
fn write_verified(
    ctx: &Ctx<'_>,
    readers: &mut WorkerBufs,
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
    if blobs.len() >= READ_AHEAD_MIN && ctx.workers.some_idle() {
        read_ahead(ctx, blobs, &mut write)?;
    } else {
        for id in blobs {
            if crate::interrupt::requested() {
                return Err("interrupted".into());
            }
            ctx.repo
                .read_blob_into(id, BlobType::Data, &mut readers.packs, &mut readers.blob)
                .map_err(|e| format!("not restored: {e}"))?;
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
