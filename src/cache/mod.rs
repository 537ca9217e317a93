//! The local index: an SQLite database per repository under the user's cache dir holding the
//! blob index, the snapshots seen and the file-change cache, every row encrypted.
//!
//! It is only a cache. The repository stays the source of truth: a missing, stale or damaged
//! database is rebuilt from the repository's index and snapshot objects. SQLite (and not a
//! single-process store such as redb) because two vault processes on one machine may back up
//! at the same time and must both be able to use it: WAL mode lets readers and one writer share
//! the file without locks that can go stale.
//!
//! What is in plaintext on disk: blob ids (keyed hashes), snapshot ids, pack names (all of
//! them object names in the repository), keyed hashes of paths, and a day number per path
//! entry. Everything else (which pack holds a blob and where, snapshot contents, file
//! metadata and content lists) is sealed with the cache subkey.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::crypto::RowCipher;
use crate::error::{Error, Result};
use crate::format::codec::{Reader, Writer};
use crate::format::index::{PackDesc, PackInfo};
use crate::format::{BlobEntry, BlobType};
use crate::ids::Id;
use crate::keys::Keys;

mod blobs;
pub use blobs::MAX_UNVOUCHED_LOCATIONS;
mod folders;
mod rows;
#[cfg(test)]
mod tests;
pub use crate::changes::FileEntry;
pub use rows::{FolderFiles, FolderRow, NewRow, RowCursor, RowWriter};

/// A part of a large folder's row to store: folder key, part id, plaintext.
pub type PartWrite = (Id, Id, Vec<u8>);

/// A folder row to store.
pub struct FolderWrite {
    pub key: Id,
    pub row: NewRow,
    /// Written while the folder is still being backed up (its old parts are still read).
    pub provisional: bool,
}

/// Layout version of the database; a different one is discarded and rebuilt.
const SCHEMA_VERSION: i64 = 6;

/// Where the local index lives.
#[derive(Clone, Debug)]
pub enum CachePlace {
    /// `<dir>/<repository id>/index.sqlite`.
    Dir(PathBuf),
    /// In memory only, rebuilt by every run (library default; `--no-cache`).
    Memory,
}

impl CachePlace {
    /// `$VAULT_CACHE_DIR`, else `$XDG_CACHE_HOME/vault`, else `~/.cache/vault`; memory when
    /// none can be determined.
    pub fn from_env() -> CachePlace {
        if let Some(d) = std::env::var_os("VAULT_CACHE_DIR").filter(|d| !d.is_empty()) {
            return CachePlace::Dir(PathBuf::from(d));
        }
        match dirs::cache_dir() {
            Some(d) => CachePlace::Dir(d.join("vault")),
            None => CachePlace::Memory,
        }
    }
}

/// Days since the Unix epoch, the granularity at which path entries are marked as seen.
pub fn today() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0)
}

/// Folder rows not seen for this many days are dropped (they only cost a re-read).
pub const ROW_EXPIRY_DAYS: i64 = 90;

/// An open local index.
pub struct LocalCache {
    conn: Mutex<Connection>,
    rows: RowCipher,
    /// Shown in errors; "memory" for an in-memory index.
    label: String,
    /// Why the on-disk index could not be used, when this one is in memory instead of on disk.
    pub fallback: Option<String>,
    /// A write-only device can check nothing it reads and takes every index entry as vouched
    /// for; a full device only those of class-1 index objects (§13.1).
    trust_all: bool,
}

/// Ids stored as 32-byte blobs.
fn id_of(v: Vec<u8>, label: &str) -> Result<Id> {
    let b: [u8; 32] = v.try_into().map_err(|_| Error::Cache {
        path: label.to_string(),
        detail: "an id column is not 32 bytes".into(),
    })?;
    Ok(Id(b))
}

impl LocalCache {
    /// Open (creating if needed) the index for `keys`' repository at `place`. When the on-disk
    /// database cannot be used, falls back to memory and says why in `fallback`.
    pub fn open(place: &CachePlace, keys: &Keys) -> Result<LocalCache> {
        match place {
            CachePlace::Memory => Self::open_memory(keys, None),
            CachePlace::Dir(dir) => {
                // A write-only profile's local index is sealed with keys from the writer
                // secret (§4.1), so it lives apart from a full device's.
                let mut name = keys.repo_id.to_hex();
                if keys.is_write_only() {
                    name.push_str("-write-only");
                }
                let dir = dir.join(name);
                match Self::open_file(&dir, keys) {
                    Ok(c) => Ok(c),
                    Err(Error::Cache { path, detail }) => {
                        Self::open_memory(keys, Some(format!("{path}: {detail}")))
                    }
                    Err(e) => Self::open_memory(keys, Some(e.to_string())),
                }
            }
        }
    }

    fn open_memory(keys: &Keys, fallback: Option<String>) -> Result<LocalCache> {
        let label = "in memory".to_string();
        let conn = Connection::open_in_memory().map_err(|e| sql_err(&label, e))?;
        let c = LocalCache {
            conn: Mutex::new(conn),
            rows: RowCipher::new(&keys.cache),
            label,
            fallback,
            trust_all: keys.is_write_only(),
        };
        c.setup(keys, false)?;
        Ok(c)
    }

    fn open_file(dir: &Path, keys: &Keys) -> Result<LocalCache> {
        let label = dir.display().to_string();
        create_private_dir(dir).map_err(|e| Error::Cache {
            path: label.clone(),
            detail: format!("cannot create the folder: {e}"),
        })?;
        let path = dir.join("index.sqlite");
        let open = || -> Result<LocalCache> {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| sql_err(&label, e))?;
            restrict_file(&path).map_err(|e| Error::Cache {
                path: label.clone(),
                detail: format!("cannot make it private: {e}"),
            })?;
            let c = LocalCache {
                conn: Mutex::new(conn),
                rows: RowCipher::new(&keys.cache),
                label: label.clone(),
                fallback: None,
                trust_all: keys.is_write_only(),
            };
            c.setup(keys, true)?;
            Ok(c)
        };
        match open() {
            Ok(c) => Ok(c),
            Err(Error::Cache { detail, .. }) if detail.contains("not a database") => {
                // A damaged cache is thrown away: the repository has everything it held.
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
                open()
            }
            Err(e) => Err(e),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        sql_err(&self.label, e)
    }

    fn corrupt_row(&self, what: &str) -> Error {
        Error::Cache {
            path: self.label.clone(),
            detail: format!("a {what} row does not decrypt (written with another key?)"),
        }
    }

    /// Create the tables, or wipe them when the schema or the key changed.
    fn setup(&self, keys: &Keys, on_disk: bool) -> Result<()> {
        let conn = self.lock();
        let e = |x| sql_err(&self.label, x);
        // A second process may hold the write lock for a while (a large index merge). Write
        // transactions begin IMMEDIATE: a deferred one that has read gets "database is locked"
        // at once, without waiting, when another process wrote meanwhile (two backups on one
        // computer failed so in CI).
        conn.busy_timeout(std::time::Duration::from_secs(120))
            .map_err(e)?;
        if on_disk {
            conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(e)?;
        }
        // Sorting and temporary tables stay in memory: no temp file outside the cache dir.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(e)?;
        // Lookups by keyed hash are random: with SQLite's default 2 MiB page cache a large
        // library re-reads pages many times per run. Up to 64 MiB, used only as touched.
        conn.pragma_update(None, "cache_size", -65536).map_err(e)?;
        if on_disk {
            // Read pages in place instead of copying each into the page cache; capped so that
            // a run's resident size stays bounded for very large libraries.
            conn.pragma_update(None, "mmap_size", 256i64 << 20)
                .map_err(e)?;
        }
        let check = keys.cache.keyed_hash(b"vault local index key check");
        conn.execute_batch("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
            .map_err(e)?;
        let get = |k: &str| -> Result<Option<Vec<u8>>> {
            conn.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
                .optional()
                .map_err(e)
        };
        let version = get("schema")?;
        let stored_check = get("keycheck")?;
        let fresh = version.as_deref() != Some(&SCHEMA_VERSION.to_le_bytes()[..])
            || stored_check.as_deref() != Some(&check.0[..]);
        if fresh {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 DROP TABLE IF EXISTS index_objects;
                 DROP TABLE IF EXISTS packs;
                 DROP TABLE IF EXISTS blobs;
                 DROP TABLE IF EXISTS snapshots;
                 DROP TABLE IF EXISTS files;
                 DROP TABLE IF EXISTS folders;
                 DROP TABLE IF EXISTS folder_parts;
                 DROP TABLE IF EXISTS acknowledged;
                 DROP TABLE IF EXISTS condemned;
                 DROP TABLE IF EXISTS unindexed;
                 DELETE FROM meta;
                 COMMIT;",
            )
            .map_err(e)?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS index_objects (name TEXT PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS packs (n INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, info BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS blobs (id BLOB NOT NULL, pack INTEGER NOT NULL, vouched INTEGER NOT NULL, loc BLOB NOT NULL, PRIMARY KEY (id, pack)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS snapshots (id BLOB PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS folders (key BLOB PRIMARY KEY, seen INTEGER NOT NULL, run INTEGER NOT NULL, body BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS folder_parts (folder BLOB NOT NULL, part BLOB NOT NULL, body BLOB NOT NULL, PRIMARY KEY (folder, part)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS acknowledged (id BLOB PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS condemned (marker TEXT NOT NULL, pack BLOB NOT NULL, PRIMARY KEY (marker, pack)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS unindexed (pack BLOB PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;",
        )
        .map_err(e)?;
        if fresh {
            conn.execute(
                "INSERT OR REPLACE INTO meta (k, v) VALUES ('schema', ?1), ('keycheck', ?2)",
                params![&SCHEMA_VERSION.to_le_bytes()[..], &check.0[..]],
            )
            .map_err(e)?;
        }
        Ok(())
    }

    /// Ids of the snapshots recorded.
    pub fn snapshot_ids(&self) -> Result<HashSet<Id>> {
        self.ids("SELECT id FROM snapshots")
    }

    /// The ids a one-column query returns.
    fn ids(&self, query: &str) -> Result<HashSet<Id>> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(query).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| self.err(e))?;
        let mut out = HashSet::new();
        for r in rows {
            out.insert(id_of(r.map_err(|e| self.err(e))?, &self.label)?);
        }
        Ok(out)
    }

    /// Missing snapshots the user has acknowledged on this computer (`acknowledge_missing`).
    pub fn acknowledged(&self) -> Result<HashSet<Id>> {
        self.ids("SELECT id FROM acknowledged")
    }

    /// Stop reporting these missing snapshots on this computer: forget the ones it saw and
    /// remember that the user looked into all of them (the ones only named as `previous` by a
    /// snapshot still there would be reported again otherwise).
    pub fn acknowledge_missing(&self, ids: &[Id]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        for id in ids {
            tx.execute("DELETE FROM snapshots WHERE id = ?1", [&id.0[..]])
                .map_err(|e| self.err(e))?;
            tx.execute(
                "INSERT OR IGNORE INTO acknowledged (id) VALUES (?1)",
                [&id.0[..]],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// A recorded snapshot's plaintext (as verified when it was fetched).
    pub fn snapshot(&self, id: &Id) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT body FROM snapshots WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        let body: Option<Vec<u8>> = st
            .query_row([&id.0[..]], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        body.map(|b| {
            self.rows
                .open(&id.0, &b)
                .ok_or_else(|| self.corrupt_row("snapshot"))
        })
        .transpose()
    }

    pub fn put_snapshot(&self, id: &Id, plain: &[u8]) -> Result<()> {
        let body = self.rows.seal(&id.0, plain);
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO snapshots (id, body) VALUES (?1, ?2)",
                params![&id.0[..], body],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

fn sql_err(label: &str, e: rusqlite::Error) -> Error {
    Error::Cache {
        path: label.to_string(),
        detail: e.to_string(),
    }
}

/// Create `dir` (and parents) readable by the owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Owner-only permissions on the database; SQLite gives its -wal and -shm files the same.
fn restrict_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
