//! zstd compression of blobs, skipped when a cheap probe says the data does not compress.

use crate::error::{Error, Result};
use crate::format::Compression;

/// Probe this many bytes from a few places in a blob before compressing it.
const PROBE_SLICE: usize = 16 * 1024;
/// Store raw unless compression saves at least this fraction.
const MIN_SAVING: f64 = 0.03;

/// A reusable compressor (one per worker thread). Its buffers are reused from blob to blob.
pub struct Compressor {
    probe: zstd::bulk::Compressor<'static>,
    full: zstd::bulk::Compressor<'static>,
    sample: Vec<u8>,
    scratch: Vec<u8>,
    out: Vec<u8>,
}

impl Compressor {
    pub fn new(level: u8) -> Result<Self> {
        let mk =
            |l: i32| zstd::bulk::Compressor::new(l).map_err(|e| Error::io("setting up zstd", e));
        Ok(Compressor {
            probe: mk(1)?,
            full: mk(level as i32)?,
            sample: Vec::with_capacity(4 * PROBE_SLICE),
            scratch: Vec::new(),
            out: Vec::new(),
        })
    }

    /// True when a sample of `data` compresses by less than the threshold. Photos and videos
    /// (JPEG, HEIC, MP4) are caught here whatever their file name says.
    pub fn looks_incompressible(&mut self, data: &[u8]) -> bool {
        if data.len() < 4 * PROBE_SLICE {
            return false;
        }
        // The middle of each quarter. A slice at offset 0 would, in the first chunk of every
        // photo, be the EXIF header: it compresses well, carried the whole sample past the
        // threshold, and the blob then went through zstd for a 0.3% saving (16% of the CPU time
        // of a photo backup).
        self.sample.clear();
        for i in 0..4 {
            let start = (2 * i + 1) * data.len() / 8 - PROBE_SLICE / 2;
            self.sample
                .extend_from_slice(&data[start..start + PROBE_SLICE]);
        }
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(self.sample.len()));
        match self
            .probe
            .compress_to_buffer(&self.sample, &mut self.scratch)
        {
            Ok(n) => n as f64 > self.sample.len() as f64 * (1.0 - MIN_SAVING),
            Err(_) => false,
        }
    }

    /// Compress `data` if that pays. Returns the form chosen and the bytes to store (`None` means
    /// store `data` itself); the bytes stay valid until the next call.
    pub fn compress(&mut self, data: &[u8]) -> (Compression, Option<&[u8]>) {
        if data.is_empty() || self.looks_incompressible(data) {
            return (Compression::None, None);
        }
        // Output larger than this is not worth keeping, so zstd may stop there.
        let limit = (data.len() as f64 * (1.0 - MIN_SAVING)) as usize;
        self.out.clear();
        self.out
            .reserve(zstd::zstd_safe::compress_bound(data.len()));
        match self.full.compress_to_buffer(data, &mut self.out) {
            Ok(n) if n < limit => (Compression::Zstd, Some(&self.out[..n])),
            _ => (Compression::None, None),
        }
    }
}

/// `decompress` into `out` (replacing its contents), reusing its allocation.
pub fn decompress_into(stored: &[u8], raw_len: usize, out: &mut Vec<u8>, what: &str) -> Result<()> {
    out.clear();
    out.reserve(raw_len);
    let n = zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress_to_buffer(stored, out))
        .map_err(|e| Error::corrupt(what, format!("zstd: {e}")))?;
    if n != raw_len {
        return Err(Error::corrupt(
            what,
            "decompressed length differs from the recorded one",
        ));
    }
    Ok(())
}

/// Decompress a stored blob, refusing output of any length other than `raw_len`.
pub fn decompress(stored: &[u8], raw_len: usize, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decompress_into(stored, raw_len, &mut out, what)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn random_data_is_stored_raw_text_is_compressed() {
        let mut c = Compressor::new(3).unwrap();
        let mut rnd = vec![0u8; 1 << 20];
        crate::crypto::fill_random(&mut rnd);
        assert!(c.looks_incompressible(&rnd));
        assert_eq!(c.compress(&rnd).0, Compression::None);
        let text = b"the same line again and again\n".repeat(40_000);
        let (k, out) = c.compress(&text);
        assert_eq!(k, Compression::Zstd);
        let out = out.unwrap().to_vec();
        assert_eq!(decompress(&out, text.len(), "t").unwrap(), text);
        assert!(decompress(&out, text.len() - 1, "t").is_err());
    }

    /// Regression: the first chunk of every JPEG (a compressible EXIF header, then entropy-coded
    /// image data) passed the probe and went through zstd for nothing.
    #[test]
    fn a_compressible_header_does_not_make_a_photo_chunk_compressible() {
        let mut c = Compressor::new(3).unwrap();
        let mut chunk = b"Exif\0\0MM\0*".repeat(3_000);
        let header = chunk.len();
        chunk.resize(header + (1 << 20), 0);
        crate::crypto::fill_random(&mut chunk[header..]);
        assert!(c.looks_incompressible(&chunk));
        // Compressible data in any one quarter still counts: half text, half noise compresses.
        let mut half = b"the same line again and again\n".repeat(20_000);
        let text = half.len();
        half.resize(2 * text, 0);
        crate::crypto::fill_random(&mut half[text..]);
        assert!(!c.looks_incompressible(&half));
        assert_eq!(c.compress(&half).0, Compression::Zstd);
    }

    proptest! {
        #[test]
        fn the_probe_reads_within_any_chunk(len in 0usize..300_000) {
            let mut c = Compressor::new(3).unwrap();
            let data = vec![7u8; len];
            prop_assert!(!c.looks_incompressible(&data));
        }

        #[test]
        fn round_trip(data in proptest::collection::vec(0u8..4, 0..100_000)) {
            let mut c = Compressor::new(3).unwrap();
            match c.compress(&data) {
                (Compression::Zstd, Some(out)) => prop_assert_eq!(decompress(out, data.len(), "t").unwrap(), data),
                (Compression::None, None) => {}
                _ => prop_assert!(false, "inconsistent result"),
            }
        }
    }
}
