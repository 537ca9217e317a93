//! What long commands report as they go and when they are done: live counters for the progress
//! display, and the paths they passed over with the reason. Shared by backup, restore, check,
//! move and copy.

use std::sync::atomic::{AtomicBool, AtomicU64};

use serde::Serialize;

/// Live counters, read by the progress display.
#[derive(Default)]
pub struct Progress {
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
    pub scan_finished: AtomicBool,
}

/// A path that was not backed up, restored or moved, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}
