//! A test plugin that tags traffic with its configured version: `x-plugin-version: <version>`
//! on the upstream request (on-request) and on the downstream response (on-response).
//!
//! Two builds with different configs (or the same build reloaded with a new config) are told
//! apart by the header, which is what the gateway's hot-swap tests look for. Each on-request
//! also adds 1 to the counter `requests`.
//!
//! Config: a JSON string (`"v2"`), or
//! `{ "version": "v2", "header": "x-plugin-version", "on_response": true, "report_headers": false }`.
//! Without config the version is `unset`. `on_response: false` tags requests only: the gateway
//! then never calls `on-response` (the benchmark uses it to measure one `on-request` per
//! request). `report_headers: true` also names, on the response, the headers `on-response` was
//! given: `x-tagger-request-headers` and `x-tagger-response-headers`, comma-separated in the
//! order received (the tests of a route's `request_headers` and `response_headers` read them).

use levee_sdk::{
    HeaderMutation, Hooks, Policy, RequestAction, RequestHead, ResponseAction, ResponseHead, host,
};
use serde::Deserialize;

/// The header used when the config names none.
pub const DEFAULT_HEADER: &str = "x-plugin-version";

/// The tagger policy: the header name and the value it sets.
#[derive(Debug)]
pub struct Tagger {
    header: String,
    version: String,
    on_response: bool,
    report_headers: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawConfig {
    Version(String),
    Full(FullConfig),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FullConfig {
    version: String,
    #[serde(default)]
    header: Option<String>,
    #[serde(default = "yes")]
    on_response: bool,
    #[serde(default)]
    report_headers: bool,
}

fn yes() -> bool {
    true
}

// === impl Tagger ===

impl Tagger {
    fn tag(&self) -> HeaderMutation {
        HeaderMutation::new().set(self.header.as_str(), self.version.as_str())
    }
}

impl Policy for Tagger {
    const HOOKS: Hooks = Hooks::ON_REQUEST.union(Hooks::ON_RESPONSE);

    fn init(config: &[u8]) -> Result<Self, String> {
        if levee_sdk::config::is_absent(config) {
            return Ok(Self {
                header: DEFAULT_HEADER.to_owned(),
                version: "unset".to_owned(),
                on_response: true,
                report_headers: false,
            });
        }
        let full = match levee_sdk::config::parse::<RawConfig>(config)? {
            RawConfig::Version(version) => FullConfig {
                version,
                header: None,
                on_response: true,
                report_headers: false,
            },
            RawConfig::Full(c) => c,
        };
        let FullConfig {
            version,
            header,
            on_response,
            report_headers,
        } = full;
        if version.is_empty() {
            return Err("tagger: `version` must not be empty".to_owned());
        }
        Ok(Self {
            header: header.unwrap_or_else(|| DEFAULT_HEADER.to_owned()),
            version,
            on_response,
            report_headers,
        })
    }

    fn hooks(&self) -> Hooks {
        if self.on_response {
            Self::HOOKS
        } else {
            Self::HOOKS.difference(Hooks::ON_RESPONSE)
        }
    }

    fn on_request(&mut self, _req: &RequestHead) -> RequestAction {
        host::counter_add("requests", 1);
        RequestAction::proceed_with(self.tag())
    }

    fn on_response(&mut self, req: &RequestHead, resp: &ResponseHead) -> ResponseAction {
        let mut tag = self.tag();
        if self.report_headers {
            tag = tag
                .set("x-tagger-request-headers", names(&req.headers))
                .set("x-tagger-response-headers", names(&resp.headers));
        }
        ResponseAction::proceed_with(tag)
    }
}

/// The names in `headers`, comma-separated.
fn names(headers: &[(String, Vec<u8>)]) -> String {
    headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

levee_sdk::export!(Tagger);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::testing::{self, Plugin};

    fn tag_of(action: &RequestAction, name: &str) -> Option<String> {
        match action {
            RequestAction::Proceed(m) => m.get(name).map(|v| String::from_utf8_lossy(v).into()),
            _ => None,
        }
    }

    #[test]
    fn tags_requests_and_responses_with_the_configured_version() {
        let mut p = Plugin::<Tagger>::init(r#""v2""#).unwrap();
        let req = RequestHead::new("GET", "/");
        assert_eq!(
            tag_of(&p.on_request(&req), "x-plugin-version").as_deref(),
            Some("v2")
        );
        let resp = p.on_response(&req, &ResponseHead::new(200));
        assert_eq!(
            resp,
            ResponseAction::proceed_with(HeaderMutation::new().set("x-plugin-version", "v2"))
        );
        assert_eq!(testing::counter("requests"), 1);
    }

    #[test]
    fn object_config_can_rename_the_header() {
        let mut p = Plugin::<Tagger>::init(r#"{"version": "v3", "header": "x-tag"}"#).unwrap();
        let action = p.on_request(&RequestHead::new("GET", "/"));
        assert_eq!(tag_of(&action, "x-tag").as_deref(), Some("v3"));
        assert_eq!(tag_of(&action, "x-plugin-version"), None);
    }

    #[test]
    fn on_response_can_be_turned_off() {
        let p = Plugin::<Tagger>::init(r#"{"version": "v3", "on_response": false}"#).unwrap();
        assert_eq!(p.hooks(), Hooks::ON_REQUEST);
        let p = Plugin::<Tagger>::init(r#"{"version": "v3"}"#).unwrap();
        assert_eq!(p.hooks(), Hooks::ON_REQUEST | Hooks::ON_RESPONSE);
    }

    #[test]
    #[should_panic(expected = "never call it")]
    fn a_hook_turned_off_is_not_called() {
        let mut p = Plugin::<Tagger>::init(r#"{"version": "v3", "on_response": false}"#).unwrap();
        let req = RequestHead::new("GET", "/");
        let _ = p.on_response(&req, &ResponseHead::new(200));
    }

    #[test]
    fn reports_the_headers_it_was_given() {
        let mut p = Plugin::<Tagger>::init(r#"{"version": "v1", "report_headers": true}"#).unwrap();
        let mut req = RequestHead::new("GET", "/");
        req.headers = vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())];
        let mut resp = ResponseHead::new(200);
        resp.headers = vec![("content-type".into(), b"text/plain".to_vec())];
        let ResponseAction::Proceed(tags) = p.on_response(&req, &resp) else {
            panic!("tagger proceeds");
        };
        assert_eq!(tags.get("x-tagger-request-headers"), Some(&b"a,b"[..]));
        assert_eq!(
            tags.get("x-tagger-response-headers"),
            Some(&b"content-type"[..])
        );
    }

    #[test]
    fn no_config_tags_unset() {
        let mut p = Plugin::<Tagger>::init("null").unwrap();
        let action = p.on_request(&RequestHead::new("GET", "/"));
        assert_eq!(
            tag_of(&action, "x-plugin-version").as_deref(),
            Some("unset")
        );
    }

    #[test]
    fn bad_config_is_rejected() {
        assert!(Plugin::<Tagger>::init(r#"{"version": "v1", "extra": 1}"#).is_err());
        assert!(Plugin::<Tagger>::init(r#""""#).is_err());
        assert!(Plugin::<Tagger>::init("42").is_err());
    }
}
