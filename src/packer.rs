//! Packing blobs into packs: blobs are spread at random over several open packs so pack
//! boundaries do not follow file boundaries; full packs are sealed (encoded, padded, encrypted).

use std::sync::{Arc, Mutex};

use crate::crypto::{self, random_below};
use crate::error::{Error, Result};
use crate::format::index::PackDesc;
use crate::format::{pack, BlobEntry, BlobType, Compression};
use crate::ids::Id;
use crate::keys::Keys;

/// Recycles pack-sized buffers: a backup fills and seals the same few buffers over and over
/// instead of faulting in fresh pages for every 16 MiB pack (and returning them to the system
/// after it).
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufferPool {
    /// A pool that keeps at most `keep` idle buffers.
    pub fn new(keep: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An empty buffer, with at least `capacity` bytes reserved when it is a new one.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        reused.unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    pub fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}

/// A pack being filled.
pub struct PackBuilder {
    pub blob_type: BlobType,
    entries: Vec<BlobEntry>,
    data: Vec<u8>,
}

impl PackBuilder {
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
    pool: Arc<BufferPool>,
}

impl Packer {
    pub fn new(blob_type: BlobType, n_open: usize, target: usize) -> Self {
        Packer::with_pool(
            blob_type,
            n_open,
            target,
            Arc::new(BufferPool::new(n_open + 1)),
        )
    }

    /// A packer that takes its buffers from `pool` (the sealer gives them back).
    pub fn with_pool(
        blob_type: BlobType,
        n_open: usize,
        target: usize,
        pool: Arc<BufferPool>,
    ) -> Self {
        let mut p = Packer {
            blob_type,
            open: Vec::new(),
            target,
            pool,
        };
        p.open = (0..n_open.max(1)).map(|_| p.fresh()).collect();
        p
    }

    fn fresh(&self) -> PackBuilder {
        // Room for a full pack and its last blob, reserved at once: growing by doubling would
        // leave up to twice the pack size allocated (pages are only committed as written).
        let capacity = if self.target <= 1 << 30 {
            self.target + (8 << 20)
        } else {
            0
        };
        PackBuilder {
            blob_type: self.blob_type,
            entries: Vec::new(),
            data: self.pool.take(capacity),
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
            let fresh = self.fresh();
            Some(std::mem::replace(&mut self.open[i], fresh))
        } else {
            None
        }
    }

    /// Take every non-empty open pack (end of a backup). Partly filled packs are joined while
    /// they fit in one: every pack is one more object to store and pay for.
    pub fn flush(&mut self) -> Vec<PackBuilder> {
        let mut out: Vec<PackBuilder> = Vec::new();
        for i in 0..self.open.len() {
            if self.open[i].is_empty() {
                continue;
            }
            let fresh = self.fresh();
            let b = std::mem::replace(&mut self.open[i], fresh);
            match out.last_mut() {
                Some(last) if last.data.len() + b.data.len() <= self.target => {
                    let base = last.data.len() as u64;
                    last.entries.extend(b.entries.into_iter().map(|mut e| {
                        e.offset += base;
                        e
                    }));
                    last.data.extend_from_slice(&b.data);
                    self.pool.give(b.data);
                }
                _ => out.push(b),
            }
        }
        out
    }
}

/// Encode, pad and encrypt a pack. Data packs are padded to at least `min_len`.
pub fn seal(b: PackBuilder, keys: &Keys, min_len: u64) -> Result<SealedPack> {
    let mut bytes = Vec::new();
    let (desc, _, _) = seal_into(b, keys, min_len, &mut bytes, 1)?;
    Ok(SealedPack { desc, bytes })
}

/// `seal`, writing the object into `out` (cleared first) at the returned offset, which is a
/// multiple of `align` in memory (so that a local folder can write it with direct I/O), and
/// handing back the pack's emptied buffer for reuse. The table, the blobs and the padding are
/// encrypted in one stream, never joined into one plaintext buffer.
pub fn seal_into(
    b: PackBuilder,
    keys: &Keys,
    min_len: u64,
    out: &mut Vec<u8>,
    align: usize,
) -> Result<(PackDesc, Vec<u8>, usize)> {
    let PackBuilder {
        blob_type,
        mut entries,
        mut data,
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
    let head = pack::encode_prefix(&keys.repo_id, &entries);
    let zeros = pack::padding_len(entries.len(), data.len(), min);
    let plain_len = (head.len() + data.len() + zeros) as u64;
    out.clear();
    // The whole object fits without reallocating, so the aligned start stays where it is.
    out.reserve(crypto::age_payload_size(plain_len) as usize + 4096 + align);
    let start = out.as_ptr().align_offset(align.max(1)).min(align);
    out.resize(start, 0);
    keys.recipient
        .encrypt_parts_into(&[&head, &data], zeros, out)?;
    let object = &out[start..];
    let payload_offset = crypto::age_payload_offset(object)
        .ok_or_else(|| Error::Invalid("age output without a header".into()))?;
    data.clear();
    Ok((
        PackDesc {
            id: Id::random(),
            pack_type: blob_type,
            object_len: object.len() as u64,
            payload_offset: payload_offset as u32,
            plain_len,
            blobs: entries,
        },
        data,
        start,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partly_filled_packs_are_joined_at_the_end_when_they_fit() {
        let mut p = Packer::new(BlobType::Data, 2, 1 << 20);
        for i in 0..20u8 {
            assert!(p
                .add(Id([i; 32]), Compression::None, 1000, &[i; 1000])
                .is_none());
        }
        let mut out = p.flush();
        assert_eq!(out.len(), 1, "two small open packs become one");
        let b = out.pop().unwrap();
        assert_eq!(b.entries.len(), 20);
        for e in &b.entries {
            let at = e.offset as usize;
            assert!(b.data[at..at + 1000].iter().all(|&x| x == e.id.0[0]));
        }
        assert!(p.flush().is_empty());
        // Packs that do not fit together stay apart; no blob is lost either way.
        let mut p = Packer::new(BlobType::Data, 2, 10_000);
        let mut all: Vec<PackBuilder> = (0..17u8)
            .filter_map(|i| p.add(Id([i; 32]), Compression::None, 900, &[i; 900]))
            .collect();
        let rest = p.flush();
        assert!(rest
            .iter()
            .all(|b| b.data.len() <= 10_000 || b.entries.len() == 1));
        all.extend(rest);
        assert_eq!(all.iter().map(|b| b.entries.len()).sum::<usize>(), 17);
    }

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
        let last = full.pop().unwrap();
        let expect = pack::encode(
            &keys.repo_id,
            &{
                let mut e = last.entries.clone();
                let prefix = pack::prefix_len(e.len()) as u64;
                e.iter_mut().for_each(|e| e.offset += prefix);
                e
            },
            &last.data,
            1 << 20,
        );
        let mut out = Vec::new();
        let (desc, _, start) = seal_into(last, &keys, 1 << 20, &mut out, 4096).unwrap();
        assert_eq!(out[start..].as_ptr().align_offset(4096), 0);
        assert_eq!(desc.object_len as usize, out.len() - start);
        let sealed = SealedPack {
            desc,
            bytes: out[start..].to_vec(),
        };
        assert!(sealed.desc.plain_len >= 1 << 20);
        let plain = keys
            .data_identity()
            .unwrap()
            .decrypt(&sealed.bytes, "p")
            .unwrap();
        // Streaming the parts gives exactly the plaintext that `pack::encode` describes.
        assert_eq!(plain, expect);
        assert_eq!(sealed.desc.plain_len as usize, plain.len());
        let table = pack::decode_table(&plain, &keys.repo_id, plain.len() as u64).unwrap();
        assert_eq!(table, sealed.desc.blobs);
    }
}
