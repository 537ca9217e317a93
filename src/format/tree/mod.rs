//! Trees: folder listings, each stored as one tree blob or, when large, split over leaf blobs
//! with index blobs above them (§10); written and read as streams, never held whole.

use super::codec::{Reader, Writer};
use super::MAX_BLOB_LEN;
use crate::crypto::SecretKey;
use crate::error::{Error, Result};
use crate::ids::Id;

mod cursor;
#[cfg(test)]
pub(crate) mod tests;
mod writer;

pub use cursor::{lookup, FolderCursor, TreeSource};
pub use writer::{SplitRule, StoreTree, TreeWriter, TREE_SPLIT};

/// First byte of a tree blob: a leaf lists folder entries.
pub const KIND_LEAF: u8 = 1;
/// First byte of a tree blob: an index lists the tree blobs below it.
pub const KIND_INDEX: u8 = 2;
/// Highest index blob (height 1 lists leaves). Far above what any folder needs: an index blob
/// is ended only after 256 KiB of children, so height 8 holds more entries than a u64 counts.
pub const MAX_HEIGHT: u8 = 8;
/// Deepest folder a snapshot may hold: the root tree is at depth 0, and a folder whose absolute
/// path has `k` components at depth `k`. Readers refuse deeper folders (they would recurse that
/// deep), so writers must not store them.
pub const MAX_DEPTH: usize = 1024;

/// Node flag: an ancestor folder of a backup root (mtime not recorded, not restored).
pub const FLAG_ANCESTOR: u32 = 1;
/// Node flag: a file moved into the vault (`vault move`): its local original was unlinked after
/// its data was read back and verified, so this repository may hold the only copies.
pub const FLAG_VAULT_ONLY: u32 = 2;
/// Node flag: a file that kept changing while backup read it (§10): its stored content may mix
/// two versions. Files only.
pub const FLAG_TORN: u32 = 4;
/// Every flag this version knows; readers refuse nodes with other bits set.
pub const KNOWN_FLAGS: u32 = FLAG_ANCESTOR | FLAG_VAULT_ONLY | FLAG_TORN;

/// Encoded size of a leaf's fixed part (kind, count).
const LEAF_HEAD: usize = 1 + 4;
/// Encoded size of an index blob's fixed part (kind, height, count).
const INDEX_HEAD: usize = 1 + 1 + 4;
/// Largest encoded node: one that fills a leaf alone.
pub const MAX_NODE_LEN: usize = MAX_BLOB_LEN as usize - LEAF_HEAD;
/// Smallest encoded node (a symlink with empty name and target), for count checks.
const MIN_NODE_LEN: usize = 4 + 1 + 4 + 8 + 4 + 8 + 4 + 4 + 4 + 4;
/// Smallest encoded index child.
const MIN_CHILD_LEN: usize = 4 + 32 + 8;

/// What a directory entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Regular file: content blobs in order, and the keyed hash of the whole content.
    File {
        blobs: Vec<Id>,
        hash: Id,
    },
    Dir {
        subtree: Id,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// One directory entry. `name` is the raw file-name bytes (not necessarily UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Unix mode bits including the permission, setuid/setgid and sticky bits.
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nanos: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    /// Bit 0 ([`FLAG_ANCESTOR`]): a folder above a backed-up path, recorded only so the path
    /// can be recreated; its mtime is not recorded. Bit 1 ([`FLAG_VAULT_ONLY`]): a file whose
    /// original was moved into the vault. Other bits are reserved: written as 0, refused on read.
    pub flags: u32,
}

impl Node {
    /// Size of this node in a leaf.
    pub fn encoded_len(&self) -> usize {
        MIN_NODE_LEN - 4
            + self.name.len()
            + match &self.kind {
                NodeKind::File { blobs, .. } => 32 + 4 + 32 * blobs.len(),
                NodeKind::Dir { .. } => 32,
                NodeKind::Symlink { target } => 4 + target.len(),
            }
    }

    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.name);
        w.u8(match &self.kind {
            NodeKind::File { .. } => 1,
            NodeKind::Dir { .. } => 2,
            NodeKind::Symlink { .. } => 3,
        });
        w.u32(self.mode);
        w.i64(self.mtime);
        w.u32(self.mtime_nanos);
        w.u64(self.size);
        w.u32(self.uid);
        w.u32(self.gid);
        w.u32(self.flags);
        match &self.kind {
            NodeKind::File { blobs, hash } => {
                w.id(hash);
                w.u32(blobs.len() as u32);
                for b in blobs {
                    w.id(b);
                }
            }
            NodeKind::Dir { subtree } => w.id(subtree),
            NodeKind::Symlink { target } => w.bytes(target),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Node> {
        let name = r.bytes()?.to_vec();
        let k = r.u8()?;
        let mode = r.u32()?;
        let mtime = r.i64()?;
        let mtime_nanos = r.u32()?;
        if mtime_nanos >= 1_000_000_000 {
            return Err(r.err("nanoseconds out of range"));
        }
        let size = r.u64()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let flags = r.u32()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(r.err(format!("unknown node flags {flags:#x}")));
        }
        if flags & FLAG_VAULT_ONLY != 0 && k == 2 {
            return Err(r.err("a folder cannot be vault-only"));
        }
        if flags & FLAG_TORN != 0 && k != 1 {
            return Err(r.err("only a file can be marked torn"));
        }
        let kind = match k {
            1 => {
                let hash = r.id()?;
                let nb = r.count(32)?;
                let mut blobs = Vec::with_capacity(nb);
                for _ in 0..nb {
                    blobs.push(r.id()?);
                }
                NodeKind::File { blobs, hash }
            }
            2 => NodeKind::Dir { subtree: r.id()? },
            3 => NodeKind::Symlink {
                target: r.bytes()?.to_vec(),
            },
            _ => return Err(r.err(format!("unknown node type {k}"))),
        };
        Ok(Node {
            name,
            kind,
            mode,
            mtime,
            mtime_nanos,
            size,
            uid,
            gid,
            flags,
        })
    }
}

/// A name that is one plain path component: not empty, `.` or `..`, without `/` or NUL.
/// Restore refuses every other name, so writers never store one.
pub fn name_is_safe(name: &[u8]) -> bool {
    !(name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0))
}

/// Why a node cannot be stored in a tree, if it cannot: what every reader would refuse, checked
/// before anything is written.
pub fn check_node(node: &Node) -> std::result::Result<(), String> {
    if !name_is_safe(&node.name) {
        return Err("its name is not a single path component".into());
    }
    if node.flags & !KNOWN_FLAGS != 0 {
        return Err(format!("unknown node flags {:#x}", node.flags));
    }
    if node.flags & FLAG_VAULT_ONLY != 0 && matches!(node.kind, NodeKind::Dir { .. }) {
        return Err("a folder cannot be vault-only".into());
    }
    if node.flags & FLAG_TORN != 0 && !matches!(node.kind, NodeKind::File { .. }) {
        return Err("only a file can be marked torn".into());
    }
    let len = node.encoded_len();
    if len > MAX_NODE_LEN {
        let what = match &node.kind {
            NodeKind::File { blobs, .. } => format!("it has {} chunks", blobs.len()),
            _ => format!("its entry takes {len} bytes"),
        };
        return Err(format!(
            "too large to list: {what}, and one folder entry may list at most about {} chunks \
             ({} MiB)",
            (MAX_NODE_LEN - MIN_NODE_LEN) / 32,
            MAX_BLOB_LEN >> 20
        ));
    }
    Ok(())
}

/// One tree blob below an index blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    /// Name of the first folder entry below it.
    pub first: Vec<u8>,
    pub id: Id,
    /// Folder entries below it (at least 1).
    pub count: u64,
}

impl Child {
    fn encoded_len(&self) -> usize {
        MIN_CHILD_LEN + self.first.len()
    }
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.first);
        w.id(&self.id);
        w.u64(self.count);
    }
}

/// One decoded tree blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeBlob {
    /// Folder entries, names strictly increasing.
    Leaf(Vec<Node>),
    /// Tree blobs of height `height - 1` (leaves when 1), first names strictly increasing.
    Index { height: u8, children: Vec<Child> },
}

impl TreeBlob {
    /// Decode strictly (§3, §10). Names are not judged here: the restorer treats them as
    /// untrusted and refuses unsafe ones one by one.
    pub fn decode(data: &[u8]) -> Result<TreeBlob> {
        let mut r = Reader::new(data, "tree");
        let blob = match r.u8()? {
            KIND_LEAF => {
                let n = r.count(MIN_NODE_LEN)?;
                let mut nodes: Vec<Node> = Vec::with_capacity(n);
                for _ in 0..n {
                    let node = Node::decode(&mut r)?;
                    if nodes.last().is_some_and(|p| p.name >= node.name) {
                        return Err(r.err("names out of order or twice"));
                    }
                    nodes.push(node);
                }
                TreeBlob::Leaf(nodes)
            }
            KIND_INDEX => {
                let height = r.u8()?;
                if height == 0 || height > MAX_HEIGHT {
                    return Err(r.err(format!("index height {height} out of range")));
                }
                let n = r.count(MIN_CHILD_LEN)?;
                if n == 0 {
                    return Err(r.err("empty index"));
                }
                let mut children: Vec<Child> = Vec::with_capacity(n);
                for _ in 0..n {
                    let c = Child {
                        first: r.bytes()?.to_vec(),
                        id: r.id()?,
                        count: r.u64()?,
                    };
                    if c.count == 0 {
                        return Err(r.err("index child without entries"));
                    }
                    if children.last().is_some_and(|p| p.first >= c.first) {
                        return Err(r.err("index names out of order or twice"));
                    }
                    children.push(c);
                }
                TreeBlob::Index { height, children }
            }
            k => return Err(r.err(format!("unknown tree blob kind {k}"))),
        };
        r.finish()?;
        Ok(blob)
    }
}

/// A folder listing held whole: for folders known to be small (tests, hand-made trees). It
/// encodes as one leaf; real folders go through [`TreeWriter`] and [`FolderCursor`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// One leaf blob holding every node, in the given order.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(KIND_LEAF);
        w.u32(self.nodes.len() as u32);
        for n in &self.nodes {
            n.encode(&mut w);
        }
        w.into_vec()
    }

    /// Decode a single-leaf listing (an index blob is refused).
    pub fn decode(data: &[u8]) -> Result<Tree> {
        match TreeBlob::decode(data)? {
            TreeBlob::Leaf(nodes) => Ok(Tree { nodes }),
            TreeBlob::Index { .. } => {
                Err(Error::corrupt("tree", "an index where a leaf was expected"))
            }
        }
    }
}
