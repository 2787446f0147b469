//! The downstream IO wrapper: replays sniffed bytes and records when the connection last moved;
//! and the response body wrapper that watches each response for `send_timeout`.
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
//!
//! # Send progress
//!
//! A client that stops reading must not hold an upstream request for longer than
//! `send_timeout`. Two things show that a response makes no progress, and the connection task
//! looks at both ([`Activity::send_check`]):
//!
//! - a write to the socket that has stayed pending (HTTP/1.1, and HTTP/2 when the client does
//!   not read the socket at all); and
//! - a response body that hyper has not come back to since the body last had a frame for it
//!   ([`Sending`]). hyper asks for the next frame only once the previous one is written
//!   (HTTP/1.1) or once the stream's flow-control window has room (HTTP/2), so a client that
//!   keeps an HTTP/2 window at zero stalls its streams without any write being pending. A body
//!   that is waiting for its upstream is not owed anything; if the upstream's data arrives while
//!   hyper is not polling, the body counts as owed from then on.
//!
//! Frames are handed over in slices of at most [`MAX_SLICE`], so a large buffered frame does not
//! look stalled while a slow client is still reading it. A stalled body is cancelled: its
//! upstream body is dropped at once (freeing the cluster's request and connection), and hyper
//! gets an error the next time it polls (HTTP/2 resets the stream). When the connection wrote
//! nothing else for `send_timeout` either, the whole connection is dropped.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::body::{BoxError, ProxyBody};

/// `head_ms` when no request head is pending.
const NO_HEAD: u64 = u64::MAX;

/// `owed_ms` and `write_blocked_ms` when nothing is owed or blocked.
const NEVER: u64 = u64::MAX;

/// Largest slice of a response's data frame handed to hyper at once. hyper asks for the next
/// frame only when the last one is sent, so this is the least a client must take within each
/// `send_timeout` (64 KiB every 30s by default, about 2 KiB/s). It is one default HTTP/2
/// window, and hyper's HTTP/1 write buffer holds several.
const MAX_SLICE: usize = 64 * 1024;

/// When a connection last read or wrote, how many requests it is handling, and since when a
/// request head has been arriving.
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last read or write.
    last_ms: AtomicU64,
    /// Milliseconds since `start` of the last write that moved bytes.
    last_write_ms: AtomicU64,
    /// Since when a write has been pending, or [`NEVER`].
    write_blocked_ms: AtomicU64,
    /// The response bodies being sent, for `send_timeout`.
    sends: Mutex<Vec<Arc<Sending>>>,
    /// Responses cancelled by `send_timeout` and not yet counted in the listener's metric.
    send_timeouts: AtomicU64,
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
    /// Notified once when the listener closes this idle connection to make room for a new one.
    evicted: Notify,
}

// === impl Activity ===

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            last_write_ms: AtomicU64::new(0),
            write_blocked_ms: AtomicU64::new(NEVER),
            sends: Mutex::new(Vec::new()),
            send_timeouts: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            // A new connection owes its first request head from the accept on.
            head_ms: AtomicU64::new(0),
            head_started: Notify::new(),
            idle_waiter: AtomicBool::new(false),
            went_idle: Notify::new(),
            evicted: Notify::new(),
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

    fn on_write_result(&self, res: &Poll<io::Result<usize>>) {
        match res {
            Poll::Ready(Ok(n)) if *n > 0 => self.on_write(),
            Poll::Pending => self.on_write_blocked(),
            Poll::Ready(_) => {}
        }
    }

    /// Bytes were written: the connection is making progress.
    fn on_write(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        self.last_write_ms.store(now, Ordering::Relaxed);
        self.on_write_unblocked();
    }

    fn on_write_unblocked(&self) {
        if self.write_blocked_ms.load(Ordering::Relaxed) != NEVER {
            self.write_blocked_ms.store(NEVER, Ordering::Relaxed);
        }
    }

    /// A write could not go out now: it is pending from now, unless it already was.
    fn on_write_blocked(&self) {
        if self.write_blocked_ms.load(Ordering::Relaxed) == NEVER {
            self.write_blocked_ms
                .store(self.now_ms(), Ordering::Relaxed);
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn sends(&self) -> MutexGuard<'_, Vec<Arc<Sending>>> {
        self.sends.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks at what the connection owes its client (see the module docs): cancels every
    /// response body that has been stalled for `send_timeout`, and says whether the connection
    /// itself must be dropped and when to look again.
    pub(super) fn send_check(&self, send_timeout: Duration) -> SendCheck {
        let now = Instant::now();
        let write_blocked = self.write_blocked_ms.load(Ordering::Relaxed);
        if write_blocked != NEVER && now >= self.at(write_blocked) + send_timeout {
            return SendCheck::Drop;
        }
        let mut next = now + send_timeout;
        if write_blocked != NEVER {
            next = next.min(self.at(write_blocked) + send_timeout);
        }
        let mut stalled = 0;
        for sending in self.sends().iter() {
            let owed = sending.owed_ms.load(Ordering::Relaxed);
            if owed == NEVER {
                continue;
            }
            let deadline = self.at(owed) + send_timeout;
            if now >= deadline {
                // Cancelled a `send_timeout` ago and still not taken: the client keeps the
                // connection busy with other traffic (HTTP/2 PINGs) but never takes the
                // response, so the writes that reset `quiet_until` are not progress.
                if sending.cancelled.load(Ordering::Relaxed) && now >= deadline + send_timeout {
                    return SendCheck::Drop;
                }
                next = next.min(deadline + send_timeout);
                stalled += 1;
                if !sending.cancelled.load(Ordering::Relaxed) {
                    self.send_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                sending.cancel();
            } else {
                next = next.min(deadline);
            }
        }
        if stalled > 0 {
            let quiet_until = self.at(self.last_write_ms.load(Ordering::Relaxed)) + send_timeout;
            if now >= quiet_until {
                return SendCheck::Drop;
            }
            next = next.min(quiet_until);
        }
        SendCheck::Later(next)
    }

    /// The responses [`Self::send_check`] cancelled since the last call.
    pub(super) fn take_send_timeouts(&self) -> u64 {
        self.send_timeouts.swap(0, Ordering::Relaxed)
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

    /// Since when the connection has been idle (no request being handled), or `None` while one
    /// is.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Relaxed) == 0)
            .then(|| self.at(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Asks the connection to close: the listener needs its slot. The request stays pending
    /// for the connection task even if it is not waiting yet.
    pub(super) fn evict(&self) {
        self.evicted.notify_one();
    }

    /// Resolves once [`Activity::evict`] has been called.
    pub(super) async fn evicted(&self) {
        self.evicted.notified().await;
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

/// What [`Activity::send_check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SendCheck {
    /// Nothing has progressed for `send_timeout`: drop the connection.
    Drop,
    /// Look again at this instant.
    Later(Instant),
}

/// A response body on its way to the client, shared between the body hyper polls
/// ([`InFlightBody`]) and the connection task, which cancels it once stalled.
#[derive(Debug)]
pub(super) struct Sending {
    start: Instant,
    /// Since when (milliseconds after `start`) hyper has owed the body a poll: from when the
    /// response head was handed over, when the body last gave a frame, or when its upstream
    /// woke it. [`NEVER`] while the body waits for its upstream, and once it is done.
    owed_ms: AtomicU64,
    /// hyper's waker from the last poll, woken when the upstream wakes the body.
    task: AtomicWaker,
    /// The upstream body and its in-flight count, until it ends or is cancelled.
    body: Mutex<Option<(ProxyBody, InFlight)>>,
    /// Set when [`Activity::send_check`] gave up on the body.
    cancelled: AtomicBool,
}

// === impl Sending ===

impl Sending {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).map_or(NEVER - 1, |ms| ms.min(NEVER - 1))
    }

    fn body(&self) -> MutexGuard<'_, Option<(ProxyBody, InFlight)>> {
        self.body.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the upstream body now (freeing its upstream request and connection) and wakes
    /// hyper, whose next poll gets an error.
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        let body = self.body().take();
        drop(body);
        self.task.wake();
    }
}

impl Wake for Sending {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The upstream has something: from now on hyper owes the body a poll.
        let now = self.now_ms();
        let _ = self
            .owed_ms
            .compare_exchange(NEVER, now, Ordering::Relaxed, Ordering::Relaxed);
        self.task.wake();
    }
}

/// The error a cancelled response body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the client took no part of the response within send_timeout")]
pub(super) struct SendTimedOut;

/// A response body that keeps its request counted as in flight until it is done, so bytes the
/// client sends meanwhile are not taken for the start of the next request head, and that is
/// watched for `send_timeout` (see the module docs).
#[derive(Debug)]
pub(super) struct InFlightBody {
    sending: Arc<Sending>,
    /// The waker the upstream body is polled with ([`Sending`]'s), made once.
    upstream_waker: Waker,
    activity: Arc<Activity>,
    /// The rest of a data frame larger than [`MAX_SLICE`].
    rest: Bytes,
}

// === impl InFlightBody ===

impl InFlightBody {
    pub(super) fn new(inner: ProxyBody, in_flight: InFlight) -> Self {
        let activity = in_flight.0.clone();
        let sending = Arc::new(Sending {
            start: activity.start,
            // hyper owes the body its first poll from the moment it has the response.
            owed_ms: AtomicU64::new(activity.now_ms()),
            task: AtomicWaker::new(),
            body: Mutex::new(Some((inner, in_flight))),
            cancelled: AtomicBool::new(false),
        });
        activity.sends().push(sending.clone());
        Self {
            upstream_waker: Waker::from(sending.clone()),
            sending,
            activity,
            rest: Bytes::new(),
        }
    }

    /// The next slice of the frame being handed over.
    fn slice(&mut self) -> Frame<Bytes> {
        let n = self.rest.len().min(MAX_SLICE);
        Frame::data(self.rest.split_to(n))
    }
}

impl Body for InFlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let sending = &this.sending;
        if sending.cancelled.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(SendTimedOut.into())));
        }
        if !this.rest.is_empty() {
            sending.owed_ms.store(sending.now_ms(), Ordering::Relaxed);
            return Poll::Ready(Some(Ok(this.slice())));
        }
        let mut body = sending.body();
        let Some((inner, _)) = body.as_mut() else {
            return Poll::Ready(None);
        };
        sending.task.register(cx.waker());
        // Owed nothing while the upstream is polled: a wake-up from it (even during this poll)
        // marks the body owed again.
        sending.owed_ms.store(NEVER, Ordering::Relaxed);
        let res = Pin::new(inner).poll_frame(&mut Context::from_waker(&this.upstream_waker));
        match res {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                sending.owed_ms.store(sending.now_ms(), Ordering::Relaxed);
                match frame.into_data() {
                    Ok(data) if data.len() > MAX_SLICE => {
                        drop(body);
                        this.rest = data;
                        Poll::Ready(Some(Ok(this.slice())))
                    }
                    Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                }
            }
            Poll::Ready(end) => {
                // Done: the upstream body and the in-flight count go now.
                let done = body.take();
                drop(body);
                drop(done);
                Poll::Ready(end)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.sending.cancelled.load(Ordering::Relaxed) {
            return false;
        }
        if !self.rest.is_empty() {
            return false;
        }
        self.sending
            .body()
            .as_ref()
            .is_none_or(|(inner, _)| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.len() as u64;
        let mut hint = match self.sending.body().as_ref() {
            Some((inner, _)) => inner.size_hint(),
            // Cancelled: it ends with an error, after an unknown number of bytes.
            None if self.sending.cancelled.load(Ordering::Relaxed) => SizeHint::default(),
            None => SizeHint::with_exact(0),
        };
        if rest > 0 {
            hint.set_lower(hint.lower() + rest);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + rest);
            }
        }
        hint
    }
}

impl Drop for InFlightBody {
    fn drop(&mut self) {
        self.activity
            .sends()
            .retain(|s| !Arc::ptr_eq(s, &self.sending));
        // The upstream body holds wakers that point back at `sending`: drop it here, not with
        // the last of them.
        let body = self.sending.body().take();
        drop(body);
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
        this.activity.on_write_result(&res);
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        this.activity.on_write_result(&res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let res = this.inner.poll_flush(cx);
        // TLS flushes its own buffer here, so a flush can be what waits for the client. A
        // finished flush unblocks but is no progress of its own: it may have had nothing to do.
        match res {
            Poll::Ready(Ok(())) => this.activity.on_write_unblocked(),
            Poll::Pending => this.activity.on_write_blocked(),
            Poll::Ready(Err(_)) => {}
        }
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
