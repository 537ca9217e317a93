//! `vault forget`: remove snapshots by retention policy or by id, never a vault-only file's only
//! record unless it is named.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use vault::forget::{self, Filter, GroupBy, Options};
use vault::retention::{Count, Policy, Span};

use super::Ctx;
use crate::ui;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Snapshots to forget (`latest` or at least 4 hex digits of the id), instead of a policy
    #[arg(value_name = "SNAPSHOT")]
    ids: Vec<String>,
    /// Keep the N newest snapshots (-1: all)
    #[arg(long, value_name = "N", value_parser = Count::parse, allow_hyphen_values = true, help_heading = "Retention policy")]
    keep_last: Option<Count>,
    /// Keep the newest snapshot of each of the last N hours that have one (-1: all)
    #[arg(long, value_name = "N", value_parser = Count::parse, allow_hyphen_values = true, help_heading = "Retention policy")]
    keep_hourly: Option<Count>,
    /// Keep the newest snapshot of each of the last N days that have one (-1: all)
    #[arg(long, value_name = "N", value_parser = Count::parse, allow_hyphen_values = true, help_heading = "Retention policy")]
    keep_daily: Option<Count>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one (-1: all)
    #[arg(long, value_name = "N", value_parser = Count::parse, allow_hyphen_values = true, help_heading = "Retention policy")]
    keep_weekly: Option<Count>,
    /// Keep the newest snapshot of each of the last N months that have one (-1: all)
    #[arg(long, value_name = "N", value_parser = Count::parse, allow_hyphen_values = true, help_heading = "Retention policy")]
    keep_monthly: Option<Count>,
    /// Keep the newest snapshot of each of the last N years that have one (-1: all)
    #[arg(long, value_name = "N", value_parser = Count::parse, allow_hyphen_values = true, help_heading = "Retention policy")]
    keep_yearly: Option<Count>,
    /// Keep every snapshot within this span of the newest one (e.g. 1y6m, 30d, 12h)
    #[arg(long, value_name = "SPAN", value_parser = Span::parse, help_heading = "Retention policy")]
    keep_within: Option<Span>,
    /// Keep the newest snapshot of each hour within this span of the newest snapshot
    #[arg(long, value_name = "SPAN", value_parser = Span::parse, help_heading = "Retention policy")]
    keep_within_hourly: Option<Span>,
    /// Keep the newest snapshot of each day within this span of the newest snapshot
    #[arg(long, value_name = "SPAN", value_parser = Span::parse, help_heading = "Retention policy")]
    keep_within_daily: Option<Span>,
    /// Keep the newest snapshot of each week within this span of the newest snapshot
    #[arg(long, value_name = "SPAN", value_parser = Span::parse, help_heading = "Retention policy")]
    keep_within_weekly: Option<Span>,
    /// Keep the newest snapshot of each month within this span of the newest snapshot
    #[arg(long, value_name = "SPAN", value_parser = Span::parse, help_heading = "Retention policy")]
    keep_within_monthly: Option<Span>,
    /// Keep the newest snapshot of each year within this span of the newest snapshot
    #[arg(long, value_name = "SPAN", value_parser = Span::parse, help_heading = "Retention policy")]
    keep_within_yearly: Option<Span>,
    /// Keep snapshots with these tags (a,b: both; repeat for either; '' for untagged ones)
    #[arg(long, value_name = "TAGS", help_heading = "Retention policy")]
    keep_tag: Vec<String>,
    /// Remove every snapshot of the selected groups (a policy alone never empties a group)
    #[arg(long, help_heading = "Retention policy")]
    keep_none: bool,
    /// What makes snapshots one group for the policy: host, paths, tags, comma-separated, or
    /// '' for one group (snapshots of write-only devices are always grouped apart)
    #[arg(
        long,
        value_name = "FIELDS",
        default_value = "host,paths",
        help_heading = "Retention policy"
    )]
    group_by: String,
    /// Only snapshots of this host (repeat for several)
    #[arg(long, value_name = "HOST", help_heading = "Which snapshots")]
    host: Vec<String>,
    /// Only snapshots with these tags (a,b: both; repeat for either)
    #[arg(long, value_name = "TAGS", help_heading = "Which snapshots")]
    tag: Vec<String>,
    /// Only snapshots that include this backup path (repeat for several)
    #[arg(long, value_name = "PATH", help_heading = "Which snapshots")]
    path: Vec<PathBuf>,
    /// Let these vault-only files (moved into the vault: the only copy) go with the snapshots
    /// that hold their newest record; without it such snapshots are always kept
    #[arg(long = "vault-only", value_name = "PATH")]
    vault_only: Vec<PathBuf>,
    /// With --vault-only, do not ask for confirmation (required without a terminal)
    #[arg(long)]
    yes: bool,
    /// Show what would be kept and removed, and why; change nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Then run `vault prune` (with its defaults and the --grace given here)
    #[arg(long)]
    prune: bool,
    /// With --prune: the grace period (see `vault prune --help`)
    #[arg(long, value_name = "SPAN", default_value = "24h", value_parser = super::prune::parse_grace)]
    grace: i64,
}

#[derive(Serialize)]
struct EntryJson {
    id: String,
    time: i64,
    host: String,
    paths: Vec<String>,
    tags: Vec<String>,
    writer: &'static str,
    keep: bool,
    reasons: Vec<String>,
    vault_only_held: u64,
    vault_only_released: u64,
}

#[derive(Serialize)]
struct GroupJson {
    group: String,
    snapshots: Vec<EntryJson>,
}

#[derive(Serialize)]
struct ForgetJson {
    dry_run: bool,
    groups: Vec<GroupJson>,
    kept: usize,
    removed: Vec<String>,
    vault_only_released: u64,
    snapshot_objects_deleted: u64,
    locked: Vec<LockedJson>,
    /// With --prune.
    #[serde(skip_serializing_if = "Option::is_none")]
    prune: Option<vault::pruner::PruneReport>,
}

#[derive(Serialize)]
struct LockedJson {
    kind: &'static str,
    name: String,
    until: i64,
}

fn tags(list: &[String]) -> Vec<Vec<String>> {
    list.iter()
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

fn components(p: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    let abs = std::path::absolute(p).with_context(|| format!("{}", p.display()))?;
    Ok(abs
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.as_bytes().to_vec()),
            _ => None,
        })
        .collect())
}

impl Args {
    fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last.unwrap_or_default(),
            hourly: self.keep_hourly.unwrap_or_default(),
            daily: self.keep_daily.unwrap_or_default(),
            weekly: self.keep_weekly.unwrap_or_default(),
            monthly: self.keep_monthly.unwrap_or_default(),
            yearly: self.keep_yearly.unwrap_or_default(),
            within: self.keep_within.unwrap_or_default(),
            within_hourly: self.keep_within_hourly.unwrap_or_default(),
            within_daily: self.keep_within_daily.unwrap_or_default(),
            within_weekly: self.keep_within_weekly.unwrap_or_default(),
            within_monthly: self.keep_within_monthly.unwrap_or_default(),
            within_yearly: self.keep_within_yearly.unwrap_or_default(),
            tags: tags(&self.keep_tag),
        }
    }
}

use super::usage;

pub(crate) fn run(ctx: &Ctx<'_>, a: &Args) -> Result<u8> {
    let policy = a.policy();
    let group_by = match GroupBy::parse(&a.group_by) {
        Ok(g) => g,
        Err(e) => return usage(e),
    };
    if !a.ids.is_empty() && (!policy.is_empty() || a.keep_none) {
        return usage("give snapshot ids or a policy (--keep-...), not both");
    }
    if a.keep_none && a.host.is_empty() && a.tag.is_empty() && a.path.is_empty() {
        return usage(
            "--keep-none removes whole groups of snapshots: say which with --host, \
             --tag or --path",
        );
    }
    if a.ids.is_empty() && policy.is_empty() && !a.keep_none {
        return usage(
            "nothing to forget: give snapshot ids, a policy (--keep-last, \
             --keep-daily, --keep-within, ...) or --keep-none; see `vault forget --help`",
        );
    }
    let mut opts = Options {
        policy,
        keep_none: a.keep_none,
        ids: a.ids.clone(),
        group_by,
        filter: Filter {
            hosts: a.host.clone(),
            tags: tags(&a.tag),
            paths: a
                .path
                .iter()
                .map(|p| std::path::absolute(p).map(|p| p.as_os_str().as_bytes().to_vec()))
                .collect::<std::io::Result<_>>()?,
        },
        release_vault_only: Vec::new(),
    };
    for p in &a.vault_only {
        opts.release_vault_only.push(components(p)?);
    }
    let repo = ctx.open()?;
    ctx.warn_missing_snapshots(&repo);
    if a.ids.iter().any(|i| i == "latest") {
        // Say which newer snapshots `latest` passed over, as restore and ls do.
        ctx.warn_passed_over(&repo.find_snapshot_noting("latest")?.passed_over);
    }
    let now = vault::repo::now().0;
    let plan = forget::plan(&repo, &opts, now)?;
    for id in &plan.unreadable {
        ctx.out.warn(format!(
            "warning: snapshot {} could not be read; it is neither kept nor removed by the policy",
            id.short()
        ));
    }
    for id in &plan.unreadable_named {
        ctx.out.warn(format!(
            "snapshot {} could not be read; forgetting it as you asked",
            id.short()
        ));
    }
    let mut remove: Vec<vault::ids::Id> = plan.removed().map(|e| e.id).collect();
    remove.extend(plan.unreadable_named.iter().copied());
    let released = plan.released();
    if released > 0 && !a.dry_run && !a.yes {
        if !std::io::stdin().is_terminal() {
            return usage(
                "this would remove {released} vault-only file(s), whose originals \
                 were deleted by `vault move`: the vault may hold their only copy. Nothing was \
                 forgotten. Run it on a terminal to confirm, or add --yes",
            );
        }
        eprint!(
            "This removes {released} vault-only file(s) whose originals `vault move` deleted: \
             the vault may hold their only copy. Type 'yes' to remove them: "
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            bail!("not confirmed; nothing was forgotten");
        }
    }
    let done = if a.dry_run || remove.is_empty() {
        forget::Done::default()
    } else {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        forget::execute(&repo, &remove, &host)?
    };
    let explicit_kept = !a.ids.is_empty()
        && plan
            .groups
            .iter()
            .any(|g| g.entries.iter().any(|e| e.keep()));
    let paths = |s: &vault::format::snapshot::Snapshot| -> Vec<String> {
        s.paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    };
    let mut json = ForgetJson {
        dry_run: a.dry_run,
        groups: plan
            .groups
            .iter()
            .map(|g| GroupJson {
                group: forget::describe(&g.host, &g.paths, &g.tags, &g.writer),
                snapshots: g
                    .entries
                    .iter()
                    .map(|e| EntryJson {
                        id: e.id.to_hex(),
                        time: e.snapshot.time,
                        host: e.snapshot.host.clone(),
                        paths: paths(&e.snapshot),
                        tags: e.snapshot.tags.clone(),
                        writer: e.snapshot.writer.name(),
                        keep: e.keep(),
                        reasons: e.reasons.clone(),
                        vault_only_held: e.vault_only_held,
                        vault_only_released: e.vault_only_released,
                    })
                    .collect(),
            })
            .collect(),
        kept: plan
            .groups
            .iter()
            .flat_map(|g| g.entries.iter())
            .filter(|e| e.keep())
            .count(),
        removed: remove.iter().map(|id| id.to_hex()).collect(),
        vault_only_released: released,
        snapshot_objects_deleted: done.deleted,
        prune: None,
        locked: done
            .locked
            .iter()
            .map(|(t, n, until)| LockedJson {
                kind: t.name(),
                name: n.to_hex(),
                until: *until,
            })
            .collect(),
    };
    if a.prune {
        json.prune = Some(super::prune::prune_report(
            ctx,
            &repo,
            &super::prune::Args {
                dry_run: a.dry_run,
                max_unused: 5.0,
                grace: a.grace,
                no_merge: false,
            },
        )?);
    }
    ctx.out.result(&json, || {
        for g in &plan.groups {
            println!(
                "{}:",
                ui::safe(&forget::describe(&g.host, &g.paths, &g.tags, &g.writer))
            );
            for e in &g.entries {
                let verdict = if e.keep() {
                    format!("keep    {}", e.reasons.join(", "))
                } else if e.vault_only_released > 0 {
                    format!(
                        "remove  (with {} vault-only file(s) you named)",
                        e.vault_only_released
                    )
                } else {
                    "remove".to_string()
                };
                println!(
                    "  {}  {}  {}",
                    e.id.short(),
                    ui::local_time(e.snapshot.time),
                    ui::safe(&verdict)
                );
            }
        }
        Ok(())
    })?;
    let kept = json.kept;
    if a.dry_run {
        ctx.out.say(format!(
            "dry run: would keep {kept} snapshot(s) and forget {}; nothing was changed",
            remove.len()
        ));
    } else {
        let what = if a.ids.is_empty() {
            format!("kept {kept} snapshot(s), forgot {}", remove.len())
        } else {
            format!(
                "forgot {} of the {} snapshot(s) named",
                remove.len(),
                a.ids.len()
            )
        };
        ctx.out.say(format!(
            "{what}{}",
            if a.prune || remove.is_empty() {
                ""
            } else {
                " (run `vault prune` to free the space their data takes)"
            }
        ));
    }
    if let Some(r) = &json.prune {
        if ctx.out.stream() == super::output::Stream::Text {
            super::prune::report(r);
        }
    }
    for (t, n, until) in &done.locked {
        ctx.out.notice(format!(
            "{} {} is under Object Lock until {}: it stays stored (already forgotten) and a \
             later `vault forget` or `vault prune` removes it",
            t.name(),
            n.short(),
            ui::time(*until)
        ));
    }
    if explicit_kept {
        ctx.out.warn(
            "some snapshots you named were kept: they hold the only record of vault-only files \
             (name those with --vault-only PATH to let them go)",
        );
        return Ok(super::output::EXIT_PARTIAL);
    }
    Ok(0)
}
