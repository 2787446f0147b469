//! Test support: upstream servers, clients and a gateway harness for end-to-end tests.
//!
//! Everything binds `127.0.0.1:0` and is torn down on drop, so tests can run in parallel. The
//! builders follow linkerd2-proxy's integration `server.rs`: say what the upstream should do,
//! then `run()` it and read its address and request counters back.

pub mod body;
pub mod certs;
pub mod chaos;
pub mod client;
pub mod h2frames;
pub mod harness;
pub mod plugins;
pub mod process;
pub mod recorder;
pub mod server;
pub mod tcp;
pub mod tempdir;
pub mod websocket;

use std::time::Duration;

pub use certs::{Ca, Leaf};
pub use harness::TestGateway;
pub use process::GatewayProcess;
pub use server::{Server, Upstream};
pub use tempdir::TempDir;

/// The boxed error type used by bodies and clients in tests.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bound on any one test; generous, since CI machines are slow and share two cores.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The path of the gateway binary built for this package (`levee-under-test`).
///
/// A macro so that `env!` expands inside the integration test, where Cargo sets it.
#[macro_export]
macro_rules! levee_bin {
    () => {
        std::path::Path::new(env!("CARGO_BIN_EXE_levee-under-test"))
    };
}

/// Runs `future` and panics if it takes longer than [`TEST_TIMEOUT`].
pub async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    match tokio::time::timeout(TEST_TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// How many times [`eventually`] polls for something that waits on the gateway's timers
/// (health checks, ejections, breakers, drains): 400 polls of 50ms, 20 seconds.
pub const TRIES: usize = 400;

/// Polls `check` every 50ms until it returns true, at most `tries` times. Returns whether it did.
pub async fn eventually<F, Fut>(tries: usize, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The rustls provider every test TLS config is built with (the gateway uses `ring` too).
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// A free loopback port nobody listens on: bound, then released. Used to get "connection
/// refused" from an endpoint.
pub fn closed_port_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr
}
