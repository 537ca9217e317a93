//! Request metering: a wrapper that counts, around any backend, every call as the request it
//! makes and the bytes it moves. A backend that makes more than one request for a call (S3: a
//! listing page after the first, the parts of a multipart upload) counts the others itself
//! through the same meter (`Backend::attach_meter`), so that the figures are the requests the
//! service bills, retries included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use super::{Backend, Chunks, FileType, Listed, ObjectFile};
use crate::error::Result;
use crate::format::config::ObjectLock;

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
        if !std::ptr::eq(c, &self.retries) {
            crate::testhook::before_request();
        }
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

/// Counts the requests its backend is asked for (each attempt, when a retry wrapper sits above it).
pub struct Metered {
    inner: Arc<dyn Backend>,
    meter: Arc<Counters>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Backend>, meter: Arc<Counters>) -> Self {
        inner.attach_meter(meter.clone());
        Metered { inner, meter }
    }
}

#[async_trait]
impl Backend for Metered {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn set_object_lock(&self, lock: Option<ObjectLock>) -> Result<()> {
        self.inner.set_object_lock(lock)
    }
    fn attach_meter(&self, meter: Arc<Counters>) {
        self.inner.attach_meter(meter)
    }
    fn max_read_window(&self) -> u64 {
        self.inner.max_read_window()
    }
    async fn create(&self) -> Result<()> {
        // Several requests whose kinds only the backend knows: it counts them.
        self.inner.create().await
    }
    async fn put(&self, t: FileType, name: &str, data: Bytes) -> Result<()> {
        self.meter.count(&self.meter.put);
        let n = data.len();
        self.inner.put(t, name, data).await?;
        self.meter.sent(n);
        Ok(())
    }
    async fn get(&self, t: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
        self.meter.count(&self.meter.get);
        let v = self.inner.get(t, name, max).await?;
        self.meter.received(v.len());
        Ok(v)
    }
    async fn get_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.meter.count(&self.meter.get);
        let v = self.inner.get_range(t, name, offset, len).await?;
        self.meter.received(v.len());
        Ok(v)
    }
    async fn get_range_into(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.meter.count(&self.meter.get);
        self.inner.get_range_into(t, name, offset, len, buf).await?;
        self.meter.received(buf.len());
        Ok(())
    }
    async fn get_range_stream(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Chunks> {
        self.meter.count(&self.meter.get);
        let c = self.inner.get_range_stream(t, name, offset, len).await?;
        Ok(c.metered(self.meter.clone()))
    }
    async fn list(&self, t: FileType) -> Result<Vec<Listed>> {
        self.meter.count(&self.meter.list);
        self.inner.list(t).await
    }
    fn spools(&self) -> bool {
        self.inner.spools()
    }
    async fn put_spooled(
        &self,
        t: FileType,
        name: &str,
        data: super::spool::Spooled,
    ) -> Result<()> {
        self.meter.count(&self.meter.put);
        let n = data.len() as usize;
        self.inner.put_spooled(t, name, data).await?;
        self.meter.sent(n);
        Ok(())
    }
    fn object_file(
        &self,
        t: FileType,
        name: &str,
        size: u64,
    ) -> Result<Option<Box<dyn ObjectFile>>> {
        Ok(self
            .inner
            .object_file(t, name, size)?
            .map(|f| -> Box<dyn ObjectFile> {
                Box::new(MeteredFile {
                    inner: f,
                    meter: self.meter.clone(),
                    len: 0,
                })
            }))
    }
    async fn stat(&self, t: FileType, name: &str) -> Result<Option<u64>> {
        self.meter.count(&self.meter.head);
        self.inner.stat(t, name).await
    }
    async fn delete(&self, t: FileType, name: &str) -> Result<()> {
        self.meter.count(&self.meter.delete);
        self.inner.delete(t, name).await
    }
}

/// An object streamed to its place counts as one upload of its size when committed.
struct MeteredFile {
    inner: Box<dyn ObjectFile>,
    meter: Arc<Counters>,
    len: usize,
}

impl ObjectFile for MeteredFile {
    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.len += data.len();
        self.inner.write_all(data)
    }
    fn commit(self: Box<Self>) -> Result<()> {
        self.meter.count(&self.meter.put);
        self.meter.sent(self.len);
        self.inner.commit()
    }
}
