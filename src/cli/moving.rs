//! The commands around vault-only storage: `move`, `ls --vault-only`, `restore --vault-only`,
//! `check --all`, and the named repositories they use (`repo add/list/remove`).

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use vault::mover::{self, Destination, MoveOptions};
use vault::Id;

pub(super) const MOVE_HELP: &str = "\
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

pub(super) fn repo_cmd(cli: &Cli, cmd: &RepoCmd) -> Result<u8> {
    let mut settings = cli.settings()?;
    match cmd {
        RepoCmd::Add {
            name,
            address,
            passphrase_file,
        } => {
            if address.contains("://") && !address.starts_with("s3://") {
                bail!("unsupported repository address {address:?}: use a folder path or s3://bucket/prefix");
            }
            let s3 = address.starts_with("s3://");
            let address = if s3 {
                address.clone()
            } else {
                // A relative folder would mean something else from another working folder.
                std::path::absolute(address)
                    .with_context(|| format!("cannot resolve {address}"))?
                    .to_string_lossy()
                    .into_owned()
            };
            let entry = RepoEntry {
                address,
                endpoint: cli.s3_endpoint.clone().filter(|e| s3 && !e.is_empty()),
                region: cli.s3_region.clone().filter(|e| s3 && !e.is_empty()),
                addressing: cli.s3_addressing.filter(|_| s3).map(|a| {
                    match a {
                        Addressing::Path => "path",
                        Addressing::Virtual => "virtual",
                    }
                    .to_string()
                }),
                passphrase_file: passphrase_file
                    .as_ref()
                    .map(std::path::absolute)
                    .transpose()?,
            };
            settings.add(name, entry.clone())?;
            settings.save()?;
            if !cli.quiet {
                println!("{name} = {}", entry.address);
                let t = Target {
                    name: Some(name.clone()),
                    address: Some(entry.address.clone()),
                    entry,
                };
                match cli.store_of(&t).and_then(|(s, _)| Ok(Repository::exists(&s)?)) {
                    Ok(true) => {}
                    Ok(false) => println!(
                        "there is no repository there yet: create it with `vault --repo {name} init`"
                    ),
                    Err(e) => eprintln!("warning: cannot reach it now: {e:#}"),
                }
            }
        }
        RepoCmd::List => {
            if cli.json {
                let v: BTreeMap<&String, &RepoEntry> = settings.repositories().collect();
                json_out(&v)?;
            } else if !cli.quiet {
                for (n, e) in settings.repositories() {
                    let extra = e
                        .endpoint
                        .as_ref()
                        .map(|x| format!("  (endpoint {x})"))
                        .unwrap_or_default();
                    println!("{n:<12} {}{extra}", e.address);
                }
                if settings.repositories().next().is_none() {
                    println!(
                        "no named repositories in {}; add one with `vault repo add NAME REPO`",
                        settings.path().display()
                    );
                }
            }
        }
        RepoCmd::Remove { name } => {
            let e = settings.remove(name)?;
            settings.save()?;
            if !cli.quiet {
                println!(
                    "forgot the name {name}; the repository at {} is untouched",
                    e.address
                );
            }
        }
    }
    Ok(0)
}

/// Where `key verify-recovery` notes that a repository's recovery path was proven on this
/// computer (the file holds nothing secret: the time of the check).
fn recovery_record(repo: &Repository) -> Option<std::path::PathBuf> {
    dirs::data_dir().map(|d| {
        d.join("vault")
            .join("recovery-verified")
            .join(repo.repo_id().to_hex())
    })
}

pub(super) fn note_recovery_verified(repo: &Repository) {
    let Some(p) = recovery_record(repo) else {
        return;
    };
    let r = p
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|_| std::fs::write(&p, format!("{}\n", ui::time(now_secs()))));
    if let Err(e) = r {
        eprintln!(
            "warning: cannot note the check in {}: {e}; `vault move` will ask for the passphrase",
            p.display()
        );
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(super) fn move_files(
    cli: &Cli,
    to: &[String],
    copies: usize,
    dry_run: bool,
    a: &BackupArgs<'_>,
) -> Result<u8> {
    for p in a.paths {
        std::fs::symlink_metadata(p).with_context(|| format!("cannot move {}", p.display()))?;
    }
    let targets = cli.targets(to)?;
    mover::require_copies(targets.len(), copies)?;
    let mut repos = Vec::new();
    for t in &targets {
        let (store, _) = cli.store_of(t)?;
        let label = t.label(&store);
        let (repo, user_secret) = cli
            .open_store_how(t, store)
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
        if let Some((other, _, _)) = repos
            .iter()
            .find(|(_, _, r): &&(String, &Target, Repository)| r.repo_id() == repo.repo_id())
        {
            bail!(
                "{other} and {label} are the same repository: each copy must be in a repository \
                 of its own (ideally on other hardware)"
            );
        }
        repos.push((label, t, repo));
    }
    if copies == 1 && !cli.quiet {
        eprintln!(
            "warning: --copies 1: each moved file will exist in one repository only; if {} is lost \
             or damaged, so are they",
            repos[0].0
        );
    }
    let mut bopts = backup_options(cli, repos[0].1, a)?;
    // Never move a repository (or the settings naming them) into the vault: it would delete the
    // very copies the move relies on.
    for (_, t, _) in &repos[1..] {
        if let (RepoSpec::Local(p), _) = cli.repo_spec(t)? {
            bopts.exclude_paths.push(p);
        }
    }
    if let Some(p) = Settings::default_path() {
        bopts.exclude_paths.push(p);
    }
    if dry_run {
        let plan = mover::plan(&bopts)?;
        let names: Vec<&str> = repos.iter().map(|r| r.0.as_str()).collect();
        if cli.json {
            json_out(&serde_json::json!({
                "dry_run": true,
                "repositories": names,
                "copies_required": copies,
                "files": plan.files,
                "bytes": plan.bytes,
                "kept": plan.kept,
            }))?;
        } else if !cli.quiet {
            for f in &plan.files {
                println!("would move {} ({})", f.path, ui::bytes(f.size));
            }
            for k in &plan.kept {
                println!("would keep {}: {}", k.path, k.reason);
            }
            println!(
                "dry run: {} files ({}) would be backed up to {} and deleted once verified in {} \
                 of them; nothing was changed",
                plan.files.len(),
                ui::bytes(plan.bytes),
                names.join(", "),
                copies
            );
        }
        return Ok(0);
    }
    let dests: Vec<Destination<'_>> = repos
        .iter()
        .map(|(label, _, repo)| Destination {
            name: label.clone(),
            repo,
        })
        .collect();
    let progress = Arc::new(Progress::default());
    let view = ui::ProgressView::start(progress.clone(), "move", cli.progress());
    let res = mover::run(
        &dests,
        &MoveOptions {
            backup: bopts,
            copies,
            threads: vault::worker_count(0).max(cli.connections(repos[0].1)),
        },
        progress,
    );
    view.finish();
    let r = res?;
    for (_, _, repo) in &repos {
        warn_index(repo)?;
    }
    if cli.json {
        json_out(&r)?;
    } else if !cli.quiet {
        for rr in &r.repositories {
            match (&rr.snapshot, &rr.error) {
                (Some(s), _) => println!(
                    "{}: snapshot {} saved; {} files read back and verified ({}){}",
                    rr.name,
                    &s[..8],
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
        println!(
            "moved {} files ({} freed) into the vault; {} folders removed; {} kept",
            r.files_moved,
            ui::bytes(r.bytes_freed),
            r.dirs_removed,
            r.kept.len()
        );
    }
    for k in &r.kept {
        eprintln!("kept (not moved): {}: {}", k.path, k.reason);
    }
    if r.files_moved > 0 && !cli.quiet {
        eprintln!("{ERASE_NOTE}");
    }
    Ok(if r.repositories.iter().any(|x| x.error.is_some()) {
        1
    } else if !r.kept.is_empty() {
        EXIT_PARTIAL
    } else {
        0
    })
}

/// Vault-only files under `under` (all when None).
fn selected(repo: &Repository, under: &[Vec<Vec<u8>>]) -> Result<Vec<mover::VaultOnlyFile>> {
    let mut files = mover::vault_only_files(repo)?;
    if !under.is_empty() {
        files.retain(|f| under.iter().any(|u| f.path.starts_with(u)));
    }
    Ok(files)
}

#[derive(Serialize)]
struct VaultOnlyJson {
    #[serde(flatten)]
    entry: LsEntry,
    snapshot: String,
    /// Something is at its original place again (restored, or kept by a move that found it
    /// changed at the last moment).
    on_disk: bool,
}

pub(super) fn ls_vault_only(cli: &Cli, path: Option<&str>) -> Result<u8> {
    let repo = cli.open()?;
    let under: Vec<_> = path.map(split_path).into_iter().collect();
    let files = selected(&repo, &under)?;
    let rows: Vec<VaultOnlyJson> = files
        .iter()
        .map(|f| VaultOnlyJson {
            entry: entry(&f.path, &f.node),
            snapshot: f.snapshot.to_hex(),
            on_disk: std::fs::symlink_metadata(mover::local_path(&f.path)).is_ok(),
        })
        .collect();
    if cli.json {
        json_out(&rows)?;
    } else if !cli.quiet {
        let mut o = std::io::stdout().lock();
        for r in &rows {
            writeln!(
                o,
                "{} {:>12} {} {}  {}{}",
                r.entry.mode,
                r.entry.size,
                ui::time(r.entry.mtime),
                &r.snapshot[..8],
                r.entry.path,
                if r.on_disk { "  (also on disk)" } else { "" }
            )?;
        }
        writeln!(
            o,
            "{} vault-only file(s), {}",
            rows.len(),
            ui::bytes(rows.iter().map(|r| r.entry.size).sum())
        )?;
    }
    Ok(0)
}

pub(super) fn restore_vault_only(
    cli: &Cli,
    target: Option<&Path>,
    include: &[String],
    overwrite: bool,
) -> Result<u8> {
    let repo = cli.open()?;
    let under: Vec<_> = include.iter().map(|s| split_path(s)).collect();
    let files = selected(&repo, &under)?;
    if files.is_empty() {
        if !cli.quiet {
            println!("no vault-only files to restore");
        }
        return Ok(if under.is_empty() { 0 } else { 1 });
    }
    let target = target.unwrap_or(Path::new("/"));
    let mut by_snap: BTreeMap<Id, Vec<Vec<Vec<u8>>>> = BTreeMap::new();
    for f in files {
        by_snap.entry(f.snapshot).or_default().push(f.path);
    }
    let threads = vault::worker_count(0).max(cli.connections(&cli.target()?));
    let progress = Arc::new(Progress::default());
    let view = ui::ProgressView::start(progress.clone(), "restore", cli.progress());
    let mut total = restorer::RestoreSummary::default();
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
                    overwrite,
                    threads,
                    vault_only: true,
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
    if cli.json {
        json_out(&total)?;
    } else if !cli.quiet {
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
    }
    for k in &total.skipped {
        eprintln!("skipped: {}: {}", k.path, k.reason);
    }
    for k in &total.errors {
        eprintln!("error: {}: {}", k.path, k.reason);
    }
    super::warn_not_kept(&total);
    Ok(if !total.errors.is_empty() {
        1
    } else if !total.skipped.is_empty() {
        EXIT_PARTIAL
    } else {
        0
    })
}

pub(super) fn check_all(cli: &Cli, read_data: bool) -> Result<u8> {
    let settings = cli.settings()?;
    let names: Vec<String> = settings.repositories().map(|(n, _)| n.clone()).collect();
    if names.is_empty() {
        bail!(
            "no named repositories in {}: add them with `vault repo add`, or check one with --repo",
            settings.path().display()
        );
    }
    let mut status = 0;
    let mut out = BTreeMap::new();
    for t in cli.targets(&names)? {
        let name = t.name.clone().unwrap_or_default();
        if !cli.quiet && !cli.json {
            println!("== {name}");
        }
        match check_report(cli, &t, read_data) {
            Ok((s, r)) => {
                status = status.max(s);
                out.insert(name, serde_json::json!(r));
            }
            Err(e) => {
                eprintln!("error: {name}: {e:#}");
                status = status.max(1);
                out.insert(name, serde_json::json!({ "error": format!("{e:#}") }));
            }
        }
    }
    if cli.json {
        json_out(&out)?;
    }
    Ok(status)
}

pub(super) fn copy(cli: &Cli, from: &str, to: &str, which: &[String]) -> Result<u8> {
    let (src, src_label) = cli
        .open_target(&cli.resolve(from)?)
        .with_context(|| format!("cannot open {from}"))?;
    let dt = cli.resolve(to)?;
    let (dst, dst_label) = cli
        .open_target(&dt)
        .with_context(|| format!("cannot open {to}"))?;
    let mut ids = Vec::new();
    for s in which {
        ids.push(src.find_snapshot(s)?.0);
    }
    let progress = Arc::new(Progress::default());
    let view = ui::ProgressView::start(progress.clone(), "copy", cli.progress());
    let res = vault::copier::copy(
        &src,
        &dst,
        &ids,
        vault::worker_count(0).max(cli.connections(&dt)),
        progress,
    );
    view.finish();
    let r = res?;
    warn_index(&dst)?;
    if cli.json {
        json_out(&r)?;
    } else if !cli.quiet {
        for (a, b) in &r.copied {
            println!(
                "copied snapshot {} to {} as {}",
                &a[..8],
                dst_label,
                &b[..8]
            );
        }
        println!(
            "{} snapshot(s) copied from {src_label} to {dst_label} ({} already there); added {} \
             ({} new chunks, {} packs); {} files read back and verified",
            r.copied.len(),
            r.already_there,
            ui::bytes(r.bytes_added),
            r.blobs_new,
            r.packs_written,
            r.files_verified
        );
    }
    for f in &r.failed {
        eprintln!("error: did not verify after copying: {f}");
    }
    Ok(if r.failed.is_empty() { 0 } else { 1 })
}
