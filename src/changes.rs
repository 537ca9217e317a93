//! Change detection: decide from a file's metadata and its local-index entry whether its
//! content must be read again, and the cheap head-and-tail re-verification.
//!
//! The rules, in order (see docs/design.md, "Change detection"):
//! - size or mtime differ: the content changed; read it.
//! - inode or device differ (a copy with preserved times, an editor that writes a new file
//!   and renames it over the old one, a card mounted again): compare a keyed hash of the size
//!   and the first and last 64 KiB (where JPEG/HEIC metadata and MP4 indexes live); read the
//!   whole file only when that differs.
//! - only ctime differs (chmod, chown, extended attributes, a new hard link): metadata only;
//!   the content is not read.
//! - everything equal: unchanged.
//!
//! The trade-off: a program that rewrites content in place *and* sets mtime back, keeping the
//! size, is not noticed until a `--force-reread` run. restic, borg and Kopia make the same
//! bet; reading every byte of a 10^5-photo library every hour is not an option.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::crypto::SecretKey;
use crate::ids::Id;

/// Bytes hashed at each end of a file for the cheap re-verification.
pub const SAMPLE_LEN: u64 = 64 * 1024;

/// What `stat` says about a file now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime: i64,
    pub mtime_nanos: u32,
    pub ctime: i64,
    pub ctime_nanos: u32,
    pub ino: u64,
    pub dev: u64,
}

impl FileStat {
    pub fn of(m: &std::fs::Metadata) -> FileStat {
        use std::os::unix::fs::MetadataExt;
        let nanos = |n: i64| n.clamp(0, 999_999_999) as u32;
        FileStat {
            size: m.len(),
            mtime: m.mtime(),
            mtime_nanos: nanos(m.mtime_nsec()),
            ctime: m.ctime(),
            ctime_nanos: nanos(m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// What the file-change cache remembers about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// The metadata when the content was read (or last re-verified).
    pub stat: FileStat,
    /// Keyed hash of the whole content (as in the tree node).
    pub hash: Id,
    /// Keyed hash of the size, first and last 64 KiB (see `sample_hash`).
    pub sample: Id,
    pub blobs: Vec<Id>,
}

/// What to do with a file that has an entry in the local index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Same metadata: reuse the entry as it is.
    Unchanged,
    /// Only ctime changed: reuse the content, refresh the entry.
    MetadataOnly,
    /// Same size and mtime but another inode or device: compare the sample hash first.
    VerifySample,
    /// Read the content.
    Changed,
}

pub fn classify(entry: &FileEntry, now: &FileStat) -> Verdict {
    let entry = &entry.stat;
    if entry.size != now.size || entry.mtime != now.mtime || entry.mtime_nanos != now.mtime_nanos {
        Verdict::Changed
    } else if entry.ino != now.ino || entry.dev != now.dev {
        Verdict::VerifySample
    } else if entry.ctime != now.ctime || entry.ctime_nanos != now.ctime_nanos {
        Verdict::MetadataOnly
    } else {
        Verdict::Unchanged
    }
}

/// Where the sampled ranges of a `size`-byte file lie: the head length and the tail start.
fn sample_ranges(size: u64) -> (u64, u64) {
    let head = size.min(SAMPLE_LEN);
    (head, size.saturating_sub(SAMPLE_LEN).max(head))
}

fn sample_of(key: &SecretKey, size: u64, head: &[u8], tail: &[u8]) -> Id {
    let mut h = key.hasher();
    h.update(&size.to_le_bytes());
    h.update(head);
    h.update(tail);
    h.finalize()
}

/// Keyed hash of the size and the first and last [`SAMPLE_LEN`] bytes (the whole file when
/// shorter than both). Returns the hash and the bytes read.
pub fn sample_hash(key: &SecretKey, f: &File, size: u64) -> std::io::Result<(Id, u64)> {
    let (head, tail_start) = sample_ranges(size);
    let mut h = vec![0u8; head as usize];
    f.read_exact_at(&mut h, 0)?;
    let mut t = vec![0u8; (size - tail_start) as usize];
    f.read_exact_at(&mut t, tail_start)?;
    Ok((sample_of(key, size, &h, &t), head + (size - tail_start)))
}

/// [`sample_hash`] of content already in memory (a file read in one piece).
pub fn sample_hash_of(key: &SecretKey, content: &[u8]) -> Id {
    let size = content.len() as u64;
    let (head, tail_start) = sample_ranges(size);
    sample_of(
        key,
        size,
        &content[..head as usize],
        &content[tail_start as usize..],
    )
}

/// An entry's metadata fields set from `now`, content fields kept.
pub fn refreshed(entry: &FileEntry, now: &FileStat) -> FileEntry {
    FileEntry {
        stat: *now,
        ..entry.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat() -> FileStat {
        FileStat {
            size: 100,
            mtime: 10,
            mtime_nanos: 5,
            ctime: 20,
            ctime_nanos: 6,
            ino: 7,
            dev: 8,
        }
    }

    fn entry_for(s: &FileStat) -> FileEntry {
        FileEntry {
            stat: *s,
            hash: Id([1; 32]),
            sample: Id([2; 32]),
            blobs: vec![Id([3; 32])],
        }
    }

    #[test]
    fn verdicts() {
        let s = stat();
        let e = entry_for(&s);
        assert_eq!(classify(&e, &s), Verdict::Unchanged);
        let chmod = FileStat { ctime: 21, ..s };
        assert_eq!(classify(&e, &chmod), Verdict::MetadataOnly);
        let copied = FileStat {
            ino: 9,
            ctime: 22,
            ..s
        };
        assert_eq!(classify(&e, &copied), Verdict::VerifySample);
        let remounted = FileStat { dev: 1, ..s };
        assert_eq!(classify(&e, &remounted), Verdict::VerifySample);
        for changed in [
            FileStat { size: 101, ..s },
            FileStat { mtime: 11, ..s },
            FileStat {
                mtime_nanos: 6,
                ..s
            },
            FileStat {
                size: 99,
                ino: 9,
                ..s
            },
        ] {
            assert_eq!(classify(&e, &changed), Verdict::Changed);
        }
        assert_eq!(refreshed(&e, &copied).stat.ino, 9);
        assert_eq!(refreshed(&e, &copied).blobs, e.blobs);
    }

    #[test]
    fn sample_covers_head_and_tail_only() {
        let key = SecretKey::generate();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut data = vec![7u8; 300 * 1024];
        std::fs::write(&p, &data).unwrap();
        let hash = |p: &std::path::Path| {
            let f = File::open(p).unwrap();
            sample_hash(&key, &f, f.metadata().unwrap().len()).unwrap()
        };
        let (h0, n) = hash(&p);
        assert_eq!(n, 2 * SAMPLE_LEN);
        data[150 * 1024] ^= 1; // the middle is not sampled
        std::fs::write(&p, &data).unwrap();
        assert_eq!(hash(&p).0, h0);
        data[10] ^= 1; // the head is
        std::fs::write(&p, &data).unwrap();
        assert_ne!(hash(&p).0, h0);
        data[10] ^= 1;
        let last = data.len() - 1;
        data[last] ^= 1; // and the tail
        std::fs::write(&p, &data).unwrap();
        assert_ne!(hash(&p).0, h0);
        for len in [0usize, 1, 70 * 1024, 128 * 1024] {
            std::fs::write(&p, vec![1u8; len]).unwrap();
            assert_eq!(hash(&p).1, len as u64, "short files are read once");
        }
        std::fs::write(&p, vec![1u8; 129 * 1024]).unwrap();
        assert_eq!(hash(&p).1, 2 * SAMPLE_LEN);
        // The in-memory form agrees with the file form at every boundary.
        for len in [
            0usize, 1, 65535, 65536, 65537, 131071, 131072, 131073, 300_000,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&p, &data).unwrap();
            assert_eq!(hash(&p).0, sample_hash_of(&key, &data), "length {len}");
        }
    }
}
