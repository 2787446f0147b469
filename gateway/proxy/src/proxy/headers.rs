//! Header rewriting between downstream and upstream: hop-by-hop removal, forwarding headers and
//! the request id.
//!
//! Hop-by-hop headers describe one connection, not the message (RFC 9110 §7.6.1), so a proxy
//! must drop them; passing `connection` or `transfer-encoding` through lets a client steer the
//! gateway's own connection to the upstream (request smuggling).

use bytes::{BufMut, BytesMut};
use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, FORWARDED,
    HOST, HeaderName, HeaderValue, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{Extensions, HeaderMap, Uri};

use crate::conn::ConnInfo;

/// The request id header, kept when valid and generated otherwise.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The client address chain.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The client address, as nginx's `proxy_set_header X-Real-IP $remote_addr` sets it.
pub(crate) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// The verified client certificate, as Envoy's XFCC.
pub(crate) const X_FORWARDED_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-client-cert");
/// The scheme the client used to reach the gateway.
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The longest incoming request id kept; longer ones are replaced (they bloat every log line).
const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether `headers` ask for an HTTP/1.1 upgrade (`connection: upgrade` and an `upgrade`).
pub(crate) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && has_token(headers, &CONNECTION, "upgrade")
}

/// Removes hop-by-hop headers: `connection` and every header it names (but `Host`), `keep-alive`,
/// `proxy-connection`, `proxy-authorization`, `te` (except `te: trailers`, which gRPC needs),
/// `trailer`, `transfer-encoding` and `upgrade`. With `keep_upgrade`, `connection: upgrade` and
/// `upgrade` stay, so an upgrade can be forwarded.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of these; one pass over the names (mostly enum comparisons)
    // is far cheaper than a hashed removal of each of them, twice per request.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let upgrade = if keep_upgrade {
        headers.remove(UPGRADE)
    } else {
        None
    };
    match headers.get_all(CONNECTION).iter().count() {
        0 => {}
        1 => {
            if let Some(value) = headers.remove(CONNECTION) {
                remove_named(headers, &value);
            }
        }
        _ => {
            let values: Vec<HeaderValue> = headers.get_all(CONNECTION).iter().cloned().collect();
            headers.remove(CONNECTION);
            for value in &values {
                remove_named(headers, value);
            }
        }
    }
    let te_trailers = has_token(headers, &TE, "trailers");
    for name in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, upgrade);
    }
}

/// Whether `name` is one of the headers [`strip_hop_by_hop`] removes on its own (headers that
/// only `connection` names are found through `connection`, which is one of these).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == PROXY_AUTHORIZATION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes the headers a `connection` value names, except the end-to-end ones the message
/// cannot do without (see [`is_end_to_end`]).
fn remove_named(headers: &mut HeaderMap, connection: &HeaderValue) {
    for token in tokens(connection) {
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes())
            && !is_end_to_end(&name)
        {
            headers.remove(name);
        }
    }
}

/// Headers that `connection` may not remove: they say where the message goes, who sends it
/// and what its body is, so dropping them would change the message, not the connection
/// (`Connection: close, host` must not send the request upstream without its host). Envoy
/// likewise never lets `connection` nominate the headers it routes and frames by.
fn is_end_to_end(name: &HeaderName) -> bool {
    name == HOST
        || name == AUTHORIZATION
        || name == COOKIE
        || name == CONTENT_LENGTH
        || name == CONTENT_TYPE
        || name == CONTENT_ENCODING
        || name == X_REQUEST_ID
        || name == X_FORWARDED_FOR
        || name == X_FORWARDED_PROTO
}

/// Whether the request's `transfer-encoding` is anything but one `chunked`: the gateway
/// re-frames bodies, so another coding (`gzip, chunked`) would reach the upstream undone and
/// unannounced. Such requests get 501, as nginx answers them.
pub(crate) fn has_foreign_transfer_coding(headers: &HeaderMap) -> bool {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter().flat_map(tokens);
    match (codings.next(), codings.next()) {
        (None, _) => false,
        (Some(only), None) => !only.eq_ignore_ascii_case("chunked"),
        (Some(_), Some(_)) => true,
    }
}

/// The upstream request head from a downstream one: the origin-form target only (the endpoint
/// decides the authority), no extensions, hop-by-hop headers removed (the upgrade ones kept
/// when `upgrade`), the forwarding headers set ([`set_forwarding`]), the client's address and
/// certificate as far as its listener trusts it ([`set_client_address`], [`set_client_cert`])
/// and the request id.
pub(crate) fn forward_head(
    parts: &mut http::request::Parts,
    upgrade: bool,
    conn: &ConnInfo,
    authority_only: Option<&HeaderValue>,
    request_id: &HeaderValue,
) {
    parts.uri = match parts.uri.path_and_query() {
        Some(target) if parts.uri.scheme().is_none() => Uri::from(target.clone()),
        // An absolute form such as `http://host#frag` or `http://host?q` has no `/` before its
        // query, or nothing at all, which is no request target (`as_str` reads nothing as `/`).
        Some(target) => match target.as_str() {
            text if text.starts_with('/') => Uri::try_from(text),
            text => Uri::try_from(format!("/{text}")),
        }
        .unwrap_or_else(|_| Uri::from_static("/")),
        None => Uri::from_static("/"),
    };
    parts.extensions = Extensions::new();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    set_forwarding(
        &mut parts.headers,
        &conn.client_ip,
        conn.tls,
        authority_only,
    );
    set_client_address(
        &mut parts.headers,
        &conn.client_ip,
        conn.trust_client_headers,
    );
    set_client_cert(
        &mut parts.headers,
        conn.client_cert.as_ref(),
        conn.trust_client_headers,
    );
    parts.headers.insert(X_REQUEST_ID, request_id.clone());
}

/// Appends `client` to `x-forwarded-for` (joining earlier values into one line), sets
/// `x-forwarded-proto`, and makes sure a `host` header is present when the request named its
/// host only in the URI (HTTP/2 `:authority`, HTTP/1.1 absolute-form).
pub(crate) fn set_forwarding(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    tls: bool,
    host: Option<&HeaderValue>,
) {
    let forwarded = match headers.get_all(&X_FORWARDED_FOR).iter().count() {
        0 => Some(client.clone()),
        _ => {
            let mut joined = BytesMut::new();
            for value in headers.get_all(&X_FORWARDED_FOR) {
                joined.put_slice(value.as_bytes());
                joined.put_slice(b", ");
            }
            joined.put_slice(client.as_bytes());
            HeaderValue::from_maybe_shared(joined.freeze()).ok()
        }
    };
    if let Some(forwarded) = forwarded {
        headers.insert(X_FORWARDED_FOR, forwarded);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(host) = host
        && !headers.contains_key(HOST)
    {
        headers.insert(HOST, host.clone());
    }
}

/// Sets `x-real-ip` to `client` (the peer address). An untrusted client's `forwarded` and
/// `x-real-ip` are removed first, so the upstream never reads an address the client made up;
/// a `trusted` one's (another proxy's) are kept.
pub(crate) fn set_client_address(headers: &mut HeaderMap, client: &HeaderValue, trusted: bool) {
    if !trusted {
        headers.remove(FORWARDED);
        headers.insert(X_REAL_IP, client.clone());
    } else if !headers.contains_key(&X_REAL_IP) {
        headers.insert(X_REAL_IP, client.clone());
    }
}

/// Sets `x-forwarded-client-cert` to `cert`, the connection's verified client certificate (when
/// the listener forwards it). An untrusted client's own value is removed first (Envoy's
/// `SANITIZE_SET`), so no client can claim a certificate it did not present; a `trusted` one's
/// is kept and `cert` appended to it (`APPEND_FORWARD`).
pub(crate) fn set_client_cert(headers: &mut HeaderMap, cert: Option<&HeaderValue>, trusted: bool) {
    if !trusted {
        headers.remove(&X_FORWARDED_CLIENT_CERT);
    }
    let Some(cert) = cert else { return };
    let value = match headers.get(&X_FORWARDED_CLIENT_CERT) {
        Some(earlier) => {
            let mut joined = BytesMut::from(earlier.as_bytes());
            joined.put_slice(b",");
            joined.put_slice(cert.as_bytes());
            HeaderValue::from_maybe_shared(joined.freeze()).unwrap_or_else(|_| cert.clone())
        }
        None => cert.clone(),
    };
    headers.insert(X_FORWARDED_CLIENT_CERT, value);
}

/// The incoming `x-request-id` if the client is `trusted` and the id valid (visible ASCII, 1 to
/// 128 characters), else a new one of 128 random bits as 32 lower-case hex characters.
pub(crate) fn request_id(headers: &HeaderMap, trusted: bool) -> HeaderValue {
    if trusted && let Some(id) = headers.get(&X_REQUEST_ID) {
        let bytes = id.as_bytes();
        if !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes.iter().all(|b| b.is_ascii_graphic())
        {
            return id.clone();
        }
    }
    generate_request_id()
}

fn generate_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits: u128 = rand::random();
    let mut out = [0u8; 32];
    for (i, byte) in bits.to_be_bytes().iter().enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Whether any value of `name` holds `token` in its comma-separated list (case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(token)))
}

/// The comma-separated tokens of a header value, trimmed, in their original case.
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn strips_hop_by_hop_and_headers_named_by_connection() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic x"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    /// Found by the `forward_headers` fuzz target (`fuzz/seeds/forward_headers/
    /// regression-connection-names-host`): `connection: host` dropped the `Host` the request
    /// was routed by, so the upstream got the endpoint's address instead.
    #[test]
    fn keeps_host_when_connection_names_it() {
        let mut h = map(&[
            ("host", "shop.example"),
            ("connection", "Host, x-secret"),
            ("x-secret", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["host"], "shop.example");
    }

    /// Found by the `forward_headers` fuzz target (`fuzz/seeds/forward_headers/
    /// regression-absolute-form-fragment`): an absolute-form target whose path is empty before
    /// a `#` was forwarded with an empty request target instead of `/`.
    #[test]
    fn forwards_an_empty_path_as_slash() {
        let (mut parts, ()) = http::Request::get("http://example.com#frag")
            .body(())
            .expect("request")
            .into_parts();
        let id = HeaderValue::from_static("id");
        let conn = crate::proxy::fuzzing::conn_info("192.0.2.1".parse().expect("ip"), false, false);
        forward_head(&mut parts, false, &conn, None, &id);
        assert_eq!(parts.uri.to_string(), "/");
    }

    #[test]
    fn keeps_te_trailers_for_grpc() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn keeps_upgrade_headers_for_an_upgrade() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn appends_client_to_forwarded_for() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        set_forwarding(&mut h, &HeaderValue::from_static("::1"), true, None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, ::1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn client_cert_header_is_replaced_unless_trusted_then_appended() {
        let ours = HeaderValue::from_static("Hash=ab;DNS=c.test");
        let mut h = map(&[("x-forwarded-client-cert", "Hash=forged")]);
        set_client_cert(&mut h, None, false);
        assert!(!h.contains_key("x-forwarded-client-cert"));
        let mut h = map(&[("x-forwarded-client-cert", "Hash=forged")]);
        set_client_cert(&mut h, Some(&ours), false);
        assert_eq!(h["x-forwarded-client-cert"], "Hash=ab;DNS=c.test");
        let mut h = map(&[("x-forwarded-client-cert", "Hash=front")]);
        set_client_cert(&mut h, Some(&ours), true);
        assert_eq!(
            h["x-forwarded-client-cert"],
            "Hash=front,Hash=ab;DNS=c.test"
        );
    }

    #[test]
    fn keeps_valid_request_id_and_replaces_invalid_ones() {
        let h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(request_id(&h, true), "abc-123");
        assert_ne!(request_id(&h, false), "abc-123");
        let long = "a".repeat(129);
        for bad in ["", "has space", long.as_str()] {
            let h = map(&[("x-request-id", bad)]);
            let id = request_id(&h, true);
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
        assert_ne!(generate_request_id(), generate_request_id());
    }
}
