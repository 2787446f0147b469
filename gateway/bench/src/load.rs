//! The load generators: wrk for maximum throughput, h2load for a fixed request rate.
//!
//! wrk (closed loop: each connection sends its next request when the previous answer arrives)
//! finds the most requests per second a target sustains. Its latency figures come from a Lua
//! `done` hook that prints exact percentiles, so no human-readable output is parsed.
//!
//! h2load `--rps` holds a fixed rate (per connection), and `--log-file` writes the latency of
//! every request, from which the harness computes the percentiles itself (h2load prints only
//! mean and spread). h2load times each request from the moment it is sent, not from the moment
//! the schedule wanted it sent, so a stall longer than the send interval of a connection is
//! under-counted (coordinated omission); at half of the maximum rate queueing is rare, and the
//! same generator is used for every target.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::process::{Proc, pinned};

/// The wrk Lua hook: one machine-readable line with the run's summary.
const WRK_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,\"max_us\":%d,\"socket_errors\":%d,\"status_errors\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
"#;

/// Where and how hard the load generators run.
#[derive(Debug, Clone)]
pub(crate) struct LoadOptions {
    /// CPU list (`taskset -c`) for the generator.
    pub(crate) cpus: String,
    /// Concurrent connections.
    pub(crate) connections: u32,
    /// Length of each measured run.
    pub(crate) duration: Duration,
    /// Length of the unmeasured run before each measured one.
    pub(crate) warmup: Duration,
    /// A directory for scripts and logs.
    pub(crate) work_dir: std::path::PathBuf,
}

/// What one closed-loop (wrk) run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throughput {
    /// Completed requests.
    pub(crate) requests: u64,
    /// Requests per second.
    pub(crate) rps: f64,
    /// Median latency.
    pub(crate) p50: Duration,
    /// 99th percentile latency.
    pub(crate) p99: Duration,
    /// Socket errors plus non-2xx/3xx answers.
    pub(crate) errors: u64,
}

/// What one fixed-rate (h2load) run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FixedRate {
    /// The rate asked for, requests per second.
    pub(crate) target_rps: f64,
    /// The rate achieved (completed requests over the run's length).
    pub(crate) achieved_rps: f64,
    /// Median latency.
    pub(crate) p50: Duration,
    /// 99th percentile latency.
    pub(crate) p99: Duration,
    /// 99.9th percentile latency.
    pub(crate) p999: Duration,
    /// Failed streams and non-200 answers.
    pub(crate) errors: u64,
}

// === impl FixedRate ===

impl FixedRate {
    /// Whether the target kept up: at least 97% of the asked rate was completed (the rest is
    /// the ramp at the edges of the run).
    pub(crate) fn held(&self) -> bool {
        self.achieved_rps >= 0.97 * self.target_rps
    }
}

/// Runs wrk against `url` for `duration`, with `opts.connections` connections on one thread.
pub(crate) fn wrk(opts: &LoadOptions, url: &str, duration: Duration) -> anyhow::Result<Throughput> {
    let script = opts.work_dir.join("summary.lua");
    if !script.exists() {
        std::fs::write(&script, WRK_SCRIPT).context("writing the wrk script")?;
    }
    let mut cmd = pinned(&opts.cpus, "wrk");
    cmd.arg("-t1")
        .arg(format!("-c{}", opts.connections))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(&script)
        .arg(url);
    let output = run_to_end("wrk", cmd, duration + Duration::from_secs(30))?;
    let json = output
        .lines()
        .find_map(|l| l.strip_prefix("BENCH_JSON "))
        .with_context(|| format!("wrk printed no summary:\n{output}"))?;
    let v: serde_json::Value = serde_json::from_str(json).context("parsing the wrk summary")?;
    let field = |name: &str| v.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let duration_us = field("duration_us").max(1);
    Ok(Throughput {
        requests: field("requests"),
        rps: field("requests") as f64 * 1e6 / duration_us as f64,
        p50: Duration::from_micros(field("p50_us")),
        p99: Duration::from_micros(field("p99_us")),
        errors: field("socket_errors") + field("status_errors"),
    })
}

/// Runs h2load over HTTP/1.1 against `url` at `rate` requests per second in total, spread over
/// `opts.connections` connections, for `opts.duration`.
pub(crate) fn h2load_fixed_rate(
    opts: &LoadOptions,
    url: &str,
    rate: f64,
    label: &str,
) -> anyhow::Result<FixedRate> {
    // h2load takes a whole number of requests per second per connection; the connection count
    // is lowered when needed so that each still sends at least 1 per second.
    let connections = (opts.connections as f64).min(rate.floor()).max(1.0) as u32;
    let per_connection = (rate / connections as f64).round().max(1.0) as u64;
    let target_rps = (per_connection * connections as u64) as f64;
    let log = opts.work_dir.join(format!("h2load-{label}.tsv"));
    let _ = std::fs::remove_file(&log);
    let mut cmd = pinned(&opts.cpus, "h2load");
    cmd.arg("--h1")
        .arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("--rps={per_connection}"))
        .arg(format!("-D{}", opts.duration.as_secs().max(1)))
        .arg(format!("--warm-up-time={}", opts.warmup.as_secs().max(1)))
        .arg("--log-file")
        .arg(&log)
        .arg(url);
    let output = run_to_end(
        "h2load",
        cmd,
        opts.duration + opts.warmup + Duration::from_secs(30),
    )?;
    let text = std::fs::read_to_string(&log)
        .with_context(|| format!("h2load wrote no log file; its output:\n{output}"))?;
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    let mut first_start = u64::MAX;
    let mut last_end = 0u64;
    for line in text.lines() {
        let mut cols = line.split('\t');
        let (Some(start), Some(status), Some(elapsed)) = (cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        let (Ok(start), Ok(elapsed)) = (start.parse::<u64>(), elapsed.parse::<u64>()) else {
            continue;
        };
        if status != "200" {
            errors += 1;
            continue;
        }
        first_start = first_start.min(start);
        last_end = last_end.max(start + elapsed);
        latencies.push(elapsed);
    }
    if latencies.is_empty() {
        bail!("h2load logged no successful request; its output:\n{output}");
    }
    latencies.sort_unstable();
    let span_us = last_end.saturating_sub(first_start).max(1);
    Ok(FixedRate {
        target_rps,
        achieved_rps: latencies.len() as f64 * 1e6 / span_us as f64,
        p50: Duration::from_micros(percentile(&latencies, 50.0)),
        p99: Duration::from_micros(percentile(&latencies, 99.0)),
        p999: Duration::from_micros(percentile(&latencies, 99.9)),
        errors,
    })
}

/// The value at percentile `p` (nearest rank) of sorted `values`; 0 when empty.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs a generator to its end and returns its output; fails on a non-zero exit.
fn run_to_end(name: &str, cmd: Command, timeout: Duration) -> anyhow::Result<String> {
    Proc::spawn(name, cmd)?.finish(timeout)
}

/// Fails with an install hint unless every program of `tools` is installed.
pub(crate) fn check_tools(tools: &[&str]) -> anyhow::Result<()> {
    for &tool in tools {
        let found = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            bail!(
                "`{tool}` is not installed; see gateway/bench/README.md \
                 (apt-get install -y wrk nghttp2-client nginx util-linux)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 99.9), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
