//! `vault move`: back files up into several repositories, read every copy back, and unlink a local
//! original only once its data verified in enough of them and the file is unchanged.
//!
//! Order, and why nothing can be lost whenever the process dies (docs/design.md §17):
//! 1. back up into each repository, without writing the snapshot yet;
//! 2. read back, from each repository, every tree and data blob of the files (downloads, age
//!    decryption, blob ids) and hash each file as stored;
//! 3. read every local file again and compare its keyed hash with each repository's;
//! 4. write, in each repository where files verified, a snapshot marking them vault-only;
//! 5. unlink a file only if it verified in at least `copies` repositories whose snapshot was
//!    written, and its size, mtime, ctime and inode are still those of step 3;
//! 6. remove the folders this emptied.
//!
//! A crash before 5 deletes nothing; during 5, every unlinked file is already recorded and
//! verified in `copies` repositories. A re-run starts again from 1 with what is left.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::archiver::{self, BackupOptions, BackupSummary};
use crate::blobwriter::BlobWriter;
use crate::changes::FileStat;
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{FolderCursor, NodeKind, TreeWriter, FLAG_VAULT_ONLY};
use crate::format::BlobType;
use crate::ids::Id;
use crate::progress::{Progress, Skipped};
use crate::readback::{collect, comps_of, read_back, Comps, Stored, StoredContent};
use crate::repo::{PackReaders, Repository};
use crate::treewalk::show_path;

mod mark;
mod plan;
mod verify;

use mark::write_marked;
use plan::local_items;
pub use plan::{plan, Plan, PlannedItem};
use verify::read_local;

pub struct MoveOptions {
    /// What to back up (the paths to move, excludes, host, tags, threads, uploads).
    pub backup: BackupOptions,
    /// Repositories in which a file's data must verify before its original is unlinked.
    pub copies: usize,
    /// Workers reading data back and hashing local files.
    pub threads: usize,
}

/// One repository taking part in a move.
pub struct Destination<'a> {
    pub name: String,
    pub repo: &'a Repository,
}

/// What happened in one repository.
#[derive(Debug, Default, Serialize)]
pub struct RepoReport {
    pub name: String,
    /// The snapshot recording this move (absent when the repository failed before it).
    pub snapshot: Option<String>,
    pub files_verified: u64,
    pub bytes_verified: u64,
    /// Files whose data was read back and did not verify (damaged or missing).
    pub files_failed: u64,
    /// Why this repository verified nothing, if so.
    pub error: Option<String>,
    pub backup: Option<BackupSummary>,
}

#[derive(Debug, Default, Serialize)]
pub struct MoveReport {
    /// Files and symlinks unlinked: their only copies are now in the vault.
    pub moved: Vec<String>,
    /// Left in place, with the reason.
    #[serde(rename = "skipped")]
    pub kept: Vec<Skipped>,
    pub files_moved: u64,
    pub bytes_freed: u64,
    pub dirs_removed: u64,
    /// Paths given that are gone because an earlier move took them into the vault.
    pub already_moved: Vec<String>,
    pub copies_required: usize,
    pub repositories: Vec<RepoReport>,
}

/// A local item and what the fresh read of it found.
struct Local {
    path: PathBuf,
    stat: FileStat,
    /// Keyed whole-file hash per repository (files), or the link target (symlinks).
    hashes: Vec<Id>,
    target: Option<Vec<u8>>,
}

/// Tests only (debug builds): `VAULT_TEST_UNLINK_DELAY_MS` slows the unlinking down so that a
/// test can kill the process in the middle of it.
fn test_unlink_delay() {
    if !cfg!(debug_assertions) {
        return;
    }
    if let Some(ms) = std::env::var("VAULT_TEST_UNLINK_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Tests only (debug builds): stop at a named point until told to go on, so that a test can
/// damage a pack or edit a file at an exact moment. `VAULT_TEST_PAUSE_DIR/<point>.ready` is
/// created and `<point>.go` awaited.
fn test_pause(point: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(dir) = std::env::var_os("VAULT_TEST_PAUSE_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let _ = std::fs::write(dir.join(format!("{point}.ready")), b"");
    while !dir.join(format!("{point}.go")).exists() && !crate::interrupt::requested() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn path_of(c: &Comps) -> PathBuf {
    let mut p = PathBuf::from("/");
    for x in c {
        p.push(OsStr::from_bytes(x));
    }
    p
}

/// Refuse a move into fewer repositories than the copies it must leave behind (callers check this
/// before unlocking anything; [`run`] checks it again).
pub fn require_copies(repositories: usize, copies: usize) -> Result<()> {
    if copies == 0 {
        return Err(Error::Invalid("--copies must be at least 1".into()));
    }
    if repositories < copies {
        return Err(Error::Invalid(format!(
            "a move needs {copies} repositories and {repositories} {} given: a photo kept in one \
             place is not backed up. Name another with `vault repo add` and pass `--to A,B`, or \
             accept a single copy with `--copies 1`",
            if repositories == 1 { "was" } else { "were" }
        )));
    }
    Ok(())
}

/// A backup whose snapshot is not written yet, and what its trees hold under the move's roots.
type Draft = (Snapshot, HashMap<Comps, Stored>);

/// What the move has decided so far, carried from one step to the next.
struct Move<'m> {
    dests: &'m [Destination<'m>],
    opts: &'m MoveOptions,
    report: MoveReport,
    /// What stays where it is, with the reason.
    kept: BTreeMap<Comps, String>,
    /// Why a file did not verify in a repository; it matters only if too few others verified it.
    problems: HashMap<Comps, Vec<String>>,
    /// The vault-only files of the repositories and every folder above them, once needed.
    moved_before: Option<HashSet<Comps>>,
}

/// What step 3 found.
struct Compared {
    /// The local items as read again, with their hashes under every repository's key.
    locals: HashMap<Comps, Local>,
    /// Per repository: the items whose copy there verified and matches the local one.
    marked: Vec<HashSet<Comps>>,
    /// The items that reached the required number of copies and were unchanged when checked.
    eligible: HashSet<Comps>,
}

/// Move `opts.backup.paths` into `dests`. Returns what was moved and kept; an error only when
/// nothing could be attempted (bad paths, too few repositories) or on interruption.
pub fn run(
    dests: &[Destination<'_>],
    opts: &MoveOptions,
    progress: Arc<Progress>,
) -> Result<MoveReport> {
    require_copies(dests.len(), opts.copies)?;
    for d in dests {
        if d.repo.keys().is_write_only() {
            return Err(Error::Invalid(format!(
                "{}: a write-only device cannot read its backups back, so it cannot move files",
                d.name
            )));
        }
    }
    let mut mv = Move {
        dests,
        opts,
        report: MoveReport {
            copies_required: opts.copies,
            ..Default::default()
        },
        kept: BTreeMap::new(),
        problems: HashMap::new(),
        moved_before: None,
    };
    // A re-run after a run that finished (or was killed after its last unlink): paths gone
    // because they are in the vault are reported as such, not as errors.
    let mut present = Vec::new();
    for p in &opts.backup.paths {
        let e = match std::fs::symlink_metadata(p) {
            Ok(_) => {
                present.push(p.clone());
                continue;
            }
            Err(e) => e,
        };
        let abs = absolute(p);
        if mv.moved_before()?.contains(&comps_of(&abs)) {
            mv.report
                .already_moved
                .push(abs.to_string_lossy().into_owned());
        } else {
            return Err(Error::io(format!("cannot move {}", p.display()), e));
        }
    }
    if present.is_empty() {
        return Ok(mv.finish(&[], &[]));
    }
    let roots = archiver::prepare_paths(&present)?;
    let root_comps: Vec<Comps> = roots.iter().map(|r| comps_of(r)).collect();
    // Nothing left to move (a re-run): no backup and no snapshot, only the folders an earlier
    // run emptied and did not get to remove.
    let mut only_present = opts.backup.clone();
    only_present.paths = present;
    if local_items(&only_present)?.0.is_empty() {
        return Ok(mv.finish(&roots, &[]));
    }
    // 1 and 2: back up and read back, one repository at a time.
    let mut drafts = Vec::new();
    let mut verified = Vec::new();
    for di in 0..dests.len() {
        let (draft, ok) = mv.back_up_and_read_back(di, &root_comps, &progress)?;
        drafts.push(draft);
        verified.push(ok);
    }
    progress.begin("comparing with the files here");
    let compared = mv.compare(&drafts, &verified)?;
    progress.begin("recording what moved");
    let recorded = mv.record(&drafts, &compared.marked)?;
    progress.begin("deleting the originals");
    let moved = mv.unlink(&compared, &recorded)?;
    Ok(mv.finish(&roots, &moved))
}

impl Move<'_> {
    /// Steps 1 and 2 in repository `di`. A repository that fails is reported and left out; the
    /// move goes on with the others.
    fn back_up_and_read_back(
        &mut self,
        di: usize,
        roots: &[Comps],
        progress: &Arc<Progress>,
    ) -> Result<(Option<Draft>, HashSet<Comps>)> {
        let d = &self.dests[di];
        let mut rr = RepoReport {
            name: d.name.clone(),
            ..Default::default()
        };
        let mut ok = HashSet::new();
        let draft = match self.draft_in(di, roots, progress, &mut rr, &mut ok) {
            Ok(x) => Some(x),
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                rr.error = Some(e.to_string());
                None
            }
        };
        self.report.repositories.push(rr);
        Ok((draft, ok))
    }

    fn draft_in(
        &mut self,
        di: usize,
        roots: &[Comps],
        progress: &Arc<Progress>,
        rr: &mut RepoReport,
        ok: &mut HashSet<Comps>,
    ) -> Result<Draft> {
        let d = &self.dests[di];
        progress.begin(format!("backing up to {}", d.name));
        let (summary, snap) = archiver::backup_draft(d.repo, &self.opts.backup, progress.clone())?;
        for s in &summary.skipped {
            self.kept.insert(
                comps_of(Path::new(&s.path)),
                format!("not backed up: {}", s.reason),
            );
        }
        rr.backup = Some(summary);
        test_pause(&format!("verify-{di}"));
        let mut readers = PackReaders::default();
        let stored = collect(d.repo, &snap.root, roots, &mut readers)?;
        progress.begin(format!("reading back from {}", d.name));
        let failures = read_back(d.repo, &stored, self.opts.threads, progress, ok)?;
        rr.files_failed = failures.len() as u64;
        for (c, why) in failures {
            self.problems
                .entry(c)
                .or_default()
                .push(format!("{}: {why}", d.name));
        }
        rr.files_verified = ok.len() as u64;
        rr.bytes_verified = ok.iter().map(|c| stored[c].size).sum();
        Ok((snap, stored))
    }

    /// Step 3: read the local files again and compare them with what each repository holds.
    fn compare(
        &mut self,
        drafts: &[Option<Draft>],
        verified: &[HashSet<Comps>],
    ) -> Result<Compared> {
        let mut all: Vec<Comps> = verified.iter().flatten().cloned().collect();
        all.sort();
        all.dedup();
        // What verified nowhere is never read again, but must still be reported.
        for draft in drafts.iter().flatten() {
            for c in draft.1.keys() {
                if all.binary_search(c).is_err() && !self.kept.contains_key(c) {
                    let why = self.verified_in(0, c);
                    self.kept.insert(c.clone(), why);
                }
            }
        }
        let keys: Vec<_> = self.dests.iter().map(|d| d.repo.keys().clone()).collect();
        let locals = read_local(&all, &keys, self.opts.threads, &mut self.kept)?;
        let mut marked: Vec<HashSet<Comps>> = vec![HashSet::new(); self.dests.len()];
        for (c, local) in &locals {
            self.match_copies(c, local, drafts, verified, &mut marked);
        }
        // Whatever did not reach the required number of copies stays, and is not marked anywhere.
        let need = self.opts.copies;
        let mut eligible: HashSet<Comps> = locals
            .keys()
            .filter(|c| marked.iter().filter(|m| m.contains(*c)).count() >= need)
            .cloned()
            .collect();
        // A file that changed since it was read is not marked (checked again before each unlink).
        eligible.retain(|c| {
            let same = std::fs::symlink_metadata(&locals[c].path)
                .map(|m| FileStat::of(&m) == locals[c].stat)
                .unwrap_or(false);
            if !same {
                self.kept.insert(c.clone(), CHANGED_SINCE_VERIFIED.into());
            }
            same
        });
        for m in marked.iter_mut() {
            m.retain(|c| eligible.contains(c));
        }
        Ok(Compared {
            locals,
            marked,
            eligible,
        })
    }

    /// Mark `c` in every repository whose verified copy matches the local item; keep it, with
    /// the reason, when too few do.
    fn match_copies(
        &mut self,
        c: &Comps,
        local: &Local,
        drafts: &[Option<Draft>],
        verified: &[HashSet<Comps>],
        marked: &mut [HashSet<Comps>],
    ) {
        let mut n = 0;
        let mut mismatch = Vec::new();
        for (i, draft) in drafts.iter().enumerate() {
            let Some((_, stored)) = draft else { continue };
            if !verified[i].contains(c) {
                continue;
            }
            let s = &stored[c];
            let same = match &s.content {
                StoredContent::File { hash, .. } => {
                    s.size == local.stat.size && local.hashes.get(i) == Some(hash)
                }
                StoredContent::Symlink { target } => local.target.as_ref() == Some(target),
            };
            if same {
                marked[i].insert(c.clone());
                n += 1;
            } else {
                mismatch.push(self.dests[i].name.as_str());
            }
        }
        if n < self.opts.copies {
            let why = if !mismatch.is_empty() {
                format!(
                    "changed since it was backed up to {}; run the move again",
                    mismatch.join(", ")
                )
            } else {
                self.verified_in(n, c)
            };
            self.kept.entry(c.clone()).or_insert(why);
        }
    }

    /// Step 4: record the move in every repository where files verified. Returns, per
    /// repository, whether its snapshot was written.
    fn record(&mut self, drafts: &[Option<Draft>], marked: &[HashSet<Comps>]) -> Result<Vec<bool>> {
        let mut recorded: Vec<bool> = vec![false; self.dests.len()];
        for (i, d) in self.dests.iter().enumerate() {
            let Some((snap, _)) = &drafts[i] else {
                continue;
            };
            match write_marked(d.repo, snap, &marked[i]) {
                Ok(id) => {
                    self.report.repositories[i].snapshot = Some(id.to_hex());
                    recorded[i] = true;
                }
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    self.report.repositories[i].error =
                        Some(format!("could not record the move: {e}"));
                }
            }
        }
        Ok(recorded)
    }

    /// Step 5: unlink what is verified and recorded in enough repositories and still unchanged.
    /// Returns the paths unlinked.
    fn unlink(&mut self, compared: &Compared, recorded: &[bool]) -> Result<Vec<PathBuf>> {
        test_pause("unlink");
        let mut moved_paths: Vec<PathBuf> = Vec::new();
        let mut order: Vec<&Comps> = compared.eligible.iter().collect();
        order.sort();
        for c in order {
            if crate::interrupt::requested() {
                return Err(Error::Interrupted);
            }
            let copies = (0..self.dests.len())
                .filter(|&i| recorded[i] && compared.marked[i].contains(c))
                .count();
            if copies < self.opts.copies {
                self.kept.entry(c.clone()).or_insert_with(|| {
                    "the move could not be recorded in enough repositories".to_string()
                });
                continue;
            }
            let local = &compared.locals[c];
            if let Err(why) = unchanged(local) {
                self.kept.insert(c.clone(), why);
                continue;
            }
            test_unlink_delay();
            match std::fs::remove_file(&local.path) {
                Ok(()) => {
                    self.report.files_moved += 1;
                    if local.target.is_none() {
                        self.report.bytes_freed += local.stat.size;
                    }
                    self.report.moved.push(show_path(c));
                    moved_paths.push(local.path.clone());
                }
                Err(e) => {
                    self.kept.insert(c.clone(), format!("cannot unlink: {e}"));
                }
            }
        }
        Ok(moved_paths)
    }

    /// Step 6, and the report: remove the folders the move emptied (not those that were empty
    /// before: nothing records them as vault-only, so nothing would bring them back), and give
    /// every item still here a reason.
    fn finish(mut self, roots: &[PathBuf], moved_paths: &[PathBuf]) -> MoveReport {
        let mut emptied: HashSet<PathBuf> = HashSet::new();
        for m in moved_paths {
            let mut p = m.parent();
            while let Some(d) = p {
                if !emptied.insert(d.to_path_buf()) {
                    break;
                }
                p = d.parent();
            }
        }
        // Folders emptied by an earlier, killed run: only where one is empty now is the
        // repositories' record read.
        if roots.iter().any(|r| has_empty_folder(r)) {
            if let Ok(before) = self.moved_before() {
                emptied.extend(
                    before
                        .iter()
                        .map(path_of)
                        .filter(|p| roots.iter().any(|r| p.starts_with(r))),
                );
            }
        }
        for r in roots {
            self.report.dirs_removed += remove_empty_dirs(r, &emptied);
        }
        // Whatever is still here and has no reason yet was never verified (a repository failed
        // as a whole, or the backup left it out): say so.
        let mut here = self.opts.backup.clone();
        here.paths = roots.to_vec();
        let items = if roots.is_empty() {
            Ok((Vec::new(), Vec::new()))
        } else {
            local_items(&here)
        };
        if let Ok((items, _)) = items {
            for (p, _) in items {
                let c = comps_of(&p);
                if !self.kept.contains_key(&c) {
                    let why = self.verified_in(0, &c);
                    self.kept.insert(c, why);
                }
            }
        }
        self.report.kept = std::mem::take(&mut self.kept)
            .into_iter()
            .map(|(c, reason)| Skipped {
                path: show_path(&c),
                reason,
            })
            .collect();
        self.report
    }

    /// Paths that earlier moves took into any of the repositories, with their folders: a
    /// path among them that is gone from here is in the vault, and an empty folder among them
    /// is one a killed move emptied (`restore --vault-only` brings it back).
    fn moved_before(&mut self) -> Result<&HashSet<Comps>> {
        if self.moved_before.is_none() {
            let mut all = HashSet::new();
            for d in self.dests {
                for f in crate::snapshots::vault_only_files(d.repo)? {
                    for i in 1..=f.path.len() {
                        all.insert(f.path[..i].to_vec());
                    }
                }
            }
            self.moved_before = Some(all);
        }
        Ok(self.moved_before.get_or_insert_with(HashSet::new))
    }

    /// Why `c` is kept when it verified in `n` repositories only.
    fn verified_in(&self, n: usize, c: &Comps) -> String {
        let mut problems: Vec<String> = self.problems.get(c).cloned().unwrap_or_default();
        problems.extend(
            self.report
                .repositories
                .iter()
                .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name))),
        );
        let mut s = format!(
            "verified in {n} of the {} repositories required",
            self.opts.copies
        );
        if !problems.is_empty() {
            s.push_str(&format!(" ({})", problems.join("; ")));
        }
        s
    }
}

const CHANGED_SINCE_VERIFIED: &str = "changed since it was verified; run the move again";

/// Whether a local item is still as it was when it verified: checked right before the unlink.
fn unchanged(local: &Local) -> std::result::Result<(), String> {
    match std::fs::symlink_metadata(&local.path) {
        Ok(m) if FileStat::of(&m) == local.stat => Ok(()),
        Ok(_) => Err(CHANGED_SINCE_VERIFIED.into()),
        Err(e) => Err(format!("cannot check it before unlinking: {e}")),
    }
}

/// Whether `root` or a folder below it is empty (without following symlinks).
fn has_empty_folder(root: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(root) else {
        return false;
    };
    let mut any = false;
    for e in rd.flatten() {
        any = true;
        if e.file_type().is_ok_and(|t| t.is_dir()) && has_empty_folder(&e.path()) {
            return true;
        }
    }
    !any
}

/// `p` made absolute against the current folder, `..` and `.` resolved through the part that
/// exists (a path that is gone cannot be canonicalised).
fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while std::fs::canonicalize(existing).is_err() {
        let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
            return abs;
        };
        rest.push(name.to_os_string());
        existing = parent;
    }
    let mut out = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    for n in rest.iter().rev() {
        out.push(n);
    }
    out
}

/// Remove `root` and the folders below it that are empty and held moved files, deepest first.
/// Returns how many.
fn remove_empty_dirs(root: &Path, emptied: &HashSet<PathBuf>) -> u64 {
    if !emptied.contains(root) {
        return 0;
    }
    let Ok(md) = std::fs::symlink_metadata(root) else {
        return 0;
    };
    if !md.is_dir() {
        return 0;
    }
    let mut removed = 0;
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                removed += remove_empty_dirs(&e.path(), emptied);
            }
        }
    }
    // Fails, as it should, when anything is left inside.
    if std::fs::remove_dir(root).is_ok() {
        removed += 1;
    }
    removed
}

pub use crate::snapshots::{vault_only_files, VaultOnlyFile};

/// The local path of a snapshot path (trees mirror absolute paths).
pub fn local_path(c: &[Vec<u8>]) -> PathBuf {
    path_of(&c.to_vec())
}
