//! A misbehaving test plugin: it traps, for the gateway's containment tests.
//!
//! Config (all optional):
//! - `hook`: where to trap, `on-request` (the default), `on-response`, `on-upstream-failure`, or
//!   `init` (the instance then never finishes initialising).
//! - `how`: `panic` (the default; a Rust panic, which aborts and so traps) or `unreachable`
//!   (the Wasm `unreachable` instruction, with no panic machinery involved).
//! - `only_if_header`: trap only for requests carrying this header, and behave otherwise; lets
//!   a test show a plugin breaker opening and then closing again with the same plugin.
//!
//! The hooks that do not trap change nothing.

use levee_sdk::{
    FallbackDecision, Hooks, Policy, RequestAction, RequestHead, ResponseAction, ResponseHead,
    UpstreamFailure,
};
use serde::Deserialize;

/// The trap policy.
#[derive(Debug)]
pub struct Trap {
    config: Config,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    hook: Hook,
    #[serde(default)]
    how: How,
    #[serde(default)]
    only_if_header: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Hook {
    Init,
    #[default]
    OnRequest,
    OnResponse,
    OnUpstreamFailure,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum How {
    #[default]
    Panic,
    Unreachable,
}

// === impl Trap ===

impl Trap {
    fn maybe_trap(&self, hook: Hook, req: &RequestHead) {
        let wanted = self
            .config
            .only_if_header
            .as_deref()
            .is_none_or(|name| req.header(name).is_some());
        if self.config.hook == hook && wanted {
            trap(self.config.how);
        }
    }
}

fn trap(how: How) -> ! {
    match how {
        How::Panic => panic!("trap plugin: deliberate panic"),
        #[cfg(target_arch = "wasm32")]
        How::Unreachable => core::arch::wasm32::unreachable(),
        // Natively there is no `unreachable` instruction; a panic stands in for it in tests.
        #[cfg(not(target_arch = "wasm32"))]
        How::Unreachable => panic!("trap plugin: unreachable"),
    }
}

impl Policy for Trap {
    const HOOKS: Hooks = Hooks::ALL;

    fn init(config: &[u8]) -> Result<Self, String> {
        let config: Config = levee_sdk::config::parse_or_default(config)?;
        if config.hook == Hook::Init {
            trap(config.how);
        }
        Ok(Self { config })
    }

    fn on_request(&mut self, req: &RequestHead) -> RequestAction {
        self.maybe_trap(Hook::OnRequest, req);
        RequestAction::proceed()
    }

    fn on_response(&mut self, req: &RequestHead, _resp: &ResponseHead) -> ResponseAction {
        self.maybe_trap(Hook::OnResponse, req);
        ResponseAction::proceed()
    }

    fn on_upstream_failure(
        &mut self,
        req: &RequestHead,
        _failure: &UpstreamFailure,
    ) -> FallbackDecision {
        self.maybe_trap(Hook::OnUpstreamFailure, req);
        FallbackDecision::Propagate
    }
}

levee_sdk::export!(Trap);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::FailureKind;
    use levee_sdk::testing::Plugin;

    fn get() -> RequestHead {
        RequestHead::new("GET", "/")
    }

    #[test]
    #[should_panic(expected = "deliberate panic")]
    fn traps_in_on_request_by_default() {
        let mut p = Plugin::<Trap>::init("null").unwrap();
        p.on_request(&get());
    }

    #[test]
    #[should_panic(expected = "unreachable")]
    fn unreachable_mode_traps_too() {
        let mut p = Plugin::<Trap>::init(r#"{"how": "unreachable"}"#).unwrap();
        p.on_request(&get());
    }

    #[test]
    #[should_panic(expected = "deliberate panic")]
    fn can_trap_in_init() {
        let _ = Plugin::<Trap>::init(r#"{"hook": "init"}"#);
    }

    #[test]
    #[should_panic(expected = "deliberate panic")]
    fn can_trap_in_on_upstream_failure_only() {
        let mut p = Plugin::<Trap>::init(r#"{"hook": "on-upstream-failure"}"#).unwrap();
        assert_eq!(p.on_request(&get()), RequestAction::proceed());
        assert_eq!(
            p.on_response(&get(), &ResponseHead::new(200)),
            ResponseAction::proceed()
        );
        p.on_upstream_failure(&get(), &UpstreamFailure::new(FailureKind::Timeout, "main"));
    }

    #[test]
    fn only_if_header_spares_other_requests() {
        let mut p = Plugin::<Trap>::init(r#"{"only_if_header": "x-trap"}"#).unwrap();
        assert_eq!(p.on_request(&get()), RequestAction::proceed());
        let hit = std::panic::catch_unwind(move || {
            p.on_request(&get().with_header("x-trap", "1"));
        });
        assert!(hit.is_err());
    }

    #[test]
    fn rejects_unknown_config() {
        assert!(Plugin::<Trap>::init(r#"{"hook": "on-lunch"}"#).is_err());
    }
}
