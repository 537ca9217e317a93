//! `vault move`: back files up into several repositories, read every copy back and verify it,
//! and only then delete the local originals.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use vault::backend::short_name;
use vault::mover::{self, Destination, MoveOptions};
use vault::progress::Progress;
use vault::repo::Repository;
use vault::settings::Settings;

use super::backup::{backup_options, BackupArgs};
use super::output::status;
use super::repos::recovery_record;
use super::{Ctx, Target};
use crate::ui;

pub(crate) const MOVE_HELP: &str = "\
Move files into the vault: back them up, read every copy back from each repository, decrypt it \
and compare it with a fresh read of the local file, and only then delete the local original.

A file is deleted only when its data verified in at least --copies repositories (default 2: a \
photo kept in one place is not backed up) and it has not changed since it was read. Anything \
else stays where it is and is listed with the reason. Moved files are marked vault-only in the \
snapshot: `vault ls --vault-only` lists them, `vault restore --vault-only` puts them back.

Repositories: --to NAME,... (see `vault repo add`); without it, every named repository, else \
--repo. Before deleting anything, each repository must be opened with a passphrase or identity \
file, or have had its recovery key checked with `vault key verify-recovery` on this computer, so \
that losing this computer does not lock you out.

Deleting is not secure erasure: on SSDs, copy-on-write filesystems (btrfs, APFS, ZFS), \
filesystem snapshots, Time Machine, thumbnail caches, the trash and sync folders (iCloud, \
Dropbox, Google Drive, OneDrive) old copies of the bytes can survive. Use full-disk encryption \
to protect what is left behind.";

const ERASE_NOTE: &str = "note: the originals were unlinked, not securely erased: SSDs, \
snapshots, sync folders and thumbnail caches may keep copies; full-disk encryption protects what \
remains";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Files and folders to move
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Repositories to move into (names or addresses, comma-separated); default: every
    /// repository in `vault repo list`, else --repo
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    to: Vec<String>,
    /// Repositories a file must verify in before its original is deleted; 1 means the
    /// vault holds the only copy
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=16))]
    copies: u16,
    /// Show what would move, change nothing
    #[arg(long)]
    dry_run: bool,
    /// Leave paths matching this glob in place; without '/' it matches file names (repeatable)
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Tag the snapshot (repeatable; "moved" is always added)
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// Host name recorded in the snapshot
    #[arg(long)]
    host: Option<String>,
}

pub(crate) fn run(ctx: &Ctx<'_>, args: &Args) -> Result<u8> {
    let mut tags = args.tag.clone();
    tags.push("moved".into());
    let a = BackupArgs {
        paths: &args.paths,
        tags: &tags,
        excludes: &args.exclude,
        host: args.host.clone(),
        force_reread: true,
        skip_if_unchanged: false,
        time: None,
    };
    let copies = args.copies as usize;
    let repos = open_all(ctx, &args.to, copies)?;
    if copies == 1 {
        ctx.out.notice(format!(
            "warning: --copies 1: each moved file will exist in one repository only; if {} is \
             lost or damaged, so are they",
            repos[0].0
        ));
    }
    // Moved files live only in these repositories: one whose only unlock method is a
    // passphrase loses them with it.
    for (label, _, repo) in &repos {
        let keys = repo.key_files()?;
        if !keys
            .iter()
            .any(|k| k.kind == vault::repo::Method::RecoveryKey.name())
        {
            ctx.out.warn(format!(
                "warning: {label} has no recovery key: if its passphrase is forgotten, the files \
                 moved into it are lost with it. `vault --repo {label} key add --recovery` makes \
                 one."
            ));
        }
    }
    let mut bopts = backup_options(ctx, &repos[0].1, &a)?;
    // Never move a repository (or the settings naming them) into the vault: it would delete the
    // very copies the move relies on.
    for (_, t, _) in &repos[1..] {
        if let Some(p) = ctx.local_path(t) {
            bopts.exclude_paths.push(p);
        }
    }
    if let Some(p) = Settings::default_path() {
        bopts.exclude_paths.push(p);
    }
    if args.dry_run {
        return dry_run(ctx, &repos, copies, &bopts);
    }
    let dests: Vec<Destination<'_>> = repos
        .iter()
        .map(|(label, _, repo)| Destination {
            name: label.clone(),
            repo,
        })
        .collect();
    let progress = Arc::new(Progress::default());
    let view = ctx.out.progress(progress.clone(), "move");
    let res = mover::run(
        &dests,
        &MoveOptions {
            backup: bopts,
            copies,
            threads: vault::worker_count(0).max(ctx.connections(&repos[0].1)),
        },
        progress,
    );
    view.finish();
    let r = res?;
    for (_, _, repo) in &repos {
        ctx.warn_index(repo)?;
    }
    ctx.out.result(&r, || {
        for rr in &r.repositories {
            match (&rr.snapshot, &rr.error) {
                (Some(s), _) => println!(
                    "{}: snapshot {} saved; {} files read back and verified ({}){}",
                    rr.name,
                    short_name(s),
                    rr.files_verified,
                    ui::bytes(rr.bytes_verified),
                    if rr.files_failed > 0 {
                        format!(", {} did NOT verify", rr.files_failed)
                    } else {
                        String::new()
                    }
                ),
                (None, Some(e)) => println!("{}: FAILED: {e}", rr.name),
                (None, None) => println!("{}: nothing recorded", rr.name),
            }
        }
        for p in &r.already_moved {
            println!(
                "{} is already in the vault (see `vault ls --vault-only`)",
                ui::safe(p)
            );
        }
        if r.repositories.is_empty() {
            println!(
                "nothing left to move; {} emptied folder(s) removed",
                r.dirs_removed
            );
            return Ok(());
        }
        println!(
            "moved {} files ({} freed) into the vault; {} folders removed; {} kept",
            r.files_moved,
            ui::bytes(r.bytes_freed),
            r.dirs_removed,
            r.kept.len()
        );
        Ok(())
    })?;
    for k in &r.kept {
        ctx.out.warn(format!(
            "kept (not moved): {}: {}",
            ui::safe(&k.path),
            ui::safe(&k.reason)
        ));
    }
    if r.files_moved > 0 {
        ctx.out.notice(ERASE_NOTE);
    }
    Ok(status(
        r.repositories.iter().any(|x| x.error.is_some()),
        !r.kept.is_empty(),
    ))
}

/// Open every repository of the move, refusing what could lose the only copies: too few
/// repositories, one opened only by this computer's keyring with its recovery key never proven
/// here, or the same repository twice.
fn open_all(
    ctx: &Ctx<'_>,
    to: &[String],
    copies: usize,
) -> Result<Vec<(String, Target, Repository)>> {
    let targets = ctx.targets(to)?;
    mover::require_copies(targets.len(), copies)?;
    let mut repos: Vec<(String, Target, Repository)> = Vec::new();
    for t in targets {
        let (store, _) = ctx.store_of(&t)?;
        let label = t.label(&store);
        let (repo, user_secret) = ctx
            .open_store_how(&t, store)
            .with_context(|| format!("cannot open {label}"))?;
        if !user_secret && !repo.keys().is_write_only() {
            let proven = recovery_record(&repo).map(|p| p.exists()).unwrap_or(false);
            if !proven {
                bail!(
                    "{label} was opened with this computer's keyring only. Before deleting \
                     originals, prove you can open it without this computer: run `vault --repo \
                     {label} key verify-recovery` with your recovery key, or give the passphrase \
                     (VAULT_PASSWORD or --password-file) to this move"
                );
            }
        }
        if let Some((other, _, _)) = repos.iter().find(|(_, _, r)| r.repo_id() == repo.repo_id()) {
            bail!(
                "{other} and {label} are the same repository: each copy must be in a repository \
                 of its own (ideally on other hardware)"
            );
        }
        repos.push((label, t, repo));
    }
    Ok(repos)
}

fn dry_run(
    ctx: &Ctx<'_>,
    repos: &[(String, Target, Repository)],
    copies: usize,
    bopts: &vault::archiver::BackupOptions,
) -> Result<u8> {
    let plan = mover::plan(bopts)?;
    let names: Vec<&str> = repos.iter().map(|r| r.0.as_str()).collect();
    ctx.out.result(
        &serde_json::json!({
            "dry_run": true,
            "repositories": names,
            "copies_required": copies,
            "files": plan.files,
            "bytes": plan.bytes,
            "kept": plan.kept,
        }),
        || {
            for f in &plan.files {
                println!("would move {} ({})", ui::safe(&f.path), ui::bytes(f.size));
            }
            for k in &plan.kept {
                println!("would keep {}: {}", ui::safe(&k.path), ui::safe(&k.reason));
            }
            println!(
                "dry run: {} files ({}) would be backed up to {} and deleted once verified in {} \
                 of them; nothing was changed",
                plan.files.len(),
                ui::bytes(plan.bytes),
                names.join(", "),
                copies
            );
            Ok(())
        },
    )?;
    Ok(0)
}
