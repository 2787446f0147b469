//! Keeps the last good copy of GET responses and serves it, marked stale, when the upstream
//! fails.
//!
//! - on-response: a `200` to a `GET` is sent on with `proceed-and-store` under the key
//!   `GET <authority><path-with-query>` for `ttl_seconds`, so the host keeps the whole response.
//!   Responses that must not be shared are not kept: `cache-control: no-store` or `private`, a
//!   `set-cookie`, or a request with `authorization`.
//! - on-upstream-failure of a `GET`: serve the kept copy, or propagate when there is none (and
//!   always for other methods, or for failure kinds not in `on`).
//!
//! # Who builds the stale response: `mode`
//! - `plugin` (the default): the plugin builds it, so the marking is in its control. Beside the
//!   host's copy it keeps a small head entry of its own (`cache-put`, key + `#head`) with the
//!   time the copy was stored and the headers a body needs to be read right (`content-type`,
//!   `content-encoding`, ...). On failure it reads the body with `cache-get` and serves
//!   `200` with those headers, `x-levee-stale: plugin` (name configurable) and `age`.
//! - `host`: answers `serve-cached(key)`; the host rebuilds the response with all its stored
//!   headers and marks it in its own way.
//!
//! Config (all optional): `{ "ttl_seconds": 300, "mode": "plugin", "mark_header":
//! "x-levee-stale", "on": [failure kinds] }`. `on` defaults to every kind but `rate-limited`:
//! a rate limit is the gateway refusing on purpose, which a stale copy should not undo.
//!
//! Counters: `stored`, `served_stale`, `stale_miss`.

use levee_sdk::{
    FailureKind, FallbackDecision, HeaderList, Hooks, Policy, RequestHead, Response,
    ResponseAction, ResponseHead, UpstreamFailure, host, is_valid_header_name,
};
use serde::Deserialize;

/// The copy's lifetime when the config gives none: 5 minutes.
pub const DEFAULT_TTL_SECONDS: u32 = 300;
/// The header that marks a stale copy, when the config names none.
pub const DEFAULT_MARK_HEADER: &str = "x-levee-stale";
/// The value of the mark header on copies the plugin serves.
pub const MARK_VALUE: &str = "plugin";
/// Response headers kept with the copy in `plugin` mode: those needed to use the body.
pub const KEPT_HEADERS: [&str; 6] = [
    "content-type",
    "content-encoding",
    "content-language",
    "etag",
    "last-modified",
    "vary",
];

/// The serve-stale policy.
#[derive(Debug)]
pub struct ServeStale {
    ttl_seconds: u32,
    mode: Mode,
    mark_header: String,
    on: Vec<FailureKind>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    ttl_seconds: Option<u32>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    mark_header: Option<String>,
    #[serde(default)]
    on: Option<Vec<FailureKind>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    #[default]
    Plugin,
    Host,
}

/// The plugin's own record of a kept copy: when it was stored, and its kept headers.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    stored_at_ms: u64,
    headers: HeaderList,
}

/// The cache key of `req`'s response.
pub fn key(req: &RequestHead) -> String {
    format!("{} {}{}", req.method, req.authority, req.path_with_query)
}

fn head_key(key: &str) -> String {
    format!("{key}#head")
}

// === impl Head ===

impl Head {
    // One `name: value` line per header after a first line with the time: header values cannot
    // hold CR or LF, so lines need no escaping.
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{}\n", self.stored_at_ms).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let stored_at_ms = std::str::from_utf8(lines.next()?).ok()?.parse().ok()?;
        let mut headers = Vec::new();
        for line in lines {
            let at = line.windows(2).position(|w| w == b": ")?;
            let name = std::str::from_utf8(&line[..at]).ok()?;
            headers.push((name.to_owned(), line[at + 2..].to_vec()));
        }
        Some(Self {
            stored_at_ms,
            headers,
        })
    }
}

// === impl ServeStale ===

impl ServeStale {
    fn shareable(req: &RequestHead, resp: &ResponseHead) -> bool {
        let cache_control = resp
            .header_str("cache-control")
            .unwrap_or("")
            .to_ascii_lowercase();
        let forbidden = cache_control
            .split(',')
            .map(str::trim)
            .any(|d| d == "no-store" || d == "private");
        !forbidden && resp.header("set-cookie").is_none() && req.header("authorization").is_none()
    }

    fn serve_kept(&self, key: &str) -> FallbackDecision {
        let head = host::cache_get(&head_key(key)).and_then(|h| Head::decode(&h));
        let (Some(head), Some(body)) = (head, host::cache_get(key)) else {
            host::counter_add("stale_miss", 1);
            return FallbackDecision::Propagate;
        };
        host::counter_add("served_stale", 1);
        let age_secs = host::now_ms().saturating_sub(head.stored_at_ms) / 1000;
        let mut page = Response::new(200).body(body);
        page.headers = head.headers;
        FallbackDecision::serve(
            page.header(self.mark_header.as_str(), MARK_VALUE)
                .header("age", age_secs.to_string()),
        )
    }
}

impl Policy for ServeStale {
    const HOOKS: Hooks = Hooks::ON_RESPONSE.union(Hooks::ON_UPSTREAM_FAILURE);

    fn init(config: &[u8]) -> Result<Self, String> {
        let config: Config = levee_sdk::config::parse_or_default(config)?;
        let ttl_seconds = config.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
        if ttl_seconds == 0 {
            return Err("serve-stale: `ttl_seconds` must be at least 1".to_owned());
        }
        let mark_header = config
            .mark_header
            .unwrap_or_else(|| DEFAULT_MARK_HEADER.to_owned())
            .to_ascii_lowercase();
        if !is_valid_header_name(&mark_header) {
            return Err(format!(
                "serve-stale: invalid `mark_header` `{mark_header}`"
            ));
        }
        let on = config.on.unwrap_or_else(|| {
            FailureKind::ALL
                .into_iter()
                .filter(|k| *k != FailureKind::RateLimited)
                .collect()
        });
        Ok(Self {
            ttl_seconds,
            mode: config.mode,
            mark_header,
            on,
        })
    }

    fn on_response(&mut self, req: &RequestHead, resp: &ResponseHead) -> ResponseAction {
        if !req.is("GET") || resp.status != 200 || !Self::shareable(req, resp) {
            return ResponseAction::proceed();
        }
        let key = key(req);
        if self.mode == Mode::Plugin {
            let head = Head {
                stored_at_ms: host::now_ms(),
                headers: KEPT_HEADERS
                    .iter()
                    .filter_map(|n| resp.header(n).map(|v| ((*n).to_owned(), v.to_vec())))
                    .collect(),
            };
            let ttl_ms = self.ttl_seconds.saturating_mul(1000);
            // Without its head entry a copy is never served, so do not ask the host to keep it.
            if !host::cache_put(&head_key(&key), &head.encode(), ttl_ms) {
                return ResponseAction::proceed();
            }
        }
        host::counter_add("stored", 1);
        ResponseAction::proceed_and_store(key, self.ttl_seconds)
    }

    fn on_upstream_failure(
        &mut self,
        req: &RequestHead,
        failure: &UpstreamFailure,
    ) -> FallbackDecision {
        if !req.is("GET") || !self.on.contains(&failure.kind) {
            return FallbackDecision::Propagate;
        }
        match self.mode {
            Mode::Plugin => self.serve_kept(&key(req)),
            Mode::Host => FallbackDecision::serve_cached(key(req)),
        }
    }
}

levee_sdk::export!(ServeStale);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::testing::{self, Plugin};

    fn get() -> RequestHead {
        RequestHead::new("GET", "/items?page=2").with_authority("shop.example")
    }

    fn ok() -> ResponseHead {
        ResponseHead::new(200)
            .with_header("content-type", "application/json")
            .with_header("x-upstream-only", "1")
    }

    fn timeout() -> UpstreamFailure {
        UpstreamFailure::new(FailureKind::Timeout, "main")
    }

    #[test]
    fn stores_a_get_200_and_serves_it_marked_after_a_failure() {
        let mut p = Plugin::<ServeStale>::init(r#"{"ttl_seconds": 60}"#).unwrap();
        let action = p.on_response_with_body(&get(), &ok(), b"[1,2]");
        assert_eq!(
            action,
            ResponseAction::proceed_and_store("GET shop.example/items?page=2", 60)
        );
        testing::advance_ms(12_500);
        let FallbackDecision::Serve(r) = p.on_upstream_failure(&get(), &timeout()) else {
            panic!("expected the stale copy");
        };
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"[1,2]");
        assert_eq!(r.header_value("x-levee-stale"), Some(&b"plugin"[..]));
        assert_eq!(r.header_value("age"), Some(&b"12"[..]));
        assert_eq!(
            r.header_value("content-type"),
            Some(&b"application/json"[..])
        );
        assert_eq!(r.header_value("x-upstream-only"), None);
        assert_eq!(testing::counter("stored"), 1);
        assert_eq!(testing::counter("served_stale"), 1);
    }

    #[test]
    fn an_expired_copy_is_not_served() {
        let mut p = Plugin::<ServeStale>::init(r#"{"ttl_seconds": 10}"#).unwrap();
        p.on_response_with_body(&get(), &ok(), b"x");
        testing::advance_ms(10_000);
        assert_eq!(
            p.on_upstream_failure(&get(), &timeout()),
            FallbackDecision::Propagate
        );
        assert_eq!(testing::counter("stale_miss"), 1);
    }

    #[test]
    fn host_mode_answers_serve_cached() {
        let mut p = Plugin::<ServeStale>::init(r#"{"mode": "host"}"#).unwrap();
        assert_eq!(
            p.on_response(&get(), &ok()),
            ResponseAction::proceed_and_store(key(&get()), DEFAULT_TTL_SECONDS)
        );
        assert_eq!(
            p.on_upstream_failure(&get(), &timeout()),
            FallbackDecision::serve_cached("GET shop.example/items?page=2")
        );
    }

    #[test]
    fn only_shareable_get_200s_are_kept() {
        let mut p = Plugin::<ServeStale>::init("null").unwrap();
        let post = RequestHead::new("POST", "/items");
        assert_eq!(p.on_response(&post, &ok()), ResponseAction::proceed());
        assert_eq!(
            p.on_response(&get(), &ResponseHead::new(404)),
            ResponseAction::proceed()
        );
        let private = ok().with_header("cache-control", "max-age=60, Private");
        assert_eq!(p.on_response(&get(), &private), ResponseAction::proceed());
        let cookie = ok().with_header("set-cookie", "s=1");
        assert_eq!(p.on_response(&get(), &cookie), ResponseAction::proceed());
        let authed = get().with_header("authorization", "Bearer x");
        assert_eq!(p.on_response(&authed, &ok()), ResponseAction::proceed());
        assert_eq!(testing::counter("stored"), 0);
    }

    #[test]
    fn other_methods_and_rate_limits_propagate() {
        let mut p = Plugin::<ServeStale>::init("null").unwrap();
        p.on_response_with_body(&get(), &ok(), b"x");
        let post = RequestHead::new("POST", "/items?page=2").with_authority("shop.example");
        assert_eq!(
            p.on_upstream_failure(&post, &timeout()),
            FallbackDecision::Propagate
        );
        let limited = UpstreamFailure::new(FailureKind::RateLimited, "main");
        assert_eq!(
            p.on_upstream_failure(&get(), &limited),
            FallbackDecision::Propagate
        );
        assert!(matches!(
            p.on_upstream_failure(&get(), &timeout()),
            FallbackDecision::Serve(_)
        ));
    }

    #[test]
    fn a_refused_head_entry_means_no_store() {
        testing::with_host(|h| h.set_cache_limits(0, 0));
        let mut p = Plugin::<ServeStale>::init("null").unwrap();
        assert_eq!(p.on_response(&get(), &ok()), ResponseAction::proceed());
    }

    #[test]
    fn head_entries_round_trip() {
        let head = Head {
            stored_at_ms: 42,
            headers: vec![
                ("etag".into(), b"\"a: b\"".to_vec()),
                ("vary".into(), vec![0xff]),
            ],
        };
        assert_eq!(Head::decode(&head.encode()), Some(head));
        assert_eq!(Head::decode(b"nope"), None);
    }

    #[test]
    fn rejects_bad_config() {
        assert!(Plugin::<ServeStale>::init(r#"{"ttl_seconds": 0}"#).is_err());
        assert!(Plugin::<ServeStale>::init(r#"{"mark_header": "a b"}"#).is_err());
        assert!(Plugin::<ServeStale>::init(r#"{"mode": "both"}"#).is_err());
    }
}
