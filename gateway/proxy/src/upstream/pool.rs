//! The connection pool of one endpoint, on hyper's connection-level client.
//!
//! hyper-util's general-purpose pool keys its idle lists by scheme and authority, and hashes
//! that key twice per request (checkout and return), behind one lock for every host. Here each
//! endpoint already has its own pool, so there is no key: HTTP/1.1 keeps a stack of idle
//! connections, most recently used on top, and HTTP/2 shares one multiplexed connection.
//!
//! An HTTP/1.1 connection goes back on the stack when its response body has been read to the
//! end ([`UpstreamBody`]); one whose body was dropped half-read, or that answered 101, never
//! does. Idle connections older than `idle_timeout` are closed by a reaper task that runs while
//! any are idle, and no more than `max_idle` are kept.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::UpstreamError;
use super::connector::Connector;
use crate::body::ProxyBody;

/// The pool of one endpoint: idle HTTP/1.1 connections, or the shared HTTP/2 one.
pub(crate) struct EndpointPool {
    connector: Connector,
    idle_timeout: Duration,
    max_idle: usize,
    state: Mutex<State>,
    /// Held while an HTTP/2 connection is being opened, so a burst opens one, not many.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: Vec<Idle>,
    /// The HTTP/2 connection every request shares while it is open.
    shared: Option<Shared>,
    /// Whether a reaper task is watching `idle` and `shared`.
    reaping: bool,
}

struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

struct Shared {
    sender: http2::SendRequest<ProxyBody>,
    last_used: Instant,
}

impl fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointPool")
            .field("connector", &self.connector)
            .field("idle", &self.lock().idle.len())
            .finish_non_exhaustive()
    }
}

impl EndpointPool {
    pub(crate) fn new(connector: Connector, idle_timeout: Duration, max_idle: usize) -> Self {
        Self {
            connector,
            idle_timeout,
            max_idle,
            state: Mutex::default(),
            connecting: tokio::sync::Mutex::const_new(()),
        }
    }

    /// HTTP/1.1 connections waiting in the pool for a request. (An HTTP/2 connection is
    /// shared by every request, so it is never counted as idle.)
    pub(crate) fn idle_connections(&self) -> usize {
        self.lock().idle.len()
    }

    /// Sends `req` (its URI in origin form, with a `Host` header) over an idle HTTP/1.1
    /// connection, or a new one when none is idle.
    ///
    /// A reused connection may turn out closed by the upstream just as the request goes out;
    /// when hyper hands the request back unsent, it is sent again on a new connection, as
    /// hyper-util's client does.
    pub(crate) async fn send_http1(
        self: &Arc<Self>,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let req = match self.checkout_idle() {
            Some(mut sender) => match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.reusable(response, sender)),
                Err(mut error) => match error.take_message() {
                    Some(req) => req,
                    None => return Err(UpstreamError::from_hyper(error.into_error())),
                },
            },
            None => req,
        };
        // Boxed, as is `connect_http2` below: a new connection is the cold path, and unboxed
        // its future (over a KiB with the TLS handshake) would make every request's future,
        // which hyper moves several times per request, that much larger.
        let mut sender = Box::pin(self.connect_http1()).await?;
        let response = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::from_hyper)?;
        Ok(self.reusable(response, sender))
    }

    /// Sends `req` (its URI absolute) over the endpoint's shared HTTP/2 connection, opening it
    /// when there is none or the last one closed.
    pub(crate) async fn send_http2(
        self: &Arc<Self>,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut sender = match self.shared_http2() {
            Some(sender) => sender,
            None => {
                let _connecting = self.connecting.lock().await;
                match self.shared_http2() {
                    Some(sender) => sender,
                    None => {
                        let sender = Box::pin(self.connect_http2()).await?;
                        let mut state = self.lock();
                        state.shared = Some(Shared {
                            sender: sender.clone(),
                            last_used: Instant::now(),
                        });
                        self.watch(&mut state);
                        sender
                    }
                }
            }
        };
        // Waits while the connection is at the upstream's concurrent-stream limit.
        sender.ready().await.map_err(UpstreamError::from_hyper)?;
        let response = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::from_hyper)?;
        Ok(response.map(|inner| UpstreamBody { inner, reuse: None }))
    }

    /// The most recently used idle connection that is still open and ready, closing the
    /// expired and closed ones on the way.
    ///
    /// One that is open but not ready is still busy: its response ended before its request
    /// body did (an upstream may answer early). Waiting for it could take as long as the
    /// client's upload, so it goes back under the others and the search goes on.
    fn checkout_idle(&self) -> Option<http1::SendRequest<ProxyBody>> {
        let mut state = self.lock();
        let mut busy = Vec::new();
        let found = loop {
            let Some(idle) = state.idle.pop() else {
                break None;
            };
            if idle.sender.is_closed() || idle.since.elapsed() >= self.idle_timeout {
                continue;
            }
            if idle.sender.is_ready() {
                break Some(idle.sender);
            }
            busy.push(idle);
        };
        if !busy.is_empty() {
            state.idle.splice(0..0, busy.into_iter().rev());
        }
        found
    }

    /// `response`, with its body set to return `sender` to the pool once read to the end.
    fn reusable(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: http1::SendRequest<ProxyBody>,
    ) -> Response<UpstreamBody> {
        // After a 101 the connection belongs to the upgraded tunnel.
        let reuse = (response.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Reuse {
            pool: self.clone(),
            sender,
        });
        response.map(|inner| UpstreamBody { inner, reuse })
    }

    fn put_idle(self: &Arc<Self>, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut state = self.lock();
        // The reaper is what closes idle connections; outside a runtime (a body dropped while
        // it shuts down) there is none, and the connection is not kept.
        if !self.watch(&mut state) {
            return;
        }
        if state.idle.len() >= self.max_idle {
            // The least recently used goes; its connection task ends and closes it.
            state.idle.remove(0);
        }
        state.idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Makes sure a reaper watches `state`; false when none can run (no runtime).
    fn watch(self: &Arc<Self>, state: &mut State) -> bool {
        if !state.reaping {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return false;
            };
            runtime.spawn(reap(Arc::downgrade(self), self.idle_timeout));
            state.reaping = true;
        }
        true
    }

    async fn connect_http1(&self) -> Result<http1::SendRequest<ProxyBody>, UpstreamError> {
        let io = self.connector.connect().await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::from_hyper)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    async fn connect_http2(&self) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
        let io = self.connector.connect().await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(UpstreamError::from_hyper)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// A handle on the shared HTTP/2 connection, if it is open; marks it used.
    fn shared_http2(&self) -> Option<http2::SendRequest<ProxyBody>> {
        let mut state = self.lock();
        match &mut state.shared {
            Some(shared) if !shared.sender.is_closed() => {
                shared.last_used = Instant::now();
                Some(shared.sender.clone())
            }
            Some(_) => {
                state.shared = None;
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes the connections of `pool` unused for `idle_timeout`, checking every half of it,
/// until none is left or the pool is gone. An HTTP/2 connection dropped here still finishes
/// the streams in flight on it.
async fn reap(pool: Weak<EndpointPool>, idle_timeout: Duration) {
    let every = (idle_timeout / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut state = pool.lock();
        state
            .idle
            .retain(|i| !i.sender.is_closed() && i.since.elapsed() < idle_timeout);
        if state
            .shared
            .as_ref()
            .is_some_and(|s| s.sender.is_closed() || s.last_used.elapsed() >= idle_timeout)
        {
            state.shared = None;
        }
        if state.idle.is_empty() && state.shared.is_none() {
            // Under the lock, so the next connection put here starts a new reaper.
            state.reaping = false;
            return;
        }
    }
}

// === impl UpstreamBody ===

/// The body of an upstream response. An HTTP/1.1 body returns its connection to the pool when
/// it has been read to the end.
pub struct UpstreamBody {
    inner: Incoming,
    reuse: Option<Reuse>,
}

struct Reuse {
    pool: Arc<EndpointPool>,
    sender: http1::SendRequest<ProxyBody>,
}

impl UpstreamBody {
    fn give_back(&mut self) {
        if let Some(Reuse { pool, sender }) = self.reuse.take() {
            pool.put_idle(sender);
        }
    }
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.give_back(),
            // An error means the connection is broken: it is not given back.
            Some(Err(_)) => self.reuse = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body read to its last byte is often dropped without the poll that would return
        // `None`. One dropped earlier leaves its connection mid-response, so it is closed.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}
