//! The gateway in-process: write a config into a temp dir, start `levee::Gateway` on it, and
//! read its real ports back.

use std::net::SocketAddr;
use std::path::PathBuf;

use http::Request;
use levee::reload::{ReloadCause, ReloadHandle};
use levee::{Gateway, GatewayOptions};

use crate::body::empty;
use crate::chaos::{ClusterSpec, EndpointView, RouteSpec, config, endpoint_view};
use crate::client::{self, Reply};
use crate::tempdir::TempDir;

/// The file name the harness writes configs to.
pub const CONFIG_FILE: &str = "levee.yaml";

/// A gateway running in the test process, with its config directory. Shut down (or dropped)
/// at the end of the test.
#[derive(Debug)]
pub struct TestGateway {
    gateway: Option<Gateway>,
    /// The directory holding the config file (and anything the test writes next to it).
    pub dir: TempDir,
    /// The config file.
    pub config_path: PathBuf,
}

impl TestGateway {
    /// Writes `yaml` to `levee.yaml` in a fresh temp dir and starts a gateway on it, with file
    /// watching on.
    pub async fn start(yaml: &str) -> anyhow::Result<TestGateway> {
        let dir = TempDir::new();
        dir.write(CONFIG_FILE, yaml);
        TestGateway::start_in(dir, CONFIG_FILE, true).await
    }

    /// Starts a gateway on the config [`config`] makes of `routes` and `clusters`; panics with
    /// the config if the gateway does not start.
    pub async fn start_specs(routes: &[RouteSpec], clusters: &[ClusterSpec]) -> TestGateway {
        let yaml = config(routes, clusters);
        TestGateway::start(&yaml)
            .await
            .unwrap_or_else(|e| panic!("gateway did not start: {e:#}\nconfig:\n{yaml}"))
    }

    /// Starts a gateway on `dir/file`, already written by the caller (certificates, symlinks).
    pub async fn start_in(dir: TempDir, file: &str, watch: bool) -> anyhow::Result<TestGateway> {
        let config_path = dir.join(file);
        let mut options = GatewayOptions::new(config_path.clone());
        options.watch = watch;
        let gateway = Gateway::start(options).await?;
        Ok(TestGateway {
            gateway: Some(gateway),
            dir,
            config_path,
        })
    }

    fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("gateway is running")
    }

    /// The bound address of listener `name`; panics if there is none.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.gateway()
            .listener_addr(name)
            .unwrap_or_else(|| panic!("no listener called {name}"))
    }

    /// `http://LISTENER/path`.
    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(listener))
    }

    /// The bound admin address.
    pub fn admin(&self) -> SocketAddr {
        self.gateway().admin_addr()
    }

    /// `GET path` on listener `public`, bounded as [`client::send_bounded`] is.
    pub async fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[]).await
    }

    /// `GET path` with extra request headers on listener `public`, bounded as
    /// [`client::send_bounded`] is.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::get(self.url("public", path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        client::send_bounded(request.body(empty()).expect("request")).await
    }

    /// Endpoint `addr` of `cluster` as `/clusters` shows it; panics if it is not listed.
    pub async fn endpoint(&self, cluster: &str, addr: SocketAddr) -> EndpointView {
        endpoint_view(self.admin(), cluster, addr)
            .await
            .unwrap_or_else(|| panic!("/clusters lists no {addr} in {cluster}"))
    }

    /// The reload handle.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.gateway().reload_handle()
    }

    /// Reloads as `POST /config/reload` does, and waits for the outcome.
    pub async fn reload(&self) -> Result<u64, String> {
        self.reload_handle().reload(ReloadCause::Admin).await
    }

    /// Drains and stops the gateway.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        match self.gateway.take() {
            Some(gateway) => gateway.shutdown().await,
            None => Ok(()),
        }
    }
}

/// A minimal config: one plain listener `public` and admin on `127.0.0.1:0`, one route `all`
/// for every path to cluster `backend` with these endpoints and round-robin balancing; a short
/// drain (100ms delay, 10s timeout) so that tests which shut down stay quick; no access log,
/// so test output stays readable.
pub fn simple_config(endpoints: &[SocketAddr]) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|a| format!("      - address: {a}\n"))
        .collect();
    format!(
        "listeners:
  - name: public
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
routes:
  - name: all
    match:
      path_prefix: /
    cluster: backend
shutdown:
  drain_delay: 100ms
  drain_timeout: 10s
log:
  access_log: false
clusters:
  - name: backend
    lb: round-robin
    endpoints:
{endpoints}"
    )
}
