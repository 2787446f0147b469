//! A misbehaving test plugin: on-request allocates memory without end, for the gateway's memory
//! cap tests. When the host refuses to grow the instance's memory the allocator fails and the
//! instance traps.
//!
//! Config (all optional):
//! - `chunk_kib`: allocate this much at a time (default 1024, 1 MiB); every page is written,
//!   so the memory is really used.
//! - `limit_mib`: stop after holding this much and proceed (default: no limit). A limit under the
//!   host's memory cap makes a well-behaved big allocator; over it, a hog with a known appetite.
//! - `only_if_header`: hog only for requests carrying this header, and proceed otherwise.
//!
//! A bounded run adds the MiB it held to the counter `held_mib` before freeing it.

use std::hint::black_box;

use levee_sdk::{Hooks, Policy, RequestAction, RequestHead, host};
use serde::Deserialize;

/// The hog policy.
#[derive(Debug)]
pub struct Hog {
    config: Config,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_chunk_kib")]
    chunk_kib: u32,
    #[serde(default)]
    limit_mib: Option<u32>,
    #[serde(default)]
    only_if_header: Option<String>,
}

fn default_chunk_kib() -> u32 {
    1024
}

impl Default for Config {
    fn default() -> Self {
        Self {
            chunk_kib: default_chunk_kib(),
            limit_mib: None,
            only_if_header: None,
        }
    }
}

// === impl Hog ===

impl Hog {
    /// Allocates until `limit_mib` is held (or forever), returning the bytes held.
    fn hog(&self) -> u64 {
        let chunk = self.config.chunk_kib as usize * 1024;
        let limit = self.config.limit_mib.map(|mib| u64::from(mib) << 20);
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        let mut held: u64 = 0;
        while limit.is_none_or(|limit| held < limit) {
            // Written, not just reserved: zeroed memory from a fresh page could stay untouched.
            let block = vec![0xa5_u8; chunk];
            held += block.len() as u64;
            hoard.push(black_box(block));
        }
        black_box(&hoard);
        held
    }
}

impl Policy for Hog {
    const HOOKS: Hooks = Hooks::ON_REQUEST;

    fn init(config: &[u8]) -> Result<Self, String> {
        let config: Config = levee_sdk::config::parse_or_default(config)?;
        if config.chunk_kib == 0 {
            return Err("hog: `chunk_kib` must be at least 1".to_owned());
        }
        Ok(Self { config })
    }

    fn on_request(&mut self, req: &RequestHead) -> RequestAction {
        let wanted = self
            .config
            .only_if_header
            .as_deref()
            .is_none_or(|name| req.header(name).is_some());
        if wanted {
            let held = self.hog();
            host::counter_add("held_mib", (held >> 20) as i64);
        }
        RequestAction::proceed()
    }
}

levee_sdk::export!(Hog);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::testing::{self, Plugin};

    // The unbounded hog is exercised by the gateway's memory cap tests against the built
    // component: natively it would only exhaust the test machine.

    #[test]
    fn a_bounded_hog_holds_its_limit_then_proceeds() {
        let mut p = Plugin::<Hog>::init(r#"{"limit_mib": 3, "chunk_kib": 256}"#).unwrap();
        assert_eq!(
            p.on_request(&RequestHead::new("GET", "/")),
            RequestAction::proceed()
        );
        assert_eq!(testing::counter("held_mib"), 3);
    }

    #[test]
    fn only_if_header_spares_other_requests() {
        let mut p = Plugin::<Hog>::init(r#"{"only_if_header": "x-hog"}"#).unwrap();
        assert_eq!(
            p.on_request(&RequestHead::new("GET", "/")),
            RequestAction::proceed()
        );
        assert_eq!(testing::counter("held_mib"), 0);
    }

    #[test]
    fn rejects_bad_config() {
        assert!(Plugin::<Hog>::init(r#"{"chunk_kib": 0}"#).is_err());
        assert!(Plugin::<Hog>::init(r#"{"limit": 3}"#).is_err());
    }
}
