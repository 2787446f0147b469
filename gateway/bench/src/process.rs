//! Child processes of a run: spawned pinned to a CPU set, watched through `/proc`, killed on drop.
//!
//! Every server of a run (upstreams, nginx, Levee) and every load generator is a child process,
//! so a failed or interrupted run never leaves one behind: [`Proc`] kills its child when it is
//! dropped. CPU time and memory are read from `/proc/PID/stat` and `/proc/PID/status`, the same
//! way for Levee and nginx.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running child process whose output lines are collected by reader threads.
#[derive(Debug)]
pub(crate) struct Proc {
    name: String,
    child: Child,
    /// Every stdout and stderr line so far, for error messages and log parsing.
    lines: Arc<Mutex<Vec<String>>>,
    /// New lines as they arrive (both streams).
    rx: Receiver<String>,
}

/// Builds a command that runs `program` pinned to `cpus` (a `taskset -c` list), or unpinned
/// when `cpus` is empty.
pub(crate) fn pinned(cpus: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    if cpus.is_empty() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpus).arg(program);
        cmd
    }
}

// === impl Proc ===

impl Proc {
    /// Spawns `cmd` with stdout and stderr piped into line collectors.
    pub(crate) fn spawn(name: &str, cmd: Command) -> anyhow::Result<Self> {
        Self::spawn_with_stdout(name, cmd, None)
    }

    /// Spawns `cmd` with stderr piped into a line collector, and stdout too unless `stdout`
    /// names a file to write it to (an access log the harness must not hold in memory).
    pub(crate) fn spawn_with_stdout(
        name: &str,
        mut cmd: Command,
        stdout: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let out = match stdout {
            Some(path) => Stdio::from(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            ),
            None => Stdio::piped(),
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            collect(out, lines.clone(), tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect(err, lines.clone(), tx);
        }
        Ok(Self {
            name: name.to_string(),
            child,
            lines,
            rx,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for an output line for which `pick` returns a value.
    pub(crate) fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(found) = pick(&line) {
                        return Ok(found);
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        bail!("{} exited ({status}):\n{}", self.name, self.tail(20));
                    }
                    bail!(
                        "{} did not print the expected line within {timeout:?}:\n{}",
                        self.name,
                        self.tail(20)
                    );
                }
            }
        }
    }

    /// Drains the lines received so far and returns those for which `pick` returns a value.
    pub(crate) fn drain<T>(&mut self, mut pick: impl FnMut(&str) -> Option<T>) -> Vec<T> {
        self.rx.try_iter().filter_map(|line| pick(&line)).collect()
    }

    /// The last `n` output lines, for error messages.
    pub(crate) fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }

    /// Fails if the process has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.tail(20));
        }
        Ok(())
    }

    /// CPU time (user + system) the process has used so far.
    pub(crate) fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid())
    }

    /// Resident memory (`VmRSS`) in bytes.
    pub(crate) fn rss(&self) -> anyhow::Result<u64> {
        rss(self.pid())
    }

    /// Waits for the process to exit by itself, up to `timeout`, then kills it. Returns its
    /// complete output.
    pub(crate) fn finish(mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // The reader threads may still hold the last lines of a process that just
                // exited; their pipes are closed, so they end promptly.
                std::thread::sleep(Duration::from_millis(50));
                if !status.success() {
                    bail!("{} failed ({status}):\n{}", self.name, self.tail(30));
                }
                return Ok(self.tail(usize::MAX));
            }
            if Instant::now() >= deadline {
                bail!("{} did not finish within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut all) = lines.lock() {
                all.push(line.clone());
            }
            let _ = tx.send(line);
        }
    });
}

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// CPU time (user + system, all threads) of process `pid`.
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces, so fields are counted after its `)`.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: state is field 3, so utime (14) and stime (15) are at indexes 11 and 12.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    let ticks = utime + stime;
    let per_second = clock_ticks();
    Ok(Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second))
}

/// Resident memory (`VmRSS`) of process `pid`, in bytes.
pub(crate) fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in /proc/PID/status")?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}
