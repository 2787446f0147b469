//! Entry points for the fuzz targets in `fuzz/`; not an API (hidden from the docs, and changed
//! with the targets). Each runs the request path's own code on plain values, without sockets.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use levee_plugin_host::LocalResponse;
use levee_resilience::store::ResponseStore;

use super::{downstream_host, headers, hooks};
use crate::body::ProxyBody;
use crate::conn::ConnInfo;

/// A connection from `peer`, over TLS or not, on a listener that trusts its clients' forwarding
/// headers or not.
pub fn conn_info(peer: IpAddr, tls: bool, trusted: bool) -> ConnInfo {
    ConnInfo {
        peer: SocketAddr::new(peer, 40000),
        local: SocketAddr::from(([127, 0, 0, 1], 8080)),
        listener: Arc::from("fuzz"),
        tls,
        sni: None,
        client_ip: crate::conn::client_ip_value(peer),
        path_normalization: levee_config::PathNormalization::default(),
        trust_client_headers: trusted,
        client_cert: None,
    }
}

/// The head the gateway forwards upstream for `req` on `conn`: the routing checks on `Host`
/// and the target, then the header rewriting. `None` when the gateway answers the request
/// itself instead (`CONNECT`, a bad or second `Host`, a target naming another host).
pub fn forward_head<B>(
    req: Request<B>,
    conn: &ConnInfo,
    request_id: &HeaderValue,
) -> Option<http::request::Parts> {
    if req.method() == Method::CONNECT {
        return None;
    }
    let authority_only = downstream_host(&req).ok()?.1;
    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    let (mut parts, _) = req.into_parts();
    headers::forward_head(
        &mut parts,
        upgrade,
        conn,
        authority_only.as_ref(),
        request_id,
    );
    Some(parts)
}

/// The response the gateway sends for a plugin's `respond`, `replace` or `serve`.
pub fn local_response(local: LocalResponse) -> Response<ProxyBody> {
    hooks::local_response(local)
}

/// The response the gateway sends for a plugin's `shed(status)`.
pub fn shed_response(status: StatusCode) -> Response<ProxyBody> {
    hooks::shed_response(status, "fuzz")
}

/// A response kept with `proceed-and-store`, as `serve-cached` serves it back; `None` when the
/// store refused it.
pub fn store_and_serve(
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<Response<ProxyBody>> {
    let store = ResponseStore::new(1 << 24, 1 << 24);
    let request = hooks::StoreRequest {
        plugin: "fuzz".into(),
        key: "key".into(),
        ttl: Duration::from_secs(60),
        max_entries: 16,
    };
    hooks::keep(&store, &request, status, headers, body);
    hooks::cached(&store, "fuzz", "key")
}
