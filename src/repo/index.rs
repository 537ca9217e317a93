//! The repository index (§9): keeping the local index in step with the index objects, writing
//! index objects, and the whole index in memory for `check`.

use std::collections::{HashMap, HashSet};

use super::{relabel, Repository, Synced, FETCH_THREADS};
use crate::backend::FileType;
use crate::cache::LocalCache;
use crate::error::{Error, Result};
use crate::format::index::{PackDesc, PackInfo};
use crate::format::{BlobEntry, WrittenBy};

use crate::ids::Id;

/// The union of all index objects, held in memory (for `check`, which verifies the
/// repository itself rather than trusting the local index). About 100 bytes a blob: each pack's
/// table as decoded, and the blob ids sorted once for lookups.
#[derive(Default)]
pub struct Index {
    pub packs: Vec<PackInfo>,
    /// The index object that first described each pack (`None`: recovered from its table).
    pub sources: Vec<Option<Id>>,
    /// Later descriptions of packs already described, with the index object that made them:
    /// `check` compares every description with the pack's own table (§13.1).
    pub again: Vec<(Option<Id>, PackDesc)>,
    pack_pos: HashMap<Id, u32>,
    /// Each pack's blob entries, by position in `packs`.
    tables: Vec<Vec<BlobEntry>>,
    /// Every blob id with its first record (pack position, entry position), sorted by id by
    /// [`Self::finish`]; a blob recorded twice counts where it was recorded first.
    ids: Vec<(Id, u32, u32)>,
}

impl Index {
    /// Add a pack's description made by index object `source`; a pack described again is
    /// taken as first described, and the later description kept for `check`.
    pub fn add(&mut self, source: Option<Id>, desc: PackDesc) {
        if let Some(&pos) = self.pack_pos.get(&desc.id) {
            // Another object may describe other blobs of the pack (a full device records the
            // write-only device's blobs it verified and reused, §13.1): those count too.
            let table = &mut self.tables[pos as usize];
            for b in &desc.blobs {
                if !table.contains(b) {
                    self.ids.push((b.id, pos, table.len() as u32));
                    table.push(*b);
                }
            }
            self.again.push((source, desc));
            return;
        }
        let pos = self.packs.len() as u32;
        self.packs.push(desc.info());
        self.sources.push(source);
        self.pack_pos.insert(desc.id, pos);
        for (k, b) in desc.blobs.iter().enumerate() {
            self.ids.push((b.id, pos, k as u32));
        }
        self.tables.push(desc.blobs);
    }

    /// Sort the ids for lookups: call once everything is added.
    pub fn finish(&mut self) {
        // Stable: of two records of one blob, the first added stays.
        self.ids.sort_by_key(|e| e.0);
        self.ids.dedup_by(|later, first| later.0 == first.0);
        self.ids.shrink_to_fit();
    }

    fn find(&self, id: &Id) -> Option<&(Id, u32, u32)> {
        self.ids
            .binary_search_by(|e| e.0.cmp(id))
            .ok()
            .map(|i| &self.ids[i])
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    /// A blob's entry, where it was recorded first.
    pub fn entry(&self, id: &Id) -> Option<&BlobEntry> {
        let (_, pos, k) = self.find(id)?;
        self.tables.get(*pos as usize)?.get(*k as usize)
    }

    pub fn pack(&self, id: &Id) -> Option<&PackInfo> {
        self.pack_pos.get(id).map(|p| &self.packs[*p as usize])
    }

    /// Every blob entry the index object behind position `pos` of [`Self::packs`] gives.
    pub fn described(&self, pos: usize) -> &[BlobEntry] {
        self.tables.get(pos).map_or(&[], |t| t.as_slice())
    }

    /// The blobs the index places in the pack at position `pos` of [`Self::packs`], in offset
    /// order (for check --read-data).
    pub fn pack_entries(&self, pos: usize) -> Vec<BlobEntry> {
        let Some(table) = self.tables.get(pos) else {
            return Vec::new();
        };
        let mut v: Vec<BlobEntry> = table
            .iter()
            .enumerate()
            .filter(|(k, e)| {
                self.find(&e.id)
                    .is_some_and(|f| f.1 as usize == pos && f.2 as usize == *k)
            })
            .map(|(_, e)| *e)
            .collect();
        v.sort_by_key(|e| e.offset);
        v
    }
}

impl Repository {
    /// Open the local index and merge the index objects it has not seen. When one it had
    /// merged is gone from the repository (compacted or removed elsewhere), start over.
    pub(super) fn sync(&self) -> Result<Synced> {
        let cache = LocalCache::open(&self.cache_place, &self.keys)?;
        // Markers first: the index objects merged next then skip condemned packs (and a
        // marker gone from the repository clears the blob index).
        self.merge_condemn_markers(&cache, true)?;
        let mut attempts = 0;
        let index_errors = loop {
            let listed = self.names(FileType::Index)?;
            let listed_set: HashSet<String> = listed.iter().map(|n| n.to_hex()).collect();
            let mut merged = cache.index_objects()?;
            if merged.iter().any(|m| !listed_set.contains(m)) {
                cache.clear_index()?;
                merged.clear();
            }
            let errors = self.merge_index_objects(&cache, listed, &merged)?;
            // An object listed and then not found was removed meanwhile: a prune or a repair
            // rewrote the index. Start over from a new listing rather than report it.
            attempts += 1;
            if attempts < 3 && errors.iter().any(|(_, e)| matches!(e, Error::NotFound(_))) {
                cache.clear_index()?;
                continue;
            }
            break errors;
        };
        if !index_errors.is_empty() {
            self.recover_unindexed(&cache)?;
        }
        Ok(Synced {
            cache,
            index_errors,
        })
    }

    fn merge_index_objects(
        &self,
        cache: &LocalCache,
        listed: Vec<Id>,
        merged: &HashSet<String>,
    ) -> Result<Vec<(Id, Error)>> {
        let new: Vec<Id> = listed
            .into_iter()
            .filter(|n| !merged.contains(&n.to_hex()))
            .collect();
        let mut index_errors = Vec::new();
        for (name, r) in self.fetch_all(new, |name| {
            let (by, packs) = self.read_index_object(name)?;
            cache.add_packs(Some(&name.to_hex()), by.is_full(), &packs)
        }) {
            if let Err(e) = r {
                if matches!(e, Error::Cache { .. }) {
                    return Err(e);
                }
                index_errors.push((name, e));
            }
        }
        Ok(index_errors)
    }

    /// After index objects failed to read: the packs no merged object describes, from their
    /// own tables. A pack's table may be a write-only device's word (§13.1): unvouched.
    fn recover_unindexed(&self, cache: &LocalCache) -> Result<()> {
        for desc in self.unindexed_packs(|id| cache.has_pack(id))? {
            cache.add_packs(None, false, &[desc])?;
        }
        Ok(())
    }

    /// Merge the condemn markers the local index has not seen (§13.2) and forget the ones the
    /// repository no longer has (`drop_gone`; not in the middle of a run, whose claims rely on
    /// the blob index). Returns the blobs that lost their last location. A marker that cannot
    /// be read is skipped (a write-only device cannot tell a forged one; a full device's
    /// `check` and `prune` report it).
    fn merge_condemn_markers(&self, cache: &LocalCache, drop_gone: bool) -> Result<Vec<Id>> {
        let listed = self.names(FileType::Condemned)?;
        let known = cache.condemn_markers()?;
        if drop_gone {
            let listed_set: HashSet<String> = listed.iter().map(|n| n.to_hex()).collect();
            let gone: Vec<String> = known
                .iter()
                .filter(|m| !listed_set.contains(*m))
                .cloned()
                .collect();
            cache.drop_condemn_markers(&gone)?;
        }
        let key = self.keys.full().ok().map(|f| &f.prune_mac);
        let mut orphaned = Vec::new();
        for name in listed {
            let hex = name.to_hex();
            if known.contains(&hex) {
                continue;
            }
            if let Ok(m) = self.read_condemn_marker(&name, key) {
                orphaned.extend(cache.condemn(&hex, &m.packs)?);
            }
        }
        Ok(orphaned)
    }

    /// Before a snapshot is written (§13.2): merge the index objects and condemn markers stored
    /// since this run's local index was brought up to date, and refuse (`Error::Condemned`)
    /// when a prune condemned the last known location of some blob meanwhile: a snapshot must
    /// not rely on it.
    /// Also refuses when an index object merged earlier is gone: a prune rewrote the index,
    /// which it does before deleting packs, so this run may have relied on deleted blobs; the
    /// blob index is merged afresh for the next attempt.
    pub fn recheck_condemned(&self) -> Result<()> {
        let cache = self.cache()?;
        let mut merged = cache.index_objects()?;
        let listed = self.names(FileType::Index)?;
        let listed_set: HashSet<String> = listed.iter().map(|n| n.to_hex()).collect();
        let rewritten = merged.iter().any(|m| !listed_set.contains(m));
        if rewritten {
            cache.clear_index()?;
            merged.clear();
        }
        let errors = self.merge_index_objects(cache, listed, &merged)?;
        if !errors.is_empty() {
            self.recover_unindexed(cache)?;
        }
        let orphaned = self.merge_condemn_markers(cache, false)?;
        if rewritten {
            return Err(Error::Condemned(
                "rewrote the index and may have deleted data this run relied on".into(),
            ));
        }
        if !orphaned.is_empty() {
            return Err(Error::Condemned(format!(
                "condemned {} chunk(s) this run relied on",
                orphaned.len()
            )));
        }
        Ok(())
    }

    /// Condemn packs in this run's local index only (a prune about to copy their blobs into
    /// new packs, under the name of the marker it will store): blobs found only there are then
    /// stored again instead of deduplicated.
    pub fn condemn_locally(&self, marker: &Id, packs: &[Id]) -> Result<Vec<Id>> {
        self.cache()?.condemn(&marker.to_hex(), packs)
    }

    /// Every index object read straight from the repository into memory, for `check`. Damaged
    /// ones are returned with the reason; the packs they described are recovered from the packs'
    /// own tables.
    pub fn full_index(&self) -> Result<(Index, Vec<(Id, Error)>)> {
        let names = self.names(FileType::Index)?;
        let mut index = Index::default();
        let mut errors = Vec::new();
        // Full devices' descriptions first: a pack's first description is the one `check
        // --read-data` goes by, and a write-only device's may point blobs elsewhere (§13.1).
        let mut later = Vec::new();
        // A few at a time: the decoded objects are folded into the index as they come.
        for batch in names.chunks(FETCH_THREADS * 2) {
            for (name, r) in self.fetch_all(batch.to_vec(), |n| self.read_index_object(n)) {
                match r {
                    Ok((by, packs)) if by.is_full() => {
                        packs.into_iter().for_each(|p| index.add(Some(name), p))
                    }
                    Ok((_, packs)) => later.extend(packs.into_iter().map(|p| (name, p))),
                    Err(e) => errors.push((name, e)),
                }
            }
        }
        for (name, p) in later {
            index.add(Some(name), p);
        }
        if !errors.is_empty() {
            for desc in self.unindexed_packs(|id| Ok(index.pack(id).is_some()))? {
                index.add(None, desc);
            }
        }
        index.finish();
        Ok((index, errors))
    }

    /// After a damaged index object: every stored pack that `known` does not know, described
    /// from the blob table inside the pack. Unreadable packs are left for `check` to report.
    fn unindexed_packs(&self, known: impl Fn(&Id) -> Result<bool>) -> Result<Vec<PackDesc>> {
        let mut out = Vec::new();
        for (id, size) in self.store.list(FileType::Pack)? {
            if !known(&id)? {
                if let Ok(desc) = self.read_pack_table(&id, size) {
                    out.push(desc);
                }
            }
        }
        Ok(out)
    }

    /// The tables of these packs (id, stored size), read from the packs themselves, a few at a
    /// time.
    pub fn read_pack_tables(&self, packs: &[(Id, u64)]) -> Vec<(Id, Result<PackDesc>)> {
        let sizes: HashMap<Id, u64> = packs.iter().copied().collect();
        let ids = packs.iter().map(|(id, _)| *id).collect();
        self.fetch_all(ids, |id| self.read_pack_table(id, sizes[id]))
    }

    /// True when the repository holds the blob (as far as the local index knows).
    pub fn has_blob(&self, id: &Id) -> Result<bool> {
        self.cache()?.has_blob(id)
    }

    /// One index object, its MAC checked (§9), with who wrote it.
    pub fn read_index_object(&self, name: &Id) -> Result<(WrittenBy, Vec<PackDesc>)> {
        let ct = self.store.get(FileType::Index, &name.to_hex())?;
        let what = format!("index {}", name.short());
        let plain = self.keys.index_identity.decrypt(&ct, &what)?;
        crate::format::index::decode(&plain, &self.keys.repo_id, &self.keys.index_macs())
            .map_err(|e| relabel(e, &what))
    }

    /// Store an index object describing `packs` (already stored) and merge it into the local
    /// index. Returns its name.
    pub fn put_index(&self, packs: &[PackDesc]) -> Result<Id> {
        let by = self.keys.written_by();
        let name = self.put_index_object(&by, packs)?;
        self.cache()?
            .add_packs(Some(&name.to_hex()), by.is_full(), packs)?;
        Ok(name)
    }

    /// Index the packs an earlier run on this computer stored but could not index (it ran out
    /// of space or was killed before its index object was written, §13), so that this run
    /// reuses them instead of storing their data again. A pack no longer in the repository,
    /// or not the size recorded, is forgotten; one a prune condemned meanwhile is skipped.
    pub fn index_leftovers(&self) -> Result<usize> {
        let cache = self.cache()?;
        let left = cache.unindexed()?;
        if left.is_empty() {
            return Ok(0);
        }
        let mut present = Vec::new();
        let mut gone = Vec::new();
        for p in left {
            let stored = self.store.stat(FileType::Pack, &p.id.to_hex())?;
            if stored == Some(p.object_len) && !cache.is_condemned(&p.id)? {
                present.push(p);
            } else {
                gone.push(p.id);
            }
        }
        let n = present.len();
        cache.remove_unindexed(&gone)?;
        for batch in crate::blobwriter::index_batches(present) {
            self.put_index(&batch)?;
            cache.remove_unindexed(&batch.iter().map(|p| p.id).collect::<Vec<_>>())?;
        }
        Ok(n)
    }

    /// Store an index object describing `packs` as written `by` a device (a full device may
    /// write any device's: `repair index` keeps each entry's writer), without touching the
    /// local index. Returns its name.
    pub fn put_index_object(&self, by: &WrittenBy, packs: &[PackDesc]) -> Result<Id> {
        let name = Id::random();
        let key = self.keys.mac_key(by, true)?;
        let ct = self
            .keys
            .index_recipient
            .encrypt(&crate::format::index::encode(
                &self.keys.repo_id,
                by,
                &key,
                packs,
            ))?;
        self.store.put(FileType::Index, &name.to_hex(), &ct)?;
        Ok(name)
    }
}
