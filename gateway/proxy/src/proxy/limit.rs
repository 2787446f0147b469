//! The downstream request body on its way upstream: counted, and cut off past the route's
//! `max_body_size`.
//!
//! The body streams; nothing is buffered. A body that grows past the limit ends with an error
//! frame, which makes the upstream client abort the request; the pipeline then sees
//! [`BodyStats::too_large`] and answers 413 instead of reporting an upstream failure.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::BoxError;

/// What the request body did, shared between the body (owned by the upstream client) and the
/// request record (built when the response ends).
#[derive(Debug, Default)]
pub(crate) struct BodyStats {
    bytes: AtomicU64,
    too_large: AtomicBool,
}

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
    /// Request body bytes received so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the body was cut off for being over the limit.
    pub(crate) fn too_large(&self) -> bool {
        self.too_large.load(Ordering::Relaxed)
    }
}

// === impl LimitedBody ===

impl<B> LimitedBody<B> {
    /// Wraps `inner`; `limit` of `None` only counts.
    pub(crate) fn new(inner: B, stats: Arc<BodyStats>, limit: Option<u64>) -> Self {
        LimitedBody {
            inner,
            stats,
            limit,
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
                        this.stats.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(BodyTooLarge(limit).into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
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
        let stats = Arc::new(BodyStats::default());
        let body = LimitedBody::new(chunks(&[3, 4]), stats.clone(), Some(7));
        let collected = body.collect().await.expect("body").to_bytes();
        assert_eq!(collected.len(), 7);
        assert_eq!(stats.bytes(), 7);
        assert!(!stats.too_large());
    }

    #[tokio::test]
    async fn fails_once_the_stream_passes_the_limit() {
        let stats = Arc::new(BodyStats::default());
        let body = LimitedBody::new(chunks(&[5, 5, 5]), stats.clone(), Some(7));
        let err = body.collect().await.expect_err("over the limit");
        assert!(err.is::<BodyTooLarge>());
        assert!(stats.too_large());
    }
}
