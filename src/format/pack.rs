//! Pack plaintext layout: header, blob bytes, zero padding (Padmé), blob table, blob count.
//!
//! The table is at the end so that a pack can be encrypted and written while it is filled:
//! blob offsets are known when a blob is added, the table only when the pack is full.

use super::codec::{Reader, Writer};
use super::{read_header, write_header, BlobEntry, ObjectKind, BLOB_ENTRY_LEN, HEADER_LEN};
use crate::error::Result;
use crate::ids::Id;

/// Offset of the first blob: blobs follow the object header.
pub const FIRST_BLOB: u64 = HEADER_LEN as u64;

/// Bytes after the padding for a pack of `n` blobs: the table and the count.
pub fn trailer_len(n: usize) -> usize {
    n * BLOB_ENTRY_LEN + 4
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

/// The object header that starts a pack plaintext.
pub fn encode_header(repo_id: &Id) -> Vec<u8> {
    let mut w = Writer {
        buf: Vec::with_capacity(HEADER_LEN),
    };
    write_header(&mut w, repo_id, ObjectKind::Pack);
    w.into_vec()
}

/// Zero bytes between the blobs and the table of a pack of `n_entries` blobs totalling
/// `blobs_len` bytes.
pub fn padding_len(n_entries: usize, blobs_len: u64, min_len: u64) -> u64 {
    let unpadded = HEADER_LEN as u64 + blobs_len + trailer_len(n_entries) as u64;
    padded_len(unpadded, min_len) - unpadded
}

/// The end of a pack plaintext: the blob table and the blob count.
pub fn encode_trailer(entries: &[BlobEntry]) -> Vec<u8> {
    let mut w = Writer {
        buf: Vec::with_capacity(trailer_len(entries.len())),
    };
    for e in entries {
        e.encode(&mut w);
    }
    w.u32(entries.len() as u32);
    w.into_vec()
}

/// Assemble a whole pack plaintext. `entries` offsets are from the start of the plaintext (the
/// first blob is at `FIRST_BLOB`), and `blobs` is their bytes in order. Writers stream the same
/// bytes: header, blobs, `padding_len` zeros, `encode_trailer`.
pub fn encode(repo_id: &Id, entries: &[BlobEntry], blobs: &[u8], min_len: u64) -> Vec<u8> {
    let mut out = encode_header(repo_id);
    out.extend_from_slice(blobs);
    let zeros = padding_len(entries.len(), blobs.len() as u64, min_len);
    out.resize(out.len() + zeros as usize, 0);
    out.extend_from_slice(&encode_trailer(entries));
    out
}

/// Largest stored pack a reader accepts (§12): `pack_target` (at most 1 GiB) plus one blob, the
/// table and the padding fit well below it.
pub const MAX_PACK_LEN: u64 = 1280 << 20;

/// The blob count from the last 4 bytes of a pack plaintext of `plain_len` bytes, checked to fit.
pub fn decode_count(last4: &[u8], plain_len: u64) -> Result<usize> {
    let mut r = Reader::new(last4, "pack table");
    let n = r.u32()? as u64;
    if FIRST_BLOB + n * BLOB_ENTRY_LEN as u64 + 4 > plain_len {
        return Err(r.err("blob table larger than the pack"));
    }
    Ok(n as usize)
}

/// Decode the trailer (the last `trailer_len(n)` bytes of a pack plaintext of `plain_len`
/// bytes). Checks that every blob lies between the header and the table.
pub fn decode_table(trailer: &[u8], plain_len: u64) -> Result<Vec<BlobEntry>> {
    let count_at = trailer.len().saturating_sub(4);
    let n = decode_count(&trailer[count_at..], plain_len)?;
    let mut r = Reader::new(trailer, "pack table");
    if trailer.len() != trailer_len(n) {
        return Err(r.err("blob table length does not match its count"));
    }
    let table_start = plain_len - trailer.len() as u64;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let e = BlobEntry::decode(&mut r)?;
        if e.offset < FIRST_BLOB || e.end().is_none_or(|end| end > table_start) {
            return Err(r.err("blob lies outside the pack"));
        }
        out.push(e);
    }
    Ok(out)
}

/// Check the header of a whole pack plaintext and decode its table.
pub fn decode(plain: &[u8], repo_id: &Id) -> Result<Vec<BlobEntry>> {
    read_header(
        &mut Reader::new(plain, "pack header"),
        Some(repo_id),
        ObjectKind::Pack,
    )?;
    let len = plain.len();
    if len < HEADER_LEN + 4 {
        return Err(Reader::new(plain, "pack").err("too short"));
    }
    let n = decode_count(&plain[len - 4..], len as u64)?;
    decode_table(&plain[len - trailer_len(n)..], len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer (fuzz/fuzz_targets/decode_pack_table.rs): an entry whose offset plus
    /// length overflows passed the bounds check in release builds and panicked in checked ones.
    #[test]
    fn an_entry_whose_end_overflows_is_refused() {
        let repo = Id([0x11; 32]);
        let e = BlobEntry {
            id: Id([1; 32]),
            blob_type: BlobType::Data,
            compression: Compression::None,
            offset: u64::MAX - 2,
            stored_len: 10,
            raw_len: 10,
        };
        let mut plain = encode(&repo, &[], b"", 0);
        let n = plain.len();
        plain.truncate(n - 4);
        let mut w = Writer::new();
        e.encode(&mut w);
        plain.extend_from_slice(&w.into_vec());
        plain.extend_from_slice(&1u32.to_le_bytes());
        assert!(decode(&plain, &repo).is_err());
    }
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

    #[test]
    fn a_table_claiming_blobs_past_its_own_start_is_refused() {
        let repo = Id::random();
        let e = BlobEntry {
            id: Id([1; 32]),
            blob_type: BlobType::Data,
            compression: Compression::None,
            offset: FIRST_BLOB,
            stored_len: 10,
            raw_len: 10,
        };
        let mut p = encode(&repo, &[e], &[7; 10], 0);
        assert_eq!(decode(&p, &repo).unwrap(), vec![e]);
        // Stretch the blob over the table: the padding is gone, so 10 + 1 bytes overlap it.
        let bad = BlobEntry {
            stored_len: 11,
            ..e
        };
        let n = p.len();
        p.splice(n - trailer_len(1).., encode_trailer(&[bad]));
        assert!(decode(&p, &repo).is_err());
        // A count larger than the pack.
        let n = p.len();
        p[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
        assert!(decode(&p, &repo).is_err());
        // Another repository's pack.
        assert!(decode(&encode(&repo, &[e], &[7; 10], 0), &Id::random()).is_err());
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
        fn table_round_trip(lens in proptest::collection::vec(0u32..5000, 0..20), min in 0u64..100_000) {
            let repo = Id::random();
            let mut off = FIRST_BLOB;
            let mut entries = vec![];
            let mut blobs = vec![];
            for (i, l) in lens.iter().enumerate() {
                entries.push(BlobEntry { id: Id([i as u8; 32]), blob_type: BlobType::Data,
                    compression: Compression::None, offset: off, stored_len: *l, raw_len: *l });
                blobs.extend(std::iter::repeat_n(i as u8, *l as usize));
                off += *l as u64;
            }
            let p = encode(&repo, &entries, &blobs, min);
            prop_assert!(p.len() as u64 >= min);
            prop_assert_eq!(padme(p.len() as u64), p.len() as u64);
            let back = decode(&p, &repo).unwrap();
            prop_assert_eq!(&back, &entries);
            for e in &back {
                let s = &p[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
                prop_assert!(s.iter().all(|b| *b == e.id.0[0]));
            }
        }
    }
}
