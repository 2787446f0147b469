//! The resilience overhead scenario: Levee with every resilience feature on, against the same
//! Levee with them off, in one run.
//!
//! Two Levee processes run side by side on the gateway's CPU, over the same three upstreams, and
//! differ only in their config ([`overhead_config`]). wrk loads one at a time, at the most it can
//! send, in rounds that alternate off, on, off, on, so a drift of the machine (other work, heat,
//! a neighbour VM) hits both alike; each round pairs two runs made seconds apart, and the figure
//! reported is the median over the rounds of `on / off`. Nothing fails during the run, so this
//! is the price of the bookkeeping on the success path: the retry budget's counters, outlier
//! detection's per-request outcome, the breakers' windows, the bulkheads' permits, and the
//! active health checks running beside the load.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;

use crate::report::{Machine, Round, ms};
use crate::run::{self, progress};
use crate::targets::{self, Server};
use crate::{OverheadArgs, watch};

/// Upstreams of the cluster: three, so that outlier detection and the balancer have a choice.
const UPSTREAMS: usize = 3;

/// The ratio `on / off` the project aims for: resilience may cost at most 5% of throughput.
const TARGET_RATIO: f64 = 0.95;

/// Which side of the comparison a config is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Features {
    /// No retry, no fallback, no outlier detection, no health checks, no breaker; the cluster
    /// `limits` keep their defaults, since Levee always has its bulkheads.
    Off,
    /// Every resilience feature on: retry with a budget, a static fallback, outlier detection,
    /// active health checks every second, a count-window breaker per cluster and per endpoint,
    /// and explicit limits.
    On,
}

/// What the scenario measured.
#[derive(Debug)]
struct OverheadReport {
    machine: Machine,
    args: Settings,
    /// Rounds with the features off, in order.
    off: Vec<Round>,
    /// Rounds with the features on, in order; `on[i]` ran right after `off[i]`.
    on: Vec<Round>,
    /// The "on" gateway's `/clusters` after the rounds, summarized.
    on_state: String,
}

/// The options of the run, for the report.
#[derive(Debug)]
struct Settings {
    duration: std::time::Duration,
    warmup: std::time::Duration,
    connections: u32,
    gateway_cpus: String,
    load_cpus: String,
}

/// The Levee config of one side: one route over one round-robin cluster of `upstreams`.
pub(crate) fn overhead_config(upstreams: &[SocketAddr], features: Features) -> String {
    let mut out = String::from(
        "listeners:\n  - name: bench\n    address: 127.0.0.1:0\n    limits: { max_connections: 30000 }\n\
         admin:\n  address: 127.0.0.1:0\nroutes:\n  - name: bench\n    match: { path_prefix: \"/\" }\n    cluster: bench\n",
    );
    if features == Features::On {
        out.push_str(
            "    retry:\n      attempts: 3\n      on: [connect-failure, reset, timeout, 502, 503, 504]\n      \
             per_try_timeout: 1s\n      backoff: { base: 25ms, max: 250ms }\n      \
             budget: { ratio: 20%, min_per_second: 10 }\n    \
             fallback: { response: { status: 503, body: \"degraded\" } }\n",
        );
    }
    out.push_str(
        "clusters:\n  - name: bench\n    lb: round-robin\n    max_idle_per_endpoint: 64\n    endpoints:\n",
    );
    for upstream in upstreams {
        let _ = writeln!(out, "      - {{ address: \"{upstream}\" }}");
    }
    match features {
        Features::Off => out.push_str("    outlier_detection: false\n"),
        Features::On => out.push_str(
            "    health_check: { path: /healthz, interval: 1s, timeout: 500ms }\n    \
             outlier_detection: { consecutive_5xx: 5, consecutive_gateway_failure: 5 }\n    \
             circuit_breaker: { failure_rate: 50%, window: 100, minimum_calls: 20, open_duration: 30s, \
             half_open_probes: 3, per_endpoint: true }\n    \
             limits: { max_connections: 1024, max_pending: 1024, max_requests: 1024, max_retries: 3 }\n",
        ),
    }
    out.push_str(
        "shutdown:\n  drain_delay: 0s\n  drain_timeout: 1s\nlog:\n  level: info\n  access_log: false\n",
    );
    out
}

/// Runs the overhead scenario and prints its report.
pub(crate) fn run(args: &OverheadArgs) -> anyhow::Result<()> {
    args.scenario.run(&["wrk", "taskset"], |levee, work| {
        Ok(run_in(args, levee, work)?.to_markdown())
    })
}

fn run_in(args: &OverheadArgs, levee: &Path, work: &Path) -> anyhow::Result<OverheadReport> {
    let s = &args.scenario;
    let background = run::background_busy()?;
    let cpus = s.placement()?;
    let load = s.load(args.connections, args.duration, args.warmup, work);

    progress("starting three upstreams");
    let mut upstreams = s.start_upstreams(UPSTREAMS)?;
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.address).collect();
    let mut off = targets::start_levee(
        levee,
        &s.gateway_cpus,
        &work.join("levee-off.yaml"),
        &overhead_config(&addrs, Features::Off),
    )?;
    let mut on = targets::start_levee(
        levee,
        &s.gateway_cpus,
        &work.join("levee-on.yaml"),
        &overhead_config(&addrs, Features::On),
    )?;

    let rounds = args.rounds.max(1);
    let (mut off_rounds, mut on_rounds) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (name, server, into) in [
            ("off", &mut off, &mut off_rounds),
            ("on", &mut on, &mut on_rounds),
        ] {
            progress(&format!("round {} of {rounds}: features {name}", round + 1));
            let url = run::url(server.address);
            into.push(run::throughput_round(&load, &cpus, &url, Some(server))?);
        }
    }

    let on_state = state_summary(&on)?;
    off.proc.check_alive()?;
    for upstream in &mut upstreams {
        upstream.proc.check_alive()?;
    }
    Ok(OverheadReport {
        machine: Machine::probe(levee, Path::new("nginx"), true, background),
        args: Settings {
            duration: args.duration,
            warmup: args.warmup,
            connections: args.connections,
            gateway_cpus: s.gateway_cpus.clone(),
            load_cpus: s.load_cpus.clone(),
        },
        off: off_rounds,
        on: on_rounds,
        on_state,
    })
}

/// The "on" gateway's cluster as `/clusters` shows it, in one line: evidence that the features
/// were live (checks passing, the breaker counting calls) and that nothing was ejected.
fn state_summary(server: &Server) -> anyhow::Result<String> {
    let admin = server.admin.context("Levee reported no admin address")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let json = runtime.block_on(watch::fetch_clusters(admin))?;
    Ok(summarize_cluster(&json))
}

/// One line about the first cluster of a `/clusters` answer.
fn summarize_cluster(json: &serde_json::Value) -> String {
    let Some(cluster) = json
        .get("clusters")
        .and_then(|c| c.as_array())
        .and_then(|c| c.first())
    else {
        return "no cluster in /clusters".to_string();
    };
    let endpoints = cluster
        .get("endpoints")
        .and_then(|e| e.as_array())
        .cloned()
        .unwrap_or_default();
    let usable = endpoints
        .iter()
        .filter(|e| e.get("usable").and_then(serde_json::Value::as_bool) == Some(true))
        .count();
    let health: Vec<&str> = endpoints
        .iter()
        .map(|e| e.get("health").and_then(|h| h.as_str()).unwrap_or("?"))
        .collect();
    let ejections: u64 = endpoints
        .iter()
        .filter_map(|e| e.get("ejection_count").and_then(serde_json::Value::as_u64))
        .sum();
    let breaker = cluster.get("breaker");
    let state = breaker
        .and_then(|b| b.get("state"))
        .and_then(|s| s.as_str())
        .unwrap_or("none");
    let calls = breaker
        .and_then(|b| b.get("calls"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    format!(
        "{} endpoints, {usable} usable; active health: {}; cluster breaker {state} with {calls} \
         calls in its window; {ejections} ejections",
        endpoints.len(),
        health.join(", ")
    )
}

// === impl OverheadReport ===

impl OverheadReport {
    /// `on / off` requests per second of each round.
    fn ratios(&self) -> Vec<f64> {
        self.off
            .iter()
            .zip(&self.on)
            .map(|(off, on)| on.throughput.rps / off.throughput.rps.max(1e-9))
            .collect()
    }

    /// `on / off` gateway CPU time per request of each round.
    fn cpu_ratios(&self) -> Vec<f64> {
        self.off
            .iter()
            .zip(&self.on)
            .filter_map(|(off, on)| Some(cpu_per_request(on)? / cpu_per_request(off)?.max(1e-12)))
            .collect()
    }

    /// The report as markdown.
    fn to_markdown(&self) -> String {
        let a = &self.args;
        let mut out = String::from("# Levee resilience overhead: every feature on vs off\n\n");
        out.push_str(&self.machine.summary());
        let _ = writeln!(
            out,
            "- Placement: two Levee processes (`--workers 1`; one per config, loaded one at a \
             time) on CPU {}; three upstreams (1 thread each), wrk and the harness on CPU {}.\n\
             - Load: `wrk -t1 -c{}`, closed loop, {} measured after {} of warm-up, in {} rounds \
             of off then on.\n\
             - off: no `retry`, no `fallback`, `outlier_detection: false`, no `health_check`, no \
             `circuit_breaker`; `limits` at their defaults (always on in Levee).\n\
             - on: `retry` (3 attempts, `per_try_timeout: 1s`, budget 20% + 10/s), a static \
             `fallback`, `outlier_detection` (consecutive 5xx and gateway failures, 5 each), \
             `health_check` every 1s, `circuit_breaker` (count window of 100 calls, also per \
             endpoint), explicit `limits`.\n",
            a.gateway_cpus,
            a.load_cpus,
            a.connections,
            humantime::format_duration(a.duration),
            humantime::format_duration(a.warmup),
            self.off.len(),
        );

        out.push_str(
            "| round | off req/s | on req/s | on / off | off p99 | on p99 | off CPU s per 10k req | \
             on CPU s per 10k req | off core busy | on core busy | load core busy (off / on) | \
             errors (off / on) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (i, ((off, on), ratio)) in self.off.iter().zip(&self.on).zip(self.ratios()).enumerate()
        {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {ratio:.3} | {} | {} | {} | {} | {:.0}% | {:.0}% | {:.0}% / {:.0}% | {} / {} |",
                i + 1,
                off.throughput.rps,
                on.throughput.rps,
                ms(off.throughput.p99),
                ms(on.throughput.p99),
                per_10k(off),
                per_10k(on),
                off.gateway_core_busy * 100.0,
                on.gateway_core_busy * 100.0,
                off.load_core_busy * 100.0,
                on.load_core_busy * 100.0,
                off.throughput.errors,
                on.throughput.errors,
            );
        }

        let ratio = median(&self.ratios());
        let cpu = median(&self.cpu_ratios());
        let rps =
            |rounds: &[Round]| median(&rounds.iter().map(|r| r.throughput.rps).collect::<Vec<_>>());
        let _ = writeln!(
            out,
            "\n| what | measured | target | met |\n|---|---:|---:|---|\n\
             | median of the per-round ratios, on / off req/s | {ratio:.3} | >= {TARGET_RATIO:.2} | {} |\n\
             | median req/s, off and on | {:.0} and {:.0} | - | - |\n\
             | median of the per-round ratios, on / off CPU time per request | {cpu:.3} | - | - |\n\
             \nThe \"on\" gateway after the rounds (`/clusters`): {}.",
            if ratio >= TARGET_RATIO {
                "yes"
            } else {
                "**no**"
            },
            rps(&self.off),
            rps(&self.on),
            self.on_state,
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

/// The median (mean of the middle two for an even count); 0 when empty.
fn median(values: &[f64]) -> f64 {
    crate::reload::median(values)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::Throughput;

    fn upstreams() -> Vec<SocketAddr> {
        (1..=3)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i)))
            .collect()
    }

    fn load(text: &str) -> levee_config::Config {
        let source = levee_config::Source {
            path: Path::new("/nonexistent/levee-bench.yaml"),
            text,
        };
        levee_config::load(&source, &levee_config::StdFileSystem)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn features_on_config_turns_every_feature_on() {
        let config = load(&overhead_config(&upstreams(), Features::On));
        let route = &config.routes[0];
        assert!(route.retry.is_some());
        assert!(route.fallback.is_some());
        let cluster = &config.clusters[0];
        assert_eq!(cluster.endpoints.len(), 3);
        assert_eq!(cluster.lb, levee_config::LbPolicy::RoundRobin);
        let check = cluster.health_check.as_ref().unwrap();
        assert_eq!(check.interval, Duration::from_secs(1));
        assert!(cluster.outlier_detection.enabled);
        assert!(cluster.circuit_breaker.is_some());
        assert!(!config.log.access_log);
    }

    #[test]
    fn features_off_config_turns_every_optional_feature_off() {
        let config = load(&overhead_config(&upstreams(), Features::Off));
        let route = &config.routes[0];
        assert!(route.retry.is_none());
        assert!(route.fallback.is_none());
        let cluster = &config.clusters[0];
        assert_eq!(cluster.endpoints.len(), 3);
        assert!(cluster.health_check.is_none());
        assert!(!cluster.outlier_detection.enabled);
        assert!(cluster.circuit_breaker.is_none());
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

    #[test]
    fn report_pairs_rounds_and_takes_the_median_ratio() {
        let report = OverheadReport {
            machine: Machine::probe(
                Path::new("/nonexistent"),
                Path::new("/nonexistent"),
                false,
                0.0,
            ),
            args: Settings {
                duration: Duration::from_secs(10),
                warmup: Duration::from_secs(2),
                connections: 50,
                gateway_cpus: "0".into(),
                load_cpus: "1".into(),
            },
            off: vec![
                round(1000.0, 1000),
                round(2000.0, 1000),
                round(1000.0, 1000),
            ],
            // Ratios 0.9, 0.99 and 1.0: the median is 0.99, the middle round's.
            on: vec![round(900.0, 1000), round(1980.0, 1000), round(1000.0, 1000)],
            on_state: "3 endpoints".into(),
        };
        assert_eq!(report.ratios(), vec![0.9, 0.99, 1.0]);
        let text = report.to_markdown();
        assert!(
            text.contains(
                "| median of the per-round ratios, on / off req/s | 0.990 | >= 0.95 | yes |"
            ),
            "{text}"
        );
        assert!(text.contains("| 1 | 1000 | 900 | 0.900 |"), "{text}");
        assert!(
            text.contains("| median req/s, off and on | 1000 and 1000 |"),
            "{text}"
        );
        // The same CPU time over fewer requests: 1.111, 1.010 and 1.000 times the CPU per
        // request; the median is the middle round's.
        assert_eq!(report.cpu_ratios().len(), 3);
        assert!(
            text.contains("on / off CPU time per request | 1.010 |"),
            "{text}"
        );
    }

    #[test]
    fn cluster_summary_counts_usable_endpoints_and_breaker_calls() {
        let json = serde_json::json!({ "clusters": [ {
            "breaker": { "state": "closed", "calls": 100 },
            "endpoints": [
                { "usable": true, "health": "healthy", "ejection_count": 0 },
                { "usable": true, "health": "healthy", "ejection_count": 1 },
                { "usable": false, "health": "unhealthy", "ejection_count": 0 },
            ],
        } ] });
        assert_eq!(
            summarize_cluster(&json),
            "3 endpoints, 2 usable; active health: healthy, healthy, unhealthy; cluster breaker \
             closed with 100 calls in its window; 1 ejections"
        );
    }
}
