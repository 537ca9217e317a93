//! Reading packs (§8, §12): pack tables, ranged decrypting reads, blobs decompressed and checked
//! against their keyed ids, and tree blobs for folder cursors.

use std::io::{Read, Seek, SeekFrom};

use super::{relabel, Repository};
use crate::backend::{FileType, RangeReader};
use crate::compress;
use crate::crypto;
use crate::error::{Error, Result};
use crate::format::index::{PackDesc, PackInfo};
use crate::format::tree::{self, Node, TreeSource};
use crate::format::{self, codec::Reader, BlobEntry, BlobType, Compression, ObjectKind};
use crate::ids::Id;

/// A pack's first bytes read to learn its age header and pack header: room for the age header
/// (one stanza, a few hundred bytes) and the first 64 KiB STREAM chunk with its tag.
const PACK_HEAD: u64 = 4096 + 65536 + 16;

/// Tree blobs read from a repository, each verified (§12), for [`tree::FolderCursor`].
pub struct RepoTrees<'a> {
    repo: &'a Repository,
    readers: &'a mut PackReaders,
}

impl TreeSource for RepoTrees<'_> {
    fn tree_blob(&mut self, id: &Id) -> Result<Vec<u8>> {
        self.repo.read_blob(id, BlobType::Tree, self.readers)
    }
}

/// Read a pack's table from its end through a decrypting stream (the object header is checked
/// by whoever opened the stream). Returns the plaintext length and the table.
pub fn read_table_from_end<S: Read + Seek>(s: &mut S, what: &str) -> Result<(u64, Vec<BlobEntry>)> {
    let io = |e: std::io::Error| crypto::read_error(what, e);
    let len = s.seek(SeekFrom::End(0)).map_err(io)?;
    if len < (format::HEADER_LEN + 4) as u64 {
        return Err(Error::corrupt(what, "too short for a pack"));
    }
    let mut last = [0u8; 4];
    s.seek(SeekFrom::Start(len - 4)).map_err(io)?;
    s.read_exact(&mut last).map_err(io)?;
    let n = format::pack::decode_count(&last, len).map_err(|e| relabel(e, what))?;
    let mut trailer = vec![0u8; format::pack::trailer_len(n)];
    s.seek(SeekFrom::Start(len - trailer.len() as u64))
        .map_err(io)?;
    s.read_exact(&mut trailer).map_err(io)?;
    let blobs = format::pack::decode_table(&trailer, len).map_err(|e| relabel(e, what))?;
    Ok((len, blobs))
}

/// Decrypting reader of one pack, its object header already checked.
pub struct PackStream {
    inner: age::stream::StreamReader<RangeReader>,
    what: String,
}

impl PackStream {
    pub fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_at_into(offset, len, &mut buf)?;
        Ok(buf)
    }

    /// `read_at` into `buf`, which ends up `len` bytes long; its allocation is reused.
    pub fn read_at_into(&mut self, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        self.inner
            .seek(SeekFrom::Start(offset))
            .map_err(|e| crypto::read_error(&self.what, e))?;
        // Only bytes never used before are zeroed: a reused buffer costs no memset.
        buf.resize(len, 0);
        self.inner
            .read_exact(buf)
            .map_err(|e| crypto::read_error(&self.what, e))
    }
}

/// A few open pack streams, reused across blob reads (one per worker thread).
pub struct PackReaders {
    /// Each with the pack's id and whether it is the pack's second copy (§2.2).
    open: Vec<((Id, bool), PackStream)>,
    /// How many are kept open.
    keep: usize,
    /// Compressed bytes on their way to decompression, reused.
    scratch: Vec<u8>,
}

impl Default for PackReaders {
    fn default() -> Self {
        PackReaders {
            open: Vec::new(),
            keep: 2,
            scratch: Vec::new(),
        }
    }
}

impl PackReaders {
    /// Readers for walking folders: a snapshot's trees are spread over the tree packs of every
    /// backup that changed them, and a walk goes back and forth between them. Tree packs are
    /// small, and each is read once instead of once per visit.
    pub fn for_trees() -> Self {
        PackReaders {
            keep: 32,
            ..Default::default()
        }
    }

    pub fn read(
        &mut self,
        repo: &Repository,
        pack: &PackInfo,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(repo, pack, offset, len, &mut buf)?;
        Ok(buf)
    }

    /// Read plaintext bytes of a pack's first copy.
    pub fn read_into(
        &mut self,
        repo: &Repository,
        pack: &PackInfo,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.read_copy(repo, pack, false, offset, len, buf)
    }

    /// Forget an open stream of a pack: the next read downloads its bytes again.
    fn close(&mut self, id: &Id, second: bool) {
        self.open.retain(|(k, _)| *k != (*id, second));
    }

    fn read_copy(
        &mut self,
        repo: &Repository,
        pack: &PackInfo,
        second: bool,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let key = (pack.id, second);
        let pos = match self.open.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                let s = repo.open_pack_copy(pack, second)?;
                if self.open.len() >= self.keep {
                    self.open.remove(0);
                }
                self.open.push((key, s));
                self.open.len() - 1
            }
        };
        let r = self.open[pos].1.read_at_into(offset, len, buf);
        if r.is_err() {
            // A failed chunk leaves the stream in an unknown state; reopen next time.
            self.open.remove(pos);
        }
        r
    }
}

impl Repository {
    /// Read a pack's blob table straight from the pack (no index needed).
    /// A tree pack's second copy (§2.2) is read when the first cannot be (a pack's kind is not
    /// known before its table is read: a data pack has no second copy, which costs one request).
    pub fn read_pack_table(&self, id: &Id, object_len: u64) -> Result<PackDesc> {
        match self.read_pack_table_of(FileType::Pack, id, object_len) {
            Err(e) if super::try_second_copy(&e) => {
                match self.read_pack_table_of(FileType::TreePackCopy, id, object_len) {
                    Ok(d) if d.pack_type == BlobType::Tree => {
                        self.note_damaged(FileType::Pack, Some(*id), &e);
                        Ok(d)
                    }
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    pub(crate) fn read_pack_table_of(
        &self,
        t: FileType,
        id: &Id,
        object_len: u64,
    ) -> Result<PackDesc> {
        let name = id.to_hex();
        let what = format!("pack {}", id.short());
        // The age header and the first STREAM chunk (which holds the pack header) in one request;
        // the decrypting stream starts from these bytes.
        let head = self
            .store
            .get_range(t, &name, 0, PACK_HEAD.min(object_len))?;
        let payload_offset = crypto::age_payload_offset(&head)
            .ok_or_else(|| Error::corrupt(&what, "no age header"))?;
        // The plaintext length comes from the decrypting stream (age knows its own framing).
        let mut s =
            self.open_pack_from(id, self.pack_reader_of(t, id, object_len).with_head(head))?;
        let (plain_len, blobs) = read_table_from_end(&mut s.inner, &what)?;
        Ok(PackDesc {
            id: *id,
            pack_type: blobs.first().map(|b| b.blob_type).unwrap_or(BlobType::Data),
            object_len,
            payload_offset: payload_offset as u32,
            plain_len,
            blobs,
        })
    }

    /// The repository's tree blobs, for reading folders with [`tree::FolderCursor`].
    pub fn trees<'a>(&'a self, readers: &'a mut PackReaders) -> RepoTrees<'a> {
        RepoTrees {
            repo: self,
            readers,
        }
    }

    /// One entry of the folder whose top tree blob is `top`, without reading the others.
    pub fn lookup(&self, top: &Id, name: &[u8], readers: &mut PackReaders) -> Result<Option<Node>> {
        tree::lookup(&mut self.trees(readers), top, name)
    }

    /// Read, decompress and verify one blob.
    pub fn read_blob(&self, id: &Id, want: BlobType, readers: &mut PackReaders) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_blob_into(id, want, readers, &mut out)?;
        Ok(out)
    }

    /// `read_blob` into `out` (replacing its contents), reusing its allocation and the
    /// readers' scratch buffer: a restore reads thousands of blobs of up to 4 MiB.
    pub fn read_blob_into(
        &self,
        id: &Id,
        want: BlobType,
        readers: &mut PackReaders,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let locations = self.cache()?.blob(id)?;
        if locations.is_empty() {
            return Err(Error::NotFound(format!("blob {}", id.short())));
        }
        // Every location a blob is recorded at is tried in turn (§13.1): an index entry that
        // points at other bytes fails the id check and costs one read, not the blob.
        let mut first_err = None;
        for (pack, entry) in locations {
            match self.read_at(&pack, &entry, want, readers, out) {
                Ok(()) => return Ok(()),
                Err(e @ Error::Cache { .. }) => return Err(e),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| Error::NotFound(format!("blob {}", id.short()))))
    }

    /// Read the blob at one recorded location and check it is what its id says.
    pub fn verify_location(
        &self,
        pack: &PackInfo,
        entry: &BlobEntry,
        readers: &mut PackReaders,
    ) -> Result<()> {
        let mut out = Vec::new();
        self.read_at(pack, entry, entry.blob_type, readers, &mut out)
    }

    /// Read one recorded location of a blob and verify it. A tree pack is kept twice (§2.2):
    /// when the blob cannot be read from the first copy or does not verify there (damaged, lost,
    /// or replaced by other bytes), it is read from the second (byte-identical, so at the same
    /// offsets) and the damage noted; once noted, the first copy is passed over for the run.
    pub(crate) fn read_at(
        &self,
        pack: &PackInfo,
        entry: &BlobEntry,
        want: BlobType,
        readers: &mut PackReaders,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if entry.blob_type != want {
            return Err(Error::corrupt(
                format!("blob {}", entry.id.short()),
                "has the wrong type",
            ));
        }
        let twin = pack.pack_type == BlobType::Tree;
        if twin && self.is_damaged(FileType::Pack, &pack.id) {
            return self.read_at_copy(pack, entry, readers, out, true);
        }
        match self.read_at_copy(pack, entry, readers, out, false) {
            Err(e) if twin && super::try_second_copy(&e) => {
                match self.read_at_copy(pack, entry, readers, out, true) {
                    Ok(()) => {
                        self.note_damaged(FileType::Pack, Some(pack.id), &e);
                        Ok(())
                    }
                    Err(_) => Err(e),
                }
            }
            r => r,
        }
    }

    /// Read one copy; a read that fails authentication or verification is made once more from
    /// freshly downloaded bytes before it counts: only damage that repeats is damage at rest.
    fn read_at_copy(
        &self,
        pack: &PackInfo,
        entry: &BlobEntry,
        readers: &mut PackReaders,
        out: &mut Vec<u8>,
        second: bool,
    ) -> Result<()> {
        match self.read_at_copy_once(pack, entry, readers, out, second) {
            Err(Error::Corrupt { .. }) => {
                readers.close(&pack.id, second);
                self.read_at_copy_once(pack, entry, readers, out, second)
            }
            r => r,
        }
    }

    fn read_at_copy_once(
        &self,
        pack: &PackInfo,
        entry: &BlobEntry,
        readers: &mut PackReaders,
        out: &mut Vec<u8>,
        second: bool,
    ) -> Result<()> {
        match entry.compression {
            Compression::None => readers.read_copy(
                self,
                pack,
                second,
                entry.offset,
                entry.stored_len as usize,
                out,
            )?,
            Compression::Zstd => {
                let mut stored = std::mem::take(&mut readers.scratch);
                let r = readers.read_copy(
                    self,
                    pack,
                    second,
                    entry.offset,
                    entry.stored_len as usize,
                    &mut stored,
                );
                let r = r.and_then(|_| self.decompress_blob(entry, &stored, out));
                readers.scratch = stored;
                r?
            }
        }
        self.check_blob(entry, out)
    }

    /// Turn stored bytes into verified plaintext.
    pub fn decode_blob(&self, entry: &BlobEntry, stored: Vec<u8>) -> Result<Vec<u8>> {
        let plain = match entry.compression {
            Compression::None => stored,
            Compression::Zstd => {
                let mut out = Vec::new();
                self.decompress_blob(entry, &stored, &mut out)?;
                out
            }
        };
        self.check_blob(entry, &plain)?;
        Ok(plain)
    }

    /// Decompress a blob's stored bytes into `out`, bounded by its recorded size.
    pub(super) fn decompress_blob(
        &self,
        entry: &BlobEntry,
        stored: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let what = format!("blob {}", entry.id.short());
        compress::decompress_into(stored, entry.raw_len as usize, out, &what)
    }

    /// A blob is used only when its plaintext matches its keyed id (§12).
    pub(super) fn check_blob(&self, entry: &BlobEntry, plain: &[u8]) -> Result<()> {
        if self.keys.blob_id(plain) != entry.id {
            return Err(Error::corrupt(
                format!("blob {}", entry.id.short()),
                "content does not match its id",
            ));
        }
        Ok(())
    }

    /// Open a pack (its first copy, or a tree pack's second, §2.2) for seekable reads of its
    /// blobs. Its object header is not read: each chunk a blob lies in is authenticated and
    /// each blob checked against its keyed id, so a damaged header costs only the blobs of its
    /// chunk, as for planned reads (§12.2), and reading one blob does not fetch the first chunk.
    pub fn open_pack_copy(&self, pack: &PackInfo, second: bool) -> Result<PackStream> {
        let t = if second {
            FileType::TreePackCopy
        } else {
            FileType::Pack
        };
        let what = format!("pack {}", pack.id.short());
        let rr = self.pack_reader_of(t, &pack.id, pack.object_len);
        let inner = self.keys.data_identity()?.open(rr, &what)?;
        Ok(PackStream { inner, what })
    }

    fn pack_reader_of(&self, t: FileType, id: &Id, object_len: u64) -> RangeReader {
        RangeReader::new(self.store.clone(), t, id.to_hex(), object_len, 1 << 20)
    }

    fn open_pack_from(&self, id: &Id, rr: RangeReader) -> Result<PackStream> {
        let what = format!("pack {}", id.short());
        let mut s = self.keys.data_identity()?.open(rr, &what)?;
        self.check_pack_header(&mut s, &what)?;
        Ok(PackStream { inner: s, what })
    }

    /// Read and check the object header at the start of a pack's plaintext: a pack of this
    /// repository, of this format.
    pub fn check_pack_header(&self, s: &mut impl Read, what: &str) -> Result<()> {
        let mut hdr = [0u8; format::HEADER_LEN];
        s.read_exact(&mut hdr)
            .map_err(|e| crypto::read_error(what, e))?;
        format::read_header(
            &mut Reader::new(&hdr, "pack"),
            Some(&self.keys.repo_id),
            ObjectKind::Pack,
        )
        .map(|_| ())
        .map_err(|e| relabel(e, what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::backend::Store;
    use crate::crypto::{self, Passphrase};
    use crate::repo::InitOptions;
    use std::sync::Arc;

    #[test]
    fn a_blob_is_read_from_its_next_location_when_one_points_at_other_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(LocalBackend::new(dir.path()))).unwrap();
        let opts = InitOptions {
            scrypt_log_n: 10,
            ..Default::default()
        };
        let repo = Repository::init(store, &Passphrase::new("pw".into()), &opts).unwrap();
        // Two packs: b's first (the lower pack row), then a's.
        let b = vec![2u8; 7000];
        let a = vec![1u8; 5000];
        let id_b = crate::blobwriter::write_blobs(&repo, vec![(BlobType::Data, b)]).unwrap()[0];
        let id_a =
            crate::blobwriter::write_blobs(&repo, vec![(BlobType::Data, a.clone())]).unwrap()[0];
        let cache = repo.cache().unwrap();
        let (pack_b, entry_b) = cache.blob(&id_b).unwrap().remove(0);
        // b's pack described as also holding a, at b's place: that location comes first.
        let lie = crate::format::index::PackDesc {
            id: pack_b.id,
            pack_type: BlobType::Data,
            object_len: pack_b.object_len,
            payload_offset: pack_b.payload_offset,
            plain_len: pack_b.plain_len,
            blobs: vec![BlobEntry {
                id: id_a,
                ..entry_b
            }],
        };
        cache.add_packs(None, true, &[lie]).unwrap();
        let locs = cache.blob(&id_a).unwrap();
        assert_eq!(locs.len(), 2);
        assert_eq!(locs[0].0.id, pack_b.id, "the false location is tried first");
        let mut readers = PackReaders::default();
        assert_eq!(
            repo.read_blob(&id_a, BlobType::Data, &mut readers).unwrap(),
            a
        );
    }

    #[test]
    fn a_pack_table_read_from_the_pack_matches_the_index_in_two_requests() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(LocalBackend::new(dir.path()))).unwrap();
        let opts = InitOptions {
            scrypt_log_n: 10,
            ..Default::default()
        };
        let repo = Repository::init(store, &Passphrase::new("pw".into()), &opts).unwrap();
        // Incompressible blobs spanning many STREAM chunks: the table is far from the head.
        let blobs = (0..3)
            .map(|_| {
                let mut d = vec![0u8; 1_000_000];
                crypto::fill_random(&mut d);
                (BlobType::Data, d)
            })
            .collect();
        crate::blobwriter::write_blobs(&repo, blobs).unwrap();
        let indexes = repo.store().list(FileType::Index).unwrap();
        assert_eq!(indexes.len(), 1);
        let (_, indexed) = repo.read_index_object(&indexes[0].0).unwrap();
        assert_eq!(indexed.len(), 1);
        let want = &indexed[0];
        let before = repo.store().stats().get;
        let got = repo.read_pack_table(&want.id, want.object_len).unwrap();
        assert_eq!(&got, want);
        // The head (age header and pack header) and the tail (table); the head is not re-read.
        assert_eq!(repo.store().stats().get - before, 2);
    }
}
