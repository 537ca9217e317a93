//! `vault snapshots`: list the snapshots, and acknowledge the ones gone missing.

use anyhow::Result;
use serde::Serialize;

use super::Ctx;
use crate::ui;
use vault::snapshots::{trust, Trust};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Stop warning, on this computer, about the snapshots now reported missing from the
    /// repository, once you know why they are gone (other computers still warn)
    #[arg(long)]
    acknowledge_missing: bool,
    /// Only snapshots of this host (repeatable: any of them)
    #[arg(long, value_name = "HOST")]
    host: Vec<String>,
    /// Only snapshots with this tag (repeatable: all of them)
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// Only snapshots that backed up this path or a folder holding it (repeatable: any)
    #[arg(long, value_name = "PATH")]
    path: Vec<std::path::PathBuf>,
}

/// Whether `s` passes the filters of `a`.
fn wanted(a: &Args, s: &vault::format::snapshot::Snapshot, paths: &[std::path::PathBuf]) -> bool {
    (a.host.is_empty() || a.host.contains(&s.host))
        && a.tag.iter().all(|t| s.tags.contains(t))
        && (paths.is_empty()
            || s.paths.iter().any(|p| {
                let p = String::from_utf8_lossy(p);
                paths.iter().any(|q| q.starts_with(p.as_ref()))
            }))
}

#[derive(Serialize)]
struct SnapshotJson {
    id: String,
    time: i64,
    host: String,
    paths: Vec<String>,
    tags: Vec<String>,
    parent: Option<String>,
    sequence: u64,
    files: u64,
    bytes: u64,
    /// "full" or "write-only": the class of device that wrote it (§11).
    writer: &'static str,
    /// Dated more than an hour after this computer's clock.
    future: bool,
}

pub(crate) fn run(ctx: &Ctx<'_>, a: &Args) -> Result<u8> {
    let repo = ctx.open()?;
    let (all, bad) = repo.snapshots()?;
    let total = all.len();
    let want_paths: Vec<std::path::PathBuf> = a
        .path
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let snaps: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| wanted(a, s, &want_paths))
        .collect();
    for (name, e) in &bad {
        ctx.out
            .warn(format!("warning: snapshot {}: {e}", name.short()));
    }
    if a.acknowledge_missing {
        let ids = repo.acknowledge_missing_snapshots()?;
        let ids: Vec<String> = ids.iter().map(|id| id.short()).collect();
        if ids.is_empty() {
            ctx.out.warn("no missing snapshots to acknowledge");
        } else {
            ctx.out.warn(format!(
                "acknowledged {} missing snapshot(s) on this computer: {}. This computer stops \
                 warning about them; other computers still do.",
                ids.len(),
                ids.join(", ")
            ));
        }
    }
    ctx.warn_missing_snapshots(&repo);
    let paths = |s: &vault::format::snapshot::Snapshot| -> Vec<String> {
        s.paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    };
    let now = vault::repo::now().0;
    let v: Vec<SnapshotJson> = snaps
        .iter()
        .map(|(id, s)| SnapshotJson {
            id: id.to_hex(),
            time: s.time,
            host: s.host.clone(),
            paths: paths(s),
            tags: s.tags.clone(),
            parent: s.parent.map(|p| p.to_hex()),
            sequence: s.sequence,
            files: s.summary.files,
            bytes: s.summary.bytes,
            writer: s.writer.name(),
            future: s.time > now.saturating_add(vault::snapshots::FUTURE_SLACK_SECS),
        })
        .collect();
    ctx.out.result(&v, || {
        println!(
            "{:<8}  {:<19}  {:<12}  {:>7}  {:>10}  paths",
            "id", "time", "host", "files", "size"
        );
        for (id, s) in &snaps {
            let tags = if s.tags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", ui::safe(&s.tags.join(",")))
            };
            let mark = match trust(s, now) {
                Trust::Trusted => "",
                Trust::WriteOnly => "  (write-only device)",
                Trust::Future => "  (dated in the future)",
            };
            println!(
                "{:<8}  {:<19}  {:<12}  {:>7}  {:>10}  {}{}{}",
                id.short(),
                ui::local_time(s.time),
                ui::safe(&s.host),
                s.summary.files,
                ui::bytes(s.summary.bytes),
                ui::safe(&paths(s).join(" ")),
                tags,
                mark
            );
        }
        if snaps.len() == total {
            println!("{} snapshot(s)", snaps.len());
        } else {
            println!("{} of {total} snapshot(s)", snaps.len());
        }
        Ok(())
    })?;
    ctx.warn_damaged(&repo);
    Ok(if bad.is_empty() { 0 } else { 1 })
}
