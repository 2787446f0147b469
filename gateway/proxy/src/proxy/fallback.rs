//! The declarative fallback: when forwarding fails with a kind the route's `fallback.on`
//! lists, answer with the last good copy (serve-stale) if there is one young enough, else with
//! the static response, else let the gateway's error through.
//!
//! Stale copies are whole `200` answers to `GET`s, kept in the snapshot's response store (the
//! same store backs the plugins' cache) under the request's host and target. A stale answer says
//! so: `x-levee-cache: stale` and an `age` header (RFC 9111 §5.1).

use bytes::Bytes;
use http::header::{AGE, HeaderValue};
use http::{HeaderMap, Response, StatusCode, Uri};
use levee_resilience::store::{ResponseStore, StoredResponse};

use super::policy::FallbackPolicy;
use crate::body::{self, ProxyBody};

/// Response header that marks an answer from the stale store.
pub const X_LEVEE_CACHE: &str = "x-levee-cache";

/// How the fallback answered, for the access log and metrics.
pub(crate) const SERVED_STALE: &str = "stale";
/// See [`SERVED_STALE`].
pub(crate) const SERVED_STATIC: &str = "static";

/// The store key of a `GET` for `host` and `uri`: host (with any port) and path with query.
pub(crate) fn stale_key(host: &str, uri: &Uri) -> String {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut key = String::with_capacity(host.len() + target.len());
    key.push_str(&host.to_ascii_lowercase());
    key.push_str(target);
    key
}

/// The fallback answer, if the route has one that applies: a stale copy for `stale_key`, else
/// the static response.
pub(crate) fn respond(
    fallback: &FallbackPolicy,
    stale_key: Option<&str>,
    store: &ResponseStore,
) -> Option<(Response<ProxyBody>, &'static str)> {
    if let (Some(max_age), Some(key)) = (fallback.stale, stale_key)
        && let Some((stored, age)) = store.get(key, max_age)
    {
        let mut response = Response::new(body::full(stored.body.clone()));
        *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
        *response.headers_mut() = stored.headers.clone();
        let headers = response.headers_mut();
        headers.insert(X_LEVEE_CACHE, HeaderValue::from_static("stale"));
        headers.insert(AGE, HeaderValue::from(age.as_secs()));
        return Some((response, SERVED_STALE));
    }
    let fixed = fallback.response.as_ref()?;
    let mut response = Response::new(body::full(fixed.body.clone()));
    *response.status_mut() = fixed.status;
    *response.headers_mut() = fixed.headers.clone();
    Some((response, SERVED_STATIC))
}

/// Keeps a whole `200` body as the last good copy for `key`.
pub(crate) fn keep(
    store: &ResponseStore,
    key: String,
    status: StatusCode,
    mut headers: HeaderMap,
    body: Bytes,
) {
    // The copy is served later with its own framing and age.
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(AGE);
    store.put(&key, StoredResponse::new(status.as_u16(), headers, body));
}
