//! The chaos scenario: one of three upstreams killed, then restarted, under a steady load.
//!
//! Levee forwards a fixed rate of requests ([`open_loop`](crate::open_loop)) over three
//! upstreams, with retries, active health checks every second and outlier detection at its
//! defaults ([`chaos_config`]). The run has three phases of equal length (10 s by default):
//! before, during and after an outage. At the end of the first phase the harness kills one
//! upstream process (`SIGKILL`, so its connections are reset and its port refuses); at the end
//! of the second it starts a new one on the same port. Meanwhile it polls the admin
//! `/clusters` ([`watch`](crate::watch)) for the killed endpoint's `usable` flag.
//!
//! What it reports, per phase: the requests the client saw fail (non-2xx answers, timeouts,
//! transport failures) and the latency of the others; and the time from the kill to the
//! endpoint's leaving the balancer, and from the restart to its return. The gateway's own log
//! lines about the endpoint (ejection, health changes, readmission) are listed beside them as a
//! cross-check, with their timestamps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::sync::watch as signal;
use tokio::time::Instant;

use crate::ChaosArgs;
use crate::load::percentile;
use crate::open_loop::{self, Outcome, Sample, Schedule};
use crate::report::{Machine, ms};
use crate::run::{self, progress};
use crate::targets::{self, Server};
use crate::watch::{self, Observation};

/// Upstreams of the cluster; the first one is killed.
const UPSTREAMS: usize = 3;

/// How long after the restart the harness keeps watching for the endpoint's return once the
/// load has ended. Readmission takes two passed health checks (about 2 s at a 1 s interval);
/// this leaves room for an ejection that must run out first.
const READMIT_WAIT: Duration = Duration::from_secs(40);

/// Lead time between setting up the load and its first request, so that the watcher's first
/// poll and the first request start together.
const LEAD: Duration = Duration::from_millis(200);

/// The gateway's log messages about an endpoint's state that the report lists.
const EVENT_MESSAGES: [&str; 6] = [
    "endpoint ejected",
    "ejection held back by the minimum-healthy floor",
    "endpoint on probation: the next request probes it",
    "endpoint readmitted",
    "endpoint healthy",
    "endpoint unhealthy",
];

/// The Levee config of the scenario: one route with retries (`per_try_timeout` each) over one
/// round-robin cluster of `upstreams`, with active health checks every second and outlier
/// detection at its defaults; `max_retries`, when given, is the cluster's `limits.max_retries`.
pub(crate) fn chaos_config(
    upstreams: &[SocketAddr],
    per_try_timeout: Duration,
    max_retries: Option<u32>,
) -> String {
    let mut out = format!(
        "listeners:\n  - name: bench\n    address: 127.0.0.1:0\n    limits: {{ max_connections: 30000 }}\n\
         admin:\n  address: 127.0.0.1:0\nroutes:\n  - name: bench\n    match: {{ path_prefix: \"/\" }}\n    \
         cluster: bench\n    retry: {{ attempts: 3, per_try_timeout: {}ms }}\n\
         clusters:\n  - name: bench\n    lb: round-robin\n    max_idle_per_endpoint: 64\n    \
         health_check: {{ path: /healthz, interval: 1s }}\n    endpoints:\n",
        per_try_timeout.as_millis().max(1)
    );
    for upstream in upstreams {
        let _ = writeln!(out, "      - {{ address: \"{upstream}\" }}");
    }
    if let Some(max) = max_retries {
        let _ = writeln!(out, "    limits: {{ max_retries: {max} }}");
    }
    out.push_str(
        "shutdown:\n  drain_delay: 0s\n  drain_timeout: 1s\nlog:\n  level: info\n  access_log: false\n",
    );
    out
}

/// What the scenario measured.
#[derive(Debug)]
struct ChaosReport {
    machine: Machine,
    settings: Settings,
    /// Every request of the measured phases.
    samples: Vec<Sample>,
    /// The killed endpoint as `/clusters` showed it, in order.
    observations: Vec<Observation>,
    /// When the upstream was killed, from the start of the load.
    killed_at: Duration,
    /// When its replacement was listening, from the start of the load.
    restarted_at: Duration,
    /// The gateway's log lines about the endpoint: (time from the start of the load, text).
    events: Vec<(Duration, String)>,
    /// Levee's CPU time over the measured phases.
    gateway_cpu: Duration,
    /// Failed requests of the warm-up (expected 0).
    warmup_errors: usize,
    /// The gateway's retry counters after the run (`levee_retries*` lines of `/metrics`).
    retry_metrics: Vec<String>,
}

/// The options of the run, for the report.
#[derive(Debug)]
struct Settings {
    rate: f64,
    phase: Duration,
    warmup: Duration,
    per_try_timeout: Duration,
    max_retries: Option<u32>,
    request_timeout: Duration,
    poll: Duration,
    gateway_cpus: String,
    load_cpus: String,
    victim: SocketAddr,
}

/// Requests, failures and latency of one stretch of the run.
#[derive(Debug, Clone, PartialEq)]
struct Stats {
    requests: usize,
    /// Non-2xx answers, timeouts and transport failures.
    errors: usize,
    /// Errors by kind: a status (`502`), `timeout` or `transport`.
    kinds: BTreeMap<String, usize>,
    /// Percentiles of the 2xx answers' latency.
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// Runs the chaos scenario and prints its report.
pub(crate) fn run(args: &ChaosArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    args.scenario.run(&["taskset"], |levee, work| {
        Ok(run_in(args, levee, work)?.to_markdown())
    })
}

fn run_in(args: &ChaosArgs, levee: &Path, work: &Path) -> anyhow::Result<ChaosReport> {
    let s = &args.scenario;
    let background = run::background_busy()?;
    progress("starting three upstreams");
    let mut upstreams = s.start_upstreams(UPSTREAMS)?;
    let addrs: Vec<SocketAddr> = upstreams.iter().map(|u| u.address).collect();
    let mut gateway = targets::start_levee(
        levee,
        &s.gateway_cpus,
        &work.join("levee-chaos.yaml"),
        &chaos_config(&addrs, args.per_try_timeout, args.max_retries),
    )?;
    let admin = gateway.admin.context("Levee reported no admin address")?;
    let url = run::url(gateway.address);
    let victim = upstreams.remove(0);
    let victim_addr = victim.address;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    progress(&format!(
        "warm-up: {} at {:.0} req/s",
        humantime::format_duration(args.warmup),
        args.rate
    ));
    let warmup = Schedule {
        rate: args.rate,
        duration: args.warmup,
        timeout: args.request_timeout,
    };
    let warmup_errors = runtime
        .block_on(open_loop::run(&url, warmup, Instant::now()))?
        .iter()
        .filter(|s| !s.outcome.is_success())
        .count();

    // Log lines so far are startup and warm-up; the report lists those of the measured run.
    let _ = gateway.proc.drain(|_| Some(()));
    let cpu_before = gateway.proc.cpu_time()?;
    progress(&format!(
        "chaos: {:.0} req/s for 3 x {}; {victim_addr} killed after the first phase, restarted \
         after the second",
        args.rate,
        humantime::format_duration(args.phase)
    ));
    let schedule = Schedule {
        rate: args.rate,
        duration: args.phase * 3,
        timeout: args.request_timeout,
    };
    let (samples, observations, killed_at, restarted_at, start_wall, retry_metrics) = runtime
        .block_on(async {
            let start = Instant::now() + LEAD;
            let start_wall = SystemTime::now() + LEAD;
            let (stop, stopped) = signal::channel(false);
            let watcher = tokio::spawn(watch::watch(admin, victim_addr, start, args.poll, stopped));
            let load = tokio::spawn({
                let url = url.clone();
                async move { open_loop::run(&url, schedule, start).await }
            });

            tokio::time::sleep_until(start + args.phase).await;
            let killed_at = start.elapsed();
            // Dropping the process kills it (SIGKILL) and reaps it.
            tokio::task::spawn_blocking(move || drop(victim)).await?;
            progress(&format!("killed {victim_addr}"));

            tokio::time::sleep_until(start + args.phase * 2).await;
            let cpus = s.load_cpus.clone();
            let port = victim_addr.port();
            let restarted = tokio::task::spawn_blocking(move || restart(&cpus, port)).await??;
            let restarted_at = start.elapsed();
            progress(&format!("restarted {victim_addr}"));

            let samples = load.await.context("the load task panicked")??;
            // The load is over; keep watching until the endpoint is back, or give up.
            let deadline = start + restarted_at + READMIT_WAIT;
            while Instant::now() < deadline {
                let back = watch::fetch_clusters(admin)
                    .await
                    .ok()
                    .and_then(|json| watch::find_endpoint(&json, victim_addr))
                    .is_some_and(|o| o.usable);
                if back {
                    // One more poll of the watcher, so it records the return too.
                    tokio::time::sleep(args.poll * 2).await;
                    break;
                }
                tokio::time::sleep(args.poll).await;
            }
            let _ = stop.send(true);
            let observations = watcher.await.context("the watcher panicked")?;
            let metrics = watch::fetch(admin, "/metrics").await?;
            let retry_metrics = retry_lines(&String::from_utf8_lossy(&metrics));
            upstreams.push(restarted);
            anyhow::Ok((
                samples,
                observations,
                killed_at,
                restarted_at,
                start_wall,
                retry_metrics,
            ))
        })?;
    let gateway_cpu = gateway.proc.cpu_time()?.saturating_sub(cpu_before);
    gateway.proc.check_alive()?;
    for upstream in &mut upstreams {
        upstream.proc.check_alive()?;
    }
    let events = gateway
        .proc
        .drain(|line| endpoint_event(line, victim_addr, start_wall));

    Ok(ChaosReport {
        machine: Machine::probe(levee, Path::new("nginx"), true, background),
        settings: Settings {
            rate: args.rate,
            phase: args.phase,
            warmup: args.warmup,
            per_try_timeout: args.per_try_timeout,
            max_retries: args.max_retries,
            request_timeout: args.request_timeout,
            poll: args.poll,
            gateway_cpus: s.gateway_cpus.clone(),
            load_cpus: s.load_cpus.clone(),
            victim: victim_addr,
        },
        samples,
        observations,
        killed_at,
        restarted_at,
        events,
        gateway_cpu,
        warmup_errors,
        retry_metrics,
    })
}

/// The retry counters of a `/metrics` text: the `levee_retries*` samples (warm-up included).
fn retry_lines(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("levee_retries"))
        .map(str::to_string)
        .collect()
}

/// Starts the replacement upstream on `port`. The old process's port is free once it is
/// reaped, but a few tries cover a slow kernel.
fn restart(cpus: &str, port: u16) -> anyhow::Result<Server> {
    let mut last = None;
    for _ in 0..5 {
        match targets::start_upstream_on(cpus, 1, port) {
            Ok(server) => return Ok(server),
            Err(error) => {
                last = Some(error);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("could not restart the upstream on port {port}")))
}

/// A gateway log line about `endpoint`'s state, as (time from `start`, one-line text).
fn endpoint_event(
    line: &str,
    endpoint: SocketAddr,
    start: SystemTime,
) -> Option<(Duration, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let message = v.get("message")?.as_str()?;
    if !EVENT_MESSAGES.contains(&message) {
        return None;
    }
    if v.get("endpoint")?.as_str()? != endpoint.to_string() {
        return None;
    }
    let at = humantime::parse_rfc3339_weak(v.get("timestamp")?.as_str()?).ok()?;
    let at = at.duration_since(start).unwrap_or(Duration::ZERO);
    let mut text = message.to_string();
    for key in ["reason", "ejection_ms", "via"] {
        if let Some(value) = v.get(key) {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            let _ = write!(text, ", {key} {value}");
        }
    }
    Some((at, text))
}

/// Requests, failures and latency of the samples due in `[from, to)`.
fn stats(samples: &[Sample], from: Duration, to: Duration) -> Stats {
    let mut kinds = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut requests = 0;
    for sample in samples.iter().filter(|s| s.due >= from && s.due < to) {
        requests += 1;
        match sample.outcome {
            outcome if outcome.is_success() => latencies.push(sample.latency.as_micros() as u64),
            Outcome::Status(status) => *kinds.entry(status.to_string()).or_insert(0) += 1,
            Outcome::Timeout => *kinds.entry("timeout".to_string()).or_insert(0) += 1,
            Outcome::Transport => *kinds.entry("transport".to_string()).or_insert(0) += 1,
        }
    }
    latencies.sort_unstable();
    Stats {
        requests,
        errors: kinds.values().sum(),
        kinds,
        p50: Duration::from_micros(percentile(&latencies, 50.0)),
        p99: Duration::from_micros(percentile(&latencies, 99.0)),
        max: Duration::from_micros(latencies.last().copied().unwrap_or(0)),
    }
}

/// `1 × 502, 3 × transport`, or `-` when there are none.
fn kinds_text(kinds: &BTreeMap<String, usize>) -> String {
    if kinds.is_empty() {
        return "-".to_string();
    }
    kinds
        .iter()
        .map(|(kind, n)| format!("{n} × {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn seconds(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

// === impl ChaosReport ===

impl ChaosReport {
    /// The time from `event` to the first observation at or after it for which `pick` holds,
    /// with that observation.
    fn after(
        &self,
        event: Duration,
        pick: impl Fn(&Observation) -> bool,
    ) -> Option<(Duration, &Observation)> {
        watch::first_after(&self.observations, event, pick).map(|o| (o.at - event, o))
    }

    /// The last observation before `at`, if any: the state the event found.
    fn before(&self, at: Duration) -> Option<&Observation> {
        self.observations.iter().rev().find(|o| o.at < at)
    }

    /// The report as markdown.
    fn to_markdown(&self) -> String {
        let s = &self.settings;
        let mut out = String::from(
            "# Levee chaos: one of three upstreams killed and restarted under load\n\n",
        );
        out.push_str(&self.machine.summary());
        let _ = writeln!(
            out,
            "- Placement: Levee (`--workers 1`) on CPU {}; three upstreams (1 thread each), the \
             harness's open-loop client and the admin watcher on CPU {}.\n\
             - Config: round robin over three upstreams; `retry: {{ attempts: 3, per_try_timeout: \
             {} }}` (other retry keys at their defaults); `health_check: {{ path: /healthz, \
             interval: 1s }}` (3 failures to unhealthy, 2 passes to healthy); outlier detection \
             at its defaults (5 consecutive gateway failures eject for 30 s); cluster \
             `limits.max_retries` (concurrent retries): {}.\n\
             - Load: open loop at {:.0} req/s for 3 × {} after {} of warm-up ({} warm-up \
             failures); latency counted from each request's due time; a request without an \
             answer after {} counts as a timeout.\n\
             - Fault: upstream {} killed (SIGKILL) at {}, a new one listening on the same port at \
             {}. `/clusters` polled every {} ({} polls).\n\
             - Levee's CPU over the three phases: {:.1} s ({:.0}% of a core).\n",
            s.gateway_cpus,
            s.load_cpus,
            humantime::format_duration(s.per_try_timeout),
            s.max_retries
                .map_or_else(|| "the default, 3".to_string(), |n| n.to_string()),
            s.rate,
            humantime::format_duration(s.phase),
            humantime::format_duration(s.warmup),
            self.warmup_errors,
            humantime::format_duration(s.request_timeout),
            s.victim,
            seconds(self.killed_at),
            seconds(self.restarted_at),
            humantime::format_duration(s.poll),
            self.observations.len(),
            self.gateway_cpu.as_secs_f64(),
            100.0 * self.gateway_cpu.as_secs_f64() / (s.phase * 3).as_secs_f64().max(1e-9),
        );

        out.push_str("## Client view, per phase\n\n");
        out.push_str(
            "| phase | requests | errors | errors by kind | p50 (2xx) | p99 (2xx) | max (2xx) |\n\
             |---|---:|---:|---|---:|---:|---:|\n",
        );
        let p = s.phase;
        let phases = [
            (format!("before (0-{} s)", p.as_secs()), Duration::ZERO, p),
            (
                format!("during (outage, {}-{} s)", p.as_secs(), 2 * p.as_secs()),
                p,
                p * 2,
            ),
            (
                format!(
                    "after (restarted, {}-{} s)",
                    2 * p.as_secs(),
                    3 * p.as_secs()
                ),
                p * 2,
                p * 3,
            ),
            ("all".to_string(), Duration::ZERO, p * 3),
        ];
        for (name, from, to) in phases {
            let st = stats(&self.samples, from, to);
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} | {} |",
                st.requests,
                st.errors,
                kinds_text(&st.kinds),
                ms(st.p50),
                ms(st.p99),
                ms(st.max)
            );
        }

        out.push_str("\n## Gateway view: the killed endpoint in `/clusters`\n\n");
        out.push_str("| transition | time | state seen |\n|---|---:|---|\n");
        let state = |o: &Observation| {
            format!(
                "usable {}, health {}, ejected {}",
                o.usable,
                o.health,
                o.ejected.as_deref().unwrap_or("no")
            )
        };
        let mut row = |what: &str, found: Option<(Duration, &Observation)>| {
            let _ = match found {
                Some((took, o)) => writeln!(out, "| {what} | {} | {} |", seconds(took), state(o)),
                None => writeln!(out, "| {what} | not seen | - |"),
            };
        };
        row(
            "kill → not usable (out of the balancer)",
            self.after(self.killed_at, |o| !o.usable),
        );
        row(
            "kill → active health `unhealthy`",
            self.after(self.killed_at, |o| o.health == "unhealthy"),
        );
        row(
            "restart → active health `healthy`",
            self.after(self.restarted_at, |o| o.health == "healthy"),
        );
        row(
            "restart → usable again (readmitted)",
            self.after(self.restarted_at, |o| o.usable),
        );
        let _ = writeln!(
            out,
            "\nState at the kill (last poll before it): {}. State at the restart: {}.",
            self.before(self.killed_at)
                .map_or_else(|| "not seen".to_string(), state),
            self.before(self.restarted_at)
                .map_or_else(|| "not seen".to_string(), state),
        );

        if !self.events.is_empty() {
            out.push_str(
                "\nThe gateway's log about the endpoint (time from the start of the load):\n\n",
            );
            for (at, text) in &self.events {
                let _ = writeln!(out, "- {}: {text}", seconds(*at));
            }
        }

        if !self.retry_metrics.is_empty() {
            out.push_str("\nThe gateway's retry counters after the run (warm-up included):\n\n");
            for line in &self.retry_metrics {
                let _ = writeln!(out, "- `{line}`");
            }
        }

        out.push_str("\n## Per second\n\n| second | requests | errors | p99 (2xx) |\n|---:|---:|---:|---:|\n");
        let total = (p * 3).as_secs();
        for second in 0..total {
            let from = Duration::from_secs(second);
            let st = stats(&self.samples, from, from + Duration::from_secs(1));
            let _ = writeln!(
                out,
                "| {second} | {} | {} | {} |",
                st.requests,
                st.errors,
                ms(st.p99)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(due_ms: u64, latency_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            due: Duration::from_millis(due_ms),
            latency: Duration::from_millis(latency_ms),
            service: Duration::from_millis(latency_ms),
            outcome,
        }
    }

    #[test]
    fn config_has_retries_health_checks_and_default_outlier_detection() {
        let upstreams: Vec<SocketAddr> = (1..=3)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i)))
            .collect();
        let text = chaos_config(&upstreams, Duration::from_millis(500), None);
        let source = levee_config::Source {
            path: Path::new("/nonexistent/levee-bench.yaml"),
            text: &text,
        };
        let config = levee_config::load(&source, &levee_config::StdFileSystem)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let retry = config.routes[0].retry.as_ref().unwrap();
        assert_eq!(retry.attempts, 3);
        assert_eq!(retry.per_try_timeout, Some(Duration::from_millis(500)));
        let cluster = &config.clusters[0];
        assert_eq!(cluster.endpoints.len(), 3);
        assert_eq!(
            cluster.health_check.as_ref().unwrap().interval,
            Duration::from_secs(1)
        );
        assert!(cluster.outlier_detection.enabled);
        assert!(cluster.circuit_breaker.is_none());
        assert_eq!(cluster.limits.max_retries, 3);

        let text = chaos_config(&upstreams, Duration::from_millis(500), Some(20));
        let source = levee_config::Source {
            path: Path::new("/nonexistent/levee-bench.yaml"),
            text: &text,
        };
        let config = levee_config::load(&source, &levee_config::StdFileSystem)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.clusters[0].limits.max_retries, 20);
    }

    #[test]
    fn stats_split_by_due_time_and_count_every_failure_kind() {
        let samples = [
            sample(100, 1, Outcome::Status(200)),
            sample(900, 3, Outcome::Status(200)),
            sample(1000, 2, Outcome::Status(502)),
            sample(1100, 5000, Outcome::Timeout),
            sample(1200, 1, Outcome::Transport),
            sample(1300, 7, Outcome::Status(200)),
            sample(1400, 1, Outcome::Status(502)),
        ];
        let before = stats(&samples, Duration::ZERO, Duration::from_secs(1));
        assert_eq!(before.requests, 2);
        assert_eq!(before.errors, 0);
        assert_eq!(before.p50, Duration::from_millis(1));
        assert_eq!(before.max, Duration::from_millis(3));
        let during = stats(&samples, Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(during.requests, 5);
        assert_eq!(during.errors, 4);
        assert_eq!(
            kinds_text(&during.kinds),
            "2 × 502, 1 × timeout, 1 × transport"
        );
        // Failures' latencies are not in the percentiles: only the one 2xx answer is.
        assert_eq!(during.p99, Duration::from_millis(7));
        assert_eq!(kinds_text(&BTreeMap::new()), "-");
    }

    #[test]
    fn reads_the_gateways_events_about_the_endpoint_only() {
        let start = humantime::parse_rfc3339_weak("2026-11-22T08:00:00Z").unwrap();
        let endpoint: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let ejected = r#"{"timestamp":"2026-11-22T08:00:10.012345Z","level":"WARN","cluster":"bench","endpoint":"127.0.0.1:4000","event":"ejected","reason":"consecutive-gateway-failure","ejection_ms":30000,"ejection_count":1,"message":"endpoint ejected"}"#;
        let other = r#"{"timestamp":"2026-11-22T08:00:10Z","endpoint":"127.0.0.1:4001","message":"endpoint ejected"}"#;
        let unrelated = r#"{"timestamp":"2026-11-22T08:00:10Z","message":"listener bound","address":"127.0.0.1:1"}"#;
        let (at, text) = endpoint_event(ejected, endpoint, start).unwrap();
        assert_eq!(at, Duration::from_micros(10_012_345));
        assert_eq!(
            text,
            "endpoint ejected, reason consecutive-gateway-failure, ejection_ms 30000"
        );
        assert_eq!(endpoint_event(other, endpoint, start), None);
        assert_eq!(endpoint_event(unrelated, endpoint, start), None);
        assert_eq!(endpoint_event("not json", endpoint, start), None);
    }

    fn observation(at_ms: u64, usable: bool, health: &str) -> Observation {
        Observation {
            at: Duration::from_millis(at_ms),
            usable,
            health: health.to_string(),
            ejected: None,
        }
    }

    #[test]
    fn report_times_transitions_from_the_kill_and_the_restart() {
        let report = ChaosReport {
            machine: Machine::probe(
                Path::new("/nonexistent"),
                Path::new("/nonexistent"),
                false,
                0.0,
            ),
            settings: Settings {
                rate: 100.0,
                phase: Duration::from_secs(1),
                warmup: Duration::from_secs(1),
                per_try_timeout: Duration::from_millis(500),
                max_retries: None,
                request_timeout: Duration::from_secs(5),
                poll: Duration::from_millis(50),
                gateway_cpus: "0".into(),
                load_cpus: "1".into(),
                victim: "127.0.0.1:4000".parse().unwrap(),
            },
            samples: vec![sample(1500, 2, Outcome::Transport)],
            observations: vec![
                observation(950, true, "healthy"),
                observation(1040, false, "healthy"),
                observation(1900, false, "unhealthy"),
                observation(2300, false, "healthy"),
                observation(2400, true, "healthy"),
            ],
            killed_at: Duration::from_millis(1000),
            restarted_at: Duration::from_millis(2000),
            events: vec![],
            gateway_cpu: Duration::from_millis(300),
            warmup_errors: 0,
            retry_metrics: retry_lines(
                "# TYPE levee_retries_total counter\nlevee_retries_total{route=\"bench\"} 7\n\
                 levee_requests_total 9\n",
            ),
        };
        let text = report.to_markdown();
        assert!(
            text.contains("| kill → not usable (out of the balancer) | 0.040 s |"),
            "{text}"
        );
        assert!(
            text.contains("| kill → active health `unhealthy` | 0.900 s |"),
            "{text}"
        );
        assert!(
            text.contains("| restart → active health `healthy` | 0.300 s |"),
            "{text}"
        );
        assert!(
            text.contains("| restart → usable again (readmitted) | 0.400 s |"),
            "{text}"
        );
        assert!(
            text.contains("| during (outage, 1-2 s) | 1 | 1 | 1 × transport |"),
            "{text}"
        );
        assert!(
            text.contains("- `levee_retries_total{route=\"bench\"} 7`\n\n"),
            "{text}"
        );
    }
}
