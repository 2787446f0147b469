//! One active health check of one endpoint: an HTTP request or a TCP connect.
//!
//! HTTP checks go through the endpoint's connection pool, so they use the cluster's protocol and
//! TLS settings and reuse a keep-alive connection like Envoy's checker does; a check never
//! counts as a request for load balancing or outlier detection.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue, USER_AGENT};
use http::{Method, Request};
use http_body::Body;
use http_body_util::BodyExt;
use levee_config::{HealthCheck, HealthCheckKind, HttpHealthCheck};
use tokio::net::TcpStream;

use super::{Pools, UpstreamError};
use crate::body;

/// The most of a check response's body read to look for `body_contains`.
const MAX_CHECK_BODY: usize = 64 * 1024;

/// Why a check failed; the text goes into the health-transition log line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeFailure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("unexpected status {0}")]
    Status(u16),
    #[error("the body does not contain {0:?}")]
    Body(String),
    #[error("reading the body failed: {0}")]
    BodyRead(String),
}

/// Runs `check` against `address` once.
pub(crate) async fn probe(
    pools: &Pools,
    address: SocketAddr,
    check: &HealthCheck,
) -> Result<(), ProbeFailure> {
    let run = async {
        match &check.kind {
            HealthCheckKind::Tcp => TcpStream::connect(address)
                .await
                .map(drop)
                .map_err(ProbeFailure::Connect),
            HealthCheckKind::Http(http) => probe_http(pools, address, http).await,
        }
    };
    tokio::time::timeout(check.timeout, run)
        .await
        .unwrap_or(Err(ProbeFailure::Timeout(check.timeout)))
}

async fn probe_http(
    pools: &Pools,
    address: SocketAddr,
    check: &HttpHealthCheck,
) -> Result<(), ProbeFailure> {
    let host = match &check.host {
        Some(host) => HeaderValue::from_str(host),
        None => HeaderValue::from_str(&address.to_string()),
    }
    .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
    let method = Method::from_bytes(check.method.as_bytes()).unwrap_or(Method::GET);
    let mut req = Request::new(body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = check
        .path
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    req.headers_mut().insert(HOST, host);
    req.headers_mut()
        .insert(USER_AGENT, HeaderValue::from_static("levee-health-check"));

    let response = pools.send(address, req).await?;
    let status = response.status().as_u16();
    if !check
        .expected_statuses
        .iter()
        .any(|&(low, high)| (low..=high).contains(&status))
    {
        return Err(ProbeFailure::Status(status));
    }
    let Some(wanted) = &check.body_contains else {
        // Read nothing more; dropping the body lets the pool decide about the connection.
        return Ok(());
    };
    let body = read_prefix(response.into_body(), MAX_CHECK_BODY).await?;
    if memchr_find(&body, wanted.as_bytes()) {
        Ok(())
    } else {
        Err(ProbeFailure::Body(wanted.clone()))
    }
}

/// Up to `limit` bytes of `body`.
async fn read_prefix<B>(mut body: B, limit: usize) -> Result<Bytes, ProbeFailure>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = Vec::new();
    while out.len() < limit {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(ProbeFailure::BodyRead(e.to_string())),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = limit - out.len();
                    out.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    }
    Ok(Bytes::from(out))
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
