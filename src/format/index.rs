//! Index objects: which blobs each pack holds and where, so clients need not read packs.

use super::codec::{Reader, Writer};
use super::{read_header, write_header, BlobEntry, BlobType, ObjectKind, BLOB_ENTRY_LEN};
use crate::error::Result;
use crate::ids::Id;

/// A pack as the index knows it: an index object's record of it, without its blob entries.
#[derive(Clone, Debug)]
pub struct PackInfo {
    pub id: Id,
    pub pack_type: BlobType,
    pub object_len: u64,
    pub payload_offset: u32,
    pub plain_len: u64,
}

impl PackDesc {
    /// The pack without its blob entries.
    pub fn info(&self) -> PackInfo {
        PackInfo {
            id: self.id,
            pack_type: self.pack_type,
            object_len: self.object_len,
            payload_offset: self.payload_offset,
            plain_len: self.plain_len,
        }
    }
}

/// One pack as described by an index object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackDesc {
    pub id: Id,
    pub pack_type: BlobType,
    /// Size of the stored (encrypted) object.
    pub object_len: u64,
    /// Ciphertext offset of the first STREAM chunk (age header + nonce).
    pub payload_offset: u32,
    /// Size of the padded plaintext.
    pub plain_len: u64,
    pub blobs: Vec<BlobEntry>,
}

pub fn encode(repo_id: &Id, packs: &[PackDesc]) -> Vec<u8> {
    let mut w = Writer::new();
    write_header(&mut w, repo_id, ObjectKind::Index);
    w.u32(packs.len() as u32);
    for p in packs {
        w.id(&p.id);
        w.u8(p.pack_type as u8);
        w.u64(p.object_len);
        w.u32(p.payload_offset);
        w.u64(p.plain_len);
        w.u32(p.blobs.len() as u32);
        for b in &p.blobs {
            b.encode(&mut w);
        }
    }
    w.into_vec()
}

pub fn decode(data: &[u8], repo_id: &Id) -> Result<Vec<PackDesc>> {
    let mut r = Reader::new(data, "index");
    read_header(&mut r, Some(repo_id), ObjectKind::Index)?;
    let n = r.count(32 + 1 + 8 + 4 + 8 + 4)?;
    let mut packs = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.id()?;
        let t = r.u8()?;
        let pack_type =
            BlobType::from_u8(t).ok_or_else(|| r.err(format!("unknown pack type {t}")))?;
        let object_len = r.u64()?;
        let payload_offset = r.u32()?;
        let plain_len = r.u64()?;
        let nb = r.count(BLOB_ENTRY_LEN)?;
        let mut blobs = Vec::with_capacity(nb);
        for _ in 0..nb {
            let b = BlobEntry::decode(&mut r)?;
            if b.offset + b.stored_len as u64 > plain_len {
                return Err(r.err("blob lies outside its pack"));
            }
            blobs.push(b);
        }
        packs.push(PackDesc {
            id,
            pack_type,
            object_len,
            payload_offset,
            plain_len,
            blobs,
        });
    }
    r.finish()?;
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Compression;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(counts in proptest::collection::vec(0usize..10, 0..5)) {
            let repo = Id::random();
            let packs: Vec<PackDesc> = counts.iter().map(|&c| PackDesc {
                id: Id::random(), pack_type: BlobType::Data, object_len: 5000, payload_offset: 200,
                plain_len: 4000,
                blobs: (0..c).map(|i| BlobEntry { id: Id::random(), blob_type: BlobType::Data,
                    compression: Compression::Zstd, offset: 100 + i as u64 * 10, stored_len: 10, raw_len: 20 }).collect(),
            }).collect();
            let enc = encode(&repo, &packs);
            prop_assert_eq!(decode(&enc, &repo).unwrap(), packs.clone());
            prop_assert!(decode(&enc[..enc.len().saturating_sub(1)], &repo).is_err() || packs.is_empty());
        }
    }
}
