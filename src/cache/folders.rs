//! Folder rows in the local index: the file-change cache that lets an unchanged folder be
//! skipped, large folders stored in sealed parts, and the expiry of rows no run has seen.

use super::*;

impl LocalCache {
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
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
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
