//! Sequential and random reads of one stored object through ranged requests, with a read-ahead
//! window that grows while reads stay sequential.

use std::io::{self, Read, Seek, SeekFrom};

use super::{FileType, Store};
use crate::error::Error;

/// `Read + Seek` over ranged reads of one stored object, fetching `window` bytes at a time, so
/// the age stream reader can decrypt just the chunks a blob needs.
pub struct RangeReader {
    store: Store,
    t: FileType,
    name: String,
    size: u64,
    pos: u64,
    window: u64,
    max_window: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl RangeReader {
    pub fn new(store: Store, t: FileType, name: String, size: u64, window: u64) -> Self {
        let max_window = store.backend.max_read_window().max(64 * 1024);
        RangeReader {
            store,
            t,
            name,
            size,
            pos: 0,
            window: window.max(64 * 1024),
            max_window,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// Starts with the object's first bytes, already fetched by the caller: no second request.
    pub fn with_head(mut self, head: Vec<u8>) -> Self {
        self.buf = head;
        self.buf_start = 0;
        self
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let in_buf =
            self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !in_buf {
            // Sequential reading (a whole file, check) doubles the read-ahead, so one pack costs a
            // few requests; a random read (one photo) fetches only a small window.
            if !self.buf.is_empty() && self.pos == self.buf_start + self.buf.len() as u64 {
                self.window = (self.window * 2).min(self.max_window);
            }
            let len = self.window.max(out.len() as u64).min(self.size - self.pos);
            self.store
                .get_range_into(self.t, &self.name, self.pos, len, &mut self.buf)
                .map_err(|e| match e {
                    Error::Storage { cause, .. } => cause,
                    other => io::Error::other(other.to_string()),
                })?;
            self.buf_start = self.pos;
            if self.buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "object shorter than recorded",
                ));
            }
        }
        let off = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - off);
        out[..n].copy_from_slice(&self.buf[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.size as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if new < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}
