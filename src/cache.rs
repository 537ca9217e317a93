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

mod rows;
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
const SCHEMA_VERSION: i64 = 3;

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

fn encode_pack(p: &PackInfo) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(p.pack_type as u8);
    w.u64(p.object_len);
    w.u32(p.payload_offset);
    w.u64(p.plain_len);
    w.into_vec()
}

fn decode_pack(id: Id, data: &[u8]) -> Result<PackInfo> {
    let mut r = Reader::new(data, "local pack entry");
    let t = r.u8()?;
    Ok(PackInfo {
        id,
        pack_type: BlobType::from_u8(t).ok_or_else(|| r.err("unknown pack type"))?,
        object_len: r.u64()?,
        payload_offset: r.u32()?,
        plain_len: r.u64()?,
    })
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
                let dir = dir.join(keys.repo_id.to_hex());
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
        // A second process may hold the write lock for a while (a large index merge).
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
                 DELETE FROM meta;
                 COMMIT;",
            )
            .map_err(e)?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS index_objects (name TEXT PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS packs (n INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, info BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS blobs (id BLOB PRIMARY KEY, loc BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS snapshots (id BLOB PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS folders (key BLOB PRIMARY KEY, seen INTEGER NOT NULL, run INTEGER NOT NULL, body BLOB NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS folder_parts (folder BLOB NOT NULL, part BLOB NOT NULL, body BLOB NOT NULL, PRIMARY KEY (folder, part)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS acknowledged (id BLOB PRIMARY KEY) WITHOUT ROWID;",
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

    /// Names of the repository index objects already merged.
    pub fn index_objects(&self) -> Result<HashSet<String>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT name FROM index_objects")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Forget the blob index (an index object disappeared from the repository). Folder rows
    /// stay but lose their confirmation: their blobs are checked before they are used again.
    pub fn clear_index(&self) -> Result<()> {
        self.lock()
            .execute_batch(
                "BEGIN IMMEDIATE; DELETE FROM index_objects; DELETE FROM blobs; DELETE FROM packs;
                 UPDATE folders SET run = -1; COMMIT;",
            )
            .map_err(|e| self.err(e))
    }

    /// Merge the packs one index object describes (or, with no name, packs recovered from
    /// their own tables), atomically with recording the object as merged.
    pub fn add_packs(&self, name: Option<&str>, packs: &[PackDesc]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut pack_ins = tx
                .prepare_cached("INSERT OR IGNORE INTO packs (id, info) VALUES (?1, ?2)")
                .map_err(|e| self.err(e))?;
            let mut pack_n = tx
                .prepare_cached("SELECT n FROM packs WHERE id = ?1")
                .map_err(|e| self.err(e))?;
            let mut blob_ins = tx
                .prepare_cached("INSERT OR IGNORE INTO blobs (id, loc) VALUES (?1, ?2)")
                .map_err(|e| self.err(e))?;
            for p in packs {
                let sealed = self.rows.seal(&p.id.0, &encode_pack(&p.info()));
                pack_ins
                    .execute(params![&p.id.0[..], sealed])
                    .map_err(|e| self.err(e))?;
                let n: i64 = pack_n
                    .query_row([&p.id.0[..]], |r| r.get(0))
                    .map_err(|e| self.err(e))?;
                for b in &p.blobs {
                    let mut w = Writer::new();
                    w.u64(n as u64);
                    b.encode(&mut w);
                    let loc = self.rows.seal(&b.id.0, &w.into_vec());
                    blob_ins
                        .execute(params![&b.id.0[..], loc])
                        .map_err(|e| self.err(e))?;
                }
            }
            if let Some(name) = name {
                tx.execute(
                    "INSERT OR IGNORE INTO index_objects (name) VALUES (?1)",
                    [name],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    pub fn has_pack(&self, id: &Id) -> Result<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM packs WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.err(e))
    }

    pub fn has_blob(&self, id: &Id) -> Result<bool> {
        self.has_blobs(std::slice::from_ref(id))
    }

    /// True when every blob in `ids` is indexed.
    pub fn has_blobs(&self, ids: &[Id]) -> Result<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM blobs WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        for id in ids {
            if !st.exists([&id.0[..]]).map_err(|e| self.err(e))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Where a blob is: its pack and its entry.
    pub fn blob(&self, id: &Id) -> Result<Option<(PackInfo, BlobEntry)>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT loc FROM blobs WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        let Some(loc): Option<Vec<u8>> = st
            .query_row([&id.0[..]], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let plain = self
            .rows
            .open(&id.0, &loc)
            .ok_or_else(|| self.corrupt_row("blob"))?;
        let mut r = Reader::new(&plain, "local blob entry");
        let n = r.u64()? as i64;
        let entry = BlobEntry::decode(&mut r)?;
        if entry.id != *id {
            return Err(self.corrupt_row("blob"));
        }
        let mut st = conn
            .prepare_cached("SELECT id, info FROM packs WHERE n = ?1")
            .map_err(|e| self.err(e))?;
        let (pid, info): (Vec<u8>, Vec<u8>) = st
            .query_row([n], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        let pid = id_of(pid, &self.label)?;
        let info = self
            .rows
            .open(&pid.0, &info)
            .ok_or_else(|| self.corrupt_row("pack"))?;
        Ok(Some((decode_pack(pid, &info)?, entry)))
    }

    pub fn blob_count(&self) -> Result<u64> {
        self.lock()
            .query_row("SELECT count(*) FROM blobs", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
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
        let tx = conn.transaction().map_err(|e| self.err(e))?;
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

    /// The row of a folder, by the keyed hash of its path. A row that does not open is treated
    /// as absent: the files are simply read again.
    pub fn folder(&self, key: &Id) -> Result<Option<FolderRow>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT seen, run, body FROM folders WHERE key = ?1")
            .map_err(|e| self.err(e))?;
        let row: Option<(i64, i64, Vec<u8>)> = st
            .query_row([&key.0[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((seen, run, body)) = row else {
            return Ok(None);
        };
        let Some(plain) = self.rows.open(&key.0, &body) else {
            return Ok(None);
        };
        Ok(FolderRow::decode(&plain, run == 0, seen).ok())
    }

    /// One part of a large folder's row; `None` when it is gone or does not open.
    pub fn folder_part(&self, folder: &Id, part: &Id) -> Result<Option<FolderFiles>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT body FROM folder_parts WHERE folder = ?1 AND part = ?2")
            .map_err(|e| self.err(e))?;
        let body: Option<Vec<u8>> = st
            .query_row(params![&folder.0[..], &part.0[..]], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(body) = body else {
            return Ok(None);
        };
        let Some(plain) = self.rows.open(&part_aad(folder, part), &body) else {
            return Ok(None);
        };
        Ok(FolderRow::decode_part(&plain).ok())
    }

    /// In one transaction: store `parts` (folder, part id, plaintext), write folder rows for run
    /// `run` (unconfirmed until [`Self::confirm_run`]) and, for the final ones, drop the parts
    /// they no longer list, and mark the rows of `seen` as seen today. A provisional row (a large
    /// folder still being backed up) keeps the old parts: the run still reads them.
    pub fn put_folders(
        &self,
        rows: &[FolderWrite],
        parts: &[PartWrite],
        seen: &[Id],
        run: i64,
    ) -> Result<()> {
        if rows.is_empty() && seen.is_empty() && parts.is_empty() {
            return Ok(());
        }
        let day = today();
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let e = |x| sql_err(&self.label, x);
            let mut put_part = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO folder_parts (folder, part, body) VALUES (?1, ?2, ?3)",
                )
                .map_err(e)?;
            for (folder, part, plain) in parts {
                let body = self.rows.seal(&part_aad(folder, part), plain);
                put_part
                    .execute(params![&folder.0[..], &part.0[..], body])
                    .map_err(e)?;
            }
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO folders (key, seen, run, body) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(e)?;
            let mut listed = tx
                .prepare_cached("SELECT part FROM folder_parts WHERE folder = ?1")
                .map_err(e)?;
            let mut drop_part = tx
                .prepare_cached("DELETE FROM folder_parts WHERE folder = ?1 AND part = ?2")
                .map_err(e)?;
            for FolderWrite {
                key,
                row,
                provisional,
            } in rows
            {
                let body = self.rows.seal(&key.0, &row.body);
                ins.execute(params![&key.0[..], day, run, body])
                    .map_err(e)?;
                if *provisional {
                    continue;
                }
                // Parts of the previous row, and of runs killed while writing this folder.
                let stale: Vec<Vec<u8>> = listed
                    .query_map([&key.0[..]], |r| r.get::<_, Vec<u8>>(0))
                    .map_err(e)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(e)?
                    .into_iter()
                    .filter(|p| !row.parts.iter().any(|k| k.0[..] == p[..]))
                    .collect();
                for p in stale {
                    drop_part.execute(params![&key.0[..], p]).map_err(e)?;
                }
            }
            let mut touch = tx
                .prepare_cached("UPDATE folders SET seen = ?2 WHERE key = ?1")
                .map_err(e)?;
            for key in seen {
                touch.execute(params![&key.0[..], day]).map_err(e)?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Mark the rows of a run as confirmed: call once everything the run stored is indexed.
    pub fn confirm_run(&self, run: i64) -> Result<()> {
        self.lock()
            .execute("UPDATE folders SET run = 0 WHERE run = ?1", [run])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Drop folder rows not seen for [`ROW_EXPIRY_DAYS`], with their parts.
    pub fn expire_folders(&self) -> Result<usize> {
        let conn = self.lock();
        let n = conn
            .execute(
                "DELETE FROM folders WHERE seen < ?1",
                [today() - ROW_EXPIRY_DAYS],
            )
            .map_err(|e| self.err(e))?;
        if n > 0 {
            conn.execute(
                "DELETE FROM folder_parts WHERE folder NOT IN (SELECT key FROM folders)",
                [],
            )
            .map_err(|e| self.err(e))?;
        }
        Ok(n)
    }
}

/// A part is sealed to its folder and its id: moved under another key it does not open.
fn part_aad(folder: &Id, part: &Id) -> [u8; 64] {
    let mut a = [0u8; 64];
    a[..32].copy_from_slice(&folder.0);
    a[32..].copy_from_slice(&part.0);
    a
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Compression;

    fn keys() -> Keys {
        Keys::generate()
    }

    fn pack(n: u8, blobs: &[Id]) -> PackDesc {
        PackDesc {
            id: Id([n; 32]),
            pack_type: BlobType::Data,
            object_len: 1000,
            payload_offset: 200,
            plain_len: 800,
            blobs: blobs
                .iter()
                .enumerate()
                .map(|(i, id)| BlobEntry {
                    id: *id,
                    blob_type: BlobType::Data,
                    compression: Compression::None,
                    offset: 10 * i as u64,
                    stored_len: 10,
                    raw_len: 10,
                })
                .collect(),
        }
    }

    use rows::tests::entry;

    /// A folder row holding `files` (written as a backup writes it).
    fn row_of(
        k: &Keys,
        key: Id,
        files: &[(&[u8], FileEntry)],
    ) -> (Vec<FolderWrite>, Vec<PartWrite>) {
        let mut w = RowWriter::new(key, &k.name);
        for (n, e) in files {
            w.push(n, e);
        }
        let (row, parts) = w.finish();
        (
            vec![FolderWrite {
                key,
                row,
                provisional: false,
            }],
            parts.into_iter().map(|(p, b)| (key, p, b)).collect(),
        )
    }

    #[test]
    fn blobs_packs_and_files_round_trip_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys();
        let place = CachePlace::Dir(dir.path().to_path_buf());
        {
            let c = LocalCache::open(&place, &k).unwrap();
            assert!(c.fallback.is_none());
            c.add_packs(Some("idx1"), &[pack(1, &[Id([2; 32]), Id([3; 32])])])
                .unwrap();
            let (rows, parts) = row_of(&k, Id([4; 32]), &[(b"a.jpg", entry())]);
            c.put_folders(&rows, &parts, &[], 77).unwrap();
            c.put_snapshot(&Id([5; 32]), b"snapshot bytes").unwrap();
        }
        let c = LocalCache::open(&place, &k).unwrap();
        assert_eq!(c.index_objects().unwrap().len(), 1);
        assert!(c.has_blob(&Id([3; 32])).unwrap());
        assert!(!c.has_blob(&Id([6; 32])).unwrap());
        assert!(c.has_blobs(&[Id([2; 32]), Id([3; 32])]).unwrap());
        assert!(!c.has_blobs(&[Id([2; 32]), Id([6; 32])]).unwrap());
        let (p, e) = c.blob(&Id([3; 32])).unwrap().unwrap();
        assert_eq!(p.id, Id([1; 32]));
        assert_eq!(
            (p.object_len, p.payload_offset, p.plain_len),
            (1000, 200, 800)
        );
        assert_eq!((e.offset, e.stored_len), (10, 10));
        let row = c.folder(&Id([4; 32])).unwrap().unwrap();
        assert!(!row.confirmed);
        let mut cur = RowCursor::new(Id([4; 32]), std::sync::Arc::new(row));
        assert_eq!(cur.get(&c, b"a.jpg").unwrap(), Some(&entry()));
        assert_eq!(cur.get(&c, b"b.jpg").unwrap(), None);
        c.confirm_run(77).unwrap();
        assert!(c.folder(&Id([4; 32])).unwrap().unwrap().confirmed);
        assert_eq!(
            &c.snapshot(&Id([5; 32])).unwrap().unwrap()[..],
            b"snapshot bytes"
        );
        c.clear_index().unwrap();
        assert!(!c.has_blob(&Id([3; 32])).unwrap());
        assert!(!c.folder(&Id([4; 32])).unwrap().unwrap().confirmed);
        assert!(c.index_objects().unwrap().is_empty());
    }

    #[test]
    fn another_key_starts_empty_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let place = CachePlace::Dir(dir.path().to_path_buf());
        let k = keys();
        let c = LocalCache::open(&place, &k).unwrap();
        c.add_packs(Some("a"), &[pack(1, &[Id([2; 32])])]).unwrap();
        drop(c);
        let sub = dir.path().join(k.repo_id.to_hex());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sub), 0o700);
        for f in std::fs::read_dir(&sub).unwrap() {
            assert_eq!(mode(&f.unwrap().path()), 0o600);
        }
        // Same repository id, different keys (cannot happen in practice): nothing is trusted.
        let mut m = k.material();
        m.master = crate::crypto::SecretKey::generate();
        let k2 = Keys::from_material(m);
        let c2 = LocalCache::open(&place, &k2).unwrap();
        assert!(!c2.has_blob(&Id([2; 32])).unwrap());
    }

    #[test]
    fn a_damaged_database_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let place = CachePlace::Dir(dir.path().to_path_buf());
        let k = keys();
        let sub = dir.path().join(k.repo_id.to_hex());
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("index.sqlite"), vec![0x55u8; 8192]).unwrap();
        let c = LocalCache::open(&place, &k).unwrap();
        assert!(c.fallback.is_none(), "{:?}", c.fallback);
        c.add_packs(Some("a"), &[pack(1, &[Id([2; 32])])]).unwrap();
        assert!(c.has_blob(&Id([2; 32])).unwrap());
    }

    #[test]
    fn an_unusable_dir_falls_back_to_memory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let c = LocalCache::open(&CachePlace::Dir(file), &keys()).unwrap();
        assert!(c.fallback.is_some());
        c.add_packs(Some("a"), &[pack(1, &[Id([2; 32])])]).unwrap();
        assert!(c.has_blob(&Id([2; 32])).unwrap());
    }

    #[test]
    fn tampered_rows_are_not_trusted() {
        let k = keys();
        let c = LocalCache::open(&CachePlace::Memory, &k).unwrap();
        let (rows, parts) = row_of(&k, Id([4; 32]), &[(b"a", entry())]);
        c.put_folders(&rows, &parts, &[], 1).unwrap();
        // Move the row to another key: it must not open there.
        c.lock()
            .execute("UPDATE folders SET key = ?1", [&[1u8; 32][..]])
            .unwrap();
        assert!(c.folder(&Id([1; 32])).unwrap().is_none());
    }

    /// A folder too large for one row is cut into parts; reading it back finds every entry,
    /// and a changed entry rewrites one part and leaves the others in place.
    #[test]
    fn large_folders_are_stored_in_parts() {
        let k = keys();
        let c = LocalCache::open(&CachePlace::Memory, &k).unwrap();
        let key = Id([4; 32]);
        // More than 4 MiB of entries: at least two parts whatever the key.
        let names: Vec<Vec<u8>> = (0..30_000)
            .map(|i| format!("IMG_{i:06}.JPG").into_bytes())
            .collect();
        let files: Vec<(&[u8], FileEntry)> =
            names.iter().map(|n| (n.as_slice(), entry())).collect();
        let (rows, parts) = row_of(&k, key, &files);
        assert!(parts.len() >= 2, "{} parts", parts.len());
        c.put_folders(&rows, &parts, &[], 1).unwrap();
        let row = std::sync::Arc::new(c.folder(&key).unwrap().unwrap());
        assert_eq!(row.entries(), 30_000);
        let mut cur = RowCursor::new(key, row.clone());
        for n in names.iter().step_by(7) {
            assert_eq!(cur.get(&c, n).unwrap(), Some(&entry()));
            assert_eq!(cur.get(&c, &[n.as_slice(), b"x"].concat()).unwrap(), None);
        }
        // Asked out of order: still right.
        assert_eq!(cur.get(&c, &names[3]).unwrap(), Some(&entry()));
        let mut all = RowCursor::new(key, row.clone());
        let mut n = 0;
        while let Some((name, _)) = all.next_entry(&c).unwrap() {
            assert_eq!(name, names[n]);
            n += 1;
        }
        assert_eq!(n, 30_000);

        let mut changed = entry();
        changed.stat.size = 99;
        let mut files2 = files.clone();
        files2[10_000].1 = changed.clone();
        let (rows2, parts2) = row_of(&k, key, &files2);
        let old = row.part_ids();
        let new: Vec<_> = parts2.iter().filter(|p| !old.contains(&p.1)).collect();
        assert_eq!(new.len(), 1, "one part rewritten");
        c.put_folders(&rows2, &parts2, &[], 2).unwrap();
        let count: i64 = c
            .lock()
            .query_row("SELECT count(*) FROM folder_parts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count as usize, parts2.len(), "the replaced part is gone");
        let mut cur = RowCursor::new(key, std::sync::Arc::new(c.folder(&key).unwrap().unwrap()));
        assert_eq!(cur.get(&c, &names[10_000]).unwrap(), Some(&changed));
        // A part that disappeared (another process rewrote the folder) reads as no entries.
        c.lock().execute("DELETE FROM folder_parts", []).unwrap();
        let mut cur = RowCursor::new(key, std::sync::Arc::new(c.folder(&key).unwrap().unwrap()));
        assert_eq!(cur.get(&c, &names[5]).unwrap(), None);
    }
}
#[cfg(test)]
mod pragmas {
    // Regression: these settings were once silently lost in an edit.
    #[test]
    fn page_cache_and_mmap_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let c = super::LocalCache::open(
            &super::CachePlace::Dir(dir.path().into()),
            &crate::keys::Keys::generate(),
        )
        .unwrap();
        let v: i64 = c
            .lock()
            .query_row("PRAGMA mmap_size", [], |r| r.get(0))
            .unwrap();
        let cs: i64 = c
            .lock()
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!((v, cs), (256 << 20, -65536));
    }
}
