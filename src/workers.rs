//! Sizing worker pools, and knowing while they run whether some of their workers idle.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Worker threads per CPU stage: `requested`, or one per core when it is 0.
pub fn worker_count(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// How many of a pool's workers are on a job. Backup and restore hand extra work to helper
/// threads only while some workers idle (one large file, the end of a run): with every worker busy
/// the cores are already in use, and more threads would only add copies and switches.
pub struct Pool {
    workers: usize,
    busy: AtomicUsize,
}

impl Pool {
    pub fn new(workers: usize) -> Self {
        Pool {
            workers,
            busy: AtomicUsize::new(0),
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs one job, counted as busy until it returns or unwinds.
    pub fn busy<T>(&self, job: impl FnOnce() -> T) -> T {
        struct Done<'a>(&'a AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.busy.fetch_add(1, Ordering::Relaxed);
        let _done = Done(&self.busy);
        job()
    }

    /// Whether fewer workers than the pool has are on a job right now (a hint, not a promise).
    pub fn some_idle(&self) -> bool {
        self.busy.load(Ordering::Relaxed) < self.workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_is_idle_until_every_worker_is_busy() {
        let pool = Pool::new(2);
        assert!(pool.some_idle());
        pool.busy(|| {
            assert!(pool.some_idle());
            pool.busy(|| assert!(!pool.some_idle()));
            assert!(pool.some_idle());
        });
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.busy(|| pool.busy(|| panic!("job failed")))
        }));
        assert!(unwound.is_err());
        assert!(pool.some_idle(), "a job that panicked is no longer counted");
        assert_eq!(pool.busy.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn worker_count_takes_the_request_or_the_cores() {
        assert_eq!(worker_count(3), 3);
        assert!(worker_count(0) >= 1);
    }
}
