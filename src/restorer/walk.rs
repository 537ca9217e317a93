//! The walk of a restore: each folder's entries in name order, unsafe names refused, folders
//! created private, files handed to the workers, symlinks created where they are.

use super::batch::Batcher;
use super::*;

/// What the walk carries from folder to folder.
pub(super) struct Walk<'c, 'a> {
    pub(super) ctx: &'c Ctx<'a>,
    pub(super) readers: PackReaders,
    pub(super) jobs: Batcher<'c, 'a>,
    /// Folders created or entered, in the order entered: their metadata is set at the end.
    pub(super) dirs: Vec<DirMeta>,
    /// Which `--include` paths were found.
    pub(super) matched: Vec<bool>,
    /// Entries the snapshot declares: a walk that meets more stops (§11).
    pub(super) budget: Budget,
}

impl Walk<'_, '_> {
    /// Restore the folder whose top tree blob is `tree_id` into `dir`; `path` is its path in the
    /// snapshot, `sel` how much of it is selected.
    pub(super) fn folder(
        &mut self,
        tree_id: &Id,
        dir: Arc<Dir>,
        path: Vec<Vec<u8>>,
        sel: Sel,
    ) -> Result<()> {
        let ctx = self.ctx;
        ctx.sel.mark(&path, &mut self.matched);
        let shown = show_path(&path);
        if path.len() > MAX_DEPTH {
            ctx.error(
                &shown,
                format!("refused: folder nested deeper than {MAX_DEPTH} levels"),
            );
            return Ok(());
        }
        // Names that differ only in case are one name on a filesystem that ignores case: there
        // the first one restored stays and the others are reported. Only there are the names of
        // a folder remembered (lower-cased), so a restore onto an ordinary filesystem holds none
        // of them whatever the folder's size.
        let mut folded: Option<HashMap<String, String>> =
            ctx.ignores_case_at(&dir).then(HashMap::new);
        let mut cursor = FolderCursor::new(*tree_id);
        loop {
            let node = match cursor.next(&mut ctx.repo.trees(&mut self.readers)) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    // A damaged blob of a split listing costs the entries it holds; the cursor
                    // goes on with the next.
                    ctx.error(&shown, format!("folder contents unreadable: {e}"));
                    continue;
                }
            };
            if crate::interrupt::requested() {
                return Err(Error::Interrupted);
            }
            self.budget.take()?;
            if ctx.full.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.entry(&dir, &path, sel, node, &mut folded)?;
        }
        Ok(())
    }

    /// One entry of a folder.
    fn entry(
        &mut self,
        dir: &Arc<Dir>,
        path: &[Vec<u8>],
        sel: Sel,
        node: Node,
        folded: &mut Option<HashMap<String, String>>,
    ) -> Result<()> {
        let ctx = self.ctx;
        let mut child = path.to_vec();
        child.push(node.name.clone());
        let child_shown = show_path(&child);
        let name = match safe_name(&node.name) {
            Ok(n) => n,
            Err(msg) => {
                ctx.error(&child_shown, msg);
                return Ok(());
            }
        };
        let csel = if sel == Sel::All {
            Sel::All
        } else {
            ctx.sel.select(&child)
        };
        if csel == Sel::None {
            return Ok(());
        }
        if csel == Sel::All {
            ctx.sel.mark(&child, &mut self.matched);
        }
        if ctx.vault_only
            && !matches!(node.kind, NodeKind::Dir { .. })
            && node.flags & FLAG_VAULT_ONLY == 0
        {
            return Ok(());
        }
        if let Some(folded) = folded.as_mut() {
            if case_collision(ctx, folded, &node.name, &child_shown) {
                return Ok(());
            }
        }
        match &node.kind {
            NodeKind::Dir { subtree } => {
                if let Some(sub) = self.enter(dir, name, &node, &child, &child_shown) {
                    self.folder(subtree, sub, child, csel)?;
                }
            }
            NodeKind::File { .. } if csel == Sel::All => {
                let job = FileJob {
                    dir: dir.clone(),
                    name: node.name.clone(),
                    node,
                    shown: child_shown,
                };
                self.jobs.push(job)?;
            }
            NodeKind::Symlink { target } if csel == Sel::All => {
                restore_symlink(ctx, dir, name, target, &node, &child_shown);
            }
            _ => {}
        }
        Ok(())
    }

    /// Create (private, until its metadata is set at the end) or open the folder of `node`.
    fn enter(
        &mut self,
        dir: &Dir,
        name: &OsStr,
        node: &Node,
        child: &[Vec<u8>],
        shown: &str,
    ) -> Option<Arc<Dir>> {
        let ctx = self.ctx;
        let existed = match dir.symlink_metadata(name) {
            Ok(md) if md.is_dir() => {
                ctx.journal.note(child, None);
                // A folder an earlier, killed run of this restore created is this run's to
                // finish.
                !ctx.journal.created_earlier(child, &md)
            }
            Ok(_) => {
                ctx.error(shown, "something other than a folder is in the way");
                return None;
            }
            Err(_) => {
                // Private until the end of the run, when it gets its recorded mode: nobody else
                // lists the names going into it meanwhile.
                let mut private = cap_std::fs::DirBuilder::new();
                cap_std::fs::DirBuilderExt::mode(&mut private, 0o700);
                ctx.journal.note_pending(child);
                if let Err(e) = dir.create_dir_with(name, &private) {
                    let msg = ctx.name_error("cannot create folder", e, &node.name);
                    ctx.error(shown, msg);
                    return None;
                }
                // A kill between the `mkdir` and this record leaves the `P` record above: a
                // re-run takes the folder for its own if it still looks as made here.
                if let Ok(md) = dir.symlink_metadata(name) {
                    use cap_std::fs::MetadataExt;
                    ctx.journal.note(child, Some((md.dev(), md.ino())));
                }
                false
            }
        };
        let sub = match dir.open_dir_nofollow(name) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                ctx.error(shown, format!("cannot open folder: {e}"));
                return None;
            }
        };
        ctx.summary.lock().unwrap_or_else(|p| p.into_inner()).dirs += 1;
        self.dirs.push(DirMeta {
            path: child.to_vec(),
            mode: node.mode,
            mtime: node.mtime,
            mtime_nanos: node.mtime_nanos,
            uid: node.uid,
            gid: node.gid,
            ancestor: node.flags & FLAG_ANCESTOR != 0,
            existed,
        });
        Some(sub)
    }
}

/// On a filesystem that ignores case: whether a name differing from `name` only in case was
/// restored before in this folder (then `name` is reported and skipped).
fn case_collision(
    ctx: &Ctx<'_>,
    folded: &mut HashMap<String, String>,
    name: &[u8],
    shown: &str,
) -> bool {
    let shown_name = String::from_utf8_lossy(name).into_owned();
    let first = folded
        .entry(shown_name.to_lowercase())
        .or_insert_with(|| shown_name.clone());
    if *first == shown_name {
        return false;
    }
    ctx.skipped(
        shown,
        format!(
            "not restored: \"{first}\" is already in this folder, and the target's filesystem \
             does not tell names apart by upper and lower case; restore this one into another \
             folder (--include it, with another --target)"
        ),
    );
    true
}

pub(super) fn restore_symlink(
    ctx: &Ctx<'_>,
    dir: &Dir,
    name: &OsStr,
    target: &[u8],
    node: &Node,
    shown: &str,
) {
    if let Ok(md) = dir.symlink_metadata(name) {
        if !ctx.overwrite {
            if md.is_symlink()
                && dir
                    .read_link_contents(name)
                    .is_ok_and(|t| t.as_os_str().as_bytes() == target)
            {
                ctx.already_there(None);
                return;
            }
            ctx.skipped(shown, "exists and differs; use --overwrite to replace it");
            return;
        }
        if let Err(e) = dir.remove_file(name) {
            ctx.error(shown, format!("cannot replace: {e}"));
            return;
        }
    }
    // symlinkat relative to the folder handle: the link is created, never followed. (cap-std's own
    // symlink() refuses absolute targets, which are legitimate content of a backup.)
    match rustix::fs::symlinkat(OsStr::from_bytes(target), dir, name).map_err(std::io::Error::from)
    {
        Ok(()) => {
            ctx.summary
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .symlinks += 1;
            ctx.set_owner(|| chown_symlink(dir, name, node.uid, node.gid));
            // Not every filesystem can time-stamp a symlink; the link itself is what matters.
            let _ = set_mtime_at(dir, name, node.mtime, node.mtime_nanos);
        }
        Err(e) => {
            let unsupported = unsupported_here(&e);
            let mut msg = ctx.name_error("cannot create symlink", e, name.as_bytes());
            if unsupported {
                msg.push_str(" (the target's filesystem may not store symlinks, as FAT and exFAT)");
            }
            ctx.error(shown, msg)
        }
    }
}
