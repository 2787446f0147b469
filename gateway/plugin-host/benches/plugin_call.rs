//! Cost of a hook call, pooled against per-request isolation, and Cranelift compile time of
//! each example plugin. A plain timing loop (no criterion, to keep the build small):
//!
//!     cargo bench -p levee-plugin-host --bench plugin_call
//!
//! Set `LEVEE_BENCH_ITERS` to change the number of calls per case (default 20000).

#![allow(clippy::print_stdout, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use levee_plugin_host::{
    EngineParams, HostServices, Isolation, NoServices, Outcome, PluginParams, PluginRuntime,
};

const PLUGINS: [&str; 9] = [
    "tagger",
    "trap",
    "spin",
    "hog",
    "bad-headers",
    "static-fallback",
    "serve-stale",
    "priority-shedding",
    "degrade-route",
];

fn main() {
    let iters: u32 = std::env::var("LEVEE_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = PluginRuntime::new(EngineParams {
        max_instances: 16,
        ..EngineParams::default()
    })
    .unwrap();

    println!("Cranelift compile (cold, one thread):");
    for name in PLUGINS {
        let wasm = support::plugin_wasm(name);
        let compiled = rt.compile(&wasm).unwrap();
        println!(
            "  {name:<18} {:>7} bytes  {:>8.1} ms",
            wasm.len(),
            compiled.compile_time().as_secs_f64() * 1e3
        );
        println!("      imports: {}", compiled.imports().join(", "));
    }

    let tagger = support::plugin_wasm("tagger");
    let services: Arc<dyn HostServices> = Arc::new(NoServices);
    let mut eight = HeaderMap::new();
    for i in 0..8 {
        eight.insert(
            HeaderName::from_bytes(format!("x-header-{i}").as_bytes()).unwrap(),
            HeaderValue::from_static("some-value-of-moderate-length"),
        );
    }
    let empty = HeaderMap::new();

    println!("tagger on-request, {iters} calls each:");
    for isolation in [Isolation::Pooled, Isolation::PerRequest] {
        let mut params = PluginParams::new("tagger");
        params.isolation = isolation;
        params.recycle_after = u32::MAX;
        let plugin = rt.load(params, &tagger, Arc::clone(&services)).unwrap();
        let bound = plugin.bind(b"null").unwrap();
        for (label, headers) in [("0 headers", &empty), ("8 headers", &eight)] {
            let req = support::request(headers);
            for _ in 0..iters / 10 {
                assert!(matches!(bound.on_request(&req), Outcome::Decided(_)));
            }
            let started = Instant::now();
            for _ in 0..iters {
                assert!(matches!(bound.on_request(&req), Outcome::Decided(_)));
            }
            let per_call = started.elapsed() / iters;
            println!(
                "  {isolation:<11?} {label}: {:>8.2} µs/call",
                micros(per_call)
            );
        }
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
