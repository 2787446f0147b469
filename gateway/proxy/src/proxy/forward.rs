//! Forwarding: tries to an endpoint of the cluster, with the route's retries, within the route
//! timeout. Each try is an [`Attempt`] that owns what it holds.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::COOKIE;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use levee_balance::hash_key;
use levee_config::{FailureKind, HashOn, RetryOn};
use levee_resilience::bulkhead::Slot;
use tokio::time::Instant;

use super::error::{ProxyError, RetryType};
use super::limit::BodyStats;
use super::record::Arrival;
use super::replay::ReplayBody;
use super::retry::Retries;
use crate::body::ProxyBody;
use crate::upstream::{Admission, Cluster, ConnectionSlot, Picked, TryOutcome, UpstreamBody};

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

/// What one forwarding pass made of a request: the last try's response or error, where it
/// went, and the limits it holds.
#[derive(Debug)]
pub(crate) struct Forwarded {
    pub(crate) result: Result<Response<UpstreamBody>, ProxyError>,
    /// The cluster of the pass.
    pub(crate) cluster: Arc<str>,
    /// The endpoint of the last try, when one was picked.
    pub(crate) endpoint: Option<SocketAddr>,
    /// Tries sent to an endpoint in this pass.
    pub(crate) tries: u32,
    /// What the last try holds until its response ends.
    pub(crate) held: Held,
}

/// The places a try holds until its response body ends: in the cluster's request limit, and
/// (HTTP/1.1) among its connections.
#[derive(Debug, Default)]
pub(crate) struct Held {
    _request: Option<Slot>,
    _connection: Option<ConnectionSlot>,
}

/// One try, from its leave to start to its outcome. It owns the breakers' permits, its place
/// in the request limit, its endpoint and its connection slot, and gives them back when it
/// ends: to outlier detection and the breakers when the outcome says something about the
/// endpoint, unrecorded when the downstream side failed.
struct Attempt<'c> {
    cluster: &'c Arc<Cluster>,
    admission: Admission,
    picked: Picked,
    connection: Option<ConnectionSlot>,
}

/// How a try ended.
struct Tried {
    result: Result<Response<UpstreamBody>, ProxyError>,
    endpoint: Option<SocketAddr>,
    held: Held,
}

/// Sends `req` to `cluster` within `deadline`, retrying as the route's policy allows (each
/// retry admitted by `retries`): a retry prefers an endpoint not tried yet, and goes out only
/// after the failed try gave back what it held. The answer is one whole try's response, never
/// a mix of two.
pub(crate) async fn send(
    cluster: &Arc<Cluster>,
    req: &mut Outgoing,
    deadline: Instant,
    body: &BodyStats,
    retries: &mut Retries<'_>,
    arrival: &Arrival,
) -> Forwarded {
    let policy = retries.policy();
    let attempts = policy.map_or(1, |r| r.config.attempts.max(1));
    let idempotent = is_idempotent(&req.parts.method);
    let mut tried: Vec<SocketAddr> = Vec::new();
    // Tries asked for, and tries that reached an endpoint (a try refused before, by a breaker
    // or a limit, counts against `attempts` but sent nothing).
    let (mut attempt, mut tries) = (0, 0);
    loop {
        attempt += 1;
        // A replayable request keeps its head for the next try (or a plugin's resend).
        let replayable = req.body.can_replay();
        let Some(body_now) = req.body.take() else {
            // Callers resend only replayable bodies; a streamed one is never taken twice.
            return Forwarded::failed(cluster, ProxyError::RequestBody);
        };
        let head = if replayable {
            req.parts.clone()
        } else {
            std::mem::replace(&mut req.parts, Request::new(()).into_parts().0)
        };
        let try_deadline = match policy.and_then(|r| r.config.per_try_timeout) {
            Some(per_try) => deadline.min(Instant::now() + per_try),
            None => deadline,
        };
        let last = match Attempt::start(cluster, req.hash, &tried, try_deadline).await {
            Ok(attempt) => {
                tried.push(attempt.endpoint());
                arrival.trying(attempt.endpoint());
                tries += 1;
                attempt
                    .send(Request::from_parts(head, body_now), try_deadline, body)
                    .await
            }
            Err(e) => Tried {
                result: Err(e),
                endpoint: tried.last().copied(),
                held: Held::default(),
            },
        };

        let forwarded = |last: Tried, tries| Forwarded {
            result: last.result,
            cluster: cluster.name().clone(),
            endpoint: last.endpoint,
            tries,
            held: last.held,
        };
        let Some(policy) = policy else {
            return forwarded(last, tries);
        };
        let (condition, safe) = match &last.result {
            Ok(response) => (Some(RetryOn::Status(response.status().as_u16())), false),
            Err(e) => (e.retry_on(), e.retry() == RetryType::Safe),
        };
        let retryable = condition.is_some_and(|c| policy.config.on.contains(&c))
            && (idempotent || safe)
            && req.body.can_replay();
        if !retryable || attempt >= attempts {
            return forwarded(last, tries);
        }
        // The backoff must leave time for the next try to do something.
        let wait = policy.backoff.delay(attempt, &mut rand::rng());
        if Instant::now() + wait >= deadline {
            return forwarded(last, tries);
        }
        // Admitted before the backoff, as Envoy schedules a retry: a refusal answers with the
        // failed try, which still holds its places. Once admitted, the failed try (its
        // response, its connection, its slots) is dropped before the retry waits for its own.
        if !retries.admit(cluster) {
            return forwarded(last, tries);
        }
        drop(last);
        tokio::time::sleep(wait).await;
    }
}

// === impl Forwarded ===

impl Forwarded {
    /// A pass that failed before any try.
    pub(crate) fn failed(cluster: &Cluster, error: ProxyError) -> Self {
        Forwarded {
            result: Err(error),
            cluster: cluster.name().clone(),
            endpoint: None,
            tries: 0,
            held: Held::default(),
        }
    }

    /// The failure kind (and upstream status) of the pass, if it failed in a way a fallback or
    /// a plugin's `on-upstream-failure` may answer.
    pub(crate) fn failure(&self) -> Option<(FailureKind, Option<StatusCode>)> {
        match &self.result {
            Ok(response) if response.status().is_server_error() => {
                Some((FailureKind::Upstream5xx, Some(response.status())))
            }
            Ok(_) => None,
            Err(e) => e.failure_kind().map(|kind| (kind, None)),
        }
    }
}

// === impl Attempt ===

impl<'c> Attempt<'c> {
    /// Leave for one try: the cluster's breaker and request limit, an endpoint (preferring
    /// one not in `tried`), then (HTTP/1.1) a connection slot, waiting at most until
    /// `deadline`.
    async fn start(
        cluster: &'c Arc<Cluster>,
        hash: Option<u64>,
        tried: &[SocketAddr],
        deadline: Instant,
    ) -> Result<Attempt<'c>, ProxyError> {
        let guards = cluster.resilience();
        let admission = guards.admit().map_err(|r| r.into_error(cluster.name()))?;
        let picked = guards
            .pick(cluster, hash, tried)
            .map_err(|r| r.into_error(cluster.name()))?;
        match guards.connection_slot(deadline).await {
            Ok(connection) => Ok(Attempt {
                cluster,
                admission,
                picked,
                connection,
            }),
            Err(refusal) => {
                // Never sent: nothing to record, but a probation probe must go back.
                drop(guards.release(picked, admission));
                Err(refusal.into_error(cluster.name()))
            }
        }
    }

    fn endpoint(&self) -> SocketAddr {
        self.picked.endpoint.address()
    }

    /// Sends `req` within `deadline` and ends the try. The outcome feeds the endpoint's
    /// outlier detection, the breakers and the peak-EWMA latency, unless the request body
    /// failed on the client's side: then the answer is the client's error, and nothing is
    /// recorded.
    async fn send(self, req: Request<ProxyBody>, deadline: Instant, body: &BodyStats) -> Tried {
        let Attempt {
            cluster,
            admission,
            picked,
            connection,
        } = self;
        let guards = cluster.resilience();
        let address = picked.endpoint.address();
        let in_flight = picked.endpoint.start();
        let sent = Instant::now();
        let result = tokio::time::timeout_at(deadline, cluster.send(&picked.endpoint, req)).await;
        let latency = sent.elapsed();
        let timed_out = result.is_err();
        let (result, outcome) = match result {
            Ok(Ok(response)) => {
                let outcome = TryOutcome::Status(response.status().as_u16());
                (Ok(response), Some(outcome))
            }
            Ok(Err(e)) => {
                let error = ProxyError::Upstream(e);
                let outcome = error.outcome();
                (Err(error), outcome)
            }
            Err(_elapsed) => (Err(ProxyError::UpstreamTimeout), Some(TryOutcome::Timeout)),
        };
        // Whatever the upstream client reported, a body that failed on the downstream side
        // decides, and the try then says nothing about the endpoint.
        let (result, outcome) = match result {
            Err(e) => match body.downstream_error(timed_out) {
                Some(downstream) => (Err(downstream), None),
                None => (Err(e), outcome),
            },
            ok => (ok, outcome),
        };
        // A response head is a latency observation, and so is a timeout: it keeps a stalled
        // endpoint from looking fast to peak-EWMA. A slow upload's timeout is the client's.
        if let Some(TryOutcome::Status(_) | TryOutcome::Timeout) = outcome {
            in_flight.finish(latency);
        }
        let request = match outcome {
            Some(outcome) => guards.observe(picked, admission, outcome, latency),
            None => guards.release(picked, admission),
        };
        Tried {
            result,
            endpoint: Some(address),
            // The connection stays busy until the response body ends.
            held: Held {
                _request: request,
                _connection: connection,
            },
        }
    }
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
