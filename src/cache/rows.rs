//! The file-change cache's folder rows (§16): one row per folder holding its files' entries, or,
//! for a large folder, the list of parts that hold them, read and written as streams.

use std::collections::HashSet;
use std::sync::Arc;

use crate::changes::{FileEntry, FileStat};
use crate::crypto::SecretKey;
use crate::error::Result;
use crate::format::codec::{Reader, Writer};
use crate::format::tree::SplitRule;
use crate::ids::Id;

use super::LocalCache;

/// Smallest encoded entry (empty name, no blob), for count checks.
const MIN_ENTRY_LEN: usize = 4 + 8 + 8 + 4 + 8 + 4 + 8 + 8 + 32 + 32 + 4;

fn write_entry(e: &FileEntry, w: &mut Writer) {
    let s = &e.stat;
    w.u64(s.size);
    w.i64(s.mtime);
    w.u32(s.mtime_nanos);
    w.i64(s.ctime);
    w.u32(s.ctime_nanos);
    w.u64(s.ino);
    w.u64(s.dev);
    w.id(&e.hash);
    w.id(&e.sample);
    w.u32(e.blobs.len() as u32);
    for b in &e.blobs {
        w.id(b);
    }
}

fn read_entry(r: &mut Reader<'_>) -> Result<FileEntry> {
    let mut e = FileEntry {
        stat: FileStat {
            size: r.u64()?,
            mtime: r.i64()?,
            mtime_nanos: r.u32()?,
            ctime: r.i64()?,
            ctime_nanos: r.u32()?,
            ino: r.u64()?,
            dev: r.u64()?,
        },
        hash: r.id()?,
        sample: r.id()?,
        blobs: Vec::new(),
    };
    let n = r.count(32)?;
    e.blobs.reserve(n);
    for _ in 0..n {
        e.blobs.push(r.id()?);
    }
    Ok(e)
}

/// A folder's entries: (file name, entry), sorted by name.
pub type FolderFiles = Vec<(Vec<u8>, FileEntry)>;

/// One part of a large folder's row: a run of its entries, stored on its own under a keyed hash
/// of its content, so that a part that did not change keeps its id and is not written again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartRef {
    pub id: Id,
    pub entries: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Body {
    Inline(FolderFiles),
    Parts(Vec<PartRef>),
}

/// The file-change entries of one folder: one row per folder, so that a folder of photos costs
/// one lookup and one decryption, and its entries sit together on disk. A folder whose entries
/// take more than a part (hundreds of KiB) lists parts instead, read one at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderRow {
    body: Body,
    /// Written by a run that completed: every blob its entries list is in the blob index.
    /// Entries of an unconfirmed row are used only after checking their blobs.
    pub confirmed: bool,
    /// Day the row was last written or marked as seen.
    pub seen: i64,
}

/// Layout version of a row's and a part's plaintext.
const ROW_VERSION: u8 = 2;
const LAYOUT_INLINE: u8 = 0;
const LAYOUT_PARTS: u8 = 1;

/// Where a folder's entries are cut into parts: as for tree blobs (§10), by a keyed hash of the
/// names, so that a folder that gained one photo rewrites one part.
const PART_SPLIT: SplitRule = crate::format::tree::TREE_SPLIT;

fn encode_entries(version: Option<u8>, n: u32, entries: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    if let Some(v) = version {
        w.u8(v);
    }
    w.u32(n);
    w.raw(entries);
    w.into_vec()
}

fn decode_entries(r: &mut Reader<'_>) -> Result<FolderFiles> {
    let n = r.count(MIN_ENTRY_LEN)?;
    let mut files: FolderFiles = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.bytes()?.to_vec();
        let e = read_entry(r)?;
        if files.last().is_some_and(|(p, _)| *p >= name) {
            return Err(r.err("names out of order"));
        }
        files.push((name, e));
    }
    r.finish()?;
    Ok(files)
}

impl FolderRow {
    pub(super) fn decode(data: &[u8], confirmed: bool, seen: i64) -> Result<FolderRow> {
        let mut r = Reader::new(data, "local folder entry");
        if r.u8()? != ROW_VERSION {
            return Err(r.err("unknown entry version"));
        }
        let body = match r.u8()? {
            LAYOUT_INLINE => Body::Inline(decode_entries(&mut r)?),
            LAYOUT_PARTS => {
                let n = r.count(36)?;
                let mut parts = Vec::with_capacity(n);
                for _ in 0..n {
                    parts.push(PartRef {
                        id: r.id()?,
                        entries: r.u32()?,
                    });
                }
                r.finish()?;
                Body::Parts(parts)
            }
            _ => return Err(r.err("unknown layout")),
        };
        Ok(FolderRow {
            body,
            confirmed,
            seen,
        })
    }

    pub(super) fn decode_part(data: &[u8]) -> Result<FolderFiles> {
        let mut r = Reader::new(data, "local folder part");
        if r.u8()? != ROW_VERSION {
            return Err(r.err("unknown part version"));
        }
        decode_entries(&mut r)
    }

    /// How many files the row remembers.
    pub fn entries(&self) -> u64 {
        match &self.body {
            Body::Inline(f) => f.len() as u64,
            Body::Parts(p) => p.iter().map(|p| p.entries as u64).sum(),
        }
    }

    /// Ids of the parts this row lists (none when its entries are inline).
    pub fn part_ids(&self) -> HashSet<Id> {
        match &self.body {
            Body::Inline(_) => HashSet::new(),
            Body::Parts(p) => p.iter().map(|p| p.id).collect(),
        }
    }
}

/// Reads one folder's row by name, in increasing name order, loading its parts one at a time.
pub struct RowCursor {
    key: Id,
    row: Arc<FolderRow>,
    next_part: usize,
    part: FolderFiles,
    /// Position in `part` for [`Self::next_entry`].
    pos: usize,
    /// Last name of the part before `part`: a name at or below it means starting over.
    floor: Option<Vec<u8>>,
}

fn search<'a>(files: &'a FolderFiles, name: &[u8]) -> Option<&'a FileEntry> {
    files
        .binary_search_by(|(n, _)| n.as_slice().cmp(name))
        .ok()
        .map(|i| &files[i].1)
}

impl RowCursor {
    /// `key` is the folder's key in the local index.
    pub fn new(key: Id, row: Arc<FolderRow>) -> Self {
        RowCursor {
            key,
            row,
            next_part: 0,
            part: Vec::new(),
            pos: 0,
            floor: None,
        }
    }

    pub fn row(&self) -> &FolderRow {
        &self.row
    }

    /// The part after the current one, if any (a part that is gone or does not open counts as
    /// empty: its files are read again).
    fn advance(&mut self, cache: &LocalCache) -> Result<bool> {
        let Body::Parts(parts) = &self.row.body else {
            return Ok(false);
        };
        let Some(p) = parts.get(self.next_part) else {
            return Ok(false);
        };
        let id = p.id;
        self.next_part += 1;
        if let Some((last, _)) = self.part.last() {
            self.floor = Some(last.clone());
        }
        self.part = cache.folder_part(&self.key, &id)?.unwrap_or_default();
        self.pos = 0;
        Ok(true)
    }

    /// The entry of `name`. Names are expected in increasing order; an earlier one starts the
    /// parts over.
    pub fn get(&mut self, cache: &LocalCache, name: &[u8]) -> Result<Option<&FileEntry>> {
        self.locate(cache, name)?;
        Ok(match &self.row.body {
            Body::Inline(files) => search(files, name),
            Body::Parts(_) => search(&self.part, name),
        })
    }

    /// Load the part that would hold `name`.
    fn locate(&mut self, cache: &LocalCache, name: &[u8]) -> Result<()> {
        if matches!(self.row.body, Body::Inline(_)) {
            return Ok(());
        }
        if self.floor.as_deref().is_some_and(|f| name <= f) {
            self.next_part = 0;
            self.part.clear();
            self.floor = None;
        }
        while self.part.last().is_none_or(|(l, _)| name > l.as_slice()) {
            if !self.advance(cache)? {
                break;
            }
        }
        Ok(())
    }

    /// Every entry in name order (to carry over the files of a folder only partly walked).
    pub fn next_entry(&mut self, cache: &LocalCache) -> Result<Option<(Vec<u8>, FileEntry)>> {
        if let Body::Inline(files) = &self.row.body {
            let e = files.get(self.pos).cloned();
            self.pos += 1;
            return Ok(e);
        }
        loop {
            if let Some(e) = self.part.get(self.pos) {
                self.pos += 1;
                return Ok(Some(e.clone()));
            }
            if !self.advance(cache)? {
                return Ok(None);
            }
        }
    }
}

/// A folder's new row, built entry by entry in name order. Parts are cut as they fill; each
/// finished part is handed out by [`Self::take_parts`] to be stored while the rest is built.
pub struct RowWriter {
    folder: Id,
    key: SecretKey,
    buf: Vec<u8>,
    n: u32,
    parts: Vec<PartRef>,
    done: Vec<(Id, Vec<u8>)>,
    total: u64,
    last: Option<Vec<u8>>,
}

/// What a [`RowWriter`] leaves to store: the row's plaintext and the parts it lists.
pub struct NewRow {
    pub body: Vec<u8>,
    pub parts: Vec<Id>,
}

impl RowWriter {
    /// `key` keys the split hash and the part ids (`Keys::name`).
    pub fn new(folder: Id, key: &SecretKey) -> Self {
        RowWriter {
            folder,
            key: key.clone(),
            buf: Vec::new(),
            n: 0,
            parts: Vec::new(),
            done: Vec::new(),
            total: 0,
            last: None,
        }
    }

    /// Entries pushed so far.
    pub fn entries(&self) -> u64 {
        self.total
    }

    /// Add the next entry; an entry not after the previous one is left out (it would make the
    /// row unreadable, and a missing entry only costs reading that file again).
    pub fn push(&mut self, name: &[u8], e: &FileEntry) {
        if self.last.as_deref().is_some_and(|l| l >= name) {
            return;
        }
        let start = self.buf.len();
        let mut w = Writer {
            buf: std::mem::take(&mut self.buf),
        };
        w.bytes(name);
        write_entry(e, &mut w);
        self.buf = w.buf;
        self.n += 1;
        self.total += 1;
        self.last = Some(name.to_vec());
        let len = self.buf.len() - start;
        if PART_SPLIT.cut_after(&self.key, 0, name, len, self.buf.len()) {
            self.cut();
        }
    }

    fn cut(&mut self) {
        let plain = encode_entries(Some(ROW_VERSION), self.n, &self.buf);
        let mut h = self.key.hasher();
        h.update(b"vault local folder part");
        h.update(&self.folder.0);
        h.update(&plain);
        let id = h.finalize();
        self.parts.push(PartRef {
            id,
            entries: self.n,
        });
        self.done.push((id, plain));
        self.buf.clear();
        self.n = 0;
    }

    /// Parts finished since the last call: (part id, plaintext).
    pub fn take_parts(&mut self) -> Vec<(Id, Vec<u8>)> {
        std::mem::take(&mut self.done)
    }

    /// End the open part now (a run that stops in the middle of a folder keeps what it did).
    pub fn close_part(&mut self) {
        if self.n > 0 {
            self.cut();
        }
    }

    /// A row listing the parts finished so far: written while a large folder is still being
    /// backed up, so that a run killed in its middle leaves the next one these entries.
    pub fn provisional(&self) -> Option<NewRow> {
        if self.parts.is_empty() {
            return None;
        }
        Some(Self::parts_row(&self.parts))
    }

    fn parts_row(parts: &[PartRef]) -> NewRow {
        let mut w = Writer::new();
        w.u8(ROW_VERSION);
        w.u8(LAYOUT_PARTS);
        w.u32(parts.len() as u32);
        for p in parts {
            w.id(&p.id);
            w.u32(p.entries);
        }
        NewRow {
            body: w.into_vec(),
            parts: parts.iter().map(|p| p.id).collect(),
        }
    }

    /// End the row: the entries inline when they never filled a part, else the list of parts
    /// (the last one is then among [`Self::take_parts`]).
    pub fn finish(mut self) -> (NewRow, Vec<(Id, Vec<u8>)>) {
        if self.parts.is_empty() {
            let mut body = vec![ROW_VERSION, LAYOUT_INLINE];
            body.extend(encode_entries(None, self.n, &self.buf));
            return (
                NewRow {
                    body,
                    parts: Vec::new(),
                },
                self.take_parts(),
            );
        }
        self.close_part();
        let row = Self::parts_row(&self.parts);
        (row, self.take_parts())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn entry() -> FileEntry {
        FileEntry {
            stat: FileStat {
                size: 5,
                mtime: 1,
                mtime_nanos: 2,
                ctime: 3,
                ctime_nanos: 4,
                ino: 5,
                dev: 6,
            },
            hash: Id([7; 32]),
            sample: Id([8; 32]),
            blobs: vec![Id([9; 32]), Id([10; 32])],
        }
    }

    proptest::proptest! {
        #[test]
        fn inline_rows_round_trip(size: u64, mtime: i64, ino: u64, n in 0usize..40, files in 0usize..5) {
            let mut e = entry();
            e.stat.size = size;
            e.stat.mtime = mtime;
            e.stat.ino = ino;
            e.blobs = (0..n).map(|i| Id([i as u8; 32])).collect();
            let row: Vec<_> = (0..files).map(|i| (format!("f{i}").into_bytes(), e.clone())).collect();
            let mut w = RowWriter::new(Id([1; 32]), &SecretKey::generate());
            for (name, e) in &row {
                w.push(name, e);
            }
            let (new, parts) = w.finish();
            proptest::prop_assert!(parts.is_empty());
            let back = FolderRow::decode(&new.body, true, 0).unwrap();
            proptest::prop_assert_eq!(back.body, Body::Inline(row));
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = FolderRow::decode(&data, true, 0);
            let _ = FolderRow::decode_part(&data);
        }
    }
}
