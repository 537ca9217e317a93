//! `vault copy`: snapshots of one repository into another, re-encrypted for the destination
//! and read back there before they count.

use std::sync::Arc;

use anyhow::{Context, Result};
use vault::backend::short_name;
use vault::progress::Progress;

use super::Ctx;
use crate::ui;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Source repository (a name from `vault repo list`, or an address)
    #[arg(long, value_name = "REPO")]
    from: String,
    /// Destination repository
    #[arg(long, value_name = "REPO")]
    to: String,
    /// Snapshots to copy (`latest` or at least 4 hex digits); default: all
    #[arg(value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
}

pub(crate) fn run(ctx: &Ctx<'_>, a: &Args) -> Result<u8> {
    let (src, src_label) = ctx
        .open_target(&ctx.resolve(&a.from)?)
        .with_context(|| format!("cannot open {}", a.from))?;
    let dt = ctx.resolve(&a.to)?;
    let (dst, dst_label) = ctx
        .open_target(&dt)
        .with_context(|| format!("cannot open {}", a.to))?;
    let mut ids = Vec::new();
    for s in &a.snapshots {
        ids.push(src.find_snapshot(s)?.0);
    }
    let progress = Arc::new(Progress::default());
    progress.begin("copying");
    let view = ctx.out.progress(progress.clone(), "copy");
    let res = vault::copier::copy(
        &src,
        &dst,
        &ids,
        vault::worker_count(0).max(ctx.connections(&dt)),
        progress,
    );
    view.finish();
    let r = res?;
    ctx.warn_index(&dst)?;
    ctx.out.result(&r, || {
        for (a, b) in &r.copied {
            println!(
                "copied snapshot {} to {} as {}",
                short_name(a),
                dst_label,
                short_name(b)
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
        Ok(())
    })?;
    for f in &r.failed {
        ctx.out
            .warn(format!("error: did not verify after copying: {f}"));
    }
    Ok(if r.failed.is_empty() { 0 } else { 1 })
}
