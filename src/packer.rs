//! Packing blobs into packs: blobs are spread at random over several open packs so pack
//! boundaries do not follow file boundaries, and each open pack is encrypted (by the adding
//! worker, or on a thread of its own while workers idle) and written to its store as it fills
//! (format §8: the table is at the end), so no pack is ever held in memory.

use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::backend::{FileType, ObjectWriter, Store};
use crate::crypto::{random_below, DataRecipient, EncryptWriter};
use crate::error::{Error, Result};
use crate::format::index::PackDesc;
use crate::format::{pack, BlobEntry, BlobType, Compression};
use crate::ids::Id;
use crate::keys::Keys;
use crate::pipe::Pipe;

/// A pack being filled: its plaintext goes through age into the store's writer as blobs arrive.
pub struct PackWriter {
    id: Id,
    entries: Vec<BlobEntry>,
    out: Encrypting,
    /// Plaintext bytes written: the header and the blobs.
    len: u64,
}

/// Plaintext is handed to an encryption thread in blocks of this size.
const BLOCK: usize = 1 << 20;
/// Blocks one open pack may hold: one being filled, the rest queued or being encrypted.
const BLOCKS: usize = 4;

type Stream = EncryptWriter<ObjectWriter>;

/// The encryption of one pack. When every file worker is busy, the worker that adds a blob
/// encrypts it itself, straight from its read buffer (no copy, no hand-off). When cores would
/// otherwise idle (one large file, the end of a backup), blobs are copied into blocks for a
/// thread of the pack's own, so the worker goes on reading, chunking and hashing meanwhile.
struct Encrypting {
    inline: Option<Stream>,
    offloaded: Option<Pipe<Vec<u8>, Stream, Error>>,
    /// The block being filled for the thread.
    cur: Vec<u8>,
    /// Empty blocks kept between hand-offs (at most `BLOCKS` exist).
    spare: Vec<Vec<u8>>,
}

impl Encrypting {
    fn new(out: Stream) -> Encrypting {
        Encrypting {
            inline: Some(out),
            offloaded: None,
            cur: Vec::new(),
            spare: Vec::new(),
        }
    }

    fn write_all(&mut self, mut data: &[u8], offload: bool) -> Result<()> {
        if !offload {
            return self.stream()?.write_all(data);
        }
        if self.offloaded.is_none() {
            self.offload()?;
        }
        while !data.is_empty() {
            if self.cur.capacity() == 0 {
                self.cur = self.take_block()?;
            }
            let n = data.len().min(BLOCK - self.cur.len());
            self.cur.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.cur.len() == BLOCK {
                self.send()?;
            }
        }
        Ok(())
    }

    fn write_zeros(&mut self, n: u64) -> Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut left = n;
        while left > 0 {
            let k = left.min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..k], false)?;
            left -= k as u64;
        }
        Ok(())
    }

    /// Move the stream to a thread of its own.
    fn offload(&mut self) -> Result<()> {
        let Some(out) = self.inline.take() else {
            return Ok(());
        };
        let encrypt = |out: &mut Stream, block: &mut Vec<u8>| {
            out.write_all(block)?;
            block.clear();
            Ok(())
        };
        let spare = std::mem::take(&mut self.spare);
        let pipe = Pipe::spawn("vault-seal", BLOCKS, spare, out, encrypt)
            .map_err(|e| Error::io("starting an encryption thread", e))?;
        self.offloaded = Some(pipe);
        Ok(())
    }

    /// The stream, here: what was handed to the thread is encrypted first.
    fn stream(&mut self) -> Result<&mut Stream> {
        if let Some(pipe) = self.offloaded.take() {
            let rest = std::mem::take(&mut self.cur);
            let sent = if rest.is_empty() {
                if rest.capacity() > 0 {
                    self.spare.push(rest);
                }
                true
            } else {
                pipe.send(rest)
            };
            let (joined, spare) = pipe.join();
            self.spare.extend(spare);
            match joined {
                Some(Ok(out)) if sent => self.inline = Some(out),
                Some(Err(e)) => return Err(e),
                _ => return Err(stopped()),
            }
        }
        self.inline.as_mut().ok_or_else(stopped)
    }

    fn take_block(&mut self) -> Result<Vec<u8>> {
        let block = self
            .offloaded
            .as_mut()
            .and_then(|p| p.empty(|| Vec::with_capacity(BLOCK)));
        match block {
            Some(b) => Ok(b),
            // The thread ended early: its error.
            None => self.stream().map(|_| Vec::new()),
        }
    }

    fn send(&mut self) -> Result<()> {
        let full = std::mem::take(&mut self.cur);
        match self.offloaded.as_ref().map(|p| p.send(full)) {
            Some(true) => Ok(()),
            // The thread ended early: its error.
            _ => self.stream().map(|_| ()),
        }
    }

    /// Encrypt the rest and end the age stream: the store's writer, the object's length and
    /// its payload offset.
    fn finish(mut self) -> Result<(ObjectWriter, u64, u64)> {
        self.stream()?;
        let out = self.inline.take().ok_or_else(stopped)?;
        let payload_offset = out.payload_offset();
        let (w, len) = out.finish()?;
        Ok((w, len, payload_offset))
    }
}

fn stopped() -> Error {
    Error::io(
        "encrypting",
        std::io::Error::other("the encryption thread stopped"),
    )
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

/// A pack is also finished when it holds this many blobs (a folder of tiny files would put
/// hundreds of thousands in one): a pack's table, and the claims and index entries a backup
/// keeps until the pack is indexed, stay a few MiB.
pub const MAX_PACK_BLOBS: usize = 65_536;

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

/// Tree packs are padded to at least this many bytes (§8), or `pack_min` when that is less.
pub const TREE_PACK_MIN: u64 = 64 * 1024;

impl Packer {
    /// A packer writing to `store` for the repository of `keys`; data packs are padded to at
    /// least `pack_min` bytes, tree packs to [`TREE_PACK_MIN`].
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
                // The trees of a small backup must not tell how many files it had (§8).
                BlobType::Tree => pack_min.min(TREE_PACK_MIN),
            },
            open: (0..n_open.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn start(&self) -> Result<PackWriter> {
        let id = Id::random();
        // The expected object size lets an in-memory writer reserve it at once; a pack ends
        // with the blob that passed the target (at most one chunk) and its padding.
        let size = self.target.min(256 << 20) + (8 << 20);
        let object = match self.blob_type {
            BlobType::Data => self.store.writer(FileType::Pack, &id.to_hex(), size)?,
            // Everything in a snapshot is reached through its trees: they are kept twice (§2.2).
            BlobType::Tree => self.store.writer_with_copy(
                FileType::Pack,
                FileType::TreePackCopy,
                &id.to_hex(),
                size,
            )?,
        };
        let mut enc = self.recipient.encrypt_to(object)?;
        enc.write_all(&pack::encode_header(&self.repo_id))?;
        let out = Encrypting::new(enc);
        Ok(PackWriter {
            id,
            entries: Vec::new(),
            out,
            len: pack::FIRST_BLOB,
        })
    }

    /// An open pack chosen at random, passing over ones another thread is adding to at the
    /// moment.
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

    /// Add a blob; returns a pack that became full, to be stored. `offload`: encrypt it on the
    /// pack's own thread (cores would idle otherwise) instead of on the caller's.
    pub fn add(
        &self,
        id: Id,
        compression: Compression,
        raw_len: usize,
        stored: &[u8],
        offload: bool,
    ) -> Result<Option<FinishedPack>> {
        // Readers refuse such a blob (§8): never store one, whatever produced it.
        let limit = crate::format::MAX_BLOB_LEN as usize;
        if raw_len > limit || stored.len() > limit {
            return Err(Error::Invalid(format!(
                "a blob of {raw_len} bytes is above the format's limit of {} MiB",
                limit >> 20
            )));
        }
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
        if let Err(e) = w.out.write_all(stored, offload) {
            // The pack is unusable; dropping it removes what was written of it.
            *slot = None;
            return Err(e);
        }
        w.len += stored.len() as u64;
        if w.blob_bytes() < self.target && w.entries.len() < MAX_PACK_BLOBS {
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
            entries,
            mut out,
            len,
        } = w;
        let zeros = pack::padding_len(entries.len(), len - pack::FIRST_BLOB, self.min_len);
        out.write_zeros(zeros)?;
        let trailer = pack::encode_trailer(&entries);
        out.write_all(&trailer, false)?;
        let (object, object_len, payload_offset) = out.finish()?;
        Ok(FinishedPack {
            desc: PackDesc {
                id,
                pack_type: self.blob_type,
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

    /// A folder store in a temporary directory, and keys.
    fn setup() -> (tempfile::TempDir, Store, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::new(Arc::new(LocalBackend::new(dir.path()))).unwrap();
        (dir, st, Keys::generate())
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

    /// Readers refuse a blob above 64 MiB: no pack ever holds one, and a refused blob leaves
    /// nothing behind.
    #[test]
    fn a_blob_above_the_format_limit_is_refused_and_nothing_is_stored() {
        let (dir, st, keys) = setup();
        let p = Packer::for_store(&st, &keys, 1 << 20, BlobType::Tree, 1, 1 << 30);
        let limit = crate::format::MAX_BLOB_LEN as usize;
        let big = vec![7u8; limit + 1];
        let e = p
            .add(Id([1; 32]), Compression::None, big.len(), &big, false)
            .err()
            .expect("a blob above the limit is refused");
        assert!(e.to_string().contains("above the format's limit"), "{e}");
        assert!(p.flush().unwrap().is_empty());
        // Compressed to little, but its plaintext is still too large.
        let e = p.add(
            Id([2; 32]),
            Compression::Zstd,
            limit + 1,
            &[0u8; 100],
            false,
        );
        assert!(e.is_err());
        assert!(p.flush().unwrap().is_empty());
        assert!(files_under(dir.path())
            .iter()
            .all(|f| !f.to_string_lossy().contains("/data/")));
    }

    /// A pack of tiny blobs ends at MAX_PACK_BLOBS, long before its byte target.
    #[test]
    fn a_pack_of_tiny_blobs_ends_at_the_blob_limit() {
        let (_dir, st, keys) = setup();
        let p = Packer::for_store(&st, &keys, 1 << 20, BlobType::Data, 1, 1 << 30);
        let mut full = None;
        for i in 0..MAX_PACK_BLOBS as u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            if let Some(f) = p
                .add(Id(id), Compression::None, 4, &i.to_le_bytes(), false)
                .unwrap()
            {
                full = Some((i, f));
            }
        }
        let (i, f) = full.expect("a full pack");
        assert_eq!(i as usize, MAX_PACK_BLOBS - 1);
        assert_eq!(f.store().unwrap().blobs.len(), MAX_PACK_BLOBS);
    }

    #[test]
    fn streamed_packs_hold_exactly_the_layout_of_the_format() {
        let (dir, st, keys) = setup();
        let p = Packer::for_store(&st, &keys, 1 << 20, BlobType::Data, 2, 1 << 20);
        let mut done = vec![];
        for i in 0..100u8 {
            // Encrypted by the caller or by the pack's thread, switching back and forth: the
            // stream is the same.
            if let Some(f) = p
                .add(
                    Id([i; 32]),
                    Compression::None,
                    30_000,
                    &[i; 30_000],
                    i % 7 < 3,
                )
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
    fn long_and_short_runs_on_the_encryption_thread_keep_the_stream_whole() {
        let (dir, st, keys) = setup();
        let p = Packer::for_store(&st, &keys, 0, BlobType::Tree, 1, 64 << 20);
        // Runs of 1 to 70 blobs of 100 kB (up to 7 blocks: past the blocks in circulation),
        // alternating between the thread and the caller.
        let mut i = 0u32;
        for (run, len) in [1u32, 70, 3, 25, 1, 11, 70, 2].into_iter().enumerate() {
            for _ in 0..len {
                let b = (i % 251) as u8;
                let mut id = [b; 32];
                id[..4].copy_from_slice(&i.to_le_bytes());
                p.add(
                    Id(id),
                    Compression::None,
                    100_000,
                    &[b; 100_000],
                    run % 2 == 0,
                )
                .unwrap();
                i += 1;
            }
        }
        let d = p.flush().unwrap().pop().unwrap().store().unwrap();
        assert_eq!(d.blobs.len(), i as usize);
        let path = dir
            .path()
            .join(crate::backend::object_path(FileType::Pack, &d.id.to_hex()));
        let plain = keys
            .data_identity()
            .unwrap()
            .decrypt(&std::fs::read(path).unwrap(), "p")
            .unwrap();
        let blobs: Vec<u8> = (0..i)
            .flat_map(|i| vec![(i % 251) as u8; 100_000])
            .collect();
        assert_eq!(plain, pack::encode(&keys.repo_id, &d.blobs, &blobs, 0));
    }

    #[test]
    fn an_abandoned_pack_leaves_nothing_behind() {
        let (dir, st, keys) = setup();
        let p = Packer::for_store(&st, &keys, 0, BlobType::Tree, 1, 10 << 20);
        p.add(
            Id([1; 32]),
            Compression::None,
            3 << 20,
            &vec![7u8; 3 << 20],
            true,
        )
        .unwrap();
        assert_eq!(
            files_under(dir.path()).len(),
            2,
            "the tree pack being written and its second copy (§2.2)"
        );
        drop(p);
        assert!(files_under(dir.path()).is_empty());
        // A finished pack that is never stored is gone as well.
        let p = Packer::for_store(&st, &keys, 4 << 20, BlobType::Tree, 1, 1 << 20);
        let f = p
            .add(
                Id([2; 32]),
                Compression::None,
                2 << 20,
                &vec![8u8; 2 << 20],
                false,
            )
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
