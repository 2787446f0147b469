//! A misbehaving test plugin: on-request never returns, for the gateway's deadline tests.
//!
//! Config (all optional):
//! - `mode`: `pure` (the default; a tight loop of guest code that never calls the host) or
//!   `host-calls` (a loop that keeps calling `now-ms`, to show the deadline also interrupts a
//!   guest that spends its time going in and out of the host).
//! - `only_if_header`: spin only for requests carrying this header, and proceed otherwise.

use std::hint::black_box;

use levee_sdk::{Hooks, Policy, RequestAction, RequestHead, host};
use serde::Deserialize;

/// The spin policy.
#[derive(Debug)]
pub struct Spin {
    config: Config,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    only_if_header: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    #[default]
    Pure,
    HostCalls,
}

// === impl Spin ===

fn spin(mode: Mode) -> ! {
    let mut n: u64 = 0;
    loop {
        // `black_box` keeps the optimiser from proving anything about the loop.
        n = black_box(n.wrapping_add(1));
        if mode == Mode::HostCalls {
            black_box(host::now_ms());
        }
    }
}

impl Policy for Spin {
    const HOOKS: Hooks = Hooks::ON_REQUEST;

    fn init(config: &[u8]) -> Result<Self, String> {
        let config = levee_sdk::config::parse_or_default(config)?;
        Ok(Self { config })
    }

    fn on_request(&mut self, req: &RequestHead) -> RequestAction {
        let wanted = self
            .config
            .only_if_header
            .as_deref()
            .is_none_or(|name| req.header(name).is_some());
        if wanted {
            spin(self.config.mode);
        }
        RequestAction::proceed()
    }
}

levee_sdk::export!(Spin);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::testing::Plugin;

    // The spinning itself is exercised by the gateway's deadline tests against the built
    // component: natively nothing could interrupt it.

    #[test]
    fn only_if_header_spares_other_requests() {
        let mut p =
            Plugin::<Spin>::init(r#"{"only_if_header": "x-spin", "mode": "host-calls"}"#).unwrap();
        assert_eq!(
            p.on_request(&RequestHead::new("GET", "/")),
            RequestAction::proceed()
        );
        assert_eq!(p.hooks(), Hooks::ON_REQUEST);
    }

    #[test]
    fn rejects_unknown_config() {
        assert!(Plugin::<Spin>::init(r#"{"mode": "forever"}"#).is_err());
        assert!(Plugin::<Spin>::init(r#"{"spin": true}"#).is_err());
    }
}
