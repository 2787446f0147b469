//! What one warm, pooled hook call costs in this process, for comparing call paths (ignored:
//! it measures, it checks nothing). Run it on a quiet machine:
//!
//!     cargo test -p levee-plugin-host --test call_cost -- --ignored --nocapture
//!
//! It times `LEVEE_COST_CALLS` (default 20000) `on-request` calls of `tagger` on one thread,
//! five rounds, and prints the median round's wall time and thread CPU time per call. In a
//! debug build the host's share is inflated; compare builds of the same profile only.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use levee_plugin_host::{EngineParams, HostServices, Outcome, PluginParams, PluginRuntime};
use support::{Recorder, block_on, plugin_wasm, request};

#[test]
#[ignore = "a measurement; run it by hand"]
fn pooled_on_request_call_cost() {
    let calls: u32 = std::env::var("LEVEE_COST_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = PluginRuntime::new(EngineParams::default()).unwrap();
    let services: Arc<dyn HostServices> = Arc::new(Recorder::default());
    let mut params = PluginParams::new("tagger");
    params.limits.deadline = Duration::from_secs(1);
    let plugin = runtime
        .load(params, &plugin_wasm("tagger"), services)
        .unwrap();
    let bound = plugin.bind(br#"{"version":"cost"}"#).unwrap();
    let headers = HeaderMap::new();
    let req = request(&headers);
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let (wall, cpu) = (Instant::now(), thread_cpu());
        for _ in 0..calls {
            assert!(matches!(
                block_on(bound.on_request(&req)),
                Outcome::Decided(_)
            ));
        }
        rounds.push((wall.elapsed(), thread_cpu() - cpu));
    }
    rounds.sort();
    let (wall, cpu) = rounds[2];
    let per = |d: Duration| d.as_nanos() / u128::from(calls);
    println!(
        "pooled tagger on-request: {} ns wall, {} ns thread CPU per call (median of 5 rounds of {calls})",
        per(wall),
        per(cpu)
    );
}

/// CPU time of this thread, from `/proc/thread-self/schedstat` (first field, nanoseconds).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let nanos: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(nanos)
}
