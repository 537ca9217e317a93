//! `vault prune`: free the space of data no snapshot needs (lock-free, in two runs a grace
//! period apart; design.md §13.2).

use std::sync::Arc;

use anyhow::Result;
use vault::progress::Progress;
use vault::pruner::{self, PruneOptions, PruneReport};

use super::Ctx;
use crate::ui;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Show what would be condemned, repacked and deleted; change nothing
    #[arg(long, short = 'n')]
    pub(crate) dry_run: bool,
    /// Repack packs until at most this share of the repository is unused (percent)
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0)]
    pub(crate) max_unused: f64,
    /// How long data stays condemned before it is deleted, and how old a pack must be before
    /// it is condemned: longer than any backup takes between its last check and its snapshot,
    /// and than clocks disagree (e.g. 24h, 2d; 0 only when nothing else writes to the
    /// repository; a plain number is seconds)
    #[arg(long, value_name = "SPAN", default_value = "24h", value_parser = parse_grace)]
    pub(crate) grace: i64,
    /// Do not merge small packs
    #[arg(long)]
    pub(crate) no_merge: bool,
}

pub(crate) fn parse_grace(s: &str) -> std::result::Result<i64, String> {
    // Plain seconds, for tests and for repositories only one computer writes to.
    if let Ok(n) = s.trim().parse::<u32>() {
        return Ok(i64::from(n));
    }
    let bad = || format!("{s:?} is not a duration: give e.g. 24h, 2d, 1d12h, 90m (minutes) or 0");
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let unit = match c {
            'd' => 86_400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .filter(|t| *t <= 3650 * 86_400)
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

pub(crate) fn run(ctx: &Ctx<'_>, a: &Args) -> Result<u8> {
    if !(0.0..=100.0).contains(&a.max_unused) {
        return super::usage("--max-unused is a percentage: 0 to 100");
    }
    let repo = ctx.open()?;
    prune_open(ctx, &repo, a)
}

pub(crate) fn prune_open(ctx: &Ctx<'_>, repo: &vault::repo::Repository, a: &Args) -> Result<u8> {
    let r = prune_report(ctx, repo, a)?;
    ctx.out.result(&r, || {
        report(&r);
        Ok(())
    })?;
    Ok(0)
}

/// Run a prune and warn about what it found; the report is for the caller to show.
pub(crate) fn prune_report(
    ctx: &Ctx<'_>,
    repo: &vault::repo::Repository,
    a: &Args,
) -> Result<PruneReport> {
    let opts = PruneOptions {
        dry_run: a.dry_run,
        grace: a.grace,
        max_unused: a.max_unused,
        merge_small: !a.no_merge,
    };
    let progress = Arc::new(Progress::default());
    let view = ctx.out.progress(progress.clone(), "prune");
    let r = pruner::prune(repo, &opts, progress);
    view.finish();
    let r = r?;
    for m in &r.bad_markers {
        ctx.out.warn(format!(
            "warning: {m}; it counted for nothing{}",
            if a.dry_run { "" } else { " and was removed" }
        ));
    }
    for p in &r.missing_packs {
        ctx.out.warn(format!(
            "warning: pack {} is in the index but not stored; run `vault check`",
            vault::backend::short_name(p)
        ));
    }
    Ok(r)
}

pub(crate) fn report(r: &PruneReport) {
    let verb = |now: &str, dry: &str| {
        if r.dry_run {
            dry.to_string()
        } else {
            now.to_string()
        }
    };
    println!(
        "{} snapshots need {} chunks ({}); the repository holds {} in {} packs, {} of it unused",
        r.snapshots,
        r.used_blobs,
        ui::bytes(r.used_bytes),
        ui::bytes(r.repository_bytes),
        r.packs,
        ui::bytes(r.unused_bytes)
    );
    if r.deleted_packs > 0 {
        println!(
            "{} {} packs ({}) condemned by an earlier prune",
            verb("deleted", "would delete"),
            r.deleted_packs,
            ui::bytes(r.deleted_bytes)
        );
    }
    if r.orphan_copies_removed > 0 {
        println!(
            "deleted {} second cop{} of tree packs ({}) that no index lists and whose pack is \
             gone (left by interrupted runs)",
            r.orphan_copies_removed,
            if r.orphan_copies_removed == 1 {
                "y"
            } else {
                "ies"
            },
            ui::bytes(r.orphan_copies_bytes)
        );
    }
    if r.repacked_packs > 0 {
        println!(
            "{} {} chunks ({}) out of {} packs into new ones",
            verb("copied", "would copy"),
            r.repacked_blobs,
            ui::bytes(r.repacked_bytes),
            r.repacked_packs
        );
    }
    if r.condemned_packs + r.repacked_packs > 0 {
        println!(
            "{} {} packs ({} unneeded, {} repacked): a prune after the grace period deletes them",
            verb("condemned", "would condemn"),
            r.condemned_packs + r.repacked_packs,
            ui::bytes(r.condemned_bytes),
            r.repacked_packs
        );
    }
    if let Some(until) = r.waiting_until {
        println!(
            "{} packs ({}) condemned earlier wait for their grace period (the first until {})",
            r.waiting_packs,
            ui::bytes(r.waiting_bytes),
            ui::time(until)
        );
    }
    if r.resurrected_packs > 0 {
        println!(
            "{} condemned packs are needed again by new snapshots and were kept",
            r.resurrected_packs
        );
    }
    if r.young_packs > 0 {
        println!(
            "{} packs are younger than the grace period (a backup may still be writing them): \
             left alone",
            r.young_packs
        );
    }
    for (what, until) in &r.locked {
        println!(
            "{what} is under Object Lock until {}: deleted by a later prune",
            ui::time(*until)
        );
    }
}
