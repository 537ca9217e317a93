//! `vault repair metadata`: rewrite a damaged or missing copy of the config, a snapshot or a
//! tree pack from its intact other copy (design.md §2.2), or a snapshot from the local index.

use std::collections::HashSet;
use std::io::Read;

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::config::Config;
use crate::format::snapshot::Snapshot;
use crate::format::BlobType;
use crate::ids::Id;
use crate::repo::Repository;

#[derive(Debug, Default, Serialize)]
pub struct RecopyReport {
    pub dry_run: bool,
    /// Copies rewritten (or, in a dry run, that would be): "snapshot 1a2b3c4d (first copy)".
    pub rewritten: Vec<String>,
    /// Objects with no intact copy left anywhere: what is lost.
    pub lost: Vec<String>,
    /// Copies that could not be replaced (Object Lock retention, a store refusing), with why.
    pub failed: Vec<String>,
    pub snapshots: u64,
    pub tree_packs: u64,
}

impl RecopyReport {
    pub fn clean(&self) -> bool {
        self.lost.is_empty() && self.failed.is_empty()
    }
}

fn interrupted() -> Result<()> {
    if crate::interrupt::requested() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// One object's two copies as read: each its bytes when they verify.
struct Pair {
    first: Option<Vec<u8>>,
    second: Option<Vec<u8>>,
}

/// Check every copy and rewrite each damaged or missing one from an intact one. Only a full
/// device can (snapshots and tree packs are encrypted to the data key).
pub fn repair_metadata(repo: &Repository, dry_run: bool) -> Result<RecopyReport> {
    repo.keys().data_identity()?;
    let mut rep = RecopyReport {
        dry_run,
        ..Default::default()
    };

    // The config.
    let verify_config = |ct: &[u8]| -> Result<()> {
        let keys = repo.keys();
        let plain = keys.data_identity()?.decrypt(ct, "config")?;
        let c = Config::decode(
            &plain,
            &keys.repo_id,
            &keys.config_check,
            keys.full().ok().map(|f| &f.config_mac),
        )?;
        if c == *repo.config() {
            Ok(())
        } else {
            Err(Error::corrupt("config", "differs from the one in use"))
        }
    };
    let pair = read_pair(repo, FileType::Config, "", |b| verify_config(b))?;
    fix(repo, FileType::Config, "", "config", pair, None, &mut rep);

    // Snapshots: both copies of every one not forgotten; the local index as a last source.
    let forgotten = repo.forgotten()?.ids;
    let mut names: Vec<Id> = repo.names(FileType::Snapshot)?;
    names.extend(repo.names(FileType::SnapshotCopy)?);
    let names: Vec<Id> = names
        .into_iter()
        .filter(|n| !forgotten.contains(n))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    rep.snapshots = names.len() as u64;
    for id in names {
        interrupted()?;
        let pair = read_pair(repo, FileType::Snapshot, &id.to_hex(), |ct| {
            repo.open_snapshot(&id, ct).map(|_| ())
        })?;
        let kept = if pair.first.is_none() && pair.second.is_none() {
            from_local_index(repo, &id)?
        } else {
            None
        };
        let what = format!("snapshot {}", id.short());
        fix(
            repo,
            FileType::Snapshot,
            &id.to_hex(),
            &what,
            pair,
            kept,
            &mut rep,
        );
    }

    // Tree packs: every one the index names, each copy read whole and authenticated.
    let (index, _) = repo.full_index()?;
    let mut seen = HashSet::new();
    for p in &index.packs {
        if p.pack_type != BlobType::Tree || !seen.insert(p.id) {
            continue;
        }
        interrupted()?;
        rep.tree_packs += 1;
        let pair = read_pair(repo, FileType::Pack, &p.id.to_hex(), |ct| {
            if ct.len() as u64 != p.object_len {
                return Err(Error::corrupt("tree pack", "not the size the index says"));
            }
            let what = format!("pack {}", p.id.short());
            let mut s = repo
                .keys()
                .data_identity()?
                .open(std::io::Cursor::new(ct), &what)?;
            repo.check_pack_header(&mut s, &what)?;
            // Every STREAM chunk authenticated, the last one included.
            std::io::copy(&mut s.by_ref(), &mut std::io::sink())
                .map_err(|e| crate::crypto::read_error(&what, e))?;
            Ok(())
        })?;
        let what = format!("tree pack {}", p.id.short());
        fix(
            repo,
            FileType::Pack,
            &p.id.to_hex(),
            &what,
            pair,
            None,
            &mut rep,
        );
    }
    Ok(rep)
}

/// Read both copies of an object; each is kept only when it verifies.
fn read_pair(
    repo: &Repository,
    t: FileType,
    name: &str,
    verify: impl Fn(&[u8]) -> Result<()>,
) -> Result<Pair> {
    let mut out = [None, None];
    for (i, kind) in [Some(t), t.copy()].into_iter().enumerate() {
        let Some(kind) = kind else { continue };
        match repo.store().get(kind, name) {
            Ok(b) => {
                if verify(&b).is_ok() {
                    out[i] = Some(b);
                }
            }
            Err(e @ (Error::Cache { .. } | Error::Interrupted)) => return Err(e),
            Err(_) => {}
        }
    }
    let [first, second] = out;
    Ok(Pair { first, second })
}

/// A snapshot neither copy of which verifies, from the local index (verified again), encrypted
/// anew: its name is its keyed id, so any encryption of the same plaintext is the same object.
fn from_local_index(repo: &Repository, id: &Id) -> Result<Option<Vec<u8>>> {
    let Some(plain) = repo.cache()?.snapshot(id)? else {
        return Ok(None);
    };
    let keys = repo.keys();
    if keys.snapshot_id.keyed_hash(&plain) != *id
        || Snapshot::decode(&plain, &keys.repo_id, &keys.snapshot_macs()).is_err()
    {
        return Ok(None);
    }
    Ok(Some(keys.recipient.encrypt(&plain)?))
}

/// Rewrite each copy that did not verify from one that did (or from `fallback`).
fn fix(
    repo: &Repository,
    t: FileType,
    name: &str,
    what: &str,
    pair: Pair,
    fallback: Option<Vec<u8>>,
    rep: &mut RecopyReport,
) {
    let Some(copy_t) = t.copy() else { return };
    let good = pair
        .first
        .as_ref()
        .or(pair.second.as_ref())
        .or(fallback.as_ref());
    let Some(good) = good else {
        rep.lost.push(format!(
            "{what} is lost: neither copy can be read and this computer's local index does not \
             hold it"
        ));
        return;
    };
    for (kind, have, label) in [
        (t, &pair.first, "first copy"),
        (copy_t, &pair.second, "second copy"),
    ] {
        if have.is_some() {
            continue;
        }
        rep.rewritten.push(format!("{what} ({label})"));
        if rep.dry_run {
            continue;
        }
        // Objects are never replaced with other content (§2): this restores the content the
        // name always stood for, after removing what is there (damaged, or nothing).
        let r = match repo.store().delete(kind, name) {
            Ok(()) | Err(Error::NotFound(_)) => repo.store().put(kind, name, good),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            rep.rewritten.pop();
            rep.failed.push(format!("{what} ({label}): {e}"));
        }
    }
}
