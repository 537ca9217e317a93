//! Retrying transient failures (throttling, 5xx, timeouts, broken connections) with full-jitter
//! exponential backoff: a wrapper around any backend, and the same policy for backends that retry
//! parts of one call themselves (the parts of an S3 multipart upload).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::meter::Counters;
use super::{Backend, FileType, Listed, ObjectFile};
use crate::error::{Error, Result};
use crate::format::config::ObjectLock;

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (1: no retry).
    pub attempts: u32,
    /// Backoff of the first retry, doubled for each next one.
    pub base: Duration,
    /// Longest backoff.
    pub cap: Duration,
    /// How long one call goes on retrying once the storage has answered this run: a Wi-Fi
    /// handover or a router restarting is ridden out, not turned into a failed backup.
    pub window: Duration,
    /// The same before the storage has ever answered: a wrong address or a server that is not
    /// running is said within seconds, not after the whole window.
    pub first_window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: u32::MAX,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(30),
            window: DEFAULT_WINDOW,
            first_window: Duration::from_secs(20),
        }
    }
}

/// How long a run waits for the network by default (`--network-wait`); an unattended run
/// waits [`UNATTENDED_WINDOW`].
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
pub const UNATTENDED_WINDOW: Duration = Duration::from_secs(1800);

/// A retry about to wait, for a terminal to show ("waiting for the network").
pub struct Waiting<'a> {
    /// Retries of this call so far, this one included.
    pub retry: u32,
    pub next_in: Duration,
    pub reason: &'a str,
}

type Hook = Box<dyn Fn(&Waiting<'_>) + Send + Sync>;
static WAITING_HOOK: std::sync::OnceLock<Hook> = std::sync::OnceLock::new();

/// Have `f` told of every retry that waits a second or more (the CLI shows it on a terminal).
pub fn on_waiting(f: impl Fn(&Waiting<'_>) + Send + Sync + 'static) {
    let _ = WAITING_HOOK.set(Box::new(f));
}

/// Whether any call of this process has been answered by its storage.
static REACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl RetryPolicy {
    /// Full-jitter exponential backoff: random in [0, min(cap, base * 2^attempt)].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap_ms = self.cap.as_millis() as u64;
        let exp = (self.base.as_millis() as u64)
            .saturating_mul(1u64 << attempt.min(16))
            .min(cap_ms);
        Duration::from_millis(crate::random::random_below(exp as usize + 1) as u64)
    }

    /// Run `op` until it succeeds, fails for good, or the attempts or the window are spent;
    /// each retry is counted in `meter`. `transient` says which failures are worth another
    /// attempt.
    pub async fn run<T, E, F, Fut>(
        &self,
        meter: Option<&Counters>,
        transient: impl Fn(&E) -> bool,
        mut op: F,
    ) -> std::result::Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let mut attempt = 0;
        let started = std::time::Instant::now();
        loop {
            match op().await {
                Err(e) if transient(&e) && attempt + 1 < self.attempts => {
                    let window = if REACHED.load(std::sync::atomic::Ordering::Relaxed) {
                        self.window
                    } else {
                        self.first_window
                    };
                    let wait = self.backoff(attempt);
                    if started.elapsed() + wait > window {
                        return Err(e);
                    }
                    if let Some(m) = meter {
                        m.count(&m.retries);
                    }
                    if wait >= Duration::from_secs(1) {
                        if let Some(hook) = WAITING_HOOK.get() {
                            hook(&Waiting {
                                retry: attempt + 1,
                                next_in: wait,
                                reason: &e.to_string(),
                            });
                        }
                    }
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                r => {
                    if r.is_ok() {
                        REACHED.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    return r;
                }
            }
        }
    }
}

/// Retries the calls of its backend that fail transiently (`Error::is_transient`).
pub struct Retry {
    inner: Arc<dyn Backend>,
    policy: RetryPolicy,
    meter: Arc<Counters>,
}

impl Retry {
    pub fn new(inner: Arc<dyn Backend>, policy: RetryPolicy, meter: Arc<Counters>) -> Self {
        Retry {
            inner,
            policy,
            meter,
        }
    }

    async fn run<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.policy
            .run(Some(&self.meter), Error::is_transient, op)
            .await
    }
}

#[async_trait]
impl Backend for Retry {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn set_object_lock(&self, lock: Option<ObjectLock>) -> Result<()> {
        self.inner.set_object_lock(lock)
    }
    fn attach_meter(&self, meter: Arc<Counters>) {
        self.inner.attach_meter(meter)
    }
    fn max_read_window(&self) -> u64 {
        self.inner.max_read_window()
    }
    async fn create(&self) -> Result<()> {
        self.run(|| self.inner.create()).await
    }
    async fn put(&self, t: FileType, name: &str, data: Bytes) -> Result<()> {
        // `Bytes` clones share the buffer: a retried pack is not copied.
        self.run(|| self.inner.put(t, name, data.clone())).await
    }
    async fn get(&self, t: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
        self.run(|| self.inner.get(t, name, max)).await
    }
    async fn get_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run(|| self.inner.get_range(t, name, offset, len))
            .await
    }
    async fn get_range_into(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        // One buffer for every attempt: the policy's closure cannot lend it, so each attempt
        // takes it and gives it back.
        let cell = std::sync::Mutex::new(std::mem::take(buf));
        let r = self
            .run(|| async {
                let mut b = std::mem::take(&mut *cell.lock().unwrap_or_else(|p| p.into_inner()));
                let r = self
                    .inner
                    .get_range_into(t, name, offset, len, &mut b)
                    .await;
                *cell.lock().unwrap_or_else(|p| p.into_inner()) = b;
                r
            })
            .await;
        *buf = cell.into_inner().unwrap_or_else(|p| p.into_inner());
        r
    }
    async fn get_range_stream(
        &self,
        t: FileType,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<super::Chunks> {
        self.run(|| self.inner.get_range_stream(t, name, offset, len))
            .await
    }
    async fn list(&self, t: FileType) -> Result<Vec<Listed>> {
        self.run(|| self.inner.list(t)).await
    }
    fn spools(&self) -> bool {
        self.inner.spools()
    }
    async fn put_spooled(
        &self,
        t: FileType,
        name: &str,
        data: super::spool::Spooled,
    ) -> Result<()> {
        // Each attempt reads the same file again.
        self.run(|| self.inner.put_spooled(t, name, data.clone()))
            .await
    }
    fn object_file(
        &self,
        t: FileType,
        name: &str,
        size: u64,
    ) -> Result<Option<Box<dyn ObjectFile>>> {
        self.inner.object_file(t, name, size)
    }
    async fn stat(&self, t: FileType, name: &str) -> Result<Option<u64>> {
        self.run(|| self.inner.stat(t, name)).await
    }
    async fn delete(&self, t: FileType, name: &str) -> Result<()> {
        self.run(|| self.inner.delete(t, name)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for a in 0..40 {
            assert!(p.backoff(a) <= Duration::from_secs(30));
        }
    }
}
