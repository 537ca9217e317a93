//! check: verify the repository's structure and, with --read-data, every byte of every pack,
//! then name the files that damage affects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::backend::FileType;
use crate::error::Result;
use crate::format::index::PackDesc;
use crate::format::snapshot::Snapshot;
use crate::format::BlobEntry;
use crate::ids::Id;
use crate::progress::Progress;
use crate::repo::{Index, PackReaders, Repository};
use crate::snapshots::{trust, Trust};

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: u64,
    pub trees: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub blobs_verified: u64,
    /// Problems that mean data is missing or damaged.
    pub errors: Vec<String>,
    /// Harmless findings (leftovers of interrupted runs).
    pub notes: Vec<String>,
    /// Files whose content is affected by the errors: "snapshot-id:path".
    pub damaged_files: Vec<String>,
    /// The damaged files among them that were moved into the vault (their originals are gone):
    /// "snapshot-id:path".
    pub vault_only_damaged: Vec<String>,
    /// Files marked vault-only in this repository's snapshots.
    pub vault_only_files: u64,
    /// Snapshots written by write-only devices (§11).
    pub write_only_snapshots: u64,
    /// Some errors are in the index itself (a damaged index object, entries that disagree with
    /// a pack, packs missing or of the wrong size): `vault repair index` rebuilds it (§9.1).
    pub repair_index: bool,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

pub struct CheckOptions {
    pub read_data: bool,
    /// Packs downloaded and verified at once.
    pub threads: usize,
}

mod data;
mod trees;

pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: Arc<Progress>,
) -> Result<CheckReport> {
    repo.keys().data_identity()?;
    let mut rep = CheckReport::default();
    // The repository itself is checked, not the local index: read every index object.
    let (index, index_errors) = repo.full_index()?;
    for (name, e) in &index_errors {
        rep.errors.push(format!("index {}: {e}", name.short()));
    }
    let (bad_packs, orphans) = check_packs(repo, &index, &mut rep)?;
    check_tables(repo, &index, &bad_packs, &mut rep);
    rep.repair_index = !rep.errors.is_empty();
    let snaps = check_snapshots(repo, &mut rep)?;
    let mut readers = PackReaders::default();
    let trees::TreeFindings {
        missing_blobs,
        bad_trees,
        mut bad_nodes,
    } = trees::check_trees(repo, &index, &snaps, &mut readers, &mut rep);
    // Blobs the index lacks may sit in packs no index object describes (an index object lost).
    rep.repair_index |= !missing_blobs.is_empty() && orphans > 0;

    let mut damaged_blobs: HashSet<Id> = HashSet::new();
    for (i, p) in index.packs.iter().enumerate() {
        if bad_packs.contains(&p.id) {
            damaged_blobs.extend(index.pack_entries(i).iter().map(|e| e.id));
        }
    }
    if opts.read_data {
        let todo = (&index, &bad_packs);
        damaged_blobs.extend(data::read_packs(
            repo,
            todo,
            opts.threads,
            &progress,
            &mut rep,
        )?);
    }

    let affected: HashSet<Id> = damaged_blobs.union(&missing_blobs).copied().collect();
    if opts.read_data {
        bad_nodes.extend(trees::verify_untrusted_files(
            repo, &snaps, &affected, &mut rep,
        ));
    }
    if !affected.is_empty() || !bad_trees.is_empty() || !bad_nodes.is_empty() {
        let damage = trees::Damage {
            bad_trees: &bad_trees,
            affected: &affected,
            bad_nodes: &bad_nodes,
        };
        trees::name_damaged(repo, &snaps, damage, &mut readers, &mut rep);
        rep.damaged_files.sort();
        rep.vault_only_damaged.sort();
    }
    Ok(rep)
}

/// Packs the index names must exist with the recorded size. Returns the packs that do not, and
/// how many stored packs no index object describes.
fn check_packs(
    repo: &Repository,
    index: &Index,
    rep: &mut CheckReport,
) -> Result<(HashSet<Id>, usize)> {
    let stored: HashMap<Id, u64> = repo.store().list(FileType::Pack)?.into_iter().collect();
    rep.packs = index.packs.len() as u64;
    let mut bad_packs: HashSet<Id> = HashSet::new();
    let mut indexed = HashSet::new();
    for p in &index.packs {
        indexed.insert(p.id);
        match stored.get(&p.id) {
            None => {
                rep.errors.push(format!("pack {} is missing", p.id.short()));
                bad_packs.insert(p.id);
            }
            Some(&len) if len != p.object_len => {
                rep.errors.push(format!(
                    "pack {} has size {len}, the index says {}",
                    p.id.short(),
                    p.object_len
                ));
                bad_packs.insert(p.id);
            }
            _ => {}
        }
    }
    let orphans = stored.keys().filter(|k| !indexed.contains(*k)).count();
    if orphans > 0 {
        rep.notes.push(format!(
            "{orphans} pack(s) are not in any index (left by an interrupted backup, or described by \
             an index object that is gone)"
        ));
    }
    Ok((bad_packs, orphans))
}

/// Compare every index object's description of each pack with the pack's own table (§13.1): an
/// entry that disagrees was made by a broken or hostile writer (a stolen write-only profile can
/// point a stored blob at other bytes). Reads fall back to other locations; `check` names it.
fn check_tables(repo: &Repository, index: &Index, bad_packs: &HashSet<Id>, rep: &mut CheckReport) {
    let todo: Vec<(Id, u64)> = index
        .packs
        .iter()
        .filter(|p| !bad_packs.contains(&p.id))
        .map(|p| (p.id, p.object_len))
        .collect();
    let pos: HashMap<Id, usize> = index
        .packs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id, i))
        .collect();
    let mut again: HashMap<Id, Vec<&(Option<Id>, PackDesc)>> = HashMap::new();
    for a in &index.again {
        again.entry(a.1.id).or_default().push(a);
    }
    for (id, r) in repo.read_pack_tables(&todo) {
        let table = match r {
            Ok(t) => t,
            Err(e) => {
                rep.errors.push(format!(
                    "pack {}: its table cannot be read: {e}",
                    id.short()
                ));
                continue;
            }
        };
        let own: HashSet<&BlobEntry> = table.blobs.iter().collect();
        let i = pos[&id];
        let first = (
            index.sources[i],
            index.described(i),
            index.packs[i].plain_len,
        );
        let later = again
            .get(&id)
            .into_iter()
            .flatten()
            .map(|(src, d)| (*src, d.blobs.as_slice(), d.plain_len));
        for (src, entries, plain_len) in std::iter::once(first).chain(later) {
            let wrong = entries.iter().filter(|e| !own.contains(e)).count()
                + usize::from(plain_len != table.plain_len);
            if wrong > 0 {
                let by = src.map_or("the index".to_string(), |s| format!("index {}", s.short()));
                rep.errors.push(format!(
                    "{by}: {wrong} entr(ies) for pack {} disagree with the pack's own table \
                     (reads fall back to the other locations of those blobs)",
                    id.short()
                ));
            }
        }
    }
}

/// Every snapshot object, and the snapshots this computer knows of that are gone. Returns the
/// snapshots that decoded.
fn check_snapshots(repo: &Repository, rep: &mut CheckReport) -> Result<Vec<(Id, Snapshot)>> {
    let (snaps, bad) = repo.snapshots_with(true)?;
    for (name, e) in &bad {
        rep.errors.push(format!("snapshot {}: {e}", name.short()));
    }
    for id in repo.missing_snapshots() {
        rep.errors.push(format!(
            "snapshot {} is missing: this computer saw it, or a later snapshot was made after \
             it, and vault never deletes snapshots (deleted by someone else, or the storage was \
             rolled back)",
            id.short()
        ));
    }
    for id in repo.acknowledged_missing_snapshots() {
        rep.notes.push(format!(
            "snapshot {} is missing; acknowledged on this computer \
             (`vault snapshots --acknowledge-missing`)",
            id.short()
        ));
    }
    let now = crate::repo::now().0;
    for (id, s) in &snaps {
        match trust(s, now) {
            Trust::Trusted => {}
            Trust::WriteOnly => rep.write_only_snapshots += 1,
            Trust::Future => rep.notes.push(format!(
                "snapshot {} is dated {} seconds after this computer's clock: a device with a \
                 wrong clock, or someone forging snapshots, wrote it; `latest` passes over it",
                id.short(),
                s.time.saturating_sub(now)
            )),
        }
    }
    rep.snapshots = snaps.len() as u64;
    Ok(snaps)
}
