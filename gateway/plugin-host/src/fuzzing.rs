//! Entry points for the fuzz targets in `fuzz/`; not an API (hidden from the docs, and changed
//! with the targets). They run the one place a plugin's raw output becomes `http` types, on
//! values a guest could return, without a wasm engine.

use std::sync::atomic::Ordering;

use crate::bindings::convert;
pub use crate::bindings::levee::policy::types as wit;
use crate::status::PluginStats;
use crate::types::{FallbackDecision, RequestAction, ResponseAction};

/// What the host makes of a decision: the validated one, or why it is an `invalid-output`
/// fault; and how many header entries were dropped as invalid HTTP.
#[derive(Debug)]
pub struct Converted<T> {
    /// The decision, or the fault's message.
    pub decision: Result<T, String>,
    /// Header names or values dropped (the plugin's `invalid_output` count).
    pub dropped: u64,
}

fn run<T, W>(
    raw: W,
    convert: impl FnOnce(W, &PluginStats) -> Result<T, convert::Invalid>,
) -> Converted<T> {
    let stats = PluginStats::default();
    let decision = convert(raw, &stats).map_err(|invalid| invalid.to_string());
    Converted {
        decision,
        dropped: stats.invalid_output.load(Ordering::Relaxed),
    }
}

/// An `on-request` result as the host validates it.
pub fn request_action(raw: wit::RequestAction) -> Converted<RequestAction> {
    run(raw, convert::request_action)
}

/// An `on-response` result as the host validates it.
pub fn response_action(raw: wit::ResponseAction) -> Converted<ResponseAction> {
    run(raw, convert::response_action)
}

/// An `on-upstream-failure` result as the host validates it.
pub fn fallback_decision(raw: wit::FallbackDecision) -> Converted<FallbackDecision> {
    run(raw, convert::fallback_decision)
}
