//! `vault stats`: repository size, what each snapshot added, deduplication, vault-only files.

use anyhow::Result;
use vault::stats;

use super::Ctx;
use crate::ui;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Only this snapshot (`latest` or an id prefix), with what it takes on its own
    #[arg(value_name = "SNAPSHOT")]
    snapshot: Option<String>,
}

pub(crate) fn run(ctx: &Ctx<'_>, a: &Args) -> Result<u8> {
    let repo = ctx.open()?;
    let one = match &a.snapshot {
        Some(s) => Some(repo.find_snapshot(s)?.0),
        None => None,
    };
    let st = stats::stats(&repo, one)?;
    ctx.warn_missing_snapshots(&repo);
    ctx.out.result(&st, || {
        let s = &st.stored;
        println!(
            "repository: {} in {} packs, {} index objects, {} snapshots ({} other)",
            ui::bytes(s.total_bytes),
            s.packs.count,
            s.index.count,
            s.snapshots.count,
            ui::bytes(s.other.bytes)
        );
        println!(
            "snapshots hold {} of files; stored once, compressed: {} in {} chunks and listings{}",
            ui::bytes(st.logical_bytes),
            ui::bytes(st.deduplicated_bytes),
            st.blobs,
            if st.deduplicated_bytes > 0 {
                format!(
                    " ({:.1}x)",
                    st.logical_bytes as f64 / st.deduplicated_bytes as f64
                )
            } else {
                String::new()
            }
        );
        if st.vault_only_files > 0 {
            println!(
                "vault-only (moved into the vault, the only copy): {} files, {}",
                st.vault_only_files,
                ui::bytes(st.vault_only_bytes)
            );
        }
        println!(
            "not needed by any snapshot: {} (`vault prune` frees it)",
            ui::bytes(st.unused_bytes)
        );
        println!(
            "{:<8}  {:<19}  {:>8}  {:>10}  {:>10}",
            "id", "time (UTC)", "files", "size", "added"
        );
        for l in &st.snapshots {
            println!(
                "{:<8}  {:<19}  {:>8}  {:>10}  {:>10}",
                &l.id[..8],
                ui::local_time(l.time),
                l.files,
                ui::bytes(l.logical_bytes),
                ui::bytes(l.added_bytes)
            );
            if let Some(d) = l.deduplicated_bytes {
                println!("  on its own it needs {}", ui::bytes(d));
            }
        }
        Ok(())
    })?;
    Ok(0)
}
