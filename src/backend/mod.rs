//! Storage backends: the async `Backend` trait every store implements (a local folder, an
//! S3-compatible bucket), the wrappers that stack on any backend (metering, retries, dry runs),
//! `open` which builds the stack from an address, and `Store`, the blocking facade the worker
//! threads use.

pub mod dryrun;
pub mod local;
pub mod meter;
pub mod open;
mod range;
pub mod retry;
pub mod s3;
pub mod spool;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;

pub use meter::{Counters, RequestStats};
pub use open::{open, BackendOptions, Location};
pub use range::RangeReader;

use crate::error::{Error, Result};
use crate::format::config::ObjectLock;
use crate::ids::Id;

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
    /// Forget records (§11.1): snapshots removed on purpose.
    Forgotten,
    /// Condemn markers (§13.2): packs a prune will delete after a grace period.
    Condemned,
    /// Second copies of the objects everything else depends on (§2.2): the config, snapshots
    /// and tree packs, each byte-identical to its first copy and under the same name.
    ConfigCopy,
    SnapshotCopy,
    TreePackCopy,
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
            FileType::Forgotten => "forgotten",
            FileType::Condemned => "condemned",
            FileType::ConfigCopy => "copies",
            FileType::SnapshotCopy => "copies/snapshots",
            FileType::TreePackCopy => "copies/trees",
        }
    }

    /// Where the second copy of an object of this kind is kept (§2.2), for the kinds that have
    /// one. Tree packs have one, data packs not: the caller knows which a pack is.
    pub fn copy(self) -> Option<FileType> {
        match self {
            FileType::Config => Some(FileType::ConfigCopy),
            FileType::Snapshot => Some(FileType::SnapshotCopy),
            FileType::Pack => Some(FileType::TreePackCopy),
            _ => None,
        }
    }

    /// The largest object of this kind a reader downloads (§12): anything larger is refused
    /// before it is read, so that an object planted in the store cannot make a client allocate
    /// what it likes. Writers stay far below: vault's key files are about 1 KiB, configs
    /// 200 bytes, index objects at most a few MiB (50,000 blobs), packs at most `pack_target`
    /// (1 GiB) plus one blob, the table and the padding.
    pub fn max_len(self) -> u64 {
        match self {
            FileType::Marker => 4 << 10,
            FileType::Config | FileType::ConfigCopy => 64 << 10,
            FileType::Key | FileType::Revoked => 1 << 20,
            FileType::Index => 64 << 20,
            FileType::Snapshot
            | FileType::SnapshotCopy
            | FileType::Forgotten
            | FileType::Condemned => 16 << 20,
            FileType::Pack | FileType::TreePackCopy => crate::format::pack::MAX_PACK_LEN,
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
            FileType::Forgotten => "forget record",
            FileType::Condemned => "condemn marker",
            FileType::ConfigCopy => "config copy",
            FileType::SnapshotCopy => "snapshot copy",
            FileType::TreePackCopy => "tree pack copy",
        }
    }
}

/// The error for an object larger than its kind allows: it is treated as damaged (a reader
/// skips a key file like that and goes on with the others).
pub fn too_large(t: FileType, name: &str, len: u64, max: u64) -> Error {
    Error::corrupt(
        format!("{} {}", t.name(), short_name(name)),
        format!(
            "it is {len} bytes, more than the {max} a {} can be",
            t.name()
        ),
    )
}

/// Path of an object relative to the repository root. Names of many-object kinds are 64 hex
/// digits (checked by callers); packs are spread over 256 subdirectories by their first byte.
pub fn object_path(t: FileType, name: &str) -> String {
    match t {
        FileType::Marker => "VAULT".into(),
        FileType::Config => "config".into(),
        FileType::ConfigCopy => "copies/config".into(),
        FileType::Pack | FileType::TreePackCopy => {
            format!("{}/{}/{}", t.dir(), name.get(..2).unwrap_or(name), name)
        }
        _ => format!("{}/{}", t.dir(), name),
    }
}

/// How an object is named in messages: its kind, then its short name when it has one
/// ("config", "snapshot 1a2b3c4d").
pub fn object_label(t: FileType, name: &str) -> String {
    if name.is_empty() {
        t.name().to_string()
    } else {
        format!("{} {}", t.name(), short_name(name))
    }
}

/// The first 8 characters of an object name (64 hex digits), as users are shown ids; a shorter
/// name whole.
pub fn short_name(name: &str) -> &str {
    name.get(..8).unwrap_or(name)
}

/// True for names the many-object kinds may have.
pub fn valid_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A ranged read as it arrives (see [`Backend::get_range_stream`]): pieces sent by a download
/// task, or a reader of a local file read on the caller's thread.
pub struct Chunks {
    source: ChunkSource,
    meter: Option<Arc<Counters>>,
}

enum ChunkSource {
    Channel {
        rx: tokio::sync::mpsc::Receiver<Result<Bytes>>,
        cur: Bytes,
    },
    Reader(Box<dyn io::Read + Send>),
}

impl Chunks {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Result<Bytes>>) -> Self {
        Chunks {
            source: ChunkSource::Channel {
                rx,
                cur: Bytes::new(),
            },
            meter: None,
        }
    }

    /// A reader read where it is used (a local file: no thread between it and its reader).
    pub fn from_reader(r: impl io::Read + Send + 'static) -> Self {
        Chunks {
            source: ChunkSource::Reader(Box::new(r)),
            meter: None,
        }
    }

    /// Count the bytes received into `meter` as they are taken.
    pub fn metered(mut self, meter: Arc<Counters>) -> Self {
        self.meter = Some(meter);
        self
    }
}

/// Blocking reads, from a thread outside the store's runtime (as every [`Store`] call is).
impl io::Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.source {
            ChunkSource::Reader(r) => r.read(out)?,
            ChunkSource::Channel { rx, cur } => {
                while cur.is_empty() {
                    match rx.blocking_recv() {
                        Some(Ok(b)) => *cur = b,
                        Some(Err(e)) => return Err(io::Error::other(e.to_string())),
                        None => return Ok(0),
                    }
                }
                let n = out.len().min(cur.len());
                out[..n].copy_from_slice(&cur[..n]);
                bytes::Buf::advance(cur, n);
                n
            }
        };
        if let Some(m) = &self.meter {
            m.received(n);
        }
        Ok(n)
    }
}

/// One object found by a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    /// When the store last wrote it, in Unix seconds by the store's clock (S3 `LastModified`, a
    /// file's mtime); 0 when unknown. Prune measures its grace periods with it (§13.2).
    pub modified: i64,
}

/// A place to keep repository objects. Objects are immutable: `put` never replaces different
/// content, and putting identical content again succeeds (so retries are harmless).
#[async_trait]
pub trait Backend: Send + Sync {
    /// Human-readable location (no credentials).
    fn location(&self) -> String;
    /// The meter of the store this backend serves: a backend that makes more than one request
    /// for one call counts the others there (the meter counts one per call).
    fn attach_meter(&self, meter: Arc<Counters>) {
        let _ = meter;
    }
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
    /// Store an object (create-only). `Bytes`: a network upload sends from the buffer, and a
    /// retry sends it again, without copying it.
    async fn put(&self, t: FileType, name: &str, data: Bytes) -> Result<()>;
    /// Whether packs bound for this store are better spooled to a local file than held in
    /// memory until stored (a network store: the upload waits its turn; a folder streams
    /// straight to its place with [`Backend::object_file`]).
    fn spools(&self) -> bool {
        false
    }
    /// `put` of an object spooled to a local file. By default read into memory and `put`.
    async fn put_spooled(&self, t: FileType, name: &str, data: spool::Spooled) -> Result<()> {
        let v = data
            .to_vec()
            .map_err(|e| Error::io("reading a pack from the upload spool", e))?;
        self.put(t, name, Bytes::from(v)).await
    }
    /// A whole object, refused (as damaged, [`too_large`]) when it is larger than `max`.
    async fn get(&self, t: FileType, name: &str, max: u64) -> Result<Vec<u8>>;
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
    /// A ranged read delivered in pieces as they arrive, so that a reader holds only what it
    /// has not used yet (§12.2). Errors of the request come back here; errors on the way come
    /// as the stream's last item. By default one [`Backend::get_range`].
    async fn get_range_stream(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Chunks> {
        let v = self.get_range(t, name, offset, len).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx.try_send(Ok(Bytes::from(v)));
        Ok(Chunks::new(rx))
    }
    /// Names and sizes of all objects of a kind.
    async fn list(&self, t: FileType) -> Result<Vec<Listed>>;
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
    Spool(spool::SpoolWriter),
}

/// A new object written piece by piece; it exists in the store only after `commit`, and
/// dropping the writer before that leaves nothing behind.
pub struct ObjectWriter {
    store: Store,
    t: FileType,
    name: String,
    len: u64,
    target: Target,
    /// The second copy (§2.2) of a tree pack, written alongside: its own file, or `None` when
    /// the object is collected in memory (the one buffer is stored twice).
    copy: Option<(FileType, Option<Box<dyn ObjectFile>>)>,
}

impl ObjectWriter {
    /// Store the object: its second copy first, so that no first copy is ever stored without
    /// one (a second copy alone is an orphan prune collects, §13.2).
    pub fn commit(self) -> Result<()> {
        match self.target {
            Target::Memory(data) => {
                self.store.check_len(self.t, data.len() as u64)?;
                let data = Bytes::from(data);
                if let Some((ct, _)) = self.copy {
                    self.store.put_bytes(ct, &self.name, data.clone())?;
                }
                self.store.put_bytes(self.t, &self.name, data)
            }
            Target::File(f) => {
                if let Some((_, Some(c))) = self.copy {
                    c.commit()?;
                }
                f.commit()
            }
            Target::Spool(w) => {
                self.store.check_len(self.t, w.len())?;
                let data = w.finish();
                if let Some((ct, _)) = self.copy {
                    self.store.put_spooled(ct, &self.name, data.clone())?;
                }
                self.store.put_spooled(self.t, &self.name, data)
            }
        }
    }
}

impl io::Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.target {
            Target::Memory(v) => v.extend_from_slice(buf),
            Target::File(f) => f.write_all(buf).map_err(io::Error::other)?,
            Target::Spool(w) => w.write_all(buf).map_err(io::Error::other)?,
        }
        if let Some((_, Some(c))) = &mut self.copy {
            c.write_all(buf).map_err(io::Error::other)?;
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A backend stack plus the runtime that drives it, callable from plain threads.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    meter: Arc<Counters>,
    rt: Arc<tokio::runtime::Runtime>,
    /// Where packs for a store that [spools](Backend::spools) are written until stored; unset:
    /// they are held in memory.
    spool: Arc<OnceLock<PathBuf>>,
}

impl Store {
    /// A store over `backend`, every request metered.
    pub fn new(backend: Arc<dyn Backend>) -> Result<Store> {
        Store::layered(backend, None)
    }

    /// A store over `backend`, metered, with transient failures retried by `retry` (each
    /// attempt is counted: the meter sits below the retries).
    pub fn layered(backend: Arc<dyn Backend>, retry: Option<retry::RetryPolicy>) -> Result<Store> {
        let meter = Arc::new(Counters::default());
        let mut b: Arc<dyn Backend> = Arc::new(meter::Metered::new(backend, meter.clone()));
        if let Some(policy) = retry {
            b = Arc::new(retry::Retry::new(b, policy, meter.clone()));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("vault-io")
            .build()
            .map_err(|e| Error::io("starting the I/O runtime", e))?;
        Ok(Store {
            backend: b,
            meter,
            rt: Arc::new(rt),
            spool: Arc::new(OnceLock::new()),
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
        self.meter.snapshot()
    }

    pub fn create(&self) -> Result<()> {
        self.rt.block_on(self.backend.create())
    }
    pub fn put(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.put_owned(t, name, data.to_vec())
    }
    /// `put` of a buffer the store may keep (a network upload sends from it without a copy).
    pub fn put_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> Result<()> {
        self.check_len(t, data.len() as u64)?;
        self.put_bytes(t, name, Bytes::from(data))
    }
    /// Spool the packs of a network store under `dir` (the local index's folder: on disk, the
    /// user's own) rather than in memory. The first folder set stays.
    pub fn set_spool_dir(&self, dir: PathBuf) {
        let _ = self.spool.set(dir);
    }
    fn put_spooled(&self, t: FileType, name: &str, data: spool::Spooled) -> Result<()> {
        self.rt.block_on(self.backend.put_spooled(t, name, data))
    }
    fn put_bytes(&self, t: FileType, name: &str, data: Bytes) -> Result<()> {
        self.check_len(t, data.len() as u64)?;
        self.rt.block_on(self.backend.put(t, name, data))
    }
    /// A writer never stores what its readers refuse (§12).
    fn check_len(&self, t: FileType, len: u64) -> Result<()> {
        if len > t.max_len() {
            return Err(Error::Invalid(format!(
                "the {} would be {} bytes, more than the {} readers accept",
                t.name(),
                len,
                t.max_len()
            )));
        }
        Ok(())
    }
    /// A whole object, at most [`FileType::max_len`] bytes.
    pub fn get(&self, t: FileType, name: &str) -> Result<Vec<u8>> {
        self.rt.block_on(self.backend.get(t, name, t.max_len()))
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
    /// [`Backend::get_range_stream`]: the request made (and retried) here, the pieces taken
    /// with [`Chunks::next_blocking`].
    pub fn get_range_stream(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Chunks> {
        self.rt
            .block_on(self.backend.get_range_stream(t, name, offset, len))
    }
    /// The objects of a many-object kind, by id, with their sizes. Names are typed here, where
    /// they enter from the store: one that is not 64 lowercase hex digits (nothing vault wrote)
    /// is passed over.
    pub fn list(&self, t: FileType) -> Result<Vec<(Id, u64)>> {
        Ok(self
            .list_dated(t)?
            .into_iter()
            .map(|(id, size, _)| (id, size))
            .collect())
    }
    /// [`Self::list`] with each object's modification time by the store's clock (see [`Listed`]).
    pub fn list_dated(&self, t: FileType) -> Result<Vec<(Id, u64, i64)>> {
        let listed = self.rt.block_on(self.backend.list(t))?;
        Ok(listed
            .into_iter()
            .filter(|l| valid_name(&l.name))
            .filter_map(|l| l.name.parse().ok().map(|id| (id, l.size, l.modified)))
            .collect())
    }
    /// Start a new object of about `size` bytes, to be written in pieces and then committed.
    pub fn writer(&self, t: FileType, name: &str, size: u64) -> Result<ObjectWriter> {
        let spool = match self.spool.get() {
            Some(dir) if t == FileType::Pack && self.backend.spools() => {
                // A spool that cannot be made (a full or read-only disk) costs memory, not the
                // backup.
                spool::SpoolWriter::create(dir).ok()
            }
            _ => None,
        };
        let target = match (self.backend.object_file(t, name, size)?, spool) {
            (Some(f), _) => Target::File(f),
            (None, Some(w)) => Target::Spool(w),
            // Reserved whole: pages are committed only as they are written, while growing by
            // doubling would leave up to twice the object allocated.
            (None, None) => Target::Memory(Vec::with_capacity(size as usize + (1 << 20))),
        };
        Ok(ObjectWriter {
            store: self.clone(),
            t,
            name: name.to_string(),
            len: 0,
            target,
            copy: None,
        })
    }
    /// [`Self::writer`] for an object stored twice (§2.2): the same bytes also go to `copy`
    /// under the same name.
    pub fn writer_with_copy(
        &self,
        t: FileType,
        copy: FileType,
        name: &str,
        size: u64,
    ) -> Result<ObjectWriter> {
        let mut w = self.writer(t, name, size)?;
        let file = match w.target {
            Target::File(_) => {
                Some(self.backend.object_file(copy, name, size)?.ok_or_else(|| {
                    Error::Invalid("a store that streams one object must stream its copy".into())
                })?)
            }
            Target::Memory(_) | Target::Spool(_) => None,
        };
        w.copy = Some((copy, file));
        Ok(w)
    }
    pub fn stat(&self, t: FileType, name: &str) -> Result<Option<u64>> {
        self.rt.block_on(self.backend.stat(t, name))
    }
    pub fn delete(&self, t: FileType, name: &str) -> Result<()> {
        self.rt.block_on(self.backend.delete(t, name))
    }
}
