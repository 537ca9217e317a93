//! The assembler: consumes the walker's events in order, writes each folder's listing as tree
//! blobs and its files' entries as its new local-index row.

use super::*;

/// A folder being assembled: its listing streams into a tree writer, and its files' entries
/// into its new local-index row.
pub(super) struct DirBuilder<'k> {
    pub(super) name: Vec<u8>,
    pub(super) meta: Option<Meta>,
    pub(super) ancestor: bool,
    pub(super) tree: TreeWriter<'k>,
    /// The folder's local-index row at the start of the run, and the parts it lists.
    pub(super) folder: Option<FolderCtx>,
    pub(super) old_parts: HashSet<Id>,
    /// Its new row (not for ancestors, whose entries are merged with the old row at the end).
    pub(super) row: Option<RowWriter>,
    /// Entries of the files walked in an ancestor folder.
    pub(super) walked: FolderFiles,
    /// Some entry differs from the old row.
    pub(super) changed: bool,
}

impl<'k> DirBuilder<'k> {
    pub(super) fn new(
        shared: &'k Shared<'_>,
        name: Vec<u8>,
        meta: Option<Meta>,
        ancestor: bool,
        folder: Option<FolderCtx>,
    ) -> Self {
        let old_parts = folder
            .as_ref()
            .and_then(|f| f.old.as_ref())
            .map(|o| o.part_ids())
            .unwrap_or_default();
        let row = match &folder {
            Some(f) if !ancestor => Some(RowWriter::new(f.key, &shared.keys.name)),
            _ => None,
        };
        DirBuilder {
            name,
            meta,
            ancestor,
            tree: TreeWriter::new(&shared.keys.tree_split),
            folder,
            old_parts,
            row,
            walked: Vec::new(),
            changed: false,
        }
    }

    /// Remember a file's entry for the folder's new row.
    pub(super) fn remember(&mut self, name: &[u8], e: FileEntry) {
        match self.row.as_mut() {
            Some(r) => r.push(name, &e),
            None => self.walked.push((name.to_vec(), e)),
        }
    }
}

/// Local-index writes collected by the assembler, written in batches (one transaction each).
pub(super) struct CacheUpdates {
    pub(super) rows: Vec<FolderWrite>,
    pub(super) parts: Vec<crate::cache::PartWrite>,
    pub(super) pending_bytes: usize,
    pub(super) seen: Vec<Id>,
    pub(super) today: i64,
    /// This run's id: its rows count as confirmed once everything it stored is indexed.
    pub(super) run: i64,
}

impl CacheUpdates {
    pub(super) fn new(today: i64) -> CacheUpdates {
        CacheUpdates {
            rows: Vec::new(),
            parts: Vec::new(),
            pending_bytes: 0,
            seen: Vec::new(),
            today,
            run: 1 + crate::crypto::random_below(i64::MAX as usize - 1) as i64,
        }
    }

    /// Queue the parts a folder's new row finished, leaving out those its old row has.
    pub(super) fn add_parts(
        &mut self,
        folder: Id,
        parts: Vec<(Id, Vec<u8>)>,
        old: &HashSet<Id>,
        cache: &LocalCache,
    ) -> Result<()> {
        for (id, plain) in parts {
            if !old.contains(&id) {
                self.pending_bytes += plain.len();
                self.parts.push((folder, id, plain));
            }
        }
        self.maybe_flush(cache)
    }

    /// Parts a folder's row finished while it was being built are stored as they come, so that
    /// a huge folder's new row is never held whole; when any is new, with a provisional row
    /// listing the parts so far, so that a run killed in the middle of the folder leaves the next
    /// one these entries (an unconfirmed row's entries are used once their blobs are indexed).
    pub(super) fn take_parts(&mut self, d: &mut DirBuilder<'_>, cache: &LocalCache) -> Result<()> {
        let (Some(row), Some(f)) = (d.row.as_mut(), d.folder.as_ref()) else {
            return Ok(());
        };
        let parts = row.take_parts();
        if !parts.iter().any(|(id, _)| !d.old_parts.contains(id)) {
            return Ok(());
        }
        if let Some(p) = row.provisional() {
            self.rows.push(FolderWrite {
                key: f.key,
                row: p,
                provisional: true,
            });
        }
        self.add_parts(f.key, parts, &d.old_parts, cache)
    }

    /// The run stops before these folders are complete: keep what their rows have so far
    /// (unless nothing in a folder changed: its old row is then worth more).
    pub(super) fn stopped(
        &mut self,
        open: &mut [DirBuilder<'_>],
        cache: &LocalCache,
    ) -> Result<()> {
        for d in open.iter_mut().filter(|d| d.changed) {
            if let Some(row) = d.row.as_mut() {
                row.close_part();
            }
            self.take_parts(d, cache)?;
        }
        Ok(())
    }

    /// A folder is complete: write its row when anything in it changed.
    pub(super) fn folder_done(
        &mut self,
        d: &mut DirBuilder<'_>,
        shared: &Shared<'_>,
    ) -> Result<()> {
        let cache = shared.cache;
        let Some(FolderCtx { key, old }) = d.folder.take() else {
            return Ok(());
        };
        let row = match d.row.take() {
            Some(r) => r,
            None => {
                // Only some entries of an ancestor folder were walked: keep the others.
                let mut r = RowWriter::new(key, &shared.keys.name);
                let mut walked = std::mem::take(&mut d.walked).into_iter().peekable();
                let mut kept = old.clone().map(|o| RowCursor::new(key, o));
                let mut next_old = match kept.as_mut() {
                    Some(k) => k.next_entry(cache)?,
                    None => None,
                };
                loop {
                    let take_old = match (&next_old, walked.peek()) {
                        (None, None) => break,
                        (Some(_), None) => true,
                        (None, Some(_)) => false,
                        (Some((o, _)), Some((w, _))) => o < w,
                    };
                    if take_old {
                        if let Some((n, e)) = next_old.take() {
                            r.push(&n, &e);
                        }
                        next_old = match kept.as_mut() {
                            Some(k) => k.next_entry(cache)?,
                            None => None,
                        };
                    } else if let Some((n, e)) = walked.next() {
                        if next_old.as_ref().is_some_and(|(o, _)| *o == n) {
                            next_old = match kept.as_mut() {
                                Some(k) => k.next_entry(cache)?,
                                None => None,
                            };
                        }
                        r.push(&n, &e);
                    }
                }
                r
            }
        };
        let same = !d.changed
            && match &old {
                Some(o) => o.confirmed && o.entries() == row.entries(),
                None => row.entries() == 0,
            };
        if same {
            // Unchanged entries cut the same parts as before: nothing to store.
            if old.is_some_and(|o| o.seen != self.today) {
                self.seen.push(key);
            }
        } else {
            let (new, parts) = row.finish();
            self.add_parts(key, parts, &d.old_parts, cache)?;
            self.pending_bytes += new.body.len();
            self.rows.push(FolderWrite {
                key,
                row: new,
                provisional: false,
            });
        }
        self.maybe_flush(cache)
    }

    pub(super) fn maybe_flush(&mut self, cache: &LocalCache) -> Result<()> {
        if self.pending_bytes >= CACHE_BATCH || self.seen.len() >= CACHE_SEEN_BATCH {
            self.flush(cache)?;
        }
        Ok(())
    }

    pub(super) fn flush(&mut self, cache: &LocalCache) -> Result<()> {
        let r = cache.put_folders(&self.rows, &self.parts, &self.seen, self.run);
        self.rows.clear();
        self.parts.clear();
        self.seen.clear();
        self.pending_bytes = 0;
        r
    }
}

/// Consume the walker's events in order, build trees bottom-up, return the root tree id. A run
/// that stops early keeps the local-index entries of the folders it was in the middle of.
pub(super) fn assemble(
    shared: &Shared,
    events: Receiver<Vec<Event>>,
    full: &Sender<FinishedPack>,
    summary: &mut BackupSummary,
    updates: &mut CacheUpdates,
) -> Result<Id> {
    let mut stack = vec![DirBuilder::new(shared, vec![], None, true, None)];
    let r = assemble_into(shared, events, full, summary, updates, &mut stack);
    if r.is_err() {
        updates.stopped(&mut stack, shared.cache)?;
    }
    r
}

pub(super) fn assemble_into<'k>(
    shared: &'k Shared,
    events: Receiver<Vec<Event>>,
    full: &Sender<FinishedPack>,
    summary: &mut BackupSummary,
    updates: &mut CacheUpdates,
    stack: &mut Vec<DirBuilder<'k>>,
) -> Result<Id> {
    let comp = std::cell::RefCell::new(Compressor::new(shared.zstd_level)?);
    // Tree blobs are stored as each folder's listing fills them.
    let mut save = |data: &[u8]| -> Result<Id> {
        let id = shared.keys.blob_id(data);
        if shared.claim(id)
            && !shared.store_blob(&mut comp.borrow_mut(), id, BlobType::Tree, data, full)
        {
            return Err(Error::Interrupted);
        }
        Ok(id)
    };
    for ev in events.into_iter().flatten() {
        match ev {
            Event::Enter {
                name,
                meta,
                ancestor,
                folder,
            } => stack.push(DirBuilder::new(
                shared,
                name,
                Some(meta),
                ancestor,
                Some(folder),
            )),
            Event::Leave => {
                let d = stack.pop().ok_or(Error::Interrupted)?;
                let node = folder_done(shared, d, updates, &mut save)?;
                summary.dirs += 1;
                let parent = stack.last_mut().ok_or(Error::Interrupted)?;
                parent.tree.push(&node, &mut save)?;
            }
            Event::File {
                name,
                path,
                meta,
                result,
            } => {
                let parent = stack.last_mut().ok_or(Error::Interrupted)?;
                let res = match result {
                    Pending::Ready(r) => r,
                    Pending::Wait(rx) => rx.recv().unwrap_or_else(|_| Err("backup aborted".into())),
                };
                if let Some(node) =
                    file_done(shared, parent, updates, summary, (name, path, meta), res)?
                {
                    parent.tree.push(&node, &mut save)?;
                }
            }
            Event::Symlink { name, meta, target } => {
                summary.symlinks += 1;
                let parent = stack.last_mut().ok_or(Error::Interrupted)?;
                let node = meta.node(name, NodeKind::Symlink { target }, 0);
                parent.tree.push(&node, &mut save)?;
            }
            Event::Skipped(s) => summary.skipped.push(s),
        }
        if shared.aborted() {
            return Err(Error::Interrupted);
        }
    }
    if stack.len() != 1 {
        return Err(Error::Interrupted);
    }
    let root = stack.pop().ok_or(Error::Interrupted)?;
    root.tree.finish(&mut save)
}

/// A folder is complete: its local-index row, the rest of its listing, and its node for the
/// folder above.
fn folder_done(
    shared: &Shared,
    mut d: DirBuilder<'_>,
    updates: &mut CacheUpdates,
    save: &mut StoreTree<'_>,
) -> Result<Node> {
    updates.folder_done(&mut d, shared)?;
    let DirBuilder {
        name,
        meta,
        ancestor,
        tree,
        ..
    } = d;
    let id = tree.finish(save)?;
    let meta = meta.ok_or(Error::Interrupted)?;
    let mut node = meta.node(name, NodeKind::Dir { subtree: id }, 0);
    if ancestor {
        node.flags |= FLAG_ANCESTOR;
    }
    Ok(node)
}

/// A file's result: its node for the folder's listing and its entry for the folder's row, or
/// the reason it is skipped (then `None`).
fn file_done(
    shared: &Shared,
    parent: &mut DirBuilder<'_>,
    updates: &mut CacheUpdates,
    summary: &mut BackupSummary,
    (name, path, meta): (Vec<u8>, PathBuf, Meta),
    res: FileResult,
) -> Result<Option<Node>> {
    let mut done = match res {
        Ok(done) => done,
        Err(reason) => {
            parent.changed = true;
            if reason == reader::VANISHED {
                summary.vanished += 1;
            } else {
                summary.skipped.push(Skipped {
                    path: display(&path),
                    reason,
                });
            }
            return Ok(None);
        }
    };
    let mut node = done.meta.map_or(meta, |m| *m).node(
        name,
        NodeKind::File {
            blobs: std::mem::take(&mut done.blobs),
            hash: done.hash,
        },
        done.size,
    );
    if done.changed {
        node.flags |= FLAG_TORN;
    }
    // What no reader would accept is not stored: the file is skipped and named.
    if let Err(why) = check_node(&node) {
        parent.changed = true;
        summary.skipped.push(Skipped {
            path: display(&path),
            reason: format!("not backed up: {why}"),
        });
        return Ok(None);
    }
    match done.entry.take() {
        Some(e) => {
            parent.remember(&node.name, e);
            parent.changed |= done.fresh;
            updates.take_parts(parent, shared.cache)?;
        }
        None => parent.changed = true,
    }
    if done.changed {
        summary.warnings.push(Skipped {
            path: display(&path),
            reason: "kept changing while it was read (3 tries); stored as read and marked as \
                     possibly mixing two versions (`vault ls` and `restore` say so); back it up \
                     again once it is no longer being written"
                .into(),
        });
    }
    summary.files += 1;
    summary.bytes += done.size;
    Ok(Some(node))
}

/// Bytes of rows and parts written per transaction.
const CACHE_BATCH: usize = 1 << 20;

/// Rows marked as seen per transaction.
const CACHE_SEEN_BATCH: usize = 4096;
