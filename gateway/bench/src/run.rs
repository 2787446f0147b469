//! One benchmark run, from starting the upstreams to the finished report.
//!
//! Order: throughput rounds (direct, nginx, Levee interleaved, so drift in the machine hits all
//! three alike), then the fixed-rate runs at half of nginx's maximum, then the memory probe and
//! the reload probe on fresh gateway processes, so that neither sees leftovers of the load.
//!
//! The steps the resilience scenarios share with this run live here too: the Levee binary
//! check, pinning the harness, the background-load sample, one wrk round, the work directory
//! and printing the report.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::BenchArgs;
use crate::cpu::{self, CpuSample};
use crate::load::{self, LoadOptions};
use crate::report::{Machine, MemoryRow, ReloadFigures, Report, Round, Settings, TargetThroughput};
use crate::targets::{self, Server};
use crate::{idle, reload};

/// Upstream runtime threads: each upstream shares one CPU with the load generator, where more
/// threads would only add switching.
const UPSTREAM_THREADS: usize = 1;

/// Time a freshly started gateway is left alone before its idle memory is read.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs the whole benchmark and prints the report.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    load::check_tools(&["wrk", "h2load", "taskset"])?;
    let levee = args.levee.clone().unwrap_or_else(targets::default_levee);
    if !args.no_levee {
        check_levee(&levee)?;
    }
    if Command::new(&args.nginx).arg("-v").output().is_err() {
        bail!(
            "cannot run nginx ({}); see gateway/bench/README.md (apt-get install -y nginx)",
            args.nginx.display()
        );
    }
    prepare_self(&args.load_cpus)?;

    let report = in_work_dir(|work| run_in(args, &levee, work))?;
    emit(&report.to_markdown(), args.out.as_deref())
}

/// Runs `f` with a fresh work directory (configs, scripts, logs), removed afterwards.
pub(crate) fn in_work_dir<T>(f: impl FnOnce(&Path) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let work = std::env::temp_dir().join(format!("levee-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).context("creating the work directory")?;
    let result = f(&work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Prints a finished report to standard output, and also writes it to `out` when given.
pub(crate) fn emit(text: &str, out: Option<&Path>) -> anyhow::Result<()> {
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
    }
    if let Some(path) = out {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run_in(args: &BenchArgs, levee: &Path, work: &Path) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let load = LoadOptions {
        cpus: args.load_cpus.clone(),
        connections: args.connections,
        duration: args.duration,
        warmup: args.warmup,
        work_dir: work.to_path_buf(),
    };
    let with_levee = !args.no_levee;
    let cpus = Placement {
        gateway: cpu::parse_list(&args.gateway_cpus)?,
        load: cpu::parse_list(&args.load_cpus)?,
    };

    let background = background_busy()?;

    progress("starting two upstreams");
    let upstreams = [
        targets::start_upstream(&args.load_cpus, UPSTREAM_THREADS)?,
        targets::start_upstream(&args.load_cpus, UPSTREAM_THREADS)?,
    ];
    let upstream_addrs: Vec<_> = upstreams.iter().map(|u| u.address).collect();

    // === throughput and fixed rate ===
    let mut nginx = Some(targets::start_nginx(
        &args.nginx,
        &args.gateway_cpus,
        &work.join("nginx"),
        &upstream_addrs,
        args.access_log,
    )?);
    let mut levee_server = if with_levee {
        let mut config = targets::levee_config(&upstream_addrs, 1);
        let mut access_log = None;
        if args.access_log {
            config = config.replace("access_log: false", "access_log: true");
            access_log = Some(work.join("levee-access.log"));
        }
        Some(targets::start_levee_logging(
            levee,
            &args.gateway_cpus,
            &work.join("levee.yaml"),
            &config,
            access_log.as_deref(),
        )?)
    } else {
        None
    };

    let names = ["direct", "nginx", "Levee"];
    let urls = [
        url(upstreams[0].address),
        nginx.as_ref().map(|s| url(s.address)).unwrap_or_default(),
        levee_server
            .as_ref()
            .map(|s| url(s.address))
            .unwrap_or_default(),
    ];
    let mut rounds: [Vec<Round>; 3] = Default::default();
    for round in 0..args.rounds.max(1) {
        for (i, name) in names.iter().enumerate() {
            let gateway = match i {
                0 => None,
                1 => nginx.as_mut(),
                _ => match levee_server.as_mut() {
                    Some(server) => Some(server),
                    None => continue,
                },
            };
            progress(&format!(
                "round {} of {}: {name}",
                round + 1,
                args.rounds.max(1)
            ));
            rounds[i].push(throughput_round(&load, &cpus, &urls[i], gateway)?);
        }
    }
    let throughput: Vec<TargetThroughput> = names
        .iter()
        .zip(rounds)
        .filter(|(_, rounds)| !rounds.is_empty())
        .map(|(name, rounds)| TargetThroughput::new(name, rounds))
        .collect();

    let nginx_max = throughput
        .iter()
        .find(|t| t.name == "nginx")
        .map(|t| t.median().throughput.rps)
        .context("no nginx throughput")?;
    let rate = (nginx_max / 2.0).max(1.0);
    let mut fixed = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if urls[i].is_empty() {
            continue;
        }
        progress(&format!("fixed rate {rate:.0} req/s: {name}"));
        fixed.push((
            name.to_string(),
            load::h2load_fixed_rate(&load, &urls[i], rate, name)?,
        ));
    }
    if let Some(server) = nginx.as_mut() {
        server.proc.check_alive()?;
    }
    if let Some(server) = levee_server.as_mut() {
        server.proc.check_alive()?;
    }
    let rss_after_load = levee_server.as_ref().map(|s| s.proc.rss()).transpose()?;
    drop(nginx.take());
    drop(levee_server.take());

    // === memory ===
    let mut memory = Vec::new();
    if with_levee {
        progress(&format!(
            "memory: Levee with {} idle clients",
            args.idle_connections
        ));
        let server = targets::start_levee(
            levee,
            &args.gateway_cpus,
            &work.join("levee.yaml"),
            &targets::levee_config(&upstream_addrs, 1),
        )?;
        let mut row = memory_probe(&runtime, server, "Levee", args.idle_connections)?;
        row.after_load = rss_after_load;
        memory.push(row);
    }
    progress(&format!(
        "memory: nginx with {} idle clients",
        args.idle_connections
    ));
    let server = targets::start_nginx(
        &args.nginx,
        &args.gateway_cpus,
        &work.join("nginx"),
        &upstream_addrs,
        false,
    )?;
    memory.push(memory_probe(
        &runtime,
        server,
        "nginx",
        args.idle_connections,
    )?);
    // A bare hyper HTTP/1.1 server (the bench upstream) shows how much of a Rust gateway's
    // per-connection memory is hyper's own.
    progress(&format!(
        "memory: bare hyper server with {} idle clients",
        args.idle_connections
    ));
    let server = targets::start_upstream(&args.gateway_cpus, UPSTREAM_THREADS)?;
    memory.push(memory_probe(
        &runtime,
        server,
        "bare hyper server (the bench upstream)",
        args.idle_connections,
    )?);

    // === reload ===
    let reload = if with_levee && args.reloads > 0 {
        progress(&format!(
            "reload: {} reloads of 100 routes and 100 clusters",
            args.reloads
        ));
        let server = targets::start_levee(
            levee,
            &args.gateway_cpus,
            &work.join("levee-100.yaml"),
            &targets::levee_config(&upstream_addrs, 100),
        )?;
        Some(reload_probe(&runtime, server, args.reloads)?)
    } else {
        None
    };

    for mut upstream in upstreams {
        upstream.proc.check_alive()?;
    }

    Ok(Report {
        machine: Machine::probe(levee, &args.nginx, with_levee, background),
        settings: Settings {
            duration: args.duration,
            warmup: args.warmup,
            connections: args.connections,
            rounds: args.rounds.max(1),
            gateway_cpus: args.gateway_cpus.clone(),
            load_cpus: args.load_cpus.clone(),
            idle_connections: args.idle_connections,
            access_log: args.access_log,
        },
        throughput,
        fixed_rate: fixed,
        memory,
        reload,
    })
}

/// One measured wrk run after an unmeasured warm-up, with the gateway's CPU time over it.
pub(crate) fn throughput_round(
    load: &LoadOptions,
    cpus: &Placement,
    url: &str,
    mut gateway: Option<&mut Server>,
) -> anyhow::Result<Round> {
    if !load.warmup.is_zero() {
        load::wrk(load, url, load.warmup)?;
    }
    let cpu_before = gateway.as_ref().map(|g| g.proc.cpu_time()).transpose()?;
    let cores_before = CpuSample::now()?;
    let started = Instant::now();
    let throughput = load::wrk(load, url, load.duration)?;
    let wall = started.elapsed();
    let cores = CpuSample::now()?;
    let cpu = match (gateway.as_mut(), cpu_before) {
        (Some(g), Some(before)) => {
            g.proc.check_alive()?;
            Some(g.proc.cpu_time()?.saturating_sub(before))
        }
        _ => None,
    };
    Ok(Round {
        throughput,
        gateway_cpu: cpu,
        wall,
        gateway_core_busy: cores.busy_since(&cores_before, &cpus.gateway),
        load_core_busy: cores.busy_since(&cores_before, &cpus.load),
    })
}

/// The CPUs of each side, as lists.
#[derive(Debug)]
pub(crate) struct Placement {
    /// The gateway under test.
    pub(crate) gateway: Vec<usize>,
    /// The upstreams, the load generator and the harness.
    pub(crate) load: Vec<usize>,
}

/// Fails with a hint when there is no Levee binary at `levee`.
pub(crate) fn check_levee(levee: &Path) -> anyhow::Result<()> {
    if !levee.exists() {
        bail!(
            "no Levee binary at {}: run `cargo build --release -p levee` first (or use \
             gateway/bench/run.sh, which does), or pass --levee PATH",
            levee.display()
        );
    }
    Ok(())
}

/// How busy the whole machine is over one second, measured before a run starts: other work
/// (a build, another benchmark) skews every figure, so it is printed in the report.
pub(crate) fn background_busy() -> anyhow::Result<f64> {
    let before = CpuSample::now()?;
    std::thread::sleep(Duration::from_secs(1));
    let background = CpuSample::now()?.busy_since(&before, &[]);
    if background > 0.1 {
        progress(&format!(
            "warning: the machine is {:.0}% busy before the run; figures will be noisy",
            background * 100.0
        ));
    }
    Ok(background)
}

/// Idle memory of a fresh gateway, then with `count` idle keep-alive clients.
fn memory_probe(
    runtime: &tokio::runtime::Runtime,
    mut server: Server,
    name: &str,
    count: usize,
) -> anyhow::Result<MemoryRow> {
    std::thread::sleep(SETTLE);
    let idle_rss = server.proc.rss()?;
    let open = runtime
        .block_on(idle::open_idle(server.address, count))
        .with_context(|| format!("opening idle connections to {name}"))?;
    std::thread::sleep(SETTLE);
    server.proc.check_alive()?;
    let with_clients = server.proc.rss()?;
    drop(open);
    Ok(MemoryRow {
        name: name.to_string(),
        idle: idle_rss,
        with_clients,
        clients: count,
        after_load: None,
    })
}

/// Triggers `count` reloads and collects the durations the gateway logged for them.
fn reload_probe(
    runtime: &tokio::runtime::Runtime,
    mut server: Server,
    count: usize,
) -> anyhow::Result<ReloadFigures> {
    let admin = server.admin.context("Levee reported no admin address")?;
    // Lines logged so far (startup) are not reloads.
    let _ = server.proc.drain(|_| Some(()));
    let mut round_trips = Vec::with_capacity(count);
    for _ in 0..count {
        let took = runtime.block_on(reload::trigger(admin))?;
        round_trips.push(took.as_secs_f64() * 1e3);
    }
    let mut logged = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(5);
    while logged.len() < count && Instant::now() < deadline {
        logged.extend(server.proc.drain(reload::logged_duration));
        std::thread::sleep(Duration::from_millis(50));
    }
    if logged.len() < count {
        bail!(
            "Levee logged {} `config reloaded` lines for {count} reloads:\n{}",
            logged.len(),
            server.proc.tail(20)
        );
    }
    Ok(ReloadFigures {
        logged_ms: logged,
        round_trip_ms: round_trips,
    })
}

/// Pins the harness (and so every thread it starts) to `cpus`, and raises its open-file limit
/// for the memory probe's client sockets; children inherit both.
pub(crate) fn prepare_self(cpus: &str) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    if !cpus.is_empty() {
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid])
            .stdout(std::process::Stdio::null())
            .status()
            .context("running taskset")?;
        if !status.success() {
            bail!("taskset could not pin the harness to CPUs {cpus}");
        }
    }
    // Without privileges the hard limit may be lower; the probe then fails with a clear error
    // when it runs out, so a failed raise is not fatal here.
    let _ = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=65536:65536"])
        .status();
    Ok(())
}

/// `http://ADDRESS/`.
pub(crate) fn url(address: std::net::SocketAddr) -> String {
    format!("http://{address}/")
}

/// One progress line on standard error (the report goes to standard output).
pub(crate) fn progress(what: &str) {
    eprintln!("levee-bench: {what}");
}

// === the resilience, chaos and plugin scenarios ===

impl crate::ScenarioArgs {
    /// Runs a scenario: checks `tools` and the Levee binary, pins the harness to the load
    /// CPUs, runs `measure` with the binary and a scratch directory, and prints (and with
    /// `--out`, writes) the report it returns.
    pub(crate) fn run(
        &self,
        tools: &[&str],
        measure: impl FnOnce(&Path, &Path) -> anyhow::Result<String>,
    ) -> anyhow::Result<()> {
        load::check_tools(tools)?;
        let levee = self.levee.clone().unwrap_or_else(targets::default_levee);
        check_levee(&levee)?;
        prepare_self(&self.load_cpus)?;
        let report = in_work_dir(|work| measure(&levee, work))?;
        emit(&report, self.out.as_deref())
    }

    /// `--gateway-cpus` and `--load-cpus`, as lists.
    pub(crate) fn placement(&self) -> anyhow::Result<Placement> {
        Ok(Placement {
            gateway: cpu::parse_list(&self.gateway_cpus)?,
            load: cpu::parse_list(&self.load_cpus)?,
        })
    }

    /// The load generator's options: on the load CPUs, scripts and logs in `work`.
    pub(crate) fn load(
        &self,
        connections: u32,
        duration: Duration,
        warmup: Duration,
        work: &Path,
    ) -> LoadOptions {
        LoadOptions {
            cpus: self.load_cpus.clone(),
            connections,
            duration,
            warmup,
            work_dir: work.to_path_buf(),
        }
    }

    /// `count` benchmark upstreams of one thread each, on the load CPUs.
    pub(crate) fn start_upstreams(&self, count: usize) -> anyhow::Result<Vec<Server>> {
        (0..count)
            .map(|_| targets::start_upstream(&self.load_cpus, 1))
            .collect()
    }
}
