//! The request record: built exactly once, when the downstream response body ends.
//!
//! The response is only finished when its last byte has left, so the record hangs off the
//! response body: [`RecordBody`] counts bytes and calls its completion exactly once, at the end
//! of the stream, on a body error (`upstream-reset`) or when hyper drops it early because the
//! client went away (`downstream-reset`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::answer::Answer;
use super::{Inner, X_REQUEST_ID};
use crate::access_log::RequestRecord;
use crate::body::{self, BoxError, ProxyBody};
use crate::conn::ConnInfo;
use crate::route::RouteEntry;

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

/// What is known of a request when it arrives. The record is built from this and the
/// [`Answer`] when the response body ends; a request whose future is dropped before it has an
/// answer (the client went away while the gateway waited) is recorded from this alone, with
/// status [`CLIENT_CLOSED_REQUEST`] and the route and endpoint it had reached.
#[derive(Debug)]
pub(crate) struct Arrival {
    inner: Arc<Inner>,
    start: SystemTime,
    started: Instant,
    listener: Arc<str>,
    client: SocketAddr,
    method: http::Method,
    path: Option<http::uri::PathAndQuery>,
    version: http::Version,
    request_id: HeaderValue,
    /// The route and its cluster, once routed, and the endpoint of the try in flight: what a
    /// cancelled request's record can say.
    reached: OnceLock<(Arc<str>, Arc<str>)>,
    trying: Mutex<Option<SocketAddr>>,
    /// Set once the record has been emitted, so dropping does not record again.
    recorded: bool,
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

// === impl Arrival ===

impl Arrival {
    pub(crate) fn new(inner: Arc<Inner>, req: &Request<Incoming>, conn: &ConnInfo) -> Arrival {
        Arrival {
            inner,
            start: SystemTime::now(),
            started: Instant::now(),
            listener: Arc::clone(&conn.listener),
            client: conn.peer,
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            version: req.version(),
            request_id: super::headers::request_id(req.headers(), conn.trust_client_headers),
            reached: OnceLock::new(),
            trying: Mutex::new(None),
            recorded: false,
        }
    }

    /// When the request arrived, on the runtime's clock.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The request id, as received or made up.
    pub(crate) fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// Notes the route the request reached, for the record if it is cancelled.
    pub(crate) fn reached(&self, route: &RouteEntry) {
        let _ = self
            .reached
            .set((Arc::clone(&route.name), Arc::clone(&route.cluster)));
    }

    /// Notes the endpoint a try goes to, for the record if the request is cancelled.
    pub(crate) fn trying(&self, endpoint: SocketAddr) {
        *self.trying.lock().unwrap_or_else(PoisonError::into_inner) = Some(endpoint);
    }

    /// The response to send: `answer`'s, with the request id, and the record hung off its
    /// body, to be emitted (and what the exchange holds given back) when the body ends.
    pub(crate) fn answered(mut self, mut answer: Answer) -> Response<ProxyBody> {
        // The answer stays whole for the record; only its response leaves.
        let mut response = std::mem::replace(&mut answer.response, Response::new(body::empty()));
        let status = response.status();
        // The status line is the gateway's: an HTTP/1.0 upstream's reply to an HTTP/1.1
        // client goes out as HTTP/1.1 (hyper writes whatever version the response holds).
        *response.version_mut() = self.version;
        response
            .headers_mut()
            .insert(X_REQUEST_ID, self.request_id.clone());
        // hyper never polls these bodies, so dropping them unread is a normal end.
        let bodiless = self.method == http::Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        // From here the record is the body's to emit, exactly once.
        self.recorded = true;
        response.map(|inner| {
            RecordBody::new(inner, bodiless, move |outcome| {
                answer.release();
                self.emit(Some(&answer), status.as_u16(), outcome);
            })
            .boxed()
        })
    }

    fn emit(&mut self, answer: Option<&Answer>, status: u16, outcome: Outcome) {
        self.recorded = true;
        let reached = self.reached.get();
        let record = RequestRecord {
            start: self.start,
            listener: self.listener.clone(),
            route: answer
                .and_then(|a| a.route.clone())
                .or_else(|| reached.map(|r| r.0.clone())),
            cluster: answer
                .and_then(|a| a.cluster.clone())
                .or_else(|| reached.map(|r| r.1.clone())),
            endpoint: match answer {
                Some(answer) => answer.endpoint,
                None => *self
                    .trying
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner),
            },
            client: self.client,
            method: self.method.clone(),
            path: self.path.as_ref().map_or("/", |p| p.as_str()),
            version: self.version,
            status,
            duration: self.started.elapsed(),
            bytes_in: answer
                .and_then(|a| a.body.as_ref())
                .map_or(0, |b| b.bytes()),
            bytes_out: outcome.bytes_out,
            request_id: self.request_id.to_str().unwrap_or_default(),
            error_kind: answer.and_then(|a| a.error).or(outcome.broke),
            attempts: answer.map_or(0, |a| a.tries),
            fallback: answer.and_then(|a| a.served_by),
        };
        self.inner.metrics.observe_request(&record);
        self.inner.access_log.log(&record);
    }
}

/// The status recorded for a request whose client went away before its response head: nginx's
/// 499, which operators already read as "client closed request". It is never sent.
pub(crate) const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Drop for Arrival {
    fn drop(&mut self) {
        if !self.recorded {
            self.emit(
                None,
                CLIENT_CLOSED_REQUEST,
                Outcome {
                    bytes_out: 0,
                    broke: Some("downstream-reset"),
                },
            );
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
