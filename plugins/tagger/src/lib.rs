//! A test plugin that tags traffic with its configured version: `x-plugin-version: <version>`
//! on the upstream request (on-request) and on the downstream response (on-response).
//!
//! Two builds with different configs (or the same build reloaded with a new config) are told
//! apart by the header, which is what the gateway's hot-swap tests look for. Each on-request
//! also adds 1 to the counter `requests`.
//!
//! Config: a JSON string (`"v2"`), or `{ "version": "v2", "header": "x-plugin-version" }`.
//! Without config the version is `unset`.

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
            });
        }
        let (version, header) = match levee_sdk::config::parse::<RawConfig>(config)? {
            RawConfig::Version(v) => (v, None),
            RawConfig::Full(c) => (c.version, c.header),
        };
        if version.is_empty() {
            return Err("tagger: `version` must not be empty".to_owned());
        }
        Ok(Self {
            header: header.unwrap_or_else(|| DEFAULT_HEADER.to_owned()),
            version,
        })
    }

    fn on_request(&mut self, _req: &RequestHead) -> RequestAction {
        host::counter_add("requests", 1);
        RequestAction::proceed_with(self.tag())
    }

    fn on_response(&mut self, _req: &RequestHead, _resp: &ResponseHead) -> ResponseAction {
        ResponseAction::proceed_with(self.tag())
    }
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
