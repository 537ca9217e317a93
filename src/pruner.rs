//! `vault prune` (§13.2): find the packs no snapshot needs, condemn them with a marker, delete
//! them in a later run once the marker is older than the grace period, repack packs that are
//! mostly unused or small, and rewrite the index without the deleted packs. Lock-free: backups
//! on other computers may run meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::{FileType, RequestStats};
use crate::blobwriter::{BlobWriter, INDEX_BLOBS_PER_OBJECT};
use crate::error::{Error, Result};
use crate::format::index::{PackDesc, PackInfo};
use crate::format::records::CondemnMarker;
use crate::format::tree::{FolderCursor, NodeKind, TreeSource, MAX_DEPTH};
use crate::format::{BlobEntry, BlobType, WrittenBy};
use crate::ids::Id;
use crate::progress::Progress;
use crate::repo::{PackReaders, Repository, FETCH_THREADS};

/// How prune runs.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub dry_run: bool,
    /// Seconds a pack must have existed before it is condemned, and a marker before its packs
    /// are deleted (store clock). Every backup must write its snapshot within this time of
    /// checking the markers, which it does right before the write.
    pub grace: i64,
    /// Repack until the unused share of the repository is at most this (percent).
    pub max_unused: f64,
    /// Merge packs smaller than a quarter of the pack size that backups leave behind.
    pub merge_small: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            grace: DEFAULT_GRACE,
            max_unused: 5.0,
            merge_small: true,
        }
    }
}

/// More index objects than this are merged into few even when no pack is deleted: every run
/// of every device lists and reads them all.
const COMPACT_INDEX_AT: usize = 32;

/// Small packs of one kind are merged when there are at least this many.
const MERGE_AT_LEAST: usize = 5;

/// A day: longer than any backup's check-to-write step and any reasonable clock skew.
pub const DEFAULT_GRACE: i64 = 86_400;

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: u64,
    pub packs: u64,
    pub repository_bytes: u64,
    pub used_blobs: u64,
    pub used_bytes: u64,
    pub unused_bytes: u64,
    /// Packs condemned by this run: deleted by a prune at least `grace` later.
    pub condemned_packs: u64,
    pub condemned_bytes: u64,
    /// Packs whose used blobs this run copied into new packs (condemned too).
    pub repacked_packs: u64,
    pub repacked_blobs: u64,
    pub repacked_bytes: u64,
    /// Packs deleted (condemned by an earlier run, past the grace period, still unneeded).
    pub deleted_packs: u64,
    pub deleted_bytes: u64,
    /// Condemned packs a snapshot needs again (one written meanwhile): kept.
    pub resurrected_packs: u64,
    /// Condemned packs still in their grace period, and when the first can go (store clock).
    pub waiting_packs: u64,
    pub waiting_bytes: u64,
    pub waiting_until: Option<i64>,
    /// Packs young enough to belong to a backup still running: left alone.
    pub young_packs: u64,
    /// Objects kept by Object Lock, and until when.
    pub locked: Vec<(String, i64)>,
    pub index_objects_written: u64,
    pub index_objects_removed: u64,
    pub snapshot_objects_removed: u64,
    /// Second copies of tree packs left without their first and unindexed (§2.2), removed,
    /// and their size.
    pub orphan_copies_removed: u64,
    pub orphan_copies_bytes: u64,
    pub markers_removed: u64,
    /// Packs the index describes and the store does not have (see `vault check`).
    pub missing_packs: Vec<String>,
    pub bad_markers: Vec<String>,
    pub requests: RequestStats,
}

/// One pack as the index describes it: its header and every entry, by who recorded it.
struct Pack {
    info: PackInfo,
    entries: Vec<(BlobEntry, WrittenBy)>,
}

/// Tree blobs read through the in-memory index (the local index leaves condemned packs out),
/// each verified; `seen` makes every folder read once across snapshots.
struct Trees<'a> {
    repo: &'a Repository,
    packs: &'a HashMap<Id, Pack>,
    locations: &'a HashMap<Id, Vec<Id>>,
    readers: PackReaders,
    seen: HashSet<Id>,
}

impl TreeSource for Trees<'_> {
    fn tree_blob(&mut self, id: &Id) -> Result<Vec<u8>> {
        let mut first_err = None;
        for pack in self.locations.get(id).into_iter().flatten() {
            let p = &self.packs[pack];
            let Some((e, _)) = p.entries.iter().find(|(e, _)| e.id == *id) else {
                continue;
            };
            let mut out = Vec::new();
            match self
                .repo
                .read_at(&p.info, e, BlobType::Tree, &mut self.readers, &mut out)
            {
                Ok(()) => return Ok(out),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| Error::NotFound(format!("tree blob {}", id.short()))))
    }
    fn wants(&mut self, id: &Id) -> bool {
        self.seen.insert(*id)
    }
}

/// Ctrl-C: stop at the next step; every step leaves the repository valid (§13.2).
fn interrupted() -> Result<()> {
    if crate::interrupt::requested() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Removes the clock probe when the run ends, however it ends (best effort; the successful
/// end has removed it already).
struct ProbeGuard<'a> {
    repo: &'a Repository,
    name: Option<Id>,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.name {
            let _ = self.repo.store().delete(FileType::Condemned, &n.to_hex());
        }
    }
}

fn refuse(what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("prune stopped before changing anything: {what}"))
}

/// Run a prune. See the module and design.md §13.2.
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    progress: Arc<Progress>,
) -> Result<PruneReport> {
    repo.keys().full()?;
    let mut rep = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // The store's clock: an empty marker written now, read back from the listing. Deleted at
    // the end; one left by a killed run is an empty marker the next prune removes.
    let probe = if opts.dry_run {
        None
    } else {
        Some(repo.write_condemn_marker(
            Id::random(),
            &CondemnMarker {
                time: crate::repo::now().0,
                packs: Vec::new(),
            },
        )?)
    };
    // A run that stops (a refusal, an error) removes its probe: it condemns nothing, but one
    // left per refused run would pile up until a prune succeeds.
    let _probe_guard = ProbeGuard { repo, name: probe };
    let (markers, bad_markers) = repo.condemn_markers()?;
    rep.bad_markers = bad_markers.iter().map(|(_, e)| e.to_string()).collect();
    let store_now = probe
        .and_then(|p| markers.iter().find(|m| m.name == p).map(|m| m.modified))
        .unwrap_or_else(|| crate::repo::now().0);
    let lock_secs = repo
        .config()
        .object_lock
        .map(|l| i64::from(l.days) * 86_400);
    let locked_until = |modified: i64| -> Option<i64> {
        let until = modified.saturating_add(lock_secs?);
        (until > store_now).then_some(until)
    };

    // Snapshots, then the index, then the packs (§13.2: a backup writes packs, index, snapshot;
    // listing in the other order means every snapshot seen has its packs and index seen).
    let forgotten = repo.forgotten()?;
    let (snaps, bad) = repo.snapshots_with(true)?;
    if let Some((id, e)) = bad.first() {
        return Err(refuse(format!(
            "snapshot {} cannot be read ({e}), so what it needs is unknown; forget it by id or \
             repair the repository first",
            id.short()
        )));
    }
    // A snapshot gone without a forget record may come back (a storage rolled back, a folder
    // half copied): its data must not go before the user has looked.
    let missing = repo.missing_snapshots();
    if !missing.is_empty() {
        let ids: Vec<String> = missing.iter().map(|id| id.short()).collect();
        return Err(refuse(format!(
            "snapshot(s) {} are missing from the repository without a forget record, and their \
             data may be all that is left of them; find out why (`vault check`), then either \
             put them back or run `vault snapshots --acknowledge-missing` to let prune go on",
            ids.join(", ")
        )));
    }
    rep.snapshots = snaps.len() as u64;
    interrupted()?;
    let index_names = repo.names(FileType::Index)?;
    let mut packs: HashMap<Id, Pack> = HashMap::new();
    for batch in index_names.chunks(FETCH_THREADS * 2) {
        for (name, r) in repo.fetch_all(batch.to_vec(), |n| repo.read_index_object(n)) {
            let (by, descs) = r.map_err(|e| {
                refuse(format!(
                    "index object {}: {e}; run `vault repair index` first",
                    name.short()
                ))
            })?;
            for d in descs {
                let p = packs.entry(d.id).or_insert_with(|| Pack {
                    info: d.info(),
                    entries: Vec::new(),
                });
                for b in d.blobs {
                    match p.entries.iter_mut().find(|(e, _)| *e == b) {
                        Some((_, w)) if by.is_full() => *w = by,
                        Some(_) => {}
                        None => p.entries.push((b, by)),
                    }
                }
            }
        }
    }
    let stored: HashMap<Id, (u64, i64)> = repo
        .store()
        .list_dated(FileType::Pack)?
        .into_iter()
        .map(|(id, size, modified)| (id, (size, modified)))
        .collect();
    rep.packs = stored.len() as u64;
    rep.repository_bytes = stored.values().map(|(s, _)| s).sum();
    let mut locations: HashMap<Id, Vec<Id>> = HashMap::new();
    for (pid, p) in &packs {
        if !stored.contains_key(pid) {
            rep.missing_packs.push(pid.to_hex());
            continue;
        }
        for (e, _) in &p.entries {
            locations.entry(e.id).or_default().push(*pid);
        }
    }

    // What the snapshots need: every tree blob and every data blob they name.
    progress.scan_finished.store(false, Ordering::Relaxed);
    let mut used: HashSet<Id> = HashSet::new();
    {
        let mut trees = Trees {
            repo,
            packs: &packs,
            locations: &locations,
            readers: PackReaders::default(),
            seen: HashSet::new(),
        };
        for (sid, s) in &snaps {
            let mut stack: Vec<(Id, usize)> = vec![(s.root, 0)];
            while let Some((t, depth)) = stack.pop() {
                if depth > MAX_DEPTH {
                    return Err(refuse(format!("snapshot {} nests too deep", sid.short())));
                }
                let mut cursor = FolderCursor::new(t);
                loop {
                    let n = match cursor.next(&mut trees) {
                        Ok(Some(n)) => n,
                        Ok(None) => break,
                        Err(e) => {
                            return Err(refuse(format!(
                                "snapshot {}: {e}; see `vault check`",
                                sid.short()
                            )))
                        }
                    };
                    match n.kind {
                        NodeKind::Dir { subtree } => stack.push((subtree, depth + 1)),
                        NodeKind::File { blobs, .. } => {
                            for b in blobs {
                                if !locations.contains_key(&b) {
                                    return Err(refuse(format!(
                                        "snapshot {} needs a chunk no stored pack holds; see \
                                         `vault check`",
                                        sid.short()
                                    )));
                                }
                                used.insert(b);
                            }
                        }
                        _ => {}
                    }
                }
            }
            progress.files_done.fetch_add(1, Ordering::Relaxed);
            interrupted()?;
        }
        used.extend(trees.seen);
    }
    rep.used_blobs = used.len() as u64;

    // Condemned packs and when (the earliest verified marker naming each).
    let mut condemned_at: HashMap<Id, i64> = HashMap::new();
    for m in &markers {
        for p in &m.marker.packs {
            let t = condemned_at.entry(*p).or_insert(m.modified);
            *t = (*t).min(m.modified);
        }
    }
    let due = |p: &Id| {
        condemned_at
            .get(p)
            .is_some_and(|t| store_now.saturating_sub(*t) >= opts.grace)
    };
    // A blob counts as used in one pack only: the first alive location (not due for deletion).
    let mut home: HashMap<Id, Id> = HashMap::new();
    for b in &used {
        let locs = &locations[b];
        let alive = locs.iter().find(|p| !due(p)).or(locs.first());
        if let Some(p) = alive {
            home.insert(*b, *p);
        }
    }

    let mut delete_now: Vec<Id> = Vec::new();
    let mut resurrected: HashSet<Id> = HashSet::new();
    let mut condemn: Vec<Id> = Vec::new();
    let mut candidates: Vec<(Id, u64, u64)> = Vec::new(); // pack, used bytes, size
    let mut small: Vec<(Id, u64, u64)> = Vec::new();
    let small_limit = u64::from(repo.config().pack_target) / 4;
    for (pid, (size, modified)) in &stored {
        let entries = packs.get(pid).map(|p| p.entries.as_slice()).unwrap_or(&[]);
        let used_here: Vec<&BlobEntry> = entries
            .iter()
            .map(|(e, _)| e)
            .filter(|e| home.get(&e.id) == Some(pid))
            .collect();
        let used_bytes: u64 = used_here.iter().map(|e| u64::from(e.stored_len)).sum();
        // Blobs no snapshot needs here; a pack's header, padding and table are not counted:
        // repacking cannot shrink them.
        let blob_bytes: u64 = entries.iter().map(|(e, _)| u64::from(e.stored_len)).sum();
        let unused_here = blob_bytes.saturating_sub(used_bytes);
        rep.used_bytes += used_bytes;
        rep.unused_bytes += if used_here.is_empty() {
            *size
        } else {
            unused_here
        };
        if condemned_at.contains_key(pid) {
            if !due(pid) {
                rep.waiting_packs += 1;
                rep.waiting_bytes += size;
                let until = condemned_at[pid].saturating_add(opts.grace);
                rep.waiting_until = Some(rep.waiting_until.map_or(until, |u| u.min(until)));
            } else if !used_here.is_empty() {
                // A snapshot written meanwhile needs it, and no other pack has those blobs.
                rep.resurrected_packs += 1;
                resurrected.insert(*pid);
            } else if let Some(until) = locked_until(*modified) {
                rep.locked.push((format!("pack {}", pid.short()), until));
            } else {
                delete_now.push(*pid);
            }
            continue;
        }
        if store_now.saturating_sub(*modified) < opts.grace {
            rep.young_packs += 1;
            continue;
        }
        if used_here.is_empty() {
            condemn.push(*pid);
            rep.condemned_packs += 1;
            rep.condemned_bytes += size;
        } else {
            if unused_here > 0 {
                candidates.push((*pid, used_bytes, used_bytes + unused_here));
            }
            if *size < small_limit {
                small.push((*pid, used_bytes, *size));
            }
        }
    }

    // Repack: the most wasteful packs first, until the unused share is under the limit; then
    // the small packs, when there are at least two to merge.
    let mut repack: Vec<Id> = Vec::new();
    candidates.sort_by(|a, b| {
        let wa = (a.2 - a.1) as f64 / a.2 as f64;
        let wb = (b.2 - b.1) as f64 / b.2 as f64;
        wb.total_cmp(&wa)
    });
    let total_after: u64 = rep.repository_bytes - rep.condemned_bytes;
    let mut unused_after: u64 = rep
        .unused_bytes
        .saturating_sub(rep.condemned_bytes)
        .saturating_sub(rep.waiting_bytes);
    for (pid, used_bytes, size) in &candidates {
        if (unused_after as f64) <= opts.max_unused / 100.0 * total_after as f64 {
            break;
        }
        repack.push(*pid);
        unused_after = unused_after.saturating_sub(size - used_bytes);
    }
    if opts.merge_small {
        // Per kind, only with more small packs than a repack itself leaves (two open data
        // packs, one tree pack), so that merged packs are not merged again and again.
        for (t, at_least) in [
            (BlobType::Data, MERGE_AT_LEAST),
            (BlobType::Tree, MERGE_AT_LEAST),
        ] {
            let left: Vec<Id> = small
                .iter()
                .filter(|s| !repack.contains(&s.0))
                .filter(|s| packs.get(&s.0).is_some_and(|p| p.info.pack_type == t))
                .map(|s| s.0)
                .collect();
            if left.len() >= at_least {
                repack.extend(left);
            }
        }
    }
    rep.repacked_packs = repack.len() as u64;

    if opts.dry_run {
        for pid in &repack {
            interrupted()?;
            let p = &packs[pid];
            for (e, _) in &p.entries {
                if home.get(&e.id) == Some(pid) {
                    rep.repacked_blobs += 1;
                    rep.repacked_bytes += u64::from(e.stored_len);
                }
            }
        }
        rep.deleted_packs = delete_now.len() as u64;
        rep.deleted_bytes = delete_now.iter().map(|p| stored[p].0).sum();
        rep.requests = repo.store().stats();
        return Ok(rep);
    }

    // 1. Repack: the used blobs of each chosen pack go into new packs and a new index object,
    //    this run's local index leaving the old packs out so that nothing deduplicates against
    //    them. The marker that condemns the old packs comes after.
    let marker_name = Id::random();
    if !repack.is_empty() {
        // Every pack this run condemns, not only the repacked ones: a used blob may have a
        // second copy in a pack that looks unused (its blobs count where they were found
        // first), and the copy must not count as stored.
        let doomed: Vec<Id> = condemn.iter().chain(&repack).copied().collect();
        repo.condemn_locally(&marker_name, &doomed)?;
        let writer = BlobWriter::new(repo, 2)?;
        let mut readers = PackReaders::default();
        let mut out = Vec::new();
        for pid in &repack {
            let p = &packs[pid];
            let mut entries: Vec<&BlobEntry> = p
                .entries
                .iter()
                .map(|(e, _)| e)
                .filter(|e| home.get(&e.id) == Some(pid))
                .collect();
            entries.sort_by_key(|e| e.offset);
            entries.dedup_by_key(|e| e.id);
            for e in entries {
                repo.read_at(&p.info, e, e.blob_type, &mut readers, &mut out)
                    .map_err(|err| {
                        Error::corrupt(
                            format!("pack {}", pid.short()),
                            format!("blob {} could not be repacked: {err}", e.id.short()),
                        )
                    })?;
                writer.add(e.blob_type, &out)?;
                rep.repacked_blobs += 1;
                rep.repacked_bytes += u64::from(e.stored_len);
            }
        }
        writer.finish()?;
    }
    interrupted()?;
    // 2. The marker: unneeded packs and the repacked ones, deleted a grace period from now.
    condemn.extend(repack.iter().copied());
    if !condemn.is_empty() {
        repo.write_condemn_marker(
            marker_name,
            &CondemnMarker {
                time: crate::repo::now().0,
                packs: condemn.clone(),
            },
        )?;
    }
    // 3. Deletion of packs condemned long enough ago: first a new index without them, then the
    //    old index objects, then the packs. A run stopped in between leaves unindexed packs
    //    that are still condemned, or an index that describes packs still stored.
    //    Many small index objects (one a backup) are merged into few on the way, and also
    //    when there are more than COMPACT_INDEX_AT of them with nothing to delete.
    let mut rewrite = !delete_now.is_empty() || index_names.len() > COMPACT_INDEX_AT;
    let index_locked: Vec<(Id, i64)> = if !rewrite {
        Vec::new()
    } else {
        let listed: HashMap<Id, i64> = repo
            .store()
            .list_dated(FileType::Index)?
            .into_iter()
            .map(|(n, _, m)| (n, m))
            .collect();
        index_names
            .iter()
            .filter_map(|n| {
                listed
                    .get(n)
                    .and_then(|m| locked_until(*m))
                    .map(|u| (*n, u))
            })
            .collect()
    };
    if !index_locked.is_empty() {
        // Old index objects that cannot be removed yet still describe the packs: deleting them
        // now would leave entries for missing packs. Later.
        for (n, until) in &index_locked {
            rep.locked.push((format!("index {}", n.short()), *until));
        }
        delete_now.clear();
        rewrite = false;
    }
    interrupted()?;
    if rewrite {
        let gone: HashSet<Id> = delete_now.iter().copied().collect();
        let mut by_writer: HashMap<WrittenBy, Vec<PackDesc>> = HashMap::new();
        for (pid, p) in &packs {
            if gone.contains(pid) || !stored.contains_key(pid) {
                continue;
            }
            let mut per: HashMap<WrittenBy, Vec<BlobEntry>> = HashMap::new();
            for (e, by) in &p.entries {
                per.entry(*by).or_default().push(*e);
            }
            for (by, blobs) in per {
                by_writer.entry(by).or_default().push(PackDesc {
                    id: p.info.id,
                    pack_type: p.info.pack_type,
                    object_len: p.info.object_len,
                    payload_offset: p.info.payload_offset,
                    plain_len: p.info.plain_len,
                    blobs,
                });
            }
        }
        for (by, descs) in &by_writer {
            let mut batch: Vec<PackDesc> = Vec::new();
            let mut count = 0;
            for d in descs {
                count += d.blobs.len();
                batch.push(d.clone());
                if count >= INDEX_BLOBS_PER_OBJECT {
                    repo.put_index_object(by, &std::mem::take(&mut batch))?;
                    rep.index_objects_written += 1;
                    count = 0;
                }
            }
            if !batch.is_empty() {
                repo.put_index_object(by, &batch)?;
                rep.index_objects_written += 1;
            }
        }
        for n in &index_names {
            match repo.store().delete(FileType::Index, &n.to_hex()) {
                Ok(()) | Err(Error::NotFound(_)) => rep.index_objects_removed += 1,
                Err(e) => return Err(e),
            }
        }
        for pid in &delete_now {
            match repo.store().delete(FileType::Pack, &pid.to_hex()) {
                Ok(()) | Err(Error::NotFound(_)) => {
                    rep.deleted_packs += 1;
                    rep.deleted_bytes += stored[pid].0;
                }
                Err(e) => return Err(e),
            }
            // Its second copy after it (§2.2): a run stopped in between leaves an orphan copy
            // that the next run removes below. A pack no index describes may be a tree pack.
            if packs
                .get(pid)
                .is_none_or(|p| p.info.pack_type == BlobType::Tree)
            {
                match repo.store().delete(FileType::TreePackCopy, &pid.to_hex()) {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    // Second copies of tree packs whose first copy is neither stored nor indexed, older than
    // the grace period: left by a backup stopped between the two writes (the second copy is
    // written first), or by a run stopped above. A copy whose first copy is only missing is
    // kept: it may be all that is left (`vault repair metadata` puts the first back).
    let deleted_now: HashSet<Id> = delete_now.iter().copied().collect();
    // Listed again: the packs this run wrote (repacked trees) are stored now.
    let stored_now: HashSet<Id> = repo.names(FileType::Pack)?.into_iter().collect();
    for (cid, size, modified) in repo.store().list_dated(FileType::TreePackCopy)? {
        let kept = deleted_now.contains(&cid)
            || stored_now.contains(&cid)
            || stored.contains_key(&cid)
            || packs.contains_key(&cid);
        if kept || store_now.saturating_sub(modified) < opts.grace {
            continue;
        }
        if let Some(until) = locked_until(modified) {
            rep.locked
                .push((format!("tree pack copy {}", cid.short()), until));
            continue;
        }
        match repo.store().delete(FileType::TreePackCopy, &cid.to_hex()) {
            Ok(()) | Err(Error::NotFound(_)) => {
                rep.orphan_copies_removed += 1;
                rep.orphan_copies_bytes += size;
            }
            Err(e) => return Err(e),
        }
    }
    // 4. Markers done with: every pack they name deleted, gone or needed again; the probe.
    let deleted: HashSet<Id> = delete_now.iter().copied().collect();
    for m in &markers {
        let open =
            m.marker.packs.iter().any(|p| {
                stored.contains_key(p) && !deleted.contains(p) && !resurrected.contains(p)
            });
        if (!open || Some(m.name) == probe) && locked_until(m.modified).is_none() {
            repo.store().delete(FileType::Condemned, &m.name.to_hex())?;
            rep.markers_removed += 1;
        }
    }
    // Markers that do not verify count for nothing (§13.2); removing one un-condemns nothing
    // a verified marker names.
    for (name, _) in &bad_markers {
        match repo.store().delete(FileType::Condemned, &name.to_hex()) {
            Ok(()) | Err(Error::NotFound(_)) => rep.markers_removed += 1,
            Err(e) => return Err(e),
        }
    }
    // 5. Snapshot objects forgotten earlier and still stored (a forget stopped halfway, or
    //    Object Lock then).
    for t in [FileType::Snapshot, FileType::SnapshotCopy] {
        for (name, _, modified) in repo.store().list_dated(t)? {
            if forgotten.ids.contains(&name) {
                match locked_until(modified) {
                    Some(until) => rep
                        .locked
                        .push((format!("{} {}", t.name(), name.short()), until)),
                    None => {
                        repo.store().delete(t, &name.to_hex())?;
                        if t == FileType::Snapshot {
                            rep.snapshot_objects_removed += 1;
                        }
                    }
                }
            }
        }
    }
    rep.requests = repo.store().stats();
    Ok(rep)
}
