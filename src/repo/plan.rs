//! Planned reads (§12.2): a set of data blobs known in advance is fetched as few pack ranges,
//! each downloaded once, ahead of its use, and decrypted as it streams in: a blob is held from
//! the moment it arrives until its reader takes it, within a memory budget. Restore reads
//! through it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{PackReaders, Repository};
use crate::backend::{Chunks, FileType};
use crate::crypto;
use crate::error::{Error, Result};
use crate::format::index::PackInfo;
use crate::format::{self, codec::Reader, BlobEntry, BlobType, Compression, ObjectKind};
use crate::ids::Id;

/// Plaintext bytes per age STREAM chunk, and the bytes each takes stored (with its tag).
const CHUNK: u64 = 64 * 1024;
const STORED_CHUNK: u64 = CHUNK + 16;

/// Two needed stretches of a pack whose chunks are at most this many apart are fetched as one
/// range (§12.2 gives the measurement): 0, only stretches that touch.
pub const MERGE_GAP_CHUNKS: u64 = 0;

/// Largest range asked for in one request, in chunks (24 MiB of plaintext, more than a pack of
/// the default 20 MiB target, so that a pack read close together is one request): a range a
/// reader streams itself (none was fetched ahead) is held up to this much.
pub const MAX_RANGE_CHUNKS: u64 = 384;

/// Blobs whose reads lie further apart than this (in bytes read between them) are not put in
/// one range: a range streams its blobs in pack order, and a pack written by several backup
/// threads at once mixes blobs of files read far apart.
pub const LOCALITY: u64 = 32 << 20;

/// Bytes of blobs that arrived ahead of their readers that may be held at once. A range a
/// reader is waiting for goes on streaming whatever is held, so a reader never waits on it.
pub const AHEAD_BUDGET: u64 = 16 << 20;

/// A stream that fails this many times in a row at the same blob gives up on the rest of its
/// range (its blobs are then read the unplanned way, which reports why).
const STREAM_ATTEMPTS: u32 = 3;

/// One range of one pack: whole STREAM chunks `first..end`, and the blobs needed from it, in
/// pack order.
struct PlannedRange {
    pack: PackInfo,
    first: u64,
    end: u64,
    members: Vec<BlobEntry>,
}

/// Where its chunks start in the stored object and how many bytes they take there.
fn stored_span(pack: &PackInfo, first: u64, end: u64) -> (u64, u64) {
    let start = u64::from(pack.payload_offset) + first * STORED_CHUNK;
    let stop = (u64::from(pack.payload_offset) + end * STORED_CHUNK).min(pack.object_len);
    (start, stop.saturating_sub(start))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Streaming,
    Done,
}

struct State {
    stage: Vec<Stage>,
    /// Per range, the furthest offset a reader is waiting for: the range streams on to it
    /// whatever is held.
    wanted: Vec<u64>,
    /// Blobs arrived and not yet taken: stored bytes.
    ready: HashMap<Id, Arc<Vec<u8>>>,
    /// Planned reads not yet made (or given up), per blob.
    remaining: HashMap<Id, usize>,
    /// Bytes held in `ready`.
    held: u64,
}

/// Figures a planned read reports: what it downloaded.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct PlanFigures {
    /// Requests made for ranges (age headers included) and the stored bytes they brought.
    pub requests: u64,
    pub bytes_fetched: u64,
    /// Ranges fetched again from a blob on: the first download failed authentication or broke
    /// off on the way.
    pub refetched: u64,
    /// Blobs fetched alone: read again long after their planned reads.
    pub extra_reads: u64,
}

/// What plans fetched, summed over the plans of one run.
#[derive(Default)]
pub struct PlanCounters {
    requests: AtomicU64,
    bytes: AtomicU64,
    refetched: AtomicU64,
    extra: AtomicU64,
}

impl PlanCounters {
    pub fn figures(&self) -> PlanFigures {
        PlanFigures {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_fetched: self.bytes.load(Ordering::Relaxed),
            refetched: self.refetched.load(Ordering::Relaxed),
            extra_reads: self.extra.load(Ordering::Relaxed),
        }
    }
}

/// Reads a planned set of data blobs: see the module comment.
pub struct PlanReader<'r> {
    repo: &'r Repository,
    ranges: Vec<PlannedRange>,
    /// Each planned blob's range and entry.
    blobs: HashMap<Id, (usize, BlobEntry)>,
    state: Mutex<State>,
    changed: Condvar,
    /// The next range the fetch-ahead threads take.
    next_ahead: AtomicUsize,
    /// Age headers of packs (with the nonce), fetched once each.
    heads: Mutex<HashMap<Id, Arc<Vec<u8>>>>,
    counters: Arc<PlanCounters>,
    /// Blob buffers given back by readers, for the next blobs: memory stays what is in use at
    /// once rather than what the allocator keeps of buffers freed on other threads.
    pool: Mutex<Vec<Vec<u8>>>,
    stop: AtomicBool,
}

/// Blob buffers kept for reuse.
const POOLED: usize = 8;

impl<'r> PlanReader<'r> {
    /// Plan the reads of `files`, each the data blobs of one file in the order they will be
    /// read (a blob read twice appears twice), by `readers` threads that each take the next
    /// file when done with one. Blobs the local index does not know, or knows only in tree
    /// packs, are left out: reading them takes the unplanned path, which reports why.
    pub fn new<F, B>(repo: &'r Repository, files: F, readers: usize) -> Result<Self>
    where
        F: IntoIterator<Item = B>,
        B: IntoIterator<Item = Id>,
    {
        let cache = repo.cache()?;
        let mut blobs: HashMap<Id, (usize, BlobEntry)> = HashMap::new();
        // Per pack, its needed blobs with when their first read falls.
        let mut by_pack: HashMap<Id, (PackInfo, Vec<(u64, BlobEntry)>)> = HashMap::new();
        let mut counts: HashMap<Id, usize> = HashMap::new();
        // When each read falls, in bytes a reader has read: readers take the files in turn,
        // at the same pace. Files read side by side (which a backup, reading files side by
        // side too, packed together) then count as read together, as they are.
        let mut free: BinaryHeap<Reverse<u64>> = (0..readers.max(1)).map(|_| Reverse(0)).collect();
        // Each blob's first read and its length.
        let mut first_pos: HashMap<Id, (u64, u64)> = HashMap::new();
        for file in files {
            let Reverse(start) = free.pop().unwrap_or(Reverse(0));
            let mut pos = start;
            for id in file {
                if let Some(&(p, len)) = first_pos.get(&id) {
                    // Read again much later: that read fetches it again rather than holding
                    // it all the while.
                    if pos.abs_diff(p) <= LOCALITY {
                        if let Some(n) = counts.get_mut(&id) {
                            *n += 1;
                        }
                    }
                    pos += len;
                    continue;
                }
                let Some((pack, entry)) = cache.blob(&id)?.into_iter().next() else {
                    first_pos.insert(id, (pos, 0));
                    continue;
                };
                let at = pos;
                pos += u64::from(entry.raw_len);
                first_pos.insert(id, (at, u64::from(entry.raw_len)));
                let in_range = entry
                    .offset
                    .checked_add(u64::from(entry.stored_len))
                    .is_some_and(|end| end <= pack.plain_len);
                if pack.pack_type != BlobType::Data
                    || entry.blob_type != BlobType::Data
                    || !in_range
                {
                    continue;
                }
                counts.insert(id, 1);
                by_pack
                    .entry(pack.id)
                    .or_insert_with(|| (pack, Vec::new()))
                    .1
                    .push((at, entry));
            }
            free.push(Reverse(pos));
        }
        // Ranges per pack: needed chunks merged across small gaps, bounded in size and in how
        // far apart their blobs are read; then all ranges in the order of their first read,
        // which is the order they are fetched ahead.
        let mut ranges: Vec<(u64, PlannedRange)> = Vec::new();
        for (_, (pack, mut list)) in by_pack {
            list.sort_by_key(|(_, e)| e.offset);
            // (first read, last read, range)
            let mut cur: Option<(u64, u64, PlannedRange)> = None;
            for (at, e) in list {
                let first = e.offset / CHUNK;
                let end = (e.offset + u64::from(e.stored_len))
                    .div_ceil(CHUNK)
                    .max(first + 1);
                match &mut cur {
                    Some((lo, hi, r))
                        if first <= r.end + MERGE_GAP_CHUNKS
                            && end.max(r.end) - r.first <= MAX_RANGE_CHUNKS
                            && (*hi).max(at) - (*lo).min(at) <= LOCALITY =>
                    {
                        *lo = (*lo).min(at);
                        *hi = (*hi).max(at);
                        r.end = r.end.max(end);
                        r.members.push(e);
                    }
                    _ => {
                        ranges.extend(cur.take().map(|(lo, _, r)| (lo, r)));
                        cur = Some((
                            at,
                            at,
                            PlannedRange {
                                pack: pack.clone(),
                                first,
                                end,
                                members: vec![e],
                            },
                        ));
                    }
                }
            }
            ranges.extend(cur.map(|(lo, _, r)| (lo, r)));
        }
        ranges.sort_by_key(|(lo, _)| *lo);
        let ranges: Vec<PlannedRange> = ranges.into_iter().map(|(_, r)| r).collect();
        for (i, r) in ranges.iter().enumerate() {
            for e in &r.members {
                blobs.insert(e.id, (i, *e));
            }
        }
        let n = ranges.len();
        Ok(PlanReader {
            repo,
            ranges,
            blobs,
            state: Mutex::new(State {
                stage: vec![Stage::Waiting; n],
                wanted: vec![0; n],
                ready: HashMap::new(),
                remaining: counts,
                held: 0,
            }),
            changed: Condvar::new(),
            next_ahead: AtomicUsize::new(0),
            heads: Mutex::new(HashMap::new()),
            counters: Default::default(),
            pool: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        })
    }

    /// Count what it fetches into `c`, shared with other plans of the same run.
    pub fn counting_into(mut self, c: Arc<PlanCounters>) -> Self {
        self.counters = c;
        self
    }

    pub fn figures(&self) -> PlanFigures {
        self.counters.figures()
    }

    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// Ranges the plan holds.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'g>(&self, st: MutexGuard<'g, State>) -> MutexGuard<'g, State> {
        // Timed: an interrupt or a stop is noticed even if nothing changes.
        self.changed
            .wait_timeout(st, std::time::Duration::from_millis(200))
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0)
    }

    /// Stream ranges ahead of their readers, in plan order, while what is held stays within
    /// the budget; run on one or more threads beside the readers. Returns when every range
    /// has been started or [`Self::stop`] was called.
    pub fn fetch_ahead(&self) {
        loop {
            if self.stopped() {
                return;
            }
            let i = self.next_ahead.fetch_add(1, Ordering::Relaxed);
            if i >= self.ranges.len() {
                return;
            }
            {
                let mut st = self.lock();
                while st.held > AHEAD_BUDGET && st.stage[i] == Stage::Waiting && !self.stopped() {
                    st = self.wait(st);
                }
                if st.stage[i] != Stage::Waiting {
                    continue;
                }
                st.stage[i] = Stage::Streaming;
            }
            self.stream(i, true);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || crate::interrupt::requested()
    }

    /// Let the fetch-ahead threads return (the readers are done or gave up).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.changed.notify_all();
    }

    /// Stream range `i` (its stage already set to streaming by the caller), publishing its
    /// blobs; `ahead`: on a fetch-ahead thread, which keeps to the budget.
    fn stream(&self, i: usize, ahead: bool) {
        let r = &self.ranges[i];
        let mut k = 0;
        let mut failures = 0;
        while k < r.members.len() {
            match self.stream_from(i, k, ahead) {
                Ok(()) => break,
                Err((at, e)) => {
                    if at > k {
                        failures = 0;
                    }
                    k = at;
                    failures += 1;
                    let again = failures < STREAM_ATTEMPTS
                        && !self.stopped()
                        && !matches!(e, Error::NotFound(_) | Error::Cache { .. });
                    if !again {
                        break;
                    }
                    self.counters.refetched.fetch_add(1, Ordering::Relaxed);
                    if matches!(e, Error::Corrupt { .. }) {
                        // Perhaps the header was damaged on the way: fetch it again too.
                        self.heads
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&r.pack.id);
                    }
                }
            }
        }
        let mut st = self.lock();
        st.stage[i] = Stage::Done;
        drop(st);
        self.changed.notify_all();
    }

    /// Stream range `i` from its `k`-th blob on. On failure, the blob it failed at.
    fn stream_from(
        &self,
        i: usize,
        k: usize,
        ahead: bool,
    ) -> std::result::Result<(), (usize, Error)> {
        let r = &self.ranges[i];
        let members = &r.members[k..];
        let first = members[0].offset / CHUNK;
        let mut at = k;
        let mut publish = |e: &BlobEntry, bytes: Vec<u8>| -> bool {
            let mut st = self.lock();
            if ahead {
                while st.held > AHEAD_BUDGET && e.offset > st.wanted[i] && !self.stopped() {
                    st = self.wait(st);
                }
            }
            if st.remaining.get(&e.id).copied().unwrap_or(0) > 0 {
                st.held += bytes.len() as u64;
                st.ready.insert(e.id, Arc::new(bytes));
            }
            at = k + members
                .iter()
                .position(|m| m.id == e.id)
                .map_or(0, |p| p + 1);
            drop(st);
            self.changed.notify_all();
            !self.stopped()
        };
        let wanted = |e: &BlobEntry| self.lock().remaining.get(&e.id).copied().unwrap_or(0) > 0;
        self.stream_blobs(&r.pack, first, r.end, members, &wanted, &mut publish)
            .map_err(|e| (at, e))
    }

    /// Download chunks `first..end` of `pack` and hand each blob of `members` (in pack order,
    /// all within those chunks) that is still `wanted` to `publish`, as it is decrypted;
    /// `publish` returns false to stop.
    fn stream_blobs(
        &self,
        pack: &PackInfo,
        first: u64,
        end: u64,
        members: &[BlobEntry],
        wanted: &dyn Fn(&BlobEntry) -> bool,
        publish: &mut dyn FnMut(&BlobEntry, Vec<u8>) -> bool,
    ) -> Result<()> {
        let what = format!("pack {}", pack.id.short());
        let name = pack.id.to_hex();
        let head_len = u64::from(pack.payload_offset);
        let (start, len) = stored_span(pack, first, end);
        if head_len == 0 || len == 0 || head_len > start {
            return Err(Error::corrupt(&what, "index entry out of range"));
        }
        let store = self.repo.store();
        // Held while the header is fetched: the ranges of one pack are often streamed at once,
        // and its header is fetched once.
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        let (head, from) = match heads.get(&pack.id).cloned() {
            Some(h) => (Some(h), start),
            // From the first chunk: the header comes in the same request.
            None if start == head_len => (None, 0),
            None => {
                let h = store.get_range(FileType::Pack, &name, 0, head_len)?;
                self.count(1, h.len() as u64);
                if h.len() as u64 != head_len {
                    return Err(Error::corrupt(&what, "shorter than recorded"));
                }
                let h = Arc::new(h);
                heads.insert(pack.id, h.clone());
                (Some(h), start)
            }
        };
        drop(heads);
        let chunks = store.get_range_stream(FileType::Pack, &name, from, start + len - from)?;
        self.count(1, 0);
        let mut src = Source {
            head,
            head_len,
            chunks,
            at: from,
            pos: 0,
            end: start + len,
            plan: self,
        };
        let mut s = self.repo.keys().data_identity()?.open(&mut src, &what)?;
        let io = |e: io::Error| crypto::read_error(&what, e);
        // Where age's plaintext position is.
        let mut cur = 0u64;
        if first == 0 {
            // The pack's own header is at hand: check it is a pack of this repository.
            let mut hdr = [0u8; format::HEADER_LEN];
            s.read_exact(&mut hdr).map_err(io)?;
            cur = format::HEADER_LEN as u64;
            format::read_header(
                &mut Reader::new(&hdr, "pack"),
                Some(&self.repo.keys().repo_id),
                ObjectKind::Pack,
            )
            .map_err(|e| super::relabel(e, &what))?;
        }
        for e in members {
            if !wanted(e) {
                continue;
            }
            if e.offset != cur {
                if e.offset % CHUNK == 0 && e.offset / CHUNK != cur / CHUNK {
                    // Into the chunk and back: a seek onto a chunk boundary makes age
                    // authenticate the object's length by its last chunk, not fetched here.
                    s.seek(SeekFrom::Start(e.offset + 1)).map_err(io)?;
                }
                s.seek(SeekFrom::Start(e.offset)).map_err(io)?;
            }
            let mut bytes = self
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .unwrap_or_default();
            // A reused buffer keeps its length: only what it grows by is zeroed.
            bytes.resize(e.stored_len as usize, 0);
            s.read_exact(&mut bytes).map_err(io)?;
            cur = e.offset + u64::from(e.stored_len);
            if !publish(e, bytes) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// One planned read of `id` is done (made, or not to be made).
    fn used(&self, st: &mut State, id: &Id) {
        let Some(n) = st.remaining.get_mut(id) else {
            return;
        };
        *n = n.saturating_sub(1);
        if *n == 0 {
            st.remaining.remove(id);
            if let Some(b) = st.ready.remove(id) {
                st.held -= (b.len() as u64).min(st.held);
            }
        }
    }

    /// Reads planned for these blobs will not be made (their file failed or was skipped):
    /// what only they needed is let go, or not fetched.
    pub fn forgo(&self, ids: &[Id]) {
        let mut st = self.lock();
        for id in ids {
            self.used(&mut st, id);
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Read, decompress and verify data blob `id` into `out`. A blob outside the plan, or whose
    /// planned read failed or does not verify, is read the unplanned way
    /// ([`Repository::read_blob_into`]: every recorded location, errors that say what failed).
    pub fn read_blob_into(
        &self,
        id: &Id,
        readers: &mut PackReaders,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some((i, entry)) = self.blobs.get(id) {
            if let Some(stored) = self.take(*i, id, entry.offset) {
                let decoded = self.decode(entry, &stored, out);
                if let Some(b) = Arc::into_inner(stored) {
                    let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
                    if pool.len() < POOLED {
                        pool.push(b);
                    }
                }
                if decoded.is_ok() {
                    return Ok(());
                }
            } else if self.read_alone(entry, out).is_ok() {
                return Ok(());
            }
        }
        self.repo.read_blob_into(id, BlobType::Data, readers, out)
    }

    /// The stored bytes of planned blob `id` of range `i`, waiting for them or streaming the
    /// range here; `None` when the plan has no more reads of it or its range failed.
    fn take(&self, i: usize, id: &Id, offset: u64) -> Option<Arc<Vec<u8>>> {
        let mut st = self.lock();
        if !st.remaining.contains_key(id) {
            return None;
        }
        loop {
            if let Some(b) = st.ready.get(id).cloned() {
                self.used(&mut st, id);
                drop(st);
                self.changed.notify_all();
                return Some(b);
            }
            match st.stage[i] {
                Stage::Waiting => {
                    st.stage[i] = Stage::Streaming;
                    st.wanted[i] = st.wanted[i].max(offset);
                    drop(st);
                    self.stream(i, false);
                    st = self.lock();
                }
                Stage::Streaming => {
                    if st.wanted[i] < offset {
                        st.wanted[i] = offset;
                        self.changed.notify_all();
                    }
                    st = self.wait(st);
                    if crate::interrupt::requested() {
                        return None;
                    }
                }
                Stage::Done => {
                    self.used(&mut st, id);
                    return None;
                }
            }
        }
    }

    /// Read one blob by itself: only the chunks that hold it.
    fn read_alone(&self, entry: &BlobEntry, out: &mut Vec<u8>) -> Result<()> {
        let Some((i, _)) = self.blobs.get(&entry.id) else {
            return Err(Error::NotFound(format!("blob {}", entry.id.short())));
        };
        let pack = &self.ranges[*i].pack;
        self.counters.extra.fetch_add(1, Ordering::Relaxed);
        let first = entry.offset / CHUNK;
        let end = (entry.offset + u64::from(entry.stored_len))
            .div_ceil(CHUNK)
            .max(first + 1);
        let mut got = None;
        self.stream_blobs(
            pack,
            first,
            end,
            std::slice::from_ref(entry),
            &|_| true,
            &mut |_, b| {
                got = Some(b);
                false
            },
        )?;
        let stored = got.ok_or_else(|| Error::NotFound(format!("blob {}", entry.id.short())))?;
        self.decode(entry, &stored, out)
    }

    fn decode(&self, entry: &BlobEntry, stored: &[u8], out: &mut Vec<u8>) -> Result<()> {
        match entry.compression {
            Compression::None => {
                out.clear();
                out.extend_from_slice(stored);
            }
            Compression::Zstd => self.repo.decompress_blob(entry, stored, out)?,
        }
        self.repo.check_blob(entry, out)
    }

    fn count(&self, requests: u64, bytes: u64) {
        self.counters
            .requests
            .fetch_add(requests, Ordering::Relaxed);
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The stored bytes of a pack that a range needs, as age reads them: its age header (with the
/// nonce), in memory or at the start of the stream, then the range's chunks as they stream in.
/// Reads elsewhere fail: the plan said they were not needed. Seeks only go forward (skipped
/// bytes are read and dropped).
struct Source<'p, 'r> {
    head: Option<Arc<Vec<u8>>>,
    head_len: u64,
    chunks: Chunks,
    /// The object offset of the next byte the stream gives.
    at: u64,
    /// Where the reader is, as an object offset.
    pos: u64,
    /// The object offset the stream ends at.
    end: u64,
    plan: &'p PlanReader<'r>,
}

impl Source<'_, '_> {
    fn take(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let want = out.len().min(self.end.saturating_sub(self.at) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.chunks.read(&mut out[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the download ended early",
            ));
        }
        self.at += n as u64;
        self.plan.count(0, n as u64);
        Ok(n)
    }
}

impl Read for Source<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(h) = &self.head {
            if self.pos < self.head_len {
                let off = self.pos as usize;
                let n = out.len().min(h.len() - off);
                out[..n].copy_from_slice(&h[off..off + n]);
                self.pos += n as u64;
                return Ok(n);
            }
        }
        if self.pos < self.at {
            return Err(io::Error::other("read before the streamed range"));
        }
        let mut skip = [0u8; 8192];
        while self.pos > self.at {
            let k = ((self.pos - self.at) as usize).min(skip.len());
            self.take(&mut skip[..k])?;
        }
        let n = self.take(out)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Source<'_, '_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(_) => None,
        };
        self.pos = new.ok_or_else(|| io::Error::other("seek outside the planned range"))?;
        Ok(self.pos)
    }
}
