//! `vault check`: verify a repository (with `--read-data`, every byte of it), or every named
//! repository with `--all`.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};
use vault::checker::{self, CheckOptions, CheckReport};
use vault::progress::Progress;

use super::output::Stream;
use super::{Ctx, Target};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Read and verify all data, not just the structure
    #[arg(long)]
    read_data: bool,
    /// Check every repository in `vault repo list`
    #[arg(long)]
    all: bool,
}

pub(crate) fn run(ctx: &Ctx<'_>, a: &Args) -> Result<u8> {
    if a.all {
        return check_all(ctx, a.read_data);
    }
    let (code, r) = check_one(ctx, &ctx.target()?, a.read_data)?;
    ctx.out.json(&r)?;
    Ok(code)
}

/// Run `check` on one repository and print the text report; the JSON is left to the caller.
fn check_one(ctx: &Ctx<'_>, t: &Target, read_data: bool) -> Result<(u8, CheckReport)> {
    let (repo, _) = ctx.open_target(t)?;
    let progress = Arc::new(Progress::default());
    progress.begin("checking");
    let view = ctx.out.progress_if(progress.clone(), "check", read_data);
    let res = checker::check(
        &repo,
        &CheckOptions {
            read_data,
            threads: vault::worker_count(0).max(ctx.connections(t)),
        },
        progress,
    );
    view.finish();
    let r = res?;
    // With --json the report is the JSON, printed by the caller.
    if ctx.out.stream() != Stream::Json {
        report(ctx, &r, read_data);
    }
    Ok((if r.ok() { 0 } else { 1 }, r))
}

fn report(ctx: &Ctx<'_>, r: &CheckReport, read_data: bool) {
    for n in &r.notes {
        ctx.out.say(format!("note: {n}"));
    }
    for e in &r.errors {
        ctx.out.warn(format!("error: {e}"));
    }
    for f in &r.damaged_files {
        ctx.out.warn(format!("damaged: {}", crate::ui::safe(f)));
    }
    for f in &r.vault_only_damaged {
        ctx.out.warn(format!(
            "error: vault-only file damaged or missing: {}: its original was moved into the \
             vault; restore it from another repository (`vault --repo OTHER restore \
             --vault-only`) and move it again",
            crate::ui::safe(f)
        ));
    }
    if r.repair_index {
        ctx.out.warn(
            "the index itself has errors: `vault repair index` rebuilds it from the packs' own \
             tables (then back up again to store what missing packs held)",
        );
    }
    ctx.out.say(format!(
        "{} snapshots, {} trees, {} packs{}{}: {}",
        r.snapshots,
        r.trees,
        r.packs,
        if r.vault_only_files > 0 {
            format!(", {} vault-only files", r.vault_only_files)
        } else {
            String::new()
        },
        if read_data {
            format!(
                " ({} read, {} blobs verified; {} downloaded for {} verified)",
                r.packs_read,
                r.blobs_verified,
                crate::ui::bytes(r.download.total),
                crate::ui::bytes(r.download.verified)
            )
        } else {
            String::new()
        },
        if r.ok() {
            "no errors".to_string()
        } else if r.vault_only_damaged.is_empty() {
            "ERRORS FOUND".to_string()
        } else {
            format!(
                "ERRORS FOUND, {} of them in vault-only files",
                r.vault_only_damaged.len()
            )
        }
    ));
}

fn check_all(ctx: &Ctx<'_>, read_data: bool) -> Result<u8> {
    let settings = ctx.settings()?;
    let names: Vec<String> = settings.repositories().map(|(n, _)| n.clone()).collect();
    if names.is_empty() {
        bail!(
            "no named repositories in {}: add them with `vault repo add`, or check one with --repo",
            settings.path().display()
        );
    }
    let mut code = 0;
    let mut out = BTreeMap::new();
    for t in ctx.targets(&names)? {
        let name = t.named.name.clone().unwrap_or_default();
        ctx.out.say(format!("== {name}"));
        match check_one(ctx, &t, read_data) {
            Ok((s, r)) => {
                code = code.max(s);
                out.insert(name, serde_json::json!(r));
            }
            Err(e) => {
                ctx.out.warn(format!("error: {name}: {e:#}"));
                code = code.max(1);
                out.insert(name, serde_json::json!({ "error": format!("{e:#}") }));
            }
        }
    }
    ctx.out.json(&out)?;
    Ok(code)
}
