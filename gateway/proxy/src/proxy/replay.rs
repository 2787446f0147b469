//! The request body as the retry stage sees it: replayable when it is empty or small enough to
//! keep, streaming once otherwise.
//!
//! A retried request must be the same request, so its body has to be sent again byte for byte.
//! Bodies up to the route's `retry.max_buffered_body` are read whole before the first try (an
//! empty body costs nothing); a longer body, or one whose size is unknown and turns out too
//! long, streams to the first try only and makes the request not retryable. This is Envoy's
//! `per_request_buffer_limit_bytes` behaviour, with the decision made up front.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

use crate::body::{self, BoxError, ProxyBody};

/// A request body ready for one or more tries.
#[derive(Debug)]
pub(crate) enum ReplayBody {
    /// Read whole (or empty): every try sends the same bytes.
    Buffered(Bytes),
    /// Streams once; only the first try can send it.
    Streaming(Option<ProxyBody>),
}

/// Reading a request body for replay failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The body broke (the client went away, or it grew past the route's `max_body_size`).
    Body(BoxError),
}

// === impl ReplayBody ===

impl ReplayBody {
    /// Reads `body` whole when it is known to be empty or declares a size up to `cap`, or when
    /// it turns out to end within `cap`; else keeps it streaming, with what was read so far put
    /// back in front.
    pub(crate) async fn read(mut body: ProxyBody, cap: u64) -> Result<ReplayBody, ReadError> {
        if body.is_end_stream() {
            return Ok(ReplayBody::Buffered(Bytes::new()));
        }
        let hint = body.size_hint();
        if hint.lower() > cap {
            return Ok(ReplayBody::Streaming(Some(body)));
        }
        let mut buffered = BytesMut::new();
        loop {
            match body.frame().await {
                None => return Ok(ReplayBody::Buffered(buffered.freeze())),
                Some(Err(e)) => return Err(ReadError::Body(e)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        buffered.extend_from_slice(&data);
                        if buffered.len() as u64 > cap {
                            // Too long to keep: the first try gets what was read, then the rest.
                            let head = buffered.freeze();
                            return Ok(ReplayBody::Streaming(Some(prepend(head, body))));
                        }
                    }
                    // Trailers cannot be replayed faithfully by `Full`; stream them once.
                    Err(trailers) => {
                        let head = buffered.freeze();
                        let rest = futures_util::stream::iter([Ok::<_, BoxError>(
                            http_body::Frame::trailers(
                                trailers.into_trailers().unwrap_or_default(),
                            ),
                        )]);
                        let tail = http_body_util::StreamBody::new(rest).boxed();
                        return Ok(ReplayBody::Streaming(Some(prepend(head, tail))));
                    }
                },
            }
        }
    }

    /// Whether another try can send this body.
    pub(crate) fn can_replay(&self) -> bool {
        matches!(self, ReplayBody::Buffered(_))
    }

    /// The body for the next try: the buffered bytes again, or the stream the first time.
    /// `None` when a streaming body was already sent.
    pub(crate) fn take(&mut self) -> Option<ProxyBody> {
        match self {
            ReplayBody::Buffered(bytes) if bytes.is_empty() => Some(body::empty()),
            ReplayBody::Buffered(bytes) => Some(body::full(bytes.clone())),
            ReplayBody::Streaming(stream) => stream.take(),
        }
    }
}

/// `head` followed by the rest of `tail`.
fn prepend(head: Bytes, tail: ProxyBody) -> ProxyBody {
    let first = futures_util::stream::iter([Ok::<_, BoxError>(http_body::Frame::data(head))]);
    let tail = http_body_util::BodyStream::new(tail);
    http_body_util::StreamBody::new(futures_util::StreamExt::chain(first, tail)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;

    fn chunks(parts: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    async fn text(body: ProxyBody) -> String {
        let bytes = body.collect().await.expect("body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn an_empty_body_replays_for_free() {
        let mut body = ReplayBody::read(body::empty(), 0).await.expect("read");
        assert!(body.can_replay());
        assert_eq!(text(body.take().expect("first")).await, "");
        assert_eq!(text(body.take().expect("second")).await, "");
    }

    #[tokio::test]
    async fn a_short_body_is_kept_for_every_try() {
        let mut body = ReplayBody::read(chunks(&["ab", "cd"]), 4)
            .await
            .expect("read");
        assert!(body.can_replay());
        assert_eq!(text(body.take().expect("first")).await, "abcd");
        assert_eq!(text(body.take().expect("second")).await, "abcd");
    }

    #[tokio::test]
    async fn a_long_body_streams_once_without_losing_bytes() {
        let mut body = ReplayBody::read(chunks(&["ab", "cd", "ef"]), 3)
            .await
            .expect("read");
        assert!(!body.can_replay());
        assert_eq!(text(body.take().expect("first")).await, "abcdef");
        assert!(body.take().is_none());
    }

    #[tokio::test]
    async fn a_declared_long_body_is_not_read_at_all() {
        let mut body = ReplayBody::read(body::full("0123456789"), 4)
            .await
            .expect("read");
        assert!(!body.can_replay());
        assert_eq!(text(body.take().expect("first")).await, "0123456789");
    }
}
