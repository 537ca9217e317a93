//! `vault stats`: what the repository holds and what each snapshot added, deduplicated, with the
//! vault-only files and what a prune would free.

use std::collections::HashSet;

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::tree::{FolderCursor, NodeKind, TreeSource, MAX_DEPTH};
use crate::ids::Id;
use crate::repo::{Index, PackReaders, Repository};

/// Objects of one kind in the store.
#[derive(Debug, Default, Serialize)]
pub struct Objects {
    pub count: u64,
    pub bytes: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Stored {
    pub packs: Objects,
    pub index: Objects,
    pub snapshots: Objects,
    /// Key files, forget records, condemn markers, removed keys, and the second copies of
    /// snapshots and tree packs (design.md §2.2).
    pub other: Objects,
    pub total_bytes: u64,
}

/// One snapshot: its size as files and what it added to the repository.
#[derive(Debug, Serialize)]
pub struct SnapshotStats {
    pub id: String,
    pub time: i64,
    pub host: String,
    pub files: u64,
    /// Sum of its files' sizes.
    pub logical_bytes: u64,
    /// Chunks and listings no older snapshot uses, as stored (compressed).
    pub added_blobs: u64,
    pub added_bytes: u64,
    /// Every chunk and listing it needs, each once, as stored: what it takes on its own.
    pub deduplicated_bytes: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub stored: Stored,
    pub snapshots: Vec<SnapshotStats>,
    /// Sum of the snapshots' logical sizes.
    pub logical_bytes: u64,
    /// Every blob some snapshot needs, once, as stored.
    pub deduplicated_bytes: u64,
    pub blobs: u64,
    pub vault_only_files: u64,
    pub vault_only_bytes: u64,
    /// Bytes no snapshot needs, counted as `prune` counts them: whole packs that hold nothing
    /// needed, and the unneeded blobs of the others.
    pub unused_bytes: u64,
}

/// Tree blobs through the local index; `seen` skips folders already counted.
struct Trees<'a> {
    repo: &'a Repository,
    readers: PackReaders,
    seen: HashSet<Id>,
    new_trees: Vec<Id>,
}

impl<'a> Trees<'a> {
    fn new(repo: &'a Repository) -> Self {
        Trees {
            repo,
            readers: PackReaders::default(),
            seen: HashSet::new(),
            new_trees: Vec::new(),
        }
    }
}

impl TreeSource for Trees<'_> {
    fn tree_blob(&mut self, id: &Id) -> Result<Vec<u8>> {
        self.repo
            .read_blob(id, crate::format::BlobType::Tree, &mut self.readers)
    }
    fn wants(&mut self, id: &Id) -> bool {
        let new = self.seen.insert(*id);
        if new {
            self.new_trees.push(*id);
        }
        new
    }
}

/// Walk one snapshot, calling `blob` for every data blob below folders `trees` has not seen.
fn walk(trees: &mut Trees<'_>, sid: &Id, root: Id, mut blob: impl FnMut(&Id)) -> Result<()> {
    let mut stack = vec![(root, 0usize)];
    while let Some((t, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(Error::corrupt(
                format!("snapshot {}", sid.short()),
                "folders nested too deep",
            ));
        }
        let mut cursor = FolderCursor::new(t);
        while let Some(n) = cursor.next(trees)? {
            match n.kind {
                NodeKind::Dir { subtree } => stack.push((subtree, depth + 1)),
                NodeKind::File { blobs, .. } => blobs.iter().for_each(&mut blob),
                NodeKind::Symlink { .. } => {}
            }
        }
    }
    Ok(())
}

/// Gather the figures; `one`: only this snapshot's line, with its own deduplicated size.
pub fn stats(repo: &Repository, one: Option<Id>) -> Result<Stats> {
    let mut st = Stats::default();
    for (t, into) in [
        (FileType::Pack, 0),
        (FileType::Index, 1),
        (FileType::Snapshot, 2),
        (FileType::Key, 3),
        (FileType::Forgotten, 3),
        (FileType::Condemned, 3),
        (FileType::Revoked, 3),
        // Second copies (design.md §2.2) are stored bytes like any other.
        (FileType::TreePackCopy, 3),
        (FileType::SnapshotCopy, 3),
    ] {
        for (_, size) in repo.store().list(t)? {
            let o = match into {
                0 => &mut st.stored.packs,
                1 => &mut st.stored.index,
                2 => &mut st.stored.snapshots,
                _ => &mut st.stored.other,
            };
            o.count += 1;
            o.bytes += size;
            st.stored.total_bytes += size;
        }
    }
    let (index, errors) = repo.full_index()?;
    if let Some((name, e)) = errors.first() {
        return Err(Error::Invalid(format!(
            "index object {}: {e}; run `vault check`",
            name.short()
        )));
    }
    let size = |index: &Index, id: &Id| index.entry(id).map_or(0, |e| u64::from(e.stored_len));
    let (snaps, _) = repo.snapshots()?;
    let mut trees = Trees::new(repo);
    let mut used: HashSet<Id> = HashSet::new();
    for (sid, s) in &snaps {
        let (mut blobs, mut bytes) = (0u64, 0u64);
        walk(&mut trees, sid, s.root, |b| {
            if used.insert(*b) {
                blobs += 1;
                bytes += size(&index, b);
            }
        })?;
        for t in trees.new_trees.drain(..) {
            if used.insert(t) {
                blobs += 1;
                bytes += size(&index, &t);
            }
        }
        st.logical_bytes += s.summary.bytes;
        if one.is_none() || one == Some(*sid) {
            st.snapshots.push(SnapshotStats {
                id: sid.to_hex(),
                time: s.time,
                host: s.host.clone(),
                files: s.summary.files,
                logical_bytes: s.summary.bytes,
                added_blobs: blobs,
                added_bytes: bytes,
                deduplicated_bytes: None,
            });
        }
    }
    if let (Some(id), Some(line)) = (one, st.snapshots.first_mut()) {
        let s = &snaps.iter().find(|(i, _)| *i == id).map(|(_, s)| s.root);
        if let Some(root) = s {
            let mut own = Trees::new(repo);
            let mut mine: HashSet<Id> = HashSet::new();
            walk(&mut own, &id, *root, |b| {
                mine.insert(*b);
            })?;
            mine.extend(own.new_trees);
            line.deduplicated_bytes = Some(mine.iter().map(|b| size(&index, b)).sum());
        }
    }
    st.blobs = used.len() as u64;
    st.deduplicated_bytes = used.iter().map(|b| size(&index, b)).sum();
    // As prune counts it: a pack holding nothing needed is unused whole; in the others, the
    // blobs not needed (or needed but counted in an earlier pack). Headers, tables and padding
    // of packs that stay are not: no prune frees them.
    let mut counted: HashSet<Id> = HashSet::new();
    for (pos, p) in index.packs.iter().enumerate() {
        let entries = index.described(pos);
        let mut needed = false;
        let mut unused = 0u64;
        for e in entries {
            if used.contains(&e.id) && counted.insert(e.id) {
                needed = true;
            } else {
                unused += u64::from(e.stored_len);
            }
        }
        st.unused_bytes += if needed { unused } else { p.object_len };
    }
    for f in crate::snapshots::vault_only_files_of(repo, &snaps)? {
        st.vault_only_files += 1;
        st.vault_only_bytes += f.node.size;
    }
    Ok(st)
}
