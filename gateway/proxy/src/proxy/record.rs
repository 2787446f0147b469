//! The request record: built exactly once, when the downstream response body ends.
//!
//! The response is only finished when its last byte has left, so the record hangs off the
//! response body: [`RecordBody`] counts bytes and calls its completion exactly once, at the end
//! of the stream, on a body error (`upstream-reset`) or when hyper drops it early because the
//! client went away (`downstream-reset`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::Inner;
use super::limit::BodyStats;
use crate::access_log::RequestRecord;
use crate::body::BoxError;

/// How the response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Response body bytes sent.
    pub(crate) bytes_out: u64,
    /// Set when the body broke midway: `upstream-reset` or `downstream-reset`.
    pub(crate) broke: Option<&'static str>,
}

pin_project! {
    /// A response body that counts its bytes and reports how it ended, exactly once.
    pub(crate) struct RecordBody<B, F>
    where
        B: Body,
        F: FnOnce(Outcome),
    {
        #[pin]
        inner: B,
        bytes_out: u64,
        // Responses hyper never polls (HEAD, 1xx, 204, 304) end normally when dropped.
        bodiless: bool,
        done: Option<F>,
    }

    impl<B, F> PinnedDrop for RecordBody<B, F>
    where
        B: Body,
        F: FnOnce(Outcome),
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(done) = this.done.take() {
                let ended = *this.bodiless || this.inner.is_end_stream();
                done(Outcome {
                    bytes_out: *this.bytes_out,
                    broke: (!ended).then_some("downstream-reset"),
                });
            }
        }
    }
}

/// Everything about a request known before its response body ends.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) inner: Arc<Inner>,
    pub(crate) start: SystemTime,
    pub(crate) started: Instant,
    pub(crate) listener: Arc<str>,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) cluster: Option<Arc<str>>,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) client: SocketAddr,
    pub(crate) method: http::Method,
    pub(crate) path: Option<http::uri::PathAndQuery>,
    pub(crate) version: http::Version,
    pub(crate) status: u16,
    pub(crate) request_id: HeaderValue,
    pub(crate) error_kind: Option<&'static str>,
    pub(crate) body: Option<Arc<BodyStats>>,
    /// Set once the record has been handed out, so dropping does not record again.
    pub(crate) recorded: bool,
    /// Tries sent upstream so far.
    pub(crate) attempts: u32,
    /// How a fallback answered, if one did.
    pub(crate) served_by: Option<&'static str>,
    /// Limits the request holds until its response ends.
    pub(crate) held: Held,
}

/// The slots a request holds until its response body ends: its place in the cluster's request
/// limit, its connection, and its retry's place in the budget and the retry limit.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) request: Option<levee_resilience::bulkhead::Slot>,
    pub(crate) connection: Option<crate::upstream::ConnectionSlot>,
    pub(crate) retry: Option<(
        levee_resilience::budget::RetryGuard,
        levee_resilience::bulkhead::Slot,
    )>,
}

// === impl RecordBody ===

impl<B, F> RecordBody<B, F>
where
    B: Body,
    F: FnOnce(Outcome),
{
    /// Wraps `inner`; `done` runs once when the body ends, fails or is dropped.
    pub(crate) fn new(inner: B, bodiless: bool, done: F) -> Self {
        RecordBody {
            inner,
            bytes_out: 0,
            bodiless,
            done: Some(done),
        }
    }
}

impl<B, F> Body for RecordBody<B, F>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: FnOnce(Outcome),
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let broke = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes_out += data.len() as u64;
                }
                return polled.map(|f| f.map(|r| r.map_err(Into::into)));
            }
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => None,
            Poll::Ready(Some(Err(_))) => Some("upstream-reset"),
        };
        if let Some(done) = this.done.take() {
            done(Outcome {
                bytes_out: *this.bytes_out,
                broke,
            });
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl Pending ===

/// A request dropped before its response head (the client went away while the gateway waited
/// for the upstream) is still recorded, with status 0.
impl Drop for Pending {
    fn drop(&mut self) {
        if !self.recorded {
            self.status = 0;
            self.emit(Outcome {
                bytes_out: 0,
                broke: Some("downstream-reset"),
            });
        }
    }
}

impl Pending {
    /// Builds the record for `outcome` and hands it to metrics and the access log.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.emit(outcome);
    }

    fn emit(&mut self, outcome: Outcome) {
        self.recorded = true;
        // The limits are free again once the response has ended.
        self.held = Held::default();
        let record = self.to_record(outcome);
        self.inner.metrics.observe_request(&record);
        self.inner.access_log.log(&record);
    }

    fn to_record(&self, outcome: Outcome) -> RequestRecord<'_> {
        RequestRecord {
            start: self.start,
            listener: self.listener.clone(),
            route: self.route.clone(),
            cluster: self.cluster.clone(),
            endpoint: self.endpoint,
            client: self.client,
            method: self.method.clone(),
            path: self.path.as_ref().map_or("/", |p| p.as_str()),
            version: self.version,
            status: self.status,
            duration: self.started.elapsed(),
            bytes_in: self.body.as_ref().map_or(0, |b| b.bytes()),
            bytes_out: outcome.bytes_out,
            request_id: self.request_id.to_str().unwrap_or_default(),
            error_kind: self.error_kind.or(outcome.broke),
            attempts: if self.endpoint.is_some() {
                self.attempts
            } else {
                0
            },
            fallback: self.served_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use http_body_util::{BodyExt, StreamBody};

    type Frames = Vec<Result<Frame<Bytes>, BoxError>>;

    fn stream(frames: Frames) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn recorder() -> (Arc<Mutex<Vec<Outcome>>>, impl FnOnce(Outcome) + Send + Sync) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (seen, move |o| sink.lock().expect("lock").push(o))
    }

    #[tokio::test]
    async fn reports_once_at_end_of_stream_with_bytes_and_trailers_forwarded() {
        let (seen, done) = recorder();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = RecordBody::new(
            stream(vec![
                Ok(Frame::data(Bytes::from_static(b"hello"))),
                Ok(Frame::data(Bytes::from_static(b" world"))),
                Ok(Frame::trailers(trailers)),
            ]),
            false,
            done,
        );
        let collected = body.collect().await.expect("body");
        assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), "hello world");
        let seen = seen.lock().expect("lock");
        assert_eq!(
            *seen,
            vec![Outcome {
                bytes_out: 11,
                broke: None
            }]
        );
    }

    #[tokio::test]
    async fn reports_upstream_reset_when_the_body_fails() {
        let (seen, done) = recorder();
        let body = RecordBody::new(
            stream(vec![
                Ok(Frame::data(Bytes::from_static(b"abc"))),
                Err("connection reset".into()),
            ]),
            false,
            done,
        );
        assert!(body.collect().await.is_err());
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].broke, Some("upstream-reset"));
        assert_eq!(seen[0].bytes_out, 3);
    }

    #[tokio::test]
    async fn reports_downstream_reset_when_dropped_midway() {
        let (seen, done) = recorder();
        let mut body = RecordBody::new(
            stream(vec![
                Ok(Frame::data(Bytes::from_static(b"ab"))),
                Ok(Frame::data(Bytes::from_static(b"cd"))),
            ]),
            false,
            done,
        );
        let first = body.frame().await.expect("frame").expect("ok");
        assert_eq!(first.into_data().expect("data"), "ab");
        drop(body);
        let seen = seen.lock().expect("lock");
        assert_eq!(
            *seen,
            vec![Outcome {
                bytes_out: 2,
                broke: Some("downstream-reset")
            }]
        );
    }

    #[test]
    fn bodiless_or_finished_bodies_end_normally_when_dropped() {
        let (seen, done) = recorder();
        drop(RecordBody::new(
            stream(vec![Ok(Frame::data(Bytes::from_static(b"x")))]),
            true,
            done,
        ));
        let (seen_full, done_full) = recorder();
        drop(RecordBody::new(
            http_body_util::Empty::<Bytes>::new(),
            false,
            done_full,
        ));
        assert_eq!(seen.lock().expect("lock")[0].broke, None);
        assert_eq!(seen_full.lock().expect("lock")[0].broke, None);
    }
}
