//! Binding listener sockets and the accept loop.
//!
//! Sockets are made with `socket2` so the backlog and `SO_REUSEADDR` are ours to choose. The
//! accept loop never dies of an accept error: running out of file descriptors is logged and
//! retried after a short pause, since closing connections free them again.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use super::{ConnGuard, Settings, Table, Tracker, serve};
use crate::metrics::Metrics;
use crate::proxy::Proxy;

/// Pending connections the kernel queues before `accept`; large enough for bursts.
const BACKLOG: i32 = 1024;

/// Pause after an accept error that is not about one connection (such as `EMFILE`), so the
/// loop does not spin while the process is out of descriptors.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// What a listener's accept loop and its connections share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) name: Arc<str>,
    /// The address actually bound (the real port when port 0 was asked for).
    pub(super) local: SocketAddr,
    pub(super) settings: ArcSwap<Settings>,
    /// Open connections of this listener.
    pub(super) open: Arc<Table>,
    pub(super) proxy: Proxy,
    pub(super) metrics: Arc<Metrics>,
    /// `levee_downstream_connections_parked` of this listener.
    pub(super) parked: prometheus_client::metrics::gauge::Gauge,
    /// `levee_downstream_send_timeouts_total` of this listener.
    pub(super) send_timeouts: prometheus_client::metrics::counter::Counter,
    pub(super) tracker: Arc<Tracker>,
}

/// Binds a listening socket on `address`, returning it and the address actually bound.
pub(super) fn bind(address: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // Lets a restarted gateway bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    let listener = TcpListener::from_std(socket.into())?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Accepts connections until the task is aborted (which closes the socket).
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => admit(stream, peer, &shared),
            // The client gave up before we accepted; nothing is wrong with the listener.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::warn!(listener = %shared.name, error = %e, "accept failed; backing off");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Starts serving an accepted connection, or closes it at once when the listener is full (and
/// has no idle connection to close instead) or the client has its most connections.
fn admit(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let settings = shared.settings.load_full();
    let Some(guard) = ConnGuard::admit(shared, &settings.limits, peer.ip()) else {
        tracing::debug!(listener = %shared.name, %peer, "connection limit reached; closing");
        return;
    };
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(listener = %shared.name, %peer, error = %e, "TCP_NODELAY failed");
    }
    let local = stream.local_addr().unwrap_or(shared.local);
    let proxy = shared.proxy.clone();
    tokio::spawn(serve::serve(stream, peer, local, settings, proxy, guard));
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}
