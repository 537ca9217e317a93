//! Cooperative cancellation: Ctrl-C (installed by the binary) sets a flag that long-running
//! stages poll, so they stop at a safe point and clean up their temporary files.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Ask every running operation to stop.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// True once a stop was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Clear a stop request (tests, and long-lived embedders that handled the interruption).
pub fn reset() {
    REQUESTED.store(false, Ordering::SeqCst);
}
