//! Packing blobs into packs: blobs are spread at random over several open packs so pack
//! boundaries do not follow file boundaries, and each open pack is encrypted and written to its
//! store as it fills (format §8: the table is at the end), so no pack is ever held in memory.

use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::backend::{FileType, ObjectWriter, Store};
use crate::crypto::{random_below, DataRecipient, EncryptWriter};
use crate::error::Result;
use crate::format::index::PackDesc;
use crate::format::{pack, BlobEntry, BlobType, Compression};
use crate::ids::Id;
use crate::keys::Keys;
use crate::repo::Repository;

/// A pack being filled: its plaintext goes through age into the store's writer as blobs arrive.
pub struct PackWriter {
    id: Id,
    blob_type: BlobType,
    entries: Vec<BlobEntry>,
    out: EncryptWriter<ObjectWriter>,
    /// Plaintext bytes written: the header and the blobs.
    len: u64,
}

impl PackWriter {
    fn blob_bytes(&self) -> u64 {
        self.len - pack::FIRST_BLOB
    }
}

/// A pack whose encryption is complete; `store` makes it durable (the slow part on S3).
pub struct FinishedPack {
    pub desc: PackDesc,
    object: ObjectWriter,
}

impl FinishedPack {
    /// Commit the object to the store (local: sync and link into place; S3: upload).
    pub fn store(self) -> Result<PackDesc> {
        self.object.commit()?;
        Ok(self.desc)
    }
}

/// Distributes blobs of one type over `n_open` packs, each written as it fills.
pub struct Packer {
    blob_type: BlobType,
    store: Store,
    recipient: DataRecipient,
    repo_id: Id,
    /// Blob bytes at which a pack is finished.
    target: u64,
    /// Smallest padded plaintext of a data pack.
    min_len: u64,
    open: Vec<Mutex<Option<PackWriter>>>,
}

fn lock(m: &Mutex<Option<PackWriter>>) -> MutexGuard<'_, Option<PackWriter>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Packer {
    pub fn new(repo: &Repository, blob_type: BlobType, n_open: usize, target: u64) -> Packer {
        Packer::for_store(
            repo.store(),
            repo.keys(),
            repo.config().pack_min as u64,
            blob_type,
            n_open,
            target,
        )
    }

    /// A packer writing to `store` for the repository of `keys`; data packs are padded to at
    /// least `pack_min` bytes.
    pub fn for_store(
        store: &Store,
        keys: &Keys,
        pack_min: u64,
        blob_type: BlobType,
        n_open: usize,
        target: u64,
    ) -> Packer {
        Packer {
            blob_type,
            store: store.clone(),
            recipient: keys.recipient.clone(),
            repo_id: keys.repo_id,
            target,
            min_len: match blob_type {
                BlobType::Data => pack_min,
                BlobType::Tree => 0,
            },
            open: (0..n_open.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn start(&self) -> Result<PackWriter> {
        let id = Id::random();
        // The expected object size lets an in-memory writer reserve it at once; a pack ends
        // with the blob that passed the target (at most one chunk) and its padding.
        let size = self.target.min(256 << 20) + (8 << 20);
        let object = self.store.writer(FileType::Pack, &id.to_hex(), size)?;
        let mut out = self.recipient.encrypt_to(object)?;
        out.write_all(&pack::encode_header(&self.repo_id))?;
        Ok(PackWriter {
            id,
            blob_type: self.blob_type,
            entries: Vec::new(),
            out,
            len: pack::FIRST_BLOB,
        })
    }

    /// An open pack chosen at random, passing over ones another thread is writing to at the
    /// moment (encryption happens under this lock).
    fn pick(&self) -> MutexGuard<'_, Option<PackWriter>> {
        let n = self.open.len();
        let first = random_below(n);
        for k in 0..n {
            match self.open[(first + k) % n].try_lock() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        lock(&self.open[first])
    }

    /// Add a blob; returns a pack that became full, to be stored.
    pub fn add(
        &self,
        id: Id,
        compression: Compression,
        raw_len: usize,
        stored: &[u8],
    ) -> Result<Option<FinishedPack>> {
        let mut slot = self.pick();
        if slot.is_none() {
            *slot = Some(self.start()?);
        }
        let Some(w) = slot.as_mut() else {
            return Ok(None);
        };
        w.entries.push(BlobEntry {
            id,
            blob_type: self.blob_type,
            compression,
            offset: w.len,
            stored_len: stored.len() as u32,
            raw_len: raw_len as u32,
        });
        if let Err(e) = w.out.write_all(stored) {
            // The pack is unusable; dropping it removes what was written of it.
            *slot = None;
            return Err(e);
        }
        w.len += stored.len() as u64;
        if w.blob_bytes() < self.target {
            return Ok(None);
        }
        let full = slot.take();
        drop(slot);
        match full {
            Some(w) => self.finish(w).map(Some),
            None => Ok(None),
        }
    }

    /// Pad, append the table and end the encryption.
    fn finish(&self, w: PackWriter) -> Result<FinishedPack> {
        let PackWriter {
            id,
            blob_type,
            entries,
            mut out,
            len,
        } = w;
        let zeros = pack::padding_len(entries.len(), len - pack::FIRST_BLOB, self.min_len);
        out.write_zeros(zeros)?;
        let trailer = pack::encode_trailer(&entries);
        out.write_all(&trailer)?;
        let payload_offset = out.payload_offset();
        let (object, object_len) = out.finish()?;
        Ok(FinishedPack {
            desc: PackDesc {
                id,
                pack_type: blob_type,
                object_len,
                payload_offset: payload_offset as u32,
                plain_len: len + zeros + trailer.len() as u64,
                blobs: entries,
            },
            object,
        })
    }

    /// Finish every open pack that holds blobs (end of a backup).
    pub fn flush(&self) -> Result<Vec<FinishedPack>> {
        let mut out = Vec::new();
        for m in &self.open {
            let w = lock(m).take();
            if let Some(w) = w {
                if !w.entries.is_empty() {
                    out.push(self.finish(w)?);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use std::sync::Arc;

    fn store(dir: &std::path::Path) -> Store {
        Store::new(Arc::new(LocalBackend::new(dir))).unwrap()
    }

    fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = vec![];
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    #[test]
    fn streamed_packs_hold_exactly_the_layout_of_the_format() {
        let dir = tempfile::tempdir().unwrap();
        let st = store(dir.path());
        let keys = Keys::generate();
        let p = Packer::for_store(&st, &keys, 1 << 20, BlobType::Data, 2, 1 << 20);
        let mut done = vec![];
        for i in 0..100u8 {
            if let Some(f) = p
                .add(Id([i; 32]), Compression::None, 30_000, &[i; 30_000])
                .unwrap()
            {
                done.push(f.store().unwrap());
            }
        }
        for f in p.flush().unwrap() {
            done.push(f.store().unwrap());
        }
        assert!(p.flush().unwrap().is_empty());
        assert!(done.len() >= 3);
        assert_eq!(done.iter().map(|d| d.blobs.len()).sum::<usize>(), 100);
        // Random assignment: consecutive blobs do not all land in the same pack.
        let first: Vec<u8> = done[0].blobs.iter().map(|e| e.id.0[0]).collect();
        assert!(first.windows(2).any(|w| w[1] != w[0] + 1));
        for d in &done {
            let path = dir
                .path()
                .join(crate::backend::object_path(FileType::Pack, &d.id.to_hex()));
            let object = std::fs::read(path).unwrap();
            assert_eq!(object.len() as u64, d.object_len);
            assert_eq!(
                crate::crypto::age_payload_offset(&object),
                Some(d.payload_offset as u64)
            );
            let plain = keys.data_identity().unwrap().decrypt(&object, "p").unwrap();
            assert_eq!(plain.len() as u64, d.plain_len);
            assert!(
                d.plain_len >= 1 << 20,
                "data packs are padded to the minimum"
            );
            let blobs: Vec<u8> = d
                .blobs
                .iter()
                .flat_map(|e| vec![e.id.0[0]; e.stored_len as usize])
                .collect();
            // Streaming gives exactly the plaintext that `pack::encode` describes.
            assert_eq!(
                plain,
                pack::encode(&keys.repo_id, &d.blobs, &blobs, 1 << 20)
            );
            assert_eq!(pack::decode(&plain, &keys.repo_id).unwrap(), d.blobs);
        }
        // Nothing is left in the temporary folder.
        assert!(files_under(&dir.path().join("tmp")).is_empty());
    }

    #[test]
    fn an_abandoned_pack_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let st = store(dir.path());
        let keys = Keys::generate();
        let p = Packer::for_store(&st, &keys, 0, BlobType::Tree, 1, 10 << 20);
        p.add(Id([1; 32]), Compression::None, 3 << 20, &vec![7u8; 3 << 20])
            .unwrap();
        assert_eq!(files_under(dir.path()).len(), 1, "the pack being written");
        drop(p);
        assert!(files_under(dir.path()).is_empty());
        // A finished pack that is never stored is gone as well.
        let p = Packer::for_store(&st, &keys, 4 << 20, BlobType::Tree, 1, 1 << 20);
        let f = p
            .add(Id([2; 32]), Compression::None, 2 << 20, &vec![8u8; 2 << 20])
            .unwrap()
            .expect("full");
        assert!(
            f.desc.plain_len < 4 << 20,
            "tree packs get no minimum padding"
        );
        drop(f);
        assert!(files_under(dir.path()).is_empty());
    }
}
