//! A misbehaving test plugin: it returns headers that are not valid HTTP, for the gateway's
//! tests that such headers are rejected (and counted) while the rest of the decision applies.
//!
//! Every decision carries three headers: `bad name` (a space in the name), `x-bad-value`
//! whose value holds `\r\n` (a response-splitting attempt), and the valid `x-good: yes`, which
//! the host should keep. It also removes `bad name` as a header name.
//!
//! Config (optional) `mode`:
//! - `mutation` (the default): on-request proceeds and on-response proceeds, each with the
//!   mutation above.
//! - `respond`: on-request answers with a 200 local response carrying those headers.
//! - `bad-status`: on-request answers with status 42, which no HTTP response can have.
//! - `unknown-cluster`: on-request routes to the cluster `no-such-cluster`.
//! - `framing`: on-request and on-response proceed setting `content-length: 0`,
//!   `transfer-encoding: chunked` and `connection: close` (which the host drops: it frames
//!   messages itself) beside `x-good: yes`.
//! - `interim-status`: on-request answers with status 103, an interim status that cannot be
//!   the final answer.

use levee_sdk::{
    HeaderMutation, Hooks, Policy, RequestAction, RequestHead, Response, ResponseAction,
    ResponseHead,
};
use serde::Deserialize;

/// A header name with a space in it.
pub const BAD_NAME: &str = "bad name";
/// The header whose value carries CR LF.
pub const BAD_VALUE_HEADER: &str = "x-bad-value";
/// The value with CR LF: an attempt to smuggle a second header.
pub const BAD_VALUE: &[u8] = b"a\r\nx-injected: 1";
/// The cluster `unknown-cluster` mode routes to.
pub const UNKNOWN_CLUSTER: &str = "no-such-cluster";

/// The bad-headers policy.
#[derive(Debug)]
pub struct BadHeaders {
    mode: Mode,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: Mode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    #[default]
    Mutation,
    Respond,
    BadStatus,
    UnknownCluster,
    Framing,
    InterimStatus,
}

// === impl BadHeaders ===

fn bad_mutation() -> HeaderMutation {
    HeaderMutation::new()
        .set(BAD_NAME, "x")
        .set(BAD_VALUE_HEADER, BAD_VALUE)
        .set("x-good", "yes")
        .remove(BAD_NAME)
}

fn framing_mutation() -> HeaderMutation {
    HeaderMutation::new()
        .set("content-length", "0")
        .set("transfer-encoding", "chunked")
        .set("connection", "close")
        .set("x-good", "yes")
}

fn bad_response(status: u16) -> Response {
    Response::new(status)
        .header(BAD_NAME, "x")
        .header(BAD_VALUE_HEADER, BAD_VALUE)
        .header("x-good", "yes")
        .text("bad-headers plugin\n")
}

impl Policy for BadHeaders {
    const HOOKS: Hooks = Hooks::ON_REQUEST.union(Hooks::ON_RESPONSE);

    fn init(config: &[u8]) -> Result<Self, String> {
        let config: Config = levee_sdk::config::parse_or_default(config)?;
        Ok(Self { mode: config.mode })
    }

    fn on_request(&mut self, _req: &RequestHead) -> RequestAction {
        match self.mode {
            Mode::Mutation => RequestAction::proceed_with(bad_mutation()),
            Mode::Respond => RequestAction::respond(bad_response(200)),
            Mode::BadStatus => RequestAction::respond(bad_response(42)),
            Mode::UnknownCluster => RequestAction::route_to(UNKNOWN_CLUSTER),
            Mode::Framing => RequestAction::proceed_with(framing_mutation()),
            Mode::InterimStatus => RequestAction::respond(bad_response(103)),
        }
    }

    fn on_response(&mut self, _req: &RequestHead, _resp: &ResponseHead) -> ResponseAction {
        match self.mode {
            Mode::Mutation => ResponseAction::proceed_with(bad_mutation()),
            Mode::Framing => ResponseAction::proceed_with(framing_mutation()),
            _ => ResponseAction::proceed(),
        }
    }
}

levee_sdk::export!(BadHeaders);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::testing::{self, Plugin};

    fn get() -> RequestHead {
        RequestHead::new("GET", "/")
    }

    #[test]
    fn mutation_mode_sets_two_invalid_headers_and_one_valid() {
        let mut p = Plugin::<BadHeaders>::init("null").unwrap();
        let RequestAction::Proceed(m) = p.on_request(&get()) else {
            panic!("expected proceed");
        };
        let invalid = testing::invalid_headers(&m.set);
        let names: Vec<_> = invalid.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [BAD_NAME, BAD_VALUE_HEADER]);
        assert_eq!(m.get("x-good"), Some(&b"yes"[..]));
        assert!(!testing::is_valid_header_name(&m.remove[0]));
        assert_eq!(
            p.on_response(&get(), &ResponseHead::new(200)),
            ResponseAction::proceed_with(bad_mutation())
        );
    }

    #[test]
    fn respond_mode_answers_with_invalid_headers() {
        let mut p = Plugin::<BadHeaders>::init(r#"{"mode": "respond"}"#).unwrap();
        let RequestAction::Respond(r) = p.on_request(&get()) else {
            panic!("expected respond");
        };
        assert_eq!(r.status, 200);
        assert_eq!(testing::invalid_headers(&r.headers).len(), 2);
    }

    #[test]
    fn bad_status_and_unknown_cluster_modes() {
        let mut p = Plugin::<BadHeaders>::init(r#"{"mode": "bad-status"}"#).unwrap();
        assert!(matches!(p.on_request(&get()), RequestAction::Respond(r) if r.status == 42));
        let mut p = Plugin::<BadHeaders>::init(r#"{"mode": "unknown-cluster"}"#).unwrap();
        assert_eq!(
            p.on_request(&get()),
            RequestAction::route_to(UNKNOWN_CLUSTER)
        );
    }

    #[test]
    fn rejects_unknown_mode() {
        assert!(Plugin::<BadHeaders>::init(r#"{"mode": "worse"}"#).is_err());
    }
}
