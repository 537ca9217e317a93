//! The blob index in the local index: which pack holds each blob, merged from the repository's
//! index objects.

use super::*;

/// How many locations of one blob that no full device vouched for a reader tries (§13.1).
pub const MAX_UNVOUCHED_LOCATIONS: i64 = 3;

impl LocalCache {
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

    /// Merge the packs one index object describes (or, with no name, packs recovered from their
    /// own tables), atomically with recording the object as merged. `vouched`: a full device
    /// wrote the description (a pack's own table is no full device's word: anyone who can
    /// encrypt to the data recipient can write one). Every location of a blob is kept (§13.1);
    /// a location recorded by both classes counts as class 1.
    pub fn add_packs(&self, name: Option<&str>, vouched: bool, packs: &[PackDesc]) -> Result<()> {
        let vouched = self.trust_all || vouched;
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        {
            let mut pack_ins = tx
                .prepare_cached("INSERT OR IGNORE INTO packs (id, info) VALUES (?1, ?2)")
                .map_err(|e| self.err(e))?;
            let mut pack_n = tx
                .prepare_cached("SELECT n FROM packs WHERE id = ?1")
                .map_err(|e| self.err(e))?;
            let mut blob_ins = tx
                .prepare_cached(
                    "INSERT INTO blobs (id, pack, vouched, loc) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id, pack) DO UPDATE SET vouched = excluded.vouched,
                     loc = excluded.loc WHERE excluded.vouched > blobs.vouched",
                )
                .map_err(|e| self.err(e))?;
            let mut condemned = tx
                .prepare_cached("SELECT 1 FROM condemned WHERE pack = ?1")
                .map_err(|e| self.err(e))?;
            for p in packs {
                if condemned.exists([&p.id.0[..]]).map_err(|e| self.err(e))? {
                    continue;
                }
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
                        .execute(params![&b.id.0[..], n, vouched as i64, loc])
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

    /// Names of the condemn markers merged (§13.2).
    pub fn condemn_markers(&self) -> Result<HashSet<String>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT DISTINCT marker FROM condemned")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Merge a condemn marker (§13.2): the locations of blobs in its packs are dropped, and
    /// index objects merged later do not bring them back, so nothing new relies on them.
    /// Returns the blobs that were recorded only in those packs. When any location was dropped,
    /// folder rows lose their confirmation: an unchanged file's chunks are looked up again
    /// before they are reused. A marker with no packs is recorded under its name all the same.
    pub fn condemn(&self, marker: &str, packs: &[Id]) -> Result<Vec<Id>> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let mut orphaned = Vec::new();
        {
            let mut ins = tx
                .prepare_cached("INSERT OR IGNORE INTO condemned (marker, pack) VALUES (?1, ?2)")
                .map_err(|e| self.err(e))?;
            if packs.is_empty() {
                ins.execute(params![marker, &[0u8; 0][..]])
                    .map_err(|e| self.err(e))?;
            }
            let mut blobs_of = tx
                .prepare_cached(
                    "SELECT blobs.id FROM blobs JOIN packs ON blobs.pack = packs.n WHERE packs.id = ?1",
                )
                .map_err(|e| self.err(e))?;
            let mut del = tx
                .prepare_cached(
                    "DELETE FROM blobs WHERE pack = (SELECT n FROM packs WHERE id = ?1)",
                )
                .map_err(|e| self.err(e))?;
            let mut left = tx
                .prepare_cached("SELECT 1 FROM blobs WHERE id = ?1")
                .map_err(|e| self.err(e))?;
            let mut dropped = false;
            for p in packs {
                ins.execute(params![marker, &p.0[..]])
                    .map_err(|e| self.err(e))?;
                let ids: Vec<Vec<u8>> = blobs_of
                    .query_map([&p.0[..]], |r| r.get(0))
                    .map_err(|e| self.err(e))?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(|e| self.err(e))?;
                dropped |= del.execute([&p.0[..]]).map_err(|e| self.err(e))? > 0;
                for id in ids {
                    if !left.exists([&id[..]]).map_err(|e| self.err(e))? {
                        orphaned.push(id_of(id, &self.label)?);
                    }
                }
            }
            if dropped {
                tx.execute("UPDATE folders SET run = -1", [])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(orphaned)
    }

    /// Forget merged markers the repository no longer has (a prune finished with them, or they
    /// were a prune's own that it never stored): their packs are usable again where they still
    /// exist, so the blob index is merged afresh.
    pub fn drop_condemn_markers(&self, gone: &[String]) -> Result<()> {
        if gone.is_empty() {
            return Ok(());
        }
        {
            let conn = self.lock();
            let mut st = conn
                .prepare_cached("DELETE FROM condemned WHERE marker = ?1")
                .map_err(|e| self.err(e))?;
            for m in gone {
                st.execute([m]).map_err(|e| self.err(e))?;
            }
        }
        self.clear_index()
    }

    /// Whether a merged condemn marker names the pack (§13.2).
    pub fn is_condemned(&self, id: &Id) -> Result<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM condemned WHERE pack = ?1")
            .map_err(|e| self.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.err(e))
    }

    pub fn has_pack(&self, id: &Id) -> Result<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM packs WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        st.exists([&id.0[..]]).map_err(|e| self.err(e))
    }

    /// True when the blob is stored as far as this device may rely on for deduplication: on a
    /// full device, a class-1 index object records it (§13.1).
    pub fn has_blob(&self, id: &Id) -> Result<bool> {
        self.has_blobs(std::slice::from_ref(id))
    }

    /// Whether the blob is recorded at all (`None`: not), and if so whether some location of
    /// it is vouched for ([`Self::has_blob`]); one lookup.
    pub fn blob_state(&self, id: &Id) -> Result<Option<bool>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT max(vouched) FROM blobs WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        let v: Option<i64> = st
            .query_row([&id.0[..]], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(v.map(|v| v == 1))
    }

    /// True when [`Self::has_blob`] holds for every blob in `ids`.
    pub fn has_blobs(&self, ids: &[Id]) -> Result<bool> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT 1 FROM blobs WHERE id = ?1 AND vouched = 1")
            .map_err(|e| self.err(e))?;
        for id in ids {
            if !st.exists([&id.0[..]]).map_err(|e| self.err(e))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every recorded location of a blob that a full device vouched for, then at most
    /// [`MAX_UNVOUCHED_LOCATIONS`] others in the order they were merged: a reader tries them in
    /// turn. The cap bounds what index entries a write-only profile forged can cost (§13.1):
    /// each is one failed read, and thousands of them for one blob would otherwise be thousands
    /// of downloads before the blob is stored again.
    pub fn blob(&self, id: &Id) -> Result<Vec<(PackInfo, BlobEntry)>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT 0 AS k, pack, loc FROM blobs WHERE id = ?1 AND vouched = 1
                 UNION ALL
                 SELECT * FROM (SELECT 1, pack, loc FROM blobs WHERE id = ?1 AND vouched = 0
                                ORDER BY pack LIMIT ?2)
                 ORDER BY k, pack",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<(i64, Vec<u8>)> = st
            .query_map(params![&id.0[..], MAX_UNVOUCHED_LOCATIONS], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (pack, loc) in rows {
            let plain = self
                .rows
                .open(&id.0, &loc)
                .ok_or_else(|| self.corrupt_row("blob"))?;
            let mut r = Reader::new(&plain, "local blob entry");
            let n = r.u64()? as i64;
            let entry = BlobEntry::decode(&mut r)?;
            if entry.id != *id || n != pack {
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
            out.push((decode_pack(pid, &info)?, entry));
        }
        Ok(out)
    }

    /// Record a pack this device stored and has not indexed yet (§13, §16): if the run fails
    /// before its index object is written (a full disk, a kill), the next run indexes it
    /// instead of storing the same data again.
    pub fn add_unindexed(&self, p: &PackDesc) -> Result<()> {
        let mut w = Writer::new();
        w.raw(&encode_pack(&p.info()));
        w.u32(p.blobs.len() as u32);
        for b in &p.blobs {
            b.encode(&mut w);
        }
        let body = self.rows.seal(&p.id.0, &w.into_vec());
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO unindexed (pack, body) VALUES (?1, ?2)",
                params![&p.id.0[..], body],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The packs are in an index object now.
    pub fn remove_unindexed(&self, packs: &[Id]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        {
            let mut st = tx
                .prepare_cached("DELETE FROM unindexed WHERE pack = ?1")
                .map_err(|e| self.err(e))?;
            for id in packs {
                st.execute([&id.0[..]]).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Packs recorded by [`Self::add_unindexed`] and not indexed since.
    pub fn unindexed(&self) -> Result<Vec<PackDesc>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT pack, body FROM unindexed")
            .map_err(|e| self.err(e))?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, body) in rows {
            let id = id_of(id, &self.label)?;
            let plain = self
                .rows
                .open(&id.0, &body)
                .ok_or_else(|| self.corrupt_row("unindexed pack"))?;
            let mut r = Reader::new(&plain, "local unindexed pack");
            let info = decode_pack_from(id, &mut r)?;
            let n = r.count(crate::format::BLOB_ENTRY_LEN)?;
            let mut blobs = Vec::with_capacity(n);
            for _ in 0..n {
                blobs.push(BlobEntry::decode(&mut r)?);
            }
            out.push(PackDesc {
                id,
                pack_type: info.pack_type,
                object_len: info.object_len,
                payload_offset: info.payload_offset,
                plain_len: info.plain_len,
                blobs,
            });
        }
        Ok(out)
    }

    pub fn blob_count(&self) -> Result<u64> {
        self.lock()
            .query_row("SELECT count(DISTINCT id) FROM blobs", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
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
    decode_pack_from(id, &mut Reader::new(data, "local pack entry"))
}

fn decode_pack_from(id: Id, r: &mut Reader<'_>) -> Result<PackInfo> {
    let t = r.u8()?;
    Ok(PackInfo {
        id,
        pack_type: BlobType::from_u8(t).ok_or_else(|| r.err("unknown pack type"))?,
        object_len: r.u64()?,
        payload_offset: r.u32()?,
        plain_len: r.u64()?,
    })
}
