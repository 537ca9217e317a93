//! check: verify the repository's structure and, with --read-data, every byte of every pack,
//! then name the files that damage affects.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::short_name;
use crate::backend::FileType;
use crate::crypto;
use crate::error::{Error, Result};
use crate::format::tree::{FolderCursor, NodeKind, TreeSource, FLAG_VAULT_ONLY, MAX_DEPTH};
use crate::format::{self, BlobType};
use crate::ids::Id;
use crate::progress::Progress;
use crate::repo::{PackReaders, RepoTrees, Repository};
use crate::restorer::show_path;

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: u64,
    pub trees: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub blobs_verified: u64,
    /// Problems that mean data is missing or damaged.
    pub errors: Vec<String>,
    /// Harmless findings (leftovers of interrupted runs).
    pub notes: Vec<String>,
    /// Files whose content is affected by the errors: "snapshot-id:path".
    pub damaged_files: Vec<String>,
    /// The damaged files among them that were moved into the vault (their originals are gone):
    /// "snapshot-id:path".
    pub vault_only_damaged: Vec<String>,
    /// Files marked vault-only in this repository's snapshots.
    pub vault_only_files: u64,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

pub struct CheckOptions {
    pub read_data: bool,
    /// Packs downloaded and verified at once.
    pub threads: usize,
}

pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: Arc<Progress>,
) -> Result<CheckReport> {
    repo.keys().data_identity()?;
    let mut rep = CheckReport::default();
    // The repository itself is checked, not the local index: read every index object.
    let (index, index_errors) = repo.full_index()?;
    for (name, e) in &index_errors {
        rep.errors.push(format!("index {}: {e}", short_name(name)));
    }
    // Packs: indexed ones must exist with the recorded size.
    let stored: HashMap<String, u64> = repo.store().list(FileType::Pack)?.into_iter().collect();
    rep.packs = index.packs.len() as u64;
    let mut bad_packs: HashSet<Id> = HashSet::new();
    let mut indexed = HashSet::new();
    for p in &index.packs {
        let name = p.id.to_hex();
        indexed.insert(name.clone());
        match stored.get(&name) {
            None => {
                rep.errors.push(format!("pack {} is missing", p.id.short()));
                bad_packs.insert(p.id);
            }
            Some(&len) if len != p.object_len => {
                rep.errors.push(format!(
                    "pack {} has size {len}, the index says {}",
                    p.id.short(),
                    p.object_len
                ));
                bad_packs.insert(p.id);
            }
            _ => {}
        }
    }
    let orphans = stored.keys().filter(|k| !indexed.contains(*k)).count();
    if orphans > 0 {
        rep.notes.push(format!(
            "{orphans} pack(s) are not in any index (left by an interrupted backup); they are not used and do no harm"
        ));
    }

    // Snapshots and trees.
    let (snaps, bad) = repo.snapshots_with(true)?;
    for (name, e) in &bad {
        rep.errors
            .push(format!("snapshot {}: {e}", short_name(name)));
    }
    for id in repo.missing_snapshots() {
        rep.errors.push(format!(
            "snapshot {} is missing: this computer saw it, or a later snapshot was made after \
             it, and vault never deletes snapshots (deleted by someone else, or the storage was \
             rolled back)",
            id.short()
        ));
    }
    for id in repo.acknowledged_missing_snapshots() {
        rep.notes.push(format!(
            "snapshot {} is missing; acknowledged on this computer \
             (`vault snapshots --acknowledge-missing`)",
            id.short()
        ));
    }
    rep.snapshots = snaps.len() as u64;
    let mut missing_blobs: HashSet<Id> = HashSet::new();
    let mut bad_trees: HashSet<Id> = HashSet::new();
    let mut readers = PackReaders::default();
    let mut vault_only_seen = 0;
    {
        // Every tree blob is read once, across all snapshots: a large folder that changed keeps
        // most of its blobs from one snapshot to the next.
        let mut src = Walk {
            trees: repo.trees(&mut readers),
            seen: HashSet::new(),
            read: 0,
            last: None,
        };
        for (_, s) in &snaps {
            let mut stack = vec![(s.root, 0usize)];
            while let Some((t, depth)) = stack.pop() {
                if depth > MAX_DEPTH {
                    rep.errors.push(format!(
                        "tree {}: a folder nested deeper than {MAX_DEPTH} levels",
                        t.short()
                    ));
                    bad_trees.insert(t);
                    continue;
                }
                let mut cursor = FolderCursor::new(t);
                loop {
                    let n = match cursor.next(&mut src) {
                        Ok(Some(n)) => n,
                        Ok(None) => break,
                        Err(e) => {
                            // The blob the cursor asked for last is the one that failed (the
                            // error names it).
                            bad_trees.insert(src.last.unwrap_or(t));
                            rep.errors.push(e.to_string());
                            continue;
                        }
                    };
                    if n.flags & FLAG_VAULT_ONLY != 0 {
                        vault_only_seen += 1;
                    }
                    match &n.kind {
                        NodeKind::Dir { subtree } => stack.push((*subtree, depth + 1)),
                        NodeKind::File { blobs, .. } => {
                            for b in blobs {
                                if !index.contains(b) && missing_blobs.insert(*b) {
                                    rep.errors
                                        .push(format!("blob {} is not in the index", b.short()));
                                }
                            }
                        }
                        NodeKind::Symlink { .. } => {}
                    }
                }
            }
        }
        rep.trees = src.read;
    }

    // Every byte of every pack.
    let mut damaged_blobs: HashSet<Id> = HashSet::new();
    for (i, p) in index.packs.iter().enumerate() {
        if bad_packs.contains(&p.id) {
            damaged_blobs.extend(index.pack_entries(i).iter().map(|e| e.id));
        }
    }
    if opts.read_data {
        progress.total_bytes.store(
            index.packs.iter().map(|p| p.object_len).sum(),
            Ordering::Relaxed,
        );
        progress.total_files.store(rep.packs, Ordering::Relaxed);
        progress.scan_finished.store(true, Ordering::Relaxed);
        // Packs are downloaded and verified by several workers at once.
        let todo: Vec<(usize, &crate::format::index::PackInfo)> = index
            .packs
            .iter()
            .enumerate()
            .filter(|(_, p)| !bad_packs.contains(&p.id))
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..opts.threads.max(1) {
                scope.spawn(|| loop {
                    if crate::interrupt::requested() {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((pos, p)) = todo.get(i) else { return };
                    let entries = index.pack_entries(*pos);
                    let r = read_pack(repo, p, &entries);
                    progress.files_done.fetch_add(1, Ordering::Relaxed);
                    progress
                        .bytes_done
                        .fetch_add(p.object_len, Ordering::Relaxed);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                });
            }
        });
        if crate::interrupt::requested() {
            return Err(Error::Interrupted);
        }
        for (errs, damaged, verified) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
            rep.errors.extend(errs);
            damaged_blobs.extend(damaged);
            rep.blobs_verified += verified;
            rep.packs_read += 1;
        }
    }

    // Name what is affected.
    let affected: HashSet<Id> = damaged_blobs.union(&missing_blobs).copied().collect();
    if !affected.is_empty() || !bad_trees.is_empty() {
        for (sid, s) in &snaps {
            let mut stack = vec![(s.root, Vec::<Vec<u8>>::new())];
            while let Some((t, path)) = stack.pop() {
                if bad_trees.contains(&t) || affected.contains(&t) {
                    rep.damaged_files.push(format!(
                        "{}:{} (whole folder)",
                        sid.short(),
                        show_path(&path)
                    ));
                    continue;
                }
                if path.len() > MAX_DEPTH {
                    continue;
                }
                let mut src = Naming {
                    trees: repo.trees(&mut readers),
                    bad: &bad_trees,
                    affected: &affected,
                    hit: false,
                };
                let mut cursor = FolderCursor::new(t);
                loop {
                    let n = match cursor.next(&mut src) {
                        Ok(Some(n)) => n,
                        Ok(None) => break,
                        Err(_) => {
                            src.hit = true;
                            continue;
                        }
                    };
                    let mut p = path.clone();
                    p.push(n.name.clone());
                    match n.kind {
                        NodeKind::Dir { subtree } => stack.push((subtree, p)),
                        NodeKind::File { blobs, .. } => {
                            if blobs.iter().any(|b| affected.contains(b)) {
                                let f = format!("{}:{}", sid.short(), show_path(&p));
                                if n.flags & FLAG_VAULT_ONLY != 0 {
                                    rep.vault_only_damaged.push(f.clone());
                                }
                                rep.damaged_files.push(f);
                            }
                        }
                        NodeKind::Symlink { .. } => {}
                    }
                }
                if src.hit {
                    // A damaged blob of a split listing: the entries it held are unknown.
                    rep.damaged_files.push(format!(
                        "{}:{} (part of the folder)",
                        sid.short(),
                        show_path(&path)
                    ));
                }
            }
        }
        rep.damaged_files.sort();
        rep.vault_only_damaged.sort();
    }
    rep.vault_only_files = vault_only_seen;
    Ok(rep)
}

/// Tree blobs for the structure check: each read once across every snapshot.
struct Walk<'a> {
    trees: RepoTrees<'a>,
    seen: HashSet<Id>,
    read: u64,
    /// The blob asked for last: the one a cursor error is about.
    last: Option<Id>,
}

impl TreeSource for Walk<'_> {
    fn tree_blob(&mut self, id: &Id) -> Result<Vec<u8>> {
        self.last = Some(*id);
        self.read += 1;
        self.trees.tree_blob(id)
    }
    fn wants(&mut self, id: &Id) -> bool {
        self.seen.insert(*id)
    }
}

/// Tree blobs for naming damaged files: damaged ones are passed over and noted.
struct Naming<'a, 'b> {
    trees: RepoTrees<'a>,
    bad: &'b HashSet<Id>,
    affected: &'b HashSet<Id>,
    hit: bool,
}

impl TreeSource for Naming<'_, '_> {
    fn tree_blob(&mut self, id: &Id) -> Result<Vec<u8>> {
        self.trees.tree_blob(id)
    }
    fn wants(&mut self, id: &Id) -> bool {
        if self.bad.contains(id) || self.affected.contains(id) {
            self.hit = true;
            return false;
        }
        true
    }
}

/// Download one pack and verify its header, table and every blob. Returns the errors, the ids of
/// the damaged blobs and the number verified.
fn read_pack(
    repo: &Repository,
    p: &crate::format::index::PackInfo,
    entries: &[format::BlobEntry],
) -> (Vec<String>, Vec<Id>, u64) {
    let what = format!("pack {}", p.id.short());
    let mut errors = vec![];
    let all_damaged = |errors: &mut Vec<String>, e: Error| {
        errors.push(format!("{what}: {e}"));
        (entries.iter().map(|e| e.id).collect::<Vec<_>>(), 0)
    };
    let bytes = match repo.store().get(FileType::Pack, &p.id.to_hex()) {
        Ok(b) => b,
        Err(e) => {
            let (d, v) = all_damaged(&mut errors, e);
            return (errors, d, v);
        }
    };
    let open = || {
        repo.keys()
            .data_identity()?
            .open(Cursor::new(&bytes[..]), &what)
    };
    let mut s = match open() {
        Ok(s) => s,
        Err(e) => {
            let (d, v) = all_damaged(&mut errors, e);
            return (errors, d, v);
        }
    };
    // The table inside the pack must agree with the index.
    let table = (|| -> Result<Vec<format::BlobEntry>> {
        let mut hdr = [0u8; format::HEADER_LEN];
        s.read_exact(&mut hdr)
            .map_err(|e| crypto::read_error(&what, e))?;
        format::read_header(
            &mut format::codec::Reader::new(&hdr, "pack"),
            Some(&repo.repo_id()),
            format::ObjectKind::Pack,
        )?;
        let (len, t) = crate::repo::read_table_from_end(&mut s, &what)?;
        if len != p.plain_len {
            return Err(Error::corrupt(&what, "its length differs from the index's"));
        }
        Ok(t)
    })();
    match table {
        Ok(mut t) => {
            // Sorted, so that a pack of a hundred thousand small blobs costs a bisection per
            // entry, not a scan.
            t.sort_by_key(|e| e.offset);
            let ids: HashSet<Id> = t.iter().map(|e| e.id).collect();
            let listed = |e: &format::BlobEntry| {
                t.binary_search_by_key(&e.offset, |x| x.offset)
                    .is_ok_and(|i| t[i] == *e)
            };
            if entries.iter().any(|e| !listed(e)) || ids.len() != t.len() {
                errors.push(format!("{what}: its blob table disagrees with the index"));
            }
        }
        Err(e) => errors.push(format!("{what}: header unreadable: {e}")),
    }
    let mut damaged = vec![];
    let mut verified = 0;
    for e in entries {
        let r = (|| -> Result<()> {
            s.seek(SeekFrom::Start(e.offset))
                .map_err(|x| crypto::read_error(&what, x))?;
            let mut buf = vec![0u8; e.stored_len as usize];
            s.read_exact(&mut buf)
                .map_err(|x| crypto::read_error(&what, x))?;
            repo.decode_blob(e, buf)?;
            Ok(())
        })();
        match r {
            Ok(()) => verified += 1,
            Err(err) => {
                // After a failed chunk the stream's position is unknown: start a fresh reader.
                if let Ok(fresh) = open() {
                    s = fresh;
                }
                errors.push(format!(
                    "{what}: {} blob {}: {err}",
                    if e.blob_type == BlobType::Tree {
                        "tree"
                    } else {
                        "data"
                    },
                    e.id.short()
                ));
                damaged.push(e.id);
            }
        }
    }
    (errors, damaged, verified)
}
