//! HTTP/1.1 upgrades (WebSocket and friends): once the upstream answers 101, both connections
//! are handed over to a byte tunnel.
//!
//! The tunnel is a detached task: the 101 response has to reach the client before the
//! downstream connection is handed over, so the pipeline cannot wait for the tunnel itself.
//!
//! Who hands the downstream connection over depends on how it is served. Levee's listener
//! serves HTTP/1 with hyper's lower-level API (so that an idle keep-alive connection can give
//! back its buffers) and hands the connection over itself, through the [`UpgradeHandoff`] it
//! puts in the request. Any other server is asked through `hyper::upgrade::on`, which needs
//! its connections served with upgrades enabled.

use std::sync::{Arc, Mutex, PoisonError};

use http::Request;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

/// A byte stream both ways.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A downstream connection after its 101, with any bytes the client sent past the request.
pub type UpgradedIo = Box<dyn Io>;

/// Put in an upgrade request's extensions by a server that hands the connection over itself
/// once the 101 is written. (Cloneable, as extensions must be; only one clone can take it.)
#[derive(Clone)]
pub struct UpgradeHandoff(Arc<Mutex<Option<oneshot::Receiver<UpgradedIo>>>>);

impl std::fmt::Debug for UpgradeHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpgradeHandoff").finish_non_exhaustive()
    }
}

impl UpgradeHandoff {
    /// The handoff for a request, and the sender its server gives the connection to.
    pub fn new() -> (Self, oneshot::Sender<UpgradedIo>) {
        let (tx, rx) = oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(rx)))), tx)
    }

    fn take(&self) -> Option<oneshot::Receiver<UpgradedIo>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Where the downstream side of an upgrade will come from.
pub(crate) enum Downstream {
    Hyper(OnUpgrade),
    Handoff(oneshot::Receiver<UpgradedIo>),
}

impl Downstream {
    /// The downstream side of `req`'s upgrade: its server's handoff, or else hyper's.
    pub(crate) fn of<B>(req: &mut Request<B>) -> Self {
        match req
            .extensions_mut()
            .remove::<UpgradeHandoff>()
            .and_then(|h| h.take())
        {
            Some(rx) => Downstream::Handoff(rx),
            None => Downstream::Hyper(hyper::upgrade::on(req)),
        }
    }

    async fn connect(self) -> Result<UpgradedIo, String> {
        match self {
            Downstream::Hyper(on) => match on.await {
                Ok(upgraded) => Ok(Box::new(TokioIo::new(upgraded))),
                Err(e) => Err(e.to_string()),
            },
            Downstream::Handoff(rx) => rx
                .await
                .map_err(|_| "the downstream connection closed before the handoff".to_owned()),
        }
    }
}

/// Joins the two upgraded connections and copies bytes both ways until either side closes.
/// Failures only end the tunnel; the 101 has already been sent.
pub(crate) fn spawn_tunnel(downstream: Downstream, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let upstream = async { upstream.await.map_err(|e| e.to_string()) };
        let (mut down, up) = match tokio::try_join!(downstream.connect(), upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let mut up = TokioIo::new(up);
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((to_upstream, to_downstream)) => {
                tracing::debug!(to_upstream, to_downstream, "upgraded tunnel closed");
            }
            Err(error) => tracing::debug!(%error, "upgraded tunnel broke"),
        }
    });
}
