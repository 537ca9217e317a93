//! The tree half of `vault check`: every snapshot's folders walked once (each tree blob read once
//! across all snapshots), and, when something is damaged, the files and folders it affects named.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{
    FolderCursor, NodeKind, TreeSource, FLAG_TORN, FLAG_VAULT_ONLY, MAX_DEPTH,
};
use crate::format::BlobType;
use crate::ids::Id;
use crate::repo::{Index, PackReaders, RepoTrees, Repository};
use crate::treewalk::show_path;

use super::CheckReport;

/// Files restore would refuse whatever their data: (folder's top tree blob, name).
pub(super) type BadNodes = HashSet<(Id, Vec<u8>)>;

/// What the walk of every snapshot's trees found: data blobs the index lacks, tree blobs that
/// do not decode, and files restore would refuse.
pub(super) struct TreeFindings {
    pub missing_blobs: HashSet<Id>,
    pub bad_trees: HashSet<Id>,
    pub bad_nodes: BadNodes,
}

/// Walk every snapshot's trees: count them and the vault-only files, and report data blobs the
/// index lacks, tree blobs that do not decode, files whose chunks are not data or do not add up
/// to their size, and snapshots whose trees hold more entries than they declare.
pub(super) fn check_trees(
    repo: &Repository,
    index: &Index,
    snaps: &[(Id, Snapshot)],
    readers: &mut PackReaders,
    rep: &mut CheckReport,
) -> TreeFindings {
    let mut missing_blobs: HashSet<Id> = HashSet::new();
    let mut bad_trees: HashSet<Id> = HashSet::new();
    let mut bad_nodes = BadNodes::new();
    // Every tree blob is read once, across all snapshots: a large folder that changed keeps
    // most of its blobs from one snapshot to the next.
    let mut src = Walk {
        trees: repo.trees(readers),
        seen: HashSet::new(),
        read: 0,
        last: None,
    };
    // Each folder's own entry count and subfolders, to count what a walk of each snapshot
    // meets without walking a folder twice.
    let mut folders: HashMap<Id, (u64, Vec<Id>)> = HashMap::new();
    for (sid, s) in snaps {
        let forged_marks = rep.vault_only_files;
        let mut stack = vec![(s.root, 0usize)];
        while let Some((t, depth)) = stack.pop() {
            if folders.contains_key(&t) {
                continue;
            }
            if depth > MAX_DEPTH {
                rep.errors.push(format!(
                    "tree {}: a folder nested deeper than {MAX_DEPTH} levels",
                    t.short()
                ));
                bad_trees.insert(t);
                continue;
            }
            let mut cursor = FolderCursor::new(t);
            let mut own = (0u64, Vec::new());
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
                own.0 += 1;
                if n.flags & FLAG_VAULT_ONLY != 0 {
                    rep.vault_only_files += 1;
                }
                if n.flags & FLAG_TORN != 0 {
                    rep.torn_files += 1;
                }
                if let Some(why) = node_fault(&n) {
                    rep.errors.push(format!(
                        "tree {}: entry {}: {why}; restore refuses it",
                        t.short(),
                        String::from_utf8_lossy(&n.name)
                    ));
                    bad_nodes.insert((t, n.name.clone()));
                    continue;
                }
                match &n.kind {
                    NodeKind::Dir { subtree } => {
                        own.1.push(*subtree);
                        stack.push((*subtree, depth + 1))
                    }
                    NodeKind::File { blobs, .. } => {
                        if let Some(why) = file_fault(index, blobs, n.size, &mut missing_blobs, rep)
                        {
                            rep.errors.push(format!(
                                "tree {}: file {}: {why}",
                                t.short(),
                                String::from_utf8_lossy(&n.name)
                            ));
                            bad_nodes.insert((t, n.name.clone()));
                        }
                    }
                    NodeKind::Symlink { .. } => {}
                }
            }
            folders.insert(t, own);
        }
        let met = entries_below(&s.root, &folders);
        if met > s.summary.entries() {
            rep.errors.push(format!(
                "snapshot {}: its folders hold {} entries, more than the {} it declares \
                 (damaged or forged: folders that name one folder over and over); restore and ls \
                 stop after {}",
                sid.short(),
                if met == u64::MAX {
                    "too many to count".to_string()
                } else {
                    met.to_string()
                },
                s.summary.entries(),
                s.summary.entries()
            ));
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
    TreeFindings {
        missing_blobs,
        bad_trees,
        bad_nodes,
    }
}

/// Why restore would refuse an entry whatever it holds, if it would (§12).
fn node_fault(n: &crate::format::tree::Node) -> Option<&'static str> {
    if !crate::format::tree::name_is_safe(&n.name) {
        return Some("its name is not a single path component");
    }
    // What filesystems take (NAME_MAX, PATH_MAX on Linux, macOS and the BSDs): restore gets
    // ENAMETOOLONG for more.
    if n.name.len() > 255 {
        return Some("its name is longer than the 255 bytes filesystems store");
    }
    match &n.kind {
        NodeKind::Symlink { target } if target.is_empty() || target.contains(&0) => {
            Some("a symlink target that cannot be created (empty or holding NUL)")
        }
        NodeKind::Symlink { target } if target.len() > 4095 => {
            Some("a symlink target longer than the 4,095 bytes filesystems store")
        }
        _ => None,
    }
}

/// Why restore would refuse a file whatever its data (a blob the index has as a tree blob,
/// chunk lengths that do not add up to the size), if it would; blobs the index lacks are
/// reported once each and go to `missing`.
fn file_fault(
    index: &Index,
    blobs: &[Id],
    size: u64,
    missing: &mut HashSet<Id>,
    rep: &mut CheckReport,
) -> Option<String> {
    let mut total = Some(0u64);
    let mut complete = true;
    for b in blobs {
        match index.entry(b) {
            None => {
                complete = false;
                if missing.insert(*b) {
                    rep.errors
                        .push(format!("blob {} is not in the index", b.short()));
                }
            }
            Some(e) if e.blob_type != BlobType::Data => {
                return Some(format!("blob {} is not a data blob", b.short()))
            }
            Some(e) => total = total.and_then(|t| t.checked_add(u64::from(e.raw_len))),
        }
    }
    match total {
        Some(t) if !complete || t == size => None,
        Some(t) => Some(format!("its chunks hold {t} bytes, its size says {size}")),
        None => Some("its chunks add up to more bytes than can be counted".into()),
    }
}

/// `--read-data`: the whole-file hash of every file in a write-only device's snapshot, each
/// distinct content once. Nothing a full device trusts vouches for those hashes (§13.1): a stolen
/// profile can record any. Returns the files whose content does not match.
pub(super) fn verify_untrusted_files(
    repo: &Repository,
    snaps: &[(Id, Snapshot)],
    damaged: &HashSet<Id>,
    rep: &mut CheckReport,
) -> BadNodes {
    let mut bad = BadNodes::new();
    let mut verified: HashSet<Id> = HashSet::new();
    let mut readers = PackReaders::default();
    let mut buf = Vec::new();
    for (sid, s) in snaps.iter().filter(|(_, s)| !s.writer.is_full()) {
        let mut budget = crate::treewalk::Budget::of(sid, s);
        let mut stack = vec![(s.root, Vec::<Vec<u8>>::new())];
        'walk: while let Some((t, path)) = stack.pop() {
            if path.len() > MAX_DEPTH {
                continue;
            }
            let mut cursor = FolderCursor::new(t);
            loop {
                let n = match cursor.next(&mut repo.trees(&mut readers)) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    // Reported by the structure check.
                    Err(_) => continue,
                };
                if budget.take().is_err() {
                    break 'walk;
                }
                let mut p = path.clone();
                p.push(n.name.clone());
                match &n.kind {
                    NodeKind::Dir { subtree } => stack.push((*subtree, p)),
                    NodeKind::File { blobs, hash } => {
                        if blobs.iter().any(|b| damaged.contains(b)) {
                            continue;
                        }
                        let key = content_key(blobs, hash, n.size);
                        if !verified.insert(key) {
                            continue;
                        }
                        let mut hasher = repo.keys().file_hash.hasher();
                        let mut total = 0u64;
                        let mut read = true;
                        for b in blobs {
                            if repo
                                .read_blob_into(b, BlobType::Data, &mut readers, &mut buf)
                                .is_err()
                            {
                                read = false;
                                break;
                            }
                            hasher.update(&buf);
                            total = total.saturating_add(buf.len() as u64);
                        }
                        // A blob that does not read is the data pass's to report.
                        if read && (total != n.size || hasher.finalize() != *hash) {
                            rep.errors.push(format!(
                                "snapshot {} (written by a write-only device): {}: its content \
                                 does not match the hash recorded; restore refuses it",
                                sid.short(),
                                show_path(&p)
                            ));
                            bad.insert((t, n.name.clone()));
                        }
                    }
                    NodeKind::Symlink { .. } => {}
                }
            }
        }
    }
    bad
}

/// One id for a file's content as a node records it: a content is verified once.
fn content_key(blobs: &[Id], hash: &Id, size: u64) -> Id {
    let mut h = blake3::Hasher::new();
    h.update(&hash.0);
    h.update(&size.to_le_bytes());
    for b in blobs {
        h.update(&b.0);
    }
    Id(*h.finalize().as_bytes())
}

/// The entries a walk from folder `top` meets, every path counted (saturating), from each
/// folder's own count and subfolders; each folder is summed once.
fn entries_below(top: &Id, folders: &HashMap<Id, (u64, Vec<Id>)>) -> u64 {
    let mut total: HashMap<Id, u64> = HashMap::new();
    // (folder, whether its subfolders are summed already)
    let mut stack = vec![(*top, false)];
    while let Some((t, ready)) = stack.pop() {
        if total.contains_key(&t) {
            continue;
        }
        let Some((own, subs)) = folders.get(&t) else {
            total.insert(t, 0);
            continue;
        };
        if ready {
            let below = subs.iter().fold(*own, |acc, s| {
                acc.saturating_add(total.get(s).copied().unwrap_or(0))
            });
            total.insert(t, below);
        } else {
            stack.push((t, true));
            stack.extend(
                subs.iter()
                    .filter(|s| !total.contains_key(*s))
                    .map(|s| (*s, false)),
            );
        }
    }
    total.get(top).copied().unwrap_or(0)
}

/// What the check found damaged: tree blobs that do not decode, and blobs (of either type) that
/// are missing or fail to verify.
#[derive(Clone, Copy)]
pub(super) struct Damage<'a> {
    pub bad_trees: &'a HashSet<Id>,
    pub affected: &'a HashSet<Id>,
    pub bad_nodes: &'a BadNodes,
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
        let mut budget = crate::treewalk::Budget::of(sid, s);
        let mut stack = vec![(s.root, Vec::<Vec<u8>>::new())];
        'walk: while let Some((t, path)) = stack.pop() {
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
                if budget.take().is_err() {
                    // Reported by check_trees: more entries than declared.
                    break 'walk;
                }
                let mut p = path.clone();
                p.push(n.name.clone());
                if damage.bad_nodes.contains(&(t, n.name.clone())) {
                    let whole = matches!(n.kind, NodeKind::Dir { .. });
                    let f = format!(
                        "{}:{}{}",
                        sid.short(),
                        show_path(&p),
                        if whole { " (whole folder)" } else { "" }
                    );
                    if n.flags & FLAG_VAULT_ONLY != 0 {
                        rep.vault_only_damaged.push(f.clone());
                    }
                    rep.damaged_files.push(f);
                    continue;
                }
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
