//! check: verify the repository's structure and, with --read-data, every byte of every pack,
//! then name the files that damage affects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::backend::FileType;
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::format::{BlobEntry, BlobType};
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
    /// Files stored while they kept changing (§10, `FLAG_TORN`), counted once per tree.
    pub torn_files: u64,
    /// Snapshots written by write-only devices (§11).
    pub write_only_snapshots: u64,
    /// Some errors are in the index itself (a damaged index object, entries that disagree with
    /// a pack, packs missing or of the wrong size): `vault repair index` rebuilds it (§9.1).
    pub repair_index: bool,
    /// What was downloaded against what was read and verified.
    pub download: CheckDownload,
}

/// Bytes downloaded by `check` against the bytes of packs it read and verified.
#[derive(Debug, Default, Serialize)]
pub struct CheckDownload {
    /// Everything received from the repository storage by this run, opening it included
    /// (a pack that failed is downloaded twice, §2.1).
    pub total: u64,
    /// Stored bytes of the packs read whole and verified (`--read-data`; both copies of a tree
    /// pack); 0 without it.
    pub verified: u64,
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

mod copies;
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
    let descs = descriptions(&index);
    let mut first_copies = Vec::new();
    if !opts.read_data {
        first_copies = check_tables(repo, &index, &descs, &bad_packs, &mut rep);
    }
    rep.repair_index = !rep.errors.is_empty();
    // Not the index's fault: a tree pack's first copy that holds other bytes (§2.2).
    rep.errors.extend(first_copies);
    check_key_files(repo, &mut rep)?;
    let forgotten = repo.forgotten()?.ids;
    let no_copy = copies::check_copies(repo, &index, &forgotten, &mut rep)?;
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
    let mut served = HashSet::new();
    for (i, p) in index.packs.iter().enumerate() {
        if !bad_packs.contains(&p.id) {
            continue;
        }
        if p.pack_type == BlobType::Tree && !no_copy.contains(&p.id) {
            // Its second copy is stored at the right size (§2.2); the walk above read it.
            if served.insert(p.id) {
                rep.errors.push(format!(
                    "tree pack {}: its second copy is stored, so nothing is lost; `vault repair \
                     metadata` puts the first back",
                    p.id.short()
                ));
            }
            continue;
        }
        damaged_blobs.extend(index.pack_entries(i).iter().map(|e| e.id));
    }
    if opts.read_data {
        let before = rep.errors.len();
        let todo = (&index, &descs, &bad_packs, &no_copy);
        damaged_blobs.extend(data::read_packs(
            repo,
            todo,
            opts.threads,
            &progress,
            &mut rep,
        )?);
        // The tables read disagreeing with the index is the index's fault.
        rep.repair_index |= rep.errors[before..]
            .iter()
            .any(|e| e.contains("disagree with the pack's own table"));
    }

    copies::report_damaged(repo, opts.read_data, &mut rep);
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
    rep.download.total = repo.store().stats().bytes_received;
    if rep.torn_files > 0 {
        rep.notes.push(format!(
            "{} file(s) kept changing while they were backed up and may mix two versions \
             (`vault ls` marks them; back them up again once they are no longer written)",
            rep.torn_files
        ));
    }
    Ok(rep)
}

/// Every key file (§4.3): its bytes match its name, its label is well formed and was written by
/// a device holding the master secret, and its age header is one its method would have. A
/// damaged key file cannot unlock anything; the user must hear it while another method still
/// works, not on the day they need it.
fn check_key_files(repo: &Repository, rep: &mut CheckReport) -> Result<()> {
    use crate::format::keyfile::{self, Method};
    let mac_key = &repo.keys().full()?.key_file_mac;
    for (name, _) in repo.store().list(FileType::Key)? {
        let data = match repo.store().get(FileType::Key, &name.to_hex()) {
            Ok(d) => d,
            Err(e) if e.is_corrupt() => {
                rep.errors.push(format!("key file {}: {e}", name.short()));
                continue;
            }
            Err(e) => return Err(e),
        };
        let replace = |method: &str| {
            format!(
                "it can no longer unlock the repository: add a new {method} (`vault key add`) \
                 and remove this one (`vault key remove {}`)",
                name.short()
            )
        };
        let env = match keyfile::open_envelope(&name, &data) {
            Ok(env) => env,
            Err(e) => {
                let (label, method) = match keyfile::parse_envelope(&data) {
                    Ok(env) => (
                        format!(" (its label says: {})", env.method.name()),
                        env.method.name(),
                    ),
                    Err(_) => (String::new(), "unlock method"),
                };
                rep.errors.push(format!("{e}{label}; {}", replace(method)));
                continue;
            }
        };
        let stanza = crate::crypto::stanza_kind(env.age);
        let fits = match env.method {
            Method::Passphrase => stanza == "passphrase",
            Method::Plugin => stanza == "plugin",
            _ => stanza == "age identity",
        };
        if !env.verify(mac_key) || !fits {
            rep.errors.push(format!(
                "key file {} ({}): its label does not verify (damaged, or not written by a device \
                 holding this repository's keys); {}",
                name.short(),
                env.method.name(),
                replace(env.method.name())
            ));
        }
    }
    Ok(())
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

/// Every description of each pack, by pack: the index object that made it (`None`: recovered
/// from the pack's table), its entries and plaintext length.
pub(super) type Descriptions<'a> = HashMap<Id, Vec<(Option<Id>, &'a [BlobEntry], u64)>>;

fn descriptions(index: &Index) -> Descriptions<'_> {
    let mut d: Descriptions<'_> = HashMap::new();
    for (i, p) in index.packs.iter().enumerate() {
        d.entry(p.id)
            .or_default()
            .push((index.sources[i], index.described(i), p.plain_len));
    }
    for (src, desc) in &index.again {
        d.entry(desc.id)
            .or_default()
            .push((*src, desc.blobs.as_slice(), desc.plain_len));
    }
    d
}

/// Compare every description of pack `id` with the pack's own table (§13.1): an entry that
/// disagrees was made by a broken or hostile writer (a stolen write-only profile can point a
/// stored blob at other bytes). Reads fall back to other locations; `check` names it.
pub(super) fn disagreements(
    id: &Id,
    (plain_len, table): (u64, &[BlobEntry]),
    descs: &[(Option<Id>, &[BlobEntry], u64)],
) -> Vec<String> {
    let own: HashSet<&BlobEntry> = table.iter().collect();
    let mut out = Vec::new();
    for (src, entries, len) in descs {
        let wrong =
            entries.iter().filter(|e| !own.contains(e)).count() + usize::from(*len != plain_len);
        if wrong > 0 {
            let by = src.map_or("the index".to_string(), |s| format!("index {}", s.short()));
            out.push(format!(
                "{by}: {wrong} entr(ies) for pack {} disagree with the pack's own table \
                 (reads fall back to the other locations of those blobs)",
                id.short()
            ));
        }
    }
    if own.len() != table.len() {
        out.push(format!("pack {}: its table lists a blob twice", id.short()));
    }
    out
}

/// Without `--read-data`: read every pack's table (one ranged read each) and compare it with
/// every description of the pack. `--read-data` compares the tables it reads anyway.
/// Returns the errors about tree packs whose first copy holds other bytes than the index
/// describes while the second holds them (§2.2): the index is right, the first copy is not.
fn check_tables(
    repo: &Repository,
    index: &Index,
    descs: &Descriptions<'_>,
    bad_packs: &HashSet<Id>,
    rep: &mut CheckReport,
) -> Vec<String> {
    let todo: Vec<(Id, u64)> = index
        .packs
        .iter()
        .filter(|p| !bad_packs.contains(&p.id))
        .map(|p| (p.id, p.object_len))
        .collect();
    let trees: HashSet<Id> = index
        .packs
        .iter()
        .filter(|p| p.pack_type == BlobType::Tree)
        .map(|p| p.id)
        .collect();
    let mut first_copies = Vec::new();
    for (id, r) in repo.read_pack_tables(&todo) {
        match r {
            Ok(t) => {
                let descs = descs.get(&id).map_or(&[][..], |d| d.as_slice());
                let wrong = disagreements(&id, (t.plain_len, &t.blobs), descs);
                let second_agrees = || {
                    let len = index
                        .packs
                        .iter()
                        .find(|p| p.id == id)
                        .map(|p| p.object_len);
                    len.and_then(|l| repo.read_pack_table_of(FileType::TreePackCopy, &id, l).ok())
                        .is_some_and(|c| {
                            disagreements(&id, (c.plain_len, &c.blobs), descs).is_empty()
                        })
                };
                if !wrong.is_empty() && trees.contains(&id) && second_agrees() {
                    first_copies.push(format!(
                        "tree pack {}: its first copy holds other bytes than the index \
                         describes; its second copy is intact, so nothing is lost; `vault \
                         repair metadata` rewrites the first",
                        id.short()
                    ));
                } else {
                    rep.errors.extend(wrong);
                }
            }
            Err(e) => rep.errors.push(format!(
                "pack {}: its table cannot be read: {e}",
                id.short()
            )),
        }
    }
    first_copies
}

/// Every snapshot object, and the snapshots this computer knows of that are gone. Returns the
/// snapshots that decoded.
fn check_snapshots(repo: &Repository, rep: &mut CheckReport) -> Result<Vec<(Id, Snapshot)>> {
    let (snaps, bad) = repo.snapshots_with(true)?;
    for (name, e) in &bad {
        rep.errors.push(format!("snapshot {}: {e}", name.short()));
    }
    // Forget records and condemn markers only a full device could write (§11.1, §13.2): one
    // that does not verify counts for nothing, so its snapshots would be reported missing.
    for (name, e) in repo.forgotten()?.bad {
        rep.errors.push(format!(
            "{e} (it counts for nothing: the snapshots it names are listed, or reported missing; \
             once you know where it came from, delete forgotten/{} from the repository)",
            name.to_hex()
        ));
    }
    let (markers, bad_markers) = repo.condemn_markers()?;
    for (_, e) in bad_markers {
        rep.errors.push(format!(
            "{e} (it counts for nothing; the next `vault prune` removes it)"
        ));
    }
    let waiting: usize = markers.iter().map(|m| m.marker.packs.len()).sum();
    if waiting > 0 {
        rep.notes.push(format!(
            "{waiting} pack(s) condemned by a prune wait for their grace period; the next \
             `vault prune` after it deletes them"
        ));
    }
    for id in repo.missing_snapshots() {
        rep.errors.push(format!(
            "snapshot {} is missing: this computer saw it, or a later snapshot was made after \
             it, and no forget record names it (deleted by someone else, or the storage was \
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
