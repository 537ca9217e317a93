//! Storage backends: the async `Backend` trait every store implements (local folder now, S3
//! next), and `Store`, the blocking facade the worker threads use.

pub mod local;
pub mod s3;

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::config::ObjectLock;

/// The kinds of object a repository holds; each maps to a fixed place in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// `VAULT`: plaintext marker with the format version.
    Marker,
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    /// Headers of removed key files: recognise a removed method without it unlocking anything.
    Revoked,
}

impl FileType {
    /// Directory of the many-object kinds.
    pub fn dir(self) -> &'static str {
        match self {
            FileType::Marker | FileType::Config => "",
            FileType::Key => "keys",
            FileType::Pack => "data",
            FileType::Index => "index",
            FileType::Snapshot => "snapshots",
            FileType::Revoked => "revoked",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FileType::Marker => "marker",
            FileType::Config => "config",
            FileType::Key => "key file",
            FileType::Pack => "pack",
            FileType::Index => "index",
            FileType::Snapshot => "snapshot",
            FileType::Revoked => "removed key",
        }
    }
}

/// Path of an object relative to the repository root. Names of many-object kinds are 64 hex
/// digits (checked by callers); packs are spread over 256 subdirectories by their first byte.
pub fn object_path(t: FileType, name: &str) -> String {
    match t {
        FileType::Marker => "VAULT".into(),
        FileType::Config => "config".into(),
        FileType::Pack => format!("data/{}/{}", &name[..2.min(name.len())], name),
        _ => format!("{}/{}", t.dir(), name),
    }
}

/// True for names the many-object kinds may have.
pub fn valid_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Requests made to the store (every attempt, retries included) and bytes moved.
#[derive(Default)]
pub struct Counters {
    pub put: AtomicU64,
    pub get: AtomicU64,
    pub list: AtomicU64,
    pub head: AtomicU64,
    pub delete: AtomicU64,
    pub retries: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

impl Counters {
    pub fn count(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub fn received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> RequestStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestStats {
            put: l(&self.put),
            get: l(&self.get),
            list: l(&self.list),
            head: l(&self.head),
            delete: l(&self.delete),
            retries: l(&self.retries),
            bytes_sent: l(&self.bytes_sent),
            bytes_received: l(&self.bytes_received),
        }
    }
}

/// A copy of [`Counters`] for reports.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RequestStats {
    pub put: u64,
    pub get: u64,
    pub list: u64,
    pub head: u64,
    pub delete: u64,
    /// Attempts that failed and were retried (included in the counts above).
    pub retries: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// A place to keep repository objects. Objects are immutable: `put` never replaces different
/// content, and putting identical content again succeeds (so retries are harmless).
#[async_trait]
pub trait Backend: Send + Sync {
    /// Human-readable location (no credentials).
    fn location(&self) -> String;
    /// Request counters of this backend.
    fn counters(&self) -> &Counters;
    /// Write every later object with this retention. Backends without Object Lock refuse.
    fn set_object_lock(&self, lock: Option<ObjectLock>) -> Result<()> {
        match lock {
            None => Ok(()),
            Some(_) => Err(Error::Invalid(
                "Object Lock needs an S3 repository (s3://bucket/prefix)".into(),
            )),
        }
    }
    /// Prepare the store for a new repository (create the folder or bucket; check that the
    /// bucket can hold it). The caller checks that no repository exists there yet.
    async fn create(&self) -> Result<()>;
    async fn put(&self, t: FileType, name: &str, data: &[u8]) -> Result<()>;
    /// `put` of a buffer the backend may keep (a network upload sends from it without a copy).
    async fn put_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> Result<()> {
        self.put(t, name, &data).await
    }
    async fn get(&self, t: FileType, name: &str) -> Result<Vec<u8>>;
    async fn get_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// `get_range` into `buf` (replacing its contents), reusing its allocation where the
    /// backend can.
    async fn get_range_into(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        *buf = self.get_range(t, name, offset, len).await?;
        Ok(())
    }
    /// Names and sizes of all objects of a kind.
    async fn list(&self, t: FileType) -> Result<Vec<(String, u64)>>;
    /// Largest read-ahead window worth holding in memory for sequential reads: large for
    /// services that charge and wait per request, small where a read is a system call.
    fn max_read_window(&self) -> u64 {
        16 << 20
    }
    /// A file to stream a new object into, for backends that can keep it out of memory (a
    /// local folder writes it to a temporary file next to its place). `None`: collect it in
    /// memory and `put` it. `size` is the expected length.
    fn object_file(
        &self,
        t: FileType,
        name: &str,
        size: u64,
    ) -> Result<Option<Box<dyn ObjectFile>>> {
        let _ = (t, name, size);
        Ok(None)
    }
    /// Size of an object, or `None` when it does not exist.
    async fn stat(&self, t: FileType, name: &str) -> Result<Option<u64>>;
    async fn delete(&self, t: FileType, name: &str) -> Result<()>;
}

/// A new object being written to its backend's own temporary place.
pub trait ObjectFile: Send {
    fn write_all(&mut self, data: &[u8]) -> Result<()>;
    /// Make the object durable under its name (create-only, like `put`).
    fn commit(self: Box<Self>) -> Result<()>;
}

enum Target {
    Memory(Vec<u8>),
    File(Box<dyn ObjectFile>),
}

/// A new object written piece by piece; it exists in the store only after `commit`, and
/// dropping the writer before that leaves nothing behind.
pub struct ObjectWriter {
    store: Store,
    t: FileType,
    name: String,
    len: u64,
    target: Target,
}

impl ObjectWriter {
    /// Store the object.
    pub fn commit(self) -> Result<()> {
        match self.target {
            Target::Memory(data) => self.store.put_owned(self.t, &self.name, data),
            Target::File(f) => {
                let c = self.store.backend.counters();
                c.count(&c.put);
                c.sent(self.len as usize);
                f.commit()
            }
        }
    }
}

impl io::Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.target {
            Target::Memory(v) => v.extend_from_slice(buf),
            Target::File(f) => f.write_all(buf).map_err(io::Error::other)?,
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A backend plus the runtime that drives it, callable from plain threads.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Result<Store> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("vault-io")
            .build()
            .map_err(|e| Error::io("starting the I/O runtime", e))?;
        Ok(Store {
            backend,
            rt: Arc::new(rt),
        })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn runtime(&self) -> &Arc<tokio::runtime::Runtime> {
        &self.rt
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }
    pub fn stats(&self) -> RequestStats {
        self.backend.counters().snapshot()
    }

    pub fn create(&self) -> Result<()> {
        self.rt.block_on(self.backend.create())
    }
    pub fn put(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.rt.block_on(self.backend.put(t, name, data))
    }
    pub fn put_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> Result<()> {
        self.rt.block_on(self.backend.put_owned(t, name, data))
    }
    pub fn get(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        self.rt.block_on(self.backend.get(t, name))
    }
    pub fn get_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.rt
            .block_on(self.backend.get_range(t, name, offset, len))
    }
    pub fn get_range_into(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.rt
            .block_on(self.backend.get_range_into(t, name, offset, len, buf))
    }
    pub fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
        self.rt.block_on(self.backend.list(t))
    }
    /// Start a new object of about `size` bytes, to be written in pieces and then committed.
    pub fn writer(&self, t: FileType, name: &str, size: u64) -> Result<ObjectWriter> {
        let target = match self.backend.object_file(t, name, size)? {
            Some(f) => Target::File(f),
            // Reserved whole: pages are committed only as they are written, while growing by
            // doubling would leave up to twice the object allocated.
            None => Target::Memory(Vec::with_capacity(size as usize + (1 << 20))),
        };
        Ok(ObjectWriter {
            store: self.clone(),
            t,
            name: name.to_string(),
            len: 0,
            target,
        })
    }
    pub fn stat(&self, t: FileType, name: &str) -> Result<Option<u64>> {
        self.rt.block_on(self.backend.stat(t, name))
    }
    pub fn delete(&self, t: FileType, name: &str) -> Result<()> {
        self.rt.block_on(self.backend.delete(t, name))
    }
}

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
