//! HTTP/1.1 upgrades (WebSocket and friends): once the upstream answers 101, both connections
//! are handed over to a byte tunnel.
//!
//! The tunnel is a detached task: the 101 response has to reach the client before hyper hands
//! over the downstream connection, so the pipeline cannot wait for the tunnel itself.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Joins the two upgraded connections and copies bytes both ways until either side closes.
/// Failures only end the tunnel; the 101 has already been sent.
pub(crate) fn spawn_tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((to_upstream, to_downstream)) => {
                tracing::debug!(to_upstream, to_downstream, "upgraded tunnel closed");
            }
            Err(error) => tracing::debug!(%error, "upgraded tunnel broke"),
        }
    });
}
