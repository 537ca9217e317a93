//! Storage backends: the async `Backend` trait every store implements (local folder now, S3
//! next), and `Store`, the blocking facade the worker threads use.

pub mod local;

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};

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

/// A place to keep repository objects. Objects are immutable: `put` never replaces different
/// content, and putting identical content again succeeds (so retries are harmless).
#[async_trait]
pub trait Backend: Send + Sync {
    /// Human-readable location (no credentials).
    fn location(&self) -> String;
    /// Prepare an empty store (create the folder, check the bucket). Fails if a repository exists.
    async fn create(&self) -> Result<()>;
    async fn put(&self, t: FileType, name: &str, data: Vec<u8>) -> Result<()>;
    async fn get(&self, t: FileType, name: &str) -> Result<Vec<u8>>;
    async fn get_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Names and sizes of all objects of a kind.
    async fn list(&self, t: FileType) -> Result<Vec<(String, u64)>>;
    /// Size of an object, or `None` when it does not exist.
    async fn stat(&self, t: FileType, name: &str) -> Result<Option<u64>>;
    async fn delete(&self, t: FileType, name: &str) -> Result<()>;
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

    pub fn create(&self) -> Result<()> {
        self.rt.block_on(self.backend.create())
    }
    pub fn put(&self, t: FileType, name: &str, data: Vec<u8>) -> Result<()> {
        self.rt.block_on(self.backend.put(t, name, data))
    }
    pub fn get(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        self.rt.block_on(self.backend.get(t, name))
    }
    pub fn get_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.rt
            .block_on(self.backend.get_range(t, name, offset, len))
    }
    pub fn list(&self, t: FileType) -> Result<Vec<(String, u64)>> {
        self.rt.block_on(self.backend.list(t))
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
    buf: Vec<u8>,
    buf_start: u64,
}

impl RangeReader {
    pub fn new(store: Store, t: FileType, name: String, size: u64, window: u64) -> Self {
        RangeReader {
            store,
            t,
            name,
            size,
            pos: 0,
            window: window.max(64 * 1024),
            buf: Vec::new(),
            buf_start: 0,
        }
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
            let len = self.window.max(out.len() as u64).min(self.size - self.pos);
            self.buf = self
                .store
                .get_range(self.t, &self.name, self.pos, len)
                .map_err(|e| match e {
                    Error::Storage { source, .. } => source,
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
