//! A dry run: around any backend, reads go through and nothing is written or deleted; what
//! would have been is recorded, for commands' `--dry-run` to report.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::meter::Counters;
use super::{Backend, FileType, Listed, ObjectFile};
use crate::error::Result;
use crate::format::config::ObjectLock;

/// One change a dry run left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put { t: FileType, name: String, len: u64 },
    Delete { t: FileType, name: String },
}

/// Passes reads to its backend; records writes and deletes instead of making them.
pub struct DryRun {
    inner: Arc<dyn Backend>,
    changes: Arc<Mutex<Vec<Change>>>,
}

impl DryRun {
    /// Also returns the list the left-out changes go to.
    pub fn new(inner: Arc<dyn Backend>) -> (Self, Arc<Mutex<Vec<Change>>>) {
        let changes = Arc::new(Mutex::new(Vec::new()));
        (
            DryRun {
                inner,
                changes: changes.clone(),
            },
            changes,
        )
    }

    fn record(&self, c: Change) {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c);
    }
}

/// A streamed object that is never stored.
struct Discarded {
    len: u64,
    t: FileType,
    name: String,
    changes: Arc<Mutex<Vec<Change>>>,
}

impl ObjectFile for Discarded {
    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.len += data.len() as u64;
        Ok(())
    }
    fn commit(self: Box<Self>) -> Result<()> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Change::Put {
                t: self.t,
                name: self.name,
                len: self.len,
            });
        Ok(())
    }
}

#[async_trait]
impl Backend for DryRun {
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
        Ok(())
    }
    async fn put(&self, t: FileType, name: &str, data: Bytes) -> Result<()> {
        self.record(Change::Put {
            t,
            name: name.to_string(),
            len: data.len() as u64,
        });
        Ok(())
    }
    async fn get(&self, t: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
        self.inner.get(t, name, max).await
    }
    async fn get_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.get_range(t, name, offset, len).await
    }
    async fn get_range_into(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.inner.get_range_into(t, name, offset, len, buf).await
    }
    async fn get_range_stream(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<super::Chunks> {
        self.inner.get_range_stream(t, name, offset, len).await
    }
    async fn list(&self, t: FileType) -> Result<Vec<Listed>> {
        self.inner.list(t).await
    }
    fn object_file(
        &self,
        t: FileType,
        name: &str,
        _size: u64,
    ) -> Result<Option<Box<dyn ObjectFile>>> {
        Ok(Some(Box::new(Discarded {
            len: 0,
            t,
            name: name.to_string(),
            changes: self.changes.clone(),
        })))
    }
    async fn stat(&self, t: FileType, name: &str) -> Result<Option<u64>> {
        self.inner.stat(t, name).await
    }
    async fn delete(&self, t: FileType, name: &str) -> Result<()> {
        self.record(Change::Delete {
            t,
            name: name.to_string(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::backend::Store;

    #[test]
    fn a_dry_run_reads_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let real = Store::new(Arc::new(LocalBackend::new(dir.path()))).unwrap();
        real.create().unwrap();
        let name = "ab".repeat(32);
        real.put(FileType::Index, &name, b"kept").unwrap();
        let (dry, changes) = DryRun::new(Arc::new(LocalBackend::new(dir.path())));
        let dry = Store::new(Arc::new(dry)).unwrap();
        assert_eq!(dry.get(FileType::Index, &name).unwrap(), b"kept");
        dry.put(FileType::Snapshot, &name, b"new").unwrap();
        dry.delete(FileType::Index, &name).unwrap();
        assert_eq!(real.get(FileType::Index, &name).unwrap(), b"kept");
        assert!(real.stat(FileType::Snapshot, &name).unwrap().is_none());
        let c = changes.lock().unwrap().clone();
        assert_eq!(c.len(), 2);
        assert!(matches!(
            &c[1],
            Change::Delete {
                t: FileType::Index,
                ..
            }
        ));
    }
}
