//! Fuzzes `levee_config::load`: any text, any config path, a disk where every referenced file
//! exists or none does. Loading must never panic, and its answer must keep its documented
//! shape (errors non-empty, 1-based, sorted, inside the file; a config that serialises).
//!
//! A config that loads must also be one the gateway can serve as written: for every route, a
//! request built to satisfy it (the host, the path, the first method, every header) must be one
//! HTTP can carry, and `levee::route::Router` must route it as the documented precedence does
//! (`levee_fuzz::reference`). A route the validator accepts but that no request can reach is a
//! silent misconfiguration.
//!
//! Input: byte 0 picks the file system (bit 0) and the config path (bits 1-2); the rest is the
//! file's text, decoded as lossy UTF-8 so every input is a text.

#![no_main]

use std::path::Path;
use std::str::FromStr;

use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};
use levee::route::Router;
use levee_config::{Config, FileSystem, HostMatch, PathMatch, Route, Source};
use levee_fuzz::{fail, reference};
use libfuzzer_sys::fuzz_target;

/// A disk where every path is a file, or none is.
struct FixedDisk(bool);

impl FileSystem for FixedDisk {
    fn is_file(&self, _path: &Path) -> bool {
        self.0
    }
}

/// Config paths with different shapes: relative, absolute, bare file name, no parent at all.
const PATHS: [&str; 4] = [
    "deploy/levee.yaml",
    "/etc/levee/levee.yaml",
    "levee.yaml",
    "/",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let disk = FixedDisk(selector & 1 == 1);
    let path = Path::new(PATHS[usize::from((selector >> 1) & 3)]);
    let text = String::from_utf8_lossy(rest);
    let source = Source { path, text: &text };

    match levee_config::load(&source, &disk) {
        Ok(config) => {
            assert!(
                !config.listeners.is_empty(),
                "a valid config has a listener"
            );
            // The admin `/config` endpoint serialises the config; that must not fail.
            if let Err(e) = serde_json::to_string(&config) {
                panic!("a validated config does not serialise: {e}");
            }
            check_routes(&config);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "load returned an empty error list");
            // Generous: any of CR, LF or CRLF may end a line, plus one past the last line.
            let lines = 2 + text.bytes().filter(|&b| b == b'\n' || b == b'\r').count();
            for e in &errors.0 {
                assert!(e.line >= 1 && e.column >= 1, "positions are 1-based: {e}");
                assert!(
                    e.line <= lines,
                    "error past the end of the file ({lines} lines): {e}"
                );
                assert!(!e.message.is_empty(), "an error without a message: {e:?}");
                assert_eq!(e.file, path, "errors name the file given");
            }
            assert!(
                errors.0.is_sorted_by_key(|e| (e.line, e.column)),
                "errors are not sorted by position: {errors}"
            );
            // Display is what `levee validate` prints.
            let _ = errors.to_string();
        }
    }
});

/// Every route of a valid config is reachable, and routed as documented.
fn check_routes(config: &Config) {
    let router = Router::new(&config.routes);
    for route in &config.routes {
        let Some((host, path, method, headers)) = request_for(route) else {
            continue;
        };
        let got = router.route(host.as_deref(), &path, &method, &headers);
        let want = reference(&config.routes, host.as_deref(), &path, &method, &headers);
        let (got, want) = (got.map(|e| &*e.name), want.map(|r| r.name.as_str()));
        if want.is_none() {
            fail(
                "unreachable-host",
                format_args!(
                    "route `{}` accepts host {:?} that no request can match",
                    route.name, route.matcher.host
                ),
            );
        } else if got != want {
            fail(
                "router",
                format_args!(
                    "a request for route `{}` was routed to {got:?}, the documented precedence \
                     says {want:?}: {route:?}",
                    route.name
                ),
            );
        }
    }
}

/// A request that satisfies `route`, as the gateway would see it (host from the `Host` header,
/// the path out of the parsed request target), or `None` after reporting why there is none.
fn request_for(route: &Route) -> Option<(Option<String>, String, Method, HeaderMap)> {
    let m = &route.matcher;
    let host = match &m.host {
        None => None,
        Some(HostMatch::Exact(h)) => Some(h.clone()),
        Some(HostMatch::Suffix(s)) => Some(format!("a.{s}")),
    };
    if let Some(h) = &host
        && HeaderValue::from_str(h).is_err()
    {
        fail(
            "host-header",
            format_args!(
                "route `{}`: host {h:?} cannot be sent in a Host header",
                route.name
            ),
        );
        return None;
    }
    let wanted = match &m.path {
        PathMatch::Exact(p) | PathMatch::Prefix(p) => p,
    };
    // The router sees `uri().path()`: what survives parsing the request target.
    let path = match PathAndQuery::from_str(wanted) {
        Ok(parsed) if parsed.path() == wanted => parsed.path().to_owned(),
        parsed => {
            let what = parsed.map_or_else(
                |e| e.to_string(),
                |p| format!("arrives as path {:?}", p.path()),
            );
            fail(
                "path",
                format_args!(
                    "route `{}`: path {wanted:?} can never be requested ({what})",
                    route.name
                ),
            );
            return None;
        }
    };
    let method = match m.methods.first() {
        None => Method::GET,
        Some(name) => match Method::from_bytes(name.as_bytes()) {
            Ok(method) => method,
            Err(_) => {
                fail(
                    "method",
                    format_args!("route `{}`: method {name:?} is not a method", route.name),
                );
                return None;
            }
        },
    };
    let mut headers = HeaderMap::new();
    for h in &m.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes());
        let value = HeaderValue::from_bytes(h.value.as_deref().unwrap_or("1").as_bytes());
        // hyper trims the whitespace around a received value, so such a value never arrives.
        let trimmed = h
            .value
            .as_ref()
            .is_some_and(|v| v.trim_matches([' ', '\t']) != v);
        let (Ok(name), Ok(value), false) = (name, value, trimmed) else {
            fail(
                "header",
                format_args!("route `{}`: header {h:?} cannot be sent", route.name),
            );
            return None;
        };
        headers.append(name, value);
    }
    Some((host, path, method, headers))
}
