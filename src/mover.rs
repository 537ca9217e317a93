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
use crate::format::tree::{FolderCursor, NodeKind, TreeWriter, FLAG_VAULT_ONLY, MAX_DEPTH};
use crate::format::BlobType;
use crate::ids::Id;
use crate::progress::{Progress, Skipped};
use crate::repo::{PackReaders, Repository};
use crate::restorer::show_path;

/// Path components below `/`, as trees store them.
type Comps = Vec<Vec<u8>>;

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
    pub copies_required: usize,
    pub repositories: Vec<RepoReport>,
}

/// A file or symlink of the move, as one repository's snapshot trees record it.
#[derive(Clone)]
struct Stored {
    size: u64,
    content: StoredContent,
}

#[derive(Clone)]
enum StoredContent {
    File { blobs: Vec<Id>, hash: Id },
    Symlink { target: Vec<u8> },
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

fn comps_of(p: &Path) -> Comps {
    p.components()
        .skip(1)
        .map(|c| c.as_os_str().as_bytes().to_vec())
        .collect()
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
    let roots = archiver::prepare_paths(&opts.backup.paths)?;
    let root_comps: Vec<Comps> = roots.iter().map(|r| comps_of(r)).collect();
    let mut report = MoveReport {
        copies_required: opts.copies,
        ..Default::default()
    };
    let mut kept: BTreeMap<Comps, String> = BTreeMap::new();
    // Why a file did not verify in a repository; it matters only if too few others verified it.
    let mut problems: HashMap<Comps, Vec<String>> = HashMap::new();

    // 1 and 2: back up and read back, one repository at a time.
    let mut drafts: Vec<Option<(Snapshot, HashMap<Comps, Stored>)>> = Vec::new();
    let mut verified: Vec<HashSet<Comps>> = Vec::new();
    for (di, d) in dests.iter().enumerate() {
        let mut rr = RepoReport {
            name: d.name.clone(),
            ..Default::default()
        };
        let mut ok = HashSet::new();
        let draft = (|| -> Result<(Snapshot, HashMap<Comps, Stored>)> {
            let (summary, snap) = archiver::backup_draft(d.repo, &opts.backup, progress.clone())?;
            for s in &summary.skipped {
                kept.insert(
                    comps_of(Path::new(&s.path)),
                    format!("not backed up: {}", s.reason),
                );
            }
            rr.backup = Some(summary);
            test_pause(&format!("verify-{di}"));
            let mut readers = PackReaders::default();
            let stored = collect(d.repo, &snap.root, &root_comps, &mut readers)?;
            let failures = read_back(d.repo, &stored, opts.threads, &progress, &mut ok)?;
            rr.files_failed = failures.len() as u64;
            for (c, why) in failures {
                problems
                    .entry(c)
                    .or_default()
                    .push(format!("{}: {why}", d.name));
            }
            rr.files_verified = ok.len() as u64;
            rr.bytes_verified = ok.iter().map(|c| stored[c].size).sum();
            Ok((snap, stored))
        })();
        match draft {
            Ok(x) => drafts.push(Some(x)),
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                rr.error = Some(e.to_string());
                drafts.push(None);
            }
        }
        verified.push(ok);
        report.repositories.push(rr);
    }

    // 3: read the local files again and compare with what each repository holds.
    let mut all: Vec<Comps> = verified.iter().flatten().cloned().collect();
    all.sort();
    all.dedup();
    // What verified nowhere is never read again, but must still be reported.
    for draft in drafts.iter().flatten() {
        for c in draft.1.keys() {
            if all.binary_search(c).is_err() && !kept.contains_key(c) {
                let why = verified_in(0, opts.copies, &report.repositories, problems.get(c));
                kept.insert(c.clone(), why);
            }
        }
    }
    let keys: Vec<_> = dests.iter().map(|d| d.repo.keys().clone()).collect();
    let locals = read_local(&all, &keys, opts.threads, &mut kept)?;
    let mut marked: Vec<HashSet<Comps>> = vec![HashSet::new(); dests.len()];
    for (c, local) in &locals {
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
                mismatch.push(dests[i].name.as_str());
            }
        }
        if n < opts.copies {
            let why = if !mismatch.is_empty() {
                format!(
                    "changed since it was backed up to {}; run the move again",
                    mismatch.join(", ")
                )
            } else {
                verified_in(n, opts.copies, &report.repositories, problems.get(c))
            };
            kept.entry(c.clone()).or_insert(why);
        }
    }
    // Whatever did not reach the required number of copies stays, and is not marked anywhere.
    let mut eligible: HashSet<Comps> = locals
        .keys()
        .filter(|c| marked.iter().filter(|m| m.contains(*c)).count() >= opts.copies)
        .cloned()
        .collect();
    // A file that changed since it was read is not marked (checked again before each unlink).
    eligible.retain(|c| {
        let same = std::fs::symlink_metadata(&locals[c].path)
            .map(|m| FileStat::of(&m) == locals[c].stat)
            .unwrap_or(false);
        if !same {
            kept.insert(
                c.clone(),
                "changed since it was verified; run the move again".into(),
            );
        }
        same
    });
    for m in marked.iter_mut() {
        m.retain(|c| eligible.contains(c));
    }

    // 4: record the move in every repository where files verified.
    let mut recorded: Vec<bool> = vec![false; dests.len()];
    for (i, d) in dests.iter().enumerate() {
        let Some((snap, _)) = &drafts[i] else {
            continue;
        };
        match write_marked(d.repo, snap, &marked[i]) {
            Ok(id) => {
                report.repositories[i].snapshot = Some(id.to_hex());
                recorded[i] = true;
            }
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                report.repositories[i].error = Some(format!("could not record the move: {e}"));
            }
        }
    }

    // 5: unlink what is verified and recorded in enough repositories and still unchanged.
    test_pause("unlink");
    let mut moved_paths: Vec<PathBuf> = Vec::new();
    let mut order: Vec<&Comps> = eligible.iter().collect();
    order.sort();
    for c in order {
        if crate::interrupt::requested() {
            return Err(Error::Interrupted);
        }
        let copies = (0..dests.len())
            .filter(|&i| recorded[i] && marked[i].contains(c))
            .count();
        if copies < opts.copies {
            kept.entry(c.clone()).or_insert_with(|| {
                "the move could not be recorded in enough repositories".to_string()
            });
            continue;
        }
        let local = &locals[c];
        match std::fs::symlink_metadata(&local.path) {
            Ok(m) if FileStat::of(&m) == local.stat => {}
            Ok(_) => {
                kept.insert(
                    c.clone(),
                    "changed since it was verified; run the move again".into(),
                );
                continue;
            }
            Err(e) => {
                kept.insert(c.clone(), format!("cannot check it before unlinking: {e}"));
                continue;
            }
        }
        test_unlink_delay();
        match std::fs::remove_file(&local.path) {
            Ok(()) => {
                report.files_moved += 1;
                if local.target.is_none() {
                    report.bytes_freed += local.stat.size;
                }
                report.moved.push(show_path(c));
                moved_paths.push(local.path.clone());
            }
            Err(e) => {
                kept.insert(c.clone(), format!("cannot unlink: {e}"));
            }
        }
    }

    // 6: folders the move emptied (not those that were empty before: nothing records them as
    // vault-only, so nothing would bring them back).
    let mut emptied: HashSet<PathBuf> = HashSet::new();
    for m in &moved_paths {
        let mut p = m.parent();
        while let Some(d) = p {
            if !emptied.insert(d.to_path_buf()) {
                break;
            }
            p = d.parent();
        }
    }
    for r in &roots {
        report.dirs_removed += remove_empty_dirs(r, &emptied);
    }
    // Whatever is still here and has no reason yet was never verified (a repository failed as a
    // whole, or the backup left it out): say so.
    if let Ok((items, _)) = local_items(&opts.backup) {
        for (p, _) in items {
            let c = comps_of(&p);
            let why = || verified_in(0, opts.copies, &report.repositories, problems.get(&c));
            if let std::collections::btree_map::Entry::Vacant(v) = kept.entry(c.clone()) {
                v.insert(why());
            }
        }
    }
    report.kept = kept
        .into_iter()
        .map(|(c, reason)| Skipped {
            path: show_path(&c),
            reason,
        })
        .collect();
    Ok(report)
}

fn verified_in(n: usize, need: usize, repos: &[RepoReport], own: Option<&Vec<String>>) -> String {
    let mut problems: Vec<String> = own.cloned().unwrap_or_default();
    problems.extend(
        repos
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name))),
    );
    let mut s = format!("verified in {n} of the {need} repositories required");
    if !problems.is_empty() {
        s.push_str(&format!(" ({})", problems.join("; ")));
    }
    s
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

/// Every file and symlink under the move's roots, from the snapshot's trees as stored (each tree
/// is read back from the repository, not taken from memory).
fn collect(
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
fn read_back(
    repo: &Repository,
    stored: &HashMap<Comps, Stored>,
    threads: usize,
    progress: &Progress,
    ok: &mut HashSet<Comps>,
) -> Result<Vec<(Comps, String)>> {
    let items: Vec<(&Comps, &Stored)> = stored.iter().collect();
    progress
        .total_files
        .store(items.len() as u64, Ordering::Relaxed);
    progress
        .total_bytes
        .store(items.iter().map(|(_, s)| s.size).sum(), Ordering::Relaxed);
    progress.files_done.store(0, Ordering::Relaxed);
    progress.bytes_done.store(0, Ordering::Relaxed);
    let next = AtomicUsize::new(0);
    let good = Mutex::new(Vec::new());
    let bad = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..crate::worker_count(threads) {
            scope.spawn(|| {
                let mut readers = PackReaders::default();
                // One blob buffer per worker, reused: no allocation per chunk read back.
                let mut blob = Vec::new();
                loop {
                    if crate::interrupt::requested() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((c, s)) = items.get(i) else { return };
                    let r = match &s.content {
                        StoredContent::File { blobs, hash } => {
                            let file = (blobs.as_slice(), hash, s.size);
                            verify_file(repo, file, &mut readers, &mut blob, progress)
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
            });
        }
    });
    if crate::interrupt::requested() {
        return Err(Error::Interrupted);
    }
    ok.extend(good.into_inner().unwrap_or_else(|p| p.into_inner()));
    Ok(bad.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn verify_file(
    repo: &Repository,
    (blobs, hash, size): (&[Id], &Id, u64),
    readers: &mut PackReaders,
    data: &mut Vec<u8>,
    progress: &Progress,
) -> Result<()> {
    let mut h = repo.keys().file_hash.hasher();
    let mut total = 0u64;
    for b in blobs {
        repo.read_blob_into(b, BlobType::Data, readers, data)?;
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

/// Read each local item once, hashing files with every repository's key; what cannot be read,
/// or changes while being read, goes to `kept`.
fn read_local(
    items: &[Comps],
    keys: &[Arc<crate::keys::Keys>],
    threads: usize,
    kept: &mut BTreeMap<Comps, String>,
) -> Result<HashMap<Comps, Local>> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(HashMap::new());
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..crate::worker_count(threads) {
            scope.spawn(|| loop {
                if crate::interrupt::requested() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = items.get(i) else { return };
                match read_one(c, keys) {
                    Ok(l) => {
                        out.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(c.clone(), l);
                    }
                    Err(why) => failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((c.clone(), why)),
                }
            });
        }
    });
    if crate::interrupt::requested() {
        return Err(Error::Interrupted);
    }
    kept.extend(failed.into_inner().unwrap_or_else(|p| p.into_inner()));
    Ok(out.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn read_one(c: &Comps, keys: &[Arc<crate::keys::Keys>]) -> std::result::Result<Local, String> {
    let path = path_of(c);
    let before = std::fs::symlink_metadata(&path).map_err(|e| format!("cannot read: {e}"))?;
    if before.file_type().is_symlink() {
        let target = std::fs::read_link(&path).map_err(|e| format!("cannot read: {e}"))?;
        let after = std::fs::symlink_metadata(&path).map_err(|e| format!("cannot read: {e}"))?;
        if FileStat::of(&before) != FileStat::of(&after) {
            return Err("changed while being verified; run the move again".into());
        }
        return Ok(Local {
            path,
            stat: FileStat::of(&after),
            hashes: Vec::new(),
            target: Some(target.as_os_str().as_bytes().to_vec()),
        });
    }
    if !before.is_file() {
        return Err("no longer a regular file".into());
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let at_open = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    let mut hashers: Vec<_> = keys.iter().map(|k| k.file_hash.hasher()).collect();
    let mut buf = vec![0u8; 1 << 20];
    crate::crypto::hash_reader(&mut f, &mut buf, &mut hashers)
        .map_err(|e| format!("cannot read: {e}"))?;
    let after = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    let stat = FileStat::of(&after);
    if FileStat::of(&at_open) != stat || FileStat::of(&before) != stat {
        return Err("changed while being verified; run the move again".into());
    }
    Ok(Local {
        path,
        stat,
        hashes: hashers.into_iter().map(|h| h.finalize()).collect(),
        target: None,
    })
}

/// Write the move's snapshot with `marked` flagged vault-only: the trees on the way to them are
/// rewritten, the rest are shared with the backup just made.
fn write_marked(repo: &Repository, draft: &Snapshot, marked: &HashSet<Comps>) -> Result<Id> {
    let mut prefixes: HashSet<Comps> = HashSet::new();
    for c in marked {
        for i in 0..c.len() {
            prefixes.insert(c[..i].to_vec());
        }
    }
    let mut readers = PackReaders::default();
    let root = if marked.is_empty() {
        draft.root
    } else {
        // The rewritten trees are stored (and indexed) before the snapshot that names them.
        let out = BlobWriter::new(repo, 1)?;
        let root = mark_tree(
            repo,
            &draft.root,
            &mut Vec::new(),
            marked,
            &prefixes,
            &mut readers,
            &out,
        )?;
        out.finish()?;
        root
    };
    let mut snap = draft.clone();
    snap.root = root;
    snap.summary.vault_only = marked.len() as u64;
    let id = repo.write_snapshot(&snap)?;
    repo.cache()?.expire_folders()?;
    Ok(id)
}

fn mark_tree(
    repo: &Repository,
    id: &Id,
    path: &mut Comps,
    marked: &HashSet<Comps>,
    prefixes: &HashSet<Comps>,
    readers: &mut PackReaders,
    out: &BlobWriter<'_>,
) -> Result<Id> {
    let keys = repo.keys().clone();
    let mut writer = TreeWriter::new(&keys.tree_split);
    let mut cursor = FolderCursor::new(*id);
    while let Some(mut n) = cursor.next(&mut repo.trees(readers))? {
        path.push(n.name.clone());
        match &mut n.kind {
            NodeKind::Dir { subtree } if prefixes.contains(path.as_slice()) => {
                *subtree = mark_tree(repo, subtree, path, marked, prefixes, readers, out)?;
            }
            NodeKind::File { .. } | NodeKind::Symlink { .. }
                if marked.contains(path.as_slice()) =>
            {
                n.flags |= FLAG_VAULT_ONLY;
            }
            _ => {}
        }
        path.pop();
        writer.push(&n, &mut |b: &[u8]| out.add(BlobType::Tree, b))?;
    }
    writer.finish(&mut |b: &[u8]| out.add(BlobType::Tree, b))
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

/// What a move would take: files and symlinks under the roots, after the excludes.
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    pub files: Vec<PlannedItem>,
    pub bytes: u64,
    /// Left where they are whatever happens (sockets, devices, FIFOs, unreadable folders).
    pub kept: Vec<Skipped>,
}

#[derive(Debug, Serialize)]
pub struct PlannedItem {
    pub path: String,
    pub size: u64,
}

/// `--dry-run`: list what the move would take, touching nothing.
pub fn plan(opts: &BackupOptions) -> Result<Plan> {
    let (items, kept) = local_items(opts)?;
    let mut plan = Plan {
        bytes: items.iter().map(|i| i.1).sum(),
        files: items
            .into_iter()
            .map(|(p, size)| PlannedItem {
                path: p.to_string_lossy().into_owned(),
                size,
            })
            .collect(),
        kept,
    };
    plan.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(plan)
}

/// Files and symlinks (with sizes) under the roots after the excludes, and what cannot be moved.
type LocalItems = (Vec<(PathBuf, u64)>, Vec<Skipped>);

fn local_items(opts: &BackupOptions) -> Result<LocalItems> {
    let roots = archiver::prepare_paths(&opts.paths)?;
    let excludes = archiver::Excludes::new(&opts.excludes, &opts.exclude_paths)?;
    let mut plan = (Vec::new(), Vec::new());
    let mut stack: Vec<PathBuf> = roots;
    while let Some(p) = stack.pop() {
        if excludes.matches(&p) {
            continue;
        }
        let md = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                plan.1.push(Skipped {
                    path: p.to_string_lossy().into_owned(),
                    reason: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let t = md.file_type();
        if t.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => stack.extend(rd.flatten().map(|e| e.path())),
                Err(e) => plan.1.push(Skipped {
                    path: p.to_string_lossy().into_owned(),
                    reason: format!("cannot read: {e}"),
                }),
            }
        } else if t.is_file() || t.is_symlink() {
            plan.0.push((p, if t.is_file() { md.len() } else { 0 }));
        } else {
            plan.1.push(Skipped {
                path: p.to_string_lossy().into_owned(),
                reason: "not a file, folder or symlink".into(),
            });
        }
    }
    Ok(plan)
}

pub use crate::snapshots::{vault_only_files, VaultOnlyFile};

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

/// The local path of a snapshot path (trees mirror absolute paths).
pub fn local_path(c: &[Vec<u8>]) -> PathBuf {
    path_of(&c.to_vec())
}
