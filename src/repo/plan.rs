//! Planned reads (§12.3): a set of data blobs known in advance is fetched as few pack ranges,
//! each downloaded once, ahead of its use and within a memory budget, then handed out blob by
//! blob, verified. Restore, move's read-back and copy read through it.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{PackReaders, Repository};
use crate::backend::FileType;
use crate::crypto;
use crate::error::{Error, Result};
use crate::format::index::PackInfo;
use crate::format::{self, codec::Reader, BlobEntry, BlobType, Compression, ObjectKind};
use crate::ids::Id;

/// Plaintext bytes per age STREAM chunk, and the bytes each takes stored (with its tag).
const CHUNK: u64 = 64 * 1024;
const STORED_CHUNK: u64 = CHUNK + 16;

/// Two needed stretches of a pack whose chunks are at most this many apart are fetched as one
/// range: the bytes between cost less than another request (§12.3 gives the measurement).
pub const MERGE_GAP_CHUNKS: u64 = 0;

/// Largest range fetched in one request, in chunks (4 MiB of plaintext): what one fetch holds
/// in memory.
pub const MAX_RANGE_CHUNKS: u64 = 64;

/// Blobs whose reads lie further apart than this (in bytes read between them) are not put in
/// one range: a range is held from its first read to its last, and a pack written by several
/// backup threads at once mixes blobs of files read far apart.
pub const LOCALITY: u64 = 32 << 20;

/// Bytes of ranges fetched ahead of their use that may be held at once. A range needed now is
/// fetched whatever is held, so a reader never waits on the budget.
pub const AHEAD_BUDGET: u64 = 16 << 20;

/// Range buffers kept for reuse.
const POOLED: usize = 4;

/// One range of one pack: whole STREAM chunks `first..end`.
struct PlannedRange {
    pack: PackInfo,
    first: u64,
    end: u64,
    /// Planned reads of its blobs not yet made: at zero its bytes are let go.
    uses: AtomicUsize,
}

impl PlannedRange {
    /// Where its chunks start in the stored object, and how many bytes they take there.
    fn stored_span(&self) -> (u64, u64) {
        let start = u64::from(self.pack.payload_offset) + self.first * STORED_CHUNK;
        let end = (u64::from(self.pack.payload_offset) + self.end * STORED_CHUNK)
            .min(self.pack.object_len);
        (start, end.saturating_sub(start))
    }

    /// Plaintext bytes it covers.
    fn plain_span(&self) -> (u64, u64) {
        let start = self.first * CHUNK;
        let end = (self.end * CHUNK).min(self.pack.plain_len);
        (start, end.saturating_sub(start))
    }
}

enum Slot {
    Fetching,
    Ready(Arc<Vec<u8>>),
    Failed,
}

#[derive(Default)]
struct State {
    slots: HashMap<usize, Slot>,
    /// Bytes of plaintext held by ready ranges.
    held: u64,
}

/// Figures a planned read reports: what it downloaded against what it delivered.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct PlanFigures {
    /// Requests made for ranges (age headers included) and the stored bytes they brought.
    pub requests: u64,
    pub bytes_fetched: u64,
    /// Ranges fetched a second time: their first download failed authentication.
    pub refetched: u64,
    /// Blobs fetched alone, read again long after their planned reads.
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
    /// Range buffers let go, for the next fetches: memory stays what is in use at once.
    pool: Mutex<Vec<Vec<u8>>>,
    stop: std::sync::atomic::AtomicBool,
}

impl<'r> PlanReader<'r> {
    /// Plan the reads of `uses`, data blobs in the order they will be read (a blob read twice
    /// appears twice). Blobs the local index does not know, or knows only in tree packs, are
    /// left out: reading them takes the unplanned path, which reports why.
    pub fn new(repo: &'r Repository, uses: impl IntoIterator<Item = Id>) -> Result<Self> {
        let cache = repo.cache()?;
        let mut blobs: HashMap<Id, (usize, BlobEntry)> = HashMap::new();
        // Per pack, its needed blobs: (first use, entry).
        let mut by_pack: HashMap<Id, (PackInfo, Vec<(u64, BlobEntry)>)> = HashMap::new();
        let mut counts: HashMap<Id, usize> = HashMap::new();
        // Where each read falls in the run, in bytes read before it: ranges hold blobs read
        // close together, so each is let go soon after it is fetched.
        let mut pos: u64 = 0;
        let mut first_pos: HashMap<Id, u64> = HashMap::new();
        for id in uses {
            if let Some(&p) = first_pos.get(&id) {
                // Read again much later: that read fetches it again rather than holding its
                // range all the while.
                if pos - p <= LOCALITY {
                    if let Some(n) = counts.get_mut(&id) {
                        *n += 1;
                    }
                }
                continue;
            }
            let Some((pack, entry)) = cache.blob(&id)?.into_iter().next() else {
                first_pos.insert(id, pos);
                continue;
            };
            first_pos.insert(id, pos);
            let at = pos;
            pos += u64::from(entry.raw_len);
            let in_range = entry
                .offset
                .checked_add(u64::from(entry.stored_len))
                .is_some_and(|end| end <= pack.plain_len);
            if pack.pack_type != BlobType::Data || entry.blob_type != BlobType::Data || !in_range {
                continue;
            }
            counts.insert(id, 1);
            by_pack
                .entry(pack.id)
                .or_insert_with(|| (pack, Vec::new()))
                .1
                .push((at, entry));
        }
        // Ranges per pack: needed chunks merged across small gaps, bounded in size and in how
        // far apart their blobs are read; then all ranges in the order of their first read,
        // which is the order they are fetched ahead.
        let mut ranges: Vec<(u64, PlannedRange, Vec<BlobEntry>)> = Vec::new();
        for (_, (pack, mut list)) in by_pack {
            list.sort_by_key(|(_, e)| e.offset);
            // (first read, last read, range, members)
            let mut cur: Option<(u64, u64, PlannedRange, Vec<BlobEntry>)> = None;
            for (at, e) in list {
                let first = e.offset / CHUNK;
                let end = (e.offset + u64::from(e.stored_len))
                    .div_ceil(CHUNK)
                    .max(first + 1);
                match &mut cur {
                    Some((lo, hi, r, members))
                        if first <= r.end + MERGE_GAP_CHUNKS
                            && end.max(r.end) - r.first <= MAX_RANGE_CHUNKS
                            && (*hi).max(at) - (*lo).min(at) <= LOCALITY =>
                    {
                        *lo = (*lo).min(at);
                        *hi = (*hi).max(at);
                        r.end = r.end.max(end);
                        members.push(e);
                    }
                    _ => {
                        ranges.extend(cur.take().map(|(lo, _, r, m)| (lo, r, m)));
                        cur = Some((
                            at,
                            at,
                            PlannedRange {
                                pack: pack.clone(),
                                first,
                                end,
                                uses: AtomicUsize::new(0),
                            },
                            vec![e],
                        ));
                    }
                }
            }
            ranges.extend(cur.map(|(lo, _, r, m)| (lo, r, m)));
        }
        ranges.sort_by_key(|(order, _, _)| *order);
        let mut out = Vec::with_capacity(ranges.len());
        for (i, (_, r, members)) in ranges.into_iter().enumerate() {
            let mut uses = 0;
            for e in members {
                uses += counts.get(&e.id).copied().unwrap_or(1);
                blobs.insert(e.id, (i, e));
            }
            r.uses.store(uses, Ordering::Relaxed);
            out.push(r);
        }
        Ok(PlanReader {
            repo,
            ranges: out,
            blobs,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            next_ahead: AtomicUsize::new(0),
            heads: Mutex::new(HashMap::new()),
            counters: Default::default(),
            pool: Mutex::new(Vec::new()),
            stop: Default::default(),
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

    /// Ranges the plan holds.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetch ranges ahead of their use, in plan order, while what is held stays within the
    /// budget; run on one or more threads beside the readers. Returns when every range has been
    /// started or [`Self::stop`] was called.
    pub fn fetch_ahead(&self) {
        loop {
            if self.stop.load(Ordering::Relaxed) || crate::interrupt::requested() {
                return;
            }
            let i = self.next_ahead.fetch_add(1, Ordering::Relaxed);
            let Some(r) = self.ranges.get(i) else { return };
            let need = r.plain_span().1;
            {
                let mut st = self.lock();
                // Something held is always let go eventually (its readers are ahead of us in
                // the queue); with nothing held, go on whatever the size.
                while st.held > 0
                    && st.held + need > AHEAD_BUDGET
                    && !self.stop.load(Ordering::Relaxed)
                {
                    st = self
                        .changed
                        .wait_timeout(st, std::time::Duration::from_millis(200))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                if st.slots.contains_key(&i) || r.uses.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                st.slots.insert(i, Slot::Fetching);
            }
            self.fetch_into_slot(i);
        }
    }

    /// Let the fetch-ahead threads return (the readers are done or gave up).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.changed.notify_all();
    }

    fn fetch_into_slot(&self, i: usize) {
        let r = &self.ranges[i];
        let got = self.fetch_range(r);
        let mut st = self.lock();
        match got {
            Ok(plain) => {
                if r.uses.load(Ordering::Relaxed) == 0 {
                    st.slots.remove(&i);
                } else {
                    st.held += plain.len() as u64;
                    st.slots.insert(i, Slot::Ready(Arc::new(plain)));
                }
            }
            Err(_) => {
                // Its blobs are read the unplanned way, which says what is wrong.
                st.slots.insert(i, Slot::Failed);
            }
        }
        drop(st);
        self.changed.notify_all();
    }

    /// The plaintext of range `i`, fetched now if no one has; `None` if it cannot be fetched.
    fn range_bytes(&self, i: usize) -> Option<Arc<Vec<u8>>> {
        let mut st = self.lock();
        loop {
            match st.slots.get(&i) {
                Some(Slot::Ready(b)) => return Some(b.clone()),
                Some(Slot::Failed) => return None,
                Some(Slot::Fetching) => {
                    st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                None => {
                    if self.ranges[i].uses.load(Ordering::Relaxed) == 0 {
                        // Its bytes were let go meanwhile: read unplanned.
                        return None;
                    }
                    st.slots.insert(i, Slot::Fetching);
                    drop(st);
                    self.fetch_into_slot(i);
                    st = self.lock();
                }
            }
        }
    }

    /// One planned read of range `i` is done (made, or not to be made).
    fn used(&self, i: usize) {
        let r = &self.ranges[i];
        let left = r
            .uses
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .map(|n| n - 1)
            .unwrap_or(0);
        if left == 0 {
            let mut st = self.lock();
            let mut freed = None;
            if let Some(Slot::Ready(b)) = st.slots.get(&i) {
                let n = b.len() as u64;
                st.held -= n.min(st.held);
                if let Some(Slot::Ready(b)) = st.slots.remove(&i) {
                    freed = Arc::into_inner(b);
                }
            }
            drop(st);
            if let Some(b) = freed {
                self.give_buf(b);
            }
            self.changed.notify_all();
        }
    }

    /// Reads planned for these blobs will not be made (their file failed or was skipped):
    /// ranges only they needed are let go.
    pub fn forgo(&self, ids: &[Id]) {
        for id in ids {
            if let Some((i, _)) = self.blobs.get(id) {
                self.used(*i);
            }
        }
    }

    /// Read, decompress and verify data blob `id` into `out`. A blob outside the plan, or whose
    /// planned range could not be fetched or does not verify, is read the unplanned way
    /// ([`Repository::read_blob_into`]: every recorded location, errors that say what failed).
    pub fn read_blob_into(
        &self,
        id: &Id,
        readers: &mut PackReaders,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some((i, entry)) = self.blobs.get(id) {
            if self.ranges[*i].uses.load(Ordering::Acquire) == 0 {
                // Read again after its planned reads (the same photo in two albums far apart):
                // only the chunks that hold it are fetched, not its range again.
                let r = &self.ranges[*i];
                let alone = PlannedRange {
                    pack: r.pack.clone(),
                    first: entry.offset / CHUNK,
                    end: (entry.offset + u64::from(entry.stored_len))
                        .div_ceil(CHUNK)
                        .max(entry.offset / CHUNK + 1),
                    uses: AtomicUsize::new(0),
                };
                self.counters.extra.fetch_add(1, Ordering::Relaxed);
                let read = self
                    .fetch_range(&alone)
                    .and_then(|b| self.blob_from(&b, alone.first * CHUNK, entry, readers, out));
                if read.is_ok() {
                    return Ok(());
                }
                return self.repo.read_blob_into(id, BlobType::Data, readers, out);
            }
            let planned = self.range_bytes(*i).map(|bytes| {
                let base = self.ranges[*i].first * CHUNK;
                let r = self.blob_from(&bytes, base, entry, readers, out);
                drop(bytes);
                r
            });
            self.used(*i);
            if let Some(Ok(())) = planned {
                return Ok(());
            }
        }
        self.repo.read_blob_into(id, BlobType::Data, readers, out)
    }

    fn blob_from(
        &self,
        plain: &[u8],
        base: u64,
        entry: &BlobEntry,
        readers: &mut PackReaders,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let what = || format!("blob {}", entry.id.short());
        let start = entry
            .offset
            .checked_sub(base)
            .ok_or_else(|| Error::corrupt(what(), "outside its planned range"))?
            as usize;
        let stored = plain
            .get(start..start + entry.stored_len as usize)
            .ok_or_else(|| Error::corrupt(what(), "outside its planned range"))?;
        match entry.compression {
            Compression::None => {
                out.clear();
                out.extend_from_slice(stored);
            }
            Compression::Zstd => {
                let _ = readers;
                self.repo.decompress_blob(entry, stored, out)?
            }
        }
        self.repo.check_blob(entry, out)
    }

    /// Download and decrypt one range. A range that fails authentication is downloaded once
    /// more before it counts as damaged: bytes flipped on the way are not damage at rest.
    fn fetch_range(&self, r: &PlannedRange) -> Result<Vec<u8>> {
        match self.fetch_range_once(r) {
            Err(e) if is_authentication(&e) => {
                self.counters.refetched.fetch_add(1, Ordering::Relaxed);
                self.heads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&r.pack.id);
                self.fetch_range_once(r)
            }
            other => other,
        }
    }

    fn fetch_range_once(&self, r: &PlannedRange) -> Result<Vec<u8>> {
        let what = format!("pack {}", r.pack.id.short());
        let name = r.pack.id.to_hex();
        let head_len = u64::from(r.pack.payload_offset);
        let (start, len) = r.stored_span();
        if head_len == 0 || len == 0 || head_len > start {
            return Err(Error::corrupt(&what, "index entry out of range"));
        }
        let store = self.repo.store();
        let known = self
            .heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r.pack.id)
            .cloned();
        let mut body = self.take_buf();
        let head = match known {
            Some(h) => {
                store.get_range_into(FileType::Pack, &name, start, len, &mut body)?;
                self.count(body.len() as u64);
                h
            }
            // From the first chunk: the header comes in the same request.
            None if start == head_len => {
                store.get_range_into(FileType::Pack, &name, 0, start + len, &mut body)?;
                self.count(body.len() as u64);
                let head = body.get(..head_len as usize).map(<[u8]>::to_vec);
                body.drain(..(start as usize).min(body.len()));
                Arc::new(head.ok_or_else(|| Error::corrupt(&what, "shorter than recorded"))?)
            }
            None => {
                let h = store.get_range(FileType::Pack, &name, 0, head_len)?;
                self.count(h.len() as u64);
                store.get_range_into(FileType::Pack, &name, start, len, &mut body)?;
                self.count(body.len() as u64);
                Arc::new(h)
            }
        };
        let plain = self.decrypt_range(r, head, start, &body, &what);
        self.give_buf(body);
        plain
    }

    fn decrypt_range(
        &self,
        r: &PlannedRange,
        head: Arc<Vec<u8>>,
        body_start: u64,
        body: &[u8],
        what: &str,
    ) -> Result<Vec<u8>> {
        let what = what.to_string();
        let (_, len) = r.stored_span();
        let head_len = u64::from(r.pack.payload_offset);
        if body.len() as u64 != len || head.len() as u64 != head_len {
            return Err(Error::corrupt(&what, "shorter than recorded"));
        }
        self.heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r.pack.id, head.clone());
        let src = Spans {
            head: &head,
            body_start,
            body,
            len: r.pack.object_len,
            pos: 0,
        };
        let mut s = self.repo.keys().data_identity()?.open(src, &what)?;
        let (plain_start, plain_len) = r.plain_span();
        let io = |e: io::Error| crypto::read_error(&what, e);
        if plain_start > 0 {
            // Into the range's first chunk, then back to its start: a seek to a chunk boundary
            // would make age authenticate the object's length by reading its last chunk, which
            // is not among the bytes fetched.
            s.seek(SeekFrom::Start(plain_start + 1)).map_err(io)?;
            s.seek(SeekFrom::Start(plain_start)).map_err(io)?;
        }
        let mut plain = self.take_buf();
        plain.resize(plain_len as usize, 0);
        if let Err(e) = s.read_exact(&mut plain) {
            self.give_buf(plain);
            return Err(io(e));
        }
        if plain_start == 0 {
            // The pack's own header is at hand: check it is a pack of this repository.
            let hdr = plain
                .get(..format::HEADER_LEN)
                .ok_or_else(|| Error::corrupt(&what, "too short for a pack"))?;
            format::read_header(
                &mut Reader::new(hdr, "pack"),
                Some(&self.repo.keys().repo_id),
                ObjectKind::Pack,
            )
            .map_err(|e| super::relabel(e, &what))?;
        }
        Ok(plain)
    }

    fn take_buf(&self) -> Vec<u8> {
        self.pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Buffers keep their length: resizing one to a range of about the same size then zeroes
    /// only what it grows by.
    fn give_buf(&self, b: Vec<u8>) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOLED {
            pool.push(b);
        }
    }

    fn count(&self, bytes: u64) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A decryption failure, as opposed to a missing object or a failed request.
fn is_authentication(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. })
}

/// The stored bytes of a pack that a range needs: its age header (with the nonce) and the
/// range's chunks. Reads elsewhere fail: the plan said they were not needed.
struct Spans<'b> {
    head: &'b [u8],
    body_start: u64,
    body: &'b [u8],
    len: u64,
    pos: u64,
}

impl Read for Spans<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let (base, bytes): (u64, &[u8]) = if self.pos < self.head.len() as u64 {
            (0, self.head)
        } else if self.pos >= self.body_start {
            (self.body_start, self.body)
        } else {
            return Err(io::Error::other("read outside the planned range"));
        };
        let off = (self.pos - base) as usize;
        if off >= bytes.len() {
            if self.pos >= self.len {
                return Ok(0);
            }
            return Err(io::Error::other("read outside the planned range"));
        }
        let n = out.len().min(bytes.len() - off);
        out[..n].copy_from_slice(&bytes[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Spans<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::other("seek out of range"))?;
        Ok(self.pos)
    }
}
