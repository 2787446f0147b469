//! What the plugin host costs, measured on the example plugins. A plain timing loop (no
//! criterion, to keep the build small):
//!
//!     cargo bench -p levee-plugin-host --bench plugin_call
//!
//! Four tables:
//!
//! 1. **Compile**: the size and the cold Cranelift compile time (one thread) of every example
//!    `.wasm`: the Rust ones of `plugins/` (built by the test support, into
//!    `target/plugins/wasm32-wasip2/release`), and the C, JavaScript and Python ones that
//!    `sdk/build-all.sh target/plugins/polyglot` builds (skipped, with a note, when absent).
//!    Each compilation uses a fresh [`PluginRuntime`], so the content-hash cache never hits.
//! 2. **`on-request` of `tagger`**: the time of each call, warm `pooled` against `per-request`
//!    (a fresh instance and `init` per call), with 0 and 8 request headers: p50, p99, max, mean.
//! 3. **`on-upstream-failure` of `static-fallback`**: the same figures, for the hook that
//!    answers a failing request.
//! 4. **Memory of a warm pooled instance** of each Rust example, after `init` and a few calls
//!    of each hook it implements: its linear memory ([`BoundPlugin::pooled_memory`]), and the
//!    process's resident memory (`VmRSS`) added per instance, over 32 such instances.
//!
//! `LEVEE_BENCH_ITERS` sets the calls per case of tables 2 and 3 (default 20000);
//! `LEVEE_BENCH_COMPILES` the compilations per `.wasm` in table 1 (default 3 for the Rust
//! examples and 1 for the C, JavaScript and Python ones, which take seconds each);
//! `LEVEE_BENCH_POLYGLOT` the directory of the polyglot builds (default `target/plugins/polyglot`).

#![allow(clippy::print_stdout, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use support::block_on;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use levee_plugin_host::{
    BoundPlugin, CircuitState, EngineParams, FailureKind, HostServices, Isolation, Outcome,
    PluginParams, PluginRuntime, ResponseHead, UpstreamFailure,
};

/// Every Rust example of `plugins/`, with a config its `init` accepts. The misbehaving ones
/// (`trap`, `spin`, `hog`) are told to misbehave only on a header the bench never sends, so
/// their warm instances stay in the pool.
const RUST_PLUGINS: [(&str, &str); 10] = [
    ("tagger", r#"{"version":"bench"}"#),
    ("trap", r#"{"only_if_header":"x-misbehave"}"#),
    ("spin", r#"{"only_if_header":"x-misbehave"}"#),
    ("hog", r#"{"only_if_header":"x-misbehave"}"#),
    ("bad-headers", r#"{"mode":"mutation"}"#),
    (
        "static-fallback",
        r#"{"status":503,"body":"degraded","retry_after":30}"#,
    ),
    ("serve-stale", r#"{"mode":"host","ttl_seconds":60}"#),
    ("priority-shedding", r#"{"cluster":"api","keep":["high"]}"#),
    ("degrade-route", r#"{"cluster":"api","degraded":"cheap"}"#),
    ("decider", r#"{"decision":"serve"}"#),
];

/// The examples `sdk/build-all.sh` builds, by language.
const POLYGLOT_PLUGINS: [(&str, &str); 3] = [
    ("static-fallback-c", "C"),
    ("priority-shedding-js", "JavaScript"),
    ("serve-stale-py", "Python"),
];

/// Warm instances per plugin whose resident memory is summed (table 4): enough that one
/// instance's share is not lost in the page granularity of `VmRSS`.
const RESIDENT_INSTANCES: usize = 32;

/// Calls of each hook before an instance counts as warm (table 4).
const WARM_CALLS: usize = 10;

fn main() {
    let iters: usize = env_number("LEVEE_BENCH_ITERS").unwrap_or(20_000);
    compile_table();
    let services: Arc<dyn HostServices> = Arc::new(support::Recorder::default());
    let rt = PluginRuntime::new(EngineParams {
        max_instances: 64,
        ..EngineParams::default()
    })
    .unwrap();
    on_request_table(&rt, &services, iters);
    on_upstream_failure_table(&rt, &services, iters);
    drop(rt);
    memory_table(&services);
}

// === 1. compile ===

fn compile_table() {
    println!("## Compile: size and cold Cranelift compile time (one thread, fresh engine each)\n");
    println!(
        "| plugin | language | .wasm bytes | compile ms (min / median / max) | compilations |"
    );
    println!("|---|---|---:|---:|---:|");
    let runs = env_number("LEVEE_BENCH_COMPILES");
    for (name, _) in RUST_PLUGINS {
        compile_row(name, "Rust", &support::plugin_wasm(name), runs.unwrap_or(3));
    }
    let dir = std::env::var_os("LEVEE_BENCH_POLYGLOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins/polyglot")
        });
    for (name, language) in POLYGLOT_PLUGINS {
        let path = dir.join(format!("{name}.wasm"));
        match std::fs::read(&path) {
            Ok(wasm) => compile_row(name, language, &wasm, runs.unwrap_or(1)),
            Err(e) => println!(
                "| {name} | {language} | - | not measured: {} ({e}); build it with \
                 `sdk/build-all.sh target/plugins/polyglot` | 0 |",
                path.display()
            ),
        }
    }
    println!();
}

/// Compiles `wasm` `runs` times, each on a fresh runtime, and prints one row.
fn compile_row(name: &str, language: &str, wasm: &[u8], runs: usize) {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            // A fresh engine per compilation: nothing cached, nothing warm but the process.
            let rt = PluginRuntime::new(EngineParams {
                max_instances: 1,
                ..EngineParams::default()
            })
            .unwrap();
            let compiled = rt.compile(wasm).unwrap();
            assert_eq!((rt.compiles(), rt.cache_hits()), (1, 0));
            compiled.compile_time()
        })
        .collect();
    times.sort_unstable();
    println!(
        "| {name} | {language} | {} | {:.1} / {:.1} / {:.1} | {} |",
        wasm.len(),
        millis(times[0]),
        millis(times[times.len() / 2]),
        millis(times[times.len() - 1]),
        times.len()
    );
}

// === 2. and 3. per-call latency ===

fn on_request_table(rt: &PluginRuntime, services: &Arc<dyn HostServices>, iters: usize) {
    let tagger = support::plugin_wasm("tagger");
    let mut eight = HeaderMap::new();
    for i in 0..8 {
        eight.insert(
            HeaderName::from_bytes(format!("x-header-{i}").as_bytes()).unwrap(),
            HeaderValue::from_static("some-value-of-moderate-length"),
        );
    }
    let empty = HeaderMap::new();

    println!("## `on-request` of `tagger`, {iters} calls per row\n");
    latency_header();
    for isolation in [Isolation::Pooled, Isolation::PerRequest] {
        let bound = bind(
            rt,
            services,
            "tagger",
            &tagger,
            r#"{"version":"bench"}"#,
            isolation,
        );
        for (label, headers) in [("0 headers", &empty), ("8 headers", &eight)] {
            let req = support::request(headers);
            let times = time_calls(iters, || {
                assert!(matches!(
                    block_on(bound.on_request(&req)),
                    Outcome::Decided(_)
                ));
            });
            latency_row(&format!("{isolation:?}, {label}"), &times);
        }
    }
    println!();
}

fn on_upstream_failure_table(rt: &PluginRuntime, services: &Arc<dyn HostServices>, iters: usize) {
    let wasm = support::plugin_wasm("static-fallback");
    let config = RUST_PLUGINS[5].1;
    let failure = UpstreamFailure {
        kind: FailureKind::ConnectFailure,
        cluster: "api",
        attempt: 1,
        status: None,
        elapsed: Duration::from_millis(1),
        circuit: CircuitState::Closed,
    };
    let headers = HeaderMap::new();
    let req = support::request(&headers);

    println!(
        "## `on-upstream-failure` of `static-fallback` (serves its page), {iters} calls per row\n"
    );
    latency_header();
    for isolation in [Isolation::Pooled, Isolation::PerRequest] {
        let bound = bind(rt, services, "static-fallback", &wasm, config, isolation);
        let times = time_calls(iters, || {
            assert!(matches!(
                block_on(bound.on_upstream_failure(&req, &failure)),
                Outcome::Decided(_)
            ));
        });
        latency_row(&format!("{isolation:?}"), &times);
    }
    println!();
}

/// Loads `wasm` as `name` with `isolation` and binds it with `config`. The deadline is 1 s: an
/// epoch deadline counts wall time, and a bench thread on a busy machine can be descheduled for
/// longer than the 5 ms default, which would turn a slow call into a fault.
fn bind(
    rt: &PluginRuntime,
    services: &Arc<dyn HostServices>,
    name: &str,
    wasm: &[u8],
    config: &str,
    isolation: Isolation,
) -> BoundPlugin {
    let mut params = PluginParams::new(name);
    params.isolation = isolation;
    params.recycle_after = u32::MAX;
    params.limits.deadline = Duration::from_secs(1);
    let plugin = rt.load(params, wasm, Arc::clone(services)).unwrap();
    plugin.bind(config.as_bytes()).unwrap()
}

/// Times each of `iters` calls of `call`, after `iters / 10` untimed ones.
fn time_calls(iters: usize, mut call: impl FnMut()) -> Vec<Duration> {
    for _ in 0..iters / 10 {
        call();
    }
    let mut times: Vec<Duration> = (0..iters.max(1))
        .map(|_| {
            let started = Instant::now();
            call();
            started.elapsed()
        })
        .collect();
    times.sort_unstable();
    times
}

fn latency_header() {
    println!("| case | p50 µs | p99 µs | max µs | mean µs |");
    println!("|---|---:|---:|---:|---:|");
}

/// One row of sorted call times.
fn latency_row(label: &str, sorted: &[Duration]) {
    let at = |p: f64| {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        micros(sorted[rank.clamp(1, sorted.len()) - 1])
    };
    let mean = sorted.iter().sum::<Duration>() / u32::try_from(sorted.len()).unwrap();
    println!(
        "| {label} | {:.2} | {:.2} | {:.1} | {:.2} |",
        at(50.0),
        at(99.0),
        micros(sorted[sorted.len() - 1]),
        micros(mean)
    );
}

// === 4. memory ===

fn memory_table(services: &Arc<dyn HostServices>) {
    println!(
        "## Memory of a warm pooled instance (after `init` and {WARM_CALLS} calls of each hook)\n"
    );
    println!("| plugin | linear memory | VmRSS per instance (over {RESIDENT_INSTANCES}) |");
    println!("|---|---:|---:|");
    for (name, config) in RUST_PLUGINS {
        let rt = PluginRuntime::new(EngineParams {
            max_instances: u32::try_from(RESIDENT_INSTANCES).unwrap() + 8,
            ..EngineParams::default()
        })
        .unwrap();
        let wasm = support::plugin_wasm(name);
        // The first binding maps the compiled code and the memory image, which every later
        // instance shares; it is left out of the per-instance figure.
        let first = warm(&rt, services, name, &wasm, config);
        let before = vm_rss();
        let more: Vec<BoundPlugin> = (0..RESIDENT_INSTANCES)
            .map(|_| warm(&rt, services, name, &wasm, config))
            .collect();
        let per_instance = vm_rss().saturating_sub(before) / RESIDENT_INSTANCES as u64;
        let memory = first.pooled_memory();
        assert_eq!(memory.len(), 1, "{name}: the warm instance left the pool");
        println!(
            "| {name} | {:.2} MiB | {:.2} MiB |",
            memory[0] as f64 / f64::from(1 << 20),
            per_instance as f64 / f64::from(1 << 20)
        );
        drop(more);
    }
    println!();
}

/// A binding of `name` whose one pooled instance has run every hook it implements a few times.
fn warm(
    rt: &PluginRuntime,
    services: &Arc<dyn HostServices>,
    name: &str,
    wasm: &[u8],
    config: &str,
) -> BoundPlugin {
    let bound = bind(rt, services, name, wasm, config, Isolation::Pooled);
    let hooks = bound.hooks();
    let headers = HeaderMap::new();
    let req = support::request(&headers);
    let resp = ResponseHead {
        status: StatusCode::OK,
        headers: &headers,
    };
    let failure = UpstreamFailure {
        kind: FailureKind::Upstream5xx,
        cluster: "api",
        attempt: 1,
        status: Some(StatusCode::BAD_GATEWAY),
        elapsed: Duration::from_millis(1),
        circuit: CircuitState::Closed,
    };
    for _ in 0..WARM_CALLS {
        if hooks.on_request {
            assert!(
                matches!(block_on(bound.on_request(&req)), Outcome::Decided(_)),
                "{name}"
            );
        }
        if hooks.on_response {
            assert!(
                matches!(
                    block_on(bound.on_response(&req, &resp)),
                    Outcome::Decided(_)
                ),
                "{name}"
            );
        }
        if hooks.on_upstream_failure {
            assert!(
                matches!(
                    block_on(bound.on_upstream_failure(&req, &failure)),
                    Outcome::Decided(_)
                ),
                "{name}"
            );
        }
    }
    bound
}

/// This process's resident memory (`VmRSS`), in bytes.
fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
