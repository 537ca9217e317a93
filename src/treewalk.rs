//! Going through a snapshot's folders as a stream: every entry with its path, depth first, with
//! one tree blob per open folder in memory whatever the folders' sizes; and finding one path.

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{FolderCursor, Node, NodeKind, MAX_DEPTH};
use crate::ids::Id;
use crate::repo::{PackReaders, Repository};

/// A snapshot path as users see it: `/` and the components, bytes that are not UTF-8 shown as
/// U+FFFD.
pub fn show_path(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// How many entries a walk of one snapshot may visit: the files, symlinks and folders it
/// declares (§11). Trees form a graph: a few KB of trees that name one folder many times, each
/// naming it many times again, would otherwise expand to any number of entries.
#[derive(Clone)]
pub struct Budget {
    left: u64,
    declared: u64,
    snapshot: Id,
}

impl Budget {
    pub fn of(id: &Id, s: &Snapshot) -> Self {
        let declared = s.summary.entries();
        Budget {
            left: declared,
            declared,
            snapshot: *id,
        }
    }

    /// Count one entry; an error once the snapshot holds more than it declares.
    pub fn take(&mut self) -> Result<()> {
        match self.left.checked_sub(1) {
            Some(l) => {
                self.left = l;
                Ok(())
            }
            None => Err(Error::corrupt(
                format!("snapshot {}", self.snapshot.short()),
                format!(
                    "its folders hold more than the {} entries it declares (damaged or forged:                      folders that name one folder over and over); `vault check` reports it",
                    self.declared
                ),
            )),
        }
    }
}

/// What a path in a snapshot is.
pub enum Found {
    /// A folder, by the id of its top tree blob (the snapshot's root for the empty path).
    Folder(Id),
    /// A file or symlink.
    Entry(Node),
}

/// Find `path` (components) below the folder `root`, reading one tree blob per level of each
/// folder on the way. `None` when it is not there.
pub fn resolve(
    repo: &Repository,
    root: &Id,
    path: &[Vec<u8>],
    readers: &mut PackReaders,
) -> Result<Option<Found>> {
    let mut here = *root;
    for (i, comp) in path.iter().enumerate() {
        let Some(node) = repo.lookup(&here, comp, readers)? else {
            return Ok(None);
        };
        match node.kind {
            NodeKind::Dir { subtree } => here = subtree,
            _ if i + 1 == path.len() => return Ok(Some(Found::Entry(node))),
            _ => return Ok(None),
        }
    }
    Ok(Some(Found::Folder(here)))
}

/// Every entry below one folder, depth first: a folder comes before its contents, and the
/// entries of a folder in name order.
pub struct TreeWalk<'r> {
    repo: &'r Repository,
    readers: PackReaders,
    open: Vec<(FolderCursor, Vec<Vec<u8>>)>,
    budget: Budget,
}

impl<'r> TreeWalk<'r> {
    /// The entries below the folder `top` of a snapshot, whose own path is `path`.
    pub fn new(repo: &'r Repository, top: Id, path: Vec<Vec<u8>>, budget: Budget) -> Self {
        TreeWalk {
            repo,
            readers: PackReaders::default(),
            open: vec![(FolderCursor::new(top), path)],
            budget,
        }
    }

    /// The next entry and its path. After an error (a damaged tree blob) the walk can go on
    /// with what follows.
    pub fn next_entry(&mut self) -> Result<Option<(Vec<Vec<u8>>, Node)>> {
        loop {
            let Some((cursor, path)) = self.open.last_mut() else {
                return Ok(None);
            };
            let Some(node) = cursor.next(&mut self.repo.trees(&mut self.readers))? else {
                self.open.pop();
                continue;
            };
            if let Err(e) = self.budget.take() {
                // Nothing after this is believed.
                self.open.clear();
                return Err(e);
            }
            let mut p = path.clone();
            p.push(node.name.clone());
            if let NodeKind::Dir { subtree } = &node.kind {
                if p.len() > MAX_DEPTH {
                    return Err(Error::corrupt(
                        format!("tree {}", subtree.short()),
                        format!("a folder nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                self.open.push((FolderCursor::new(*subtree), p.clone()));
            }
            return Ok(Some((p, node)));
        }
    }
}
