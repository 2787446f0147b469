//! Serves a branded maintenance page when forwarding fails.
//!
//! On `on-upstream-failure` for one of the configured failure kinds the plugin answers with a
//! local response: by default a small HTML maintenance page with status 503, a `retry-after`
//! header and `cache-control: no-store` (so no cache keeps the outage page). Other failure kinds
//! propagate to the route's own fallback.
//!
//! Config (all optional):
//! ```json
//! {
//!   "status": 503,
//!   "html": "<h1>Back soon</h1>",
//!   "headers": { "x-brand": "acme" },
//!   "retry_after": 30,
//!   "on": ["connect-failure", "timeout", "upstream-5xx"]
//! }
//! ```
//! - `status`: 200 to 599, default 503.
//! - `html` (served as `text/html`) or `body` (served as `text/plain`), not both; default: a
//!   built-in maintenance page.
//! - `headers`: extra response headers; a `content-type` here wins over the one above.
//! - `retry_after`: seconds for `retry-after`, default 30; `headers` may set it instead.
//! - `on`: the failure kinds to answer, by their config names; default all of them.
//!
//! Each page served adds 1 to the counter `served`.

use std::collections::BTreeMap;

use levee_sdk::{
    FailureKind, FallbackDecision, Hooks, Policy, RequestHead, Response, UpstreamFailure, host,
    is_valid_header_name, is_valid_header_value,
};
use serde::Deserialize;

/// The page served when the config gives neither `html` nor `body`.
pub const DEFAULT_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Down for maintenance</title></head>\n<body style=\"font-family: sans-serif; max-width: \
36em; margin: 4em auto\">\n<h1>We'll be right back</h1>\n<p>This service is briefly unavailable. \
Please try again in a moment.</p>\n</body></html>\n";

/// The `retry-after` value, in seconds, when the config gives none.
pub const DEFAULT_RETRY_AFTER: u32 = 30;

/// The static-fallback policy: the prepared page and the kinds it answers.
#[derive(Debug)]
pub struct StaticFallback {
    page: Response,
    on: Vec<FailureKind>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    retry_after: Option<u32>,
    #[serde(default)]
    on: Option<Vec<FailureKind>>,
}

// === impl StaticFallback ===

impl StaticFallback {
    fn from_config(config: Config) -> Result<Self, String> {
        let status = config.status.unwrap_or(503);
        if !(200..=599).contains(&status) {
            return Err(format!(
                "static-fallback: `status` {status} is not in 200..=599"
            ));
        }
        let page = match (config.html, config.body) {
            (Some(_), Some(_)) => {
                return Err("static-fallback: give `html` or `body`, not both".to_owned());
            }
            (Some(html), None) => Response::new(status).html(html),
            (None, Some(body)) => Response::new(status).text(body),
            (None, None) => Response::new(status).html(DEFAULT_PAGE),
        };
        let mut page = page.header("cache-control", "no-store");
        for (name, value) in &config.headers {
            let name = name.to_ascii_lowercase();
            if !is_valid_header_name(&name) || !is_valid_header_value(value.as_bytes()) {
                return Err(format!("static-fallback: invalid header `{name}: {value}`"));
            }
            page.headers.retain(|(n, _)| *n != name);
            page = page.header(name, value.as_str());
        }
        if page.header_value("retry-after").is_none() {
            let secs = config.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
            page = page.header("retry-after", secs.to_string());
        }
        let on = match config.on {
            Some(on) if on.is_empty() => {
                return Err("static-fallback: `on` lists no failure kinds".to_owned());
            }
            Some(on) => on,
            None => FailureKind::ALL.to_vec(),
        };
        Ok(Self { page, on })
    }
}

impl Policy for StaticFallback {
    const HOOKS: Hooks = Hooks::ON_UPSTREAM_FAILURE;

    fn init(config: &[u8]) -> Result<Self, String> {
        Self::from_config(levee_sdk::config::parse_or_default(config)?)
    }

    fn on_upstream_failure(
        &mut self,
        _req: &RequestHead,
        failure: &UpstreamFailure,
    ) -> FallbackDecision {
        if !self.on.contains(&failure.kind) {
            return FallbackDecision::Propagate;
        }
        host::counter_add("served", 1);
        FallbackDecision::serve(self.page.clone())
    }
}

levee_sdk::export!(StaticFallback);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::testing::{self, Plugin};

    fn fail(kind: FailureKind) -> FallbackDecision {
        fail_with("null", kind)
    }

    fn fail_with(config: &str, kind: FailureKind) -> FallbackDecision {
        let mut p = Plugin::<StaticFallback>::init(config).unwrap();
        p.on_upstream_failure(
            &RequestHead::new("GET", "/"),
            &UpstreamFailure::new(kind, "main"),
        )
    }

    fn page(decision: FallbackDecision) -> Response {
        match decision {
            FallbackDecision::Serve(r) => r,
            other => panic!("expected a page, got {other:?}"),
        }
    }

    #[test]
    fn serves_the_default_maintenance_page_for_every_kind() {
        for kind in FailureKind::ALL {
            let r = page(fail(kind));
            assert_eq!(r.status, 503);
            assert_eq!(r.body, DEFAULT_PAGE.as_bytes());
            assert_eq!(
                r.header_value("content-type"),
                Some(&b"text/html; charset=utf-8"[..])
            );
            assert_eq!(r.header_value("retry-after"), Some(&b"30"[..]));
            assert_eq!(r.header_value("cache-control"), Some(&b"no-store"[..]));
        }
        assert_eq!(testing::counter("served"), FailureKind::ALL.len() as i64);
    }

    #[test]
    fn config_sets_status_page_headers_and_retry_after() {
        let config = r#"{"status": 502, "html": "<p>brand</p>", "retry_after": 7,
            "headers": {"X-Brand": "acme", "content-type": "text/html"}}"#;
        let r = page(fail_with(config, FailureKind::Timeout));
        assert_eq!(r.status, 502);
        assert_eq!(r.body, b"<p>brand</p>");
        assert_eq!(r.header_value("x-brand"), Some(&b"acme"[..]));
        assert_eq!(r.header_value("content-type"), Some(&b"text/html"[..]));
        assert_eq!(r.header_value("retry-after"), Some(&b"7"[..]));
        assert_eq!(
            r.headers
                .iter()
                .filter(|(n, _)| n == "content-type")
                .count(),
            1
        );
    }

    #[test]
    fn plain_body_and_retry_after_from_headers() {
        let config = r#"{"body": "down", "headers": {"retry-after": "120"}}"#;
        let r = page(fail_with(config, FailureKind::Reset));
        assert_eq!(r.body, b"down");
        assert_eq!(
            r.header_value("content-type"),
            Some(&b"text/plain; charset=utf-8"[..])
        );
        assert_eq!(
            r.headers.iter().filter(|(n, _)| n == "retry-after").count(),
            1
        );
        assert_eq!(r.header_value("retry-after"), Some(&b"120"[..]));
    }

    #[test]
    fn kinds_not_listed_propagate() {
        let config = r#"{"on": ["connect-failure", "upstream-5xx"]}"#;
        assert!(matches!(
            fail_with(config, FailureKind::Upstream5xx),
            FallbackDecision::Serve(_)
        ));
        assert_eq!(
            fail_with(config, FailureKind::RateLimited),
            FallbackDecision::Propagate
        );
    }

    #[test]
    fn rejects_bad_config() {
        for bad in [
            r#"{"status": 99}"#,
            r#"{"html": "a", "body": "b"}"#,
            r#"{"headers": {"bad name": "x"}}"#,
            r#"{"headers": {"x-a": "a\r\nb"}}"#,
            r#"{"on": []}"#,
            r#"{"on": ["meteor"]}"#,
            r#"{"page": "x"}"#,
        ] {
            assert!(
                Plugin::<StaticFallback>::init(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }
}
