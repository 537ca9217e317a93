//! `vault copy`: replicate snapshots from one repository into another. Every blob is read and
//! verified in the source, re-identified and re-encrypted under the destination's keys (the two
//! repositories share no key), packed like a backup, and every copied file is then read back
//! from the destination and checked before the copy counts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::archiver::Progress;
use crate::compress::Compressor;
use crate::error::{Error, Result};
use crate::format::index::PackDesc;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{FolderCursor, NodeKind, TreeWriter, MAX_DEPTH};
use crate::format::BlobType;
use crate::ids::Id;
use crate::packer::{FinishedPack, Packer};
use crate::repo::{PackReaders, Repository};

/// Index objects list at most this many blobs (as backups do).
const INDEX_BLOBS: usize = 50_000;

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
    let mut next_seq = dst_snaps.iter().map(|(_, s)| s.sequence).max().unwrap_or(0);
    let mut previous = dst_snaps
        .iter()
        .max_by_key(|(_, s)| s.sequence)
        .map(|(id, _)| *id);
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
        next_seq += 1;
        let copy = Snapshot {
            repo_id: dst.repo_id(),
            root,
            parent: None,
            previous,
            sequence: next_seq,
            original: Some(*sid),
            ..snap.clone()
        };
        let (ok, bad) = crate::mover::verify_tree(dst, &root, &snap.paths, threads, &progress)?;
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
    report.blobs_new = w.blobs_new;
    report.bytes_added = w.bytes_added;
    report.packs_written = w.packs_written;
    Ok(report)
}

/// Packs blobs for the destination and stores them, packs first, then their index.
struct Writer<'a> {
    dst: &'a Repository,
    comp: Compressor,
    data: Packer,
    trees: Packer,
    written: Vec<PackDesc>,
    /// Source blob id → destination blob id.
    ids: HashMap<Id, Id>,
    /// Source whole-file hash → destination whole-file hash.
    hashes: HashMap<Id, Id>,
    /// Added by this run, not yet indexed.
    pending: HashSet<Id>,
    blobs_new: u64,
    bytes_added: u64,
    packs_written: u64,
}

impl<'a> Writer<'a> {
    fn new(dst: &'a Repository) -> Result<Self> {
        let cfg = dst.config();
        Ok(Writer {
            dst,
            comp: Compressor::new(cfg.zstd_level)?,
            data: Packer::new(dst, BlobType::Data, 2, cfg.pack_target as u64),
            trees: Packer::new(dst, BlobType::Tree, 1, cfg.pack_target as u64),
            written: Vec::new(),
            ids: HashMap::new(),
            hashes: HashMap::new(),
            pending: HashSet::new(),
            blobs_new: 0,
            bytes_added: 0,
            packs_written: 0,
        })
    }

    /// Store `plain` unless the destination has it; returns its destination id.
    fn add(&mut self, t: BlobType, plain: &[u8]) -> Result<Id> {
        let id = self.dst.keys().blob_id(plain);
        if self.pending.contains(&id) || self.dst.has_blob(&id)? {
            return Ok(id);
        }
        let (c, out) = self.comp.compress(plain);
        let stored = out.unwrap_or(plain);
        self.bytes_added += stored.len() as u64;
        self.blobs_new += 1;
        self.pending.insert(id);
        let p = if t == BlobType::Data {
            &self.data
        } else {
            &self.trees
        };
        if let Some(full) = p.add(id, c, plain.len(), stored, false)? {
            self.store(full)?;
        }
        Ok(id)
    }

    fn store(&mut self, pack: FinishedPack) -> Result<()> {
        let desc = pack.store()?;
        self.packs_written += 1;
        self.written.push(desc);
        Ok(())
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
        let mut rest = self.data.flush()?;
        rest.extend(self.trees.flush()?);
        for b in rest {
            self.store(b)?;
        }
        let mut batch = Vec::new();
        let mut count = 0;
        for p in std::mem::take(&mut self.written) {
            count += p.blobs.len();
            batch.push(p);
            if count >= INDEX_BLOBS {
                self.dst.put_index(&batch)?;
                batch.clear();
                count = 0;
            }
        }
        if !batch.is_empty() {
            self.dst.put_index(&batch)?;
        }
        self.pending.clear();
        Ok(())
    }
}
