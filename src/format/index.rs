//! Index objects: which blobs each pack holds and where, so clients need not read packs.

use super::codec::{Reader, Writer};
use super::pack::MAX_PACK_LEN;
use super::{
    pad, read_header, read_mac, read_padding, read_writer, write_header, write_writer, BlobEntry,
    BlobType, MacKeys, ObjectKind, WrittenBy, BLOB_ENTRY_LEN,
};
use crate::crypto::SecretKey;
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

/// Index objects are padded to at least this many bytes (§9).
pub const PAD_MIN: usize = 64 * 1024;

/// Encode an index object written `by` a device, MAC-ed with that writer's key, padded.
pub fn encode(repo_id: &Id, by: &WrittenBy, key: &SecretKey, packs: &[PackDesc]) -> Vec<u8> {
    let mut w = Writer::new();
    write_header(&mut w, repo_id, ObjectKind::Index);
    write_writer(&mut w, by);
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
    // Who wrote it leads the body (a reader learns it before the packs); the MAC covers
    // everything before it.
    let mac = key.keyed_hash(&w.buf);
    w.id(&mac);
    pad(&mut w, PAD_MIN);
    w.into_vec()
}

/// Decode an index object, checking its MAC when this device holds its writer's key. Returns
/// who wrote it and the packs it describes.
pub fn decode(data: &[u8], repo_id: &Id, macs: &MacKeys<'_>) -> Result<(WrittenBy, Vec<PackDesc>)> {
    let mut r = Reader::new(data, "index");
    read_header(&mut r, Some(repo_id), ObjectKind::Index)?;
    let by = read_writer(&mut r)?;
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
        // An age file is longer than its plaintext, and no pack is longer than readers accept.
        if object_len > MAX_PACK_LEN
            || plain_len > object_len
            || u64::from(payload_offset) > object_len
        {
            return Err(r.err("pack sizes out of range"));
        }
        let nb = r.count(BLOB_ENTRY_LEN)?;
        let mut blobs = Vec::with_capacity(nb);
        for _ in 0..nb {
            let b = BlobEntry::decode(&mut r)?;
            if b.end().is_none_or(|end| end > plain_len) {
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
    read_mac(&mut r, data, macs, &by)?;
    read_padding(&mut r, data, PAD_MIN)?;
    Ok((by, packs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{device_mac_key, Compression, DeviceId};
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
            let (fk, root) = (SecretKey::generate(), SecretKey::generate());
            let dev = DeviceId([3; 16]);
            let wk = device_mac_key(&root, &dev);
            let macs = MacKeys { full: Some(&fk), devices: Some(&root), own: None };
            let enc = encode(&repo, &WrittenBy::Full, &fk, &packs);
            prop_assert_eq!(enc.len(), PAD_MIN);
            prop_assert_eq!(decode(&enc, &repo, &macs).unwrap(), (WrittenBy::Full, packs.clone()));
            prop_assert!(decode(&enc[..enc.len() - 1], &repo, &macs).is_err());
            let by = WrittenBy::Device(dev);
            let enc = encode(&repo, &by, &wk, &packs);
            prop_assert_eq!(decode(&enc, &repo, &macs).unwrap(), (by, packs.clone()));
            // Claiming class 1 with a device key fails; a write-only reader takes class 1 as
            // it is, since it cannot check it.
            let forged = encode(&repo, &WrittenBy::Full, &wk, &packs);
            prop_assert!(decode(&forged, &repo, &macs).is_err());
            let wo = MacKeys { full: None, devices: None, own: Some((dev, &wk)) };
            prop_assert!(decode(&forged, &repo, &wo).is_ok());
            let mut flipped = enc.clone();
            flipped[super::super::HEADER_LEN + 20] ^= 1;
            prop_assert!(decode(&flipped, &repo, &macs).is_err());
        }
    }
}
