//! Fuzzes the head the gateway forwards upstream (`levee::proxy::fuzzing::forward_head`: the
//! routing checks on `Host`, then `proxy/headers.rs`), without sockets. A forwarded head must
//! keep the promises of `DESIGN.md` and `proxy/headers.rs`:
//!
//! - `hop-by-hop`: no `keep-alive`, `proxy-connection`, `proxy-authorization`, `trailer` or
//!   `transfer-encoding`; `te` only as `te: trailers`, when the client sent that token;
//!   `connection` and `upgrade` only for an HTTP/1.1 upgrade, as `connection: upgrade`;
//! - `connection`: no header the client's `connection` named, except those the gateway sets
//!   and the end-to-end ones it may not remove (`host`, `authorization`, `cookie`, `content-*`);
//! - `client-address`: on an untrusted listener no `forwarded` or `x-forwarded-client-cert` and
//!   `x-real-ip` is the peer; on a trusted one they pass, and `x-real-ip` is set when absent;
//! - `forwarded`: one `x-forwarded-for` line ending with the peer, one `x-forwarded-proto`;
//! - `request-id`: one `x-request-id`, the gateway's;
//! - `host`: the client's one `Host` as it was, or the target's authority when there was none;
//! - `target`: origin-form, the client's path and query; the method as it was;
//! - `passthrough`: every other header unchanged, values in order.
//!
//! Input, split on `\n`: `METHOD TARGET [VERSION] [tls] [trusted]` (VERSION: `HTTP/1.0`,
//! `HTTP/2`, else HTTP/1.1; `trusted`: the listener trusts its clients' forwarding headers), the
//! peer's IP address (else 192.0.2.1), then one header per line as `name:value`. Unparsable
//! methods, targets, names and values are skipped, as hyper would refuse them.

#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};
use levee::proxy::fuzzing::{conn_info, forward_head};
use levee_fuzz::fail;
use libfuzzer_sys::fuzz_target;

/// Headers the gateway sets itself, whatever the client's `connection` named.
const SET_BY_GATEWAY: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-request-id"];
/// End-to-end headers that a `connection` naming them may not remove (`proxy/headers.rs`).
const END_TO_END: [&str; 6] = [
    "host",
    "authorization",
    "cookie",
    "content-length",
    "content-type",
    "content-encoding",
];
/// The client-address headers, set or kept as the listener trusts its clients.
const CLIENT_ADDRESS: [&str; 3] = ["forwarded", "x-real-ip", "x-forwarded-client-cert"];
/// Removed on their own (`te`, `connection` and `upgrade` are checked apart).
const HOP_BY_HOP: [&str; 8] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "trailer",
    "transfer-encoding",
    "te",
    "connection",
    "upgrade",
];
const REQUEST_ID: &str = "0123456789abcdef0123456789abcdef";

struct Input {
    method: Method,
    uri: Uri,
    version: Version,
    tls: bool,
    trusted: bool,
    peer: IpAddr,
    headers: HeaderMap,
}

fn parse(data: &[u8]) -> Input {
    let mut lines = data.split(|&b| b == b'\n');
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut words = first.split(' ');
    let method =
        Method::from_bytes(words.next().unwrap_or_default().as_bytes()).unwrap_or(Method::GET);
    let uri = words
        .next()
        .and_then(|t| t.parse::<Uri>().ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let rest: Vec<&str> = words.collect();
    let version = match rest.first() {
        Some(&"HTTP/1.0") => Version::HTTP_10,
        Some(&"HTTP/2") => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let tls = rest.contains(&"tls");
    let trusted = rest.contains(&"trusted");
    let peer = std::str::from_utf8(lines.next().unwrap_or_default())
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &b""[..]),
        };
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    Input {
        method,
        uri,
        version,
        tls,
        trusted,
        peer,
        headers,
    }
}

/// The comma-separated tokens of every value of `name`, trimmed and lower-cased.
fn tokens(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let input = parse(data);
    let mut req = Request::new(());
    *req.method_mut() = input.method.clone();
    *req.uri_mut() = input.uri.clone();
    *req.version_mut() = input.version;
    *req.headers_mut() = input.headers.clone();
    let conn = conn_info(input.peer, input.tls, input.trusted);
    let peer = conn.client_ip.clone();
    let request_id = HeaderValue::from_static(REQUEST_ID);
    let Some(out) = forward_head(req, &conn, &request_id) else {
        // Refused: the gateway answers it itself (a 400 or 405), so nothing is forwarded.
        return;
    };
    let sent = &input.headers;
    let got = &out.headers;
    let show = || {
        format!(
            "sent {:?} {} {sent:?}\nforwarded {got:?}",
            input.method, input.uri
        )
    };

    // The upgrade the gateway forwards: HTTP/1.1, an `upgrade` and `connection: upgrade`.
    let upgrade = input.version == Version::HTTP_11
        && sent.contains_key("upgrade")
        && tokens(sent, "connection").iter().any(|t| t == "upgrade");
    for name in HOP_BY_HOP {
        let allowed = match name {
            "te" => {
                values(got, name) == [b"trailers"]
                    && tokens(sent, "te").contains(&"trailers".into())
            }
            "connection" => upgrade && values(got, name) == [b"upgrade"],
            "upgrade" => upgrade && got.get_all(name).iter().count() == 1,
            _ => false,
        };
        if got.contains_key(name) && !allowed {
            fail("hop-by-hop", format_args!("`{name}` forwarded\n{}", show()));
        }
    }

    let named: HashSet<String> = tokens(sent, "connection").into_iter().collect();
    for name in &named {
        let kept = SET_BY_GATEWAY.contains(&name.as_str())
            || (upgrade && (name == "upgrade" || name == "connection"))
            || END_TO_END.contains(&name.as_str())
            || (input.trusted && CLIENT_ADDRESS.contains(&name.as_str()))
            || name == "x-real-ip";
        if !kept && got.contains_key(name.as_str()) {
            fail(
                "connection",
                format_args!("`{name}`, named by `connection`, forwarded\n{}", show()),
            );
        }
    }

    let xff = values(got, "x-forwarded-for");
    let peer = peer.as_bytes();
    let ends_with_peer =
        |v: &[u8]| v == peer || (v.ends_with(peer) && v[..v.len() - peer.len()].ends_with(b", "));
    if xff.len() != 1 || !ends_with_peer(xff[0]) {
        fail(
            "forwarded",
            format_args!(
                "x-forwarded-for {xff:?} is not one line ending with the peer\n{}",
                show()
            ),
        );
    }
    let proto: &[u8] = if input.tls { b"https" } else { b"http" };
    if values(got, "x-forwarded-proto") != [proto] {
        fail(
            "forwarded",
            format_args!("x-forwarded-proto is not {proto:?}\n{}", show()),
        );
    }
    if values(got, "x-request-id") != [REQUEST_ID.as_bytes()] {
        fail(
            "request-id",
            format_args!("x-request-id is not the gateway's\n{}", show()),
        );
    }

    // Routing refuses two `Host`s, so at most one was sent.
    let expected_host: Option<Vec<u8>> = match (sent.get("host"), input.uri.authority()) {
        (Some(host), _) => Some(host.as_bytes().to_vec()),
        (None, Some(authority)) => {
            let host_port = authority
                .as_str()
                .rsplit_once('@')
                .map_or(authority.as_str(), |(_, h)| h);
            Some(host_port.as_bytes().to_vec())
        }
        (None, None) => None,
    };
    let host: Vec<&[u8]> = values(got, "host");
    if host != expected_host.iter().map(Vec::as_slice).collect::<Vec<_>>() {
        fail(
            "host",
            format_args!("host {host:?}, expected {expected_host:?}\n{}", show()),
        );
    }

    let origin_form = out.uri.scheme().is_none() && out.uri.authority().is_none();
    let path = match input.uri.path() {
        "" => "/", // an authority-form target has none
        path => path,
    };
    if !origin_form || out.uri.path() != path || out.uri.query() != input.uri.query() {
        fail(
            "target",
            format_args!("target {} forwarded as {}\n{}", input.uri, out.uri, show()),
        );
    }
    if out.method != input.method {
        fail(
            "target",
            format_args!("method changed to {}\n{}", out.method, show()),
        );
    }

    let real_ip = values(got, "x-real-ip");
    if input.trusted {
        for name in ["forwarded", "x-forwarded-client-cert"] {
            if !named.contains(name) && values(sent, name) != values(got, name) {
                fail(
                    "client-address",
                    format_args!("trusted `{name}` changed\n{}", show()),
                );
            }
        }
        let sent_real_ip = values(sent, "x-real-ip");
        let expected = if sent_real_ip.is_empty() || named.contains("x-real-ip") {
            vec![peer]
        } else {
            sent_real_ip
        };
        if real_ip != expected {
            fail(
                "client-address",
                format_args!("trusted x-real-ip {real_ip:?}\n{}", show()),
            );
        }
    } else if got.contains_key("forwarded")
        || got.contains_key("x-forwarded-client-cert")
        || real_ip != [peer]
    {
        fail(
            "client-address",
            format_args!("an untrusted client's address headers forwarded\n{}", show()),
        );
    }

    for name in sent.keys() {
        let s = name.as_str();
        if HOP_BY_HOP.contains(&s)
            || SET_BY_GATEWAY.contains(&s)
            || CLIENT_ADDRESS.contains(&s)
            || s == "host"
            || named.contains(s)
        {
            continue;
        }
        if values(sent, s) != values(got, s) {
            fail("passthrough", format_args!("`{s}` changed\n{}", show()));
        }
    }
});
