//! Request failures and the one place that turns them into gateway responses.
//!
//! Every failure names where it came from ([`ErrorSource`]) and whether the request could be
//! tried again ([`RetryType`]), in the manner of pingora, so the retry stage can decide without
//! matching on kinds. The response is JSON with a stable `x-levee-error` header, so clients and
//! dashboards can tell a gateway answer from an upstream one.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use levee_config::{FailureKind, RetryOn};
use serde::Serialize;

use crate::upstream::{TryOutcome, UpstreamError};

/// Header naming the error kind on every gateway-generated error response.
pub const X_LEVEE_ERROR: &str = "x-levee-error";

/// Which side caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something the gateway refuses, or went away.
    Downstream,
    /// The gateway itself (no route, no healthy endpoint, its own timeout).
    Gateway,
    /// The upstream endpoint (refused, reset, broke the protocol).
    Upstream,
}

/// Whether the request may be sent again (used by the retry stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryType {
    /// Never retry: the request is at fault, or the failure is not transient.
    Never,
    /// Safe to retry whatever the method: the upstream never saw the request.
    Safe,
    /// Retry only if the request is idempotent or its body is still buffered: the upstream may
    /// have seen (part of) it.
    IfIdempotent,
}

/// Why a request did not get an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `CONNECT` is refused: the gateway never opens tunnels.
    #[error("the CONNECT method is not allowed")]
    MethodNotAllowed,
    /// The request is malformed (for example an absolute-form target that disagrees with Host).
    #[error("{0}")]
    BadRequest(&'static str),
    /// The request uses a feature the gateway does not implement (a transfer coding other
    /// than `chunked`); 501, as nginx answers.
    #[error("{0}")]
    NotImplemented(&'static str),
    /// No route matches the request.
    #[error("no route matches this request")]
    NoRoute,
    /// The request body is larger than the route allows.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The route's `max_body_size`.
        limit: u64,
    },
    /// The route's cluster has no endpoint to send to.
    #[error("cluster {0} has no healthy endpoint")]
    NoHealthyEndpoint(String),
    /// The upstream response head did not arrive within the route timeout.
    #[error("the upstream did not answer within the route timeout")]
    UpstreamTimeout,
    /// Sending to the upstream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The cluster's (or the picked endpoint's) circuit breaker is open.
    #[error("the circuit of cluster {cluster} is open")]
    CircuitOpen {
        /// The cluster.
        cluster: Arc<str>,
        /// When the breaker lets a trial request through, if known.
        retry_after: Option<Duration>,
    },
    /// A cluster limit (bulkhead) is full.
    #[error("cluster {cluster} is at its {limit} limit")]
    Overloaded {
        /// The cluster.
        cluster: Arc<str>,
        /// Which limit: `max_requests`, `max_pending`, `max_connections` or `max_retries`.
        limit: &'static str,
    },
    /// The route's rate limit refused the request.
    #[error("the rate limit of this route is exceeded")]
    RateLimited {
        /// When a token is next available.
        retry_after: Duration,
    },
    /// Fault injection aborted the request with this status.
    #[error("fault injection aborted the request")]
    FaultAbort(StatusCode),
    /// The request body was malformed or cut short (bad chunked framing, fewer bytes than
    /// declared, the client went away while sending it).
    #[error("the request body is malformed or was cut short")]
    RequestBody,
    /// The client sent its body too slowly to finish within the route timeout.
    #[error("the request body did not arrive within the route timeout")]
    RequestTimeout,
    /// A plugin with `on_error: fail-closed` faulted (or its breaker is open).
    #[error("plugin {0} failed and its policy is fail-closed")]
    PluginFailed(String),
}

/// The JSON body of an error response.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: &'a str,
    request_id: &'a str,
}

// === impl ProxyError ===

impl ProxyError {
    /// The stable kind, sent as `x-levee-error` and in the JSON `error` field.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::MethodNotAllowed => "method-not-allowed",
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::NotImplemented(_) => "not-implemented",
            ProxyError::NoRoute => "no-route",
            ProxyError::PayloadTooLarge { .. } => "payload-too-large",
            ProxyError::NoHealthyEndpoint(_) => "no-healthy-endpoint",
            ProxyError::UpstreamTimeout => "upstream-timeout",
            ProxyError::Upstream(e) => e.kind(),
            ProxyError::CircuitOpen { .. } => "circuit-open",
            ProxyError::Overloaded { .. } => "overloaded",
            ProxyError::RateLimited { .. } => "rate-limited",
            ProxyError::FaultAbort(_) => "fault-injected",
            ProxyError::RequestBody => "bad-request-body",
            ProxyError::RequestTimeout => "request-timeout",
            ProxyError::PluginFailed(_) => "plugin-failed",
        }
    }

    /// The status sent downstream: 502 for upstream failures, 504 for timeouts.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoHealthyEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(UpstreamError::ConnectTimeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::CircuitOpen { .. } | ProxyError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::FaultAbort(status) => *status,
            ProxyError::RequestBody => StatusCode::BAD_REQUEST,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::PluginFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Which side caused the failure.
    pub fn source(&self) -> ErrorSource {
        match self {
            ProxyError::MethodNotAllowed
            | ProxyError::BadRequest(_)
            | ProxyError::NotImplemented(_)
            | ProxyError::PayloadTooLarge { .. }
            | ProxyError::RequestBody
            | ProxyError::RequestTimeout => ErrorSource::Downstream,
            ProxyError::NoRoute
            | ProxyError::NoHealthyEndpoint(_)
            | ProxyError::CircuitOpen { .. }
            | ProxyError::Overloaded { .. }
            | ProxyError::RateLimited { .. }
            | ProxyError::FaultAbort(_)
            | ProxyError::PluginFailed(_) => ErrorSource::Gateway,
            ProxyError::UpstreamTimeout | ProxyError::Upstream(_) => ErrorSource::Upstream,
        }
    }

    /// Whether a retry would be allowed.
    pub fn retry(&self) -> RetryType {
        match self {
            // Nothing reached the upstream application.
            ProxyError::Upstream(e) if e.is_connect() => RetryType::Safe,
            ProxyError::Upstream(_) => RetryType::IfIdempotent,
            ProxyError::UpstreamTimeout => RetryType::IfIdempotent,
            // Another endpoint may have come back by the time of a retry.
            ProxyError::NoHealthyEndpoint(_) => RetryType::Safe,
            ProxyError::MethodNotAllowed
            | ProxyError::BadRequest(_)
            | ProxyError::NotImplemented(_)
            | ProxyError::NoRoute
            | ProxyError::PayloadTooLarge { .. }
            | ProxyError::CircuitOpen { .. }
            | ProxyError::Overloaded { .. }
            | ProxyError::RateLimited { .. }
            | ProxyError::FaultAbort(_)
            | ProxyError::RequestBody
            | ProxyError::RequestTimeout
            | ProxyError::PluginFailed(_) => RetryType::Never,
        }
    }

    /// What this failure tells outlier detection and the breakers about the endpoint it was
    /// sent to: `None` when it says nothing, because the upstream was never reached for it or
    /// the downstream side failed (a client cannot eject an endpoint or open a circuit).
    pub(crate) fn outcome(&self) -> Option<TryOutcome> {
        match self {
            ProxyError::Upstream(e) if e.is_connect() => Some(TryOutcome::ConnectFailure),
            ProxyError::Upstream(_) => Some(TryOutcome::Reset),
            ProxyError::UpstreamTimeout => Some(TryOutcome::Timeout),
            _ => None,
        }
    }

    /// The condition of a route's `retry.on` this failure meets, if any.
    pub(crate) fn retry_on(&self) -> Option<RetryOn> {
        match self {
            ProxyError::Upstream(e) if e.is_connect() => Some(RetryOn::ConnectFailure),
            ProxyError::Upstream(_) => Some(RetryOn::Reset),
            ProxyError::UpstreamTimeout => Some(RetryOn::Timeout),
            // No endpoint now may mean one comes back by the next try; it never reached one.
            ProxyError::NoHealthyEndpoint(_) => Some(RetryOn::ConnectFailure),
            _ => None,
        }
    }

    /// The gateway's response for this failure: JSON `{"error","message","request_id"}`,
    /// `content-type: application/json` and `x-levee-error: <kind>`.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<bytes::Bytes> {
        let mut response = error_response(self.status(), self.kind(), self, request_id);
        if let Some(after) = self.retry_after() {
            // Whole seconds, rounded up: `retry-after: 0` would invite an immediate retry.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }

    /// How long the client should wait, for failures that know it.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProxyError::RateLimited { retry_after } => Some(*retry_after),
            ProxyError::CircuitOpen { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The failure kind a route's `fallback.on` (and a plugin) names, for failures a fallback
    /// may answer.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        Some(match self {
            ProxyError::Upstream(e) if e.is_connect() => FailureKind::ConnectFailure,
            ProxyError::Upstream(_) => FailureKind::Reset,
            ProxyError::UpstreamTimeout => FailureKind::Timeout,
            ProxyError::CircuitOpen { .. } => FailureKind::CircuitOpen,
            ProxyError::NoHealthyEndpoint(_) => FailureKind::NoHealthyEndpoint,
            ProxyError::Overloaded { .. } => FailureKind::Overloaded,
            ProxyError::RateLimited { .. } => FailureKind::RateLimited,
            _ => return None,
        })
    }
}

/// Builds a JSON error response; the single formatter of gateway error bodies.
pub(crate) fn error_response(
    status: StatusCode,
    kind: &'static str,
    message: &dyn fmt::Display,
    request_id: &HeaderValue,
) -> Response<bytes::Bytes> {
    let message = message.to_string();
    let body = ErrorBody {
        error: kind,
        message: &message,
        request_id: request_id.to_str().unwrap_or_default(),
    };
    // Serializing a struct of strings cannot fail; an empty body is still a valid answer.
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(bytes::Bytes::from(json));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(X_LEVEE_ERROR, HeaderValue::from_static(kind));
    headers.insert(super::headers::X_REQUEST_ID, request_id.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn error_response_is_json_with_kind_header_and_request_id() {
        let id = HeaderValue::from_static("req-1");
        let response = ProxyError::NoRoute.to_response(&id);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[X_LEVEE_ERROR], "no-route");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()["x-request-id"], "req-1");
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
        assert_eq!(body["error"], "no-route");
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["message"], "no route matches this request");
    }

    #[test]
    fn timeouts_are_504_and_other_upstream_failures_502() {
        let connect_timeout =
            ProxyError::Upstream(UpstreamError::ConnectTimeout(Duration::from_secs(2)));
        assert_eq!(connect_timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(connect_timeout.kind(), "upstream-connect-timeout");
        assert_eq!(connect_timeout.retry(), RetryType::Safe);
        assert_eq!(connect_timeout.source(), ErrorSource::Upstream);

        let refused = ProxyError::Upstream(UpstreamError::Connect(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(refused.retry(), RetryType::Safe);

        let reset = ProxyError::Upstream(UpstreamError::Closed("reset".into()));
        assert_eq!(reset.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(reset.retry(), RetryType::IfIdempotent);

        assert_eq!(
            ProxyError::UpstreamTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::PayloadTooLarge { limit: 1 }.source(),
            ErrorSource::Downstream
        );
        assert_eq!(ProxyError::NoRoute.retry(), RetryType::Never);
    }
}
