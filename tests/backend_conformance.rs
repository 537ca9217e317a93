//! One conformance suite for every storage backend: the local folder always, and the real S3
//! server when scripts/test-all.sh started one.

mod common;

use std::sync::Arc;

use vault::backend::local::LocalBackend;
use vault::backend::s3::{S3Backend, S3Options};
use vault::backend::{Backend, FileType, Store};
use vault::{Error, Id};

fn name() -> String {
    Id::random().to_hex()
}

fn conformance(store: &Store, is_s3: bool) {
    store.create().unwrap();
    // put / get / stat / range
    let n = name();
    let data = common::noise(100_000, 1);
    store.put(FileType::Index, &n, &data).unwrap();
    assert_eq!(store.get(FileType::Index, &n).unwrap(), data);
    assert_eq!(store.stat(FileType::Index, &n).unwrap(), Some(100_000));
    assert_eq!(
        store.get_range(FileType::Index, &n, 500, 1000).unwrap(),
        &data[500..1500]
    );
    assert_eq!(
        store.get_range(FileType::Index, &n, 99_990, 10).unwrap(),
        &data[99_990..]
    );
    assert!(store
        .get_range(FileType::Index, &n, 0, 0)
        .unwrap()
        .is_empty());
    // Idempotent re-put; different content under the same name is refused where the server
    // honours create-only writes (Garage ignores If-None-Match; vault's names are random or
    // content-derived, so it never relies on this).
    store.put(FileType::Index, &n, &data).unwrap();
    if std::env::var_os("VAULT_TEST_S3_NO_CREATE_ONLY").is_none() || !is_s3 {
        assert!(store.put(FileType::Index, &n, b"other").is_err());
        assert_eq!(store.get(FileType::Index, &n).unwrap(), data);
    }
    // Missing objects.
    let missing = name();
    assert_eq!(store.stat(FileType::Index, &missing).unwrap(), None);
    assert!(matches!(
        store.get(FileType::Index, &missing),
        Err(Error::NotFound(_))
    ));
    // Bounded reads (design.md §12): an object larger than its kind allows is refused as
    // damaged, whoever planted it; and a writer cannot store one.
    let big = name();
    let oversized = common::noise(FileType::Key.max_len() as usize + 1, 3);
    assert!(matches!(
        store.put(FileType::Key, &big, &oversized),
        Err(Error::Invalid(_))
    ));
    store
        .runtime()
        .block_on(
            store
                .backend()
                .put(FileType::Key, &big, oversized.clone().into()),
        )
        .unwrap();
    let e = store.get(FileType::Key, &big).unwrap_err();
    assert!(e.is_corrupt(), "{e}");
    assert!(e.to_string().contains("more than the"), "{e}");
    // A ranged read takes no more than it asked for.
    assert_eq!(
        store.get_range(FileType::Key, &big, 10, 100).unwrap(),
        &oversized[10..110]
    );
    // Singletons and empty objects.
    store.put(FileType::Config, "", &[]).unwrap();
    assert_eq!(store.get(FileType::Config, "").unwrap(), b"");
    // list: per kind, with sizes; packs across subfolders.
    let packs: Vec<String> = (0..5).map(|_| name()).collect();
    for (i, p) in packs.iter().enumerate() {
        store
            .put(FileType::Pack, p, &vec![i as u8; i * 10])
            .unwrap();
    }
    let mut listed = store.list(FileType::Pack).unwrap();
    listed.sort();
    let mut want: Vec<(vault::Id, u64)> = packs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.parse().unwrap(), i as u64 * 10))
        .collect();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(
        store.list(FileType::Index).unwrap(),
        vec![(n.parse().unwrap(), 100_000)]
    );
    assert!(store.list(FileType::Snapshot).unwrap().is_empty());
    // delete, twice (idempotent).
    store.delete(FileType::Pack, &packs[0]).unwrap();
    store.delete(FileType::Pack, &packs[0]).unwrap();
    assert_eq!(store.stat(FileType::Pack, &packs[0]).unwrap(), None);
    assert_eq!(store.list(FileType::Pack).unwrap().len(), 4);
    // A large object (multipart on S3), read back whole and by range.
    let big = common::noise(
        vault::backend::s3::MULTIPART_THRESHOLD + 3 * 1024 * 1024 + 7,
        2,
    );
    let bn = name();
    store.put(FileType::Pack, &bn, &big).unwrap();
    assert_eq!(
        store.stat(FileType::Pack, &bn).unwrap(),
        Some(big.len() as u64)
    );
    assert!(store.get(FileType::Pack, &bn).unwrap() == big);
    let off = 40 * 1024 * 1024 + 3;
    assert!(
        store
            .get_range(FileType::Pack, &bn, off as u64, 1 << 20)
            .unwrap()
            == big[off..off + (1 << 20)]
    );
    // Concurrent writers: distinct objects, and the same object written by several at once.
    let same = name();
    let same_data = common::noise(300_000, 3);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let same = same.clone();
            let same_data = same_data.clone();
            s.spawn(move || {
                for _ in 0..4 {
                    store
                        .put(FileType::Snapshot, &name(), &common::noise(50_000, t))
                        .unwrap();
                }
                store.put(FileType::Snapshot, &same, &same_data).unwrap();
            });
        }
    });
    assert_eq!(store.list(FileType::Snapshot).unwrap().len(), 33);
    assert!(store.get(FileType::Snapshot, &same).unwrap() == same_data);
}

#[test]
fn local_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(Arc::new(LocalBackend::new(dir.path().join("repo")))).unwrap();
    conformance(&store, false);
}

#[test]
fn s3_backend_conforms() {
    let Some(ep) = common::s3_endpoint() else {
        return;
    };
    let url = match std::env::var("VAULT_TEST_S3_BUCKET") {
        Ok(b) if !b.is_empty() => format!("s3://{b}/{}", common::unique_bucket()),
        _ => format!("s3://{}/some/prefix", common::unique_bucket()),
    };
    let mut o = S3Options::parse(&url).unwrap();
    o.endpoint = Some(ep);
    let backend: Arc<dyn Backend> = Arc::new(S3Backend::new(o));
    let store = Store::new(backend).unwrap();
    conformance(&store, true);
    let stats = store.stats();
    assert!(stats.put >= 40 && stats.list >= 5, "{stats:?}");
}
