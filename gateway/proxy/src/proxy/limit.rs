//! The downstream request body on its way upstream: counted, and cut off past the route's
//! `max_body_size`.
//!
//! The body streams; nothing is buffered. A body that grows past the limit ends with an error
//! frame, which makes the upstream client abort the request.
//!
//! Whatever the upstream client then reports, the try asks [`BodyStats::downstream_error`]
//! first: a body that broke, grew too large, or was being waited for when the deadline passed
//! is the client's failure (400, 413, 408), never the endpoint's, so it feeds neither outlier
//! detection nor the breakers.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::error::ProxyError;
use crate::body::BoxError;

/// What the request body did, shared between the body (owned by the upstream client) and the
/// request record (built when the response ends).
#[derive(Debug, Default)]
pub(crate) struct BodyStats {
    bytes: AtomicU64,
    /// `READING`, `WAITING`, `BROKEN` or `TOO_LARGE`.
    state: AtomicU8,
    /// The route's `max_body_size`, for the 413's message.
    limit: Option<u64>,
}

/// The body is read (or not yet polled) and nothing went wrong.
const READING: u8 = 0;
/// The last poll of the downstream body found no bytes: the gateway is waiting for the client.
const WAITING: u8 = 1;
/// The downstream body failed: bad framing, cut short, or the client went away.
const BROKEN: u8 = 2;
/// The body passed the route's `max_body_size`.
const TOO_LARGE: u8 = 3;

/// The request body grew past the route's limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {0} bytes")]
pub(crate) struct BodyTooLarge(pub(crate) u64);

pin_project! {
    /// A request body that counts its bytes and fails once it passes `limit`.
    #[derive(Debug)]
    pub(crate) struct LimitedBody<B> {
        #[pin]
        inner: B,
        stats: Arc<BodyStats>,
        limit: Option<u64>,
        seen: u64,
    }
}

// === impl BodyStats ===

impl BodyStats {
    /// Stats for a body limited to `limit` bytes (`None`: only counted).
    pub(crate) fn new(limit: Option<u64>) -> Self {
        BodyStats {
            limit,
            ..BodyStats::default()
        }
    }

    /// Request body bytes received so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The client's failure, if the body failed on its side: broken (400) or too large (413).
    /// `timed_out` says the try's deadline passed: then a gateway left waiting for the client's
    /// next bytes is a slow upload (408).
    pub(crate) fn downstream_error(&self, timed_out: bool) -> Option<ProxyError> {
        match self.state.load(Ordering::Relaxed) {
            BROKEN => Some(ProxyError::RequestBody),
            TOO_LARGE => Some(ProxyError::PayloadTooLarge {
                limit: self.limit.unwrap_or_default(),
            }),
            WAITING if timed_out => Some(ProxyError::RequestTimeout),
            _ => None,
        }
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Relaxed);
    }
}

// === impl LimitedBody ===

impl<B> LimitedBody<B> {
    /// Wraps `inner`, limited to the limit `stats` was made with.
    pub(crate) fn new(inner: B, stats: Arc<BodyStats>) -> Self {
        LimitedBody {
            inner,
            limit: stats.limit,
            stats,
            seen: 0,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    this.stats.bytes.store(*this.seen, Ordering::Relaxed);
                    if let Some(limit) = *this.limit
                        && *this.seen > limit
                    {
                        this.stats.set(TOO_LARGE);
                        return Poll::Ready(Some(Err(BodyTooLarge(limit).into())));
                    }
                }
                this.stats.set(READING);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.stats.set(BROKEN);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.stats.set(READING);
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.stats.set(WAITING);
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn chunks(sizes: &[usize]) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = sizes
            .iter()
            .map(|&n| Ok(Frame::data(Bytes::from(vec![b'x'; n]))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn counts_bytes_under_the_limit() {
        let stats = Arc::new(BodyStats::new(Some(7)));
        let body = LimitedBody::new(chunks(&[3, 4]), stats.clone());
        let collected = body.collect().await.expect("body").to_bytes();
        assert_eq!(collected.len(), 7);
        assert_eq!(stats.bytes(), 7);
        assert!(stats.downstream_error(true).is_none());
    }

    #[tokio::test]
    async fn fails_once_the_stream_passes_the_limit() {
        let stats = Arc::new(BodyStats::new(Some(7)));
        let body = LimitedBody::new(chunks(&[5, 5, 5]), stats.clone());
        let err = body.collect().await.expect_err("over the limit");
        assert!(err.is::<BodyTooLarge>());
        assert!(matches!(
            stats.downstream_error(false),
            Some(ProxyError::PayloadTooLarge { limit: 7 })
        ));
    }
}
