//! Forwarding: pick an endpoint of the route's cluster and send within the route timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::COOKIE;
use http::{HeaderMap, Method, Request, Response};
use levee_balance::hash_key;
use levee_config::{HashOn, RetryOn};
use tokio::time::Instant;

use super::error::ProxyError;
use super::limit::BodyStats;
use super::policy::RoutePolicy;
use super::record::Pending;
use super::replay::ReplayBody;
use crate::upstream::{Cluster, TryOutcome, UpstreamBody};

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

/// A request ready for forwarding, and what the retry stage needs to know about it.
pub(crate) struct Outgoing {
    /// The upstream request head; cloned for each try.
    pub(crate) parts: http::request::Parts,
    pub(crate) body: ReplayBody,
    pub(crate) hash: Option<u64>,
}

/// Sends `req` to `cluster` within `deadline`, with the route's retry policy: picks an endpoint
/// (a retry prefers one not tried yet), passes the cluster's breaker and limits, and feeds every
/// outcome to outlier detection and the breaker. The answer is one whole try's response, never a
/// mix of two. A request body cut off for size turns any failure into 413.
pub(crate) async fn send(
    cluster: &Arc<Cluster>,
    policy: &RoutePolicy,
    req: &mut Outgoing,
    deadline: Instant,
    body: &BodyStats,
    body_limit: Option<u64>,
    pending: &mut Pending,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let retry = policy.retry.as_ref();
    let attempts = retry.map_or(1, |r| r.config.attempts.max(1));
    let _active = retry.map(|r| r.budget.request_started());
    let idempotent = is_idempotent(&req.parts.method);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let too_large = |e: ProxyError| match body_limit {
        Some(limit) if body.too_large() => ProxyError::PayloadTooLarge { limit },
        _ => e,
    };

    let mut attempt = 1;
    loop {
        let Some(body_now) = req.body.take() else {
            // Unreachable in practice: a streaming body stops retries before this point.
            return Err(ProxyError::RequestBody("the body was already sent".into()));
        };
        // A replayable request keeps its head for the next try (or a plugin's resend).
        let head = if req.body.can_replay() {
            req.parts.clone()
        } else {
            std::mem::replace(&mut req.parts, Request::new(()).into_parts().0)
        };
        let try_deadline = match retry.and_then(|r| r.config.per_try_timeout) {
            Some(per_try) => deadline.min(Instant::now() + per_try),
            None => deadline,
        };
        let result = try_once(
            cluster,
            Request::from_parts(head, body_now),
            req.hash,
            &mut tried,
            try_deadline,
            pending,
        )
        .await
        .map_err(too_large);

        let Some(retry) = retry else { return result };
        let Some(condition) = retry_condition(&result, &retry.config.on) else {
            return result;
        };
        let safe = idempotent || condition == RetryOn::ConnectFailure;
        if attempt >= attempts || !safe || !req.body.can_replay() || body.too_large() {
            return result;
        }
        // The backoff must leave time for the next try to do something.
        let wait = retry.backoff.delay(attempt, &mut rand::rng());
        if Instant::now() + wait >= deadline {
            return result;
        }
        // The try that just ended is no longer a retry in flight: only the next one counts.
        // The budget and `max_retries` bound retries in flight, so they are taken after the
        // backoff, just before the retry goes out: a request waiting out its backoff holds
        // neither (it holds the failed try's result, which it answers with if refused).
        pending.held.retry = None;
        tokio::time::sleep(wait).await;
        let metrics = &pending.inner.metrics.resilience;
        let route = pending.route.clone().unwrap_or_else(|| Arc::from("none"));
        let Some(budget) = retry.budget.try_retry() else {
            metrics.retry_refused(&route, "budget");
            return result;
        };
        let Some(slot) = cluster.resilience().retry_slot() else {
            metrics.retry_refused(&route, "max_retries");
            return result;
        };
        metrics.retried(&route);
        drop(result);
        attempt += 1;
        pending.attempts += 1;
        pending.held.retry = Some((budget, slot));
    }
}

/// One try: the cluster's breaker and request limit, an endpoint (preferring one not in
/// `tried`), a connection slot, then the send within `try_deadline`. The outcome feeds the
/// endpoint's outlier detection, the breakers and the EWMA. A per-try timeout is `timeout` like
/// the route's; which one expired only matters to the caller's retry decision.
async fn try_once(
    cluster: &Arc<Cluster>,
    req: Request<crate::body::ProxyBody>,
    hash: Option<u64>,
    tried: &mut Vec<SocketAddr>,
    try_deadline: Instant,
    pending: &mut Pending,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let guards = cluster.resilience();
    let admission = guards.admit().map_err(|r| r.into_error(cluster.name()))?;
    let picked = guards
        .pick(cluster, hash, tried)
        .map_err(|r| r.into_error(cluster.name()))?;
    let address = picked.endpoint.address();
    tried.push(address);
    pending.endpoint = Some(address);

    let connection = match guards.connection_slot(try_deadline).await {
        Ok(slot) => slot,
        Err(refusal) => return Err(refusal.into_error(cluster.name())),
    };
    let in_flight = picked.endpoint.start();
    let sent = std::time::Instant::now();
    let result = tokio::time::timeout_at(try_deadline, cluster.send(&picked.endpoint, req)).await;
    let latency = sent.elapsed();
    let (result, outcome) = match result {
        Ok(Ok(response)) => {
            in_flight.finish(latency);
            let outcome = TryOutcome::Status(response.status().as_u16());
            (Ok(response), outcome)
        }
        Ok(Err(e)) => {
            let outcome = if e.is_connect() {
                TryOutcome::ConnectFailure
            } else {
                TryOutcome::Reset
            };
            (Err(ProxyError::Upstream(e)), outcome)
        }
        Err(_elapsed) => {
            // A timeout is a latency observation too: it keeps a stalled endpoint from
            // looking fast to peak-EWMA.
            in_flight.finish(latency);
            (Err(ProxyError::UpstreamTimeout), TryOutcome::Timeout)
        }
    };
    pending.held.request = guards.observe(picked, admission, outcome, latency);
    // The connection stays busy until the response body ends.
    pending.held.connection = connection;
    result
}

/// The retry condition `result` meets, if `on` lists it.
fn retry_condition(
    result: &Result<Response<UpstreamBody>, ProxyError>,
    on: &[RetryOn],
) -> Option<RetryOn> {
    let condition = match result {
        Ok(response) => RetryOn::Status(response.status().as_u16()),
        Err(ProxyError::Upstream(e)) if e.is_connect() => RetryOn::ConnectFailure,
        Err(ProxyError::Upstream(_)) => RetryOn::Reset,
        Err(ProxyError::UpstreamTimeout) => RetryOn::Timeout,
        // No endpoint now may mean one comes back by the next try; it never reached one.
        Err(ProxyError::NoHealthyEndpoint(_)) => RetryOn::ConnectFailure,
        Err(_) => return None,
    };
    on.contains(&condition).then_some(condition)
}

/// RFC 9110 §9.2.2: methods whose repetition has the effect of one request.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
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
