//! Adding blobs to a repository: deduplication against the repository and against this run,
//! compression where it pays, packing over open packs, storing full packs, and index objects of
//! at most 50,000 blobs describing only stored packs (§8, §9, §13). The one writer behind
//! backup, copy, move and every other command that stores blobs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::compress::Compressor;
use crate::error::Result;
use crate::format::index::PackDesc;
use crate::format::{BlobType, Compression};
use crate::ids::Id;
use crate::packer::{FinishedPack, Packer};
use crate::repo::{PackReaders, Repository};

/// Largest number of blobs one index object describes.
pub const INDEX_BLOBS_PER_OBJECT: usize = 50_000;
/// Stored packs indexed at once at most (4 GiB of 16 MiB packs): a killed run leaves little
/// unindexed.
const CHECKPOINT_PACKS: usize = 256;

/// What a writer added, for reports.
#[derive(Default)]
pub struct WriterStats {
    pub blobs_new: AtomicU64,
    pub blobs_reused: AtomicU64,
    /// Of the reused, blobs only a write-only device's index recorded, read back and verified
    /// before they were reused (§13.1).
    pub blobs_verified: AtomicU64,
    /// Locations a write-only device's index recorded that failed that check: forged or
    /// damaged entries (§13.1). The blob was stored again.
    pub locations_refused: AtomicU64,
    /// Bytes of new blobs as stored (after compression, before encryption and padding).
    pub bytes_added: AtomicU64,
    /// Of those, the bytes of tree blobs.
    pub tree_bytes_added: AtomicU64,
    pub packs_written: AtomicU64,
}

impl WriterStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Stores blobs into one repository. Shared by threads: backup's file workers claim and add
/// blobs, its uploaders store the full packs.
pub struct BlobWriter<'r> {
    repo: &'r Repository,
    data: Packer,
    trees: Packer,
    /// For [`Self::add`]: callers on several threads bring their own.
    comp: Mutex<Compressor>,
    /// Blobs added by this writer and not yet indexed; for the others the local index answers.
    claimed: Mutex<HashSet<Id>>,
    /// Open pack readers for verifying write-only devices' blobs before reuse, one per thread at
    /// a time: a phone's packs are read mostly in order, so a reader's window keeps growing.
    verifiers: Mutex<Vec<PackReaders>>,
    /// Packs stored and not yet indexed, and when an index object was last written.
    stored: Mutex<(Vec<PackDesc>, Instant)>,
    /// Index the stored packs at least this often (a long backup, so that a killed one leaves
    /// most of its work reusable); `None`: only by size and at the end.
    checkpoint_every: Option<Duration>,
    pub stats: WriterStats,
}

impl<'r> BlobWriter<'r> {
    /// A writer spreading data blobs over `open_data_packs` packs (at least 1; the format asks
    /// for 2 where blob order could reveal file boundaries, §8).
    pub fn new(repo: &'r Repository, open_data_packs: usize) -> Result<Self> {
        repo.index_leftovers()?;
        let cfg = repo.config();
        let target = cfg.pack_target as u64;
        let packer =
            |t, n| Packer::for_store(repo.store(), repo.keys(), cfg.pack_min as u64, t, n, target);
        Ok(BlobWriter {
            repo,
            data: packer(BlobType::Data, open_data_packs),
            trees: packer(BlobType::Tree, 1),
            comp: Mutex::new(Compressor::new(cfg.zstd_level)?),
            claimed: Mutex::new(HashSet::new()),
            verifiers: Mutex::new(Vec::new()),
            stored: Mutex::new((Vec::new(), Instant::now())),
            checkpoint_every: None,
            stats: WriterStats::default(),
        })
    }

    /// Also index the stored packs every `every`.
    pub fn with_checkpoints(mut self, every: Duration) -> Self {
        self.checkpoint_every = Some(every);
        self
    }

    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// Claim a blob: true when neither the repository nor this writer has it, and the caller
    /// must add it. On a full device, a blob that only write-only devices' index objects record
    /// is read back and verified first, and reused only if it is what its id says; its location
    /// then goes into this writer's next index object, as a full device's word (§13.1).
    pub fn claim(&self, id: Id) -> Result<bool> {
        let claimed = || self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        let cache = self.repo.cache()?;
        let new = !claimed().contains(&id)
            && match cache.blob_state(&id)? {
                Some(true) => false,
                None => claimed().insert(id),
                Some(false) => match self.verified_location(&id)? {
                    Some(desc) => {
                        if claimed().insert(id) {
                            self.stats.blobs_verified.fetch_add(1, Ordering::Relaxed);
                            self.adopt(desc);
                        }
                        false
                    }
                    None => claimed().insert(id),
                },
            };
        let c = if new {
            &self.stats.blobs_new
        } else {
            &self.stats.blobs_reused
        };
        c.fetch_add(1, Ordering::Relaxed);
        Ok(new)
    }

    /// A location of `id` that a full device has not vouched for, read and verified; `None`
    /// when there is none or none verifies (the blob is then stored again).
    fn verified_location(&self, id: &Id) -> Result<Option<PackDesc>> {
        if self.repo.keys().is_write_only() {
            return Ok(None);
        }
        let locations = self.repo.cache()?.blob(id)?;
        if locations.is_empty() {
            return Ok(None);
        }
        let pool = || self.verifiers.lock().unwrap_or_else(|p| p.into_inner());
        let mut readers = pool().pop().unwrap_or_default();
        let found = locations.into_iter().find(|(pack, entry)| {
            let ok = self.repo.verify_location(pack, entry, &mut readers).is_ok();
            if !ok {
                self.stats.locations_refused.fetch_add(1, Ordering::Relaxed);
            }
            ok
        });
        pool().push(readers);
        Ok(found.map(|(pack, entry)| PackDesc {
            id: pack.id,
            pack_type: pack.pack_type,
            object_len: pack.object_len,
            payload_offset: pack.payload_offset,
            plain_len: pack.plain_len,
            blobs: vec![entry],
        }))
    }

    /// Queue a verified location for the next index object, with the packs stored meanwhile.
    fn adopt(&self, desc: PackDesc) {
        let mut s = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        match s.0.iter_mut().find(|p| p.id == desc.id) {
            Some(p) => p.blobs.extend(desc.blobs),
            None => s.0.push(desc),
        }
    }

    /// Compress a claimed blob where that pays and add it to an open pack; returns a pack that
    /// became full, for [`Self::store_pack`]. `offload`: encrypt on the pack's own thread.
    pub fn add_claimed(
        &self,
        comp: &mut Compressor,
        id: Id,
        t: BlobType,
        data: &[u8],
        offload: bool,
    ) -> Result<Option<FinishedPack>> {
        let (compression, out): (Compression, Option<&[u8]>) = comp.compress(data);
        let stored = out.unwrap_or(data);
        let n = stored.len() as u64;
        self.stats.bytes_added.fetch_add(n, Ordering::Relaxed);
        if t == BlobType::Tree {
            self.stats.tree_bytes_added.fetch_add(n, Ordering::Relaxed);
        }
        let packer = match t {
            BlobType::Data => &self.data,
            BlobType::Tree => &self.trees,
        };
        packer.add(id, compression, data.len(), stored, offload)
    }

    /// Store one blob unless the repository or this writer has it; full packs are stored at
    /// once. Returns the blob's id.
    pub fn add(&self, t: BlobType, data: &[u8]) -> Result<Id> {
        let id = self.repo.keys().blob_id(data);
        if self.claim(id)? {
            let full = {
                let mut comp = self.comp.lock().unwrap_or_else(|p| p.into_inner());
                self.add_claimed(&mut comp, id, t, data, false)?
            };
            if let Some(pack) = full {
                self.store_pack(pack)?;
            }
        }
        Ok(id)
    }

    /// Store a full pack (local: sync and link into place; S3: upload), and index the stored
    /// packs when enough have gathered or enough time has passed.
    pub fn store_pack(&self, pack: FinishedPack) -> Result<()> {
        let desc = pack.store()?;
        self.repo.cache()?.add_unindexed(&desc)?;
        self.stats.packs_written.fetch_add(1, Ordering::Relaxed);
        let batch = {
            let mut s = self.stored.lock().unwrap_or_else(|p| p.into_inner());
            s.0.push(desc);
            // Many small files fill an index object long before 256 packs: the blobs waiting
            // for an index (and for their claims to be released) stay bounded.
            let blobs: usize = s.0.iter().map(|p| p.blobs.len()).sum();
            let due = self.checkpoint_every.is_some_and(|e| s.1.elapsed() >= e);
            if s.0.len() >= CHECKPOINT_PACKS || blobs >= INDEX_BLOBS_PER_OBJECT || due {
                s.1 = Instant::now();
                std::mem::take(&mut s.0)
            } else {
                Vec::new()
            }
        };
        self.index(&batch)
    }

    /// Write one index object for `packs` and release the claims on their blobs: the local index
    /// answers for them from here on, so the claims hold only what is not yet indexed.
    fn index(&self, packs: &[PackDesc]) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        self.repo.put_index(packs)?;
        let ids: Vec<Id> = packs.iter().map(|p| p.id).collect();
        self.repo.cache()?.remove_unindexed(&ids)?;
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        for p in packs {
            for b in &p.blobs {
                claimed.remove(&b.id);
            }
        }
        Ok(())
    }

    /// End the open packs (the end of a run): they are returned for the caller to store, with
    /// [`Self::store_pack`], on its own threads.
    pub fn flush(&self) -> Result<Vec<FinishedPack>> {
        let mut out = self.data.flush()?;
        out.extend(self.trees.flush()?);
        Ok(out)
    }

    /// Index every stored pack not yet indexed, in objects of at most 50,000 blobs (§9).
    pub fn index_stored(&self) -> Result<()> {
        let stored = {
            let mut s = self.stored.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut s.0)
        };
        for batch in index_batches(stored) {
            self.index(&batch)?;
        }
        Ok(())
    }

    /// Store the open packs and index everything stored: what was added is then in the
    /// repository for good. The writer can go on adding afterwards.
    pub fn finish(&self) -> Result<()> {
        for pack in self.flush()? {
            self.store_pack(pack)?;
        }
        self.index_stored()
    }

    /// After a failure: index what was stored, in one object, so that the next run reuses it
    /// instead of storing it again. Best effort: the run is failing already.
    pub fn salvage(&self) {
        let stored = {
            let mut s = self.stored.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut s.0)
        };
        if !stored.is_empty() {
            let _ = self.repo.put_index(&stored);
        }
    }
}

/// `packs` cut into the groups one index object each describes: at most about
/// [`INDEX_BLOBS_PER_OBJECT`] blobs (§9).
pub(crate) fn index_batches(packs: Vec<PackDesc>) -> Vec<Vec<PackDesc>> {
    let mut out = Vec::new();
    let mut batch: Vec<PackDesc> = Vec::new();
    let mut count = 0;
    for p in packs {
        count += p.blobs.len();
        batch.push(p);
        if count >= INDEX_BLOBS_PER_OBJECT {
            out.push(std::mem::take(&mut batch));
            count = 0;
        }
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// Store blobs in one go (compressed when that pays, packed, then an index object); blobs the
/// repository has are skipped. Returns the ids in input order. For hand-made objects (tests) and
/// small writes.
pub fn write_blobs(repo: &Repository, blobs: Vec<(BlobType, Vec<u8>)>) -> Result<Vec<Id>> {
    let w = BlobWriter::new(repo, 1)?;
    let ids = blobs
        .iter()
        .map(|(t, data)| w.add(*t, data))
        .collect::<Result<Vec<Id>>>()?;
    w.finish()?;
    Ok(ids)
}
