//! `levee demo`: the gateway with an embedded config and built-in demo upstreams on loopback.
//!
//! The demo needs no files and no network beyond loopback. It starts three small upstream
//! servers (two healthy ones and one flaky one that fails every request during bad phases of
//! 15 seconds), and names a fourth address where nothing listens. It writes the embedded config
//! into a temporary directory (so an operator can edit it and watch the hot reload), starts the
//! gateway on it, and prints what to curl: retries hiding failures, the flaky upstream ejected
//! and readmitted, a down service's circuit opening and its maintenance page.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::gateway::{Gateway, GatewayOptions, ShutdownSignals};

/// The demo's config. `{catalog_a}` and friends are replaced by the demo upstreams' addresses.
const DEMO_CONFIG: &str = include_str!("demo.yaml");

#[cfg(not(feature = "embed-demo-plugin"))]
mod plugin;

/// The `static-fallback` example plugin, embedded by `build.rs` (feature `embed-demo-plugin`).
#[cfg(feature = "embed-demo-plugin")]
fn maintenance_plugin() -> anyhow::Result<Vec<u8>> {
    Ok(include_bytes!(concat!(env!("OUT_DIR"), "/static_fallback.wasm")).to_vec())
}

/// The `static-fallback` example plugin, built from the source checkout this binary was built
/// in (a no-op for cargo once built).
#[cfg(not(feature = "embed-demo-plugin"))]
fn maintenance_plugin() -> anyhow::Result<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // `cargo run` and `cargo test` name the cargo that built us.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("levee demo: building its Wasm fallback plugin (plugins/static-fallback)");
    let wasm = plugin::build(&root, cargo)
        .map_err(anyhow::Error::msg)
        .context(
            "building the demo's plugin from the sources; a levee built with \
             `--features embed-demo-plugin` carries it instead",
        )?;
    std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))
}

/// Runs the demo until Ctrl-C.
pub async fn run(port: u16, admin_port: u16) -> anyhow::Result<()> {
    // Before the signal handlers, so that Ctrl-C stops a first, slow build at once.
    let maintenance_plugin = tokio::task::spawn_blocking(maintenance_plugin).await??;
    let signals = ShutdownSignals::install()?;
    let catalog_a = spawn_upstream("catalog-a", Behaviour::Healthy).await?;
    let catalog_b = spawn_upstream("catalog-b", Behaviour::Healthy).await?;
    let flaky = spawn_upstream("flaky", Behaviour::Phases).await?;
    let broken = closed_port().await?;

    let dir = DemoDir::create()?;
    let config = DEMO_CONFIG
        .replace("{port}", &port.to_string())
        .replace("{admin_port}", &admin_port.to_string())
        .replace("{catalog_a}", &catalog_a.to_string())
        .replace("{catalog_b}", &catalog_b.to_string())
        .replace("{flaky}", &flaky.to_string())
        .replace("{broken}", &broken.to_string());
    let plugin_path = dir.path.join("maintenance.wasm");
    std::fs::write(&plugin_path, maintenance_plugin)
        .with_context(|| format!("writing {}", plugin_path.display()))?;
    let config_path = dir.path.join("levee.yaml");
    std::fs::write(&config_path, config)
        .with_context(|| format!("writing {}", config_path.display()))?;

    let gateway = Gateway::start(GatewayOptions::new(&config_path)).await?;
    let public = gateway
        .listener_addr("public")
        .context("the demo listener did not bind")?;
    let admin = gateway.admin_addr();

    let banner = format!(
        "\n\
         Levee demo is running.\n\
         \n\
         \x20 Upstreams on loopback: catalog-a {catalog_a}, catalog-b {catalog_b}, flaky {flaky},\n\
         \x20 and nothing at {broken} (a service that is down)\n\
         \n\
         \x20 curl -i http://{public}/catalog/items     # round-robin over two health-checked upstreams\n\
         \x20 curl -i http://{public}/flaky/            # fails every request during 15 s bad phases\n\
         \x20 curl -i http://{public}/mixed/            # retries hide the flaky one; it is ejected, then back\n\
         \x20 curl -i http://{public}/broken/           # the circuit opens; a maintenance page\n\
         \x20 curl -i http://{public}/down/             # the same, answered by a Wasm fallback plugin\n\
         \x20 curl -i http://{public}/nowhere           # no route: a JSON 404 with x-levee-error\n\
         \n\
         \x20 status page  http://{admin}/\n\
         \x20 metrics      http://{admin}/metrics\n\
         \x20 clusters     http://{admin}/clusters\n\
         \x20 config       {config}  (edit it: the gateway reloads it within a second)\n\
         \n\
         Press Ctrl-C to stop.\n",
        config = config_path.display(),
    );
    let _ = std::io::stdout().write_all(banner.as_bytes());
    gateway.run_until_signal(signals).await
}

/// How a demo upstream answers.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// 200 with a small JSON body.
    Healthy,
    /// 200 for 15 seconds, then 503 for 15 seconds, and so on (`/healthz` included).
    Phases,
}

/// How long each good or bad phase of [`Behaviour::Phases`] lasts.
const PHASE: std::time::Duration = std::time::Duration::from_secs(15);

/// An address on loopback where nothing listens (connections are refused).
async fn closed_port() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?)
}

/// Starts a demo upstream on `127.0.0.1:0` and returns its address.
async fn spawn_upstream(name: &'static str, behaviour: Behaviour) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let served = served.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                let bad_phase = (started.elapsed().as_secs() / PHASE.as_secs()) % 2 == 1;
                async move { Ok::<_, Infallible>(answer(name, behaviour, n, bad_phase, &req)) }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

fn answer(
    name: &str,
    behaviour: Behaviour,
    n: u64,
    bad_phase: bool,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let failing = matches!(behaviour, Behaviour::Phases) && bad_phase;
    let status = if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = serde_json::json!({
        "upstream": name,
        "request": n,
        "path": req.uri().path(),
        "request_id": req.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
        "ok": !failing,
    });
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A temporary directory for the demo config, removed when the demo ends.
#[derive(Debug)]
struct DemoDir {
    path: PathBuf,
}

impl DemoDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("levee-demo-{}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
