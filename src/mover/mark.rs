//! Step 4 of a move: the snapshot that records the verified files as vault-only, sharing every
//! tree that holds none of them with the backup just made.

use super::*;

/// Write the move's snapshot with `marked` flagged vault-only: the trees on the way to them are
/// rewritten, the rest are shared with the backup just made.
pub(super) fn write_marked(
    repo: &Repository,
    draft: &Snapshot,
    marked: &HashSet<Comps>,
) -> Result<Id> {
    let mut prefixes: HashSet<Comps> = HashSet::new();
    for c in marked {
        for i in 0..c.len() {
            prefixes.insert(c[..i].to_vec());
        }
    }
    let mut readers = PackReaders::default();
    let root = if marked.is_empty() {
        draft.root
    } else {
        // The rewritten trees are stored (and indexed) before the snapshot that names them.
        let out = BlobWriter::new(repo, 1)?;
        let root = mark_tree(
            repo,
            &draft.root,
            &mut Vec::new(),
            marked,
            &prefixes,
            &mut readers,
            &out,
        )?;
        out.finish()?;
        root
    };
    let mut snap = draft.clone();
    snap.root = root;
    snap.summary.vault_only = marked.len() as u64;
    let id = repo.write_snapshot(&snap)?;
    repo.cache()?.expire_folders()?;
    Ok(id)
}

fn mark_tree(
    repo: &Repository,
    id: &Id,
    path: &mut Comps,
    marked: &HashSet<Comps>,
    prefixes: &HashSet<Comps>,
    readers: &mut PackReaders,
    out: &BlobWriter<'_>,
) -> Result<Id> {
    let keys = repo.keys().clone();
    let mut writer = TreeWriter::new(&keys.tree_split);
    let mut cursor = FolderCursor::new(*id);
    while let Some(mut n) = cursor.next(&mut repo.trees(readers))? {
        path.push(n.name.clone());
        match &mut n.kind {
            NodeKind::Dir { subtree } if prefixes.contains(path.as_slice()) => {
                *subtree = mark_tree(repo, subtree, path, marked, prefixes, readers, out)?;
            }
            NodeKind::File { .. } | NodeKind::Symlink { .. }
                if marked.contains(path.as_slice()) =>
            {
                n.flags |= FLAG_VAULT_ONLY;
            }
            _ => {}
        }
        path.pop();
        writer.push(&n, &mut |b: &[u8]| out.add(BlobType::Tree, b))?;
    }
    writer.finish(&mut |b: &[u8]| out.add(BlobType::Tree, b))
}
