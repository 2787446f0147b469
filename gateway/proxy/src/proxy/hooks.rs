//! The plugin hooks on the request path: what the gateway passes each hook, and how it carries
//! out what the hook decides.
//!
//! Hooks run in the order the route lists its plugins, and only those a plugin implements are
//! called (the host knows from `init`). A plugin fault or an open plugin breaker becomes its
//! `on_error` policy: fail-open (as if the plugin were absent) or fail-closed (503
//! `plugin-failed`). Headers a plugin returns are validated by the host before the gateway sees
//! them.
//!
//! A hook call is awaited: a plugin that runs long yields its worker thread at every epoch
//! tick (see `levee_plugin_host`), so other requests keep being served meanwhile.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AGE, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use levee_config::FailureKind;
use levee_plugin_host::{
    self as host, BoundPlugin, CircuitState, FallbackDecision, LocalResponse, Outcome,
    RequestAction, RequestHead, ResponseAction, ResponseHead, UpstreamFailure,
};
use levee_resilience::breaker::BreakerState;
use levee_resilience::store::ResponseStore;

use super::error::{ProxyError, error_response};
use super::fallback::X_LEVEE_CACHE;
use crate::body::{self, ProxyBody};
use crate::plugins::head_key;

/// What the `on-request` hooks decided, all together.
#[derive(Debug)]
pub(crate) enum OnRequest {
    /// Forward, to this cluster instead of the route's when set.
    Forward { route_to: Option<String> },
    /// Answer with this response.
    Respond(Response<ProxyBody>),
}

/// What the `on-upstream-failure` hooks decided.
#[derive(Debug)]
pub(crate) enum OnFailure {
    /// Go on: the declarative fallback, else the error.
    Propagate,
    /// Answer with this response (`serve`, `serve-cached`, `shed`).
    Respond(Response<ProxyBody>, &'static str),
    /// Send the request once more.
    Resend(Resend),
}

/// A plugin's `retry` or `degrade`: send the request once more, to `cluster` (`None`: the
/// same), after `delay`.
#[derive(Debug)]
pub(crate) struct Resend {
    pub(crate) cluster: Option<String>,
    pub(crate) delay: Duration,
    /// `retry` is a retry, admitted like the route's own; `degrade` is not.
    pub(crate) is_retry: bool,
}

/// A stored copy a plugin asked for with `proceed-and-store`.
#[derive(Debug, Clone)]
pub(crate) struct StoreRequest {
    pub(crate) plugin: String,
    pub(crate) key: String,
    pub(crate) ttl: Duration,
    /// The plugin's `limits.cache_entries`.
    pub(crate) max_entries: u32,
}

/// Runs the `on-request` hooks; header changes apply to `head.headers` as they come.
pub(crate) async fn on_request(
    plugins: &[std::sync::Arc<BoundPlugin>],
    head: &mut RequestParts<'_>,
) -> Result<OnRequest, ProxyError> {
    let mut route_to = None;
    for plugin in plugins {
        let outcome = plugin.on_request(&head.as_head()).await;
        match outcome {
            Outcome::Decided(RequestAction::Proceed(mutation)) => mutation.apply(head.headers),
            Outcome::Decided(RequestAction::Respond(local)) => {
                return Ok(OnRequest::Respond(local_response(local)));
            }
            Outcome::Decided(RequestAction::RouteTo(cluster)) => route_to = Some(cluster),
            Outcome::NotImplemented | Outcome::FailOpen(_) => {}
            Outcome::FailClosed(_) => return Err(failed(plugin)),
        }
    }
    Ok(OnRequest::Forward { route_to })
}

/// Runs the `on-response` hooks on an upstream response head. Returns a replacement response
/// if a plugin asked for one, and the copies plugins asked to store.
pub(crate) async fn on_response(
    plugins: &[std::sync::Arc<BoundPlugin>],
    head: &RequestParts<'_>,
    status: StatusCode,
    headers: &mut HeaderMap,
) -> Result<(Option<Response<ProxyBody>>, Vec<StoreRequest>), ProxyError> {
    let mut stores = Vec::new();
    for plugin in plugins {
        let outcome = plugin
            .on_response(
                &head.as_head(),
                &ResponseHead {
                    status,
                    headers: &*headers,
                },
            )
            .await;
        match outcome {
            Outcome::Decided(ResponseAction::Proceed(mutation)) => mutation.apply(headers),
            Outcome::Decided(ResponseAction::ProceedAndStore(spec)) => {
                spec.mutation.apply(headers);
                stores.push(StoreRequest {
                    plugin: plugin.plugin().name().to_owned(),
                    key: spec.key,
                    ttl: spec.ttl,
                    max_entries: plugin.plugin().params().limits.cache_entries,
                });
            }
            Outcome::Decided(ResponseAction::Replace(local)) => {
                return Ok((Some(local_response(local)), stores));
            }
            Outcome::NotImplemented | Outcome::FailOpen(_) => {}
            Outcome::FailClosed(_) => return Err(failed(plugin)),
        }
    }
    Ok((None, stores))
}

/// The failure context of a hook call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure<'a> {
    pub(crate) kind: FailureKind,
    pub(crate) cluster: &'a str,
    pub(crate) attempt: u32,
    pub(crate) status: Option<StatusCode>,
    pub(crate) elapsed: Duration,
    pub(crate) breaker: Option<BreakerState>,
}

/// Runs the `on-upstream-failure` hooks until one decides something other than `propagate`.
pub(crate) async fn on_failure(
    plugins: &[std::sync::Arc<BoundPlugin>],
    head: &RequestParts<'_>,
    failure: Failure<'_>,
    store: &ResponseStore,
) -> Result<OnFailure, ProxyError> {
    let input = UpstreamFailure {
        kind: host_kind(failure.kind),
        cluster: failure.cluster,
        attempt: failure.attempt,
        status: failure.status,
        elapsed: failure.elapsed,
        circuit: match failure.breaker {
            Some(BreakerState::Open) => CircuitState::Open,
            Some(BreakerState::HalfOpen) => CircuitState::HalfOpen,
            Some(BreakerState::Closed) | None => CircuitState::Closed,
        },
    };
    for plugin in plugins {
        let decision = match plugin.on_upstream_failure(&head.as_head(), &input).await {
            Outcome::Decided(decision) => decision,
            Outcome::NotImplemented | Outcome::FailOpen(_) => continue,
            Outcome::FailClosed(_) => return Err(failed(plugin)),
        };
        let name = plugin.plugin().name();
        match decision {
            FallbackDecision::Propagate => {}
            FallbackDecision::Serve(local) => {
                return Ok(OnFailure::Respond(local_response(local), "plugin"));
            }
            FallbackDecision::ServeCached(key) => match cached(store, name, &key) {
                Some(response) => return Ok(OnFailure::Respond(response, "plugin-cache")),
                None => tracing::debug!(plugin = name, key, "serve-cached: nothing stored"),
            },
            FallbackDecision::Shed(status) => {
                return Ok(OnFailure::Respond(
                    shed_response(status, name),
                    "plugin-shed",
                ));
            }
            FallbackDecision::Retry(spec) => {
                return Ok(OnFailure::Resend(Resend {
                    cluster: spec.cluster,
                    delay: spec.delay,
                    is_retry: true,
                }));
            }
            FallbackDecision::Degrade(cluster) => {
                return Ok(OnFailure::Resend(Resend {
                    cluster: Some(cluster),
                    delay: Duration::ZERO,
                    is_retry: false,
                }));
            }
        }
    }
    Ok(OnFailure::Propagate)
}

/// The request head as hooks see it, borrowed from the request being forwarded.
#[derive(Debug)]
pub(crate) struct RequestParts<'a> {
    pub(crate) method: &'a str,
    pub(crate) authority: &'a str,
    pub(crate) path_with_query: &'a str,
    pub(crate) headers: &'a mut HeaderMap,
    pub(crate) route: &'a str,
    pub(crate) request_id: &'a str,
}

impl RequestParts<'_> {
    fn as_head(&self) -> RequestHead<'_> {
        RequestHead {
            method: self.method,
            authority: self.authority,
            path_with_query: self.path_with_query,
            headers: self.headers,
            route: self.route,
            request_id: self.request_id,
        }
    }
}

/// Keeps a whole response a plugin stored with `proceed-and-store`: its body under the key
/// (what `cache-get` returns), its status and headers next to it.
pub(crate) fn keep(
    store: &ResponseStore,
    request: &StoreRequest,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b'\n');
    for (name, value) in headers {
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.push(b':');
        head.extend_from_slice(value.as_bytes());
        head.push(b'\n');
    }
    let (ttl, cap) = (Some(request.ttl), request.max_entries);
    let plugin = &request.plugin;
    if store.put_bytes_capped(plugin, request.key.as_bytes(), body, ttl, cap) {
        store.put_bytes_capped(plugin, &head_key(&request.key), head.into(), ttl, cap);
    }
}

/// The copy a plugin stored under `key`, as a response marked `x-levee-cache: plugin`.
pub(crate) fn cached(
    store: &ResponseStore,
    plugin: &str,
    key: &str,
) -> Option<Response<ProxyBody>> {
    let body = store.get_bytes(plugin, key.as_bytes())?;
    let head = store.get_bytes(plugin, &head_key(key));
    let mut response = Response::new(body::full(body));
    if let Some(head) = head {
        let mut lines = head.split(|&b| b == b'\n');
        if let Some(status) = lines
            .next()
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
        {
            *response.status_mut() = status;
        }
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(&line[colon + 1..]),
            ) {
                response.headers_mut().append(name, value);
            }
        }
    }
    response
        .headers_mut()
        .insert(X_LEVEE_CACHE, HeaderValue::from_static("plugin"));
    response.headers_mut().remove(AGE);
    Some(response)
}

/// The answer to `shed(status)` from plugin `name`: the gateway's JSON error, `retry-after: 1`.
pub(crate) fn shed_response(status: StatusCode, name: &str) -> Response<ProxyBody> {
    let mut response = error_response(
        status,
        "shed",
        &format!("plugin {name} shed the request"),
        &HeaderValue::from_static(""),
    )
    .map(body::full);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The response for a plugin's `respond`, `replace` or `serve`. The gateway frames it from the
/// body: a plugin's `content-length` and hop-by-hop headers go, as from an upstream response
/// (a `content-length` that disagreed with the body would desynchronise the client's
/// connection, and hyper trusts the header).
pub(crate) fn local_response(local: LocalResponse) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(local.body));
    *response.status_mut() = local.status;
    for (name, value) in local.headers {
        response.headers_mut().append(name, value);
    }
    super::headers::strip_hop_by_hop(response.headers_mut(), false);
    response.headers_mut().remove(CONTENT_LENGTH);
    if !response.headers().contains_key(CONTENT_TYPE) && !response.body_is_empty() {
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

trait BodyIsEmpty {
    fn body_is_empty(&self) -> bool;
}

impl BodyIsEmpty for Response<ProxyBody> {
    fn body_is_empty(&self) -> bool {
        http_body::Body::size_hint(self.body()).exact() == Some(0)
    }
}

fn failed(plugin: &BoundPlugin) -> ProxyError {
    ProxyError::PluginFailed(plugin.plugin().name().to_owned())
}

fn host_kind(kind: FailureKind) -> host::FailureKind {
    match kind {
        FailureKind::ConnectFailure => host::FailureKind::ConnectFailure,
        FailureKind::Reset => host::FailureKind::Reset,
        FailureKind::Timeout => host::FailureKind::Timeout,
        FailureKind::Upstream5xx => host::FailureKind::Upstream5xx,
        FailureKind::CircuitOpen => host::FailureKind::CircuitOpen,
        FailureKind::NoHealthyEndpoint => host::FailureKind::NoHealthyEndpoint,
        FailureKind::Overloaded => host::FailureKind::Overloaded,
        FailureKind::RateLimited => host::FailureKind::RateLimited,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderName, StatusCode};
    use http_body_util::BodyExt;
    use levee_plugin_host::LocalResponse;

    use super::local_response;

    /// Found by the `plugin_boundary` fuzz target (`fuzz/seeds/plugin_boundary/
    /// regression-local-response-framing`): a plugin's `content-length` and
    /// `transfer-encoding` were sent as given, whatever the body.
    #[tokio::test]
    async fn a_local_response_is_framed_by_its_body() {
        let header = |name: &'static str, value: &'static str| {
            (
                HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            )
        };
        let response = local_response(LocalResponse {
            status: StatusCode::OK,
            headers: vec![
                header("content-length", "1000"),
                header("transfer-encoding", "chunked"),
                header("connection", "close, x-internal"),
                header("x-internal", "1"),
                header("x-kept", "yes"),
            ],
            body: Bytes::from_static(b"short"),
        });
        let (parts, body) = response.into_parts();
        let names: Vec<&str> = parts.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept", "content-type"], "{:?}", parts.headers);
        let body = body.collect().await.expect("a full body").to_bytes();
        assert_eq!(body, "short");
    }
}
