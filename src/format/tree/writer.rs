//! Writing a folder listing as a stream of entries: one leaf blob when small, content-defined
//! leaves under index blobs when large (§10).

use super::*;

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
