//! A route's resilience policy at runtime: retries with their budget, the rate limiter, fault
//! injection and the fallback, built once per snapshot.
//!
//! The stateful parts (the retry budget's counts and the rate limiter's buckets) carry over
//! from the previous snapshot's route of the same name when their parameters are unchanged, so
//! a reload neither refills every bucket nor forgets the retries in flight.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use levee_config::{FailureKind, Fallback, Fault, RateLimitKey, Retry, Route};
use levee_plugin_host::{BoundPlugin, Hook};
use levee_resilience::backoff::Backoff;
use levee_resilience::budget::RetryBudget;
use levee_resilience::rate_limit::{RateLimitParams, RateLimiter};

/// Everything a route does besides matching and forwarding to one cluster.
#[derive(Debug)]
pub(crate) struct RoutePolicy {
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) rate_limit: Option<RateLimitPolicy>,
    pub(crate) fault: Option<Fault>,
    pub(crate) fallback: Option<FallbackPolicy>,
    /// The route's plugins, bound (each `init`ed with the route's config), in config order.
    pub(crate) plugins: Vec<Arc<BoundPlugin>>,
    /// What each binding was made from (name, config, header filters), in the same order.
    pub(crate) plugin_configs: Vec<levee_config::RoutePlugin>,
}

/// The route's `retry` section with its backoff and budget.
#[derive(Debug)]
pub(crate) struct RetryPolicy {
    pub(crate) config: Retry,
    pub(crate) backoff: Backoff,
    pub(crate) budget: Arc<RetryBudget>,
}

/// The route's `rate_limit` section with its buckets.
#[derive(Debug)]
pub(crate) struct RateLimitPolicy {
    key: Option<RateLimitKey>,
    limiter: Arc<RateLimiter>,
    params: (RateLimitParams, u32),
}

/// The route's `fallback` section, with the static response made ready to send.
#[derive(Debug)]
pub(crate) struct FallbackPolicy {
    pub(crate) on: Vec<FailureKind>,
    pub(crate) stale: Option<std::time::Duration>,
    pub(crate) response: Option<StaticResponse>,
}

/// A fixed response, validated at load time.
#[derive(Debug, Clone)]
pub(crate) struct StaticResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

// === impl RoutePolicy ===

impl RoutePolicy {
    /// The policy of `route`, carrying state over from `previous` (the same-named route of the
    /// previous snapshot).
    pub(crate) fn build(
        route: &Route,
        previous: Option<&RoutePolicy>,
        plugins: Vec<Arc<BoundPlugin>>,
    ) -> RoutePolicy {
        RoutePolicy {
            plugins,
            plugin_configs: route.plugins.clone(),
            retry: route.retry.as_ref().map(|retry| {
                let kept = previous
                    .and_then(|p| p.retry.as_ref())
                    .filter(|p| p.config.budget == retry.budget)
                    .map(|p| p.budget.clone());
                RetryPolicy {
                    backoff: Backoff {
                        base: retry.backoff.base,
                        max: retry.backoff.max,
                    },
                    budget: kept.unwrap_or_else(|| {
                        Arc::new(RetryBudget::new(
                            retry.budget.ratio,
                            retry.budget.min_per_second,
                        ))
                    }),
                    config: retry.clone(),
                }
            }),
            rate_limit: route.rate_limit.as_ref().map(|limit| {
                let params = (
                    RateLimitParams {
                        rate_per_sec: limit.requests_per_second,
                        burst: limit.burst,
                    },
                    limit.max_keys,
                );
                let kept = previous
                    .and_then(|p| p.rate_limit.as_ref())
                    .filter(|p| p.params == params && p.key == limit.key)
                    .map(|p| p.limiter.clone());
                RateLimitPolicy {
                    key: limit.key.clone(),
                    limiter: kept.unwrap_or_else(|| Arc::new(RateLimiter::new(params.0, params.1))),
                    params,
                }
            }),
            fault: route.fault.clone(),
            fallback: route.fallback.as_ref().map(FallbackPolicy::new),
        }
    }
}

impl RoutePolicy {
    /// Whether any of the route's plugins implements `hook`.
    pub(crate) fn has_hook(&self, hook: Hook) -> bool {
        self.plugins.iter().any(|p| p.hooks().contains(hook))
    }
}

// === impl RateLimitPolicy ===

impl RateLimitPolicy {
    /// Takes a token for a request from `client` with `headers`, or says when one is back.
    pub(crate) fn check(
        &self,
        client: IpAddr,
        headers: &HeaderMap,
    ) -> Result<(), std::time::Duration> {
        match &self.key {
            None => self.limiter.check(None),
            Some(RateLimitKey::ClientIp) => match client {
                IpAddr::V4(ip) => self.limiter.check(Some(&ip.octets())),
                IpAddr::V6(ip) => self.limiter.check(Some(&ip.octets())),
            },
            // Requests without the header share one bucket: the key's absence is a key too.
            Some(RateLimitKey::Header(name)) => self.limiter.check(Some(
                headers.get(name.as_str()).map_or(&[][..], |v| v.as_bytes()),
            )),
        }
    }
}

// === impl FallbackPolicy ===

impl FallbackPolicy {
    fn new(config: &Fallback) -> FallbackPolicy {
        FallbackPolicy {
            on: config.on.clone(),
            stale: config.stale.as_ref().map(|s| s.max_age),
            response: config.response.as_ref().map(|r| {
                let mut headers = HeaderMap::new();
                for (name, value) in &r.headers {
                    // Validated at load time; anything else is skipped rather than sent.
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(value),
                    ) {
                        headers.append(name, value);
                    }
                }
                if !headers.contains_key(CONTENT_TYPE) {
                    let guess = match r.body_file.as_ref().and_then(|p| p.extension()) {
                        Some(ext) if ext == "html" || ext == "htm" => "text/html; charset=utf-8",
                        Some(ext) if ext == "json" => "application/json",
                        _ => "text/plain; charset=utf-8",
                    };
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static(guess));
                }
                StaticResponse {
                    status: StatusCode::from_u16(r.status)
                        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    headers,
                    body: Bytes::from(r.body.clone()),
                }
            }),
        }
    }

    /// Whether the fallback answers failures of `kind`.
    pub(crate) fn covers(&self, kind: FailureKind) -> bool {
        self.on.contains(&kind)
    }
}
