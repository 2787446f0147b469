//! One downstream connection: TLS handshake, protocol choice, hyper, idle timeout and drain.
//!
//! On TLS the ALPN result picks the protocol (`h2` is HTTP/2, anything else HTTP/1.1). On plain
//! TCP the first bytes are sniffed for the HTTP/2 preface (h2c prior knowledge). hyper's own
//! HTTP/1 and HTTP/2 builders are used rather than hyper-util's `auto` one, because only hyper's
//! HTTP/1 builder exposes `max_header_size` (the 431 guard).
//!
//! hyper's HTTP/1 `header_read_timeout` is turned off: its timer also runs while a keep-alive
//! connection waits for the next request, closing idle connections long before `idle_timeout`.
//! The connection task enforces the limit instead, from the first byte of each request head (and
//! from the accept for the first one, so a connection that sends nothing is still cut); see
//! [`super::io::Activity`].

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use levee_config::ListenerLimits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::io::{Activity, ConnIo, InFlightBody};
use super::{ConnGuard, Settings};
use crate::conn::ConnInfo;
use crate::proxy::Proxy;

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
    let activity = Activity::new();
    let client_ip = crate::conn::client_ip_value(peer.ip());
    let info = |tls: bool, sni: Option<&str>| {
        Arc::new(ConnInfo {
            peer,
            local,
            listener: name.clone(),
            tls,
            sni: sni.map(Arc::from),
            client_ip: client_ip.clone(),
        })
    };

    // The handshake and protocol sniffing are bounded by the header-read timeout, and dropped
    // at once on drain: no request has started yet.
    let ctl = Control {
        drain: guard.drain_signal(),
        abort: guard.abort_signal(),
        activity: activity.clone(),
        idle_timeout: limits.idle_timeout,
        header_read_timeout: None,
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
            };
            let (_, session) = tls_stream.get_ref();
            let h2 = session.alpn_protocol() == Some(b"h2");
            let info = info(true, session.server_name());
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
            };
            let (h2, prefix) = sniffed;
            let io = ConnIo::new(stream, prefix, activity.clone());
            Box::pin(run(io, h2, info(false, None), proxy, limits, ctl)).await;
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
    /// Set for HTTP/1 only: how long a request head may take from its first byte.
    header_read_timeout: Option<Duration>,
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
    let io = TokioIo::new(io);
    let activity = ctl.activity.clone();
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        let info = info.clone();
        let in_flight = activity.request();
        // Boxed: hyper keeps one slot for the service future per connection for the
        // connection's whole life, sized to the future. The request path's future is several
        // KiB; boxed, an idle keep-alive connection holds a pointer instead.
        Box::pin(async move {
            let res = proxy.call(req, info).await;
            res.map(|res| res.map(|body| InFlightBody::new(body, in_flight)))
        })
    });
    let max_header_size = usize::try_from(limits.max_header_size).unwrap_or(usize::MAX);
    if h2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_concurrent_streams)
            .max_pending_accept_reset_streams(limits.http2_max_pending_resets as usize)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
            .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
        let mut conn = Box::pin(builder.serve_connection(io, service));
        drive(conn.as_mut(), |c| c.graceful_shutdown(), ctl).await;
    } else {
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
        let mut conn = Box::pin(builder.serve_connection(io, service).with_upgrades());
        drive(conn.as_mut(), |c| c.graceful_shutdown(), ctl).await;
    }
}

/// Polls `conn` to completion, starting a graceful shutdown on drain or idleness and dropping
/// it on abort or when a request head takes longer than the header-read timeout.
///
/// This runs around every request, so its timers and signal futures are made once and reset,
/// not rebuilt on each wake-up, and the connection is polled first.
async fn drive<C, E>(mut conn: Pin<&mut C>, shutdown: impl Fn(Pin<&mut C>), ctl: Control)
where
    C: Future<Output = Result<(), E>>,
    E: Display,
{
    let Control {
        mut drain,
        mut abort,
        activity,
        idle_timeout,
        header_read_timeout,
    } = ctl;
    let mut shutting_down = false;
    let drained = signalled(&mut drain);
    let aborted = signalled(&mut abort);
    let idle = tokio::time::sleep_until(activity.next_idle_check(idle_timeout));
    // Armed when a request head starts; far away (and ignored) otherwise.
    let head = sleep_until_some(header_read_timeout.and_then(|t| activity.head_deadline(t)));
    tokio::pin!(drained, aborted, idle, head);
    loop {
        tokio::select! {
            biased;
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                }
                return;
            }
            () = &mut aborted => return,
            () = &mut drained, if !shutting_down => {
                shutdown(conn.as_mut());
                shutting_down = true;
            }
            // A head started: arm its deadline.
            () = activity.head_started(), if header_read_timeout.is_some() => {
                let deadline = header_read_timeout.and_then(|t| activity.head_deadline(t));
                head.set(sleep_until_some(deadline));
            }
            () = &mut head => {
                if header_read_timeout.is_some_and(|t| activity.head_expired(t)) {
                    // A partial head cannot be shut down gracefully (hyper waits for it), and
                    // no response is underway, so the connection is simply dropped.
                    tracing::debug!("no complete request head in time; closing");
                    return;
                }
                // The head arrived in time, or a newer one started: re-arm or stand down.
                let deadline = header_read_timeout.and_then(|t| activity.head_deadline(t));
                head.set(sleep_until_some(deadline));
            }
            () = &mut idle, if !shutting_down => {
                if activity.is_idle(idle_timeout) {
                    tracing::debug!("closing idle downstream connection");
                    shutdown(conn.as_mut());
                    shutting_down = true;
                } else {
                    idle.as_mut().reset(activity.next_idle_check(idle_timeout));
                }
            }
        }
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
