//! The command line: `levee run`, `levee validate`, `levee schema`, `levee demo`.
//!
//! Arguments are parsed by clap into [`Cli`]; each subcommand is a small function that returns
//! the process exit code. This is the only module that prints to standard output on purpose.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use levee_config::{Source, StdFileSystem};
use tracing_subscriber::EnvFilter;

use crate::gateway::{Gateway, GatewayOptions, ShutdownSignals};

/// Levee: a resilience gateway.
#[derive(Debug, Parser)]
#[command(name = "levee", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve with a config file; it is reloaded when it changes, on SIGHUP, or on
    /// `POST /config/reload`.
    Run {
        /// The config file.
        #[arg(short, long, value_name = "FILE", env = "LEVEE_CONFIG")]
        config: PathBuf,
        /// Worker threads for the request path. Default: one per CPU.
        #[arg(long, value_name = "N", env = "LEVEE_WORKERS")]
        workers: Option<usize>,
    },
    /// Check a config file: exit 0 if it is valid, or 1 with every error (file:line:column).
    Validate {
        /// The config file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the config file format.
    Schema,
    /// Start a self-contained demo: the gateway with built-in demo upstreams on loopback.
    Demo {
        /// Port of the demo's public listener (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the demo's admin listener (0 picks a free one).
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, workers } => run(&config, workers),
        Command::Validate { file } => validate(&file),
        Command::Schema => schema(),
        Command::Demo { port, admin_port } => demo(port, admin_port),
    }
}

fn run(config: &Path, workers: Option<usize>) -> ExitCode {
    // The log level comes from the file, so it is read once here before logging starts; the
    // gateway reads it again (and reports errors properly) when it starts.
    let level = crate::gateway::read_config_text(config)
        .ok()
        .and_then(|text| {
            levee_config::load(
                &Source {
                    path: config,
                    text: &text,
                },
                &StdFileSystem,
            )
            .ok()
        })
        .map(|config| config.log.level)
        .unwrap_or_else(|| "info".to_string());
    init_logging(&level);

    let runtime = match build_runtime(workers) {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "could not start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let signals = match ShutdownSignals::install() {
            Ok(signals) => signals,
            Err(error) => {
                eprintln!("levee: cannot install signal handlers: {error}");
                return ExitCode::FAILURE;
            }
        };
        let gateway = match Gateway::start(GatewayOptions::new(config)).await {
            Ok(gateway) => gateway,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "could not start");
                eprintln!("levee: {error:#}");
                return ExitCode::FAILURE;
            }
        };
        match gateway.run_until_signal(signals).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "shutdown failed");
                ExitCode::FAILURE
            }
        }
    })
}

fn validate(file: &Path) -> ExitCode {
    let text = match crate::gateway::read_config_text(file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("{}: {error}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match levee_config::load(
        &Source {
            path: file,
            text: &text,
        },
        &StdFileSystem,
    ) {
        Ok(_) => {
            let _ = writeln!(std::io::stdout(), "{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", file.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn schema() -> ExitCode {
    let schema = levee_config::json_schema();
    match serde_json::to_string_pretty(&schema) {
        Ok(text) => {
            let _ = writeln!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("levee: {error}");
            ExitCode::FAILURE
        }
    }
}

fn demo(port: u16, admin_port: u16) -> ExitCode {
    init_logging("warn");
    let runtime = match build_runtime(None) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("levee: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::demo::run(port, admin_port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("levee demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn build_runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    // One worker means one thread: a current-thread runtime then does the same work without the
    // work-stealing scheduler's cross-thread bookkeeping (nginx's model: one event loop per
    // worker).
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) if n > 1 => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().thread_name("levee-worker").build()
}

/// Operational logs: JSON lines on standard error (the access log owns standard output).
/// `RUST_LOG`, when set, wins over the config's level.
fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
