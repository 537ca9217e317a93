//! Pack plaintext layout: header, blob table, blob bytes, zero padding (Padmé).

use super::codec::{Reader, Writer};
use super::{read_header, write_header, BlobEntry, ObjectKind, BLOB_ENTRY_LEN, HEADER_LEN};
use crate::error::Result;
use crate::ids::Id;

/// Bytes before the first blob for a pack of `n` blobs: object header, table length, count, table.
pub fn prefix_len(n: usize) -> usize {
    HEADER_LEN + 4 + 4 + n * BLOB_ENTRY_LEN
}

/// Padmé (Nikitin et al., PETS 2019): round `len` up so that at most O(log log len) bits of it are
/// revealed, with at most 12% overhead.
pub fn padme(len: u64) -> u64 {
    if len < 2 {
        return len;
    }
    let e = 63 - len.leading_zeros() as u64; // floor(log2 len)
    let s = 64 - e.leading_zeros() as u64; // floor(log2 e) + 1
    let last_bits = e - s;
    let mask = (1u64 << last_bits) - 1;
    (len + mask) & !mask
}

/// Final plaintext size of a pack whose unpadded plaintext is `len` bytes.
pub fn padded_len(len: u64, min: u64) -> u64 {
    padme(len.max(min))
}

/// Assemble a pack plaintext. `entries` offsets must already be relative to the start of the
/// plaintext (i.e. start at `prefix_len(entries.len())`), and `blobs` is their bytes in order.
pub fn encode(repo_id: &Id, entries: &[BlobEntry], blobs: &[u8], min_len: u64) -> Vec<u8> {
    let mut out = encode_prefix(repo_id, entries);
    let total = out.len() + blobs.len() + padding_len(entries.len(), blobs.len(), min_len);
    out.reserve_exact(total - out.len());
    out.extend_from_slice(blobs);
    out.resize(total, 0);
    out
}

/// The start of a pack plaintext: object header and blob table. `encode` is this, then the
/// blobs, then `padding_len` zero bytes; sealing streams the three parts without joining them.
pub fn encode_prefix(repo_id: &Id, entries: &[BlobEntry]) -> Vec<u8> {
    let mut w = Writer {
        buf: Vec::with_capacity(prefix_len(entries.len())),
    };
    write_header(&mut w, repo_id, ObjectKind::Pack);
    w.u32((4 + entries.len() * BLOB_ENTRY_LEN) as u32);
    w.u32(entries.len() as u32);
    for e in entries {
        e.encode(&mut w);
    }
    w.into_vec()
}

/// Zero bytes that end a pack of `n_entries` blobs totalling `blobs_len` bytes.
pub fn padding_len(n_entries: usize, blobs_len: usize, min_len: u64) -> usize {
    let unpadded = (prefix_len(n_entries) + blobs_len) as u64;
    (padded_len(unpadded, min_len) - unpadded) as usize
}

/// Length of the table that follows the object header (read first to know how much to fetch).
pub fn decode_table_len(prefix: &[u8], repo_id: &Id) -> Result<usize> {
    let mut r = Reader::new(prefix, "pack header");
    read_header(&mut r, Some(repo_id), ObjectKind::Pack)?;
    Ok(r.u32()? as usize)
}

/// Decode the blob table from the start of a pack plaintext (at least `HEADER_LEN + 4 + table`
/// bytes). Checks that blobs lie inside `plain_len` and do not overlap the table.
pub fn decode_table(prefix: &[u8], repo_id: &Id, plain_len: u64) -> Result<Vec<BlobEntry>> {
    let mut r = Reader::new(prefix, "pack header");
    read_header(&mut r, Some(repo_id), ObjectKind::Pack)?;
    let table_len = r.u32()? as usize;
    let n = r.count(BLOB_ENTRY_LEN)?;
    if table_len != 4 + n * BLOB_ENTRY_LEN {
        return Err(r.err("blob table length does not match its count"));
    }
    let first = prefix_len(n) as u64;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let e = BlobEntry::decode(&mut r)?;
        if e.offset < first || e.offset + e.stored_len as u64 > plain_len {
            return Err(r.err("blob lies outside the pack"));
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BlobType, Compression};
    use proptest::prelude::*;

    #[test]
    fn padme_known_values() {
        assert_eq!(padme(0), 0);
        assert_eq!(padme(1), 1);
        assert_eq!(padme(9), 10);
        assert_eq!(padme(1000), 1024);
        assert_eq!(padme(16 << 20), 16 << 20);
        assert_eq!(padme((16 << 20) + 1), (16 << 20) + (1 << 19));
    }

    proptest! {
        #[test]
        fn padme_bounds(len in 2u64..(1u64 << 40)) {
            let p = padme(len);
            prop_assert!(p >= len);
            prop_assert!((p - len) as f64 <= len as f64 * 0.12 + 1.0);
            prop_assert_eq!(padme(p), p);
        }

        #[test]
        fn table_round_trip(lens in proptest::collection::vec(0u32..5000, 0..20)) {
            let repo = Id::random();
            let mut off = prefix_len(lens.len()) as u64;
            let mut entries = vec![];
            let mut blobs = vec![];
            for (i, l) in lens.iter().enumerate() {
                entries.push(BlobEntry { id: Id([i as u8; 32]), blob_type: BlobType::Data,
                    compression: Compression::None, offset: off, stored_len: *l, raw_len: *l });
                blobs.extend(std::iter::repeat_n(i as u8, *l as usize));
                off += *l as u64;
            }
            let p = encode(&repo, &entries, &blobs, 1000);
            prop_assert!(p.len() as u64 >= 1000);
            prop_assert_eq!(decode_table_len(&p, &repo).unwrap(), 4 + entries.len() * BLOB_ENTRY_LEN);
            let back = decode_table(&p, &repo, p.len() as u64).unwrap();
            prop_assert_eq!(&back, &entries);
            for e in &back {
                let s = &p[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
                prop_assert!(s.iter().all(|b| *b == e.id.0[0]));
            }
        }
    }
}
