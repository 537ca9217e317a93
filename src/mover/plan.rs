//! `vault move --dry-run` and the last step of a move: the local files and symlinks under the
//! roots after the excludes, and what a move can never take.

use super::*;

/// What a move would take: files and symlinks under the roots, after the excludes.
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    pub files: Vec<PlannedItem>,
    pub bytes: u64,
    /// Left where they are whatever happens (sockets, devices, FIFOs, unreadable folders).
    pub kept: Vec<Skipped>,
}

#[derive(Debug, Serialize)]
pub struct PlannedItem {
    pub path: String,
    pub size: u64,
}

/// `--dry-run`: list what the move would take, touching nothing.
pub fn plan(opts: &BackupOptions) -> Result<Plan> {
    let (items, kept) = local_items(opts)?;
    let mut plan = Plan {
        bytes: items.iter().map(|i| i.1).sum(),
        files: items
            .into_iter()
            .map(|(p, size)| PlannedItem {
                path: p.to_string_lossy().into_owned(),
                size,
            })
            .collect(),
        kept,
    };
    plan.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(plan)
}

/// Files and symlinks (with sizes) under the roots after the excludes, and what cannot be moved.
type LocalItems = (Vec<(PathBuf, u64)>, Vec<Skipped>);

pub(super) fn local_items(opts: &BackupOptions) -> Result<LocalItems> {
    let roots = archiver::prepare_paths(&opts.paths)?;
    let excludes = archiver::Excludes::new(&opts.excludes, &opts.exclude_paths)?;
    let mut plan = (Vec::new(), Vec::new());
    let mut stack: Vec<PathBuf> = roots;
    while let Some(p) = stack.pop() {
        if excludes.matches(&p) {
            continue;
        }
        let md = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                plan.1.push(Skipped {
                    path: p.to_string_lossy().into_owned(),
                    reason: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let t = md.file_type();
        if t.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => stack.extend(rd.flatten().map(|e| e.path())),
                Err(e) => plan.1.push(Skipped {
                    path: p.to_string_lossy().into_owned(),
                    reason: format!("cannot read: {e}"),
                }),
            }
        } else if t.is_file() || t.is_symlink() {
            plan.0.push((p, if t.is_file() { md.len() } else { 0 }));
        } else {
            plan.1.push(Skipped {
                path: p.to_string_lossy().into_owned(),
                reason: "not a file, folder or symlink".into(),
            });
        }
    }
    Ok(plan)
}
