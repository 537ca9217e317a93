//! Low-speed timeouts for S3 requests: a request is abandoned (and retried) when no byte has
//! moved for the stall time, however long it has run, instead of after a fixed total that is
//! too short for a large part on a slow uplink and far too long for a dead connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;

use super::upload::Payload;

/// When bytes last moved for one request.
#[derive(Clone)]
pub(super) struct Watch(Arc<AtomicU64>);

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Watch {
    pub(super) fn new() -> Self {
        Watch(Arc::new(AtomicU64::new(now_ms())))
    }

    pub(super) fn touch(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.0.load(Ordering::Relaxed)))
    }

    /// Run `fut` while bytes keep moving: `None` once nothing has for `stall`.
    pub(super) async fn within<F: Future>(&self, stall: Duration, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            let idle = self.idle();
            if idle >= stall {
                return None;
            }
            tokio::select! {
                out = &mut fut => return Some(out),
                _ = tokio::time::sleep(stall - idle) => {}
            }
        }
    }
}

/// An upload body that tells its [`Watch`] each time the connection takes more of it: the
/// HTTP client asks for the next piece only once the last one is on its way.
pub(super) struct ProgressBody {
    data: Payload,
    pos: u64,
    watch: Watch,
}

/// Bytes handed to the connection at a time.
const PIECE: usize = 64 * 1024;

impl ProgressBody {
    pub(super) fn new(data: Payload, watch: Watch) -> Self {
        ProgressBody {
            data,
            pos: 0,
            watch,
        }
    }
}

impl http_body::Body for ProgressBody {
    type Data = Bytes;
    // A spool file that cannot be read fails the attempt like a broken connection.
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.pos >= self.data.len() {
            return Poll::Ready(None);
        }
        // A spooled piece is read from the page cache on the runtime's thread: 64 KiB of it
        // takes microseconds, less than handing it to a blocking thread would.
        let piece = match self.data.piece(self.pos, PIECE) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => return Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into()))),
            Err(e) => return Poll::Ready(Some(Err(e))),
        };
        self.pos += piece.len() as u64;
        self.watch.touch();
        Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.len() - self.pos)
    }
}

/// An S3 body of `data` whose progress `watch` follows; rebuilt from the start for a retry.
pub(super) fn body(data: Payload, watch: &Watch) -> aws_sdk_s3::primitives::ByteStream {
    let watch = watch.clone();
    aws_sdk_s3::primitives::ByteStream::new(aws_smithy_types::body::SdkBody::retryable(move || {
        aws_smithy_types::body::SdkBody::from_body_1_x(ProgressBody::new(
            data.clone(),
            watch.clone(),
        ))
    }))
}

type HttpResponse = aws_sdk_s3::config::http::HttpResponse;
type SdkResult<T, E> = Result<T, aws_sdk_s3::error::SdkError<E, HttpResponse>>;

/// `.stall(d)` on a request without a body: abandoned as timed out when no answer has come for
/// `d` (a body being downloaded is watched chunk by chunk by its reader).
pub(super) trait Stall<T, E>: Future<Output = SdkResult<T, E>> + Send + Sized {
    fn stall(self, d: Duration) -> impl Future<Output = SdkResult<T, E>> + Send
    where
        T: Send,
        E: Send,
    {
        async move {
            match Watch::new().within(d, self).await {
                Some(r) => r,
                None => Err(timed_out(d)),
            }
        }
    }
}

/// The error of a request abandoned after `d` without progress.
pub(super) fn timed_out<E>(d: Duration) -> aws_sdk_s3::error::SdkError<E, HttpResponse> {
    aws_sdk_s3::error::SdkError::timeout_error(format!("no bytes moved for {} s", d.as_secs()))
}

impl<T, E, F: Future<Output = SdkResult<T, E>> + Send> Stall<T, E> for F {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_abandoned_only_when_nothing_moves_for_the_stall_time() {
        let stall = Duration::from_millis(300);
        let w = Watch::new();
        // Slow but moving: 10 steps of 100 ms, 1 s in all, with a stall time of 300 ms.
        let moving = async {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                w.touch();
            }
            7
        };
        assert_eq!(w.within(stall, moving).await, Some(7));
        let w = Watch::new();
        let silent = tokio::time::sleep(Duration::from_secs(3600));
        let t = std::time::Instant::now();
        assert_eq!(w.within(stall, silent).await, None);
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
