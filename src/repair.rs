//! `repair index`: rebuild the repository index from the packs' own tables (design.md §9.1),
//! keeping who vouched for each entry, so that a damaged, forged or lost index object costs
//! nothing that the packs still hold.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::FileType;
use crate::blobwriter::INDEX_BLOBS_PER_OBJECT;
use crate::error::{Error, Result};
use crate::format::index::{PackDesc, PackInfo};
use crate::format::{BlobEntry, WrittenBy};
use crate::ids::Id;
use crate::progress::Progress;
use crate::repo::{PackReaders, Repository, FETCH_THREADS};

pub struct RepairOptions {
    /// Work out and report what would be written and removed, change nothing.
    pub dry_run: bool,
}

/// One object and why it was left out or kept as it was.
#[derive(Serialize, Clone)]
pub struct Problem {
    pub name: String,
    pub reason: String,
}

#[derive(Serialize, Default)]
pub struct RepairReport {
    pub dry_run: bool,
    /// Index objects listed at the start (every one is replaced).
    pub index_objects: u64,
    /// Of those, objects that did not decode or whose MAC failed: their word counts for nothing.
    pub damaged_index_objects: Vec<Problem>,
    pub packs: u64,
    /// Packs whose table could not be read: their entries are carried over as they were.
    pub unreadable_packs: Vec<Problem>,
    /// Packs the old index described that are not stored; their blobs are gone from the
    /// index (the next backup of those files stores them again).
    pub missing_packs: Vec<String>,
    pub blobs: u64,
    /// Entries a full device's index object recorded as the pack's table has them.
    pub blobs_vouched: u64,
    /// Entries only a write-only device recorded: kept as that device's word (§13.1).
    pub blobs_device: u64,
    /// Entries no valid index object recorded (an index object lost or damaged, or a pack
    /// nobody indexed): read back and verified, then recorded by this device.
    pub blobs_verified: u64,
    /// Entries of pack tables that failed that check: left out.
    pub blobs_refused: u64,
    /// Old index entries that disagree with the pack's own table: left out.
    pub entries_dropped: u64,
    pub index_objects_written: u64,
    pub index_objects_removed: u64,
}

impl RepairReport {
    /// Whether the repository's data is all accounted for (nothing missing or refused).
    pub fn clean(&self) -> bool {
        self.unreadable_packs.is_empty() && self.missing_packs.is_empty() && self.blobs_refused == 0
    }
}

/// What the old index said about one pack: its header and, for each entry, the best writer
/// that recorded it (a full device before any write-only one).
#[derive(Default)]
struct Described {
    info: Option<PackInfo>,
    entries: HashMap<BlobEntry, WrittenBy>,
}

/// The new index, by writer.
#[derive(Default)]
struct Rebuilt {
    by: HashMap<WrittenBy, Vec<PackDesc>>,
}

impl Rebuilt {
    fn add(&mut self, by: WrittenBy, info: &PackInfo, entry: BlobEntry) {
        let packs = self.by.entry(by).or_default();
        match packs.last_mut() {
            Some(p) if p.id == info.id => p.blobs.push(entry),
            _ => packs.push(PackDesc {
                id: info.id,
                pack_type: info.pack_type,
                object_len: info.object_len,
                payload_offset: info.payload_offset,
                plain_len: info.plain_len,
                blobs: vec![entry],
            }),
        }
    }
}

/// Rebuild the index from the packs' tables and replace every index object listed at the
/// start (§9.1). Only a full device can: pack tables are encrypted to the data key.
pub fn repair_index(
    repo: &Repository,
    opts: &RepairOptions,
    progress: Arc<Progress>,
) -> Result<RepairReport> {
    if repo.keys().is_write_only() {
        return Err(Error::WriteOnly);
    }
    let mut rep = RepairReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // Index objects first, then packs: a backup running meanwhile writes its packs before its
    // index object, so every pack an object listed here describes is in the pack listing, and
    // objects written after this listing are neither read nor removed.
    let old = repo.names(FileType::Index)?;
    let mut packs = repo.store().list(FileType::Pack)?;
    // A tree pack whose first copy is gone is still stored in its second (§2.2): its entries
    // are kept, its table read from the second copy.
    let firsts: HashSet<Id> = packs.iter().map(|(id, _)| *id).collect();
    let seconds: HashMap<Id, u64> = repo
        .store()
        .list(FileType::TreePackCopy)?
        .into_iter()
        .collect();
    packs.extend(
        seconds
            .iter()
            .filter(|(id, _)| !firsts.contains(id))
            .map(|(id, len)| (*id, *len)),
    );
    rep.index_objects = old.len() as u64;
    rep.packs = packs.len() as u64;
    progress
        .total_files
        .store(packs.len() as u64, Ordering::Relaxed);
    progress.scan_finished.store(true, Ordering::Relaxed);

    let mut described: HashMap<Id, Described> = HashMap::new();
    for batch in old.chunks(FETCH_THREADS * 2) {
        for (name, r) in repo.fetch_all(batch.to_vec(), |n| repo.read_index_object(n)) {
            match r {
                Ok((by, descs)) => {
                    for d in descs {
                        let e = described.entry(d.id).or_default();
                        e.info.get_or_insert_with(|| d.info());
                        for b in d.blobs {
                            let w = e.entries.entry(b).or_insert(by);
                            if by.is_full() {
                                *w = by;
                            }
                        }
                    }
                }
                Err(e @ Error::Cache { .. }) => return Err(e),
                Err(e) => rep.damaged_index_objects.push(Problem {
                    name: name.to_hex(),
                    reason: e.to_string(),
                }),
            }
        }
    }

    let mut rebuilt = Rebuilt::default();
    // Entries to read back, by pack.
    let mut unvouched: Vec<(PackInfo, Vec<BlobEntry>)> = Vec::new();
    for batch in packs.chunks(FETCH_THREADS * 4) {
        for (id, r) in repo.read_pack_tables(batch) {
            progress.files_done.fetch_add(1, Ordering::Relaxed);
            let old = described.remove(&id).unwrap_or_default();
            let table = match r {
                // A first copy that holds other bytes than the index described, beside a
                // second copy that holds them (§2.2): the index keeps describing the second,
                // and `repair metadata` puts the first back.
                Ok(t) if !old.entries.keys().all(|b| t.blobs.contains(b)) => {
                    match seconds
                        .get(&id)
                        .map(|len| repo.read_pack_table_of(FileType::TreePackCopy, &id, *len))
                    {
                        Some(Ok(c)) if old.entries.keys().all(|b| c.blobs.contains(b)) => c,
                        _ => t,
                    }
                }
                Ok(t) => t,
                Err(e @ Error::Cache { .. }) => return Err(e),
                Err(e) => {
                    // The blobs may still be readable where the table is not: keep what the
                    // old index said, under the writer that said it.
                    rep.unreadable_packs.push(Problem {
                        name: id.to_hex(),
                        reason: e.to_string(),
                    });
                    if let Some(info) = &old.info {
                        for (b, by) in old.entries {
                            rebuilt.add(by, info, b);
                        }
                    }
                    continue;
                }
            };
            let info = table.info();
            let mut check = Vec::new();
            for b in &table.blobs {
                match old.entries.get(b) {
                    Some(by) => {
                        if by.is_full() {
                            rep.blobs_vouched += 1;
                        } else {
                            rep.blobs_device += 1;
                        }
                        rebuilt.add(*by, &info, *b);
                    }
                    None => check.push(*b),
                }
            }
            let in_table: HashSet<&BlobEntry> = table.blobs.iter().collect();
            rep.entries_dropped +=
                old.entries.keys().filter(|b| !in_table.contains(b)).count() as u64;
            if !check.is_empty() {
                unvouched.push((info, check));
            }
        }
    }
    for (id, d) in described {
        rep.entries_dropped += d.entries.len() as u64;
        rep.missing_packs.push(id.to_hex());
    }

    // A table is anyone's word who can encrypt to the data key: each entry no index object
    // vouched for is read and its keyed id checked before this device records it (§13.1).
    let ids: Vec<Id> = unvouched.iter().map(|(p, _)| p.id).collect();
    let by_id: HashMap<Id, &(PackInfo, Vec<BlobEntry>)> =
        unvouched.iter().map(|u| (u.0.id, u)).collect();
    let results = repo.fetch_all(ids, |id| {
        let (info, entries) = by_id[id];
        let mut readers = PackReaders::default();
        let mut ok = Vec::new();
        for e in entries {
            match repo.verify_location(info, e, &mut readers) {
                Ok(()) => ok.push(*e),
                Err(e @ Error::Cache { .. }) => return Err(e),
                Err(_) => {}
            }
        }
        Ok(ok)
    });
    for (id, r) in results {
        let (info, entries) = by_id[&id];
        let ok = r?;
        rep.blobs_verified += ok.len() as u64;
        rep.blobs_refused += (entries.len() - ok.len()) as u64;
        for e in ok {
            rebuilt.add(WrittenBy::Full, info, e);
        }
    }
    rep.blobs = rep.blobs_vouched + rep.blobs_device + rep.blobs_verified;
    if opts.dry_run {
        return Ok(rep);
    }

    // Every new object is stored before any old one is removed: a run stopped anywhere leaves
    // an index that describes at least what it did, and running it again finishes the job.
    let mut written = HashSet::new();
    for (by, packs) in &rebuilt.by {
        let mut batch: Vec<PackDesc> = Vec::new();
        let mut count = 0;
        for p in packs {
            count += p.blobs.len();
            batch.push(p.clone());
            if count >= INDEX_BLOBS_PER_OBJECT {
                written.insert(repo.put_index_object(by, &std::mem::take(&mut batch))?);
                count = 0;
            }
        }
        if !batch.is_empty() {
            written.insert(repo.put_index_object(by, &batch)?);
        }
    }
    rep.index_objects_written = written.len() as u64;
    for name in &old {
        match repo.store().delete(FileType::Index, &name.to_hex()) {
            Ok(()) | Err(Error::NotFound(_)) => rep.index_objects_removed += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(rep)
}
