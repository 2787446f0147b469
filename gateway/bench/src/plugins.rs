//! The plugin scenario: what a Wasm policy plugin costs a route, measured against the same route
//! without it, in one run.
//!
//! Two comparisons, each between Levee processes that differ only in their config:
//!
//! - **Throughput** ([`throughput_config`]). Six gateways over the same two upstreams: (0) no
//!   plugin at all; (a) the `tagger` plugin configured and bound to another route, never called
//!   by the measured one; (b) `tagger` on the measured route, `pooled`; (c) the same,
//!   `per-request`; (d) `tagger` on the measured route, pooled, with `on_response: false` in its
//!   config; (e) as (d), with the binding's `request_headers: []`. wrk loads one at a time at
//!   the most it can send, in rounds that go 0, a, b, c, d, e, 0, a, ..., so a drift of the
//!   machine hits all six alike, and the figures are the medians over the rounds of `b / a`,
//!   `c / a`, `d / a`, `e / a` and `a / 0`. `tagger` implements `on-request` and `on-response`,
//!   so (b) and (c) pay for two hook calls per request; (d) and (e) pay for one `on-request`
//!   call, (d) given every request header and (e) none.
//! - **A failing request** ([`failing_config`]). Two gateways whose route goes to a port nothing
//!   listens on, so every request fails with `connect-failure` at once: one answers with the
//!   declarative `fallback.response`, the other with the `static-fallback` plugin's
//!   `on-upstream-failure`, both a 503 with the same short body. A fixed rate from the
//!   harness's open-loop client ([`open_loop`](crate::open_loop)), alternating between them,
//!   gives p50 and p99 of each and their difference: what the hook call adds to a failure.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

use crate::load;
use crate::open_loop::{self, Outcome, Sample, Schedule};
use crate::report::{Machine, Round};
use crate::run::{self, progress};
use crate::targets::{self, Server};
use crate::{PluginArgs, watch};

/// The ratio `with plugin / without` the project aims for: a plugin called on every request may
/// cost at most 5% of throughput.
const TARGET_RATIO: f64 = 0.95;

/// What `on-upstream-failure` may add to a failing request at p99, in microseconds.
const TARGET_FAILURE_P99_US: f64 = 50.0;

/// `a / 0` under this counts as a cost of a plugin that is configured but not called. Rounds of
/// the same config on this 2-core machine differ by about 2%, so a smaller gap is noise.
const IDLE_RATIO_FLOOR: f64 = 0.98;

/// Upstreams of the throughput configs, as in the default run.
const UPSTREAMS: usize = 2;

/// The body of both fallbacks of the failing comparison, so that they answer the same bytes.
const FALLBACK_BODY: &str = "degraded";

/// One gateway of the throughput comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// (0): no plugin in the config.
    NoPlugins,
    /// (a): `tagger` configured and bound to the other route only.
    ConfiguredElsewhere,
    /// (b): `tagger` on the measured route, `isolation: pooled`.
    Pooled,
    /// (c): `tagger` on the measured route, `isolation: per-request`.
    PerRequest,
    /// (d): `tagger` on the measured route, pooled, with `on-response` turned off in its
    /// config: one `on-request` call per request, given every request header.
    OnRequestOnly,
    /// (e): as (d), with `request_headers: []`: the call is given no headers.
    OnRequestNoHeaders,
}

/// The throughput gateways, in the order each round measures them, with their labels.
const VARIANTS: [(Variant, &str); 6] = [
    (Variant::NoPlugins, "0"),
    (Variant::ConfiguredElsewhere, "a"),
    (Variant::Pooled, "b"),
    (Variant::PerRequest, "c"),
    (Variant::OnRequestOnly, "d"),
    (Variant::OnRequestNoHeaders, "e"),
];

/// One gateway of the failing comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// The route's own `fallback.response`.
    Declarative,
    /// The `static-fallback` plugin answering `on-upstream-failure`; no declarative fallback.
    Plugin,
}

/// The `.wasm` files the configs load.
#[derive(Debug, Clone)]
pub(crate) struct Wasm {
    /// `tagger.wasm`.
    pub(crate) tagger: PathBuf,
    /// `static_fallback.wasm`.
    pub(crate) static_fallback: PathBuf,
}

/// Latency of one open-loop run against a failing route.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FailingRound {
    /// Requests sent.
    requests: usize,
    /// Requests that did not end in the expected 503 from the fallback.
    errors: usize,
    /// Median latency of the 503 answers, in microseconds.
    p50_us: f64,
    /// 99th percentile, in microseconds.
    p99_us: f64,
    /// Slowest, in microseconds.
    max_us: f64,
}

/// What the scenario measured.
#[derive(Debug)]
struct PluginReport {
    machine: Machine,
    settings: Settings,
    /// Throughput rounds of [`VARIANTS`], in that order; `rounds[v][i]` ran in round `i`.
    rounds: [Vec<Round>; 6],
    /// `VmRSS` of each throughput gateway after its rounds, bytes.
    rss: [u64; 6],
    /// `/plugins` of (a) to (e) after the rounds, one line each.
    plugin_state: Vec<String>,
    /// Failing rounds with the declarative fallback and with the plugin, in order.
    failing: [Vec<FailingRound>; 2],
    /// `/plugins` of the plugin fallback's gateway after its rounds.
    failing_state: String,
}

/// The options of the run, for the report.
#[derive(Debug)]
struct Settings {
    duration: Duration,
    warmup: Duration,
    connections: u32,
    gateway_cpus: String,
    load_cpus: String,
    rate: f64,
    phase: Duration,
}

// === configs ===

/// The Levee config of one throughput gateway: the measured route `/` and the route `/other/`,
/// both over one round-robin cluster of `upstreams`. Every variant has both routes, so that (a)
/// differs from (0) only by the plugin it has configured and bound to `/other/`.
pub(crate) fn throughput_config(upstreams: &[SocketAddr], variant: Variant, wasm: &Wasm) -> String {
    let tagger = "      - name: tagger\n        config: { version: bench }\n";
    let measured = match variant {
        Variant::OnRequestOnly => {
            "      - name: tagger\n        config: { version: bench, on_response: false }\n"
        }
        Variant::OnRequestNoHeaders => {
            "      - name: tagger\n        config: { version: bench, on_response: false }\n        \
             request_headers: []\n"
        }
        _ => tagger,
    };
    let mut out = String::from(
        "listeners:\n  - name: bench\n    address: 127.0.0.1:0\n    limits: { max_connections: 30000 }\n\
         admin:\n  address: 127.0.0.1:0\nroutes:\n  - name: other\n    match: { path_prefix: \"/other/\" }\n    cluster: bench\n",
    );
    if variant != Variant::NoPlugins {
        out.push_str("    plugins:\n");
        out.push_str(tagger);
    }
    out.push_str("  - name: bench\n    match: { path_prefix: \"/\" }\n    cluster: bench\n");
    if !matches!(variant, Variant::NoPlugins | Variant::ConfiguredElsewhere) {
        out.push_str("    plugins:\n");
        out.push_str(measured);
    }
    out.push_str(
        "clusters:\n  - name: bench\n    lb: round-robin\n    max_idle_per_endpoint: 64\n    endpoints:\n",
    );
    for upstream in upstreams {
        let _ = writeln!(out, "      - {{ address: \"{upstream}\" }}");
    }
    let isolation = match variant {
        Variant::NoPlugins => None,
        Variant::ConfiguredElsewhere
        | Variant::Pooled
        | Variant::OnRequestOnly
        | Variant::OnRequestNoHeaders => Some("pooled"),
        Variant::PerRequest => Some("per-request"),
    };
    if let Some(isolation) = isolation {
        let _ = writeln!(
            out,
            "plugins:\n  - name: tagger\n    path: \"{}\"\n    isolation: {isolation}",
            wasm.tagger.display()
        );
    }
    out.push_str(TAIL);
    out
}

/// The Levee config of one failing gateway: one route to `dead` (where nothing listens), no
/// retry, outlier detection off (so the endpoint stays usable and every request is a
/// `connect-failure`), and one of the two fallbacks, both a 503 with [`FALLBACK_BODY`] and
/// `retry-after: 30`.
pub(crate) fn failing_config(dead: SocketAddr, fallback: Fallback, wasm: &Wasm) -> String {
    let mut out = String::from(
        "listeners:\n  - name: bench\n    address: 127.0.0.1:0\n    limits: { max_connections: 30000 }\n\
         admin:\n  address: 127.0.0.1:0\nroutes:\n  - name: bench\n    match: { path_prefix: \"/\" }\n    cluster: dead\n",
    );
    match fallback {
        Fallback::Declarative => {
            let _ = writeln!(
                out,
                "    fallback:\n      response: {{ status: 503, body: \"{FALLBACK_BODY}\", headers: {{ retry-after: \"30\" }} }}"
            );
        }
        Fallback::Plugin => {
            let _ = writeln!(
                out,
                "    plugins:\n      - name: static-fallback\n        config: {{ status: 503, body: \"{FALLBACK_BODY}\", retry_after: 30 }}"
            );
        }
    }
    let _ = writeln!(
        out,
        "clusters:\n  - name: dead\n    endpoints:\n      - {{ address: \"{dead}\" }}\n    outlier_detection: false"
    );
    if fallback == Fallback::Plugin {
        let _ = writeln!(
            out,
            "plugins:\n  - name: static-fallback\n    path: \"{}\"",
            wasm.static_fallback.display()
        );
    }
    out.push_str(TAIL);
    out
}

/// The end of every config: quick shutdown, no access log.
const TAIL: &str =
    "shutdown:\n  drain_delay: 0s\n  drain_timeout: 1s\nlog:\n  level: info\n  access_log: false\n";

/// The example plugins' build directory of this workspace (`plugins/build.sh` writes there).
pub(crate) fn default_plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/plugins/wasm32-wasip2/release")
        .components()
        .collect()
}

// === impl Wasm ===

impl Wasm {
    /// The plugins in `dir`, which must both exist.
    fn find(dir: &Path) -> anyhow::Result<Self> {
        let wasm = Self {
            tagger: dir.join("tagger.wasm"),
            static_fallback: dir.join("static_fallback.wasm"),
        };
        for path in [&wasm.tagger, &wasm.static_fallback] {
            if !path.exists() {
                bail!(
                    "no plugin at {}: build the examples first (`plugins/build.sh`, or `cargo build \
                     --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release \
                     --target-dir target/plugins`), or pass --plugins-dir",
                    path.display()
                );
            }
        }
        Ok(wasm)
    }
}

// === the run ===

/// Runs the plugin scenario and prints its report.
pub(crate) fn run(args: &PluginArgs) -> anyhow::Result<()> {
    let dir = args.plugins_dir.clone().unwrap_or_else(default_plugins_dir);
    let wasm = Wasm::find(&dir)?;
    args.scenario.run(&["wrk", "taskset"], |levee, work| {
        Ok(run_in(args, levee, &wasm, work)?.to_markdown())
    })
}

fn run_in(
    args: &PluginArgs,
    levee: &Path,
    wasm: &Wasm,
    work: &Path,
) -> anyhow::Result<PluginReport> {
    let s = &args.scenario;
    let background = run::background_busy()?;
    let cpus = s.placement()?;
    let load = s.load(args.connections, args.duration, args.warmup, work);

    // === throughput ===
    progress("starting two upstreams");
    let mut upstreams = s.start_upstreams(UPSTREAMS)?;
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.address).collect();
    let variants = VARIANTS;
    let mut gateways = Vec::with_capacity(variants.len());
    for (variant, name) in variants {
        gateways.push(targets::start_levee(
            levee,
            &s.gateway_cpus,
            &work.join(format!("levee-{name}.yaml")),
            &throughput_config(&addrs, variant, wasm),
        )?);
    }
    let total = args.rounds.max(1);
    let mut rounds: [Vec<Round>; 6] = Default::default();
    for round in 0..total {
        for (i, server) in gateways.iter_mut().enumerate() {
            progress(&format!(
                "round {} of {total}: ({})",
                round + 1,
                variants[i].1
            ));
            let url = run::url(server.address);
            rounds[i].push(run::throughput_round(&load, &cpus, &url, Some(server))?);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rss = [0u64; 6];
    let mut plugin_state = Vec::new();
    for (i, server) in gateways.iter_mut().enumerate() {
        server.proc.check_alive()?;
        rss[i] = server.proc.rss()?;
        if i > 0 {
            let state = plugins_summary(&runtime, server)?;
            plugin_state.push(format!("({}): {state}", variants[i].1));
        }
    }
    for upstream in &mut upstreams {
        upstream.proc.check_alive()?;
    }
    drop(gateways);

    // === a failing request ===
    let dead = dead_address()?;
    let mut fallbacks = Vec::with_capacity(2);
    for (fallback, name) in [
        (Fallback::Declarative, "declarative"),
        (Fallback::Plugin, "plugin"),
    ] {
        fallbacks.push(targets::start_levee(
            levee,
            &s.gateway_cpus,
            &work.join(format!("levee-failing-{name}.yaml")),
            &failing_config(dead, fallback, wasm),
        )?);
    }
    let schedule = |duration| Schedule {
        rate: args.rate,
        duration,
        timeout: Duration::from_secs(5),
    };
    let mut failing: [Vec<FailingRound>; 2] = Default::default();
    for round in 0..args.failing_rounds.max(1) {
        for (i, server) in fallbacks.iter().enumerate() {
            let name = if i == 0 { "declarative" } else { "plugin" };
            progress(&format!(
                "failing round {} of {}: {name} fallback at {:.0} req/s",
                round + 1,
                args.failing_rounds.max(1),
                args.rate
            ));
            let url = run::url(server.address);
            if !args.warmup.is_zero() {
                runtime.block_on(open_loop::run(&url, schedule(args.warmup), Instant::now()))?;
            }
            let samples =
                runtime.block_on(open_loop::run(&url, schedule(args.phase), Instant::now()))?;
            failing[i].push(FailingRound::from_samples(&samples));
        }
    }
    for server in &mut fallbacks {
        server.proc.check_alive()?;
    }
    let failing_state = plugins_summary(&runtime, &fallbacks[1])?;

    Ok(PluginReport {
        machine: Machine::probe(levee, Path::new("nginx"), true, background),
        settings: Settings {
            duration: args.duration,
            warmup: args.warmup,
            connections: args.connections,
            gateway_cpus: s.gateway_cpus.clone(),
            load_cpus: s.load_cpus.clone(),
            rate: args.rate,
            phase: args.phase,
        },
        rounds,
        rss,
        plugin_state,
        failing,
        failing_state,
    })
}

/// An address of 127.0.0.1 where nothing listens: a port that was free a moment ago. A
/// connection to it is refused at once.
fn dead_address() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// The gateway's plugins as `/plugins` shows them, one clause each: calls, faults, breaker
/// openings, instances created and the mean time of a call inside the host.
fn plugins_summary(runtime: &tokio::runtime::Runtime, server: &Server) -> anyhow::Result<String> {
    let admin = server.admin.context("Levee reported no admin address")?;
    let body = runtime.block_on(watch::fetch(admin, "/plugins"))?;
    let json: serde_json::Value = serde_json::from_slice(&body).context("parsing /plugins")?;
    Ok(summarize_plugins(&json))
}

/// One line about every plugin of a `/plugins` answer (a list, or `{ "plugins": [...] }`).
fn summarize_plugins(json: &serde_json::Value) -> String {
    let list = json
        .as_array()
        .or_else(|| json.get("plugins").and_then(|p| p.as_array()))
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return "no plugin in /plugins".to_string();
    }
    let number = |p: &serde_json::Value, key: &str| {
        p.get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    list.iter()
        .map(|p| {
            let faults: f64 = p
                .get("faults")
                .and_then(|f| f.as_object())
                .map(|f| f.values().filter_map(serde_json::Value::as_f64).sum())
                .unwrap_or(0.0);
            format!(
                "`{}` {} calls, {faults:.0} faults, breaker opened {} times, {} instances \
                 created, mean call {:.1} µs",
                p.get("name").and_then(|n| n.as_str()).unwrap_or("?"),
                number(p, "calls"),
                number(p, "breaker_opened"),
                number(p, "instantiations"),
                number(p, "latency_mean_us"),
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

// === impl FailingRound ===

impl FailingRound {
    /// Percentiles of the time from send to answer of the samples that got the fallback's 503;
    /// every other outcome is an error. From the send, not from the due time: at this rate
    /// nothing queues, and the client timer's 1 ms resolution would otherwise swamp a difference
    /// of microseconds.
    fn from_samples(samples: &[Sample]) -> Self {
        let mut micros: Vec<u64> = samples
            .iter()
            .filter(|s| s.outcome == Outcome::Status(503))
            .map(|s| u64::try_from(s.service.as_micros()).unwrap_or(u64::MAX))
            .collect();
        micros.sort_unstable();
        Self {
            requests: samples.len(),
            errors: samples.len() - micros.len(),
            p50_us: load::percentile(&micros, 50.0) as f64,
            p99_us: load::percentile(&micros, 99.0) as f64,
            max_us: micros.last().copied().unwrap_or(0) as f64,
        }
    }
}

// === impl PluginReport ===

impl PluginReport {
    /// `rounds[num][i] / rounds[den][i]` requests per second, per round.
    fn ratios(&self, num: usize, den: usize) -> Vec<f64> {
        self.rounds[den]
            .iter()
            .zip(&self.rounds[num])
            .map(|(d, n)| n.throughput.rps / d.throughput.rps.max(1e-9))
            .collect()
    }

    /// `num / den` gateway CPU time per request, per round where both were measured.
    fn cpu_ratios(&self, num: usize, den: usize) -> Vec<f64> {
        self.rounds[den]
            .iter()
            .zip(&self.rounds[num])
            .filter_map(|(d, n)| Some(cpu_per_request(n)? / cpu_per_request(d)?.max(1e-12)))
            .collect()
    }

    /// Plugin minus declarative, per failing round, of `pick`.
    fn failing_diffs(&self, pick: impl Fn(&FailingRound) -> f64) -> Vec<f64> {
        self.failing[0]
            .iter()
            .zip(&self.failing[1])
            .map(|(d, p)| pick(p) - pick(d))
            .collect()
    }

    /// The report as markdown.
    fn to_markdown(&self) -> String {
        let a = &self.settings;
        let mut out =
            String::from("# Levee plugin overhead: the tagger and static-fallback plugins\n\n");
        out.push_str(&self.machine.summary());
        let _ = writeln!(
            out,
            "- Placement: Levee processes (`--workers 1`; loaded one at a time) on CPU {}; the \
             upstreams (1 thread each), wrk, the open-loop client and the harness on CPU {}.\n\
             - Throughput: `wrk -t1 -c{}`, closed loop, {} measured after {} of warm-up, in {} \
             rounds of (0) to (e). Routes `/other/` and `/` over one cluster of two \
             upstreams; wrk requests `/`.\n\
             - (0): no plugin. (a): `tagger` configured and bound to `/other/` only. (b): \
             `tagger` on `/`, `isolation: pooled`: `on-request` and `on-response`, two hook calls \
             per request. (c): the same, `isolation: per-request`. (d): `tagger` on `/`, pooled, \
             with `on_response: false` in its config: one `on-request` call per request, given \
             every request header. (e): as (d), with the binding's `request_headers: []`.\n\
             - Failing request: a route to a port nothing listens on (`connect-failure`, no \
             retry, outlier detection off), answered by a declarative `fallback.response` or by \
             the `static-fallback` plugin, both 503 `{FALLBACK_BODY}`; the harness's open-loop \
             client at {:.0} req/s, {} per run after {} at the same rate, alternating; latency \
             from the send of each request to the end of its answer.\n",
            a.gateway_cpus,
            a.load_cpus,
            a.connections,
            humantime::format_duration(a.duration),
            humantime::format_duration(a.warmup),
            self.rounds[0].len(),
            a.rate,
            humantime::format_duration(a.phase),
            humantime::format_duration(a.warmup),
        );

        out.push_str(
            "| round | req/s (0 / a / b / c / d / e) | b / a | c / a | d / a | e / a | a / 0 | \
             CPU s per 10k req (0 / a / b / c / d / e) | gateway core busy | load core \
             busy | errors |\n|---:|---|---:|---:|---:|---:|---:|---|---|---|---:|\n",
        );
        let (ba, ca, a0) = (self.ratios(2, 1), self.ratios(3, 1), self.ratios(1, 0));
        let (da, ea) = (self.ratios(4, 1), self.ratios(5, 1));
        for i in 0..self.rounds[0].len() {
            let r: Vec<&Round> = self.rounds.iter().filter_map(|v| v.get(i)).collect();
            if r.len() < VARIANTS.len() {
                break;
            }
            let join = |f: &dyn Fn(&Round) -> String| {
                r.iter().map(|r| f(r)).collect::<Vec<_>>().join(" / ")
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |",
                i + 1,
                join(&|r| format!("{:.0}", r.throughput.rps)),
                ba[i],
                ca[i],
                da[i],
                ea[i],
                a0[i],
                join(&per_10k),
                join(&|r| format!("{:.0}%", r.gateway_core_busy * 100.0)),
                join(&|r| format!("{:.0}%", r.load_core_busy * 100.0)),
                r.iter().map(|r| r.throughput.errors).sum::<u64>(),
            );
        }

        let rps = |v: usize| {
            median(
                &self.rounds[v]
                    .iter()
                    .map(|r| r.throughput.rps)
                    .collect::<Vec<_>>(),
            )
        };
        let (ba, ca, a0) = (median(&ba), median(&ca), median(&a0));
        let (da, ea) = (median(&da), median(&ea));
        let met = |ok: bool| if ok { "yes" } else { "**no**" };
        let _ = writeln!(
            out,
            "\n| what | measured | target | met |\n|---|---:|---:|---|\n\
             | median of the per-round ratios, (b) pooled / (a) req/s | {ba:.3} | >= {TARGET_RATIO:.2} | {} |\n\
             | median of the per-round ratios, (c) per-request / (a) req/s | {ca:.3} | >= {TARGET_RATIO:.2} | {} |\n\
             | median of the per-round ratios, (d) one `on-request`, every header / (a) req/s | {da:.3} | >= {TARGET_RATIO:.2} | {} |\n\
             | median of the per-round ratios, (e) one `on-request`, no header / (a) req/s | {ea:.3} | >= {TARGET_RATIO:.2} | {} |\n\
             | median of the per-round ratios, (a) configured elsewhere / (0) req/s | {a0:.3} | >= {IDLE_RATIO_FLOOR:.2} (noise) | {} |\n\
             | median req/s, (0) / (a) / (b) / (c) / (d) / (e) | {} | - | - |\n\
             | median CPU per request, b / a, c / a, d / a, e / a, a / 0 | {:.3}, {:.3}, {:.3}, {:.3}, {:.3} | - | - |\n\
             | VmRSS after the rounds, (0) / (a) / (b) / (c) / (d) / (e) | {} | - | - |",
            met(ba >= TARGET_RATIO),
            met(ca >= TARGET_RATIO),
            met(da >= TARGET_RATIO),
            met(ea >= TARGET_RATIO),
            met(a0 >= IDLE_RATIO_FLOOR),
            (0..VARIANTS.len())
                .map(|v| format!("{:.0}", rps(v)))
                .collect::<Vec<_>>()
                .join(" / "),
            median(&self.cpu_ratios(2, 1)),
            median(&self.cpu_ratios(3, 1)),
            median(&self.cpu_ratios(4, 1)),
            median(&self.cpu_ratios(5, 1)),
            median(&self.cpu_ratios(1, 0)),
            self.rss.map(mib).join(" / "),
        );
        let _ = writeln!(
            out,
            "\n`/plugins` after the rounds: {}.\n",
            self.plugin_state.join("; ")
        );

        out.push_str(
            "| failing round | declarative p50 | p99 | max | plugin p50 | p99 | max | plugin - \
             declarative p50 | p99 | requests | errors (declarative / plugin) |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        let (d50, d99) = (
            self.failing_diffs(|r| r.p50_us),
            self.failing_diffs(|r| r.p99_us),
        );
        for (i, (d, p)) in self.failing[0].iter().zip(&self.failing[1]).enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {:+.0} µs | {:+.0} µs | {} | {} / {} |",
                i + 1,
                us(d.p50_us),
                us(d.p99_us),
                us(d.max_us),
                us(p.p50_us),
                us(p.p99_us),
                us(p.max_us),
                d50[i],
                d99[i],
                d.requests + p.requests,
                d.errors,
                p.errors,
            );
        }
        let d99 = median(&d99);
        let _ = writeln!(
            out,
            "\n| what | measured | target | met |\n|---|---:|---:|---|\n\
             | median of the per-round differences, plugin - declarative, p99 | {d99:+.0} µs | < {TARGET_FAILURE_P99_US:.0} µs | {} |\n\
             | median of the per-round differences, plugin - declarative, p50 | {:+.0} µs | - | - |\n\
             \n`/plugins` of the plugin fallback's gateway: {}.",
            met(d99 < TARGET_FAILURE_P99_US),
            median(&d50),
            self.failing_state,
        );
        out
    }
}

/// Gateway CPU seconds per request of a round, when the gateway was measured.
fn cpu_per_request(round: &Round) -> Option<f64> {
    round
        .gateway_cpu
        .map(|cpu| cpu.as_secs_f64() / round.throughput.requests.max(1) as f64)
}

fn per_10k(round: &Round) -> String {
    cpu_per_request(round).map_or_else(|| "-".to_string(), |s| format!("{:.3}", s * 10_000.0))
}

fn us(micros: f64) -> String {
    format!("{micros:.0} µs")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The median (mean of the middle two for an even count); 0 when empty.
fn median(values: &[f64]) -> f64 {
    crate::reload::median(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Throughput;

    fn upstreams() -> Vec<SocketAddr> {
        (1..=2)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i)))
            .collect()
    }

    /// Plugin files that exist (the config loader checks that a plugin's `path` does), in a
    /// directory of this test's own, removed when dropped.
    struct TempWasm {
        wasm: Wasm,
        dir: PathBuf,
    }

    impl TempWasm {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("levee-bench-plugins-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let wasm = Wasm {
                tagger: dir.join("tagger.wasm"),
                static_fallback: dir.join("static_fallback.wasm"),
            };
            std::fs::write(&wasm.tagger, b"\0asm").unwrap();
            std::fs::write(&wasm.static_fallback, b"\0asm").unwrap();
            Self { wasm, dir }
        }
    }

    impl Drop for TempWasm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn load(text: &str) -> levee_config::Config {
        let source = levee_config::Source {
            path: Path::new("/nonexistent/levee-bench.yaml"),
            text,
        };
        levee_config::load(&source, &levee_config::StdFileSystem)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// The plugin names of the route called `name`.
    fn route_plugins(config: &levee_config::Config, name: &str) -> Vec<String> {
        let route = config.routes.iter().find(|r| r.name == name).unwrap();
        route.plugins.iter().map(|p| p.name.clone()).collect()
    }

    #[test]
    fn throughput_variants_differ_only_in_where_tagger_is() {
        let temp = TempWasm::new("throughput");
        let wasm = &temp.wasm;
        let none = load(&throughput_config(&upstreams(), Variant::NoPlugins, wasm));
        assert!(none.plugins.is_empty());
        assert!(route_plugins(&none, "bench").is_empty());
        assert!(route_plugins(&none, "other").is_empty());

        let elsewhere = load(&throughput_config(
            &upstreams(),
            Variant::ConfiguredElsewhere,
            wasm,
        ));
        assert_eq!(elsewhere.plugins.len(), 1);
        assert_eq!(
            elsewhere.plugins[0].isolation,
            levee_config::PluginIsolation::Pooled
        );
        assert_eq!(route_plugins(&elsewhere, "other"), ["tagger"]);
        assert!(route_plugins(&elsewhere, "bench").is_empty());

        for (variant, isolation) in [
            (Variant::Pooled, levee_config::PluginIsolation::Pooled),
            (
                Variant::PerRequest,
                levee_config::PluginIsolation::PerRequest,
            ),
            (
                Variant::OnRequestOnly,
                levee_config::PluginIsolation::Pooled,
            ),
            (
                Variant::OnRequestNoHeaders,
                levee_config::PluginIsolation::Pooled,
            ),
        ] {
            let on = load(&throughput_config(&upstreams(), variant, wasm));
            assert_eq!(on.plugins.len(), 1);
            assert_eq!(on.plugins[0].isolation, isolation);
            assert_eq!(on.plugins[0].path, wasm.tagger);
            assert_eq!(route_plugins(&on, "bench"), ["tagger"]);
            let bound = &on
                .routes
                .iter()
                .find(|r| r.name == "bench")
                .unwrap()
                .plugins[0];
            let one_hook = matches!(
                variant,
                Variant::OnRequestOnly | Variant::OnRequestNoHeaders
            );
            assert_eq!(bound.config.contains("\"on_response\":false"), one_hook);
            assert_eq!(
                bound.request_headers,
                (variant == Variant::OnRequestNoHeaders).then(Vec::new)
            );
        }
        for config in [&none, &elsewhere] {
            assert_eq!(config.routes.len(), 2);
            assert_eq!(config.clusters[0].endpoints.len(), 2);
            assert!(!config.log.access_log);
        }
    }

    #[test]
    fn failing_configs_answer_with_one_fallback_each() {
        let temp = TempWasm::new("failing");
        let wasm = &temp.wasm;
        let dead = SocketAddr::from(([127, 0, 0, 1], 9));
        let declarative = load(&failing_config(dead, Fallback::Declarative, wasm));
        assert!(declarative.plugins.is_empty());
        let response = declarative.routes[0]
            .fallback
            .as_ref()
            .and_then(|f| f.response.as_ref())
            .unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.body, FALLBACK_BODY.as_bytes());
        assert!(declarative.routes[0].retry.is_none());
        assert!(!declarative.clusters[0].outlier_detection.enabled);

        let plugin = load(&failing_config(dead, Fallback::Plugin, wasm));
        assert!(plugin.routes[0].fallback.is_none());
        assert_eq!(route_plugins(&plugin, "bench"), ["static-fallback"]);
        assert_eq!(plugin.plugins[0].path, wasm.static_fallback);
        let config: serde_json::Value =
            serde_json::from_str(&plugin.routes[0].plugins[0].config).unwrap();
        assert_eq!(
            config,
            serde_json::json!({ "status": 503, "body": FALLBACK_BODY, "retry_after": 30 })
        );
        assert!(!plugin.clusters[0].outlier_detection.enabled);
    }

    fn round(rps: f64, cpu_ms: u64) -> Round {
        Round {
            throughput: Throughput {
                requests: (rps * 10.0) as u64,
                rps,
                p50: Duration::from_micros(500),
                p99: Duration::from_millis(2),
                errors: 0,
            },
            gateway_cpu: Some(Duration::from_millis(cpu_ms)),
            wall: Duration::from_secs(10),
            gateway_core_busy: 0.98,
            load_core_busy: 0.8,
        }
    }

    fn failing(p50: f64, p99: f64) -> FailingRound {
        FailingRound {
            requests: 1000,
            errors: 0,
            p50_us: p50,
            p99_us: p99,
            max_us: p99 * 2.0,
        }
    }

    fn report() -> PluginReport {
        PluginReport {
            machine: Machine::probe(
                Path::new("/nonexistent"),
                Path::new("/nonexistent"),
                false,
                0.0,
            ),
            settings: Settings {
                duration: Duration::from_secs(10),
                warmup: Duration::from_secs(2),
                connections: 50,
                gateway_cpus: "0".into(),
                load_cpus: "1".into(),
                rate: 1000.0,
                phase: Duration::from_secs(10),
            },
            rounds: [
                vec![
                    round(1000.0, 1000),
                    round(1000.0, 1000),
                    round(1000.0, 1000),
                ],
                vec![
                    round(1000.0, 1000),
                    round(2000.0, 1000),
                    round(1000.0, 1000),
                ],
                // b / a: 0.97, 0.95, 0.90; the median is 0.95.
                vec![round(970.0, 1000), round(1900.0, 1000), round(900.0, 1000)],
                // c / a: 0.5, 0.45, 0.6; the median is 0.5.
                vec![round(500.0, 1000), round(900.0, 1000), round(600.0, 1000)],
                // d / a: 0.9, 0.9, 0.96; the median is 0.9.
                vec![round(900.0, 1000), round(1800.0, 1000), round(960.0, 1000)],
                // e / a: 0.96, 0.97, 0.99; the median is 0.97.
                vec![round(960.0, 1000), round(1940.0, 1000), round(990.0, 1000)],
            ],
            rss: [10 << 20, 11 << 20, 12 << 20, 13 << 20, 14 << 20, 15 << 20],
            plugin_state: vec!["(b): `tagger` 2 calls".into()],
            failing: [
                vec![
                    failing(100.0, 300.0),
                    failing(110.0, 320.0),
                    failing(90.0, 500.0),
                ],
                // p99 differences +20, +100, -10: the median is +20.
                vec![
                    failing(105.0, 320.0),
                    failing(118.0, 420.0),
                    failing(95.0, 490.0),
                ],
            ],
            failing_state: "`static-fallback` 6000 calls".into(),
        }
    }

    #[test]
    fn report_takes_the_median_of_the_per_round_ratios() {
        let report = report();
        assert_eq!(report.ratios(2, 1), vec![0.97, 0.95, 0.9]);
        assert_eq!(report.ratios(1, 0), vec![1.0, 2.0, 1.0]);
        let text = report.to_markdown();
        assert!(
            text.contains(
                "| median of the per-round ratios, (b) pooled / (a) req/s | 0.950 | >= 0.95 | yes |"
            ),
            "{text}"
        );
        assert!(
            text.contains("(c) per-request / (a) req/s | 0.500 | >= 0.95 | **no** |"),
            "{text}"
        );
        assert!(
            text.contains("(a) configured elsewhere / (0) req/s | 1.000 |"),
            "{text}"
        );
        assert!(
            text.contains(
                "(d) one `on-request`, every header / (a) req/s | 0.900 | >= 0.95 | **no** |"
            ),
            "{text}"
        );
        assert!(
            text.contains("(e) one `on-request`, no header / (a) req/s | 0.970 | >= 0.95 | yes |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| 2 | 1000 / 2000 / 1900 / 900 / 1800 / 1940 | 0.950 | 0.450 | 0.900 | 0.970 | 2.000 |"
            ),
            "{text}"
        );
        assert!(
            text.contains("10.0 MiB / 11.0 MiB / 12.0 MiB / 13.0 MiB / 14.0 MiB / 15.0 MiB"),
            "{text}"
        );
    }

    #[test]
    fn report_takes_the_median_of_the_per_round_failure_differences() {
        let report = report();
        assert_eq!(report.failing_diffs(|r| r.p99_us), vec![20.0, 100.0, -10.0]);
        let text = report.to_markdown();
        assert!(
            text.contains("plugin - declarative, p99 | +20 µs | < 50 µs | yes |"),
            "{text}"
        );
        assert!(
            text.contains("plugin - declarative, p50 | +5 µs |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| 2 | 110 µs | 320 µs | 640 µs | 118 µs | 420 µs | 840 µs | +8 µs | +100 µs |"
            ),
            "{text}"
        );
    }

    #[test]
    fn failing_round_counts_only_fallback_answers() {
        let sample = |micros, outcome| Sample {
            due: Duration::ZERO,
            latency: Duration::from_micros(micros + 1000),
            service: Duration::from_micros(micros),
            outcome,
        };
        let mut samples: Vec<Sample> = (1..=100)
            .map(|i| sample(i * 10, Outcome::Status(503)))
            .collect();
        samples.push(sample(5, Outcome::Status(502)));
        samples.push(sample(9_999_999, Outcome::Timeout));
        let round = FailingRound::from_samples(&samples);
        assert_eq!(round.requests, 102);
        assert_eq!(round.errors, 2);
        assert_eq!(round.p50_us, 500.0);
        assert_eq!(round.p99_us, 990.0);
        assert_eq!(round.max_us, 1000.0);
    }

    #[test]
    fn plugins_summary_reads_calls_faults_and_mean_call_time() {
        let json = serde_json::json!([ {
            "name": "tagger", "calls": 200, "breaker_opened": 0, "instantiations": 3,
            "latency_mean_us": 2.25, "faults": { "trap": 1, "deadline": 2 },
        } ]);
        assert_eq!(
            summarize_plugins(&json),
            "`tagger` 200 calls, 3 faults, breaker opened 0 times, 3 instances created, mean \
             call 2.2 µs"
        );
        // The shape `/plugins` answers with.
        let wrapped = serde_json::json!({ "plugins": json });
        assert_eq!(summarize_plugins(&wrapped), summarize_plugins(&json));
        assert_eq!(
            summarize_plugins(&serde_json::json!({ "plugins": [] })),
            "no plugin in /plugins"
        );
    }
}
