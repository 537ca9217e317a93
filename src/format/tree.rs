//! Trees: folder listings, each stored as one tree blob or, when large, split over leaf blobs
//! with index blobs above them (§10); written and read as streams, never held whole.

use super::codec::{Reader, Writer};
use super::MAX_BLOB_LEN;
use crate::crypto::SecretKey;
use crate::error::{Error, Result};
use crate::ids::Id;

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
/// Every flag this version knows; readers refuse nodes with other bits set.
pub const KNOWN_FLAGS: u32 = FLAG_ANCESTOR | FLAG_VAULT_ONLY;

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

/// Where a writer ends a tree blob (§10). Content-defined, by a keyed hash of entry names, so
/// that an unchanged stretch of a large folder is cut at the same places from one backup to the
/// next and keeps its blobs: a folder that gains one photo stores one new leaf and the index
/// blobs above it, not its whole listing again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitRule {
    /// No cut before a blob's entries take this many bytes.
    pub min: usize,
    /// Past `min`, an entry of `l` bytes ends the blob with probability `l / avg`.
    pub avg: u64,
    /// A blob whose entries reach this size is ended whatever the hash says.
    pub max: usize,
}

/// The rule vault writes with: a folder of up to about 2,000 photos is one leaf, as before
/// splitting existed.
pub const TREE_SPLIT: SplitRule = SplitRule {
    min: 256 << 10,
    avg: 512 << 10,
    max: 4 << 20,
};

impl SplitRule {
    /// Whether a blob whose entries now take `size` bytes ends after the entry just added
    /// (`entry_len` bytes, named `name`, at `height`: 0 for leaves). The hash is computed only
    /// past `min`, so small folders cost nothing.
    pub fn cut_after(
        &self,
        key: &SecretKey,
        height: u8,
        name: &[u8],
        entry_len: usize,
        size: usize,
    ) -> bool {
        if size < self.min {
            return false;
        }
        if size >= self.max {
            return true;
        }
        let mut h = key.hasher();
        h.update(&[height]);
        h.update(name);
        let d = h.finalize();
        let r = u64::from_le_bytes(d.0[..8].try_into().unwrap_or([0; 8]));
        r % self.avg.max(1) < entry_len as u64
    }
}

/// The open blob of one level of a [`TreeWriter`].
#[derive(Default)]
struct Level {
    /// Encoded entries, without the blob's head.
    buf: Vec<u8>,
    n: u32,
    first: Option<Vec<u8>>,
    /// Folder entries below the entries in `buf`.
    count: u64,
}

/// Stores one encoded tree blob and returns its id.
pub type StoreTree<'a> = dyn FnMut(&[u8]) -> Result<Id> + 'a;

/// Writes one folder listing as a stream of nodes in name order: leaves are ended by the
/// [`SplitRule`] and stored as they fill, with index blobs above them; memory is one open blob
/// per level whatever the folder's size.
pub struct TreeWriter<'k> {
    key: &'k SecretKey,
    rule: SplitRule,
    levels: Vec<Level>,
    last: Option<Vec<u8>>,
}

impl<'k> TreeWriter<'k> {
    /// `key` is the repository's tree-split key (`Keys::tree_split`).
    pub fn new(key: &'k SecretKey) -> Self {
        Self::with_rule(key, TREE_SPLIT)
    }

    /// A writer with another split rule (tests use small ones to exercise deep indexes).
    pub fn with_rule(key: &'k SecretKey, rule: SplitRule) -> Self {
        TreeWriter {
            key,
            rule,
            levels: vec![Level::default()],
            last: None,
        }
    }

    /// Entries pushed so far.
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// Add the next node: names strictly increasing, and [`check_node`] must accept it (a node
    /// it refuses is an error here; callers check first to skip it with a reason).
    pub fn push(&mut self, node: &Node, store: &mut StoreTree<'_>) -> Result<()> {
        check_node(node).map_err(|why| {
            Error::Invalid(format!(
                "cannot list {:?}: {why}",
                String::from_utf8_lossy(&node.name)
            ))
        })?;
        if self.last.as_ref().is_some_and(|l| *l >= node.name) {
            return Err(Error::Invalid(format!(
                "folder entries out of order at {:?}",
                String::from_utf8_lossy(&node.name)
            )));
        }
        let len = node.encoded_len();
        if self.levels[0].n > 0
            && LEAF_HEAD + self.levels[0].buf.len() + len > MAX_BLOB_LEN as usize
        {
            self.end(0, store)?;
        }
        let l = &mut self.levels[0];
        let mut w = Writer {
            buf: std::mem::take(&mut l.buf),
        };
        node.encode(&mut w);
        l.buf = w.buf;
        l.n += 1;
        l.count += 1;
        if l.first.is_none() {
            l.first = Some(node.name.clone());
        }
        let size = l.buf.len();
        self.last = Some(node.name.clone());
        if self.rule.cut_after(self.key, 0, &node.name, len, size) {
            self.end(0, store)?;
        }
        Ok(())
    }

    /// Encode and store the open blob of `level`, and list it in the level above.
    fn end(&mut self, level: usize, store: &mut StoreTree<'_>) -> Result<()> {
        let l = std::mem::take(&mut self.levels[level]);
        let id = store(&Self::blob(level, &l))?;
        let child = Child {
            first: l.first.unwrap_or_default(),
            id,
            count: l.count,
        };
        self.push_child(level + 1, child, store)
    }

    fn push_child(&mut self, level: usize, child: Child, store: &mut StoreTree<'_>) -> Result<()> {
        if level > MAX_HEIGHT as usize {
            return Err(Error::Invalid(
                "folder too large: its index would exceed the format's height".into(),
            ));
        }
        if self.levels.len() <= level {
            self.levels.push(Level::default());
        }
        let len = child.encoded_len();
        if self.levels[level].n > 0
            && INDEX_HEAD + self.levels[level].buf.len() + len > MAX_BLOB_LEN as usize
        {
            self.end(level, store)?;
        }
        let l = &mut self.levels[level];
        let mut w = Writer {
            buf: std::mem::take(&mut l.buf),
        };
        child.encode(&mut w);
        l.buf = w.buf;
        l.n += 1;
        l.count += child.count;
        let size = l.buf.len();
        let cut = self
            .rule
            .cut_after(self.key, level as u8, &child.first, len, size);
        if l.first.is_none() {
            l.first = Some(child.first);
        }
        if cut {
            self.end(level, store)?;
        }
        Ok(())
    }

    /// The blob of a level: a leaf at level 0, an index of that height above.
    fn blob(level: usize, l: &Level) -> Vec<u8> {
        let mut w = Writer::new();
        if level == 0 {
            w.u8(KIND_LEAF);
        } else {
            w.u8(KIND_INDEX);
            w.u8(level as u8);
        }
        w.u32(l.n);
        w.raw(&l.buf);
        w.into_vec()
    }

    /// Store what is left and return the id of the folder's top blob (a leaf, empty for an
    /// empty folder, when everything fits in one).
    pub fn finish(mut self, store: &mut StoreTree<'_>) -> Result<Id> {
        let mut level = 0;
        loop {
            if self.levels.len() == level + 1 {
                let l = &self.levels[level];
                if level > 0 && l.n == 1 {
                    // One child below and nothing else: that child is the folder.
                    let mut r = Reader::new(&l.buf, "tree");
                    r.bytes()?;
                    return r.id();
                }
                return store(&Self::blob(level, l));
            }
            if self.levels[level].n > 0 {
                self.end(level, store)?;
            }
            level += 1;
        }
    }
}

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    pub fn arb_node() -> impl Strategy<Value = Node> {
        let kind = prop_oneof![
            (
                proptest::collection::vec(any::<[u8; 32]>(), 0..4),
                any::<[u8; 32]>()
            )
                .prop_map(|(b, h)| NodeKind::File {
                    blobs: b.into_iter().map(Id).collect(),
                    hash: Id(h)
                }),
            any::<[u8; 32]>().prop_map(|s| NodeKind::Dir { subtree: Id(s) }),
            proptest::collection::vec(any::<u8>(), 0..50)
                .prop_map(|t| NodeKind::Symlink { target: t }),
        ];
        (
            proptest::collection::vec(any::<u8>(), 0..30),
            kind,
            any::<u32>(),
            any::<i64>(),
            0u32..1_000_000_000,
            any::<u64>(),
            any::<(u32, u32)>(),
            any::<bool>(),
        )
            .prop_map(
                |(name, kind, mode, mtime, mtime_nanos, size, (uid, gid), vault_only)| Node {
                    name,
                    mode,
                    mtime,
                    mtime_nanos,
                    size,
                    uid,
                    gid,
                    flags: match kind {
                        NodeKind::File { .. } if vault_only => FLAG_VAULT_ONLY,
                        NodeKind::Dir { .. } if vault_only => FLAG_ANCESTOR,
                        _ => 0,
                    },
                    kind,
                },
            )
    }

    /// Blobs by id, as a repository would hold them.
    #[derive(Default)]
    pub struct MapSource {
        pub blobs: HashMap<Id, Vec<u8>>,
        pub reads: usize,
    }

    impl MapSource {
        pub fn store(&mut self, key: &SecretKey) -> impl FnMut(&[u8]) -> Result<Id> + '_ {
            let k = key.clone();
            move |b: &[u8]| {
                let id = k.keyed_hash(b);
                self.blobs.insert(id, b.to_vec());
                Ok(id)
            }
        }
    }

    impl TreeSource for MapSource {
        fn tree_blob(&mut self, id: &Id) -> Result<Vec<u8>> {
            self.reads += 1;
            self.blobs
                .get(id)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("tree {}", id.short())))
        }
    }

    fn file(name: String, blobs: usize) -> Node {
        Node {
            name: name.into_bytes(),
            kind: NodeKind::File {
                blobs: (0..blobs).map(|i| Id([i as u8; 32])).collect(),
                hash: Id([7; 32]),
            },
            mode: 0o100644,
            mtime: 1,
            mtime_nanos: 2,
            size: 3,
            uid: 4,
            gid: 5,
            flags: 0,
        }
    }

    /// A small rule so that a few hundred entries make leaves and several index levels.
    const SMALL: SplitRule = SplitRule {
        min: 300,
        avg: 600,
        max: 2000,
    };

    fn write(key: &SecretKey, src: &mut MapSource, nodes: &[Node], rule: SplitRule) -> Id {
        let mut w = TreeWriter::with_rule(key, rule);
        let mut store = src.store(key);
        for n in nodes {
            w.push(n, &mut store).unwrap();
        }
        w.finish(&mut store).unwrap()
    }

    fn read_all(src: &mut MapSource, top: Id) -> Vec<Node> {
        let mut c = FolderCursor::new(top);
        let mut out = Vec::new();
        while let Some(n) = c.next(src).unwrap() {
            out.push(n);
        }
        out
    }

    fn names(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| file(format!("IMG_{i:06}.JPG"), 1 + i % 3))
            .collect()
    }

    fn height(src: &MapSource, top: &Id) -> u8 {
        match TreeBlob::decode(&src.blobs[top]).unwrap() {
            TreeBlob::Leaf(_) => 0,
            TreeBlob::Index { height, .. } => height,
        }
    }

    #[test]
    fn small_folders_are_one_leaf_as_before() {
        let key = SecretKey::generate();
        let mut src = MapSource::default();
        let nodes = names(1000);
        let top = write(&key, &mut src, &nodes, TREE_SPLIT);
        assert_eq!(src.blobs.len(), 1);
        assert_eq!(Tree::decode(&src.blobs[&top]).unwrap().nodes, nodes);
        let empty = write(&key, &mut src, &[], TREE_SPLIT);
        assert_eq!(src.blobs[&empty], Tree::default().encode());
        assert_eq!(read_all(&mut src, empty), vec![]);
    }

    #[test]
    fn large_folders_split_and_read_back_in_order() {
        let key = SecretKey::generate();
        let mut src = MapSource::default();
        let nodes = names(3000);
        let top = write(&key, &mut src, &nodes, SMALL);
        assert!(height(&src, &top) >= 2, "several index levels");
        for b in src.blobs.values() {
            assert!(b.len() <= SMALL.max + 200, "blob of {} bytes", b.len());
        }
        assert_eq!(read_all(&mut src, top), nodes);
        for probe in [0, 1, 1499, 2999] {
            let got = lookup(&mut src, &top, &nodes[probe].name).unwrap();
            assert_eq!(got.as_ref(), Some(&nodes[probe]));
        }
        assert_eq!(lookup(&mut src, &top, b"A").unwrap(), None);
        assert_eq!(lookup(&mut src, &top, b"IMG_000000.JPG0").unwrap(), None);
        assert_eq!(lookup(&mut src, &top, b"zzz").unwrap(), None);
        // One name reads one blob per level, not the folder.
        src.reads = 0;
        lookup(&mut src, &top, &nodes[1234].name).unwrap();
        assert_eq!(src.reads, height(&src, &top) as usize + 1);
    }

    #[test]
    fn one_more_entry_rewrites_a_small_part() {
        let key = SecretKey::generate();
        let mut src = MapSource::default();
        let mut nodes = names(200_000);
        write(&key, &mut src, &nodes, TREE_SPLIT);
        let before: usize = src.blobs.values().map(Vec::len).sum();
        let old: std::collections::HashSet<Id> = src.blobs.keys().copied().collect();
        nodes.insert(100_001, file("IMG_100000.JPG_edited".into(), 2));
        let top = write(&key, &mut src, &nodes, TREE_SPLIT);
        let new: Vec<usize> = src
            .blobs
            .iter()
            .filter(|(id, _)| !old.contains(id))
            .map(|(_, b)| b.len())
            .collect();
        let added: usize = new.iter().sum();
        assert!(before > 25 << 20, "a listing of {before} bytes");
        // The leaf that gained the entry (split in two at most), perhaps its neighbour before
        // the cuts fall in step again, and the index. (In 300 trials with random keys and
        // places: always one leaf and the index; the leaf's size is what varies, up to the
        // 4 MiB a leaf may reach.)
        assert!(new.len() <= 6, "{} new blobs", new.len());
        let index_room = 64 << 10;
        assert!(
            added <= 2 * TREE_SPLIT.max + index_room,
            "{added} of {before} bytes rewritten"
        );
        assert_eq!(read_all(&mut src, top), nodes);
    }

    #[test]
    fn writer_refuses_what_readers_refuse() {
        let key = SecretKey::generate();
        let mut src = MapSource::default();
        let mut store = src.store(&key);
        for bad in [&b""[..], b".", b"..", b"a/b", b"x\0y"] {
            let mut w = TreeWriter::new(&key);
            let n = Node {
                name: bad.to_vec(),
                ..file("x".into(), 1)
            };
            assert!(check_node(&n).is_err());
            assert!(w.push(&n, &mut store).is_err(), "{bad:?}");
        }
        let mut w = TreeWriter::new(&key);
        w.push(&file("b".into(), 1), &mut store).unwrap();
        assert!(w.push(&file("b".into(), 1), &mut store).is_err(), "twice");
        assert!(
            w.push(&file("a".into(), 1), &mut store).is_err(),
            "out of order"
        );
        let folder = Node {
            flags: FLAG_VAULT_ONLY,
            kind: NodeKind::Dir {
                subtree: Id([1; 32]),
            },
            ..file("c".into(), 0)
        };
        assert!(w.push(&folder, &mut store).is_err());
        let unknown = Node {
            flags: 4,
            ..file("d".into(), 0)
        };
        assert!(w.push(&unknown, &mut store).is_err());
        // A file of more chunks than one tree blob can list.
        let huge = file("e".into(), (MAX_NODE_LEN - MIN_NODE_LEN) / 32 + 1);
        let why = check_node(&huge).unwrap_err();
        assert!(why.contains("chunks"), "{why}");
        assert!(w.push(&huge, &mut store).is_err());
        let fits = file("f".into(), (MAX_NODE_LEN - 100) / 32);
        assert!(fits.encoded_len() <= MAX_NODE_LEN);
        assert!(check_node(&fits).is_ok());
    }

    #[test]
    fn a_node_that_fills_a_leaf_alone_gets_one() {
        let key = SecretKey::generate();
        let mut src = MapSource::default();
        let big = (MAX_NODE_LEN - 100) / 32;
        let nodes = vec![
            file("a".into(), 10),
            file("b".into(), big),
            file("d".into(), 10),
        ];
        let top = write(&key, &mut src, &nodes, TREE_SPLIT);
        for b in src.blobs.values() {
            assert!(b.len() <= MAX_BLOB_LEN as usize);
        }
        assert!(src.blobs.len() >= 3);
        assert_eq!(read_all(&mut src, top), nodes);
    }

    /// Store a hand-made index over `children`.
    fn index(src: &mut MapSource, key: &SecretKey, height: u8, children: &[Child]) -> Id {
        let mut w = Writer::new();
        w.u8(KIND_INDEX);
        w.u8(height);
        w.u32(children.len() as u32);
        for c in children {
            c.encode(&mut w);
        }
        src.store(key)(&w.buf).unwrap()
    }

    fn leaf(src: &mut MapSource, key: &SecretKey, nodes: &[Node]) -> Child {
        let id = src.store(key)(
            &Tree {
                nodes: nodes.to_vec(),
            }
            .encode(),
        )
        .unwrap();
        Child {
            first: nodes[0].name.clone(),
            id,
            count: nodes.len() as u64,
        }
    }

    #[test]
    fn readers_refuse_blobs_that_do_not_fit_their_index() {
        let key = SecretKey::generate();
        let mut src = MapSource::default();
        let a = leaf(&mut src, &key, &[file("a".into(), 1), file("b".into(), 1)]);
        let c = leaf(&mut src, &key, &[file("c".into(), 1)]);
        let overlap = leaf(&mut src, &key, &[file("b".into(), 1), file("d".into(), 1)]);
        let good = index(&mut src, &key, 1, &[a.clone(), c.clone()]);
        assert_eq!(read_all(&mut src, good).len(), 3);
        let bad_cases = [
            // first name differs from the index's
            vec![
                Child {
                    first: b"0".to_vec(),
                    ..a.clone()
                },
                c.clone(),
            ],
            // count differs
            vec![
                Child {
                    count: 5,
                    ..a.clone()
                },
                c.clone(),
            ],
            // names of the first leaf run past the second's first name
            vec![
                Child {
                    first: b"a".to_vec(),
                    ..leaf(&mut src, &key, &[file("a".into(), 1), file("c".into(), 1)])
                },
                c.clone(),
            ],
        ];
        for children in bad_cases {
            let top = index(&mut src, &key, 1, &children);
            let mut cur = FolderCursor::new(top);
            let mut errors = 0;
            let mut got = 0;
            loop {
                match cur.next(&mut src) {
                    Ok(Some(_)) => got += 1,
                    Ok(None) => break,
                    Err(_) => errors += 1,
                }
            }
            assert_eq!(errors, 1, "the damaged child is reported");
            assert_eq!(got, 1, "the rest is still read");
        }
        // Out of order across leaves: the first leaf runs into the second's names.
        let top = index(
            &mut src,
            &key,
            1,
            &[
                a.clone(),
                Child {
                    first: b"b".to_vec(),
                    ..overlap
                },
            ],
        );
        let mut cur = FolderCursor::new(top);
        assert!(cur.next(&mut src).is_err());
        // A leaf where an index of height 1 is expected, and the wrong heights.
        let top2 = index(&mut src, &key, 2, &[a.clone(), c.clone()]);
        let mut cur = FolderCursor::new(top2);
        assert!(cur.next(&mut src).is_err());
        let one = index(&mut src, &key, 1, std::slice::from_ref(&a));
        assert!(
            FolderCursor::new(one).next(&mut src).is_err(),
            "a top index of one child"
        );
        // Decoding refuses what no writer makes.
        let mut w = Writer::new();
        w.u8(KIND_INDEX);
        w.u8(MAX_HEIGHT + 1);
        w.u32(1);
        a.encode(&mut w);
        assert!(TreeBlob::decode(&w.buf).is_err());
        assert!(TreeBlob::decode(&[3, 0, 0, 0, 0]).is_err());
        let dup = Tree {
            nodes: vec![file("a".into(), 1), file("a".into(), 1)],
        };
        let e = TreeBlob::decode(&dup.encode()).unwrap_err().to_string();
        assert!(e.contains("out of order or twice"), "{e}");
    }

    proptest! {
        #[test]
        fn leaf_round_trip(mut nodes in proptest::collection::vec(arb_node(), 0..10)) {
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            let t = Tree { nodes };
            let enc = t.encode();
            prop_assert_eq!(Tree::decode(&enc).unwrap(), t.clone());
            for n in &t.nodes {
                let mut w = Writer::new();
                n.encode(&mut w);
                prop_assert_eq!(w.buf.len(), n.encoded_len());
            }
            if !enc.is_empty() {
                prop_assert!(Tree::decode(&enc[..enc.len() - 1]).is_err());
            }
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = TreeBlob::decode(&data);
        }

        /// Any folder size around the split points reads back as written, and every name is
        /// found by lookup.
        #[test]
        fn split_round_trip(n in 0usize..700, min in 300usize..800, avg in 50u64..1600) {
            let rule = SplitRule { min, avg, max: min * 4 };
            let key = SecretKey::from_bytes([9; 32]);
            let mut src = MapSource::default();
            let nodes = names(n);
            let top = write(&key, &mut src, &nodes, rule);
            prop_assert_eq!(read_all(&mut src, top), nodes.clone());
            for node in nodes.iter().step_by(37) {
                let got = lookup(&mut src, &top, &node.name).unwrap();
                prop_assert_eq!(got.as_ref(), Some(node));
            }
        }
    }
}
