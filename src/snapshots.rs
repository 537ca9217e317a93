//! Snapshots (§11): writing, reading and listing them, the `previous`/`sequence` chain, and
//! snapshots gone from the repository that this computer or a later snapshot knew.

use std::collections::{HashMap, HashSet};

use zeroize::Zeroizing;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{FolderCursor, NodeKind, FLAG_VAULT_ONLY, MAX_DEPTH};
use crate::ids::Id;
use crate::repo::PackReaders;
use crate::repo::{relabel, MissingSnapshots, Repository, SnapshotList};

impl Repository {
    /// Encrypt, MAC and store a snapshot. Returns its id.
    pub fn write_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        // A prune may have condemned packs since this run's local index was synced (§13.2):
        // a snapshot never relies on blobs that only condemned packs hold.
        self.recheck_condemned()?;
        // Signed as the class it states, with that class's key: a copy keeps the class of
        // the snapshot it copies, and a write-only device cannot state class 1.
        let key = self.keys.mac_key(&snap.writer, false)?;
        let plain = snap.encode(&key);
        let id = self.keys.snapshot_id.keyed_hash(&plain);
        let ct = self.keys.recipient.encrypt(&plain)?;
        // The first copy first: a second copy alone would be a snapshot that listings and
        // prune do not see (§2.2).
        self.store.put(FileType::Snapshot, &id.to_hex(), &ct)?;
        self.store.put(FileType::SnapshotCopy, &id.to_hex(), &ct)?;
        if !self.keys.is_write_only() {
            self.cache()?.put_snapshot(&id, &plain)?;
        }
        Ok(id)
    }

    /// Read one snapshot, checking its MAC, header and that its name is its keyed id. The local
    /// index keeps snapshots already verified; their MAC is checked again on every read.
    pub fn read_snapshot(&self, id: &Id) -> Result<Snapshot> {
        self.keys.data_identity()?;
        let cache = self.cache()?;
        if let Some(plain) = cache.snapshot(id)? {
            return Snapshot::decode(&plain, &self.keys.repo_id, &self.keys.snapshot_macs())
                .map_err(|e| relabel(e, &format!("snapshot {}", id.short())));
        }
        let (snap, plain) = self.fetch_snapshot(id)?;
        cache.put_snapshot(id, &plain)?;
        Ok(snap)
    }

    /// Download and verify one snapshot, bypassing the local index: its first copy, or its
    /// second when the first is damaged (§2.2; noted for the end of the command).
    pub(crate) fn fetch_snapshot(&self, id: &Id) -> Result<(Snapshot, Zeroizing<Vec<u8>>)> {
        let (r, damaged) =
            crate::repo::get_either(&self.store, FileType::Snapshot, &id.to_hex(), |ct| {
                self.open_snapshot(id, &ct)
            })?;
        if let Some(e) = damaged {
            self.note_damaged(FileType::Snapshot, Some(*id), &e);
        }
        Ok(r)
    }

    /// Decrypt and verify one stored copy of snapshot `id`.
    pub(crate) fn open_snapshot(
        &self,
        id: &Id,
        ct: &[u8],
    ) -> Result<(Snapshot, Zeroizing<Vec<u8>>)> {
        let what = format!("snapshot {}", id.short());
        let plain = Zeroizing::new(self.keys.data_identity()?.decrypt(ct, &what)?);
        if self.keys.snapshot_id.keyed_hash(&plain) != *id {
            return Err(Error::corrupt(&what, "content does not match its name"));
        }
        let snap = Snapshot::decode(&plain, &self.keys.repo_id, &self.keys.snapshot_macs())
            .map_err(|e| relabel(e, &what))?;
        Ok((snap, plain))
    }

    /// Check that the repository still holds snapshot `id` intact, whatever the local index
    /// holds (a restore uses what the repository can give on any computer, §12): a damaged
    /// first copy is noted, and when neither copy can be read the local index's copy, if any,
    /// serves and the damage is noted too.
    pub fn verify_stored_snapshot(&self, id: &Id) -> Result<Snapshot> {
        match self.fetch_snapshot(id) {
            Ok((s, _)) => Ok(s),
            Err(e @ (Error::Cache { .. } | Error::Interrupted)) => Err(e),
            Err(e) => match self.cache()?.snapshot(id)? {
                Some(plain) => {
                    let snap =
                        Snapshot::decode(&plain, &self.keys.repo_id, &self.keys.snapshot_macs())
                            .map_err(|e| relabel(e, &format!("snapshot {}", id.short())))?;
                    // Both copies failed: noted as the second's failure (§2.2).
                    self.note_damaged(FileType::SnapshotCopy, Some(*id), &e);
                    Ok(snap)
                }
                None => Err(e),
            },
        }
    }

    /// All readable snapshots sorted by time, plus the ones that failed to read. Only snapshots
    /// the local index has not seen are downloaded; ones it saw that are gone from the repository
    /// stay in it and are reported (`missing_snapshots`). With `verify_stored`, every snapshot is
    /// downloaded and verified (for `check`).
    pub fn snapshots_with(&self, verify_stored: bool) -> Result<SnapshotList> {
        self.keys.data_identity()?;
        let cache = self.cache()?;
        // A snapshot a forget record names is gone on purpose (§11.1): not listed even while
        // its object is still stored (a forget stopped halfway, Object Lock), and not missing.
        let forgotten = self.forgotten()?.ids;
        let names: Vec<Id> = self
            .snapshot_names()?
            .into_iter()
            .filter(|n| !forgotten.contains(n))
            .collect();
        let mut listed = HashSet::new();
        let mut ok = vec![];
        let mut bad = vec![];
        for (name, r) in self.fetch_all(names, |&id| {
            if verify_stored {
                self.fetch_snapshot(&id).map(|(s, _)| (id, s))
            } else {
                self.read_snapshot(&id).map(|s| (id, s))
            }
        }) {
            match r {
                Ok((id, s)) => {
                    listed.insert(id);
                    ok.push((id, s));
                }
                Err(e @ Error::Cache { .. }) => return Err(e),
                Err(e) => bad.push((name, e)),
            }
        }
        // vault deletes a snapshot only after a forget record names it (§11.1): one that the
        // local index saw, or that a listed snapshot names as `previous`, that the repository no
        // longer has and no record names was deleted by someone else or rolled back with the
        // storage.
        // The local index keeps the ones it saw, so that every run says so until someone looks.
        // (`check` asks too: what this computer saw is a fact about the repository's past, not
        // data taken from the cache.) Present but unreadable ones are reported as damaged.
        let unreadable: HashSet<Id> = bad.iter().map(|(n, _)| *n).collect();
        let gone =
            |p: &Id| !listed.contains(p) && !unreadable.contains(p) && !forgotten.contains(p);
        let mut missing: Vec<Id> = cache.snapshot_ids()?.into_iter().filter(gone).collect();
        missing.extend(ok.iter().filter_map(|(_, s)| s.previous).filter(gone));
        if !missing.is_empty() {
            let acked = cache.acknowledged()?;
            let mut m = self.missing();
            for id in missing {
                if acked.contains(&id) {
                    m.acknowledged.insert(id);
                } else {
                    m.reported.insert(id);
                }
            }
        }
        ok.sort_by_key(|(_, s)| (s.time, s.time_nanos, s.sequence));
        Ok((ok, bad))
    }

    /// The names of every stored snapshot: those of the first copies and those stored only as
    /// their second (§2.2: the first was lost; the second is read, and the loss said), sorted.
    pub(crate) fn snapshot_names(&self) -> Result<Vec<Id>> {
        let mut names = self.names(FileType::Snapshot)?;
        names.extend(self.names(FileType::SnapshotCopy)?);
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn missing(&self) -> std::sync::MutexGuard<'_, MissingSnapshots> {
        self.missing_snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Snapshots that listing found missing: the local index had seen them, or a listed snapshot
    /// names them as its `previous`, the repository no longer has them and no forget record
    /// names them: someone deleted them or the storage was rolled back. Every listing reports
    /// them again until the user acknowledges them on this computer
    /// (`acknowledge_missing_snapshots`).
    pub fn missing_snapshots(&self) -> Vec<Id> {
        self.missing().reported.iter().copied().collect()
    }

    /// Missing snapshots not reported because the user acknowledged them on this computer.
    pub fn acknowledged_missing_snapshots(&self) -> Vec<Id> {
        self.missing().acknowledged.iter().copied().collect()
    }

    /// Stop reporting the snapshots `missing_snapshots` returned, on this computer only: the
    /// user has looked into why they are gone. Other computers, and this one with a new local
    /// index, still report them.
    pub fn acknowledge_missing_snapshots(&self) -> Result<Vec<Id>> {
        let ids = self.missing_snapshots();
        self.cache()?.acknowledge_missing(&ids)?;
        let mut m = self.missing();
        for id in &ids {
            m.reported.remove(id);
            m.acknowledged.insert(*id);
        }
        Ok(ids)
    }

    /// [`Self::snapshots_with`] through the local index.
    pub fn snapshots(&self) -> Result<SnapshotList> {
        self.snapshots_with(false)
    }

    /// Resolve `latest` or a hex prefix (at least 4 digits) to one snapshot.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        self.find_snapshot_noting(spec).map(|f| (f.id, f.snapshot))
    }

    /// [`Self::find_snapshot`], saying which newer snapshots `latest` passed over (§11): the
    /// newest snapshot a full device wrote and not dated in the future is `latest`.
    pub fn find_snapshot_noting(&self, spec: &str) -> Result<Found> {
        if spec == "latest" {
            let (mut all, bad) = self.snapshots()?;
            let now = crate::repo::now().0;
            let mut passed_over: Vec<PassedOver> = bad
                .iter()
                .map(|(id, e)| PassedOver::Unreadable(*id, e.to_string()))
                .collect();
            while let Some((id, snap)) = all.pop() {
                match trust(&snap, now) {
                    Trust::Trusted => {
                        return Ok(Found {
                            id,
                            snapshot: snap,
                            passed_over,
                        })
                    }
                    Trust::WriteOnly => passed_over.push(PassedOver::WriteOnly(id)),
                    Trust::Future => passed_over.push(PassedOver::Future(id, snap.time)),
                }
            }
            if let Some((_, e)) = bad.into_iter().next() {
                return Err(e);
            }
            return Err(Error::SnapshotNotFound(if passed_over.is_empty() {
                "latest (the repository has none)".into()
            } else {
                "latest (no snapshot written by a full device and not dated in the future; name \
                 one by its id)"
                    .into()
            }));
        }
        let spec_l = spec.to_ascii_lowercase();
        if spec_l.len() < 4 || !spec_l.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "snapshot must be `latest` or at least 4 hex digits of its id, not {spec:?}"
            )));
        }
        let forgotten = self.forgotten()?.ids;
        let matches: Vec<Id> = self
            .snapshot_names()?
            .into_iter()
            .filter(|n| n.to_hex().starts_with(&spec_l) && !forgotten.contains(n))
            .collect();
        match matches.as_slice() {
            [] if forgotten.iter().any(|n| n.to_hex().starts_with(&spec_l)) => Err(
                Error::SnapshotNotFound(format!("{spec} (it was forgotten: `vault forget`)")),
            ),
            [] => Err(Error::SnapshotNotFound(spec.into())),
            [id] => Ok(Found {
                id: *id,
                snapshot: self.read_snapshot(id)?,
                passed_over: Vec::new(),
            }),
            _ => Err(Error::AmbiguousSnapshot(spec.into())),
        }
    }
}

/// Snapshots dated more than this many seconds after the reader's clock are flagged (§11).
pub const FUTURE_SLACK_SECS: i64 = 3600;

/// How far a full device takes a snapshot at its word (§11, §13.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    Trusted,
    /// Written by a write-only device, or by whoever holds a stolen profile.
    WriteOnly,
    /// Dated more than [`FUTURE_SLACK_SECS`] after `now`.
    Future,
}

pub fn trust(s: &Snapshot, now: i64) -> Trust {
    if !s.writer.is_full() {
        Trust::WriteOnly
    } else if s.time > now.saturating_add(FUTURE_SLACK_SECS) {
        Trust::Future
    } else {
        Trust::Trusted
    }
}

/// A snapshot found by `latest` or by id.
pub struct Found {
    pub id: Id,
    pub snapshot: Snapshot,
    /// Newer snapshots `latest` did not take, and why.
    pub passed_over: Vec<PassedOver>,
}

pub enum PassedOver {
    Unreadable(Id, String),
    WriteOnly(Id),
    Future(Id, i64),
}

/// Where a new snapshot goes in the chain (§11): the newest snapshot known, by sequence, as its
/// `previous`, and one more than that one's sequence (1 for the first).
/// Only full devices' snapshots count: a forged one must not push the chain to its end.
pub fn chain_after(snaps: &[(Id, Snapshot)]) -> (Option<Id>, u64) {
    match snaps
        .iter()
        .filter(|(_, s)| s.writer.is_full())
        .max_by_key(|(_, s)| s.sequence)
    {
        Some((id, s)) => (Some(*id), s.sequence.saturating_add(1)),
        None => (None, 1),
    }
}

/// A file that lives only in the vault (§17), as the newest snapshot marking it records it.
pub struct VaultOnlyFile {
    pub path: Vec<Vec<u8>>,
    pub node: crate::format::tree::Node,
    pub snapshot: Id,
}

/// Every vault-only file of the repository: from each snapshot that marks any (newest first),
/// the newest record of each path.
pub fn vault_only_files(repo: &Repository) -> Result<Vec<VaultOnlyFile>> {
    let (snaps, _) = repo.snapshots()?;
    vault_only_files_of(repo, &snaps)
}

/// [`vault_only_files`] among `snaps` (sorted by time, as listings are).
///
/// A mark is the newest record of its path unless a later trusted snapshot records the path as
/// an ordinary file: the file was brought back and backed up again, and lives on the device
/// again. "Later" means both a later time and a higher sequence (§11), so that a backup written
/// in the same second as the move's marking snapshot can never unmark what the move deleted;
/// and only a full device's snapshot counts, so that a write-only profile cannot unmark a file
/// to have its only record forgotten.
pub fn vault_only_files_of(
    repo: &Repository,
    snaps: &[(Id, Snapshot)],
) -> Result<Vec<VaultOnlyFile>> {
    let now = crate::repo::now().0;
    let trusted: Vec<&(Id, Snapshot)> = snaps
        .iter()
        .filter(|(_, s)| trust(s, now) == Trust::Trusted)
        .collect();
    let order: HashMap<Id, (i64, u64)> = trusted
        .iter()
        .map(|(id, s)| (*id, (s.time, s.sequence)))
        .collect();
    let later = |a: (i64, u64), b: (i64, u64)| a.0 > b.0 && a.1 > b.1;
    // Each path's newest record among the marking snapshots: (snapshot, flagged).
    let mut newest: HashMap<Vec<Vec<u8>>, (Id, bool)> = HashMap::new();
    let mut out = Vec::new();
    let mut readers = PackReaders::default();
    for (sid, s) in trusted.iter().rev() {
        if s.summary.vault_only == 0 {
            continue;
        }
        let mut budget = crate::treewalk::Budget::of(sid, s);
        let mut stack: Vec<(Id, Vec<Vec<u8>>)> = vec![(s.root, Vec::new())];
        while let Some((t, path)) = stack.pop() {
            if path.len() > MAX_DEPTH {
                return Err(Error::corrupt(
                    format!("tree {}", t.short()),
                    format!("a folder nested deeper than {MAX_DEPTH} levels"),
                ));
            }
            let mut cursor = FolderCursor::new(t);
            while let Some(n) = cursor.next(&mut repo.trees(&mut readers))? {
                budget.take()?;
                let mut c = path.clone();
                c.push(n.name.clone());
                if let NodeKind::Dir { subtree } = n.kind {
                    stack.push((subtree, c));
                    continue;
                }
                let flagged = n.flags & FLAG_VAULT_ONLY != 0;
                let prior = newest.get(&c).copied();
                // An ordinary record later than this mark: the file is back. One of the same
                // second or sequence leaves the mark standing.
                let back = matches!(prior, Some((by, false))
                    if later(order[&by], (s.time, s.sequence)));
                let marked_later = matches!(prior, Some((_, true)));
                if flagged && !back && !marked_later {
                    newest.insert(c.clone(), (*sid, true));
                    out.push(VaultOnlyFile {
                        path: c,
                        node: n,
                        snapshot: *sid,
                    });
                } else if !flagged && prior.is_none() {
                    newest.insert(c, (*sid, false));
                }
            }
        }
    }
    // Snapshots that mark nothing can hold the file again too: look up, in each one later than
    // a mark, the folders that held marked files.
    let mut by_folder: HashMap<&[Vec<u8>], Vec<usize>> = HashMap::new();
    for (i, f) in out.iter().enumerate() {
        if let Some((_, dir)) = f.path.split_last() {
            by_folder.entry(dir).or_default().push(i);
        }
    }
    let mut back = vec![false; out.len()];
    for (sid, s) in &trusted {
        if s.summary.vault_only != 0 {
            continue;
        }
        let mut budget = crate::treewalk::Budget::of(sid, s);
        for (dir, files) in &by_folder {
            let files: Vec<usize> = files
                .iter()
                .copied()
                .filter(|&i| !back[i] && later((s.time, s.sequence), order[&out[i].snapshot]))
                .collect();
            if files.is_empty() {
                continue;
            }
            let Ok(Some(crate::treewalk::Found::Folder(t))) =
                crate::treewalk::resolve(repo, &s.root, dir, &mut readers)
            else {
                continue;
            };
            let names: HashMap<&[u8], usize> = files
                .iter()
                .filter_map(|&i| out[i].path.last().map(|n| (n.as_slice(), i)))
                .collect();
            let mut cursor = FolderCursor::new(t);
            while let Some(n) = cursor.next(&mut repo.trees(&mut readers))? {
                budget.take()?;
                if matches!(n.kind, NodeKind::Dir { .. }) {
                    continue;
                }
                if let Some(&i) = names.get(n.name.as_slice()) {
                    back[i] = true;
                }
            }
        }
    }
    let mut out: Vec<VaultOnlyFile> = out
        .into_iter()
        .zip(back)
        .filter_map(|(f, b)| (!b).then_some(f))
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
