//! `vault forget` (§11.1): which snapshots a retention policy or a list of ids removes, with the
//! reason each kept one stays, never a vault-only file's only record unless it is named; then
//! the forget record and the removal of the snapshot objects.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::format::records::ForgetRecord;
use crate::format::snapshot::Snapshot;
use crate::ids::Id;
use crate::repo::Repository;
use crate::retention::{self, Candidate, Policy};
use crate::snapshots::vault_only_files_of;

/// What makes two snapshots one group: the policy is applied to each group on its own. The
/// writer (a full device, or each write-only device) always separates groups, so snapshots a
/// stolen profile forges can only crowd out that profile's own (§14.1).
#[derive(Clone, Copy, Debug)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl GroupBy {
    /// `host,paths`, `host`, `tags`, ... or empty (one group per writer).
    pub fn parse(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" | "path" => g.paths = true,
                "tags" | "tag" => g.tags = true,
                other => {
                    return Err(Error::Invalid(format!(
                        "--group-by takes host, paths and tags separated by commas, not {other:?}"
                    )))
                }
            }
        }
        Ok(g)
    }
}

/// Which snapshots the policy looks at at all (the others are left alone).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub hosts: Vec<String>,
    /// A snapshot passes when it holds every tag of one of these lists.
    pub tags: Vec<Vec<String>>,
    /// A snapshot passes when it has all of these backup paths.
    pub paths: Vec<Vec<u8>>,
}

impl Filter {
    fn passes(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && (self.tags.is_empty()
                || self
                    .tags
                    .iter()
                    .any(|all| all.iter().all(|t| s.tags.contains(t))))
            && self.paths.iter().all(|p| s.paths.contains(p))
    }
}

/// What to forget.
#[derive(Default)]
pub struct Options {
    pub policy: Policy,
    /// Remove every snapshot of the matching groups (with no policy): a policy alone never
    /// empties a group.
    pub keep_none: bool,
    /// Explicit snapshots (`latest` or id prefixes) instead of a policy.
    pub ids: Vec<String>,
    pub group_by: GroupBy,
    pub filter: Filter,
    /// Absolute paths (components from the root) whose vault-only files may go with the
    /// snapshots that hold them: nothing else removes a vault-only file's last record.
    pub release_vault_only: Vec<Vec<Vec<u8>>>,
}

/// One snapshot and what happens to it.
pub struct Entry {
    pub id: Id,
    pub snapshot: Snapshot,
    /// Why it stays; empty: it is removed.
    pub reasons: Vec<String>,
    /// Vault-only files (the only copy) whose newest record is in this snapshot and that were
    /// not released.
    pub vault_only_held: u64,
    /// Released vault-only files whose newest record goes with this snapshot.
    pub vault_only_released: u64,
}

impl Entry {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Snapshots the policy treats together.
pub struct Group {
    pub host: Option<String>,
    pub paths: Option<Vec<Vec<u8>>>,
    pub tags: Option<Vec<String>>,
    /// "full", or "write-only <device id>".
    pub writer: String,
    pub entries: Vec<Entry>,
}

/// Everything `forget` would do.
pub struct Plan {
    pub groups: Vec<Group>,
    /// Snapshots that failed to read: never removed by a policy (they are reported).
    pub unreadable: Vec<Id>,
    /// Unreadable snapshots named by id: removed (nothing in them can be read anyway).
    pub unreadable_named: Vec<Id>,
}

impl Plan {
    pub fn removed(&self) -> impl Iterator<Item = &Entry> {
        self.groups
            .iter()
            .flat_map(|g| g.entries.iter())
            .filter(|e| !e.keep())
    }
    /// Vault-only files released by name that go with the removed snapshots.
    pub fn released(&self) -> u64 {
        self.removed().map(|e| e.vault_only_released).sum()
    }
}

fn is_below(path: &[Vec<u8>], prefix: &[Vec<u8>]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}

/// Decide. Reads the snapshots and, when any holds vault-only files, their trees.
pub fn plan(repo: &Repository, opts: &Options, now: i64) -> Result<Plan> {
    repo.keys().full()?;
    let explicit = !opts.ids.is_empty();
    if explicit && (!opts.policy.is_empty() || opts.keep_none) {
        return Err(Error::Invalid(
            "give snapshot ids or a policy (--keep-...), not both".into(),
        ));
    }
    if !explicit && opts.policy.is_empty() && !opts.keep_none {
        return Err(Error::Invalid(
            "nothing to forget: give snapshot ids, a policy (--keep-last, --keep-daily, \
             --keep-within, ...) or --keep-none"
                .into(),
        ));
    }
    if opts.keep_none && !opts.policy.is_empty() {
        return Err(Error::Invalid(
            "--keep-none removes every snapshot of the groups; it cannot go with --keep-...".into(),
        ));
    }
    let (snaps, bad) = repo.snapshots()?;
    let mut chosen: HashSet<Id> = HashSet::new();
    let mut unreadable_named = Vec::new();
    for spec in &opts.ids {
        match repo.find_snapshot(spec) {
            Ok((id, _)) => {
                chosen.insert(id);
            }
            Err(e) => {
                // An unreadable snapshot (both copies damaged) can be forgotten by its id:
                // nothing in it can be read, so nothing in it is kept by forgetting others.
                let spec_l = spec.to_ascii_lowercase();
                let m: Vec<Id> = bad
                    .iter()
                    .map(|(n, _)| *n)
                    .filter(|n| spec_l.len() >= 4 && n.to_hex().starts_with(&spec_l))
                    .collect();
                match m.as_slice() {
                    [one] => {
                        unreadable_named.push(*one);
                    }
                    _ => return Err(e),
                }
            }
        }
    }

    // The newest trusted record of each vault-only path, and who holds it.
    let mut held: HashMap<Id, u64> = HashMap::new();
    let mut released: HashMap<Id, u64> = HashMap::new();
    for f in vault_only_files_of(repo, &snaps)? {
        if opts.release_vault_only.iter().any(|p| is_below(&f.path, p)) {
            *released.entry(f.snapshot).or_default() += 1;
        } else {
            *held.entry(f.snapshot).or_default() += 1;
        }
    }

    type Key = (
        Option<String>,
        Option<Vec<Vec<u8>>>,
        Option<Vec<String>>,
        String,
    );
    let mut groups: BTreeMap<Key, Vec<(Id, Snapshot)>> = BTreeMap::new();
    for (id, s) in snaps {
        if explicit {
            if !chosen.contains(&id) {
                continue;
            }
        } else if !opts.filter.passes(&s) {
            continue;
        }
        let g = opts.group_by;
        let mut paths = s.paths.clone();
        paths.sort();
        let mut tags = s.tags.clone();
        tags.sort();
        let writer = match s.writer {
            crate::format::WrittenBy::Full => "full".to_string(),
            crate::format::WrittenBy::Device(d) => format!("write-only {}", d.to_hex()),
        };
        let key = (
            g.host.then(|| s.host.clone()),
            g.paths.then_some(paths),
            g.tags.then_some(tags),
            writer,
        );
        groups.entry(key).or_default().push((id, s));
    }

    let mut out = Vec::new();
    for ((host, paths, tags, writer), members) in groups {
        let decisions = if explicit || opts.keep_none {
            vec![retention::Decision::default(); members.len()]
        } else {
            // Newest first: of two snapshots in one second, the later written (the listing's
            // order) counts as the newer.
            let cands: Vec<Candidate> = members
                .iter()
                .rev()
                .map(|(_, s)| Candidate {
                    time: s.time,
                    tags: s.tags.clone(),
                })
                .collect();
            let mut d = retention::apply(&opts.policy, &cands, now);
            d.reverse();
            d
        };
        if !explicit && !opts.keep_none && decisions.iter().all(|d| !d.keep()) {
            return Err(Error::Invalid(format!(
                "the policy keeps no snapshot of the group {}; nothing was forgotten. Use \
                 --keep-none (with --host, --tag or --path) to remove a whole group",
                describe(&host, &paths, &tags, &writer)
            )));
        }
        let entries = members
            .into_iter()
            .zip(decisions)
            .map(|((id, snapshot), d)| {
                let vault_only_held = held.get(&id).copied().unwrap_or(0);
                let mut reasons = d.reasons;
                if reasons.is_empty() && vault_only_held > 0 {
                    reasons.push(format!(
                        "holds {vault_only_held} vault-only file(s) (the only copy)"
                    ));
                }
                Entry {
                    id,
                    snapshot,
                    reasons,
                    vault_only_held,
                    vault_only_released: released.get(&id).copied().unwrap_or(0),
                }
            })
            .collect();
        out.push(Group {
            host,
            paths,
            tags,
            writer,
            entries,
        });
    }
    Ok(Plan {
        groups: out,
        unreadable: bad
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !unreadable_named.contains(id))
            .collect(),
        unreadable_named,
    })
}

/// How a group is shown to users.
pub fn describe(
    host: &Option<String>,
    paths: &Option<Vec<Vec<u8>>>,
    tags: &Option<Vec<String>>,
    writer: &str,
) -> String {
    let mut parts = Vec::new();
    if let Some(h) = host {
        parts.push(format!("host {h}"));
    }
    if let Some(p) = paths {
        let p: Vec<String> = p
            .iter()
            .map(|p| {
                String::from_utf8_lossy(p)
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect()
            })
            .collect();
        parts.push(format!("paths {}", p.join(", ")));
    }
    if let Some(t) = tags {
        parts.push(format!("tags [{}]", t.join(",")));
    }
    parts.push(format!("written by {writer}"));
    parts.join(", ")
}

/// What a forget did.
#[derive(Default)]
pub struct Done {
    pub forgotten: Vec<Id>,
    /// Snapshot objects removed from the store (this run's and any left by an earlier forget).
    pub deleted: u64,
    /// Objects Object Lock keeps until the given time (Unix seconds, store clock): a later
    /// `forget` or `prune` removes them; they are forgotten already.
    pub locked: Vec<(FileType, Id, i64)>,
}

/// Store one forget record naming every snapshot forgotten so far (earlier records merged into
/// it), then remove the earlier records and the snapshot objects. The record comes first: a run
/// stopped after it has forgotten the snapshots, and the next one removes what is left.
pub fn execute(repo: &Repository, remove: &[Id], host: &str) -> Result<Done> {
    let old = repo.forgotten()?;
    let mut all: Vec<Id> = old
        .ids
        .iter()
        .copied()
        .chain(remove.iter().copied())
        .collect();
    all.sort();
    all.dedup();
    let mut done = Done {
        forgotten: remove.to_vec(),
        ..Done::default()
    };
    let written = repo.write_forget_record(&ForgetRecord {
        time: crate::repo::now().0,
        host: host.to_string(),
        snapshots: all.clone(),
    })?;
    let lock_secs = repo
        .config()
        .object_lock
        .map(|l| i64::from(l.days) * 86_400);
    let records = repo.store().list_dated(FileType::Forgotten)?;
    // The store's clock, from the record just written (§13.2): retention is counted by it.
    let store_now = records
        .iter()
        .find(|(n, _, _)| *n == written)
        .map_or(crate::repo::now().0, |(_, _, m)| *m);
    let locked_until = |modified: i64| -> Option<i64> {
        let until = modified.saturating_add(lock_secs?);
        (until > store_now).then_some(until)
    };
    for (name, _, modified) in &records {
        if *name == written || !old.records.contains(name) {
            continue;
        }
        match locked_until(*modified) {
            Some(until) => done.locked.push((FileType::Forgotten, *name, until)),
            None => repo.store().delete(FileType::Forgotten, &name.to_hex())?,
        }
    }
    let all: HashSet<Id> = all.into_iter().collect();
    // Both copies of each (§2.2); the record already makes either alone count for nothing.
    for t in [FileType::Snapshot, FileType::SnapshotCopy] {
        for (name, _, modified) in repo.store().list_dated(t)? {
            if !all.contains(&name) {
                continue;
            }
            match locked_until(modified) {
                Some(until) => done.locked.push((t, name, until)),
                None => {
                    repo.store().delete(t, &name.to_hex())?;
                    if t == FileType::Snapshot {
                        done.deleted += 1;
                    }
                }
            }
        }
    }
    Ok(done)
}
