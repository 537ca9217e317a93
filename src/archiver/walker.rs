//! The walk of a backup: folders listed in name order (with bounded memory), each file looked
//! up in the local index and either taken as unchanged or handed to a file worker, and the
//! ordered stream of events the assembler builds trees from.

use super::*;

#[derive(Clone, Copy)]
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) mtime: i64,
    pub(super) mtime_nanos: u32,
    pub(super) size: u64,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) ctime: i64,
    pub(super) ctime_nanos: u32,
    pub(super) ino: u64,
    pub(super) dev: u64,
}

pub(super) fn nanos(n: i64) -> u32 {
    n.clamp(0, 999_999_999) as u32
}

impl Meta {
    pub(super) fn of(m: &fs::Metadata) -> Meta {
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
    pub(super) fn from_stat(st: &rustix::fs::Stat) -> Meta {
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
    pub(super) fn kind(&self) -> rustix::fs::FileType {
        rustix::fs::FileType::from_raw_mode(self.mode as rustix::fs::RawMode)
    }
    pub(super) fn stat(&self) -> FileStat {
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
    pub(super) fn node(&self, name: Vec<u8>, kind: NodeKind, size: u64) -> Node {
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

pub(super) fn display(p: &Path) -> String {
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

pub(super) struct Walker<'a> {
    pub(super) shared: &'a Shared<'a>,
    pub(super) excludes: &'a Excludes,
    pub(super) events: Sender<Vec<Event>>,
    /// Events not yet sent: they travel in batches, because a hand-off per file costs more
    /// than looking the file up when most files are unchanged.
    pub(super) batch: std::cell::RefCell<Vec<Event>>,
    pub(super) jobs: Sender<FileJob>,
}

impl Walker<'_> {
    pub(super) fn send(&self, e: Event) -> bool {
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

    pub(super) fn flush(&self) -> bool {
        let b = std::mem::take(&mut *self.batch.borrow_mut());
        b.is_empty() || self.events.send(b).is_ok()
    }

    pub(super) fn skip(&self, path: &Path, reason: impl Into<String>) -> bool {
        self.send(Event::Skipped(Skipped {
            path: display(path),
            reason: reason.into(),
        }))
    }

    /// The local-index row of a folder (none with --force-reread).
    pub(super) fn folder(&self, path: &Path) -> FolderCtx {
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
    pub(super) fn reuse(
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
        // Counted apart: not read, so not work, and not part of the read rate.
        shared
            .progress
            .unchanged_files
            .fetch_add(1, Ordering::Relaxed);
        shared
            .progress
            .unchanged_bytes
            .fetch_add(entry.stat.size, Ordering::Relaxed);
        shared.progress.files_done.fetch_add(1, Ordering::Relaxed);
        Some(FileDone {
            size: entry.stat.size,
            hash: entry.hash,
            blobs: entry.blobs.clone(),
            changed: false,
            entry: Some(entry),
            fresh,
            meta: None,
        })
    }

    /// Emit one entry (and everything under it). `row` is the parent folder's local-index row,
    /// `depth` the number of components of `path`. Returns false when the run is aborting.
    pub(super) fn item(
        &self,
        path: &Path,
        name: Vec<u8>,
        row: Option<&mut RowCursor>,
        depth: usize,
    ) -> bool {
        let md = fs::symlink_metadata(path).map(|m| Meta::of(&m));
        self.item_with(path, name, row, md, depth)
    }

    /// [`Self::item`] with the metadata already read (`fstatat` on the folder being listed
    /// instead of resolving the whole path again).
    pub(super) fn item_with(
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
            // Listed, then deleted or renamed away before its turn: nothing to back up.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.shared.vanished.fetch_add(1, Ordering::Relaxed);
                return true;
            }
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
    pub(super) fn children(
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

    pub(super) fn run(&self, roots: &[PathBuf]) {
        self.walk_roots(roots);
        self.flush();
    }

    pub(super) fn walk_roots(&self, roots: &[PathBuf]) {
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
pub(super) struct Listing {
    pub(super) fd: std::os::fd::OwnedFd,
    pub(super) names: crate::namesort::SortedNames,
}

impl Listing {
    pub(super) fn open(dir: &Path) -> io::Result<Listing> {
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
pub(super) fn scan(
    roots: &[PathBuf],
    excludes: &Excludes,
    progress: &Progress,
    abort: &AtomicBool,
) {
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
