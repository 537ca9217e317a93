//! Files gathered into batches, each read through one download plan (§12.3): the blobs of a
//! batch are known before any is fetched, so each pack range is downloaded once.

use super::*;
use crate::repo::PlanReader;

/// A batch closes at this many files or bytes of content, or when the walk ends: large enough
/// that ranges merge across neighbouring files and that copies of a file are found together
/// (a blob is fetched once per batch that needs it: with 1 GiB batches the corpus of
/// docs/benchmarks.md fetched 80 MB of its duplicates twice), small enough that its plan stays
/// a few MiB (8 GiB of 1 MiB blobs is 8,192 entries).
pub(super) const BATCH_FILES: usize = 4096;
const BATCH_BYTES: u64 = 8 << 30;

/// The plan as the files of its batch hold it: when the last of them is done, the threads
/// fetching ahead for it stop, whatever was left unread.
pub(super) struct BatchPlan<'a>(pub(super) Arc<PlanReader<'a>>);

impl Drop for BatchPlan<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A file to restore, with the plan that fetches its blobs (none: it is read blob by blob).
pub(super) type Planned<'a> = (FileJob, Option<Arc<BatchPlan<'a>>>);

/// The jobs with files that share content (a photo in two albums, a copy with edited EXIF that
/// shares all but its first chunk) moved next to the first file they share a blob with: shared
/// blobs are then fetched once and taken by each file in turn, instead of being held, or
/// fetched again, in between.
fn copies_together(jobs: Vec<FileJob>) -> Vec<FileJob> {
    let mut group_of: HashMap<Id, usize> = HashMap::new();
    let mut groups: Vec<Vec<FileJob>> = Vec::with_capacity(jobs.len());
    for j in jobs {
        let blobs = match &j.node.kind {
            NodeKind::File { blobs, .. } => blobs.as_slice(),
            _ => &[],
        };
        let g = match blobs.iter().find_map(|b| group_of.get(b).copied()) {
            Some(g) => g,
            None => {
                groups.push(Vec::new());
                groups.len() - 1
            }
        };
        for b in blobs {
            group_of.entry(*b).or_insert(g);
        }
        groups[g].push(j);
    }
    groups.into_iter().flatten().collect()
}

pub(super) struct Batcher<'c, 'a> {
    pub(super) ctx: &'c Ctx<'a>,
    pub(super) jobs: &'c crossbeam_channel::Sender<Planned<'a>>,
    /// Plans for the fetch-ahead threads (one message per thread).
    pub(super) ahead: &'c crossbeam_channel::Sender<Arc<PlanReader<'a>>>,
    pub(super) ahead_threads: usize,
    /// The workers that restore the files, each taking the next file when done.
    pub(super) readers: usize,
    pub(super) pending: Vec<FileJob>,
    pub(super) bytes: u64,
}

impl<'a> Batcher<'_, 'a> {
    pub(super) fn push(&mut self, job: FileJob) -> Result<()> {
        self.bytes += job.node.size;
        self.pending.push(job);
        if self.pending.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Plan the pending files and hand them to the workers.
    pub(super) fn flush(&mut self) -> Result<()> {
        let jobs = std::mem::take(&mut self.pending);
        self.bytes = 0;
        if jobs.is_empty() {
            return Ok(());
        }
        let jobs = copies_together(jobs);
        // A file with something at its name is most likely there already (a re-run after an
        // interruption): it is compared, not downloaded, so its blobs are left out of the plan.
        let free: Vec<bool> = jobs
            .iter()
            .map(|j| j.dir.symlink_metadata(OsStr::from_bytes(&j.name)).is_err())
            .collect();
        let uses = jobs
            .iter()
            .zip(&free)
            .filter(|(_, f)| **f)
            .map(|(j, _)| match &j.node.kind {
                NodeKind::File { blobs, .. } => blobs.iter().copied(),
                _ => [].iter().copied(),
            });
        // Without a plan (the local index failed) every file is read blob by blob, which
        // reports the failure where it matters.
        let plan = PlanReader::new(self.ctx.repo, uses, self.readers)
            .ok()
            .map(|p| Arc::new(p.counting_into(self.ctx.planned.clone())));
        if let Some(p) = &plan {
            if p.range_count() > 0 {
                for _ in 0..self.ahead_threads {
                    self.ahead.send(p.clone()).map_err(|_| Error::Interrupted)?;
                }
            }
        }
        let held = plan.map(|p| Arc::new(BatchPlan(p)));
        for (job, free) in jobs.into_iter().zip(free) {
            let plan = held.clone().filter(|_| free);
            self.jobs
                .send((job, plan))
                .map_err(|_| Error::Interrupted)?;
        }
        Ok(())
    }
}
