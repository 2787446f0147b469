//! A native stand-in for the gateway, so plugin unit tests run with a plain `cargo test`.
//!
//! Outside `wasm32`, every [`crate::host`] function goes to the calling thread's [`Host`]: an
//! in-memory cache with expiry, counters, captured log lines, a clock that only moves when a test
//! moves it, and cluster health the test sets. Each test runs on its own thread, so tests do not
//! see each other's state. [`Plugin`] drives a [`Policy`] the way the gateway does: `init` with
//! the config text, then only the declared hooks.
//!
//! ```
//! use levee_sdk::testing::{self, Plugin};
//! use levee_sdk::{ClusterHealth, CircuitState, host};
//!
//! testing::set_health("main", ClusterHealth { circuit: CircuitState::Open, ..Default::default() });
//! assert_eq!(host::upstream_health("main").map(|h| h.circuit), Some(CircuitState::Open));
//! testing::advance_ms(1_000);
//! assert_eq!(host::now_ms(), testing::START_MS + 1_000);
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use crate::Policy;
use crate::types::{
    ClusterHealth, FallbackDecision, HeaderList, Hooks, LogLevel, RequestAction, RequestHead,
    ResponseAction, ResponseHead, UpstreamFailure,
};
pub use crate::types::{is_valid_header_name, is_valid_header_value};

/// Where the testing clock starts: 2023-11-14T22:13:20Z, an arbitrary fixed instant so tests
/// never depend on the wall clock.
pub const START_MS: u64 = 1_700_000_000_000;

/// The testing host's state. Reach the calling thread's one with [`with_host`] or the free
/// functions of this module.
#[derive(Debug)]
pub struct Host {
    now_ms: u64,
    clusters: HashMap<String, ClusterHealth>,
    cache: HashMap<String, CacheEntry>,
    cache_max_entries: usize,
    cache_max_value_bytes: usize,
    counters: BTreeMap<String, i64>,
    logs: Vec<(LogLevel, String)>,
}

#[derive(Debug)]
struct CacheEntry {
    value: Vec<u8>,
    expires_at_ms: u64,
}

/// A [`Policy`] driven as the gateway drives it.
///
/// Calling a hook the policy did not declare in [`Policy::HOOKS`], or that its
/// [`Policy::hooks`] left out, panics: the gateway would never call it, so a test that does is
/// testing nothing.
#[derive(Debug)]
pub struct Plugin<P> {
    policy: P,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
}

/// Runs `f` with the calling thread's testing host.
pub fn with_host<R>(f: impl FnOnce(&mut Host) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

/// Puts the calling thread's host back in its starting state.
pub fn reset() {
    with_host(|h| *h = Host::default());
}

/// Sets the health [`crate::host::upstream_health`] reports for `cluster`.
pub fn set_health(cluster: &str, health: ClusterHealth) {
    with_host(|h| h.set_health(cluster, health));
}

/// Moves the clock forward by `ms` milliseconds.
pub fn advance_ms(ms: u64) {
    with_host(|h| h.advance_ms(ms));
}

/// The value of counter `name`; 0 if it was never added to.
pub fn counter(name: &str) -> i64 {
    with_host(|h| h.counter(name))
}

/// The log lines written so far, oldest first.
pub fn logs() -> Vec<(LogLevel, String)> {
    with_host(|h| h.logs().to_vec())
}

/// The headers of `headers` that the host would reject, as `(name, value)`.
pub fn invalid_headers(headers: &HeaderList) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .filter(|(n, v)| !is_valid_header_name(n) || !is_valid_header_value(v))
        .cloned()
        .collect()
}

// === impl Host ===

impl Default for Host {
    fn default() -> Self {
        Self {
            now_ms: START_MS,
            clusters: HashMap::new(),
            cache: HashMap::new(),
            // Generous, like the gateway's defaults; tests that need refusals lower them.
            cache_max_entries: 1024,
            cache_max_value_bytes: 1 << 20,
            counters: BTreeMap::new(),
            logs: Vec::new(),
        }
    }
}

impl Host {
    /// Sets the health reported for `cluster`.
    pub fn set_health(&mut self, cluster: &str, health: ClusterHealth) {
        self.clusters.insert(cluster.to_owned(), health);
    }

    /// Forgets `cluster`, so its health is `None` as for an unknown cluster.
    pub fn remove_cluster(&mut self, cluster: &str) {
        self.clusters.remove(cluster);
    }

    /// Sets the clock, in milliseconds since the Unix epoch.
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Moves the clock forward by `ms` milliseconds; cache entries expire as it passes them.
    pub fn advance_ms(&mut self, ms: u64) {
        self.now_ms = self.now_ms.saturating_add(ms);
    }

    /// Limits the cache to `max_entries` entries of at most `max_value_bytes` each; puts beyond
    /// either limit are refused, as the gateway's are.
    pub fn set_cache_limits(&mut self, max_entries: usize, max_value_bytes: usize) {
        self.cache_max_entries = max_entries;
        self.cache_max_value_bytes = max_value_bytes;
    }

    /// The value of counter `name`; 0 if it was never added to.
    pub fn counter(&self, name: &str) -> i64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// The log lines written so far, oldest first.
    pub fn logs(&self) -> &[(LogLevel, String)] {
        &self.logs
    }

    /// The number of live (unexpired) cache entries.
    pub fn cache_len(&self) -> usize {
        self.cache
            .values()
            .filter(|e| e.expires_at_ms > self.now_ms)
            .count()
    }

    /// See [`crate::host::upstream_health`].
    pub fn upstream_health(&self, cluster: &str) -> Option<ClusterHealth> {
        self.clusters.get(cluster).copied()
    }

    /// See [`crate::host::cache_get`].
    pub fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        self.cache
            .get(key)
            .filter(|e| e.expires_at_ms > self.now_ms)
            .map(|e| e.value.clone())
    }

    /// See [`crate::host::cache_put`].
    pub fn cache_put(&mut self, key: &str, value: &[u8], ttl_ms: u32) -> bool {
        let now = self.now_ms;
        self.cache.retain(|_, e| e.expires_at_ms > now);
        let full = self.cache.len() >= self.cache_max_entries && !self.cache.contains_key(key);
        if value.len() > self.cache_max_value_bytes || full {
            return false;
        }
        self.cache.insert(
            key.to_owned(),
            CacheEntry {
                value: value.to_vec(),
                expires_at_ms: now.saturating_add(u64::from(ttl_ms)),
            },
        );
        true
    }

    /// See [`crate::host::counter_add`].
    pub fn counter_add(&mut self, name: &str, delta: i64) {
        let c = self.counters.entry(name.to_owned()).or_insert(0);
        *c = c.saturating_add(delta);
    }

    /// See [`crate::host::log`].
    pub fn log(&mut self, level: LogLevel, message: &str) {
        self.logs.push((level, message.to_owned()));
    }

    /// See [`crate::host::now_ms`].
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

// === impl Plugin ===

impl<P: Policy> Plugin<P> {
    /// Initialises the policy with `config` as JSON text, as the gateway does; `"null"` for a
    /// route that gives no config.
    pub fn init(config: &str) -> Result<Self, String> {
        Self::init_bytes(config.as_bytes())
    }

    /// Initialises the policy with a raw config blob.
    pub fn init_bytes(config: &[u8]) -> Result<Self, String> {
        P::init(config).map(|policy| Self { policy })
    }

    /// The hooks the gateway would call: those of [`Policy::hooks`] that the policy declared
    /// in [`Policy::HOOKS`].
    pub fn hooks(&self) -> Hooks {
        self.policy.hooks().intersection(P::HOOKS)
    }

    /// The policy itself.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// Calls [`Policy::on_request`].
    pub fn on_request(&mut self, req: &RequestHead) -> RequestAction {
        self.expect_hook(Hooks::ON_REQUEST);
        self.policy.on_request(req)
    }

    /// Calls [`Policy::on_response`]. A `ProceedAndStore` decision is carried out as the host
    /// would for a response with an empty body; see [`Plugin::on_response_with_body`].
    pub fn on_response(&mut self, req: &RequestHead, resp: &ResponseHead) -> ResponseAction {
        self.on_response_with_body(req, resp, &[])
    }

    /// Calls [`Policy::on_response`]; a `ProceedAndStore` decision stores `body` under its key
    /// for its TTL, as the host does with the whole response.
    pub fn on_response_with_body(
        &mut self,
        req: &RequestHead,
        resp: &ResponseHead,
        body: &[u8],
    ) -> ResponseAction {
        self.expect_hook(Hooks::ON_RESPONSE);
        let action = self.policy.on_response(req, resp);
        if let ResponseAction::ProceedAndStore(spec) = &action {
            let ttl_ms = spec.ttl_seconds.saturating_mul(1000);
            with_host(|h| h.cache_put(&spec.key, body, ttl_ms));
        }
        action
    }

    /// Calls [`Policy::on_upstream_failure`].
    pub fn on_upstream_failure(
        &mut self,
        req: &RequestHead,
        failure: &UpstreamFailure,
    ) -> FallbackDecision {
        self.expect_hook(Hooks::ON_UPSTREAM_FAILURE);
        self.policy.on_upstream_failure(req, failure)
    }

    fn expect_hook(&self, hook: Hooks) {
        assert!(
            self.hooks().contains(hook),
            "{hook:?} is not in the policy's hooks ({:?}): the gateway would never call it",
            self.hooks()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host;

    #[test]
    fn cache_entries_expire_with_the_clock() {
        assert!(host::cache_put("k", b"v", 1_000));
        assert_eq!(host::cache_get("k").as_deref(), Some(&b"v"[..]));
        advance_ms(999);
        assert!(host::cache_get("k").is_some());
        advance_ms(1);
        assert_eq!(host::cache_get("k"), None);
    }

    #[test]
    fn cache_refuses_puts_over_its_limits() {
        with_host(|h| h.set_cache_limits(1, 4));
        assert!(!host::cache_put("big", b"12345", 1_000));
        assert!(host::cache_put("a", b"1234", 1_000));
        assert!(!host::cache_put("b", b"1", 1_000));
        assert!(
            host::cache_put("a", b"2", 1_000),
            "overwriting is not a new entry"
        );
    }

    #[test]
    fn counters_logs_and_health_are_recorded() {
        host::counter_add("hits", 2);
        host::counter_add("hits", 3);
        host::log(LogLevel::Warn, "careful");
        assert_eq!(counter("hits"), 5);
        assert_eq!(logs(), vec![(LogLevel::Warn, "careful".to_owned())]);
        assert_eq!(host::upstream_health("main"), None);
        set_health(
            "main",
            ClusterHealth {
                in_flight: 7,
                ..ClusterHealth::default()
            },
        );
        assert_eq!(host::upstream_health("main").map(|h| h.in_flight), Some(7));
        reset();
        assert_eq!(counter("hits"), 0);
        assert_eq!(host::now_ms(), START_MS);
    }

    #[test]
    fn header_validation_matches_http_rules() {
        assert!(is_valid_header_name("x-plugin-version"));
        assert!(!is_valid_header_name("bad name"));
        assert!(!is_valid_header_name(""));
        assert!(is_valid_header_value(b"a b\tc"));
        assert!(!is_valid_header_value(b"a\r\nb"));
        assert!(!is_valid_header_value(b"a\0"));
    }

    #[derive(Debug)]
    struct OnlyRequests;

    impl Policy for OnlyRequests {
        const HOOKS: Hooks = Hooks::ON_REQUEST;

        fn init(_: &[u8]) -> Result<Self, String> {
            Ok(Self)
        }
    }

    #[test]
    #[should_panic(expected = "the gateway would never call it")]
    fn calling_an_undeclared_hook_panics() {
        let mut p = Plugin::<OnlyRequests>::init("null").unwrap();
        assert_eq!(
            p.on_request(&RequestHead::new("GET", "/")),
            RequestAction::proceed()
        );
        p.on_response(&RequestHead::new("GET", "/"), &ResponseHead::new(200));
    }
}
