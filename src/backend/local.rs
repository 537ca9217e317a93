//! Local-folder backend (a directory, an external drive): write to a temporary file, fsync,
//! link into place without replacing, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{object_path, valid_name, Backend, Chunks, FileType, Listed};
use crate::error::{Error, Result};

pub struct LocalBackend {
    root: PathBuf,
    /// Abandoned temporary files were looked for (once per process and repository).
    swept: std::sync::Once,
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: root.into(),
            swept: std::sync::Once::new(),
        }
    }

    fn path(&self, t: FileType, name: &str) -> PathBuf {
        self.root.join(object_path(t, name))
    }
}

fn mkdir_private(p: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

fn sync_dir(p: &Path) -> io::Result<()> {
    File::open(p)?.sync_all()
}

fn storage(what: &str, path: &Path, e: io::Error) -> Error {
    Error::storage(format!("{what} {}", path.display()), e)
}

/// Write `data` to the new file `tmp` (direct I/O where it applies, see `directio`) and fsync it.
fn write_new(tmp: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    crate::directio::write_new_file(&mut f, data)?;
    f.sync_all()
}

/// A fresh temporary name in the repository's `tmp` folder (created when missing).
fn tmp_path(root: &Path) -> Result<PathBuf> {
    let tmp_dir = root.join("tmp");
    mkdir_private(&tmp_dir).map_err(|e| storage("creating folder", &tmp_dir, e))?;
    Ok(tmp_dir.join(format!(".tmp-{}", crate::ids::Id::random().short())))
}

fn put_blocking(root: &Path, path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_path(root)?;
    if let Err(e) = write_new(&tmp, data) {
        let _ = fs::remove_file(&tmp);
        return Err(storage("writing", &tmp, e));
    }
    place(root, &tmp, path, Some(data))
}

/// Link the written and synced `tmp` into place at `path`, never replacing an object unless
/// it holds `same`, the content being put (a retried put), and remove `tmp`.
fn place(root: &Path, tmp: &Path, path: &Path, same: Option<&[u8]>) -> Result<()> {
    let dir = path.parent().unwrap_or(root);
    if let Err(e) = mkdir_private(dir) {
        let _ = fs::remove_file(tmp);
        return Err(storage("creating folder", dir, e));
    }
    // hard_link fails when the name exists, which gives create-only semantics atomically.
    let placed = match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => same_content(path, same),
        // Filesystems without hard links (exFAT, some network mounts): check, then rename.
        Err(_) if !path.exists() => fs::rename(tmp, path).map_err(|e| storage("placing", path, e)),
        Err(_) => same_content(path, same),
    };
    let _ = fs::remove_file(tmp);
    placed?;
    sync_dir(dir).map_err(|e| storage("syncing folder", dir, e))
}

/// Temporary files untouched for this long may be abandoned (a killed backup); one that no
/// process holds locked is then removed.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Remove the temporary files of writers that were killed (a pack being filled stays in `tmp/`
/// for as long as the backup runs, and only a clean exit removes it). Files another backup is
/// still writing are locked by it and stay. Returns how many were removed.
fn sweep_tmp(root: &Path) -> usize {
    let Ok(rd) = fs::read_dir(root.join("tmp")) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let path = e.path();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= ABANDONED_AFTER);
        let ours = e.file_name().to_string_lossy().starts_with(".tmp-");
        if !(old && ours) {
            continue;
        }
        let Ok(f) = File::open(&path) else { continue };
        if lock(&f).is_ok() && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Take the exclusive advisory lock of a file without waiting; it lasts while the file is open.
fn lock(f: &File) -> io::Result<()> {
    rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
    Ok(())
}

/// A new object streamed to a temporary file by a writing thread (direct I/O where the
/// filesystem allows it), then synced and linked into place. Removed unless committed.
struct LocalObjectFile {
    root: PathBuf,
    tmp: PathBuf,
    path: PathBuf,
    writer: Option<crate::directio::BackgroundWriter>,
}

impl super::ObjectFile for LocalObjectFile {
    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        match self.writer.as_mut() {
            Some(w) => w
                .write_all(data)
                .map_err(|e| storage("writing", &self.tmp, e)),
            None => Err(storage(
                "writing",
                &self.tmp,
                io::Error::other("already closed"),
            )),
        }
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        let w = self
            .writer
            .take()
            .ok_or_else(|| storage("writing", &self.tmp, io::Error::other("already closed")))?;
        let file = w.finish().map_err(|e| storage("writing", &self.tmp, e))?;
        file.sync_all()
            .map_err(|e| storage("syncing", &self.tmp, e))?;
        drop(file);
        // Objects streamed here have random names: an existing one is never this content, and
        // this content is not held anywhere to compare.
        place(&self.root, &self.tmp, &self.path, None)
    }
}

impl Drop for LocalObjectFile {
    fn drop(&mut self) {
        // Also after a failed commit (a full disk while finishing or syncing); after a
        // successful one the temporary name is gone already.
        drop(self.writer.take());
        let _ = fs::remove_file(&self.tmp);
    }
}

fn same_content(path: &Path, same: Option<&[u8]>) -> Result<()> {
    let Some(data) = same else {
        return Err(refused(path));
    };
    let len = fs::metadata(path)
        .map_err(|e| storage("reading", path, e))?
        .len();
    // A different length settles it without reading the object.
    if len == data.len() as u64 && fs::read(path).map_err(|e| storage("reading", path, e))? == data
    {
        Ok(())
    } else {
        Err(refused(path))
    }
}

fn refused(path: &Path) -> Error {
    storage(
        "refusing to replace",
        path,
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a different object has this name",
        ),
    )
}

fn list_dir(dir: &Path, out: &mut Vec<Listed>) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(storage("listing", dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| storage("listing", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !valid_name(name) {
            continue;
        }
        let meta = entry.metadata().map_err(|e| storage("listing", dir, e))?;
        out.push(Listed {
            name: name.to_string(),
            size: meta.len(),
            modified: meta.mtime(),
        });
    }
    Ok(())
}

fn not_found(t: FileType, name: &str) -> Error {
    Error::NotFound(super::object_label(t, name))
}

#[async_trait]
impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn create(&self) -> Result<()> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            // Never scatter repository folders into a folder of photos given by mistake.
            if let Ok(rd) = fs::read_dir(&root) {
                let ours = [
                    "keys",
                    "data",
                    "index",
                    "snapshots",
                    "tmp",
                    "config",
                    "VAULT",
                ];
                let foreign = rd
                    .flatten()
                    .any(|e| !ours.contains(&e.file_name().to_string_lossy().as_ref()));
                if foreign {
                    return Err(Error::Invalid(format!(
                        "{} is not empty; a new repository needs an empty or new folder",
                        root.display()
                    )));
                }
            }
            for d in ["", "keys", "data", "index", "snapshots", "tmp"] {
                let p = root.join(d);
                mkdir_private(&p).map_err(|e| storage("creating folder", &p, e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::io("background task", io::Error::other(e)))?
    }

    async fn put(&self, t: FileType, name: &str, data: Bytes) -> Result<()> {
        // Stores are driven by `block_on` from plain threads (never from runtime workers), so
        // the blocking file I/O runs on the caller's thread: no hand-off, no copy of `data`.
        // Any run that writes (a no-change backup writes only its snapshot) clears what killed
        // writers left in `tmp/`.
        self.swept.call_once(|| {
            sweep_tmp(&self.root);
        });
        put_blocking(&self.root, &self.path(t, name), &data)
    }

    fn object_file(
        &self,
        t: FileType,
        name: &str,
        _size: u64,
    ) -> Result<Option<Box<dyn super::ObjectFile>>> {
        self.swept.call_once(|| {
            sweep_tmp(&self.root);
        });
        let tmp = tmp_path(&self.root)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| storage("creating", &tmp, e))?;
        // Held until the file is closed: tells `sweep_tmp` in other processes it is in use.
        // On filesystems without locks nothing is ever swept (a file is removed only locked).
        let _ = lock(&file);
        let writer = match crate::directio::BackgroundWriter::new(file) {
            Ok(w) => w,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(storage("starting a writer for", &tmp, e));
            }
        };
        Ok(Some(Box::new(LocalObjectFile {
            root: self.root.clone(),
            tmp,
            path: self.path(t, name),
            writer: Some(writer),
        })))
    }

    async fn get(&self, t: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
        let path = self.path(t, name);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found(t, name)),
            Err(e) => return Err(storage("reading", &path, e)),
        };
        let len = f
            .metadata()
            .map_err(|e| storage("reading", &path, e))?
            .len();
        if len > max {
            return Err(super::too_large(t, name, len, max));
        }
        let mut v = Vec::with_capacity(len as usize);
        // Bounded even if the file grows meanwhile.
        (&mut f)
            .take(max + 1)
            .read_to_end(&mut v)
            .map_err(|e| storage("reading", &path, e))?;
        if v.len() as u64 > max {
            return Err(super::too_large(t, name, v.len() as u64, max));
        }
        Ok(v)
    }

    async fn get_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_range_into(t, name, offset, len, &mut buf).await?;
        Ok(buf)
    }

    async fn get_range_into(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let path = self.path(t, name);
        // Blocking reads on the caller's thread, as in `put`.
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found(t, name)),
            Err(e) => return Err(storage("reading", &path, e)),
        };
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| storage("reading", &path, e))?;
        buf.clear();
        buf.reserve(len as usize);
        (&mut f)
            .take(len)
            .read_to_end(buf)
            .map_err(|e| storage("reading", &path, e))?;
        // Sequential readers ask for the next window next: have the kernel read it meanwhile
        // (packs are written past the page cache, so they usually come from the disk).
        #[cfg(target_os = "linux")]
        if let Some(next) = std::num::NonZeroU64::new(len) {
            let _ = rustix::fs::fadvise(
                &f,
                offset.saturating_add(len),
                Some(next),
                rustix::fs::Advice::WillNeed,
            );
        }
        Ok(())
    }

    async fn get_range_stream(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Chunks> {
        let path = self.path(t, name);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found(t, name)),
            Err(e) => return Err(storage("reading", &path, e)),
        };
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| storage("reading", &path, e))?;
        // The whole range is wanted: have the kernel read it ahead of us.
        #[cfg(target_os = "linux")]
        let _ = rustix::fs::fadvise(
            &f,
            offset,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::WillNeed,
        );
        Ok(Chunks::from_reader(f.take(len)))
    }

    fn max_read_window(&self) -> u64 {
        // Each window is one `read`, and the next is already being read ahead (above): more
        // would only hold memory.
        1 << 20
    }

    async fn list(&self, t: FileType) -> Result<Vec<Listed>> {
        let dir = self.root.join(t.dir());
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            if matches!(t, FileType::Pack | FileType::TreePackCopy) {
                let rd = match fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(storage("listing", &dir, e)),
                };
                for sub in rd {
                    let sub = sub.map_err(|e| storage("listing", &dir, e))?;
                    if sub.file_type().map(|f| f.is_dir()).unwrap_or(false) {
                        list_dir(&sub.path(), &mut out)?;
                    }
                }
            } else {
                list_dir(&dir, &mut out)?;
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::io("background task", io::Error::other(e)))?
    }

    async fn stat(&self, t: FileType, name: &str) -> Result<Option<u64>> {
        let path = self.path(t, name);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage("reading", &path, e)),
        }
    }

    async fn delete(&self, t: FileType, name: &str) -> Result<()> {
        let path = self.path(t, name);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage("deleting", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Store;
    use std::sync::Arc;

    #[test]
    fn a_planted_huge_object_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(LocalBackend::new(dir.path().join("r")))).unwrap();
        store.create().unwrap();
        // A 3 GiB key file (sparse: no disk used) once made unlocking allocate 6.3 GB.
        let name = crate::ids::Id::random().to_hex();
        let path = dir.path().join("r").join(object_path(FileType::Key, &name));
        File::create(&path).unwrap().set_len(3 << 30).unwrap();
        let e = store.get(FileType::Key, &name).unwrap_err();
        assert!(e.is_corrupt(), "{e}");
        assert!(e.to_string().contains("3221225472 bytes"), "{e}");
        for t in [FileType::Config, FileType::Index, FileType::Snapshot] {
            assert!(t.max_len() < 1 << 30);
        }
    }

    #[test]
    fn conformance_basics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(LocalBackend::new(dir.path().join("r")))).unwrap();
        store.create().unwrap();
        let name = crate::ids::Id::random().to_hex();
        store.put(FileType::Pack, &name, b"hello world").unwrap();
        // Idempotent re-put of identical content; refusal of different content.
        store.put(FileType::Pack, &name, b"hello world").unwrap();
        assert!(store.put(FileType::Pack, &name, b"other").is_err());
        assert!(store.put(FileType::Pack, &name, b"hello-world").is_err());
        // A streamed object never replaces one either, whatever its content.
        let mut w = store.writer(FileType::Pack, &name, 11).unwrap();
        std::io::Write::write_all(&mut w, b"hello world").unwrap();
        assert!(w.commit().is_err());
        assert_eq!(store.get(FileType::Pack, &name).unwrap(), b"hello world");
        assert_eq!(
            store.get_range(FileType::Pack, &name, 6, 5).unwrap(),
            b"world"
        );
        assert_eq!(store.stat(FileType::Pack, &name).unwrap(), Some(11));
        assert_eq!(
            store.list(FileType::Pack).unwrap(),
            vec![(name.parse().unwrap(), 11)]
        );
        store.delete(FileType::Pack, &name).unwrap();
        assert_eq!(store.stat(FileType::Pack, &name).unwrap(), None);
        assert!(matches!(
            store.get(FileType::Pack, &name),
            Err(Error::NotFound(_))
        ));
        assert!(
            store.create().is_ok(),
            "no marker yet, so create is allowed"
        );
    }

    #[test]
    fn abandoned_temporary_files_are_removed_and_busy_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        let long_ago = std::time::SystemTime::now() - 2 * ABANDONED_AFTER;
        let make = |name: &str, when: std::time::SystemTime| {
            let f = File::create(tmp.join(name)).unwrap();
            f.set_modified(when).unwrap();
            f
        };
        drop(make(".tmp-killed", long_ago));
        // Another process's backup, still writing (it holds the lock).
        let busy = make(".tmp-busy", long_ago);
        lock(&busy).unwrap();
        drop(make(".tmp-recent", std::time::SystemTime::now()));
        drop(make("not-ours", long_ago));
        assert_eq!(sweep_tmp(root), 1);
        let mut left: Vec<String> = fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".tmp-busy", ".tmp-recent", "not-ours"]);
        // Once its writer is gone, the busy one goes too.
        drop(busy);
        assert_eq!(sweep_tmp(root), 1);
        // A backup sweeps when it starts its first pack.
        drop(make(".tmp-killed-2", long_ago));
        let b = LocalBackend::new(root);
        let w =
            super::super::Backend::object_file(&b, FileType::Pack, &"ab".repeat(32), 0).unwrap();
        assert!(!tmp.join(".tmp-killed-2").exists());
        drop(w);
        assert_eq!(
            fs::read_dir(&tmp).unwrap().count(),
            2,
            "its own file is gone too"
        );
        // So does a run that writes only small objects (a no-change backup's snapshot).
        drop(make(".tmp-killed-3", long_ago));
        let b = LocalBackend::new(root);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(super::super::Backend::put(
            &b,
            FileType::Snapshot,
            &"cd".repeat(32),
            bytes::Bytes::from_static(b"x"),
        ))
        .unwrap();
        assert!(!tmp.join(".tmp-killed-3").exists());
    }
}
