//! A pause point for tests of concurrent and interrupted runs, in debug builds only: with
//! `VAULT_TEST_PAUSE_AT=N` and `VAULT_TEST_PAUSE_DIR=DIR`, the process stops before its N-th
//! storage request, creates `DIR/paused`, and goes on once `DIR/resume` exists. A test can then
//! run another command at that exact point, or kill the process there. Release builds have no
//! such point.

#[cfg(debug_assertions)]
pub fn before_request() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static AT: OnceLock<Option<(u64, std::path::PathBuf)>> = OnceLock::new();
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let Some((at, dir)) = AT.get_or_init(|| {
        let n = std::env::var("VAULT_TEST_PAUSE_AT").ok()?.parse().ok()?;
        Some((n, std::env::var_os("VAULT_TEST_PAUSE_DIR")?.into()))
    }) else {
        return;
    };
    if SEEN.fetch_add(1, Ordering::SeqCst) + 1 != *at {
        return;
    }
    let _ = std::fs::write(dir.join("paused"), b"");
    // A test hook waiting for a file the test creates: nothing to watch in a debug build.
    while !dir.join("resume").exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(not(debug_assertions))]
pub fn before_request() {}
