//! The allocator, and the one option vault sets in it: the only unsafe code in the binary.
//!
//! Unsafe because mimalloc's options are set through its C interface (`mi_option_set`); the
//! call takes plain integers and is made once, first thing in `main`, before any other thread
//! exists (mimalloc documents it as not thread safe).
#![allow(unsafe_code)]

/// mimalloc instead of glibc malloc: with glibc, the multi-megabyte pack buffers that backup
/// threads allocate and free raise the dynamic mmap threshold, after which they come from
/// per-thread heaps that never shrink; peak memory then grows with the length of the run.
/// Built without transparent huge pages (Cargo.toml): on machines where THP is `madvise`, the
/// arenas mimalloc 3 advises for them are faulted in 2 MiB at a time, for buffers of 64 KiB
/// to 4 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mimalloc.h` (the -sys crate does not name it): how
/// many milliseconds freed memory stays committed before it is given back to the system.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc 2's purge delay. mimalloc 3 waits 1000 ms, and a restore from S3 turns over
/// download buffers at hundreds of MB a second, many freed on another thread than the one that
/// allocated them: a second of them held is 60 to 80 MB of peak memory that nothing uses
/// (docs/benchmarks.md, "Restore from S3": 202 → 141 MiB, backup unchanged).
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Set vault's allocator options, unless the user set them (`MIMALLOC_PURGE_DELAY`, read by
/// mimalloc itself at start). Call first thing in `main`, before any thread starts.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain integer arguments; no other thread exists yet (the caller's contract), so
    // the option table mimalloc writes is not read concurrently.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option number is the purge delay: its default is mimalloc 3's 1000 ms (as long as
    /// nothing set it), and setting it reads back. A mimalloc that renumbers its options fails
    /// here rather than having vault change some other option.
    #[test]
    fn purge_delay_is_the_option_it_names() {
        let before = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse::<std::ffi::c_long>().ok())
            .unwrap_or(1000);
        // SAFETY: reads an integer option.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) },
            before
        );
        // SAFETY: as in `tune`; the test harness's other threads do not set options.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
        // SAFETY: reads an integer option.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) },
            PURGE_DELAY_MS
        );
    }
}
