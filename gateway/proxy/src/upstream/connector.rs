//! Opens upstream connections: TCP with a connect timeout, then TLS when the cluster asks for it.
//!
//! An endpoint's pool calls this for every new connection. Each connection carries a guard that
//! counts it as open (per endpoint, for `/clusters`, and in metrics) until its connection task
//! drops it, so the counts stay right however the connection ends.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::tls::TlsSettings;
use crate::metrics::Metrics;

/// Why a new upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The TCP connect failed (refused, unreachable, ...).
    #[error("connect failed: {0}")]
    Io(#[source] io::Error),
    /// TCP and TLS together took longer than the cluster's `connect_timeout`.
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed (bad certificate, wrong name, no shared protocol, ...).
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
}

// === impl ConnectionCounts ===

/// Open connections per endpoint address of one cluster.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCounts {
    by_address: Mutex<HashMap<SocketAddr, Arc<AtomicU64>>>,
}

impl ConnectionCounts {
    fn counter(&self, address: SocketAddr) -> Arc<AtomicU64> {
        let mut map = self
            .by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Entries whose connections are all closed are dropped, so the map does not grow with
        // every address DNS ever returned.
        map.retain(|addr, c| *addr == address || c.load(Ordering::Relaxed) > 0);
        map.entry(address).or_default().clone()
    }

    /// Connections to `address` open right now.
    pub(crate) fn open(&self, address: SocketAddr) -> u64 {
        self.by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&address)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

// === impl Connector ===

/// The connector of one endpoint's pool: every connection goes to `address`, whatever the
/// request says (it carries the downstream host, for `Host` and `:authority`).
#[derive(Debug)]
pub(crate) struct Connector {
    cluster: Arc<str>,
    address: SocketAddr,
    connect_timeout: Duration,
    tls: Option<TlsSettings>,
    metrics: Arc<Metrics>,
    counts: Arc<ConnectionCounts>,
}

impl Connector {
    pub(crate) fn new(
        cluster: Arc<str>,
        address: SocketAddr,
        connect_timeout: Duration,
        tls: Option<TlsSettings>,
        metrics: Arc<Metrics>,
        counts: Arc<ConnectionCounts>,
    ) -> Self {
        Self {
            cluster,
            address,
            connect_timeout,
            tls,
            metrics,
            counts,
        }
    }

    /// Opens a connection to the endpoint: TCP, then TLS when configured, within
    /// `connect_timeout` for both.
    pub(crate) async fn connect(&self) -> Result<TokioIo<UpstreamStream>, ConnectError> {
        let address = self.address;
        let endpoint = address.to_string();

        let attempt = async {
            let tcp = TcpStream::connect(address)
                .await
                .map_err(ConnectError::Io)?;
            // Requests and responses are written whole by hyper; Nagle only adds latency.
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(Transport::Plain(tcp)),
                Some(tls) => {
                    let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                        .connect(tls.server_name.clone(), tcp)
                        .await
                        .map_err(ConnectError::Tls)?;
                    Ok(Transport::Tls(Box::new(stream)))
                }
            }
        };
        let result = match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout(self.connect_timeout)),
        };

        match result {
            Ok(transport) => {
                self.metrics
                    .upstream_connection_opened(&self.cluster, &endpoint);
                let counter = self.counts.counter(address);
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(TokioIo::new(UpstreamStream {
                    transport,
                    _open: OpenGuard {
                        metrics: self.metrics.clone(),
                        cluster: self.cluster.clone(),
                        endpoint,
                        counter,
                    },
                }))
            }
            Err(error) => {
                tracing::debug!(cluster = %self.cluster, %endpoint, %error, "upstream connect failed");
                self.metrics
                    .upstream_connect_failed(&self.cluster, &endpoint);
                Err(error)
            }
        }
    }
}

// === impl UpstreamStream ===

/// One open upstream connection, plain or TLS, counted as open until dropped.
#[derive(Debug)]
pub(crate) struct UpstreamStream {
    transport: Transport,
    _open: OpenGuard,
}

#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    // Boxed: a TLS session is a few hundred bytes larger than a socket.
    Tls(Box<TlsStream<TcpStream>>),
}

#[derive(Debug)]
struct OpenGuard {
    metrics: Arc<Metrics>,
    cluster: Arc<str>,
    endpoint: String,
    counter: Arc<AtomicU64>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
        self.metrics
            .upstream_connection_closed(&self.cluster, &self.endpoint);
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
