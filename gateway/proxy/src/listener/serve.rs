//! One downstream connection: TLS handshake, protocol choice, hyper, idle timeout and drain.
//!
//! On TLS the ALPN result picks the protocol (`h2` is HTTP/2, anything else HTTP/1.1). On plain
//! TCP the first bytes are sniffed for the HTTP/2 preface (h2c prior knowledge). hyper's own
//! HTTP/1 and HTTP/2 builders are used rather than hyper-util's `auto` one, because only hyper's
//! HTTP/1 builder exposes `max_header_size` (the 431 guard).
//!
//! An HTTP/1 keep-alive connection that stays idle for [`RELEASE_BUFFERS_AFTER`] gives back
//! hyper's read and write buffers (8 KiB each) and its connection state: hyper is stopped
//! between requests with `graceful_shutdown` and `poll_without_shutdown`, which leaves the
//! socket open, and the connection task waits on a one-byte read instead. The next request's
//! bytes (that byte first) go to a fresh hyper connection. So an idle client costs about the
//! task and the socket, as in nginx, not 20 KiB. Because this uses hyper's lower-level
//! connection, upgrades are handed to the proxy by this module ([`UpgradeHandoff`]).
//!
//! hyper's HTTP/1 `header_read_timeout` is turned off: its timer also runs while a keep-alive
//! connection waits for the next request, closing idle connections long before `idle_timeout`.
//! The connection task enforces the limit instead, from the first byte of each request head (and
//! from the accept for the first one, so a connection that sends nothing is still cut); see
//! [`super::io::Activity`].

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::header::UPGRADE;
use http::{HeaderValue, StatusCode};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use levee_config::ListenerLimits;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use super::io::{Activity, ConnIo, InFlightBody, SendCheck};
use super::{ConnGuard, Settings};
use crate::conn::ConnInfo;
use crate::proxy::{Proxy, UpgradeHandoff, UpgradedIo};

/// How long an HTTP/1 keep-alive connection stays idle before it gives back its buffers. Short,
/// so that a burst of new connections going idle never holds many buffers at once; a client
/// that waits longer than this between requests pays for a fresh hyper connection (a few
/// microseconds), which at that rate is nothing.
const RELEASE_BUFFERS_AFTER: Duration = Duration::from_millis(100);

/// How long closing the socket of a finished HTTP/1 connection may take (a TLS close_notify).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// What an HTTP/2 client sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's default HTTP/1 read buffer limit (8 KiB + 100 * 4 KiB); a larger `max_header_size`
/// must raise it, or hyper would give up before the header limit applies.
const HYPER_DEFAULT_MAX_BUF: usize = 8192 + 4096 * 100;

/// hyper's default, set explicitly: how many streams this side may reset for protocol errors
/// before the connection is closed (the other half of rapid-reset protection).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Serves `stream` until it closes, goes idle, or the gateway drains. `guard` keeps the
/// connection counted until this returns.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    settings: Arc<Settings>,
    proxy: Proxy,
    guard: ConnGuard,
) {
    let name = guard.listener_name();
    let mut drain = guard.drain_signal();
    let limits = &settings.limits;
    let activity = guard.activity.clone();
    let client_ip = crate::conn::client_ip_value(peer.ip());
    let info = |tls: bool, sni: Option<&str>, client_cert: Option<HeaderValue>| {
        Arc::new(ConnInfo {
            peer,
            local,
            listener: name.clone(),
            tls,
            sni: sni.map(Arc::from),
            client_ip: client_ip.clone(),
            path_normalization: settings.path_normalization,
            trust_client_headers: settings.trust_client_headers,
            client_cert,
        })
    };

    // The handshake and protocol sniffing are bounded by the header-read timeout, and dropped
    // at once on drain: no request has started yet.
    let ctl = Control {
        drain: guard.drain_signal(),
        abort: guard.abort_signal(),
        activity: activity.clone(),
        idle_timeout: limits.idle_timeout,
        send_timeout: limits.send_timeout,
        header_read_timeout: None,
        parked: guard.shared.parked.clone(),
        send_timeouts: guard.shared.send_timeouts.clone(),
    };
    match &settings.tls {
        Some(tls) => {
            // Boxed, like `run` below: the connection task's future is as large as its largest
            // state, and a plain HTTP/1.1 connection should not carry TLS or HTTP/2 state.
            let handshake = Box::pin(TlsAcceptor::from(tls.clone()).accept(stream));
            let tls_stream = tokio::select! {
                res = tokio::time::timeout(limits.header_read_timeout, handshake) => match res {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(listener = %name, %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(listener = %name, %peer, "TLS handshake timed out");
                        return;
                    }
                },
                () = signalled(&mut drain) => return,
                () = activity.evicted() => return,
            };
            let (_, session) = tls_stream.get_ref();
            let h2 = session.alpn_protocol() == Some(b"h2");
            let client_cert = match session.peer_certificates() {
                Some([leaf, ..]) if settings.forward_client_cert => {
                    Some(super::tls::client_cert_details(leaf))
                }
                _ => None,
            };
            let info = info(true, session.server_name(), client_cert);
            let io = ConnIo::new(tls_stream, Bytes::new(), activity.clone());
            Box::pin(run(io, h2, info, proxy, limits, ctl)).await;
        }
        None => {
            let mut stream = stream;
            let sniff = sniff_h2(&mut stream);
            let sniffed = tokio::select! {
                res = tokio::time::timeout(limits.header_read_timeout, sniff) => match res {
                    Ok(Ok(Some(s))) => s,
                    Ok(Ok(None)) => return,
                    Ok(Err(e)) => {
                        tracing::debug!(listener = %name, %peer, error = %e, "read failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(listener = %name, %peer, "no request head in time");
                        return;
                    }
                },
                () = signalled(&mut drain) => return,
                () = activity.evicted() => return,
            };
            let (h2, prefix) = sniffed;
            let io = ConnIo::new(stream, prefix, activity.clone());
            Box::pin(run(io, h2, info(false, None, None), proxy, limits, ctl)).await;
        }
    }
    drop(guard);
}

/// Reads until the bytes either are or cannot be the HTTP/2 preface. Returns whether they are,
/// and the bytes read (to replay), or `None` if the client closed first.
async fn sniff_h2(stream: &mut TcpStream) -> std::io::Result<Option<(bool, Bytes)>> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
        if buf.len() >= H2_PREFACE.len() || !H2_PREFACE.starts_with(&buf) {
            let h2 = buf.starts_with(H2_PREFACE);
            return Ok(Some((h2, buf.freeze())));
        }
    }
}

/// What a running connection watches besides its own IO.
struct Control {
    drain: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    /// How long a response may make no progress; see [`super::io`].
    send_timeout: Duration,
    /// Set for HTTP/1 only: how long a request head may take from its first byte.
    header_read_timeout: Option<Duration>,
    /// The listener's `levee_downstream_connections_parked`.
    parked: Gauge,
    /// The listener's `levee_downstream_send_timeouts_total`.
    send_timeouts: Counter,
}

/// Counts a connection as parked until dropped, however its wait ends.
struct ParkedGuard<'a>(&'a Gauge);

impl Drop for ParkedGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How [`drive`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The connection finished on its own, or after a drain or idle shutdown.
    Done,
    /// The connection was idle and stopped so it can be parked.
    Park,
    /// Dropped: aborted, a request head too slow, or a response making no progress.
    Dropped,
}

/// A connection's slot for handing itself over after a 101 (HTTP/1 only).
#[derive(Default)]
struct Handoff {
    tx: Mutex<Option<oneshot::Sender<UpgradedIo>>>,
    /// The service answered 101 to the request whose sender is in `tx`.
    switching: AtomicBool,
}

impl Handoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<oneshot::Sender<UpgradedIo>>> {
        self.tx.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs hyper on `io` with the listener's limits.
async fn run<I>(
    io: ConnIo<I>,
    h2: bool,
    info: Arc<ConnInfo>,
    proxy: Proxy,
    limits: &ListenerLimits,
    mut ctl: Control,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max_header_size = usize::try_from(limits.max_header_size).unwrap_or(usize::MAX);
    if h2 {
        let service = service(&proxy, &info, &ctl.activity, None);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_concurrent_streams)
            .max_pending_accept_reset_streams(limits.http2_max_pending_resets as usize)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
            .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
        let mut conn = Box::pin(builder.serve_connection(TokioIo::new(io), service));
        drive(
            conn.as_mut(),
            |c, cx| c.poll(cx),
            |c| c.graceful_shutdown(),
            &mut ctl,
            None,
        )
        .await;
        return;
    }

    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Enforced by `drive` instead; see the module docs.
        .header_read_timeout(None)
        .max_header_size(max_header_size);
    ctl.header_read_timeout = Some(limits.header_read_timeout);
    // hyper keeps up to 100 headers on the stack; any other limit moves them to the heap.
    if limits.max_headers != 100 {
        builder.max_headers(limits.max_headers as usize);
    }
    if max_header_size > HYPER_DEFAULT_MAX_BUF {
        builder.max_buf_size(max_header_size);
    }
    let handoff = Arc::new(Handoff::default());
    let mut io = io;
    loop {
        let service = service(&proxy, &info, &ctl.activity, Some(&handoff));
        let mut conn = Box::pin(builder.serve_connection(TokioIo::new(io), service));
        let end = drive(
            conn.as_mut(),
            |c, cx| c.get_mut().poll_without_shutdown(cx),
            |c| c.graceful_shutdown(),
            &mut ctl,
            Some(RELEASE_BUFFERS_AFTER),
        )
        .await;
        if end == End::Dropped {
            return;
        }
        let parts = Pin::into_inner(conn).into_parts();
        io = parts.io.into_inner();
        let buffered = !parts.read_buf.is_empty();
        io.replay(parts.read_buf);
        if handoff.switching.swap(false, Ordering::AcqRel) {
            // The 101 is written: the connection now belongs to the tunnel.
            if let Some(tx) = handoff.lock().take() {
                let _ = tx.send(Box::new(io));
            }
            return;
        }
        if end == End::Done {
            // hyper leaves the socket to us: close it as it would have.
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, io.shutdown()).await;
            return;
        }
        // Bytes of the next request that hyper had already read go straight to a new hyper
        // connection; otherwise wait for some without one.
        if !buffered && park(&mut io, &mut ctl).await.is_none() {
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, io.shutdown()).await;
            return;
        }
    }
}

/// What the service returns for one request: boxed, see [`service`].
type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<InFlightBody>, Infallible>> + Send>>;

/// The service hyper calls for each request on one connection. With `handoff` (HTTP/1), an
/// upgrade request carries an [`UpgradeHandoff`] whose sender waits in `handoff` until the
/// response says whether it switches protocols.
fn service(
    proxy: &Proxy,
    info: &Arc<ConnInfo>,
    activity: &Arc<Activity>,
    handoff: Option<&Arc<Handoff>>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<InFlightBody>,
    Error = Infallible,
    Future = ServiceFuture,
> + Unpin
+ use<> {
    let (proxy, info, activity) = (proxy.clone(), info.clone(), activity.clone());
    let handoff = handoff.cloned();
    service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let proxy = proxy.clone();
        let info = info.clone();
        let in_flight = activity.request();
        let handoff = handoff
            .as_ref()
            .filter(|_| req.headers().contains_key(UPGRADE))
            .cloned();
        if let Some(handoff) = &handoff {
            let (ext, tx) = UpgradeHandoff::new();
            req.extensions_mut().insert(ext);
            *handoff.lock() = Some(tx);
        }
        // Boxed: hyper keeps one slot for the service future per connection for the
        // connection's whole life, sized to the future. The request path's future is several
        // KiB; boxed, an idle keep-alive connection holds a pointer instead.
        let fut: ServiceFuture = Box::pin(async move {
            let res = proxy.call(req, info).await;
            if let Some(handoff) = handoff {
                match &res {
                    Ok(res) if res.status() == StatusCode::SWITCHING_PROTOCOLS => {
                        handoff.switching.store(true, Ordering::Release);
                    }
                    _ => drop(handoff.lock().take()),
                }
            }
            res.map(|res| res.map(|body| InFlightBody::new(body, in_flight)))
        });
        fut
    })
}

/// Waits, without hyper, for the next request on an idle HTTP/1 connection: `Some` once a
/// byte has arrived (kept in `io` to replay), `None` when the connection is over (closed by
/// the client, idle past `idle_timeout`, drained or aborted).
async fn park<I>(io: &mut ConnIo<I>, ctl: &mut Control) -> Option<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    ctl.parked.inc();
    let _parked = ParkedGuard(&ctl.parked);
    let idle = tokio::time::sleep_until(ctl.activity.idle_deadline(ctl.idle_timeout));
    let mut byte = [0u8; 1];
    let woke = tokio::select! {
        res = io.read(&mut byte) => match res {
            Ok(1) => Some(()),
            Ok(_) | Err(_) => None,
        },
        () = idle => {
            tracing::debug!("closing idle downstream connection");
            None
        }
        () = signalled(&mut ctl.drain) => None,
        () = signalled(&mut ctl.abort) => None,
        () = ctl.activity.evicted() => None,
    };
    if woke.is_some() {
        io.replay(Bytes::copy_from_slice(&byte));
    }
    woke
}

/// Polls `conn` (with `poll`) to completion, starting a graceful shutdown on drain, on
/// idleness, or (with `release_after`) to park it once it has been idle that long; dropping it
/// on abort, when a request head takes longer than the header-read timeout, or when nothing
/// has gone out for `send_timeout` while a response is owed (stalled responses alone are
/// cancelled; see [`Activity::send_check`]).
///
/// This runs around every request, so its timers and signal futures are made once and reset,
/// not rebuilt on each wake-up. The connection is polled on every wake-up; the signals and
/// timers only when one of them woke the task ([`ControlWaker`]), since most wake-ups are the
/// connection's own IO.
async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    mut poll: impl FnMut(Pin<&mut C>, &mut Context<'_>) -> Poll<Result<(), E>>,
    shutdown: impl Fn(Pin<&mut C>),
    ctl: &mut Control,
    release_after: Option<Duration>,
) -> End
where
    E: Display,
{
    let Control {
        drain,
        abort,
        activity,
        idle_timeout,
        send_timeout,
        header_read_timeout,
        parked: _,
        send_timeouts,
    } = ctl;
    let (idle_timeout, send_timeout, header_read_timeout) =
        (*idle_timeout, *send_timeout, *header_read_timeout);
    let activity: &Activity = activity;
    let mut shutting_down = false;
    // Responses this connection cancelled for `send_timeout`, counted in `send_timeouts`.
    let mut cancelled_here = 0;
    // Waiting for a long request to end (see `Activity::wake_when_idle`).
    let mut waiting = false;
    // The request count when this side asked hyper to stop for parking; a request started
    // since then was answered with `connection: close`, so the connection must close.
    let mut parking: Option<u64> = None;
    let drained = signalled(drain);
    let aborted = signalled(abort);
    // One timer for both kinds of quiet: releasing the buffers (the shorter, normally) and
    // closing at `idle_timeout`. Parking then enforces `idle_timeout` itself.
    let release_after = release_after.filter(|after| *after < idle_timeout);
    let quiet_after = release_after.unwrap_or(idle_timeout);
    let quiet = tokio::time::sleep_until(activity.next_idle_check(quiet_after));
    // Armed when a request head starts; far away (and ignored) otherwise.
    let head = sleep_until_some(header_read_timeout.and_then(|t| activity.head_deadline(t)));
    let head_started = activity.head_started();
    let went_idle = activity.went_idle();
    let evicted = activity.evicted();
    // Responses owed to the client are looked at least this often; see `Activity::send_check`.
    let send = tokio::time::sleep(send_timeout);
    tokio::pin!(
        drained,
        aborted,
        quiet,
        head,
        head_started,
        went_idle,
        send,
        evicted
    );
    let control = Arc::new(ControlWaker::default());
    let control_waker = Waker::from(control.clone());

    loop {
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(res) = poll(conn.as_mut(), cx) {
                return Poll::Ready(Event::Conn(res));
            }
            control.task.register(cx.waker());
            if !control.woken.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            let cx = &mut Context::from_waker(&control_waker);
            if aborted.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Aborted);
            }
            if !shutting_down && drained.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Drained);
            }
            if !shutting_down && evicted.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Evicted);
            }
            if header_read_timeout.is_some() && head_started.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::HeadStarted);
            }
            if head.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::HeadTimer);
            }
            if !shutting_down && quiet.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Quiet);
            }
            if waiting && went_idle.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::WentIdle);
            }
            if send.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::SendTimer);
            }
            Poll::Pending
        })
        .await;
        // Whatever happened changes what the signals and timers must watch: look at all of
        // them on the next poll.
        control.woken.store(true, Ordering::Release);

        match event {
            Event::Conn(res) => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                    return End::Dropped;
                }
                return match parking {
                    Some(started) if started == activity.started() => End::Park,
                    _ => End::Done,
                };
            }
            Event::Aborted => return End::Dropped,
            // (A drain during parking needs nothing here: the parked wait sees it at once.)
            Event::Drained | Event::Evicted => {
                shutdown(conn.as_mut());
                shutting_down = true;
            }
            // A head started: arm its deadline.
            Event::HeadStarted => {
                head_started.set(activity.head_started());
                let deadline = header_read_timeout.and_then(|t| activity.head_deadline(t));
                head.set(sleep_until_some(deadline));
            }
            Event::HeadTimer => {
                if header_read_timeout.is_some_and(|t| activity.head_expired(t)) {
                    // A partial head cannot be shut down gracefully (hyper waits for it), and
                    // no response is underway, so the connection is simply dropped.
                    tracing::debug!("no complete request head in time; closing");
                    return End::Dropped;
                }
                // The head arrived in time, or a newer one started: re-arm or stand down.
                let deadline = header_read_timeout.and_then(|t| activity.head_deadline(t));
                head.set(sleep_until_some(deadline));
            }
            Event::Quiet => {
                let no_head = activity.head_deadline(Duration::ZERO).is_none();
                if release_after.is_some_and(|after| activity.is_idle(after)) && no_head {
                    parking = Some(activity.started());
                    shutdown(conn.as_mut());
                    shutting_down = true;
                } else if activity.is_idle(idle_timeout) {
                    tracing::debug!("closing idle downstream connection");
                    shutdown(conn.as_mut());
                    shutting_down = true;
                } else if !waiting && activity.wake_when_idle() {
                    // A long request: look again when it ends, or at `idle_timeout`.
                    waiting = true;
                    quiet
                        .as_mut()
                        .reset(tokio::time::Instant::now() + idle_timeout);
                } else {
                    quiet.as_mut().reset(activity.next_idle_check(quiet_after));
                }
            }
            Event::WentIdle => {
                waiting = false;
                went_idle.set(activity.went_idle());
                quiet.as_mut().reset(activity.next_idle_check(quiet_after));
            }
            Event::SendTimer => {
                let check = activity.send_check(send_timeout);
                let cancelled = activity.take_send_timeouts();
                send_timeouts.inc_by(cancelled);
                cancelled_here += cancelled;
                match check {
                    SendCheck::Drop => {
                        tracing::debug!("no response progress within send_timeout; closing");
                        // A write blocked with no response cancelled (the last bytes of an
                        // ended body) is counted once, as the connection.
                        if cancelled_here == 0 {
                            send_timeouts.inc();
                        }
                        return End::Dropped;
                    }
                    SendCheck::Later(at) => send.as_mut().reset(at),
                }
            }
        }
    }
}

/// What woke [`drive`]'s loop.
enum Event<E> {
    Conn(Result<(), E>),
    Aborted,
    Drained,
    /// The listener closes this idle connection to make room for a new one.
    Evicted,
    HeadStarted,
    HeadTimer,
    Quiet,
    WentIdle,
    SendTimer,
}

/// The waker [`drive`] polls its signals and timers with: it notes that one of them fired,
/// then wakes the connection task.
struct ControlWaker {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Default for ControlWaker {
    fn default() -> Self {
        // Everything is polled once at the start, to register.
        Self {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }
}

impl Wake for ControlWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Sleeps until `deadline`; never resolves without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Resolves once the flag is raised; never if its sender is gone.
async fn signalled(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|raised| *raised).await.is_err() {
        std::future::pending::<()>().await;
    }
}
