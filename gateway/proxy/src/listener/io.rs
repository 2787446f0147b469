//! The downstream IO wrapper: replays sniffed bytes and records when the connection last moved.
//!
//! Protocol detection on plain TCP reads the first bytes to look for the HTTP/2 preface; they are
//! handed back to hyper first. hyper has no idle timeout for keep-alive connections, so the
//! wrapper stamps every read and write and the connection task closes connections that stay
//! quiet for `idle_timeout`.
//!
//! hyper's own HTTP/1 header-read timer also runs while a keep-alive connection waits for its
//! next request, which would cut idle connections at `header_read_timeout` instead of
//! `idle_timeout`. So the wrapper also records when a request head starts: at accept, and then
//! whenever bytes arrive while no request is being handled. The connection task closes the
//! connection if that head has not reached the service within `header_read_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::body::{BoxError, ProxyBody};

/// `head_ms` when no request head is pending.
const NO_HEAD: u64 = u64::MAX;

/// When a connection last read or wrote, how many requests it is handling, and since when a
/// request head has been arriving.
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last read or write.
    last_ms: AtomicU64,
    /// Requests from the service call until their response body is done.
    in_flight: AtomicUsize,
    /// Requests started so far: a request that slips in while the connection is being parked
    /// shows here.
    started: AtomicU64,
    /// Milliseconds since `start` at which the pending request head began (0, the accept, for
    /// the first one), or [`NO_HEAD`].
    head_ms: AtomicU64,
    /// Woken when a head starts, so the connection task arms its deadline.
    head_started: Notify,
    /// Set by the connection task while it waits for a long request to end.
    idle_waiter: AtomicBool,
    /// Woken when the last request in flight ends, if `idle_waiter` was set.
    went_idle: Notify,
}

// === impl Activity ===

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            // A new connection owes its first request head from the accept on.
            head_ms: AtomicU64::new(0),
            head_started: Notify::new(),
            idle_waiter: AtomicBool::new(false),
            went_idle: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        // Capped below NO_HEAD so a timestamp never reads as "no head".
        u64::try_from(self.start.elapsed().as_millis())
            .map_or(NO_HEAD - 1, |ms| ms.min(NO_HEAD - 1))
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes arrived: they are activity, and they start a request head unless a request is
    /// being handled (then they are its body) or a head is already pending.
    fn on_read(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self
                .head_ms
                .compare_exchange(NO_HEAD, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.head_started.notify_one();
        }
    }

    /// The instant by which the pending request head must reach the service, if one is
    /// pending.
    pub(super) fn head_deadline(&self, header_read_timeout: Duration) -> Option<Instant> {
        let ms = self.head_ms.load(Ordering::Relaxed);
        (ms != NO_HEAD).then(|| self.start + Duration::from_millis(ms) + header_read_timeout)
    }

    /// Whether a pending request head has taken longer than `header_read_timeout`.
    pub(super) fn head_expired(&self, header_read_timeout: Duration) -> bool {
        self.head_deadline(header_read_timeout)
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Resolves when a request head starts to arrive (a wake-up may be stale; recheck
    /// [`Activity::head_deadline`]).
    pub(super) async fn head_started(&self) {
        self.head_started.notified().await;
    }

    /// Requests started so far.
    pub(super) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// The instant at which the connection counts as idle if nothing happens before.
    pub(super) fn idle_deadline(&self, idle_timeout: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle_timeout
    }

    /// When to look again whether the connection has been quiet for `after`: that long after
    /// its last activity, or that long from now while a request is being handled (see
    /// [`Activity::wake_when_idle`] for requests that outlast it).
    pub(super) fn next_idle_check(&self, after: Duration) -> Instant {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            Instant::now() + after
        } else {
            self.idle_deadline(after)
        }
    }

    /// Asks the last request in flight to wake [`Activity::went_idle`] when it ends, so a
    /// long request (a download, a long poll) is not looked at every few milliseconds.
    /// Returns false, and asks nothing, when no request is in flight.
    pub(super) fn wake_when_idle(&self) -> bool {
        self.idle_waiter.store(true, Ordering::SeqCst);
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            self.idle_waiter.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Resolves after [`Activity::wake_when_idle`], once no request is in flight.
    pub(super) async fn went_idle(&self) {
        self.went_idle.notified().await;
    }

    /// Whether the connection has been quiet for `idle_timeout` with no request being handled.
    pub(super) fn is_idle(&self, idle_timeout: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && Instant::now() >= self.idle_deadline(idle_timeout)
    }

    /// Marks a request as being handled until the guard drops; its head has arrived.
    pub(super) fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        self.head_ms.store(NO_HEAD, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request being handled; see [`Activity::request`].
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let last = activity.in_flight.fetch_sub(1, Ordering::SeqCst) == 1;
        activity.touch();
        if last
            && activity.idle_waiter.load(Ordering::SeqCst)
            && activity.idle_waiter.swap(false, Ordering::SeqCst)
        {
            activity.went_idle.notify_one();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is done, so bytes
    /// the client sends meanwhile are not taken for the start of the next request head.
    #[derive(Debug)]
    pub(super) struct InFlightBody {
        #[pin]
        inner: ProxyBody,
        in_flight: Option<InFlight>,
    }
}

// === impl InFlightBody ===

impl InFlightBody {
    pub(super) fn new(inner: ProxyBody, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl Body for InFlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let res = this.inner.poll_frame(cx);
        if matches!(res, Poll::Ready(None | Some(Err(_)))) {
            this.in_flight.take();
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A downstream stream with bytes to replay first and activity tracking.
    #[derive(Debug)]
    pub(super) struct ConnIo<T> {
        prefix: Bytes,
        activity: Arc<Activity>,
        #[pin]
        inner: T,
    }
}

// === impl ConnIo ===

impl<T> ConnIo<T> {
    pub(super) fn new(inner: T, prefix: Bytes, activity: Arc<Activity>) -> Self {
        Self {
            prefix,
            activity,
            inner,
        }
    }

    /// Bytes to read again before the stream's own, ahead of any still unread. Empty bytes
    /// are dropped, not kept: hyper's leftover read buffer can be empty and still hold its
    /// whole allocation. Bytes given back count as read: they may start a request head, whose
    /// header-read deadline then runs.
    pub(super) fn replay(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.activity.on_read();
        if self.prefix.is_empty() {
            self.prefix = bytes;
        } else {
            let mut both = bytes::BytesMut::with_capacity(bytes.len() + self.prefix.len());
            both.extend_from_slice(&bytes);
            both.extend_from_slice(&self.prefix);
            self.prefix = both.freeze();
        }
    }
}

impl<T: AsyncRead> AsyncRead for ConnIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // `advance` keeps the sniff buffer's allocation alive; an idle keep-alive
                // connection should not carry it for the rest of its life.
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for ConnIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
