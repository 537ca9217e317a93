//! Content-defined chunking: FastCDC (v2020 cut points) with a secret gear table derived from the
//! repository key, so chunk boundaries do not reveal content to whoever sees chunk sizes.

use fastcdc::v2020::{cut_gear, select_masks, Normalization};

use crate::crypto::SecretKey;
use crate::format::config::Config;

/// Finds chunk boundaries. No `Debug`: the gear table is secret.
pub struct Chunker {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    pub fn new(key: &SecretKey, config: &Config) -> Chunker {
        let mut bytes = [0u8; 256 * 8];
        key.xof(b"gear", &mut bytes);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for i in 0..256 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            gear[i] = u64::from_le_bytes(b);
            gear_ls[i] = gear[i] << 1;
        }
        zeroize::Zeroize::zeroize(&mut bytes[..]);
        let avg = config.chunk_avg as usize;
        let (mask_s, mask_l) = select_masks(avg, Normalization::Level1);
        Chunker {
            gear,
            gear_ls,
            min: config.chunk_min as usize,
            avg,
            max: config.chunk_max as usize,
            mask_s,
            mask_l,
        }
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Length of the next chunk at the start of `buf`. Only call with `buf.len() >= max_size()`
    /// unless `buf` holds the rest of the file; the result is then in `1..=buf.len()`.
    pub fn next_cut(&self, buf: &[u8]) -> usize {
        if buf.is_empty() {
            return 0;
        }
        let (_, len) = cut_gear(
            buf,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        len.max(1).min(buf.len())
    }

    /// All chunk lengths of an in-memory buffer (whole content).
    pub fn cuts(&self, mut buf: &[u8]) -> Vec<usize> {
        let mut out = vec![];
        while !buf.is_empty() {
            let n = self.next_cut(buf);
            out.push(n);
            buf = &buf[n..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Id;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn sizes_within_bounds_and_keyed() {
        let cfg = Config::new(Id::random(), 0);
        let k1 = SecretKey::generate();
        let k2 = SecretKey::generate();
        let d = data(20 << 20, 42);
        let c1 = Chunker::new(&k1, &cfg).cuts(&d);
        let c2 = Chunker::new(&k2, &cfg).cuts(&d);
        assert_eq!(c1.iter().sum::<usize>(), d.len());
        for (i, &n) in c1.iter().enumerate() {
            assert!(n <= cfg.chunk_max as usize);
            if i + 1 < c1.len() {
                assert!(n >= cfg.chunk_min as usize);
            }
        }
        assert_ne!(c1, c2, "different keys must give different boundaries");
        let avg = d.len() / c1.len();
        assert!(avg > 400_000 && avg < 2_500_000, "average chunk {avg}");
    }

    #[test]
    fn boundaries_resynchronise_after_an_insert() {
        let cfg = Config::new(Id::random(), 0);
        let ch = Chunker::new(&SecretKey::generate(), &cfg);
        let d = data(12 << 20, 7);
        let mut e = b"inserted bytes".to_vec();
        e.extend_from_slice(&d);
        let a = ch.cuts(&d);
        let b = ch.cuts(&e);
        let ends = |v: &[usize], shift: usize| {
            let mut s = 0;
            v.iter()
                .map(|n| {
                    s += n;
                    s - shift
                })
                .collect::<std::collections::HashSet<_>>()
        };
        let common = ends(&a, 0).intersection(&ends(&b, 14)).count();
        assert!(common + 2 >= a.len(), "most boundaries survive an insert");
    }
}
