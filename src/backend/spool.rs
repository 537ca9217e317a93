//! Packs bound for a network store, written to a nameless temporary file instead of memory
//! (design.md §2.1): a backup holds a few open packs and a few uploads at once, and keeping
//! each in memory made an S3 backup four times the size of a folder backup. The file holds
//! only ciphertext (the pack as stored), is unlinked from the start (nothing is left behind
//! when the process is killed), and is read back piece by piece for the upload and for every
//! retry of it. Its MD5, which S3 needs before the first byte is sent, is taken as it is
//! written, so the bytes are hashed once, as they were in memory.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};

use crate::error::{Error, Result};

/// An object being written to its spool file.
pub struct SpoolWriter {
    file: File,
    md5: Md5,
    len: u64,
}

impl SpoolWriter {
    /// A new nameless file in `dir` (created, owner only, when missing).
    pub fn create(dir: &Path) -> io::Result<SpoolWriter> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(SpoolWriter {
            file: tempfile::tempfile_in(dir)?,
            md5: Md5::new(),
            len: 0,
        })
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(|e| Error::io("writing a pack to the upload spool", e))?;
        self.md5.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The object as written, ready to be sent (and sent again).
    pub fn finish(self) -> Spooled {
        let len = self.len;
        Spooled {
            inner: Arc::new(Inner {
                file: self.file,
                md5: self.md5.finalize().into(),
                len,
            }),
            start: 0,
            end: len,
        }
    }
}

struct Inner {
    file: File,
    md5: [u8; 16],
    len: u64,
}

/// A spooled object, or a part of one (a multipart upload's part): cheap to clone, read by
/// position so that any number of attempts can read it at once.
#[derive(Clone)]
pub struct Spooled {
    inner: Arc<Inner>,
    start: u64,
    end: u64,
}

impl Spooled {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Bytes `start..end` of this view.
    pub fn slice(&self, start: u64, end: u64) -> Spooled {
        let end = end.min(self.len());
        Spooled {
            inner: self.inner.clone(),
            start: self.start + start.min(end),
            end: self.start + end,
        }
    }

    /// Up to `max` bytes from `pos` of this view (fewer only at its end).
    pub fn piece(&self, pos: u64, max: usize) -> io::Result<Bytes> {
        let n = (self.len().saturating_sub(pos)).min(max as u64) as usize;
        let mut buf = BytesMut::zeroed(n);
        read_exact_at(&self.inner.file, &mut buf, self.start + pos)?;
        Ok(buf.freeze())
    }

    /// The MD5 of this view: taken while writing for the whole object, read again for a part.
    pub fn md5(&self) -> io::Result<[u8; 16]> {
        if self.start == 0 && self.end == self.inner.len {
            return Ok(self.inner.md5);
        }
        let mut h = Md5::new();
        let mut pos = 0;
        while pos < self.len() {
            let p = self.piece(pos, 1 << 20)?;
            h.update(&p);
            pos += p.len() as u64;
        }
        Ok(h.finalize().into())
    }

    /// Whether this view holds exactly `other`.
    pub fn equals(&self, other: &[u8]) -> io::Result<bool> {
        if other.len() as u64 != self.len() {
            return Ok(false);
        }
        let mut pos = 0;
        while pos < self.len() {
            let p = self.piece(pos, 1 << 20)?;
            if p[..] != other[pos as usize..pos as usize + p.len()] {
                return Ok(false);
            }
            pos += p.len() as u64;
        }
        Ok(true)
    }

    /// The whole view in memory, for a backend that cannot send from a file.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        Ok(self.piece(0, self.len() as usize)?.to_vec())
    }
}

#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, at)
}

#[cfg(windows)]
fn read_exact_at(f: &File, mut buf: &mut [u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(f, buf, at) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spooled_object_reads_back_as_written_whole_and_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = SpoolWriter::create(&dir.path().join("spool")).unwrap();
        for c in data.chunks(4096 + 17) {
            w.write_all(c).unwrap();
        }
        let s = w.finish();
        // Nameless: nothing in the folder, even while the object is held.
        assert_eq!(
            std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
            0
        );
        assert_eq!(s.len(), data.len() as u64);
        assert_eq!(s.to_vec().unwrap(), data);
        assert_eq!(s.md5().unwrap(), <[u8; 16]>::from(Md5::digest(&data)));
        let part = s.slice(100_000, 200_000);
        assert_eq!(part.to_vec().unwrap(), &data[100_000..200_000]);
        assert_eq!(
            part.md5().unwrap(),
            <[u8; 16]>::from(Md5::digest(&data[100_000..200_000]))
        );
        assert_eq!(part.piece(99_990, 64).unwrap().len(), 10);
        assert!(s.equals(&data).unwrap());
        let mut other = data.clone();
        other[299_999] ^= 1;
        assert!(!s.equals(&other).unwrap());
        assert!(!s.equals(&data[1..]).unwrap());
    }
}
