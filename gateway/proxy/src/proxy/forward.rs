//! Forwarding: pick an endpoint of the route's cluster and send within the route timeout.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::COOKIE;
use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use levee_balance::{PickContext, hash_key};
use levee_config::HashOn;
use tokio::time::Instant;

use super::error::ProxyError;
use super::limit::BodyStats;
use crate::body::ProxyBody;
use crate::upstream::Cluster;

/// The consistent-hashing key of a request, from what the cluster's `hash_on` names. `None`
/// when the cluster does not hash, or the request lacks the header or cookie.
pub(crate) fn hash_for(
    hash_on: Option<&HashOn>,
    headers: &HeaderMap,
    client: IpAddr,
) -> Option<u64> {
    match hash_on? {
        HashOn::Header(name) => headers.get(name.as_str()).map(|v| hash_key(v.as_bytes())),
        HashOn::Cookie(name) => cookie(headers, name).map(hash_key),
        HashOn::ClientIp => Some(match client {
            IpAddr::V4(ip) => hash_key(&ip.octets()),
            IpAddr::V6(ip) => hash_key(&ip.octets()),
        }),
    }
}

/// The value of cookie `name`, from any `cookie` header.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// Picks an endpoint of `cluster` (reporting it through `on_pick` before sending, so a failure
/// is still attributed to it) and sends `req` to it, giving up at `deadline`. A request body cut
/// off for size turns any failure into 413.
pub(crate) async fn send(
    cluster: &Arc<Cluster>,
    hash: Option<u64>,
    req: Request<ProxyBody>,
    deadline: Instant,
    body: &BodyStats,
    body_limit: Option<u64>,
    on_pick: impl FnOnce(std::net::SocketAddr),
) -> Result<Response<Incoming>, ProxyError> {
    let ctx = PickContext { hash, exclude: &[] };
    let endpoint = cluster
        .pick(&ctx)
        .ok_or_else(|| ProxyError::NoHealthyEndpoint(cluster.name().to_string()))?;
    let address = endpoint.address();
    on_pick(address);

    let in_flight = endpoint.start();
    let sent = std::time::Instant::now();
    let result = tokio::time::timeout_at(deadline, cluster.send(&endpoint, req)).await;
    let too_large = |e: ProxyError| match body_limit {
        Some(limit) if body.too_large() => ProxyError::PayloadTooLarge { limit },
        _ => e,
    };
    match result {
        Ok(Ok(response)) => {
            in_flight.finish(sent.elapsed());
            Ok(response)
        }
        Ok(Err(e)) => Err(too_large(ProxyError::Upstream(e))),
        Err(_elapsed) => {
            // A timeout is a latency observation too: it keeps a stalled endpoint from
            // looking fast to peak-EWMA.
            in_flight.finish(sent.elapsed());
            Err(too_large(ProxyError::UpstreamTimeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hashes_on_header_cookie_or_client_ip() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("alice"));
        headers.append("cookie", HeaderValue::from_static("a=1; session=xyz ; b=2"));
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");

        assert_eq!(
            hash_for(Some(&HashOn::Header("x-user".into())), &headers, ip),
            Some(hash_key(b"alice"))
        );
        assert_eq!(
            hash_for(Some(&HashOn::Cookie("session".into())), &headers, ip),
            Some(hash_key(b"xyz"))
        );
        assert_eq!(
            hash_for(Some(&HashOn::ClientIp), &headers, ip),
            Some(hash_key(&[10, 1, 2, 3]))
        );
        assert_eq!(
            hash_for(Some(&HashOn::Cookie("nope".into())), &headers, ip),
            None
        );
        assert_eq!(hash_for(None, &headers, ip), None);
    }
}
