//! Reading a folder listing as a stream, one tree blob at a time, every blob checked against
//! what its parent said of it; and looking one name up without reading the rest.

use super::*;

/// Where a [`FolderCursor`] gets tree blobs from: the repository, or a map in tests.
pub trait TreeSource {
    /// The verified plaintext of tree blob `id`.
    fn tree_blob(&mut self, id: &Id) -> Result<Vec<u8>>;
    /// Whether to read blob `id` at all: a reader that already went through it (`check` across
    /// snapshots) says no, and the entries below it are skipped.
    fn wants(&mut self, _id: &Id) -> bool {
        true
    }
}

struct Frame {
    height: u8,
    children: std::vec::IntoIter<Child>,
    /// The name every entry below this blob is less than (the next sibling's first name).
    bound: Option<Vec<u8>>,
}

/// Reads one folder's entries in name order, one tree blob at a time, checking how the blobs fit
/// together (heights, first names, counts, order across blobs). A damaged blob below the top is
/// an error for the entries below it only: the next call goes on with the next blob.
pub struct FolderCursor {
    top: Option<Id>,
    frames: Vec<Frame>,
    leaf: std::vec::IntoIter<Node>,
}

fn blob_err(id: &Id, detail: impl Into<String>) -> Error {
    Error::corrupt(format!("tree {}", id.short()), detail)
}

fn decode_blob(id: &Id, data: &[u8]) -> Result<TreeBlob> {
    TreeBlob::decode(data).map_err(|e| match e {
        Error::Corrupt { detail, .. } => blob_err(id, detail),
        other => other,
    })
}

impl FolderCursor {
    /// A cursor over the folder whose top tree blob is `top`.
    pub fn new(top: Id) -> Self {
        FolderCursor {
            top: Some(top),
            frames: Vec::new(),
            leaf: Vec::new().into_iter(),
        }
    }

    /// The next entry, `None` at the end. An error names the damaged blob; call again to go on
    /// with what follows it.
    pub fn next(&mut self, src: &mut dyn TreeSource) -> Result<Option<Node>> {
        if let Some(top) = self.top.take() {
            if !src.wants(&top) {
                return Ok(None);
            }
            let data = src.tree_blob(&top).map_err(|e| match e {
                Error::Corrupt { .. } => e,
                other => blob_err(&top, other.to_string()),
            })?;
            match decode_blob(&top, &data)? {
                TreeBlob::Leaf(nodes) => self.leaf = nodes.into_iter(),
                TreeBlob::Index { children, .. } if children.len() < 2 => {
                    return Err(blob_err(&top, "an index with one child"));
                }
                TreeBlob::Index { height, children } => self.frames.push(Frame {
                    height,
                    children: children.into_iter(),
                    bound: None,
                }),
            }
        }
        loop {
            if let Some(n) = self.leaf.next() {
                return Ok(Some(n));
            }
            let Some(frame) = self.frames.last_mut() else {
                return Ok(None);
            };
            let Some(child) = frame.children.next() else {
                self.frames.pop();
                continue;
            };
            let bound = frame
                .children
                .as_slice()
                .first()
                .map(|c| c.first.clone())
                .or_else(|| frame.bound.clone());
            let height = frame.height;
            if !src.wants(&child.id) {
                continue;
            }
            let blob = load_child(src, &child, height, bound.as_deref()).map_err(|e| {
                // Say what the damage costs: the index knows how many entries were below.
                let detail = match e {
                    Error::Corrupt { detail, .. } => detail,
                    other => other.to_string(),
                };
                blob_err(
                    &child.id,
                    format!(
                        "{detail} ({} entries from {:?} on are lost)",
                        child.count,
                        String::from_utf8_lossy(&child.first)
                    ),
                )
            })?;
            match blob {
                TreeBlob::Leaf(nodes) => self.leaf = nodes.into_iter(),
                TreeBlob::Index { height, children } => self.frames.push(Frame {
                    height,
                    children: children.into_iter(),
                    bound,
                }),
            }
        }
    }
}

/// Read the blob `child` names below an index blob of `parent_height` and check that it is what
/// the index says: the right height, first name and count, and every name below `bound`.
fn load_child(
    src: &mut dyn TreeSource,
    child: &Child,
    parent_height: u8,
    bound: Option<&[u8]>,
) -> Result<TreeBlob> {
    let id = &child.id;
    let blob = decode_blob(id, &src.tree_blob(id)?)?;
    let (first, last, count): (&[u8], &[u8], u64) = match &blob {
        TreeBlob::Leaf(nodes) => {
            if parent_height != 1 {
                return Err(blob_err(id, "a leaf where an index was expected"));
            }
            let (Some(f), Some(l)) = (nodes.first(), nodes.last()) else {
                return Err(blob_err(id, "an empty leaf below an index"));
            };
            (&f.name, &l.name, nodes.len() as u64)
        }
        TreeBlob::Index { height, children } => {
            if *height + 1 != parent_height {
                return Err(blob_err(id, "an index of the wrong height"));
            }
            let mut sum = 0u64;
            for c in children {
                sum = sum
                    .checked_add(c.count)
                    .ok_or_else(|| blob_err(id, "entry counts overflow"))?;
            }
            let (Some(f), Some(l)) = (children.first(), children.last()) else {
                return Err(blob_err(id, "empty index"));
            };
            (&f.first, &l.first, sum)
        }
    };
    if first != child.first.as_slice() {
        return Err(blob_err(
            id,
            "its first name is not the one its index records",
        ));
    }
    if count != child.count {
        return Err(blob_err(
            id,
            "its entry count is not the one its index records",
        ));
    }
    if bound.is_some_and(|b| last >= b) {
        return Err(blob_err(id, "names out of order across tree blobs"));
    }
    Ok(blob)
}

/// Find one entry of the folder whose top tree blob is `top`, reading one blob per level.
pub fn lookup(src: &mut dyn TreeSource, top: &Id, name: &[u8]) -> Result<Option<Node>> {
    let mut blob = decode_blob(top, &src.tree_blob(top)?)?;
    if matches!(&blob, TreeBlob::Index { children, .. } if children.len() < 2) {
        return Err(blob_err(top, "an index with one child"));
    }
    let mut bound: Option<Vec<u8>> = None;
    loop {
        match blob {
            TreeBlob::Leaf(mut nodes) => {
                return Ok(nodes
                    .binary_search_by(|n| n.name.as_slice().cmp(name))
                    .ok()
                    .map(|i| nodes.swap_remove(i)));
            }
            TreeBlob::Index { height, children } => {
                // The last child whose first name is not after `name`.
                let i = children.partition_point(|c| c.first.as_slice() <= name);
                if i == 0 {
                    return Ok(None);
                }
                if let Some(next) = children.get(i) {
                    bound = Some(next.first.clone());
                }
                blob = load_child(src, &children[i - 1], height, bound.as_deref())?;
            }
        }
    }
}
