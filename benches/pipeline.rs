//! Criterion benches: each backup pipeline stage alone, and the whole chunk-hash-compress-pack-
//! encrypt pipeline in memory on one core and on all cores: the hardware limit that
//! bench/compare.sh's end-to-end figures are measured against (docs/benchmarks.md).

use std::hint::black_box;
use std::io::Read;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vault::backend::{Backend, FileType, Store};
use vault::chunker::Chunker;
use vault::compress::Compressor;
use vault::format::config::Config;
use vault::format::{BlobType, Compression};
use vault::ids::Id;
use vault::keys::Keys;
use vault::packer::Packer;

const MIB: usize = 1 << 20;

/// Incompressible bytes, like the JPEG and MP4 data that make up a photo library.
fn photo_like(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// A store that keeps nothing: the benches measure the CPU work, not a disk.
struct Discard;

#[async_trait::async_trait]
impl Backend for Discard {
    fn location(&self) -> String {
        "nowhere".into()
    }
    async fn create(&self) -> vault::Result<()> {
        Ok(())
    }
    async fn put(&self, _: FileType, _: &str, data: bytes::Bytes) -> vault::Result<()> {
        black_box(data.len());
        Ok(())
    }
    async fn get(&self, _: FileType, name: &str, _: u64) -> vault::Result<Vec<u8>> {
        Err(vault::Error::NotFound(name.into()))
    }
    async fn get_range(&self, t: FileType, name: &str, _: u64, _: u64) -> vault::Result<Vec<u8>> {
        self.get(t, name, 0).await
    }
    async fn list(&self, _: FileType) -> vault::Result<Vec<vault::backend::Listed>> {
        Ok(Vec::new())
    }
    async fn stat(&self, _: FileType, _: &str) -> vault::Result<Option<u64>> {
        Ok(None)
    }
    async fn delete(&self, _: FileType, _: &str) -> vault::Result<()> {
        Ok(())
    }
}

fn discard() -> Store {
    Store::new(Arc::new(Discard)).expect("runtime")
}

/// Everything a backup does to the bytes of one file, minus reading and storing: FastCDC,
/// the keyed blob id and file hash, the compression probe, and packing (age encryption as the
/// blob is added, padding and table when a pack is full). Returns the ciphertext bytes produced.
fn pipeline(keys: &Keys, cfg: &Config, packer: &Packer, data: &[u8]) -> u64 {
    let chunker = Chunker::new(&keys.chunker, cfg);
    let mut comp = Compressor::new(cfg.zstd_level).expect("zstd");
    let mut file_hash = keys.file_hash.hasher();
    let mut sealed = 0;
    let mut rest = data;
    while !rest.is_empty() {
        let n = chunker.next_cut(rest);
        let chunk = &rest[..n];
        file_hash.update(chunk);
        let id = keys.blob_id(chunk);
        let (c, stored) = comp.compress(chunk);
        let c = if stored.is_some() {
            c
        } else {
            Compression::None
        };
        if let Some(full) = packer
            .add(id, c, n, stored.unwrap_or(chunk), false)
            .expect("pack")
        {
            sealed += full.store().expect("store").object_len;
        }
        rest = &rest[n..];
    }
    black_box(file_hash.finalize());
    sealed
}

fn flush(packer: &Packer) -> u64 {
    packer
        .flush()
        .expect("flush")
        .into_iter()
        .map(|p| p.store().expect("store").object_len)
        .sum()
}

fn stages(c: &mut Criterion) {
    let keys = Keys::generate();
    let cfg = Config::new(Id::random(), 0);
    let data = photo_like(64 * MIB, 7);
    let mut g = c.benchmark_group("stage");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    let chunker = Chunker::new(&keys.chunker, &cfg);
    g.bench_function("fastcdc", |b| {
        b.iter(|| chunker.cuts(black_box(&data)).len())
    });
    g.bench_function("blake3_keyed", |b| {
        b.iter(|| keys.blob_id(black_box(&data)))
    });
    let mut comp = Compressor::new(cfg.zstd_level).expect("zstd");
    g.bench_function("compress_probe_1MiB_chunks", |b| {
        b.iter(|| {
            data.chunks(MIB)
                .filter(|ch| comp.compress(black_box(ch)).1.is_none())
                .count()
        })
    });
    let pack = &data[..16 * MIB];
    g.throughput(Throughput::Bytes(pack.len() as u64));
    let store = discard();
    g.bench_function("seal_16MiB_pack", |b| {
        b.iter(|| {
            let p = Packer::for_store(&store, &keys, 0, BlobType::Data, 1, u64::MAX);
            for (i, ch) in pack.chunks(MIB).enumerate() {
                p.add(Id([i as u8; 32]), Compression::None, ch.len(), ch, false)
                    .expect("pack");
            }
            flush(&p)
        })
    });
    g.finish();
}

/// Bench `run(threads)` on one core and on all, each thread handling `per_thread` bytes.
fn on_cores(c: &mut Criterion, group: &str, per_thread: usize, run: impl Fn(usize)) {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    for threads in [1, cores] {
        g.throughput(Throughput::Bytes((per_thread * threads) as u64));
        g.bench_with_input(
            BenchmarkId::new("cores", threads),
            &threads,
            |b, &threads| b.iter(|| run(threads)),
        );
    }
    g.finish();
}

fn whole(c: &mut Criterion) {
    let keys = Keys::generate();
    let cfg = Config::new(Id::random(), 0);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_thread = 128 * MIB;
    let inputs: Vec<Vec<u8>> = (0..cores)
        .map(|i| photo_like(per_thread, i as u64 + 1))
        .collect();
    let store = discard();
    on_cores(c, "pipeline_in_memory", per_thread, |threads| {
        // One packer for all threads, with as many open packs as a backup uses.
        let packer = Packer::for_store(
            &store,
            &keys,
            cfg.pack_min as u64,
            BlobType::Data,
            threads.clamp(2, 4),
            cfg.pack_target as u64,
        );
        let packer = &packer;
        let sealed = std::thread::scope(|s| {
            let handles: Vec<_> = inputs[..threads]
                .iter()
                .map(|d| s.spawn(|| pipeline(&keys, &cfg, packer, d)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .sum::<u64>()
        });
        black_box(sealed + flush(packer));
    });
}

/// What a restore must do to every byte, minus reading packs and writing files: decrypt whole
/// packs, check every blob's keyed id, hash each file and copy the bytes out once (into the
/// write buffer). The floor under bench/compare.sh's restore figure on this machine.
fn restore_floor(c: &mut Criterion) {
    let keys = Keys::generate();
    let cfg = Config::new(Id::random(), 0);
    let chunker = Chunker::new(&keys.chunker, &cfg);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_thread = 60 * MIB;
    // Per thread: three 20 MiB packs of photo-like chunks, and each blob's place and id.
    type Blob = (usize, usize, Id);
    let inputs: Vec<Vec<(Vec<u8>, Vec<Blob>)>> = (0..cores)
        .map(|i| {
            let data = photo_like(per_thread, i as u64 + 11);
            data.chunks(20 * MIB)
                .map(|part| {
                    let mut blobs = vec![];
                    let mut at = 0;
                    for n in chunker.cuts(part) {
                        blobs.push((at, n, keys.blob_id(&part[at..at + n])));
                        at += n;
                    }
                    (keys.recipient.encrypt(part).expect("encrypt"), blobs)
                })
                .collect()
        })
        .collect();
    let identity = keys.data_identity().expect("identity");
    on_cores(c, "restore_in_memory", per_thread, |threads| {
        std::thread::scope(|s| {
            for packs in &inputs[..threads] {
                let keys = &keys;
                s.spawn(move || {
                    let mut out = vec![0u8; 4 * MIB];
                    let mut plain = Vec::with_capacity(21 * MIB);
                    let mut file_hash = keys.file_hash.hasher();
                    for (object, blobs) in packs {
                        plain.clear();
                        identity
                            .open(&object[..], "pack")
                            .expect("open")
                            .read_to_end(&mut plain)
                            .expect("decrypt");
                        for &(at, n, id) in blobs {
                            let blob = &plain[at..at + n];
                            assert!(keys.blob_id(blob) == id);
                            file_hash.update(blob);
                            out[..n].copy_from_slice(blob);
                            black_box(&out);
                        }
                    }
                    black_box(file_hash.finalize())
                });
            }
        })
    });
}

criterion_group!(benches, stages, whole, restore_floor);
criterion_main!(benches);
