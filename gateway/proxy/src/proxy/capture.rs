//! Keeping a copy of a response body as it streams, for serve-stale.
//!
//! The response goes downstream unchanged and without delay; [`CaptureBody`] copies its bytes
//! on the way, up to a cap. Only a body that ends cleanly within the cap and without trailers
//! is handed to the completion, so a broken or truncated response never becomes the "last good
//! copy".

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A body that copies what passes through and calls `done` with the copy at a clean end.
    pub(crate) struct CaptureBody<B, F> {
        #[pin]
        inner: B,
        copy: BytesMut,
        cap: usize,
        // Cleared when the copy is given up (too long, trailers, an error).
        done: Option<F>,
    }
}

impl<B, F> CaptureBody<B, F>
where
    F: FnOnce(Bytes),
{
    /// Wraps `inner`; `done` gets the whole body if it ends cleanly within `cap` bytes.
    pub(crate) fn new(inner: B, cap: usize, done: F) -> Self {
        CaptureBody {
            inner,
            copy: BytesMut::new(),
            cap,
            done: Some(done),
        }
    }
}

impl<B, F> Body for CaptureBody<B, F>
where
    B: Body<Data = Bytes>,
    F: FnOnce(Bytes),
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) if this.done.is_some() => match frame.data_ref() {
                Some(data) if this.copy.len() + data.len() <= *this.cap => {
                    this.copy.extend_from_slice(data);
                    // hyper stops polling a body that says it has ended, so the end may never
                    // be seen as `None`.
                    if this.inner.is_end_stream()
                        && let Some(done) = this.done.take()
                    {
                        done(std::mem::take(this.copy).freeze());
                    }
                }
                _ => {
                    // Too long, or trailers: not a copy worth serving.
                    *this.done = None;
                    *this.copy = BytesMut::new();
                }
            },
            Poll::Ready(Some(Err(_))) => *this.done = None,
            Poll::Ready(None) => {
                if let Some(done) = this.done.take() {
                    done(std::mem::take(this.copy).freeze());
                }
            }
            _ => {}
        }
        polled
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
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::body::BoxError;
    use http_body_util::{BodyExt, StreamBody};

    type Seen = Arc<Mutex<Option<Bytes>>>;

    fn capture(
        frames: Vec<Result<Frame<Bytes>, BoxError>>,
        cap: usize,
    ) -> (impl Body<Data = Bytes, Error = BoxError>, Seen) {
        let seen: Seen = Arc::default();
        let sink = seen.clone();
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let body = CaptureBody::new(body, cap, move |b| {
            *sink.lock().expect("lock") = Some(b);
        });
        (body, seen)
    }

    fn data(s: &'static str) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    #[tokio::test]
    async fn a_clean_body_within_the_cap_is_copied_whole() {
        let (body, seen) = capture(vec![data("he"), data("llo")], 5);
        let out = body.collect().await.expect("body").to_bytes();
        assert_eq!(out, "hello");
        assert_eq!(seen.lock().expect("lock").as_deref(), Some(&b"hello"[..]));
    }

    #[tokio::test]
    async fn a_body_that_says_it_ended_is_kept_without_a_final_poll() {
        // hyper's server stops polling once `is_end_stream` is true, as here after one frame.
        let seen: Seen = Arc::default();
        let sink = seen.clone();
        let body = http_body_util::Full::new(Bytes::from_static(b"whole"));
        let mut body = std::pin::pin!(CaptureBody::new(body, 100, move |b| {
            *sink.lock().expect("lock") = Some(b);
        }));
        let frame = body.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), "whole");
        assert!(body.is_end_stream());
        assert_eq!(seen.lock().expect("lock").as_deref(), Some(&b"whole"[..]));
    }

    #[tokio::test]
    async fn a_long_body_passes_through_but_is_not_kept() {
        let (body, seen) = capture(vec![data("he"), data("llo")], 4);
        let out = body.collect().await.expect("body").to_bytes();
        assert_eq!(out, "hello");
        assert!(seen.lock().expect("lock").is_none());
    }

    #[tokio::test]
    async fn a_broken_body_is_not_kept() {
        let (body, seen) = capture(vec![data("he"), Err("reset".into())], 100);
        assert!(body.collect().await.is_err());
        assert!(seen.lock().expect("lock").is_none());
    }
}
