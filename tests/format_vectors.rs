//! Format test vectors: pin the v11 byte layout of every structure and the key derivation.
//! tests/vectors/format-v11.txt holds `name hex` lines; docs/design.md refers to them.
//! A deliberate format change bumps the format version and regenerates the file with
//! VAULT_REGEN_VECTORS=1.

use std::collections::BTreeMap;

use vault::chunker::Chunker;
use vault::crypto::{DataIdentity, SecretKey};
use vault::format::config::Config;
use vault::format::index::{self, PackDesc};
use vault::format::keyfile::{self, KeyInfo, KeyMaterial, Method};
use vault::format::snapshot::{Snapshot, Summary};
use vault::format::tree::{Node, NodeKind, Tree, TreeBlob, TreeWriter};
use vault::format::{device_mac_key, pack, BlobEntry, BlobType, Compression, DeviceId, WrittenBy};
use vault::keys::Keys;
use vault::Id;

const FILE: &str = "tests/vectors/format-v11.txt";
/// A fixed age identity used only by these vectors.
const IDENTITY: &str = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX";
/// A second fixed identity, the index identity of the vectors.
const INDEX_IDENTITY: &str =
    "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0";

fn keys() -> Keys {
    let data = DataIdentity::parse(IDENTITY).unwrap();
    Keys::from_material(KeyMaterial {
        repo_id: Id([0x11; 32]),
        secret: SecretKey::from_bytes([0x42; 32]),
        data_recipient: data.recipient(),
        data_identity: Some(data),
        index_identity: DataIdentity::parse(INDEX_IDENTITY).unwrap(),
        device: None,
    })
}

fn vectors() -> BTreeMap<&'static str, Vec<u8>> {
    let k = keys();
    let mut v = BTreeMap::new();
    v.insert("blob-id(hello)", k.blob_id(b"hello").0.to_vec());
    v.insert(
        "file-hash(hello)",
        k.file_hash.keyed_hash(b"hello").0.to_vec(),
    );
    let full = k.full().unwrap();
    v.insert("snapshot-mac-key", full.snapshot_mac.expose().to_vec());
    v.insert("index-mac-key", full.index_mac.expose().to_vec());
    v.insert("config-mac-key", full.config_mac.expose().to_vec());
    v.insert("snapshot-id-key", k.snapshot_id.expose().to_vec());
    v.insert("device-mac-key", full.device_mac.expose().to_vec());
    v.insert("config-check-key", k.config_check.expose().to_vec());
    v.insert("local-cache-key", k.cache.expose().to_vec());
    // A write-only profile's keys: the same writer-secret subkeys, no master secret, and a
    // local-cache key of its own (§4.1).
    let wo = Keys::from_material(k.write_only_material().unwrap());
    assert_eq!(wo.blob_id(b"hello"), k.blob_id(b"hello"));
    assert!(wo.full().is_err());
    v.insert("write-only-local-cache-key", wo.cache.expose().to_vec());
    let mut cfg = Config::new(k.repo_id, 1_700_000_000);
    // The vector pins the encoding, not the defaults of the day (new repositories got 20 MiB
    // packs after these vectors were written).
    cfg.pack_target = 16 * 1024 * 1024;
    let mut locked = cfg.clone();
    locked.object_lock = Some(vault::format::config::ObjectLock {
        mode: vault::format::config::LockMode::Compliance,
        days: 30,
    });
    v.insert(
        "config-object-lock",
        locked.encode(&k.config_check, &full.config_mac),
    );
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..12_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let cuts = Chunker::new(&k.chunker, &cfg).cuts(&data);
    v.insert(
        "chunker-cuts",
        cuts.iter()
            .flat_map(|c| (*c as u32).to_le_bytes())
            .collect(),
    );
    v.insert("key-file-mac-key", full.key_file_mac.expose().to_vec());
    // A key file object around stand-in age bytes: the label and the name rule (§4.3).
    let (name, object) =
        keyfile::seal_envelope(Method::RecoveryKey, &full.key_file_mac, b"age stand-in");
    assert_eq!(name, keyfile::envelope_name(&object));
    v.insert("key-file-object", object);
    v.insert("config", cfg.encode(&k.config_check, &full.config_mac));
    let tree = Tree {
        nodes: vec![
            Node {
                name: b"IMG_0001.JPG".to_vec(),
                kind: NodeKind::File {
                    blobs: vec![Id([0xaa; 32]), Id([0xbb; 32])],
                    hash: Id([0xcc; 32]),
                },
                mode: 0o100644,
                mtime: 1_700_000_001,
                mtime_nanos: 5,
                size: 2_000_000,
                uid: 1000,
                gid: 1000,
                // Vault-only, and stored while it kept changing.
                flags: 2 | 4,
            },
            Node {
                name: b"link".to_vec(),
                kind: NodeKind::Symlink {
                    target: b"IMG_0001.JPG".to_vec(),
                },
                mode: 0o120777,
                mtime: -1,
                mtime_nanos: 0,
                size: 0,
                uid: 0,
                gid: 0,
                flags: 0,
            },
            Node {
                name: b"sub\xff".to_vec(),
                kind: NodeKind::Dir {
                    subtree: Id([0xdd; 32]),
                },
                mode: 0o40755,
                mtime: 0,
                mtime_nanos: 0,
                size: 0,
                uid: 0,
                gid: 0,
                flags: 1,
            },
        ],
    };
    v.insert("tree", tree.encode());
    v.insert("tree-split-key", k.tree_split.expose().to_vec());
    // A folder of 6,000 photos, split by the rule of §10: every blob's id in the order written
    // (pins where the rule cuts), and the top index blob.
    let mut written: Vec<(Id, Vec<u8>)> = Vec::new();
    let mut w = TreeWriter::new(&k.tree_split);
    let mut store = |b: &[u8]| {
        let id = k.blob_id(b);
        written.push((id, b.to_vec()));
        Ok(id)
    };
    for i in 0..6000u32 {
        let node = Node {
            name: format!("IMG_{i:05}.JPG").into_bytes(),
            kind: NodeKind::File {
                blobs: vec![Id([(i % 251) as u8; 32])],
                hash: Id([0xcc; 32]),
            },
            mode: 0o100644,
            mtime: 1_700_000_000 + i as i64,
            mtime_nanos: 0,
            size: 1_000_000,
            uid: 1000,
            gid: 1000,
            flags: 0,
        };
        w.push(&node, &mut store).unwrap();
    }
    let top = w.finish(&mut store).unwrap();
    v.insert(
        "tree-split-ids",
        written.iter().flat_map(|(id, _)| id.0).collect(),
    );
    let top_blob = written.iter().find(|(id, _)| *id == top).unwrap().1.clone();
    v.insert("tree-index", top_blob);
    let snap = Snapshot {
        repo_id: k.repo_id,
        time: 1_700_000_100,
        time_nanos: 7,
        host: "laptop".into(),
        paths: vec![b"/home/u/Pictures".to_vec()],
        tags: vec!["phone".into()],
        root: Id([0xee; 32]),
        parent: Some(Id([0x01; 32])),
        previous: None,
        sequence: 3,
        original: Some(Id([0x02; 32])),
        summary: Summary {
            files: 10,
            dirs: 2,
            bytes: 12345,
            vault_only: 1,
        },
        writer: WrittenBy::Full,
    };
    let snap_bytes = snap.encode(&full.snapshot_mac);
    let device = DeviceId([0x33; 16]);
    let wo_snap = Snapshot {
        writer: WrittenBy::Device(device),
        summary: Summary::default(),
        ..snap.clone()
    };
    v.insert(
        "snapshot-write-only",
        wo_snap.encode(&device_mac_key(&full.device_mac, &device)),
    );
    v.insert(
        "snapshot-id",
        k.snapshot_id.keyed_hash(&snap_bytes).0.to_vec(),
    );
    v.insert("snapshot", snap_bytes);
    let entry = BlobEntry {
        id: Id([0xaa; 32]),
        blob_type: BlobType::Data,
        compression: Compression::Zstd,
        offset: pack::FIRST_BLOB,
        stored_len: 3,
        raw_len: 10,
    };
    v.insert(
        "pack-plaintext",
        pack::encode(&k.repo_id, &[entry], b"xyz", 200),
    );
    v.insert(
        "index",
        index::encode(
            &k.repo_id,
            &WrittenBy::Full,
            &full.index_mac,
            &[PackDesc {
                id: Id([0x22; 32]),
                pack_type: BlobType::Data,
                object_len: 1000,
                payload_offset: 250,
                plain_len: 700,
                blobs: vec![entry],
            }],
        ),
    );
    v.insert(
        "keyfile-plaintext",
        keyfile::encode(
            &k.material(),
            &KeyInfo {
                method: Method::Passphrase,
                created: 1_700_000_000,
                label: "passphrase".into(),
            },
        )
        .to_vec(),
    );
    v.insert(
        "padme(1..)",
        [1u64, 9, 1000, 100_000, 17_000_000]
            .iter()
            .flat_map(|n| pack::padme(*n).to_le_bytes())
            .collect(),
    );
    v
}

#[test]
fn v8_layout_is_pinned() {
    let got = vectors();
    if std::env::var_os("VAULT_REGEN_VECTORS").is_some() {
        let mut s = String::from("# vault repository format v8 test vectors: name hex\n");
        for (k, v) in &got {
            s.push_str(&format!("{k} {}\n", hex::encode(v)));
        }
        std::fs::write(FILE, s).unwrap();
    }
    let text = std::fs::read_to_string(FILE).unwrap();
    let want: BTreeMap<&str, Vec<u8>> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k, hex::decode(v).unwrap())
        })
        .collect();
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (k, v) in &got {
        assert!(
            want[k] == *v,
            "vector {k} changed: the v8 format must not change"
        );
    }
}

#[test]
fn pinned_bytes_decode_to_the_structures() {
    let k = keys();
    let v = vectors();
    match TreeBlob::decode(&v["tree-index"]).unwrap() {
        TreeBlob::Index { height, children } => {
            assert_eq!(height, 1);
            assert!(children.len() >= 2);
            assert_eq!(children[0].first, b"IMG_00000.JPG");
            assert_eq!(children.iter().map(|c| c.count).sum::<u64>(), 6000);
            assert_eq!(v["tree-split-ids"].len(), 32 * (children.len() + 1));
        }
        TreeBlob::Leaf(_) => panic!("6,000 photos fit one leaf"),
    }
    let tree = Tree::decode(&v["tree"]).unwrap();
    assert_eq!(tree.encode(), v["tree"]);
    assert_eq!(tree.nodes[2].name, b"sub\xff");
    let s = Snapshot::decode(&v["snapshot"], &k.repo_id, &k.snapshot_macs()).unwrap();
    assert_eq!(s.host, "laptop");
    assert!(s.writer.is_full());
    let w = Snapshot::decode(&v["snapshot-write-only"], &k.repo_id, &k.snapshot_macs()).unwrap();
    assert_eq!(w.writer, WrittenBy::Device(DeviceId([0x33; 16])));
    assert_eq!(s.summary.vault_only, 1);
    assert_eq!(
        tree.nodes[0].flags,
        vault::format::tree::FLAG_VAULT_ONLY | vault::format::tree::FLAG_TORN
    );
    let c = Config::decode(
        &v["config"],
        &k.repo_id,
        &k.config_check,
        Some(&k.full().unwrap().config_mac),
    )
    .unwrap();
    assert_eq!(c.chunk_avg, 1 << 20);
    let (by, idx) = index::decode(&v["index"], &k.repo_id, &k.index_macs()).unwrap();
    assert!(by.is_full());
    assert_eq!(idx[0].blobs[0].raw_len, 10);
    let p = &v["pack-plaintext"];
    let table = pack::decode(p, &k.repo_id).unwrap();
    assert_eq!(table[0].stored_len, 3);
    let (m, info) = keyfile::decode(&v["keyfile-plaintext"]).unwrap();
    assert_eq!(m.secret.expose(), &[0x42; 32]);
    assert_eq!(info.label, "passphrase");
}
