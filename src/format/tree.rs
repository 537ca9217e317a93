//! Trees: one directory listing per blob (names, types, metadata, content blob lists).

use super::codec::{Reader, Writer};
use crate::error::Result;
use crate::ids::Id;

/// Layout version of a tree blob (first byte).
pub const TREE_VERSION: u8 = 1;

/// Node flag: an ancestor folder of a backup root (mtime not recorded, not restored).
pub const FLAG_ANCESTOR: u32 = 1;
/// Node flag: a file moved into the vault (`vault move`): its local original was unlinked after
/// its data was read back and verified, so this repository may hold the only copies.
pub const FLAG_VAULT_ONLY: u32 = 2;
/// Every flag this version knows; readers refuse nodes with other bits set.
pub const KNOWN_FLAGS: u32 = FLAG_ANCESTOR | FLAG_VAULT_ONLY;

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

/// A directory's entries, sorted by name bytes, names unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(TREE_VERSION);
        w.u32(self.nodes.len() as u32);
        for n in &self.nodes {
            w.bytes(&n.name);
            match &n.kind {
                NodeKind::File { .. } => w.u8(1),
                NodeKind::Dir { .. } => w.u8(2),
                NodeKind::Symlink { .. } => w.u8(3),
            }
            w.u32(n.mode);
            w.i64(n.mtime);
            w.u32(n.mtime_nanos);
            w.u64(n.size);
            w.u32(n.uid);
            w.u32(n.gid);
            w.u32(n.flags);
            match &n.kind {
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
        w.into_vec()
    }

    /// Decode a tree. Names are not validated here: the restorer treats them as untrusted.
    pub fn decode(data: &[u8]) -> Result<Tree> {
        let mut r = Reader::new(data, "tree");
        let v = r.u8()?;
        if v != TREE_VERSION {
            return Err(r.err(format!("unknown tree version {v}")));
        }
        let n = r.count(4 + 1 + 4 + 8 + 4 + 8 + 12)?;
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
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
            nodes.push(Node {
                name,
                kind,
                mode,
                mtime,
                mtime_nanos,
                size,
                uid,
                gid,
                flags,
            });
        }
        r.finish()?;
        Ok(Tree { nodes })
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
        #[test]
        fn round_trip(nodes in proptest::collection::vec(arb_node(), 0..10)) {
            let t = Tree { nodes };
            let enc = t.encode();
            prop_assert_eq!(Tree::decode(&enc).unwrap(), t.clone());
            if !enc.is_empty() {
                prop_assert!(Tree::decode(&enc[..enc.len() - 1]).is_err());
            }
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Tree::decode(&data);
        }
    }
}
