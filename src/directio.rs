//! Writing large files past the page cache (Linux `O_DIRECT`), with a plain-write fallback.
//!
//! Restored files and packs are written once and not read again soon. Through the page cache
//! every byte is copied into freshly allocated cache pages and written back later; on small
//! virtual machines that copy is the largest single cost of a restore, and it evicts the files
//! the user is working with. Direct I/O hands aligned blocks to the disk instead. Filesystems that
//! refuse it (tmpfs, some FUSE and network mounts) get ordinary writes.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use crate::pipe::Pipe;

/// Memory and length alignment of direct writes (the largest logical block size in use).
pub const ALIGN: usize = 4096;

/// Files smaller than this are written the ordinary way.
pub const MIN_DIRECT: u64 = 1 << 20;

/// Staging size: direct writes go out in blocks of this many bytes.
const STAGE: usize = 1 << 20;

#[cfg(target_os = "linux")]
fn set_direct(f: &File, on: bool) -> io::Result<()> {
    use rustix::fs::OFlags;
    let flags = rustix::fs::fcntl_getfl(f)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(f, flags)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_: &File, on: bool) -> io::Result<()> {
    if on {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    } else {
        Ok(())
    }
}

/// The error a filesystem gives when it will not do a direct write (or not this one).
pub fn refused(e: &io::Error) -> bool {
    use rustix::io::Errno;
    crate::error::os_error_in(e, &[Errno::INVAL, Errno::OPNOTSUPP])
}

/// Write `data` to the start of the new, empty file `f`: directly when it is large, its buffer
/// `ALIGN`ed and the filesystem willing (the unaligned tail through the page cache), the
/// ordinary way otherwise. Packs are sealed into aligned buffers for this.
pub fn write_new_file(f: &mut File, data: &[u8]) -> io::Result<()> {
    let direct = data.len() as u64 >= MIN_DIRECT
        && data.as_ptr().align_offset(ALIGN) == 0
        && set_direct(f, true).is_ok();
    if !direct {
        return f.write_all(data);
    }
    let split = data.len() / ALIGN * ALIGN;
    match f.write_all(&data[..split]) {
        Ok(()) => {}
        // Refused part-way: the aligned part again through the cache, from the start.
        Err(e) if refused(&e) => {
            set_direct(f, false)?;
            f.write_all_at(&data[..split], 0)?;
            f.seek(SeekFrom::Start(split as u64))?;
        }
        Err(e) => return Err(e),
    }
    set_direct(f, false)?;
    f.write_all(&data[split..])
}

/// A reusable buffer whose usable part starts at an `ALIGN`ed address.
pub struct Staging {
    buf: Vec<u8>,
    start: usize,
    fill: usize,
}

impl Default for Staging {
    fn default() -> Self {
        let buf = vec![0u8; STAGE + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Staging {
            buf,
            start,
            fill: 0,
        }
    }
}

/// Sequential writer of one new file: direct I/O in aligned blocks when the file is large and
/// the filesystem allows it, ordinary writes otherwise. Call `finish` to write the rest.
pub struct FileWriter<'a> {
    file: File,
    direct: bool,
    /// Bytes written to the file so far.
    written: u64,
    stage: &'a mut Staging,
}

impl<'a> FileWriter<'a> {
    /// `size` is the expected length; small files are never written directly.
    pub fn new(file: File, size: u64, stage: &'a mut Staging) -> FileWriter<'a> {
        stage.fill = 0;
        let direct = size >= MIN_DIRECT && set_direct(&file, true).is_ok();
        FileWriter {
            file,
            direct,
            written: 0,
            stage,
        }
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        if !self.direct {
            return self.file.write_all(data);
        }
        while !data.is_empty() {
            let s = &mut *self.stage;
            let n = data.len().min(STAGE - s.fill);
            s.buf[s.start + s.fill..s.start + s.fill + n].copy_from_slice(&data[..n]);
            s.fill += n;
            data = &data[n..];
            if s.fill == STAGE {
                self.flush_stage(STAGE)?;
                if !self.direct {
                    return self.file.write_all(data);
                }
            }
        }
        Ok(())
    }

    /// Write the first `len` staged bytes, a multiple of `ALIGN`.
    fn flush_stage(&mut self, len: usize) -> io::Result<()> {
        let s = &mut *self.stage;
        match self.file.write_all(&s.buf[s.start..s.start + len]) {
            Ok(()) => {
                self.written += len as u64;
                s.buf.copy_within(s.start + len..s.start + s.fill, s.start);
                s.fill -= len;
                Ok(())
            }
            // Refused part-way (some filesystems decide per request): everything staged goes
            // through the cache from where the direct writes ended, and so does the rest.
            Err(e) if refused(&e) => {
                self.direct = false;
                set_direct(&self.file, false)?;
                self.file
                    .write_all_at(&s.buf[s.start..s.start + s.fill], self.written)?;
                self.written += s.fill as u64;
                self.file.seek(SeekFrom::Start(self.written))?;
                s.fill = 0;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Write what is staged and return the file, positioned at its end.
    pub fn finish(mut self) -> io::Result<File> {
        if self.direct && self.stage.fill > 0 {
            let aligned = self.stage.fill / ALIGN * ALIGN;
            if aligned > 0 {
                self.flush_stage(aligned)?;
            }
        }
        if self.direct {
            // The unaligned tail goes through the page cache.
            set_direct(&self.file, false)?;
            let s = &*self.stage;
            self.file.write_all(&s.buf[s.start..s.start + s.fill])?;
            self.stage.fill = 0;
        }
        Ok(self.file)
    }
}

/// Blocks one `BackgroundWriter` may have allocated: one being filled, the rest queued or being
/// written.
const BACKGROUND_BLOCKS: usize = 3;

/// Sequential writer of one new file whose writes happen on a thread of their own: the caller
/// fills aligned blocks and goes on computing while the disk takes the previous ones (a direct
/// write returns only when the disk has the data). Direct where the filesystem allows it.
pub struct BackgroundWriter {
    cur: Staging,
    /// None once the thread has been joined after a failure.
    pipe: Option<Pipe<Staging, File, io::Error>>,
}

impl BackgroundWriter {
    pub fn new(file: File) -> io::Result<BackgroundWriter> {
        let mut direct = set_direct(&file, true).is_ok();
        let mut written = 0u64;
        // Every block but the last is a whole `STAGE`, so only the last can be unaligned in
        // length.
        let write = move |file: &mut File, s: &mut Staging| -> io::Result<()> {
            let data = &s.buf[s.start..s.start + s.fill];
            if direct && !data.len().is_multiple_of(ALIGN) {
                direct = false;
                set_direct(file, false)?;
            }
            match file.write_all(data) {
                Ok(()) => {}
                Err(e) if direct && refused(&e) => {
                    direct = false;
                    set_direct(file, false)?;
                    file.write_all_at(data, written)?;
                    file.seek(SeekFrom::Start(written + data.len() as u64))?;
                }
                Err(e) => return Err(e),
            }
            written += data.len() as u64;
            s.fill = 0;
            Ok(())
        };
        // The block being filled here is one of BACKGROUND_BLOCKS.
        let pipe = Pipe::spawn("vault-write", BACKGROUND_BLOCKS - 1, vec![], file, write)?;
        Ok(BackgroundWriter {
            cur: Staging::default(),
            pipe: Some(pipe),
        })
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let s = &mut self.cur;
            let n = data.len().min(STAGE - s.fill);
            s.buf[s.start + s.fill..s.start + s.fill + n].copy_from_slice(&data[..n]);
            s.fill += n;
            data = &data[n..];
            if s.fill == STAGE {
                self.send()?;
            }
        }
        Ok(())
    }

    /// Hand the current block to the thread and take an empty one.
    fn send(&mut self) -> io::Result<()> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Err(stopped());
        };
        let Some(next) = pipe.empty(Staging::default) else {
            return Err(self.failure());
        };
        let full = std::mem::replace(&mut self.cur, next);
        if pipe.send(full) {
            Ok(())
        } else {
            Err(self.failure())
        }
    }

    /// Why the thread stopped: its own error ("No space left on device"), which the caller
    /// must see rather than the bare fact that the thread is gone.
    fn failure(&mut self) -> io::Error {
        match self.pipe.take().map(|p| p.join().0) {
            Some(Some(Err(e))) => e,
            _ => stopped(),
        }
    }

    /// Write the rest and return the file, positioned at its end.
    pub fn finish(mut self) -> io::Result<File> {
        let last = std::mem::replace(
            &mut self.cur,
            Staging {
                buf: Vec::new(),
                start: 0,
                fill: 0,
            },
        );
        let Some(pipe) = self.pipe.take() else {
            return Err(stopped());
        };
        let sent = last.fill == 0 || pipe.send(last);
        match pipe.join().0 {
            Some(Ok(file)) if sent => {
                set_direct(&file, false)?;
                Ok(file)
            }
            Some(Err(e)) => Err(e),
            _ => Err(stopped()),
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the writing thread stopped")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn writes_exactly_the_bytes_given_whatever_the_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let mut stage = Staging::default();
        for (i, size) in [
            0usize,
            10,
            4096,
            MIN_DIRECT as usize + 1,
            3 * STAGE + 12_345,
        ]
        .into_iter()
        .enumerate()
        {
            let data: Vec<u8> = (0..size).map(|j| (j * 7 + i) as u8).collect();
            let path = dir.path().join(format!("f{i}"));
            let f = File::create(&path).unwrap();
            let mut w = FileWriter::new(f, size as u64, &mut stage);
            for piece in data.chunks(300_001) {
                w.write_all(piece).unwrap();
            }
            w.finish().unwrap();
            let mut back = Vec::new();
            File::open(&path).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "size {size}");
            // The one-call form, from an aligned buffer, gives the same bytes.
            let mut aligned = vec![0u8; size + ALIGN];
            let at = aligned.as_ptr().align_offset(ALIGN).min(ALIGN);
            aligned[at..at + size].copy_from_slice(&data);
            let path = dir.path().join(format!("g{i}"));
            let mut f = File::create(&path).unwrap();
            write_new_file(&mut f, &aligned[at..at + size]).unwrap();
            let mut back = Vec::new();
            File::open(&path).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "one call, size {size}");
            // And written from another thread, block by block.
            let path = dir.path().join(format!("h{i}"));
            let mut w = BackgroundWriter::new(File::create(&path).unwrap()).unwrap();
            for piece in data.chunks(65_552) {
                w.write_all(piece).unwrap();
            }
            let f = w.finish().unwrap();
            assert_eq!(f.metadata().unwrap().len(), size as u64);
            let mut back = Vec::new();
            File::open(&path).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "background, size {size}");
        }
    }

    /// Regression (issue 21): a full disk showed as "the writing thread stopped".
    #[test]
    fn a_full_disk_is_reported_as_such() {
        let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let mut w = BackgroundWriter::new(f).unwrap();
        let block = vec![7u8; STAGE];
        let mut err = None;
        for _ in 0..16 {
            if let Err(e) = w.write_all(&block) {
                err = Some(e);
                break;
            }
        }
        let err = match err {
            Some(e) => e,
            None => w.finish().unwrap_err(),
        };
        assert_eq!(err.raw_os_error(), Some(28), "{err}");
    }
}
