//! `vault repair index` (rebuild the index from the packs' own tables) and `vault repair
//! metadata` (rewrite damaged copies of the config, snapshots and tree packs).

use std::sync::Arc;

use anyhow::Result;
use vault::progress::Progress;
use vault::repair::{self, RepairOptions, RepairReport};

use super::output::Stream;
use super::Ctx;
use crate::ui;

#[derive(clap::Subcommand)]
pub(crate) enum Cmd {
    /// Rebuild the index from the tables inside the packs, then replace every index object.
    /// For an index object reported damaged, or index entries `check` says disagree with a
    /// pack. Entries no full device vouched for are read back and verified first. Safe while
    /// other devices back up; stopped at any point, running it again finishes the job.
    Index(IndexArgs),
    /// Rewrite each damaged or missing copy of the config, the snapshots and the tree packs
    /// from the intact other copy (vault keeps two of each), or a snapshot from this
    /// computer's local index when both are damaged. For what `check` reports as a damaged
    /// first or second copy. Safe to run at any time; running it again finishes the job.
    #[command(visible_alias = "snapshots")]
    Metadata(IndexArgs),
}

#[derive(clap::Args)]
pub(crate) struct IndexArgs {
    /// Show what would be written and removed; change nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
}

pub(crate) fn run(ctx: &Ctx<'_>, c: &Cmd) -> Result<u8> {
    match c {
        Cmd::Index(a) => index(ctx, a),
        Cmd::Metadata(a) => metadata(ctx, a),
    }
}

fn metadata(ctx: &Ctx<'_>, a: &IndexArgs) -> Result<u8> {
    let (repo, _) = ctx.open_target(&ctx.target()?)?;
    let r = vault::recopy::repair_metadata(&repo, a.dry_run)?;
    if ctx.out.stream() == Stream::Json {
        ctx.out.json(&r)?;
        return Ok(if r.clean() { 0 } else { 1 });
    }
    for what in &r.lost {
        ctx.out.warn(format!("error: {what}"));
    }
    for f in &r.failed {
        ctx.out.warn(format!("error: could not rewrite {f}"));
    }
    for w in &r.rewritten {
        ctx.out.say(format!(
            "{} {w}",
            if r.dry_run {
                "would rewrite"
            } else {
                "rewrote"
            }
        ));
    }
    ctx.out.say(format!(
        "checked the config, {} snapshot(s) and {} tree pack(s), two copies of each: {}",
        r.snapshots,
        r.tree_packs,
        match (r.rewritten.len(), r.clean()) {
            (0, true) => "all intact".to_string(),
            (1, true) if r.dry_run => "1 copy would be rewritten".to_string(),
            (1, true) => "1 copy rewritten".to_string(),
            (n, true) if r.dry_run => format!("{n} copies would be rewritten"),
            (n, true) => format!("{n} copies rewritten"),
            (_, false) => "see the errors above".to_string(),
        }
    ));
    Ok(if r.clean() { 0 } else { 1 })
}

fn index(ctx: &Ctx<'_>, a: &IndexArgs) -> Result<u8> {
    let (repo, _) = ctx.open_target(&ctx.target()?)?;
    let progress = Arc::new(Progress::default());
    let view = ctx.out.progress_if(progress.clone(), "repair", true);
    let res = repair::repair_index(&repo, &RepairOptions { dry_run: a.dry_run }, progress);
    view.finish();
    let r = res?;
    if ctx.out.stream() == Stream::Json {
        ctx.out.json(&r)?;
    } else {
        report(ctx, &r);
    }
    Ok(if r.clean() { 0 } else { 1 })
}

fn report(ctx: &Ctx<'_>, r: &RepairReport) {
    for p in &r.damaged_index_objects {
        ctx.out.warn(format!(
            "damaged index object {}: {} (replaced)",
            vault::backend::short_name(&p.name),
            ui::safe(&p.reason)
        ));
    }
    for p in &r.unreadable_packs {
        ctx.out.warn(format!(
            "error: pack {}: {}; its old index entries are kept as they were",
            vault::backend::short_name(&p.name),
            ui::safe(&p.reason)
        ));
    }
    for p in &r.missing_packs {
        ctx.out.warn(format!(
            "error: pack {} is missing; its chunks are dropped from the index (the next backup \
             of those files stores them again; `vault check` names the snapshots that need it)",
            vault::backend::short_name(p)
        ));
    }
    if r.blobs_refused > 0 {
        ctx.out.warn(format!(
            "error: {} chunk(s) in pack tables did not verify and were left out",
            r.blobs_refused
        ));
    }
    ctx.out.say(format!(
        "{} packs, {} chunks: {} recorded by a full device, {} by write-only devices, {} read back \
         and verified; {} old entries dropped",
        r.packs, r.blobs, r.blobs_vouched, r.blobs_device, r.blobs_verified, r.entries_dropped
    ));
    if r.dry_run {
        ctx.out.say(format!(
            "dry run: would write new index objects and remove the {} old ones",
            r.index_objects
        ));
    } else {
        ctx.out.say(format!(
            "index rebuilt: {} index objects written, {} removed{}",
            r.index_objects_written,
            r.index_objects_removed,
            if r.clean() {
                ""
            } else {
                " (with the errors above)"
            }
        ));
    }
}
