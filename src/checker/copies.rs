//! check: the second copies of the config, snapshots and tree packs (design.md §2.2): each is
//! stored, and (for the config and snapshots, small enough to read every time) intact.

use std::collections::{HashMap, HashSet};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::ids::Id;
use crate::repo::{Index, Repository};

use super::CheckReport;

const FIX: &str = "`vault repair metadata` rewrites it from the other";

/// Check the second copies. Returns the tree packs whose second copy is not stored (at its
/// recorded size), so that `--read-data` does not read them.
pub(super) fn check_copies(
    repo: &Repository,
    index: &Index,
    forgotten: &HashSet<Id>,
    rep: &mut CheckReport,
) -> Result<HashSet<Id>> {
    check_config_copy(repo, rep)?;
    check_snapshot_copies(repo, forgotten, rep)?;
    check_tree_pack_copies(repo, index, rep)
}

fn check_config_copy(repo: &Repository, rep: &mut CheckReport) -> Result<()> {
    // The first copy was read when the repository was opened; a damaged one is among the
    // damaged copies reported at the end. The second is read here.
    let r = repo.store().get(FileType::ConfigCopy, "").and_then(|ct| {
        let keys = repo.keys();
        let plain = keys.data_identity()?.decrypt(&ct, "config copy")?;
        crate::format::config::Config::decode(
            &plain,
            &keys.repo_id,
            &keys.config_check,
            keys.full().ok().map(|f| &f.config_mac),
        )
    });
    match r {
        Ok(c) if c == *repo.config() => {}
        Ok(_) => rep.errors.push(format!(
            "config: its second copy (copies/config) says something else than the first; {FIX}"
        )),
        Err(e) => rep.errors.push(format!(
            "config: its second copy (copies/config) cannot be used: {e}; {FIX}"
        )),
    }
    Ok(())
}

fn check_snapshot_copies(
    repo: &Repository,
    forgotten: &HashSet<Id>,
    rep: &mut CheckReport,
) -> Result<()> {
    let firsts: HashSet<Id> = repo.names(FileType::Snapshot)?.into_iter().collect();
    let seconds: Vec<Id> = repo
        .names(FileType::SnapshotCopy)?
        .into_iter()
        .filter(|n| !forgotten.contains(n))
        .collect();
    let have: HashSet<Id> = seconds.iter().copied().collect();
    let mut lacking: Vec<&Id> = firsts
        .iter()
        .filter(|n| !have.contains(n) && !forgotten.contains(n))
        .collect();
    lacking.sort();
    for id in lacking {
        rep.errors.push(format!(
            "snapshot {}: its second copy is not stored (a backup stopped between the two \
             writes, or it was lost); {FIX}",
            id.short()
        ));
    }
    for (id, r) in repo.fetch_all(seconds, |id| {
        let ct = repo.store().get(FileType::SnapshotCopy, &id.to_hex())?;
        repo.open_snapshot(id, &ct).map(|_| ())
    }) {
        // A second copy alone is listed and read like any snapshot; the loss of its first is
        // among the damaged copies reported at the end.
        let alone = !firsts.contains(&id);
        match r {
            Ok(()) => {}
            Err(e @ Error::Cache { .. }) => return Err(e),
            Err(e) => rep.errors.push(format!(
                "snapshot {}: its second copy cannot be used: {e}; {}",
                id.short(),
                if alone {
                    "its first copy is not stored either: the snapshot is lost"
                } else {
                    FIX
                }
            )),
        }
    }
    Ok(())
}

/// Every tree pack the index names has a second copy of the same size; second copies of
/// nothing are noted (the next prune removes them).
fn check_tree_pack_copies(
    repo: &Repository,
    index: &Index,
    rep: &mut CheckReport,
) -> Result<HashSet<Id>> {
    let stored: HashMap<Id, u64> = repo
        .store()
        .list(FileType::TreePackCopy)?
        .into_iter()
        .collect();
    let mut missing = HashSet::new();
    let mut trees = HashSet::new();
    for p in &index.packs {
        if p.pack_type != crate::format::BlobType::Tree || !trees.insert(p.id) {
            continue;
        }
        match stored.get(&p.id) {
            Some(&len) if len == p.object_len => {}
            Some(&len) => {
                rep.errors.push(format!(
                    "tree pack {}: its second copy has size {len}, the index says {}; {FIX}",
                    p.id.short(),
                    p.object_len
                ));
                missing.insert(p.id);
            }
            None => {
                rep.errors.push(format!(
                    "tree pack {}: its second copy is not stored; {FIX}",
                    p.id.short()
                ));
                missing.insert(p.id);
            }
        }
    }
    let indexed: HashSet<Id> = index.packs.iter().map(|p| p.id).collect();
    let orphans = stored.keys().filter(|k| !indexed.contains(*k)).count();
    if orphans > 0 {
        rep.notes.push(format!(
            "{orphans} second cop(ies) of tree packs belong to no indexed pack (left by an \
             interrupted backup or prune; `vault prune` removes them after its grace period)"
        ));
    }
    Ok(missing)
}

/// The copies that failed while this run read the repository, their other copy serving.
pub(super) fn report_damaged(repo: &Repository, skip_packs: bool, rep: &mut CheckReport) {
    for d in repo.damaged_copies() {
        if skip_packs && d.kind == FileType::Pack {
            continue; // `--read-data` read both copies and said so
        }
        if d.is_first() {
            rep.errors.push(format!(
                "{}: its first copy cannot be used ({}); its second copy is intact, so nothing \
                 is lost; {FIX}",
                d.what(),
                d.error
            ));
        } else {
            rep.errors.push(format!(
                "{}: neither copy in the repository can be used ({}); the local index on this \
                 computer still holds it: `vault repair metadata` writes both again",
                d.what(),
                d.error
            ));
        }
    }
}
