//! The benchmark's upstream: a small HTTP/1.1 server that answers every request with 64 bytes.
//!
//! It is built into the harness (the `levee-bench upstream` subcommand) rather than using a
//! stock server so that the upstream costs the same, and as little as possible, in every
//! scenario: direct, through Levee and through nginx all hit this exact code.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The response body: 64 bytes, as the benchmark's method states.
pub(crate) const BODY: &[u8; 64] =
    b"levee-bench upstream: 64 bytes of body, the same for each call.\n";

/// Serves until the process is killed. Prints `listening on ADDR` as its first stdout line, so
/// the harness can read the port back when `port` is 0.
pub(crate) fn serve(port: u16, threads: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let local = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {local}")?;
            out.flush()?;
        }
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Running out of descriptors must not end the upstream mid-run; the client
                // sees a refused or reset connection instead.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
