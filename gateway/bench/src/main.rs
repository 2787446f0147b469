//! The load benchmark harness: direct vs through Levee vs through nginx, in one run.
//!
//! It starts two upstreams, nginx and Levee as pinned child processes on loopback, drives them
//! with wrk (maximum throughput) and h2load (fixed rate), probes memory with idle keep-alive
//! connections and times config reloads, then prints one markdown report. It measures; it does
//! not assert. See `gateway/bench/README.md` for the method and `docs/performance.md` for the
//! figures.
//!
//! Two more scenarios measure the resilience engine instead: `levee-bench resilience` (the
//! throughput cost of every resilience feature turned on) and `levee-bench chaos` (one of three
//! upstreams killed and restarted under a steady load). `levee-bench plugins` measures what a
//! Wasm policy plugin costs a route: throughput with the plugin pooled, per-request and only
//! configured, and the latency `on-upstream-failure` adds to a failing request.

mod chaos;
mod cpu;
mod idle;
mod load;
mod open_loop;
mod plugins;
mod process;
mod reload;
mod report;
mod resilience;
mod run;
mod soak;
mod targets;
mod upstream;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Levee's load benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "levee-bench", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the benchmark upstream: every request gets a 64-byte body.
    Upstream {
        /// Port on 127.0.0.1; 0 picks a free one (printed as `listening on ADDR`).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Resilience overhead: Levee with every resilience feature on vs off, interleaved rounds.
    Resilience(OverheadArgs),
    /// Chaos: one of three upstreams killed and restarted under a steady fixed-rate load.
    Chaos(ChaosArgs),
    /// Plugin overhead: a route with the tagger plugin (configured elsewhere, pooled,
    /// per-request, `on-request` only, `on-request` only with no headers) vs none, and a failing
    /// request answered by a plugin vs the static fallback.
    Plugins(PluginArgs),
    /// Soak: mixed HTTP/1.1 and HTTP/2 load for a long time (10 minutes by default) with
    /// reloads, plugin swaps, upstream kills and hostile clients; reports the gateway's memory
    /// and open file descriptors, and the requests lost.
    Soak(SoakArgs),
}

/// Options shared by the resilience scenarios.
#[derive(Debug, Args)]
pub(crate) struct ScenarioArgs {
    /// The Levee binary. Default: `target/release/levee` of this workspace.
    #[arg(long)]
    pub(crate) levee: Option<PathBuf>,
    /// CPUs (a `taskset -c` list) of Levee.
    #[arg(long, default_value = "0")]
    pub(crate) gateway_cpus: String,
    /// CPUs of the upstreams, the load generator and the harness itself.
    #[arg(long, default_value = "1")]
    pub(crate) load_cpus: String,
    /// Also write the report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

/// Options of `levee-bench resilience`.
#[derive(Debug, Args)]
pub(crate) struct OverheadArgs {
    #[command(flatten)]
    pub(crate) scenario: ScenarioArgs,
    /// Length of each measured wrk run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Unmeasured load before each measured run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// Concurrent wrk connections.
    #[arg(long, default_value_t = 50)]
    pub(crate) connections: u32,
    /// Rounds; each round measures the features off, then on.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: u32,
}

/// Options of `levee-bench chaos`.
#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    #[command(flatten)]
    pub(crate) scenario: ScenarioArgs,
    /// Requests per second of the open-loop load.
    #[arg(long, default_value_t = 2000.0)]
    pub(crate) rate: f64,
    /// Length of each phase (before, during and after the outage).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) phase: Duration,
    /// Unmeasured load at the same rate before the first phase.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// The route's `retry.per_try_timeout`.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub(crate) per_try_timeout: Duration,
    /// Time the client allows each request before counting it as failed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) request_timeout: Duration,
    /// The cluster's `limits.max_retries` (concurrent retries); Levee's default when absent.
    #[arg(long)]
    pub(crate) max_retries: Option<u32>,
    /// How often the admin `/clusters` is polled for the killed endpoint's state.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub(crate) poll: Duration,
}

/// Options of `levee-bench plugins`.
#[derive(Debug, Args)]
pub(crate) struct PluginArgs {
    #[command(flatten)]
    pub(crate) scenario: ScenarioArgs,
    /// Directory of the example plugins' `.wasm` files (`tagger.wasm`, `static_fallback.wasm`).
    /// Default: `target/plugins/wasm32-wasip2/release` of this workspace.
    #[arg(long)]
    pub(crate) plugins_dir: Option<PathBuf>,
    /// Length of each measured wrk run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Unmeasured load before each measured run (wrk, and the open-loop client at `--rate`).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// Concurrent wrk connections.
    #[arg(long, default_value_t = 50)]
    pub(crate) connections: u32,
    /// Throughput rounds; each round measures (0), (a), (b), (c), (d) and (e) in turn.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: u32,
    /// Requests per second of the open-loop load on the failing route.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) rate: f64,
    /// Length of each measured open-loop run on the failing route.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) phase: Duration,
    /// Failing-request rounds; each round measures the declarative fallback, then the plugin.
    #[arg(long, default_value_t = 3)]
    pub(crate) failing_rounds: u32,
}

/// Options of `levee-bench soak`.
#[derive(Debug, Args)]
pub(crate) struct SoakArgs {
    #[command(flatten)]
    pub(crate) scenario: ScenarioArgs,
    /// Length of the soak.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// HTTP/1.1 client connections, one request in flight each.
    #[arg(long, default_value_t = 8)]
    pub(crate) h1_connections: usize,
    /// HTTP/2 (h2c) client connections.
    #[arg(long, default_value_t = 2)]
    pub(crate) h2_connections: usize,
    /// Requests in flight on each HTTP/2 connection.
    #[arg(long, default_value_t = 4)]
    pub(crate) h2_streams: usize,
    /// How often the config is swapped (between two that bind the plugin differently) and
    /// reloaded.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) reload_every: Duration,
    /// How often an upstream is killed (the next of three in turn).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub(crate) kill_every: Duration,
    /// How long a killed upstream stays down before it is restarted on the same port.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) down_for: Duration,
    /// How often a hostile client starts (slowloris, broken chunked body, HTTP/2 rapid reset,
    /// in turn).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) hostile_every: Duration,
    /// Time a normal request is allowed before it counts as lost.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) request_timeout: Duration,
    /// Directory holding `tagger.wasm`. Default: `target/plugins/wasm32-wasip2/release` of
    /// this workspace.
    #[arg(long)]
    pub(crate) plugins_dir: Option<PathBuf>,
    /// Also write the report as JSON (with the per-second samples) to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

/// Options of a benchmark run.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Length of each measured load run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Unmeasured load before each measured run (warms pools and caches).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// Concurrent client connections of the load generators.
    #[arg(long, default_value_t = 50)]
    pub(crate) connections: u32,
    /// Throughput rounds per target, interleaved; the median round is reported.
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: u32,
    /// Idle keep-alive connections for the memory probe.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) idle_connections: usize,
    /// `POST /config/reload` calls for the reload probe (100 routes, 100 clusters).
    #[arg(long, default_value_t = 10)]
    pub(crate) reloads: usize,
    /// The Levee binary. Default: `target/release/levee` of this workspace.
    #[arg(long)]
    pub(crate) levee: Option<PathBuf>,
    /// The nginx binary.
    #[arg(long, default_value = "nginx")]
    pub(crate) nginx: PathBuf,
    /// Skip Levee (to try the harness with nginx alone).
    #[arg(long)]
    pub(crate) no_levee: bool,
    /// Turn the access log on for the throughput and fixed-rate runs: Levee's (standard
    /// output) and nginx's (`combined`), each to a file in the run's work directory.
    #[arg(long)]
    pub(crate) access_log: bool,
    /// CPUs (a `taskset -c` list) of the gateway under test (Levee or nginx).
    #[arg(long, default_value = "0")]
    pub(crate) gateway_cpus: String,
    /// CPUs of the upstreams, the load generators and the harness itself.
    #[arg(long, default_value = "1")]
    pub(crate) load_cpus: String,
    /// Also write the report to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Upstream { port, threads }) => upstream::serve(port, threads),
        Some(Command::Resilience(args)) => resilience::run(&args),
        Some(Command::Chaos(args)) => chaos::run(&args),
        Some(Command::Plugins(args)) => plugins::run(&args),
        Some(Command::Soak(args)) => soak::run(&args),
        None => run::run(&cli.bench),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("levee-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
