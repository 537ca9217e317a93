//! `vault ls`: the files of a snapshot, streamed as they are read; `--vault-only`: the files
//! that live only in the vault, from every snapshot.

use std::io::Write;

use anyhow::{bail, Result};
use serde::Serialize;
use vault::backend::short_name;
use vault::format::tree::{Node, NodeKind};
use vault::mover;
use vault::repo::{PackReaders, Repository};
use vault::restorer::split_path;
use vault::treewalk::show_path;
use vault::treewalk::{self, Found, TreeWalk};

use super::output::Stream;
use super::Ctx;
use crate::ui;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// `latest` (the default) or at least 4 hex digits of a snapshot id; with `--vault-only`,
    /// the path
    snapshot: Option<String>,
    /// Only list under this path inside the snapshot
    path: Option<String>,
    /// List the files that live only in the vault (moved with `vault move`), from every
    /// snapshot: `vault ls --vault-only [PATH]`
    #[arg(long)]
    vault_only: bool,
}

#[derive(Serialize)]
pub(crate) struct LsEntry {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    pub(crate) size: u64,
    mode: String,
    /// None for a folder above the backed-up paths: its time is not recorded (it changes
    /// whenever anything beside them does).
    mtime: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    /// It kept changing while backup read it: the stored copy may mix two versions.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    torn: bool,
}

/// What `ls` adds to a file stored while it kept changing.
pub(crate) const TORN_NOTE: &str = "  [changed while backed up: may mix two versions]";

fn mode_string(kind: &NodeKind, mode: u32) -> String {
    let t = match kind {
        NodeKind::Dir { .. } => 'd',
        NodeKind::Symlink { .. } => 'l',
        NodeKind::File { .. } => '-',
    };
    let mut s = String::from(t);
    // As `ls -l`: setuid, setgid and sticky show in the execute columns (s/S, s/S, t/T).
    for (shift, special, set) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let b = (mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(match (b & 1 != 0, mode & special != 0) {
            (true, true) => set,
            (false, true) => set.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// A path as the snapshot holds it: absolute, a relative one taken from the current folder, as
/// `backup` takes it.
pub(crate) fn in_snapshot(p: &str) -> String {
    if p.starts_with('/') {
        return p.to_string();
    }
    std::path::absolute(p)
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|_| p.to_string())
}

/// A time as `ls` prints it; a dash, as wide, where none was recorded.
fn show_time(t: Option<i64>) -> String {
    t.map_or_else(|| format!("{:<19}", "-"), ui::local_time)
}

pub(crate) fn entry(path: &[Vec<u8>], n: &Node) -> LsEntry {
    LsEntry {
        path: show_path(path),
        kind: match n.kind {
            NodeKind::Dir { .. } => "dir",
            NodeKind::File { .. } => "file",
            NodeKind::Symlink { .. } => "symlink",
        },
        size: n.size,
        mode: mode_string(&n.kind, n.mode),
        mtime: (n.flags & vault::format::tree::FLAG_ANCESTOR == 0).then_some(n.mtime),
        target: match &n.kind {
            NodeKind::Symlink { target } => Some(String::from_utf8_lossy(target).into_owned()),
            _ => None,
        },
        torn: n.flags & vault::format::tree::FLAG_TORN != 0,
    }
}

pub(crate) fn run(ctx: &Ctx<'_>, a: &Args) -> Result<u8> {
    if a.vault_only {
        // Vault-only files come from every snapshot: the one argument is the path.
        let path = match (&a.snapshot, &a.path) {
            (Some(_), Some(_)) => bail!(
                "--vault-only lists files from every snapshot: give only a path, as in \
                 `vault ls --vault-only ~/Pictures/2024`"
            ),
            (p, None) | (None, p) => p.as_deref(),
        };
        return vault_only(ctx, path.map(in_snapshot).as_deref());
    }
    // `vault ls ~/Pictures`: one argument that is a path, not a snapshot id.
    let (snapshot, path) = match (&a.snapshot, &a.path) {
        (Some(s), None) if s.contains('/') => (None, Some(s.clone())),
        (s, p) => (s.clone(), p.clone()),
    };
    let path = path.map(|p| in_snapshot(&p));
    let repo = ctx.open()?;
    let found = repo.find_snapshot_noting(snapshot.as_deref().unwrap_or("latest"))?;
    ctx.warn_passed_over(&found.passed_over);
    let (sid, snap) = (found.id, found.snapshot);
    ctx.warn_missing_snapshots(&repo);
    let mut readers = PackReaders::default();
    let want = path.as_deref().map(split_path).unwrap_or_default();
    let top = match treewalk::resolve(&repo, &snap.root, &want, &mut readers)? {
        None => bail!("{} is not in the snapshot", path.as_deref().unwrap_or("")),
        Some(Found::Entry(node)) => return print(ctx, std::iter::once(entry(&want, &node)), None),
        Some(Found::Folder(top)) => top,
    };
    // Entries are printed as they are read: a folder of a million photos is never held whole.
    let mut walk = TreeWalk::new(&repo, top, want, treewalk::Budget::of(&sid, &snap));
    let failed = std::cell::RefCell::new(None);
    let entries = std::iter::from_fn(|| match walk.next_entry() {
        Ok(e) => e.map(|(p, n)| entry(&p, &n)),
        Err(e) => {
            *failed.borrow_mut() = Some(e);
            None
        }
    });
    let r = print(ctx, entries, Some(&failed));
    ctx.warn_damaged(&repo);
    r
}

/// Print entries as they come (a JSON array with --json); `failed` holds the error that ended
/// them early, if one did. A reader that stops reading (`vault ls | head`) ends the listing
/// quietly: it has what it wanted.
fn print(
    ctx: &Ctx<'_>,
    entries: impl Iterator<Item = LsEntry>,
    failed: Option<&std::cell::RefCell<Option<vault::Error>>>,
) -> Result<u8> {
    match write(ctx, entries) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
        r => r?,
    }
    if let Some(e) = failed.and_then(|f| f.borrow_mut().take()) {
        return Err(e.into());
    }
    Ok(0)
}

fn write(ctx: &Ctx<'_>, entries: impl Iterator<Item = LsEntry>) -> std::io::Result<()> {
    let mut o = std::io::BufWriter::new(std::io::stdout().lock());
    match ctx.out.stream() {
        Stream::Json => {
            // Streamed: the array is written entry by entry.
            let mut ser = serde_json::Serializer::pretty(&mut o);
            serde::Serializer::collect_seq(&mut ser, entries).map_err(std::io::Error::from)?;
            writeln!(o)?;
        }
        Stream::Text => {
            for e in entries {
                let link = e
                    .target
                    .as_ref()
                    .map(|t| format!(" -> {}", ui::safe(t)))
                    .unwrap_or_default();
                writeln!(
                    o,
                    "{} {:>12} {} {}{}{}",
                    e.mode,
                    e.size,
                    show_time(e.mtime),
                    ui::safe(&e.path),
                    link,
                    if e.torn { TORN_NOTE } else { "" }
                )?;
            }
        }
        Stream::Silent => entries.for_each(drop),
    }
    o.flush()
}

/// Vault-only files under `under` (all when empty).
pub(crate) fn vault_only_under(
    repo: &Repository,
    under: &[Vec<Vec<u8>>],
) -> Result<Vec<mover::VaultOnlyFile>> {
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

fn vault_only(ctx: &Ctx<'_>, path: Option<&str>) -> Result<u8> {
    let repo = ctx.open()?;
    let under: Vec<_> = path.map(split_path).into_iter().collect();
    let files = vault_only_under(&repo, &under)?;
    let rows: Vec<VaultOnlyJson> = files
        .iter()
        .map(|f| VaultOnlyJson {
            entry: entry(&f.path, &f.node),
            snapshot: f.snapshot.to_hex(),
            on_disk: std::fs::symlink_metadata(mover::local_path(&f.path)).is_ok(),
        })
        .collect();
    ctx.out.result(&rows, || {
        let mut o = std::io::stdout().lock();
        for r in &rows {
            writeln!(
                o,
                "{} {:>12} {} {}  {}{}",
                r.entry.mode,
                r.entry.size,
                show_time(r.entry.mtime),
                short_name(&r.snapshot),
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
        Ok(())
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_ls_shows_them() {
        let dir = NodeKind::Dir {
            subtree: vault::Id::default(),
        };
        assert_eq!(mode_string(&dir, 0o41777), "drwxrwxrwt");
        assert_eq!(mode_string(&dir, 0o42775), "drwxrwsr-x");
        assert_eq!(mode_string(&dir, 0o40750), "drwxr-x---");
        assert_eq!(mode_string(&dir, 0o41770), "drwxrwx--T");
    }
}
