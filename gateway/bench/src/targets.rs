//! The servers under test: the upstreams, nginx and Levee, each started as a pinned child.
//!
//! nginx and Levee are configured to do the same work: one worker, round robin over the same two
//! upstreams, a keep-alive pool of 64 idle connections per upstream, no access log (or, with
//! `--access-log`, an access log to a file for both). nginx's
//! per-connection request caps (`keepalive_requests`, 1000 by default on both sides) are raised
//! because Levee has no such cap; with them nginx would reconnect every 1000 requests.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::process::{Proc, pinned};

/// How long a server may take to start and show its port.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A server under test and the address it serves on.
#[derive(Debug)]
pub(crate) struct Server {
    /// The process.
    pub(crate) proc: Proc,
    /// Its proxy (or serving) address.
    pub(crate) address: SocketAddr,
    /// Its admin address (Levee only).
    pub(crate) admin: Option<SocketAddr>,
}

/// Starts one benchmark upstream (this binary's `upstream` subcommand) on `cpus`.
pub(crate) fn start_upstream(cpus: &str, threads: usize) -> anyhow::Result<Server> {
    start_upstream_on(cpus, threads, 0)
}

/// Starts one benchmark upstream on `port` of 127.0.0.1 (0: any free port). The chaos
/// scenario uses a fixed port to restart a killed upstream where the gateway expects it.
pub(crate) fn start_upstream_on(cpus: &str, threads: usize, port: u16) -> anyhow::Result<Server> {
    let exe = std::env::current_exe().context("finding the harness binary")?;
    let mut cmd = pinned(cpus, exe);
    cmd.args([
        "upstream",
        "--port",
        &port.to_string(),
        "--threads",
        &threads.to_string(),
    ]);
    let mut proc = Proc::spawn("upstream", cmd)?;
    let address = proc.wait_for(START_TIMEOUT, |line| {
        line.strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
    })?;
    Ok(Server {
        proc,
        address,
        admin: None,
    })
}

/// The nginx config equivalent to [`levee_config`] with one route; with `access_log`, nginx
/// writes its default (`combined`) access log to `DIR/access.log`, unbuffered, one `write` per
/// request.
pub(crate) fn nginx_config(
    dir: &Path,
    port: u16,
    upstreams: &[SocketAddr],
    access_log: bool,
) -> String {
    let mut servers = String::new();
    for upstream in upstreams {
        let _ = writeln!(servers, "        server {upstream};");
    }
    let dir = dir.display();
    let access_log = if access_log {
        format!("access_log {dir}/access.log;")
    } else {
        "access_log off;".to_string()
    };
    // `worker_connections 11000`: room for the memory probe's 10 000 idle clients plus the
    // upstream pool. nginx allocates a structure per worker connection up front, so a much
    // larger number would inflate its idle memory.
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log stderr warn;
pid {dir}/nginx.pid;

events {{
    worker_connections 11000;
}}

http {{
    {access_log}
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000000;

    upstream backend {{
{servers}        keepalive 64;
        keepalive_requests 1000000000;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}

/// Starts nginx on `cpus` with [`nginx_config`], in `dir`.
pub(crate) fn start_nginx(
    nginx: &Path,
    cpus: &str,
    dir: &Path,
    upstreams: &[SocketAddr],
    access_log: bool,
) -> anyhow::Result<Server> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir, port, upstreams, access_log))
        .context("writing nginx.conf")?;
    let mut cmd = pinned(cpus, nginx);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg("stderr");
    let mut proc = Proc::spawn("nginx", cmd)?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    wait_accepting(&mut proc, address)?;
    Ok(Server {
        proc,
        address,
        admin: None,
    })
}

/// A Levee config: `routes` routes over as many clusters (each round robin over all
/// `upstreams`), the last route a catch-all for `/`. Access log off, info-level logs (which
/// print nothing per request), no drain delay so that stopping is quick.
pub(crate) fn levee_config(upstreams: &[SocketAddr], routes: usize) -> String {
    let routes = routes.max(1);
    let mut out = String::from(
        "listeners:\n  - name: bench\n    address: 127.0.0.1:0\n    limits: { max_connections: 30000 }\n\
         admin:\n  address: 127.0.0.1:0\nroutes:\n",
    );
    for i in 0..routes {
        let prefix = if i + 1 == routes {
            "/".to_string()
        } else {
            format!("/r{i}/")
        };
        let _ = writeln!(
            out,
            "  - name: route-{i}\n    match: {{ path_prefix: \"{prefix}\" }}\n    cluster: cluster-{i}"
        );
    }
    out.push_str("clusters:\n");
    for i in 0..routes {
        let _ = writeln!(
            out,
            "  - name: cluster-{i}\n    lb: round-robin\n    max_idle_per_endpoint: 64\n    endpoints:"
        );
        for upstream in upstreams {
            let _ = writeln!(out, "      - {{ address: \"{upstream}\" }}");
        }
    }
    out.push_str(
        "shutdown:\n  drain_delay: 0s\n  drain_timeout: 1s\nlog:\n  level: info\n  access_log: false\n",
    );
    out
}

/// Starts `levee run -c FILE --workers 1` on `cpus`, with `config` written to `file`.
pub(crate) fn start_levee(
    levee: &Path,
    cpus: &str,
    file: &Path,
    config: &str,
) -> anyhow::Result<Server> {
    start_levee_logging(levee, cpus, file, config, None)
}

/// [`start_levee`], with Levee's standard output (its access log) written to `stdout` when
/// given.
pub(crate) fn start_levee_logging(
    levee: &Path,
    cpus: &str,
    file: &Path,
    config: &str,
    stdout: Option<&Path>,
) -> anyhow::Result<Server> {
    std::fs::write(file, config).context("writing the Levee config")?;
    let mut cmd = pinned(cpus, levee);
    cmd.arg("run")
        .arg("-c")
        .arg(file)
        .args(["--workers", "1"])
        .env_remove("RUST_LOG")
        .env_remove("LEVEE_CONFIG")
        .env_remove("LEVEE_WORKERS");
    let mut proc = Proc::spawn_with_stdout("levee", cmd, stdout)?;
    let mut address = None;
    let mut admin = None;
    let deadline = Instant::now() + START_TIMEOUT;
    while address.is_none() || admin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let (message, found) = proc.wait_for(left, |line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let message = v.get("message")?.as_str()?.to_string();
            let addr: SocketAddr = v.get("address")?.as_str()?.parse().ok()?;
            Some((message, addr))
        })?;
        match message.as_str() {
            "listener bound" => address = Some(found),
            "admin listener bound" => admin = Some(found),
            _ => {}
        }
    }
    let address = address.context("no listener address")?;
    wait_accepting(&mut proc, address)?;
    Ok(Server {
        proc,
        address,
        admin,
    })
}

/// The default Levee binary: `target/release/levee` of this workspace.
pub(crate) fn default_levee() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/release/levee")
        .components()
        .collect()
}

/// A port that was free a moment ago (nginx cannot listen on port 0 and report it).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `address` accepts TCP connections, or the process exits.
fn wait_accepting(proc: &mut Proc, address: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        proc.check_alive()?;
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing accepts on {address}:\n{}", proc.tail(20));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levee_config_has_one_cluster_per_route_and_a_catch_all() {
        let upstreams: Vec<SocketAddr> = vec![
            "127.0.0.1:1001".parse().unwrap(),
            "127.0.0.1:1002".parse().unwrap(),
        ];
        let text = levee_config(&upstreams, 100);
        assert_eq!(text.matches("  - name: route-").count(), 100);
        assert_eq!(text.matches("  - name: cluster-").count(), 100);
        assert_eq!(text.matches("address: \"127.0.0.1:1002\"").count(), 100);
        assert!(text.contains("path_prefix: \"/\" }\n    cluster: cluster-99"));
        assert!(text.contains("access_log: false"));
    }

    #[test]
    fn nginx_config_pools_connections_to_every_upstream() {
        let upstreams: Vec<SocketAddr> = vec![
            "127.0.0.1:1001".parse().unwrap(),
            "127.0.0.1:1002".parse().unwrap(),
        ];
        let text = nginx_config(Path::new("/tmp/x"), 8080, &upstreams, false);
        assert!(text.contains("server 127.0.0.1:1001;"));
        assert!(text.contains("server 127.0.0.1:1002;"));
        assert!(text.contains("keepalive 64;"));
        assert!(text.contains("proxy_set_header Connection \"\";"));
        assert!(text.contains("worker_processes 1;"));
        assert!(text.contains("access_log off;"));
        let logged = nginx_config(Path::new("/tmp/x"), 8080, &upstreams, true);
        assert!(logged.contains("access_log /tmp/x/access.log;"));
    }

    #[test]
    fn levee_config_is_accepted_by_the_config_loader() {
        let upstreams: Vec<SocketAddr> = vec![
            "127.0.0.1:1001".parse().unwrap(),
            "127.0.0.1:1002".parse().unwrap(),
        ];
        for routes in [1, 100] {
            let text = levee_config(&upstreams, routes);
            let source = levee_config::Source {
                path: Path::new("/nonexistent/levee-bench.yaml"),
                text: &text,
            };
            let config = levee_config::load(&source, &levee_config::StdFileSystem)
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(config.routes.len(), routes);
            assert_eq!(config.clusters.len(), routes);
            assert!(!config.log.access_log);
            assert_eq!(config.listeners[0].limits.max_connections, 30_000);
            for cluster in &config.clusters {
                assert_eq!(cluster.lb, levee_config::LbPolicy::RoundRobin);
                assert_eq!(cluster.endpoints.len(), 2);
            }
        }
    }
}
