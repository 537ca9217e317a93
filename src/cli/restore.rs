//! `vault restore`: a snapshot (or paths of it) into a target folder, every byte verified;
//! `--vault-only`: the files that live only in the vault, back to their places.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use vault::progress::Progress;
use vault::restorer::{self, split_path, RestoreOptions, RestoreSummary};
use vault::Id;

use super::output::status;
use super::Ctx;
use crate::ui;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// `latest` (the default) or at least 4 hex digits of a snapshot id; with `--vault-only`,
    /// a path to bring back (as `--include`)
    snapshot: Option<String>,
    /// Folder to restore into (snapshot paths are recreated below it); with --vault-only
    /// the default is `/`, the files' original places
    #[arg(
        short,
        long,
        value_name = "DIR",
        required_unless_present = "vault_only"
    )]
    target: Option<PathBuf>,
    /// Restore only this path from the snapshot (repeatable)
    #[arg(long, value_name = "PATH")]
    include: Vec<String>,
    /// Replace files that already exist in the target
    #[arg(long)]
    overwrite: bool,
    /// Bring back the files moved into the vault (from every snapshot, the newest copy of
    /// each), to their original places unless --target is given
    #[arg(long)]
    vault_only: bool,
}

pub(crate) fn run(ctx: &Ctx<'_>, a: &Args) -> Result<u8> {
    if a.vault_only {
        return vault_only(ctx, a);
    }
    let target = a.target.as_deref().context("--target is required")?;
    let repo = ctx.open()?;
    let found = repo.find_snapshot_noting(a.snapshot.as_deref().unwrap_or("latest"))?;
    ctx.warn_passed_over(&found.passed_over);
    let (id, snap) = (found.id, found.snapshot);
    // What is restored must be in the repository, not only in this computer's local index.
    repo.verify_stored_snapshot(&id)?;
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        includes: a
            .include
            .iter()
            .map(|s| split_path(&super::ls::in_snapshot(s)))
            .collect(),
        overwrite: a.overwrite,
        threads: (2 * vault::worker_count(0)).max(ctx.connections(&ctx.target()?)),
        vault_only: false,
        journal_dir: ctx.journal_dir(),
    };
    let progress = Arc::new(Progress::default());
    progress.begin("restoring");
    let view = ctx.out.progress(progress.clone(), "restore");
    let res = restorer::restore(&repo, &id, &snap, &opts, progress);
    view.finish();
    let s = res?;
    ctx.warn_index(&repo)?;
    ctx.warn_damaged(&repo);
    ctx.out.result(&s, || {
        println!(
            "restored {} files ({}), {} folders, {} symlinks from snapshot {} into {}",
            s.files,
            ui::bytes(s.bytes),
            s.dirs,
            s.symlinks,
            id.short(),
            target.display()
        );
        print_download(&s.download);
        if s.already > 0 {
            println!(
                "{} item(s) were already there, identical to the snapshot, and were left as they are",
                s.already
            );
        }
        Ok(())
    })?;
    Ok(problems(ctx, &s, true))
}

/// What the restore read from the repository against what it restored.
fn print_download(d: &restorer::Download) {
    if d.total == 0 {
        return;
    }
    println!(
        "read {} from the repository: {} of file content for {} restored ({:.2}x), {} of metadata",
        ui::bytes(d.total),
        ui::bytes(d.content),
        ui::bytes(d.restored),
        d.content_ratio,
        ui::bytes(d.metadata)
    );
}

/// Report what was skipped, what failed and what the target could not keep; returns the exit
/// status. `count`: also say how many failed.
fn problems(ctx: &Ctx<'_>, s: &RestoreSummary, count: bool) -> u8 {
    for t in &s.torn {
        ctx.out.warn(format!(
            "warning: {} is restored as it was stored, but it kept changing while it was backed \
             up: it may mix two versions",
            ui::safe(t)
        ));
    }
    for k in &s.skipped {
        ctx.out.warn(format!(
            "skipped: {}: {}",
            ui::safe(&k.path),
            ui::safe(&k.reason)
        ));
    }
    for k in &s.errors {
        ctx.out.warn(format!(
            "error: {}: {}",
            ui::safe(&k.path),
            ui::safe(&k.reason)
        ));
    }
    not_kept(ctx, s);
    if count && !s.errors.is_empty() {
        ctx.out
            .warn(format!("{} item(s) could not be restored", s.errors.len()));
    }
    status(!s.errors.is_empty(), !s.skipped.is_empty())
}

/// What the target could not keep: owners (run as root) and permissions. The content is restored
/// either way; these say what differs from the snapshot, and whether private items are exposed.
fn not_kept(ctx: &Ctx<'_>, s: &RestoreSummary) {
    if s.owners_not_set > 0 {
        ctx.out.warn(format!(
            "warning: the recorded owner could not be set on {} item(s) ({}); they belong to root. \
             Their content and times are restored.",
            s.owners_not_set,
            s.owner_failure.as_deref().unwrap_or("unknown reason")
        ));
    }
    if s.modes_not_kept > 0 {
        ctx.out.warn(format!(
            "warning: the target's filesystem does not keep permissions (as FAT and exFAT): {} \
             item(s) have other permissions than the snapshot records.",
            s.modes_not_kept
        ));
    }
    if s.private_exposed > 0 {
        ctx.out.warn(format!(
            "warning: {} of them were private (no access for other users) and are not private \
             here: anyone who can read this drive can open them.",
            s.private_exposed
        ));
    }
}

fn vault_only(ctx: &Ctx<'_>, a: &Args) -> Result<u8> {
    let repo = ctx.open()?;
    // Vault-only files come from every snapshot: a positional argument is a path, as in
    // `vault ls --vault-only PATH`.
    let under: Vec<_> = a
        .include
        .iter()
        .chain(a.snapshot.as_ref())
        .map(|s| split_path(&super::ls::in_snapshot(s)))
        .collect();
    let files = super::ls::vault_only_under(&repo, &under)?;
    if files.is_empty() {
        ctx.out.tell("no vault-only files to restore");
        return Ok(if under.is_empty() { 0 } else { 1 });
    }
    let target = a.target.as_deref().unwrap_or(Path::new("/"));
    let mut by_snap: BTreeMap<Id, Vec<Vec<Vec<u8>>>> = BTreeMap::new();
    for f in files {
        by_snap.entry(f.snapshot).or_default().push(f.path);
    }
    let threads = vault::worker_count(0).max(ctx.connections(&ctx.target()?));
    let progress = Arc::new(Progress::default());
    progress.begin("restoring");
    let view = ctx.out.progress(progress.clone(), "restore");
    let mut total = RestoreSummary::default();
    let mut failure = None;
    for (sid, paths) in by_snap {
        let r = repo.read_snapshot(&sid).and_then(|snap| {
            restorer::restore(
                &repo,
                &sid,
                &snap,
                &RestoreOptions {
                    target: target.to_path_buf(),
                    includes: paths,
                    overwrite: a.overwrite,
                    threads,
                    vault_only: true,
                    journal_dir: ctx.journal_dir(),
                },
                progress.clone(),
            )
        });
        match r {
            Ok(s) => total.absorb(s),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    view.finish();
    if let Some(e) = failure {
        return Err(e.into());
    }
    total.requests = repo.store().stats();
    total.download.finish(total.requests.bytes_received);
    ctx.out.result(&total, || {
        println!(
            "restored {} vault-only files ({}) {}",
            total.files,
            ui::bytes(total.bytes),
            if target == Path::new("/") {
                "to their original places".to_string()
            } else {
                format!("into {}", target.display())
            }
        );
        print_download(&total.download);
        Ok(())
    })?;
    Ok(problems(ctx, &total, false))
}
