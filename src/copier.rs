//! `vault copy`: replicate snapshots from one repository into another. Every blob is read and
//! verified in the source, re-identified and re-encrypted under the destination's keys (the two
//! repositories share no key), packed like a backup, and every copied file is then read back
//! from the destination and checked before the copy counts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::blobwriter::{BlobWriter, WriterStats};
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{FolderCursor, NodeKind, TreeWriter, MAX_DEPTH};
use crate::format::BlobType;
use crate::ids::Id;
use crate::progress::Progress;
use crate::repo::{PackReaders, Repository};

#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    /// Source snapshot id → the new snapshot's id.
    pub copied: Vec<(String, String)>,
    /// Source snapshots the destination already holds copies of.
    pub already_there: u64,
    pub blobs_new: u64,
    pub bytes_added: u64,
    pub packs_written: u64,
    pub files_verified: u64,
    /// Files that did not read back correctly from the destination: "snapshot:path: reason".
    pub failed: Vec<String>,
}

/// Copy `which` (all when empty) from `src` into `dst`, skipping snapshots already copied.
pub fn copy(
    src: &Repository,
    dst: &Repository,
    which: &[Id],
    threads: usize,
    progress: Arc<Progress>,
) -> Result<CopyReport> {
    if src.repo_id() == dst.repo_id() {
        return Err(Error::Invalid(
            "source and destination are the same repository".into(),
        ));
    }
    dst.keys().data_identity()?;
    let (src_snaps, _) = src.snapshots()?;
    let (dst_snaps, _) = dst.snapshots()?;
    let done: HashSet<Id> = dst_snaps.iter().filter_map(|(_, s)| s.original).collect();
    let mut report = CopyReport::default();
    let mut w = Writer::new(dst)?;
    let (mut previous, mut sequence) = crate::snapshots::chain_after(&dst_snaps);
    for (sid, snap) in &src_snaps {
        if !which.is_empty() && !which.contains(sid) {
            continue;
        }
        if done.contains(sid) {
            report.already_there += 1;
            continue;
        }
        let mut readers = PackReaders::default();
        let root = w.tree(src, &snap.root, 0, &mut readers)?;
        w.finish()?;
        let copy = Snapshot {
            repo_id: dst.repo_id(),
            root,
            parent: None,
            previous,
            sequence,
            original: Some(*sid),
            ..snap.clone()
        };
        sequence = sequence.saturating_add(1);
        let (ok, bad) = crate::readback::verify_tree(dst, &root, &snap.paths, threads, &progress)?;
        report.files_verified += ok;
        if !bad.is_empty() {
            // The snapshot is not written: a copy that does not read back is no copy.
            report.failed.extend(
                bad.into_iter()
                    .map(|(p, e)| format!("{}:{p}: {e}", sid.short())),
            );
            continue;
        }
        let id = dst.write_snapshot(&copy)?;
        previous = Some(id);
        report.copied.push((sid.to_hex(), id.to_hex()));
    }
    let stats = &w.out.stats;
    report.blobs_new = WriterStats::get(&stats.blobs_new);
    report.bytes_added = WriterStats::get(&stats.bytes_added);
    report.packs_written = WriterStats::get(&stats.packs_written);
    Ok(report)
}

/// Re-identifies the source's blobs for the destination and stores them there (packs first,
/// then their index, through the destination's [`BlobWriter`]).
struct Writer<'a> {
    dst: &'a Repository,
    out: BlobWriter<'a>,
    /// Source blob id → destination blob id.
    ids: HashMap<Id, Id>,
    /// Source whole-file hash → destination whole-file hash.
    hashes: HashMap<Id, Id>,
}

impl<'a> Writer<'a> {
    fn new(dst: &'a Repository) -> Result<Self> {
        Ok(Writer {
            dst,
            out: BlobWriter::new(dst, 2)?,
            ids: HashMap::new(),
            hashes: HashMap::new(),
        })
    }

    /// Store `plain` unless the destination has it; returns its destination id.
    fn add(&mut self, t: BlobType, plain: &[u8]) -> Result<Id> {
        self.out.add(t, plain)
    }

    /// Copy a folder and everything below it; returns the destination's id of its top tree
    /// blob. `depth` is the folder's (§10): deeper ones are refused as any reader refuses them.
    fn tree(
        &mut self,
        src: &Repository,
        id: &Id,
        depth: usize,
        readers: &mut PackReaders,
    ) -> Result<Id> {
        if crate::interrupt::requested() {
            return Err(Error::Interrupted);
        }
        if let Some(d) = self.ids.get(id) {
            return Ok(*d);
        }
        if depth > MAX_DEPTH {
            return Err(Error::corrupt(
                format!("tree {}", id.short()),
                format!("a folder nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        // The destination splits large folders by its own key.
        let keys = self.dst.keys().clone();
        let mut out = TreeWriter::new(&keys.tree_split);
        let mut cursor = FolderCursor::new(*id);
        while let Some(mut n) = cursor.next(&mut src.trees(readers))? {
            match &mut n.kind {
                NodeKind::Dir { subtree } => {
                    *subtree = self.tree(src, subtree, depth + 1, readers)?
                }
                NodeKind::File { blobs, hash } => {
                    let known = self.hashes.get(hash).copied();
                    let mut h = self.dst.keys().file_hash.hasher();
                    for b in blobs.iter_mut() {
                        match (self.ids.get(b), known) {
                            (Some(d), Some(_)) => *b = *d,
                            _ => {
                                let plain = src.read_blob(b, BlobType::Data, readers)?;
                                h.update(&plain);
                                let d = self.add(BlobType::Data, &plain)?;
                                self.ids.insert(*b, d);
                                *b = d;
                            }
                        }
                    }
                    let new_hash = match known {
                        Some(k) => k,
                        None => {
                            let k = h.finalize();
                            self.hashes.insert(*hash, k);
                            k
                        }
                    };
                    *hash = new_hash;
                }
                NodeKind::Symlink { .. } => {}
            }
            out.push(&n, &mut |b: &[u8]| self.add(BlobType::Tree, b))?;
        }
        let d = out.finish(&mut |b: &[u8]| self.add(BlobType::Tree, b))?;
        self.ids.insert(*id, d);
        Ok(d)
    }

    /// Seal the open packs and index everything stored so far.
    fn finish(&mut self) -> Result<()> {
        self.out.finish()
    }
}
