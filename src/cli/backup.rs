//! `vault backup`: back up paths into one repository (created on first use when it is the
//! default one), or into several one after the other.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use vault::archiver::{self, BackupOptions, BackupSummary};
use vault::backend::short_name;
use vault::crypto;
use vault::progress::Progress;
use vault::repo::Repository;

use super::{output::status, Ctx, Target};
use crate::ui;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Files and folders to back up
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Back up to these repositories, one after the other (names from `vault repo list`
    /// or addresses, comma-separated) instead of --repo
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    to: Vec<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// Skip paths matching this glob; without '/' it matches file names (repeatable)
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Host name recorded in the snapshot
    #[arg(long)]
    host: Option<String>,
    /// Read every file, even those whose size, mtime and inode say they are unchanged
    /// (catches content edited in place with the mtime set back; slower)
    #[arg(long)]
    force_reread: bool,
    /// Write no snapshot when nothing changed since the last one of this host, paths and tags
    /// (for hourly schedules)
    #[arg(long)]
    skip_if_unchanged: bool,
    /// Date the snapshot: "YYYY-MM-DD HH:MM:SS" (UTC) or Unix seconds; default now
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    time: Option<i64>,
}

/// `--time`: Unix seconds, or a UTC date and time as vault shows them.
fn parse_time(s: &str) -> std::result::Result<i64, String> {
    if let Ok(n) = s.trim().parse::<i64>() {
        return Ok(n);
    }
    let bad = || format!("{s:?} is not a time: give \"YYYY-MM-DD HH:MM:SS\" (UTC) or Unix seconds");
    let (date, clock) = s
        .trim()
        .split_once([' ', 'T'])
        .unwrap_or((s.trim(), "00:00:00"));
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<std::result::Result<_, _>>()?;
    let c: Vec<i64> = clock
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<std::result::Result<_, _>>()?;
    match (d.as_slice(), c.as_slice()) {
        ([y, mo @ 1..=12, da @ 1..=31], [h @ 0..=23, mi @ 0..=59, se @ 0..=59])
        | ([y, mo @ 1..=12, da @ 1..=31], [h @ 0..=23, mi @ 0..=59, se @ 0..=59, ..]) => {
            let days = vault::civil::days_from_civil(*y, *mo, *da);
            Ok(days * 86_400 + h * 3600 + mi * 60 + se)
        }
        _ => Err(bad()),
    }
}

/// What backup and move take from their arguments to back up.
pub(crate) struct BackupArgs<'a> {
    pub(crate) paths: &'a [PathBuf],
    pub(crate) tags: &'a [String],
    pub(crate) excludes: &'a [String],
    pub(crate) host: Option<String>,
    pub(crate) force_reread: bool,
    pub(crate) skip_if_unchanged: bool,
    pub(crate) time: Option<i64>,
}

pub(crate) fn run(ctx: &Ctx<'_>, args: &Args) -> Result<u8> {
    let a = BackupArgs {
        paths: &args.paths,
        tags: &args.tag,
        excludes: &args.exclude,
        host: args.host.clone(),
        force_reread: args.force_reread,
        skip_if_unchanged: args.skip_if_unchanged,
        time: args.time,
    };
    // Check the paths before asking for a passphrase or creating anything.
    for p in a.paths {
        std::fs::symlink_metadata(p).with_context(|| format!("cannot back up {}", p.display()))?;
    }
    if args.to.is_empty() {
        let t = ctx.target()?;
        let (store, is_default) = ctx.store_of(&t)?;
        let created = is_default && ctx.cli.profile.is_none() && !Repository::exists(&store)?;
        let location = store.location();
        let repo = if created {
            ctx.out.notice(format!(
                "no repository yet; creating the default one at {location}"
            ));
            ctx.create(store, crypto::DEFAULT_SCRYPT_LOG_N, None, None)?
        } else {
            ctx.open_store(&t, store)?
        };
        let s = backup_into(ctx, &t, &repo, &a)?;
        ctx.out.json(&s)?;
        let code = report(ctx, None, &s);
        if created && same_disk(Path::new(&location), a.paths) {
            ctx.out.warn(format!(
                "warning: this backup is on the same disk as the files it holds ({location}): \
                 one disk failure or a stolen laptop loses both. Keep a copy elsewhere: \
                 `vault repo add drive /media/you/disk/vault` (or an s3:// bucket), \
                 `vault --repo drive init`, then `vault copy --from {location} --to drive`, \
                 or back up with `--to drive`."
            ));
        }
        return Ok(code);
    }
    // Several repositories: each gets its own backup (their chunking keys differ), one after the
    // other; one that fails does not stop the others.
    let mut code = 0;
    let mut out = Vec::new();
    // A name that names nothing fails here, before any backup; an address that holds no
    // repository (a drive not plugged in) is reported in its turn and the others go on.
    let targets = ctx.targets(&args.to)?;
    for t in targets {
        let r = ctx.open_target(&t).and_then(|(repo, label)| {
            ctx.out.progress_note(format!("backing up to {label}"));
            Ok((backup_into(ctx, &t, &repo, &a)?, label))
        });
        match r {
            Ok((s, label)) => {
                code = code.max(report(ctx, Some(&label), &s));
                out.push(serde_json::json!({ "repository": label, "summary": s }));
            }
            Err(e) => {
                let label = t.given();
                ctx.out.warn(format!("error: {label}: {e:#}"));
                code = 1;
                out.push(serde_json::json!({ "repository": label, "error": format!("{e:#}") }));
            }
        }
    }
    ctx.out.json(&out)?;
    Ok(code)
}

pub(crate) fn backup_options(
    ctx: &Ctx<'_>,
    t: &Target,
    a: &BackupArgs<'_>,
) -> Result<BackupOptions> {
    Ok(BackupOptions {
        paths: a.paths.to_vec(),
        tags: a.tags.to_vec(),
        excludes: a.excludes.to_vec(),
        host: a
            .host
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        threads: 0,
        uploads: ctx.connections(t),
        // Backing up a folder that holds the repository must not copy the repository into itself.
        exclude_paths: ctx.local_path(t).into_iter().collect(),
        force_reread: a.force_reread,
        count_first: ctx.out.progress_shown(),
        time: a.time.map(|t| (t, 0)),
        skip_if_unchanged: a.skip_if_unchanged,
    })
}

fn backup_into(
    ctx: &Ctx<'_>,
    t: &Target,
    repo: &Repository,
    a: &BackupArgs<'_>,
) -> Result<BackupSummary> {
    let opts = backup_options(ctx, t, a)?;
    let progress = Arc::new(Progress::default());
    progress.begin("backing up");
    let view = ctx.out.progress(progress.clone(), "backup");
    let res = archiver::backup(repo, &opts, progress);
    view.finish();
    let s = res?;
    ctx.warn_index(repo)?;
    ctx.warn_damaged(repo);
    Ok(s)
}

/// Print a backup's outcome (not the JSON); returns its exit status.
/// Whether the folder repository at `repo` sits on the same filesystem as any of `paths`.
fn same_disk(repo: &Path, paths: &[PathBuf]) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(r) = std::fs::metadata(repo) else {
            return false;
        };
        paths
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.dev() == r.dev()))
    }
    #[cfg(not(unix))]
    {
        let _ = (repo, paths);
        false
    }
}

fn report(ctx: &Ctx<'_>, label: Option<&str>, s: &BackupSummary) -> u8 {
    if s.unchanged {
        ctx.out.say(format!(
            "{}nothing changed since snapshot {}: no snapshot written",
            label.map(|l| format!("{l}: ")).unwrap_or_default(),
            short_name(&s.snapshot)
        ));
    } else {
        ctx.out.say(format!(
            "{}snapshot {} saved",
            label.map(|l| format!("{l}: ")).unwrap_or_default(),
            short_name(&s.snapshot)
        ));
    }
    ctx.out.say(format!(
        "  {} files ({} unchanged, not read), {} folders, {} symlinks; read {}, added {} ({} new \
         chunks, {} reused, {} packs)",
        s.files,
        s.files_unchanged,
        s.dirs,
        s.symlinks,
        ui::bytes(s.bytes_read),
        ui::bytes(s.bytes_added),
        s.blobs_new,
        s.blobs_reused,
        s.packs_written
    ));
    if s.locations_refused > 0 {
        ctx.out.warn(format!(
            "warning: {} index entries written by write-only devices did not match what their \
             packs hold; those chunks were stored again. Run `vault check` to see which entries.",
            s.locations_refused
        ));
    }
    if s.vanished > 0 {
        ctx.out.say(format!(
            "{} item(s) were deleted or renamed while the backup ran and are not in this snapshot",
            s.vanished
        ));
    }
    for w in &s.warnings {
        ctx.out.warn(format!(
            "warning: {}: {}",
            ui::safe(&w.path),
            ui::safe(&w.reason)
        ));
    }
    for k in &s.skipped {
        ctx.out.warn(format!(
            "skipped: {}: {}",
            ui::safe(&k.path),
            ui::safe(&k.reason)
        ));
    }
    if !s.skipped.is_empty() {
        ctx.out.warn(format!(
            "{} item(s) were skipped (exit status 3)",
            s.skipped.len()
        ));
    }
    status(false, !s.skipped.is_empty() || !s.warnings.is_empty())
}
