//! What long commands report as they go and when they are done: live counters for the progress
//! display, the stage a command is in, and the paths they passed over with the reason. Shared
//! by backup, restore, check, move and copy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// Live counters, read by the progress display.
#[derive(Default)]
pub struct Progress {
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    pub scan_finished: AtomicBool,
    /// Files a backup found unchanged since the last one: counted in the totals and in
    /// `files_done`, never read, and no part of the work that remains.
    pub unchanged_files: AtomicU64,
    pub unchanged_bytes: AtomicU64,
    /// The stage being run and the ones run before it, in order.
    stages: Mutex<Vec<String>>,
}

/// The work of the current stage, as a display shows it: unchanged files are not work, so a
/// rate and a time left computed from these mean something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressState {
    /// What is being done ("backing up to drive", "reading back from cloud", ...).
    pub stage: Option<String>,
    /// The totals are still growing (files are still being counted).
    pub counting: bool,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub unchanged_files: u64,
}

impl ProgressState {
    /// Bytes of work left (unknown while counting).
    pub fn bytes_left(&self) -> Option<u64> {
        (!self.counting).then(|| self.bytes_total.saturating_sub(self.bytes_done))
    }
}

impl Progress {
    /// Start a stage: it is named to the user, and its counters start again from zero (a move
    /// backs up, then reads back from each repository: each is its own stage, not one bar that
    /// goes backwards).
    pub fn begin(&self, stage: impl Into<String>) {
        for c in [
            &self.files_done,
            &self.bytes_done,
            &self.total_files,
            &self.total_bytes,
            &self.unchanged_files,
            &self.unchanged_bytes,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.scan_finished.store(false, Ordering::Relaxed);
        self.stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stage.into());
    }

    /// The stages begun so far, in order.
    pub fn stages(&self) -> Vec<String> {
        self.stages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current stage's work.
    pub fn state(&self) -> ProgressState {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let unchanged = get(&self.unchanged_files);
        ProgressState {
            stage: self
                .stages
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last()
                .cloned(),
            counting: !self.scan_finished.load(Ordering::Relaxed),
            files_done: get(&self.files_done).saturating_sub(unchanged),
            files_total: get(&self.total_files).saturating_sub(unchanged),
            bytes_done: get(&self.bytes_done),
            bytes_total: get(&self.total_bytes).saturating_sub(get(&self.unchanged_bytes)),
            unchanged_files: unchanged,
        }
    }
}

/// A path that was not backed up, restored or moved, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_files_are_not_work_and_stages_start_afresh() {
        let p = Progress::default();
        p.begin("backing up");
        p.total_files.store(10, Ordering::Relaxed);
        p.total_bytes.store(1000, Ordering::Relaxed);
        p.unchanged_files.store(8, Ordering::Relaxed);
        p.unchanged_bytes.store(900, Ordering::Relaxed);
        p.files_done.store(9, Ordering::Relaxed);
        p.bytes_done.store(40, Ordering::Relaxed);
        p.scan_finished.store(true, Ordering::Relaxed);
        let s = p.state();
        assert_eq!(s.stage.as_deref(), Some("backing up"));
        assert_eq!((s.files_done, s.files_total), (1, 2));
        assert_eq!((s.bytes_done, s.bytes_total), (40, 100));
        assert_eq!(s.bytes_left(), Some(60));
        p.begin("reading back from drive");
        let s = p.state();
        assert_eq!(s.stage.as_deref(), Some("reading back from drive"));
        assert_eq!((s.files_done, s.bytes_done, s.unchanged_files), (0, 0, 0));
        assert!(s.counting);
        assert_eq!(s.bytes_left(), None);
        assert_eq!(p.stages(), ["backing up", "reading back from drive"]);
    }
}
