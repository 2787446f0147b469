//! Shared by the fuzz targets: a plain reference router to compare `levee::route::Router`
//! against, and the `LEVEE_FUZZ_IGNORE` switch for checks that hit a known bug.
//!
//! The reference reads the precedence straight from `docs/config.md` ("Route precedence") as
//! one sort over every route, where the real router uses per-host hash maps; the two must
//! always agree.

use std::cmp::Reverse;
use std::sync::LazyLock;

use http::{HeaderMap, Method};
use levee_config::{HostMatch, PathMatch, Route};

static IGNORED: LazyLock<Vec<String>> = LazyLock::new(|| {
    std::env::var("LEVEE_FUZZ_IGNORE")
        .unwrap_or_default()
        .split(',')
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .collect()
});

/// Whether the check called `id` is turned off by `LEVEE_FUZZ_IGNORE=id1,id2` (default: none).
pub fn ignored(id: &str) -> bool {
    IGNORED.iter().any(|ignored| ignored == id)
}

/// Panics with `message` unless the check `id` is ignored.
pub fn fail(id: &str, message: std::fmt::Arguments<'_>) {
    if !ignored(id) {
        panic!("[{id}] {message}");
    }
}

/// The route the docs promise: among the routes whose host matches, the first by (host tier,
/// path kind, path length, number of conditions, file order) whose conditions all match.
/// Conditions are compared as the request carries them (methods upper-cased, header values
/// byte for byte), so a route the real router cannot compile shows up as a disagreement.
pub fn reference<'a>(
    routes: &'a [Route],
    host: Option<&str>,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Option<&'a Route> {
    let host = host.map(|h| normalize(without_port(h)));
    let mut candidates: Vec<(usize, &Route)> = routes
        .iter()
        .enumerate()
        .filter(|(_, r)| host_tier(r, host.as_deref()).is_some())
        .collect();
    candidates.sort_by_key(|&(i, r)| {
        let (kind, len) = match &r.matcher.path {
            PathMatch::Exact(p) => (0, p.len()),
            PathMatch::Prefix(p) => (1, p.len()),
        };
        let conditions = usize::from(!r.matcher.methods.is_empty()) + r.matcher.headers.len();
        let tier = host_tier(r, host.as_deref());
        (tier, kind, Reverse(len), Reverse(conditions), i)
    });
    candidates
        .into_iter()
        .map(|(_, r)| r)
        .find(|r| conditions_hold(r, path, method, headers))
}

/// `None` when the route's host does not match; otherwise smaller is tried first: the exact
/// host, then wildcards by longer suffix, then routes without a host.
fn host_tier(route: &Route, host: Option<&str>) -> Option<(u8, Reverse<usize>)> {
    match (&route.matcher.host, host) {
        (None, _) => Some((2, Reverse(0))),
        (Some(HostMatch::Exact(h)), Some(host)) => {
            (normalize(h) == host).then_some((0, Reverse(0)))
        }
        (Some(HostMatch::Suffix(s)), Some(host)) => {
            let s = normalize(s);
            let matched = host.len() > s.len()
                && host.ends_with(&s)
                && host.as_bytes()[host.len() - s.len() - 1] == b'.';
            matched.then_some((1, Reverse(s.len())))
        }
        (Some(_), None) => None,
    }
}

fn conditions_hold(route: &Route, path: &str, method: &Method, headers: &HeaderMap) -> bool {
    let m = &route.matcher;
    let path_ok = match &m.path {
        PathMatch::Exact(p) => path == p,
        PathMatch::Prefix(p) => path.starts_with(p.as_str()),
    };
    let method_ok = m.methods.is_empty()
        || m.methods
            .iter()
            .any(|wanted| wanted.to_ascii_uppercase() == method.as_str());
    let headers_ok = m.headers.iter().all(|h| {
        let mut present = headers
            .iter()
            .filter(|(name, _)| name.as_str().eq_ignore_ascii_case(&h.name));
        match &h.value {
            None => present.next().is_some(),
            Some(v) => present.any(|(_, have)| have.as_bytes() == v.as_bytes()),
        }
    });
    path_ok && method_ok && headers_ok
}

/// `host:port` or `[v6]:port` to the host alone.
pub fn without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// Lower-case, without one trailing dot.
pub fn normalize(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}
