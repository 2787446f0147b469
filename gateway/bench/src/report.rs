//! The report: every figure of a run as one markdown document, with the targets beside them.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::load::{FixedRate, Throughput};
use crate::reload::median;

/// Everything one run measured.
#[derive(Debug)]
pub(crate) struct Report {
    /// What it ran on.
    pub(crate) machine: Machine,
    /// How it was run.
    pub(crate) settings: Settings,
    /// Closed-loop rounds per target (direct, nginx, Levee).
    pub(crate) throughput: Vec<TargetThroughput>,
    /// Fixed-rate run per target.
    pub(crate) fixed_rate: Vec<(String, FixedRate)>,
    /// Memory per gateway.
    pub(crate) memory: Vec<MemoryRow>,
    /// Reload timings (Levee only).
    pub(crate) reload: Option<ReloadFigures>,
}

/// The machine and tool versions.
#[derive(Debug)]
pub(crate) struct Machine {
    date: String,
    cpu: String,
    cpus: usize,
    kernel: String,
    levee: String,
    nginx: String,
    wrk: String,
    h2load: String,
    background_busy: f64,
}

/// The options the run used.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) connections: u32,
    pub(crate) rounds: u32,
    pub(crate) gateway_cpus: String,
    pub(crate) load_cpus: String,
    pub(crate) idle_connections: usize,
    /// Whether the throughput and fixed-rate runs had the access log on (`--access-log`).
    pub(crate) access_log: bool,
}

/// One measured closed-loop run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Round {
    /// What wrk saw.
    pub(crate) throughput: Throughput,
    /// CPU time the gateway used during the run (`None` for direct).
    pub(crate) gateway_cpu: Option<Duration>,
    /// Wall time of the run.
    pub(crate) wall: Duration,
    /// Busy share (0 to 1) of the gateway's CPUs during the run, softirq included.
    pub(crate) gateway_core_busy: f64,
    /// Busy share of the load generator's and upstreams' CPUs during the run.
    pub(crate) load_core_busy: f64,
}

/// All rounds of one target.
#[derive(Debug)]
pub(crate) struct TargetThroughput {
    /// `direct`, `nginx` or `Levee`.
    pub(crate) name: String,
    rounds: Vec<Round>,
}

/// Memory of one gateway.
#[derive(Debug)]
pub(crate) struct MemoryRow {
    /// The gateway.
    pub(crate) name: String,
    /// `VmRSS` of a fresh process.
    pub(crate) idle: u64,
    /// `VmRSS` with `clients` idle keep-alive clients.
    pub(crate) with_clients: u64,
    /// How many clients.
    pub(crate) clients: usize,
    /// `VmRSS` after the throughput and fixed-rate runs, when known.
    pub(crate) after_load: Option<u64>,
}

/// Reload timings.
#[derive(Debug)]
pub(crate) struct ReloadFigures {
    /// `duration_ms` of each `config reloaded` log line.
    pub(crate) logged_ms: Vec<f64>,
    /// Round trip of each `POST /config/reload`, in milliseconds.
    pub(crate) round_trip_ms: Vec<f64>,
}

// === impl Machine ===

impl Machine {
    /// Reads the machine description and the tool versions.
    pub(crate) fn probe(
        levee: &Path,
        nginx: &Path,
        with_levee: bool,
        background_busy: f64,
    ) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".to_string());
        Self {
            date: first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            cpu,
            // The harness is pinned, so its own affinity would undercount.
            cpus: crate::cpu::CpuSample::now().map_or(0, |s| s.count()),
            kernel: first_line(Command::new("uname").arg("-r")),
            levee: if with_levee {
                first_line(Command::new(levee).arg("--version"))
            } else {
                "not run".to_string()
            },
            nginx: first_line(Command::new(nginx).arg("-v")),
            wrk: first_line(Command::new("wrk").arg("-v")),
            h2load: first_line(Command::new("h2load").arg("--version")),
            background_busy,
        }
    }

    /// The date, the machine, Levee's and wrk's versions and the background load, as markdown
    /// list items: the header of the resilience scenarios' reports.
    pub(crate) fn summary(&self) -> String {
        format!(
            "- Date: {}.\n- Machine: {} CPUs ({}), Linux {}.\n- Levee: {}; wrk: {}.\n\
             - Background: the machine was {:.0}% busy in the second before the run.\n",
            self.date,
            self.cpus,
            self.cpu,
            self.kernel,
            self.levee,
            self.wrk.split(" Copyright").next().unwrap_or_default(),
            self.background_busy * 100.0
        )
    }
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|out| {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            text.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_else(|| "unknown".to_string())
}

// === impl TargetThroughput ===

impl TargetThroughput {
    /// Collects the rounds of `name`; there is at least one.
    pub(crate) fn new(name: &str, rounds: Vec<Round>) -> Self {
        Self {
            name: name.to_string(),
            rounds,
        }
    }

    /// The round with the median requests per second (the lower middle for an even count).
    pub(crate) fn median(&self) -> Round {
        let mut sorted = self.rounds.clone();
        sorted.sort_by(|a, b| a.throughput.rps.total_cmp(&b.throughput.rps));
        sorted[(sorted.len() - 1) / 2]
    }
}

// === impl Report ===

impl Report {
    /// The report as markdown.
    pub(crate) fn to_markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let s = &self.settings;
        let _ = writeln!(out, "# Levee load benchmark, {}\n", m.date);
        let _ = writeln!(
            out,
            "- Machine: {} CPUs ({}), Linux {}.\n- Tools: {}; {}; {}; {}.\n\
             - Placement: the gateway under test on CPU {} (Levee `--workers 1`; nginx one worker, \
             no master); both upstreams (1 thread each), the load generator and the harness on CPU {}.\n\
             - Load: {} connections over loopback; {} interleaved round(s) of {} per target, each \
             after {} of unmeasured warm-up; the median round is shown.\n\
             - Access log: {}.\n\
             - Background: the machine was {:.0}% busy in the second before the run.\n",
            m.cpus,
            m.cpu,
            m.kernel,
            m.levee,
            m.nginx,
            m.wrk,
            m.h2load,
            s.gateway_cpus,
            s.load_cpus,
            s.connections,
            s.rounds,
            humantime::format_duration(s.duration),
            humantime::format_duration(s.warmup),
            if s.access_log {
                "on for the throughput and fixed-rate runs (Levee's JSON lines and nginx's \
                 `combined` lines, each to a file)"
            } else {
                "off (`log.access_log: false`, `access_log off;`)"
            },
            m.background_busy * 100.0,
        );

        out.push_str("## Maximum throughput (wrk, closed loop)\n\n");
        out.push_str(
            "| target | req/s | p50 | p99 | gateway CPU s per 10k req | gateway process CPU | gateway core busy | load core busy | errors | all rounds req/s |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for target in &self.throughput {
            let r = target.median();
            let (per_10k, busy) = match r.gateway_cpu {
                Some(cpu) => (
                    format!(
                        "{:.3}",
                        cpu.as_secs_f64() * 10_000.0 / r.throughput.requests.max(1) as f64
                    ),
                    format!(
                        "{:.0}%",
                        100.0 * cpu.as_secs_f64() / r.wall.as_secs_f64().max(1e-9)
                    ),
                ),
                None => ("-".to_string(), "-".to_string()),
            };
            let all: Vec<String> = target
                .rounds
                .iter()
                .map(|r| format!("{:.0}", r.throughput.rps))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {:.0}% | {} | {} |",
                target.name,
                r.throughput.rps,
                ms(r.throughput.p50),
                ms(r.throughput.p99),
                per_10k,
                busy,
                if r.gateway_cpu.is_some() {
                    format!("{:.0}%", r.gateway_core_busy * 100.0)
                } else {
                    "-".to_string()
                },
                r.load_core_busy * 100.0,
                r.throughput.errors,
                all.join(", ")
            );
        }

        if let Some((_, first)) = self.fixed_rate.first() {
            let _ = writeln!(
                out,
                "\n## Fixed rate: {:.0} req/s, half of nginx's maximum (h2load --rps)\n",
                first.target_rps
            );
            out.push_str(
                "| target | achieved req/s | held the rate | p50 | p99 | p99.9 | errors |\n|---|---:|---|---:|---:|---:|---:|\n",
            );
            for (name, f) in &self.fixed_rate {
                let _ = writeln!(
                    out,
                    "| {name} | {:.0} | {} | {} | {} | {} | {} |",
                    f.achieved_rps,
                    if f.held() { "yes" } else { "**no**" },
                    ms(f.p50),
                    ms(f.p99),
                    ms(f.p999),
                    f.errors
                );
            }
        }

        if !self.memory.is_empty() {
            out.push_str("\n## Memory (VmRSS)\n\n");
            out.push_str(
                "| gateway | idle (fresh process) | idle keep-alive clients | with them | added | added per client | after the load runs |\n|---|---:|---:|---:|---:|---:|---:|\n",
            );
            for row in &self.memory {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {:.1} KiB | {} |",
                    row.name,
                    mib(row.idle),
                    row.clients,
                    mib(row.with_clients),
                    mib(row.with_clients.saturating_sub(row.idle)),
                    row.with_clients.saturating_sub(row.idle) as f64
                        / 1024.0
                        / row.clients.max(1) as f64,
                    row.after_load.map_or_else(|| "-".to_string(), mib)
                );
            }
        }

        if let Some(reload) = &self.reload {
            out.push_str(
                "\n## Config reload: 100 routes, 100 clusters (`POST /config/reload`)\n\n",
            );
            out.push_str(
                "| reloads | median (logged) | min | max | median admin round trip |\n|---:|---:|---:|---:|---:|\n",
            );
            let min = reload
                .logged_ms
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min);
            let max = reload.logged_ms.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
                reload.logged_ms.len(),
                median(&reload.logged_ms),
                min,
                max,
                median(&reload.round_trip_ms)
            );
        }

        out.push_str(&self.targets_table());
        out
    }

    /// Ratios and absolute figures against the project's targets.
    fn targets_table(&self) -> String {
        let mut out = String::from(
            "\n## Against the targets (measured in this run)\n\n| what | measured | target | met |\n|---|---:|---:|---|\n",
        );
        let rps = |name: &str| {
            self.throughput
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.median().throughput.rps)
        };
        let fixed = |name: &str| {
            self.fixed_rate
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, f)| *f)
        };
        let mut row = |what: &str, measured: Option<String>, target: &str, met: Option<bool>| {
            let _ = writeln!(
                out,
                "| {what} | {} | {target} | {} |",
                measured.unwrap_or_else(|| "not run".to_string()),
                match met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "-",
                }
            );
        };
        let levee_nginx = rps("Levee").zip(rps("nginx")).map(|(l, n)| l / n);
        row(
            "Levee / nginx throughput",
            levee_nginx.map(|r| format!("{r:.2}")),
            ">= 0.90",
            levee_nginx.map(|r| r >= 0.9),
        );
        let levee_direct = rps("Levee").zip(rps("direct")).map(|(l, d)| l / d);
        row(
            "Levee / direct throughput",
            levee_direct.map(|r| format!("{r:.2}")),
            "-",
            None,
        );
        let nginx_direct = rps("nginx").zip(rps("direct")).map(|(n, d)| n / d);
        row(
            "nginx / direct throughput",
            nginx_direct.map(|r| format!("{r:.2}")),
            "-",
            None,
        );
        let cpu_per_request = |name: &str| {
            self.throughput
                .iter()
                .find(|t| t.name == name)
                .map(TargetThroughput::median)
                .and_then(|r| {
                    r.gateway_cpu
                        .map(|cpu| cpu.as_secs_f64() / r.throughput.requests.max(1) as f64)
                })
        };
        let cpu_ratio = cpu_per_request("Levee")
            .zip(cpu_per_request("nginx"))
            .map(|(l, n)| l / n.max(1e-12));
        row(
            "Levee / nginx CPU time per request",
            cpu_ratio.map(|r| format!("{r:.2}")),
            "-",
            None,
        );
        let p99 = fixed("Levee")
            .zip(fixed("nginx"))
            .map(|(l, n)| (l.p99, n.p99));
        // A p99 measured at a lower rate than asked is not comparable: it counts as missed.
        let levee_fixed = fixed("Levee").map(|l| l.held());
        row(
            "Levee / nginx p99 at fixed rate",
            p99.map(|(l, n)| {
                format!(
                    "{:.2} ({} vs {})",
                    l.as_secs_f64() / n.as_secs_f64().max(1e-9),
                    ms(l),
                    ms(n)
                )
            }),
            "<= 1.00",
            levee_fixed.zip(p99).map(|(held, (l, n))| held && l <= n),
        );
        let levee_mem = self.memory.iter().find(|m| m.name == "Levee");
        row(
            "Levee idle RSS",
            levee_mem.map(|m| mib(m.idle)),
            "< 20 MiB",
            levee_mem.map(|m| m.idle < 20 * MIB),
        );
        row(
            &format!(
                "Levee RSS added by {} idle clients",
                self.settings.idle_connections
            ),
            levee_mem.map(|m| mib(m.with_clients.saturating_sub(m.idle))),
            "< 100 MiB",
            levee_mem.map(|m| m.with_clients.saturating_sub(m.idle) < 100 * MIB),
        );
        let reload = self.reload.as_ref().map(|r| median(&r.logged_ms));
        row(
            "reload median, 100 routes + 100 clusters",
            reload.map(|ms| format!("{ms:.2} ms")),
            "< 50 ms",
            reload.map(|ms| ms < 50.0),
        );
        out
    }
}

const MIB: u64 = 1024 * 1024;

/// `d` in milliseconds with two decimals, as every table of the reports shows latency.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(rps: f64) -> Round {
        Round {
            throughput: Throughput {
                requests: (rps * 10.0) as u64,
                rps,
                p50: Duration::from_micros(500),
                p99: Duration::from_millis(2),
                errors: 0,
            },
            gateway_cpu: Some(Duration::from_secs(9)),
            wall: Duration::from_secs(10),
            gateway_core_busy: 0.97,
            load_core_busy: 0.6,
        }
    }

    #[test]
    fn median_round_is_the_middle_by_throughput() {
        let t = TargetThroughput::new("nginx", vec![round(300.0), round(100.0), round(200.0)]);
        assert_eq!(t.median().throughput.rps, 200.0);
        let t = TargetThroughput::new("nginx", vec![round(300.0), round(100.0)]);
        assert_eq!(t.median().throughput.rps, 100.0);
    }

    fn sample_report() -> Report {
        Report {
            machine: Machine {
                date: "d".into(),
                cpu: "c".into(),
                cpus: 2,
                kernel: "k".into(),
                levee: "levee 0".into(),
                nginx: "nginx".into(),
                wrk: "wrk".into(),
                h2load: "h2load".into(),
                background_busy: 0.01,
            },
            settings: Settings {
                duration: Duration::from_secs(10),
                warmup: Duration::from_secs(2),
                connections: 50,
                rounds: 1,
                gateway_cpus: "0".into(),
                load_cpus: "1".into(),
                idle_connections: 10_000,
                access_log: false,
            },
            throughput: vec![
                TargetThroughput::new("direct", vec![round(40_000.0)]),
                TargetThroughput::new("nginx", vec![round(20_000.0)]),
                TargetThroughput::new("Levee", vec![round(19_000.0)]),
            ],
            fixed_rate: vec![],
            memory: vec![MemoryRow {
                name: "Levee".into(),
                idle: 8 * MIB,
                with_clients: 58 * MIB,
                clients: 10_000,
                after_load: None,
            }],
            reload: Some(ReloadFigures {
                logged_ms: vec![3.0, 1.0, 2.0],
                round_trip_ms: vec![4.0, 4.0, 4.0],
            }),
        }
    }

    fn fixed(achieved: f64, p99_ms: u64) -> FixedRate {
        FixedRate {
            target_rps: 10_000.0,
            achieved_rps: achieved,
            p50: Duration::from_millis(1),
            p99: Duration::from_millis(p99_ms),
            p999: Duration::from_millis(p99_ms * 2),
            errors: 0,
        }
    }

    #[test]
    fn p99_at_fixed_rate_counts_only_when_the_rate_was_held() {
        let mut report = sample_report();
        report.fixed_rate = vec![
            ("nginx".into(), fixed(9_990.0, 4)),
            ("Levee".into(), fixed(9_980.0, 3)),
        ];
        let text = report.to_markdown();
        assert!(
            text.contains(
                "| Levee / nginx p99 at fixed rate | 0.75 (3.00 ms vs 4.00 ms) | <= 1.00 | yes |"
            ),
            "{text}"
        );
        report.fixed_rate[1].1 = fixed(6_000.0, 3);
        let text = report.to_markdown();
        assert!(text.contains("| Levee | 6000 | **no** |"), "{text}");
        assert!(text.contains("| <= 1.00 | **no** |"), "{text}");
    }

    #[test]
    fn report_shows_ratios_and_cpu_per_10k_requests() {
        let text = sample_report().to_markdown();
        assert!(
            text.contains("| Levee / nginx throughput | 0.95 | >= 0.90 | yes |"),
            "{text}"
        );
        assert!(
            text.contains("| Levee / direct throughput | 0.47 |"),
            "{text}"
        );
        // 9 CPU seconds over 190 000 requests.
        assert!(
            text.contains("| Levee | 19000 | 0.50 ms | 2.00 ms | 0.474 | 90% | 97% | 60% | 0 |"),
            "{text}"
        );
        assert!(
            text.contains("| Levee RSS added by 10000 idle clients | 50.0 MiB | < 100 MiB | yes |"),
            "{text}"
        );
        assert!(
            text.contains("| reload median, 100 routes + 100 clusters | 2.00 ms | < 50 ms | yes |"),
            "{text}"
        );
        assert!(
            text.contains("| Levee / nginx p99 at fixed rate | not run |"),
            "{text}"
        );
    }
}
