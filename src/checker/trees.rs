//! The tree half of `vault check`: every snapshot's folders walked once (each tree blob read once
//! across all snapshots), and, when something is damaged, the files and folders it affects named.

use std::collections::HashSet;

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{FolderCursor, NodeKind, TreeSource, FLAG_VAULT_ONLY, MAX_DEPTH};
use crate::ids::Id;
use crate::repo::{Index, PackReaders, RepoTrees, Repository};
use crate::treewalk::show_path;

use super::CheckReport;

/// Walk every snapshot's trees: count them and the vault-only files, and report data blobs the
/// index lacks and tree blobs that do not decode. Returns (missing data blobs, damaged trees).
pub(super) fn check_trees(
    repo: &Repository,
    index: &Index,
    snaps: &[(Id, Snapshot)],
    readers: &mut PackReaders,
    rep: &mut CheckReport,
) -> (HashSet<Id>, HashSet<Id>) {
    let mut missing_blobs: HashSet<Id> = HashSet::new();
    let mut bad_trees: HashSet<Id> = HashSet::new();
    // Every tree blob is read once, across all snapshots: a large folder that changed keeps
    // most of its blobs from one snapshot to the next.
    let mut src = Walk {
        trees: repo.trees(readers),
        seen: HashSet::new(),
        read: 0,
        last: None,
    };
    for (sid, s) in snaps {
        let forged_marks = rep.vault_only_files;
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
                        // The blob the cursor asked for last is the one that failed (the error
                        // names it).
                        bad_trees.insert(src.last.unwrap_or(t));
                        rep.errors.push(e.to_string());
                        continue;
                    }
                };
                if n.flags & FLAG_VAULT_ONLY != 0 {
                    rep.vault_only_files += 1;
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
        if !s.writer.is_full() {
            // A write-only device cannot move files (§11): such marks are forged, and
            // ignored by restore and move.
            let marks = rep.vault_only_files - forged_marks;
            rep.vault_only_files = forged_marks;
            if marks > 0 || s.summary.vault_only > 0 {
                rep.errors.push(format!(
                    "snapshot {}: written by a write-only device, yet it marks {} file(s) as \
                     vault-only; write-only devices cannot move files, so someone with a \
                     write-only profile forged it (its marks are ignored)",
                    sid.short(),
                    marks.max(s.summary.vault_only)
                ));
            }
        }
    }
    rep.trees = src.read;
    (missing_blobs, bad_trees)
}

/// What the check found damaged: tree blobs that do not decode, and blobs (of either type) that
/// are missing or fail to verify.
#[derive(Clone, Copy)]
pub(super) struct Damage<'a> {
    pub bad_trees: &'a HashSet<Id>,
    pub affected: &'a HashSet<Id>,
}

/// Name, per snapshot, the files whose data is affected, and the folders (whole or in part)
/// whose listing is.
pub(super) fn name_damaged(
    repo: &Repository,
    snaps: &[(Id, Snapshot)],
    damage: Damage<'_>,
    readers: &mut PackReaders,
    rep: &mut CheckReport,
) {
    for (sid, s) in snaps {
        let mut stack = vec![(s.root, Vec::<Vec<u8>>::new())];
        while let Some((t, path)) = stack.pop() {
            if damage.bad_trees.contains(&t) || damage.affected.contains(&t) {
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
                trees: repo.trees(readers),
                damage,
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
                        if blobs.iter().any(|b| damage.affected.contains(b)) {
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
    damage: Damage<'b>,
    hit: bool,
}

impl TreeSource for Naming<'_, '_> {
    fn tree_blob(&mut self, id: &Id) -> Result<Vec<u8>> {
        self.trees.tree_blob(id)
    }
    fn wants(&mut self, id: &Id) -> bool {
        if self.damage.bad_trees.contains(id) || self.damage.affected.contains(id) {
            self.hit = true;
            return false;
        }
        true
    }
}
