//! The load benchmark harness: direct vs through Levee vs through nginx, in one run.
//!
//! It starts two upstreams, nginx and Levee as pinned child processes on loopback, drives them
//! with wrk (maximum throughput) and h2load (fixed rate), probes memory with idle keep-alive
//! connections and times config reloads, then prints one markdown report. It measures; it does
//! not assert. See `gateway/bench/README.md` for the method and `docs/performance.md` for the
//! figures.

mod cpu;
mod idle;
mod load;
mod process;
mod reload;
mod report;
mod run;
mod targets;
mod upstream;

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
