//! The gateway as a real process: spawn `levee run`, learn its bound addresses from its JSON
//! logs, signal it, read its memory use, and run the other CLI commands.
//!
//! Some behaviours only exist in a process: signals, exit status, and resident memory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long to wait for a started gateway to log its bound addresses.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `levee run -c FILE` process; killed on drop.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    listeners: HashMap<String, SocketAddr>,
    admin: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    /// Starts `bin run -c config` plus `extra_args`, and waits until it has logged the
    /// `listener bound` line of every listener in `listeners` and the `admin listener bound`
    /// line.
    pub async fn spawn(
        bin: &Path,
        config: &Path,
        listeners: &[&str],
        extra_args: &[&str],
    ) -> anyhow::Result<GatewayProcess> {
        let mut child = Command::new(bin)
            .arg("run")
            .arg("-c")
            .arg(config)
            .args(extra_args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Both pipes are drained by threads, or a chatty gateway would block on a full pipe.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        // Woken per stderr line, so the caller learns of startup at once: tests that signal
        // right after startup must not give the gateway extra time.
        let new_line = Arc::new(tokio::sync::Notify::new());
        if let Some(pipe) = child.stderr.take() {
            drain_lines(pipe, stderr.clone(), Some(new_line.clone()));
        }
        if let Some(pipe) = child.stdout.take() {
            drain_lines(pipe, stdout.clone(), None);
        }
        let mut process = GatewayProcess {
            child,
            listeners: HashMap::new(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
            stdout,
        };

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut admin = None;
        loop {
            for line in process.stderr_lines() {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let field = |name: &str| {
                    value
                        .get(name)
                        .or_else(|| value.get("fields").and_then(|f| f.get(name)))
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                };
                let address = field("address").and_then(|a| a.parse::<SocketAddr>().ok());
                match (field("message").as_deref(), address) {
                    (Some("listener bound"), Some(address)) => {
                        if let Some(name) = field("listener") {
                            process.listeners.insert(name, address);
                        }
                    }
                    (Some("admin listener bound"), Some(address)) => admin = Some(address),
                    _ => {}
                }
            }
            let all_bound = listeners.iter().all(|l| process.listeners.contains_key(*l));
            if let (true, Some(admin)) = (all_bound, admin) {
                process.admin = admin;
                return Ok(process);
            }
            if let Some(status) = process.child.try_wait()? {
                anyhow::bail!(
                    "gateway exited during startup ({status}); stderr:\n{}",
                    process.stderr_text()
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "gateway did not log its bound addresses within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                    process.stderr_text()
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), new_line.notified()).await;
        }
    }

    /// The bound address of listener `name`.
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        self.listeners[name]
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`, `KILL`) with the `kill` command.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed: {status}");
        Ok(())
    }

    /// Resident memory (`VmRSS`) in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .ok_or_else(|| anyhow::anyhow!("no VmRSS line"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("bad VmRSS line: {line}"))?
            .parse()?;
        Ok(kib * 1024)
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "gateway still running after {timeout:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Whether the process runs or how it exited, and its stderr: for failure messages.
    pub fn diagnose(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(None) => "still running".to_string(),
            Ok(Some(status)) => format!("exited: {status}"),
            Err(error) => format!("unknown state: {error}"),
        };
        format!("gateway {state}; stderr:\n{}", self.stderr_text())
    }

    /// The stderr lines (JSON logs) so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// The stderr so far, as one string (for failure messages).
    pub fn stderr_text(&self) -> String {
        self.stderr_lines().join("\n")
    }

    /// The stdout lines (access log) so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lock").clone()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn drain_lines(
    pipe: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    notify: Option<Arc<tokio::sync::Notify>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            sink.lock().expect("log lock").push(line);
            if let Some(notify) = &notify {
                notify.notify_one();
            }
        }
    });
}

/// Runs the CLI with `args` (e.g. `["validate", FILE]`) and returns its output; kills it and
/// panics if it runs longer than `timeout`.
pub fn run_cli(bin: &Path, args: &[&std::ffi::OsStr], timeout: Duration) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn levee");
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait levee") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("levee {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_all(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}
