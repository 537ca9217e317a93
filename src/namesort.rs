//! Sorting the names of one folder with bounded memory. Names are kept in memory up to a limit;
//! past it, sorted runs go to an unnamed temporary file, sealed under a key that exists only in
//! this process, and are merged back in order. A folder of a million photos costs the backup a
//! few MiB of memory instead of its whole listing; nothing readable is left on disk, even if the
//! process is killed (the file has no name).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::crypto::{RowCipher, SecretKey};

/// Bytes of names (plus a fixed cost per name) kept in memory before a run is written out.
pub const MEMORY_LIMIT: usize = 16 << 20;
/// Plaintext bytes per sealed block of a run.
const BLOCK: usize = 64 << 10;
/// What one name costs in memory beyond its bytes (its place in the offsets list).
const PER_NAME: usize = 8;

/// Names in one buffer, sorted through a list of offsets: one allocation for all, not one each.
#[derive(Default)]
struct Arena {
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

impl Arena {
    fn push(&mut self, name: &[u8]) {
        self.spans
            .push((self.bytes.len() as u32, name.len() as u32));
        self.bytes.extend_from_slice(name);
    }
    fn get(&self, i: usize) -> &[u8] {
        let (o, l) = self.spans[i];
        &self.bytes[o as usize..(o + l) as usize]
    }
    fn cost(&self) -> usize {
        self.bytes.len() + self.spans.len() * PER_NAME
    }
    fn sort(&mut self) {
        let bytes = &self.bytes;
        self.spans.sort_unstable_by(|a, b| {
            bytes[a.0 as usize..(a.0 + a.1) as usize]
                .cmp(&bytes[b.0 as usize..(b.0 + b.1) as usize])
        });
    }
}

/// The temporary file that holds the sorted runs.
struct Spill {
    file: File,
    cipher: RowCipher,
    len: u64,
    blocks: u64,
}

/// Where one run lies in the spill file.
struct RunPlace {
    start: u64,
    end: u64,
}

/// Collects names, then hands them back sorted by bytes.
pub struct NameSorter<'a> {
    mem: Arena,
    limit: usize,
    tmp_dir: &'a Path,
    spill: Option<Spill>,
    runs: Vec<RunPlace>,
}

/// A file no other process can open: `O_TMPFILE` where the filesystem has it, else a random name
/// removed at once.
fn unnamed_file(dir: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let mode = Mode::RUSR | Mode::WUSR;
    match rustix::fs::open(dir, OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC, mode) {
        Ok(fd) => return Ok(File::from(fd)),
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => {
            return Err(e.into())
        }
        Err(_) => {}
    }
    let path = dir.join(format!(".vault-sort-{}", crate::ids::Id::random().to_hex()));
    let fd = rustix::fs::open(
        &path,
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        mode,
    )?;
    std::fs::remove_file(&path)?;
    Ok(File::from(fd))
}

impl<'a> NameSorter<'a> {
    /// Runs past `limit` bytes of names go to an unnamed file in `tmp_dir`.
    pub fn new(limit: usize, tmp_dir: &'a Path) -> Self {
        NameSorter {
            mem: Arena::default(),
            limit,
            tmp_dir,
            spill: None,
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, name: &[u8]) -> io::Result<()> {
        self.mem.push(name);
        if self.mem.cost() >= self.limit {
            self.write_run()?;
        }
        Ok(())
    }

    /// Sort what is in memory and write it out as one run.
    fn write_run(&mut self) -> io::Result<()> {
        self.mem.sort();
        if self.spill.is_none() {
            self.spill = Some(Spill {
                file: unnamed_file(self.tmp_dir)?,
                cipher: RowCipher::new(&SecretKey::generate()),
                len: 0,
                blocks: 0,
            });
        }
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        let start = spill.len;
        let mut block = Vec::with_capacity(BLOCK + 256);
        for i in 0..self.mem.spans.len() {
            let name = self.mem.get(i);
            block.extend_from_slice(&(name.len() as u32).to_le_bytes());
            block.extend_from_slice(name);
            if block.len() >= BLOCK {
                spill.write_block(&block)?;
                block.clear();
            }
        }
        if !block.is_empty() {
            spill.write_block(&block)?;
        }
        self.runs.push(RunPlace {
            start,
            end: spill.len,
        });
        self.mem = Arena::default();
        Ok(())
    }

    /// The names in byte order.
    pub fn finish(mut self) -> SortedNames {
        self.mem.sort();
        let mut sources: Vec<Source> = Vec::new();
        let spill = self.spill.take().map(std::sync::Arc::new);
        if let Some(s) = &spill {
            for r in &self.runs {
                sources.push(Source::Run(RunReader {
                    spill: s.clone(),
                    pos: r.start,
                    end: r.end,
                    block: Vec::new().into(),
                    at: 0,
                }));
            }
        }
        sources.push(Source::Memory(self.mem, 0));
        let mut heap = BinaryHeap::new();
        let mut error = None;
        for (i, s) in sources.iter_mut().enumerate() {
            match s.next() {
                Ok(Some(n)) => heap.push(Reverse((n, i))),
                Ok(None) => {}
                Err(e) => error = Some(e),
            }
        }
        SortedNames {
            sources,
            heap,
            error,
        }
    }
}

impl Spill {
    fn write_block(&mut self, plain: &[u8]) -> io::Result<()> {
        // The block's number is bound to it: blocks cannot be swapped or replayed.
        let sealed = self.cipher.seal(&self.blocks.to_le_bytes(), plain);
        self.blocks += 1;
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.blocks - 1).to_le_bytes());
        out.extend_from_slice(&sealed);
        self.file.write_all_at(&out, self.len)?;
        self.len += out.len() as u64;
        Ok(())
    }
}

/// Reads one run back, a block at a time.
struct RunReader {
    spill: std::sync::Arc<Spill>,
    pos: u64,
    end: u64,
    block: zeroize::Zeroizing<Vec<u8>>,
    at: usize,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("temporary sort file: {what}"),
    )
}

impl RunReader {
    fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.at >= self.block.len() {
            if self.pos >= self.end {
                return Ok(None);
            }
            let mut head = [0u8; 12];
            self.spill.file.read_exact_at(&mut head, self.pos)?;
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let mut num = [0u8; 8];
            num.copy_from_slice(&head[4..]);
            if len > BLOCK * 2 + 1024 {
                return Err(bad("a block is too large"));
            }
            let mut sealed = vec![0u8; len];
            self.spill.file.read_exact_at(&mut sealed, self.pos + 12)?;
            self.pos += 12 + len as u64;
            self.block = self
                .spill
                .cipher
                .open(&num, &sealed)
                .ok_or_else(|| bad("a block does not decrypt"))?;
            self.at = 0;
        }
        let b = &self.block[self.at..];
        if b.len() < 4 {
            return Err(bad("a truncated name"));
        }
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let name = b
            .get(4..4 + n)
            .ok_or_else(|| bad("a truncated name"))?
            .to_vec();
        self.at += 4 + n;
        Ok(Some(name))
    }
}

enum Source {
    Run(RunReader),
    Memory(Arena, usize),
}

impl Source {
    fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        match self {
            Source::Run(r) => r.next(),
            Source::Memory(a, i) => {
                if *i >= a.spans.len() {
                    return Ok(None);
                }
                *i += 1;
                Ok(Some(a.get(*i - 1).to_vec()))
            }
        }
    }
}

/// Names in byte order, merged from the runs.
pub struct SortedNames {
    sources: Vec<Source>,
    heap: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
    error: Option<io::Error>,
}

impl Iterator for SortedNames {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<io::Result<Vec<u8>>> {
        if let Some(e) = self.error.take() {
            self.heap.clear();
            return Some(Err(e));
        }
        let Reverse((name, i)) = self.heap.pop()?;
        match self.sources[i].next() {
            Ok(Some(n)) => self.heap.push(Reverse((n, i))),
            Ok(None) => {}
            Err(e) => self.error = Some(e),
        }
        Some(Ok(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(names: &[Vec<u8>], limit: usize, dir: &Path) -> Vec<Vec<u8>> {
        let mut s = NameSorter::new(limit, dir);
        for n in names {
            s.push(n).unwrap();
        }
        s.finish().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn sorts_in_memory_and_through_spilled_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let names: Vec<Vec<u8>> = (0..20_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("IMG_{:08}_{i}.jpg", x % 100_000_000).into_bytes()
            })
            .collect();
        let mut want = names.clone();
        want.sort();
        assert_eq!(sorted(&names, MEMORY_LIMIT, dir.path()), want);
        // A small limit: dozens of runs, several blocks each.
        assert_eq!(sorted(&names, 10_000, dir.path()), want);
        assert_eq!(sorted(&[], 10, dir.path()), Vec::<Vec<u8>>::new());
        // Nothing is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn spilled_names_are_not_readable_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = NameSorter::new(100, dir.path());
        for i in 0..100 {
            s.push(format!("secret_{i}.jpg").as_bytes()).unwrap();
        }
        let spill = s.spill.as_ref().unwrap();
        let mut all = vec![0u8; spill.len as usize];
        spill.file.read_exact_at(&mut all, 0).unwrap();
        assert!(!all.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn a_missing_temporary_folder_is_an_error() {
        let mut s = NameSorter::new(10, Path::new("/nonexistent/vault-sort"));
        let r = (0..10).try_for_each(|i| s.push(format!("{i}").as_bytes()));
        assert!(r.is_err());
    }
}
