//! Routing: picks the route for a request by host, path, method and headers.
//!
//! The table is built once per snapshot, so all sorting happens at build time and a lookup only
//! walks the few candidates of the request's host. Precedence (see `docs/config.md`):
//!
//! 1. routes for the exact host, then wildcard hosts (the longer suffix first), then routes
//!    without a host;
//! 2. within one host, an exact path beats a prefix, and a longer prefix beats a shorter one;
//! 3. then the route with more conditions wins (a non-empty method list counts as one
//!    condition, each header as one);
//! 4. then file order.
//!
//! The first route in that order whose conditions all match wins. Exact and wildcard hosts are
//! both looked up in hash maps, so routing cost does not grow with the number of hosts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use levee_config::{HostMatch, PathMatch, Route};

use levee_plugin_host::BoundPlugin;

use crate::proxy::policy::RoutePolicy;

/// What the request path needs to know about the route a request took.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    /// The route's name (logs and metrics).
    pub name: Arc<str>,
    /// Name of the cluster to forward to.
    pub cluster: Arc<str>,
    /// Whole-request timeout, from arrival to the end of the upstream response head.
    pub timeout: Duration,
    /// Largest request body in bytes; `None` is no limit.
    pub max_body_size: Option<u64>,
    /// Retries, rate limit, faults and fallback, with their state.
    pub(crate) policy: Arc<RoutePolicy>,
}

/// The routing table of one snapshot. The default table has no routes and matches nothing.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Compiled>,
    /// Route indexes by exact host, in precedence order.
    exact: HashMap<Box<str>, Box<[usize]>>,
    /// Route indexes by wildcard suffix (`example.com` for `*.example.com`), in precedence order.
    wildcard: HashMap<Box<str>, Box<[usize]>>,
    /// Routes without a host, in precedence order.
    any_host: Box<[usize]>,
}

/// One route, compiled for matching.
#[derive(Debug)]
struct Compiled {
    entry: RouteEntry,
    path: PathMatch,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// A condition could not be compiled (the validated config should prevent it); such a
    /// route must never match rather than match too much.
    broken: bool,
}

// === impl Router ===

impl Router {
    /// Builds the table for `routes` (file order). Infallible: the config is already validated.
    pub fn new(routes: &[Route]) -> Router {
        Router::build(routes, None, &mut HashMap::new())
    }

    /// Builds the table for `routes`, carrying each route policy's state (retry budget, rate
    /// limiter buckets) over from the same-named route of `previous`, and giving each route
    /// its bound plugins from `plugins` (by route name).
    pub fn build(
        routes: &[Route],
        previous: Option<&Router>,
        plugins: &mut HashMap<String, Vec<Arc<BoundPlugin>>>,
    ) -> Router {
        let compiled: Vec<Compiled> = routes
            .iter()
            .map(|route| {
                let before = previous
                    .and_then(|p| p.routes.iter().find(|c| *c.entry.name == *route.name))
                    .map(|c| &*c.entry.policy);
                let bound = plugins.remove(&route.name).unwrap_or_default();
                Compiled::new(route, before, bound)
            })
            .collect();

        let mut exact: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut any_host = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            match &route.matcher.host {
                Some(HostMatch::Exact(h)) => exact.entry(normalize_host(h).into()).or_default(),
                Some(HostMatch::Suffix(s)) => wildcard.entry(normalize_host(s).into()).or_default(),
                None => &mut any_host,
            }
            .push(i);
        }

        let order = |mut v: Vec<usize>| -> Box<[usize]> {
            // A stable sort keeps file order as the last tie-breaker.
            v.sort_by_key(|&i| compiled[i].specificity());
            v.into_boxed_slice()
        };
        Router {
            exact: exact.into_iter().map(|(k, v)| (k, order(v))).collect(),
            wildcard: wildcard.into_iter().map(|(k, v)| (k, order(v))).collect(),
            any_host: order(any_host),
            routes: compiled,
        }
    }

    /// The route for a request, or `None` (the gateway answers 404). `host` may carry a port
    /// and any case; `path` is the path without the query.
    pub fn route(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<&RouteEntry> {
        let matches = |candidates: &[usize]| {
            candidates
                .iter()
                .map(|&i| &self.routes[i])
                .find(|r| r.matches(path, method, headers))
                .map(|r| &r.entry)
        };

        if let Some(host) = host {
            let host = normalize_host(strip_port(host));
            if let Some(found) = self.exact.get(&*host).and_then(|c| matches(c)) {
                return Some(found);
            }
            if !self.wildcard.is_empty() {
                // Walking the labels from the left tries the longest suffix first.
                let mut rest: &str = &host;
                while let Some(dot) = rest.find('.') {
                    rest = &rest[dot + 1..];
                    if let Some(found) = self.wildcard.get(rest).and_then(|c| matches(c)) {
                        return Some(found);
                    }
                }
            }
        }
        matches(&self.any_host)
    }

    /// The policy of the route called `name`.
    pub(crate) fn policy(&self, name: &str) -> Option<&Arc<RoutePolicy>> {
        self.routes
            .iter()
            .find(|c| &*c.entry.name == name)
            .map(|c| &c.entry.policy)
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

// === impl Compiled ===

impl Compiled {
    fn new(
        route: &Route,
        previous: Option<&RoutePolicy>,
        plugins: Vec<Arc<BoundPlugin>>,
    ) -> Compiled {
        let mut broken = false;
        let methods = route
            .matcher
            .methods
            .iter()
            .filter_map(|m| {
                let parsed = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok();
                broken |= parsed.is_none();
                parsed
            })
            .collect();
        let headers = route
            .matcher
            .headers
            .iter()
            .filter_map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes()).ok();
                let value = match &h.value {
                    Some(v) => HeaderValue::from_str(v).ok().map(Some),
                    None => Some(None),
                };
                broken |= name.is_none() || value.is_none();
                Some((name?, value?))
            })
            .collect();
        Compiled {
            entry: RouteEntry {
                name: route.name.as_str().into(),
                cluster: route.cluster.as_str().into(),
                timeout: route.timeout,
                max_body_size: route.max_body_size,
                policy: Arc::new(RoutePolicy::build(route, previous, plugins)),
            },
            path: route.matcher.path.clone(),
            methods,
            headers,
            broken,
        }
    }

    /// Sort key within one host tier: smaller is tried first.
    fn specificity(&self) -> (u8, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>) {
        let (kind, len) = match &self.path {
            PathMatch::Exact(p) => (0, p.len()),
            PathMatch::Prefix(p) => (1, p.len()),
        };
        let conditions = usize::from(!self.methods.is_empty()) + self.headers.len();
        (kind, std::cmp::Reverse(len), std::cmp::Reverse(conditions))
    }

    fn matches(&self, path: &str, method: &Method, headers: &HeaderMap) -> bool {
        if self.broken {
            return false;
        }
        let path_ok = match &self.path {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        };
        path_ok
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|(name, value)| match value {
                None => headers.contains_key(name),
                Some(v) => headers.get_all(name).iter().any(|have| have == v),
            })
    }
}

/// Removes the port from an authority (`host:port`, `[v6]:port`).
pub(crate) fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rfind(':') {
        Some(colon) => &authority[..colon],
        None => authority,
    }
}

/// Lower-cases a host and drops a trailing dot, allocating only when something changes.
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use levee_config::{HeaderMatch, RouteMatch};

    fn route(name: &str, host: Option<HostMatch>, path: PathMatch) -> Route {
        Route {
            name: name.into(),
            matcher: RouteMatch {
                host,
                path,
                methods: Vec::new(),
                headers: Vec::new(),
            },
            cluster: format!("c-{name}"),
            timeout: Duration::from_secs(15),
            max_body_size: None,
            retry: None,
            fallback: None,
            rate_limit: None,
            fault: None,
            plugins: Vec::new(),
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    fn exact_host(h: &str) -> Option<HostMatch> {
        Some(HostMatch::Exact(h.into()))
    }

    fn suffix(s: &str) -> Option<HostMatch> {
        Some(HostMatch::Suffix(s.into()))
    }

    fn pick<'a>(router: &'a Router, host: Option<&str>, path: &str) -> Option<&'a str> {
        pick_with(router, host, path, &Method::GET, &HeaderMap::new())
    }

    fn pick_with<'a>(
        router: &'a Router,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<&'a str> {
        router.route(host, path, method, headers).map(|e| &*e.name)
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any_host() {
        let router = Router::new(&[
            route("any", None, prefix("/")),
            route("wild", suffix("example.com"), prefix("/")),
            route("exact", exact_host("api.example.com"), prefix("/")),
        ]);
        assert_eq!(pick(&router, Some("api.example.com"), "/x"), Some("exact"));
        assert_eq!(pick(&router, Some("www.example.com"), "/x"), Some("wild"));
        assert_eq!(pick(&router, Some("other.org"), "/x"), Some("any"));
        assert_eq!(pick(&router, None, "/x"), Some("any"));
    }

    #[test]
    fn longer_wildcard_suffix_wins() {
        let router = Router::new(&[
            route("short", suffix("example.com"), prefix("/")),
            route("long", suffix("eu.example.com"), prefix("/")),
        ]);
        assert_eq!(pick(&router, Some("a.eu.example.com"), "/"), Some("long"));
        assert_eq!(pick(&router, Some("a.us.example.com"), "/"), Some("short"));
    }

    #[test]
    fn wildcard_matches_deep_subdomains_but_not_the_bare_suffix() {
        let router = Router::new(&[route("wild", suffix("example.com"), prefix("/"))]);
        assert_eq!(pick(&router, Some("a.example.com"), "/"), Some("wild"));
        assert_eq!(pick(&router, Some("a.b.example.com"), "/"), Some("wild"));
        assert_eq!(pick(&router, Some("example.com"), "/"), None);
        assert_eq!(pick(&router, Some("badexample.com"), "/"), None);
    }

    #[test]
    fn host_is_case_insensitive_and_ignores_the_port() {
        let router = Router::new(&[
            route("exact", exact_host("api.example.com"), prefix("/")),
            route("v6", exact_host("[::1]"), prefix("/")),
        ]);
        assert_eq!(
            pick(&router, Some("API.Example.COM:8443"), "/"),
            Some("exact")
        );
        assert_eq!(pick(&router, Some("api.example.com."), "/"), Some("exact"));
        assert_eq!(pick(&router, Some("[::1]:8080"), "/"), Some("v6"));
        assert_eq!(pick(&router, Some("[::1]"), "/"), Some("v6"));
    }

    #[test]
    fn falls_through_to_a_lower_host_tier_when_no_route_of_the_host_matches() {
        let router = Router::new(&[
            route("exact-api", exact_host("example.com"), prefix("/api")),
            route("any", None, prefix("/")),
        ]);
        assert_eq!(
            pick(&router, Some("example.com"), "/api/v1"),
            Some("exact-api")
        );
        assert_eq!(pick(&router, Some("example.com"), "/web"), Some("any"));
    }

    #[test]
    fn exact_path_beats_prefix_and_longer_prefix_beats_shorter() {
        let router = Router::new(&[
            route("root", None, prefix("/")),
            route("api", None, prefix("/api")),
            route("api-v1", None, prefix("/api/v1")),
            route("health", None, PathMatch::Exact("/api/health".into())),
        ]);
        assert_eq!(pick(&router, None, "/api/health"), Some("health"));
        assert_eq!(pick(&router, None, "/api/health/x"), Some("api"));
        assert_eq!(pick(&router, None, "/api/v1/users"), Some("api-v1"));
        assert_eq!(pick(&router, None, "/api/v2"), Some("api"));
        assert_eq!(pick(&router, None, "/web"), Some("root"));
    }

    #[test]
    fn more_conditions_win_over_fewer_on_the_same_path() {
        let mut plain = route("plain", None, prefix("/"));
        plain.matcher.methods = vec!["GET".into()];
        let mut both = route("both", None, prefix("/"));
        both.matcher.methods = vec!["GET".into()];
        both.matcher.headers = vec![HeaderMatch {
            name: "x-canary".into(),
            value: Some("1".into()),
        }];
        let router = Router::new(&[plain, both]);

        let mut canary = HeaderMap::new();
        canary.insert("x-canary", HeaderValue::from_static("1"));
        assert_eq!(
            pick_with(&router, None, "/", &Method::GET, &canary),
            Some("both")
        );
        assert_eq!(
            pick_with(&router, None, "/", &Method::GET, &HeaderMap::new()),
            Some("plain")
        );
        assert_eq!(pick_with(&router, None, "/", &Method::POST, &canary), None);
    }

    #[test]
    fn file_order_breaks_remaining_ties() {
        let router = Router::new(&[
            route("first", None, prefix("/a")),
            route("second", None, prefix("/a")),
        ]);
        assert_eq!(pick(&router, None, "/a"), Some("first"));
    }

    #[test]
    fn header_conditions_check_presence_or_value() {
        let mut present = route("present", None, prefix("/p"));
        present.matcher.headers = vec![HeaderMatch {
            name: "x-debug".into(),
            value: None,
        }];
        let mut valued = route("valued", None, prefix("/v"));
        valued.matcher.headers = vec![HeaderMatch {
            name: "x-tenant".into(),
            value: Some("blue".into()),
        }];
        let router = Router::new(&[present, valued]);

        let mut headers = HeaderMap::new();
        headers.insert("x-debug", HeaderValue::from_static("anything"));
        headers.append("x-tenant", HeaderValue::from_static("red"));
        headers.append("x-tenant", HeaderValue::from_static("blue"));
        assert_eq!(
            pick_with(&router, None, "/p", &Method::GET, &headers),
            Some("present")
        );
        assert_eq!(
            pick_with(&router, None, "/v", &Method::GET, &headers),
            Some("valued")
        );
        assert_eq!(pick(&router, None, "/p"), None);
        assert_eq!(pick(&router, None, "/v"), None);
    }

    #[test]
    fn method_list_matches_any_listed_method() {
        let mut r = route("writes", None, prefix("/"));
        r.matcher.methods = vec!["POST".into(), "put".into()];
        let router = Router::new(&[r]);
        let h = HeaderMap::new();
        assert_eq!(
            pick_with(&router, None, "/", &Method::PUT, &h),
            Some("writes")
        );
        assert_eq!(
            pick_with(&router, None, "/", &Method::POST, &h),
            Some("writes")
        );
        assert_eq!(pick_with(&router, None, "/", &Method::GET, &h), None);
    }

    #[test]
    fn entry_carries_cluster_timeout_and_body_limit() {
        let mut r = route("r", None, prefix("/"));
        r.timeout = Duration::from_millis(200);
        r.max_body_size = Some(10);
        let router = Router::new(&[r]);
        let entry = router
            .route(None, "/", &Method::GET, &HeaderMap::new())
            .expect("route");
        assert_eq!(&*entry.cluster, "c-r");
        assert_eq!(entry.timeout, Duration::from_millis(200));
        assert_eq!(entry.max_body_size, Some(10));
    }

    #[test]
    fn empty_router_matches_nothing() {
        assert!(Router::default().is_empty());
        assert_eq!(pick(&Router::default(), Some("a"), "/"), None);
    }
}
