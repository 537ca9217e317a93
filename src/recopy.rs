//! `vault repair metadata`: rewrite a damaged or missing copy of the config, a snapshot or a
//! tree pack from its intact other copy (design.md §2.2), or a snapshot from the local index.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::config::Config;
use crate::format::snapshot::Snapshot;
use crate::format::{BlobEntry, BlobType};
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

    // Tree packs: every one the index names, each copy read whole and authenticated, and
    // compared with what the index says the pack holds.
    let (index, _) = repo.full_index()?;
    // Where the index places each blob: a copy that holds another pack's bytes may be written
    // over only when everything it holds is stored elsewhere too.
    let mut homes: HashMap<Id, HashSet<Id>> = HashMap::new();
    for (i, p) in index.packs.iter().enumerate() {
        for e in index.described(i) {
            homes.entry(e.id).or_default().insert(p.id);
        }
    }
    let mut seen = HashSet::new();
    for (i, p) in index.packs.iter().enumerate() {
        if p.pack_type != BlobType::Tree || !seen.insert(p.id) {
            continue;
        }
        interrupted()?;
        rep.tree_packs += 1;
        let listed: HashSet<&BlobEntry> = index.described(i).iter().collect();
        let what = format!("tree pack {}", p.id.short());
        let mut pair = Pair {
            first: None,
            second: None,
        };
        let mut unsafe_to_replace = None;
        for (kind, slot) in [
            (FileType::Pack, &mut pair.first),
            (FileType::TreePackCopy, &mut pair.second),
        ] {
            let bytes = match repo.store().get(kind, &p.id.to_hex()) {
                Ok(b) => b,
                Err(e @ (Error::Cache { .. } | Error::Interrupted)) => return Err(e),
                Err(_) => continue,
            };
            match pack_table(repo, &p.id, &bytes) {
                Ok(table)
                    if bytes.len() as u64 == p.object_len
                        && listed.iter().all(|e| table.contains(e)) =>
                {
                    *slot = Some(bytes);
                }
                Ok(table) => {
                    // A genuine pack of this repository, but not the one the index describes
                    // under this name: written over only if its blobs are stored elsewhere.
                    let elsewhere = table.iter().all(|e| {
                        homes
                            .get(&e.id)
                            .is_some_and(|h| h.iter().any(|pid| *pid != p.id))
                    });
                    if !elsewhere {
                        unsafe_to_replace = Some(if kind == FileType::Pack {
                            "first copy"
                        } else {
                            "second copy"
                        });
                    }
                }
                Err(_) => {}
            }
        }
        if let Some(label) = unsafe_to_replace {
            if pair.first.is_none() || pair.second.is_none() {
                rep.failed.push(format!(
                    "{what}: its {label} holds trees that no index lists anywhere else, and it \
                     differs from what the index says; nothing was changed (`vault repair \
                     index` first, then this again)"
                ));
                continue;
            }
        }
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

/// The table of a stored pack, every byte of it authenticated and its header checked.
fn pack_table(repo: &Repository, id: &Id, ct: &[u8]) -> Result<Vec<BlobEntry>> {
    let what = format!("pack {}", id.short());
    let mut s = repo
        .keys()
        .data_identity()?
        .open(std::io::Cursor::new(ct), &what)?;
    repo.check_pack_header(&mut s, &what)?;
    // Every STREAM chunk authenticated, the last one included.
    std::io::copy(&mut s.by_ref(), &mut std::io::sink())
        .map_err(|e| crate::crypto::read_error(&what, e))?;
    Ok(crate::repo::read_table_from_end(&mut s, &what)?.1)
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
