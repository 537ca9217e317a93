//! Packing blobs into packs: blobs are spread at random over several open packs so pack
//! boundaries do not follow file boundaries; full packs are sealed (encoded, padded, encrypted).

use crate::crypto::{self, random_below};
use crate::error::{Error, Result};
use crate::format::index::PackDesc;
use crate::format::{pack, BlobEntry, BlobType, Compression};
use crate::ids::Id;
use crate::keys::Keys;

/// A pack being filled.
pub struct PackBuilder {
    pub blob_type: BlobType,
    entries: Vec<BlobEntry>,
    data: Vec<u8>,
}

impl PackBuilder {
    fn new(blob_type: BlobType, target: usize) -> Self {
        // Room for a full pack and its last blob, reserved at once: growing by doubling would
        // leave up to twice the pack size allocated (pages are only committed as written).
        let capacity = if target <= 1 << 30 {
            target + (8 << 20)
        } else {
            0
        };
        PackBuilder {
            blob_type,
            entries: Vec::new(),
            data: Vec::with_capacity(capacity),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
}

/// A sealed pack ready to upload, with its index description.
pub struct SealedPack {
    pub desc: PackDesc,
    pub bytes: Vec<u8>,
}

/// Distributes blobs of one type over `n_open` packs.
pub struct Packer {
    blob_type: BlobType,
    open: Vec<PackBuilder>,
    target: usize,
}

impl Packer {
    pub fn new(blob_type: BlobType, n_open: usize, target: usize) -> Self {
        Packer {
            blob_type,
            open: (0..n_open.max(1))
                .map(|_| PackBuilder::new(blob_type, target))
                .collect(),
            target,
        }
    }

    /// Add a blob; returns a pack that became full and must be sealed.
    pub fn add(
        &mut self,
        id: Id,
        compression: Compression,
        raw_len: usize,
        stored: &[u8],
    ) -> Option<PackBuilder> {
        let i = random_below(self.open.len());
        let b = &mut self.open[i];
        b.entries.push(BlobEntry {
            id,
            blob_type: self.blob_type,
            compression,
            offset: b.data.len() as u64,
            stored_len: stored.len() as u32,
            raw_len: raw_len as u32,
        });
        b.data.extend_from_slice(stored);
        if b.data.len() >= self.target {
            Some(std::mem::replace(
                b,
                PackBuilder::new(self.blob_type, self.target),
            ))
        } else {
            None
        }
    }

    /// Take every non-empty open pack (end of a backup).
    pub fn flush(&mut self) -> Vec<PackBuilder> {
        let (t, target) = (self.blob_type, self.target);
        self.open
            .iter_mut()
            .map(|b| std::mem::replace(b, PackBuilder::new(t, target)))
            .filter(|b| !b.is_empty())
            .collect()
    }
}

/// Encode, pad and encrypt a pack. Data packs are padded to at least `min_len`.
pub fn seal(b: PackBuilder, keys: &Keys, min_len: u64) -> Result<SealedPack> {
    let PackBuilder {
        blob_type,
        mut entries,
        data,
    } = b;
    let prefix = pack::prefix_len(entries.len()) as u64;
    for e in &mut entries {
        e.offset += prefix;
    }
    let min = if blob_type == BlobType::Data {
        min_len
    } else {
        0
    };
    let plain = pack::encode(&keys.repo_id, &entries, &data, min);
    drop(data);
    let bytes = keys.recipient.encrypt(&plain)?;
    let payload_offset = crypto::age_payload_offset(&bytes)
        .ok_or_else(|| Error::Invalid("age output without a header".into()))?;
    Ok(SealedPack {
        desc: PackDesc {
            id: Id::random(),
            pack_type: blob_type,
            object_len: bytes.len() as u64,
            payload_offset: payload_offset as u32,
            plain_len: plain.len() as u64,
            blobs: entries,
        },
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_spread_over_open_packs_and_seal_pads() {
        let keys = Keys::generate();
        let mut p = Packer::new(BlobType::Data, 2, 1 << 20);
        let mut full = vec![];
        for i in 0..100u8 {
            if let Some(b) = p.add(Id([i; 32]), Compression::None, 30_000, &[i; 30_000]) {
                full.push(b);
            }
        }
        full.extend(p.flush());
        assert!(full.len() >= 3);
        let total: usize = full.iter().map(|b| b.entries.len()).sum();
        assert_eq!(total, 100);
        // Random assignment: consecutive blobs do not all land in the same pack.
        let first: Vec<u8> = full[0].entries.iter().map(|e| e.id.0[0]).collect();
        assert!(first.windows(2).any(|w| w[1] != w[0] + 1));
        let sealed = seal(full.pop().unwrap(), &keys, 1 << 20).unwrap();
        assert!(sealed.desc.plain_len >= 1 << 20);
        let plain = keys
            .data_identity()
            .unwrap()
            .decrypt(&sealed.bytes, "p")
            .unwrap();
        let table = pack::decode_table(&plain, &keys.repo_id, plain.len() as u64).unwrap();
        assert_eq!(table, sealed.desc.blobs);
    }
}
