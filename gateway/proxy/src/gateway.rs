//! Starting, reloading and stopping a whole gateway.
//!
//! [`Gateway::start`] loads the config, builds the first [`Snapshot`], binds the listeners and
//! the admin listener, and starts the reload loop. The reload loop is the only writer of the
//! `ArcSwap<Snapshot>`: every trigger (file watch, SIGHUP, `POST /config/reload`) sends it a
//! [`ReloadRequest`], so reloads never race each other.
//!
//! A reload runs in two phases. *Prepare* does everything that can fail: read and validate the
//! file, load and compile plugins, read CA bundles and certificates, build the next snapshot
//! ([`Snapshot::prepare`]), resolve its new DNS names, and bind new listener sockets
//! ([`ListenerSet::prepare`]). It changes nothing the serving snapshot uses. *Commit* runs only
//! when all of that succeeded, and cannot fail: it applies the new limits and health parameters
//! to the state the two snapshots share ([`Prepared::commit`]), starts the new accept loops and
//! closes the old ones ([`ListenerSet::commit`]), and swaps the snapshot in with one store. So a
//! rejected reload changes nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use levee_config::{Config, Source, StdFileSystem};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::access_log::AccessLog;
use crate::admin::{self, AdminState};
use crate::listener::{ListenerPlan, ListenerSet};
use crate::metrics::{Metrics, ReloadResult};
use crate::plugins::PluginHost;
use crate::proxy::Proxy;
use crate::readiness::Readiness;
use crate::reload::{self, FileWatcher, ReloadCause, ReloadHandle, ReloadRequest};
use crate::snapshot::{BuildContext, Prepared, Snapshot};
use levee_resilience::store::ResponseStore;

/// How long file events are collected before one reload is asked for. Editors write a file in
/// several steps (truncate, write, rename); 200ms joins them while keeping reloads well under
/// the one second an operator expects.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// How to start a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The config file.
    pub config_path: PathBuf,
    /// Whether to watch the config file (and certificate files) and reload on change.
    /// Default `true`.
    pub watch: bool,
}

impl GatewayOptions {
    /// Options for this config file, with file watching on.
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        Self {
            config_path: config_path.into(),
            watch: true,
        }
    }
}

/// A running gateway: listeners, admin, reload loop.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    admin_addr: SocketAddr,
    reload: ReloadHandle,
    stop_admin: watch::Sender<bool>,
    reload_loop: tokio::task::JoinHandle<()>,
    /// Kept to write its queued lines at shutdown ([`AccessLog::close`]).
    access_log: AccessLog,
}

/// What the reload loop and shutdown share.
#[derive(Debug)]
struct Shared {
    config_path: PathBuf,
    snapshot: Arc<ArcSwap<Snapshot>>,
    listeners: ListenerSet,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    plugins: Arc<PluginHost>,
    store: Arc<ResponseStore>,
}

impl Gateway {
    /// Loads the config, binds every listener and the admin listener, and starts serving.
    /// A config error fails with every message (file, line, key).
    pub async fn start(options: GatewayOptions) -> anyhow::Result<Gateway> {
        // SIGHUP is caught before anything is bound: its default action ends the process, and
        // a config-management HUP may arrive as soon as the listeners answer.
        let (reload, requests) = reload::channel();
        reload::spawn_sighup(reload.clone());

        let config_path = absolute(&options.config_path)?;
        let (config, hash) = read_config(&config_path)
            .await
            .map_err(anyhow::Error::msg)?;
        let config = Arc::new(config);

        let metrics = Metrics::new();
        let readiness = Arc::new(Readiness::default());
        let store = Arc::new(ResponseStore::new(
            config.cache.max_size,
            config.cache.max_entry_size,
        ));
        let plugins = PluginHost::new(store.clone(), metrics.clone());
        let ctx = BuildContext {
            metrics: metrics.clone(),
            store: store.clone(),
            plugins: plugins
                .load(&config, None)
                .await
                .map_err(anyhow::Error::msg)?,
        };
        let first = Snapshot::prepare(config.clone(), 1, hash, None, &ctx)
            .context("building the first snapshot")?;
        first.resolve().await;
        let snapshot = Arc::new(ArcSwap::from_pointee(first.commit()));
        plugins.attach(&snapshot);
        let statuses = Arc::downgrade(&snapshot);
        metrics
            .plugins
            .set_source(Box::new(move || match statuses.upgrade() {
                Some(snapshot) => snapshot.load().plugins.status(),
                None => Vec::new(),
            }));
        let states = Arc::downgrade(&snapshot);
        metrics
            .resilience
            .set_state_source(Box::new(move || match states.upgrade() {
                Some(snapshot) => snapshot.load().cluster_states(),
                None => Vec::new(),
            }));
        readiness.set_config_loaded();

        let access_log = AccessLog::new(config.log.access_log);
        let dropped = access_log.clone();
        metrics.set_access_log_source(Box::new(move || dropped.dropped_lines()));
        let proxy = Proxy::new(snapshot.clone(), metrics.clone(), access_log.clone());
        let listeners = ListenerSet::new(proxy, metrics.clone());
        listeners.apply(&config.listeners).await?;
        for listener in &config.listeners {
            if let Some(address) = listeners.local_addr(&listener.name) {
                tracing::info!(listener = %listener.name, %address, "listener bound");
            }
        }

        let admin_listener = tokio::net::TcpListener::bind(config.admin.address)
            .await
            .with_context(|| format!("binding the admin listener on {}", config.admin.address))?;
        let admin_addr = admin_listener.local_addr()?;
        let token = match &config.admin.token_file {
            Some(path) => Some(read_token(path).await?),
            None => None,
        };
        tracing::info!(address = %admin_addr, "admin listener bound");
        readiness.set_listeners_bound();

        let shared = Arc::new(Shared {
            config_path,
            snapshot: snapshot.clone(),
            listeners,
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            plugins,
            store,
        });
        reload.record(ReloadCause::Startup, &Ok(1));

        let (stop_admin, mut stopped) = watch::channel(false);
        let state = Arc::new(AdminState {
            snapshot,
            metrics,
            readiness,
            reload: reload.clone(),
            token,
        });
        tokio::spawn(admin::serve(admin_listener, state, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));

        let watcher = if options.watch {
            let files = watched_files(&shared.config_path, &config);
            Some(
                FileWatcher::start(files, WATCH_DEBOUNCE, reload.clone())
                    .context("watching the config file")?,
            )
        } else {
            None
        };
        let reload_loop = tokio::spawn(reload_loop(
            shared.clone(),
            reload.clone(),
            requests,
            watcher,
        ));

        Ok(Gateway {
            shared,
            admin_addr,
            reload,
            stop_admin,
            reload_loop,
            access_log,
        })
    }

    /// The bound address of the listener called `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.shared.listeners.local_addr(name)
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Triggers reloads (the same as `POST /config/reload`) and reads their status.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// The snapshot serving now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Drains and stops, as SIGTERM does: `/readyz` turns 503, waits `drain_delay`, stops
    /// accepting, and waits up to `drain_timeout` for in-flight requests.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let shutdown = self.shared.snapshot.load().config.shutdown.clone();
        self.shared.readiness.set_draining();
        tracing::info!(
            drain_delay = ?shutdown.drain_delay,
            drain_timeout = ?shutdown.drain_timeout,
            "draining"
        );
        tokio::time::sleep(shutdown.drain_delay).await;
        self.shared.listeners.stop_accepting();
        let finished = self.shared.listeners.drain(shutdown.drain_timeout).await;
        if finished {
            tracing::info!("drained: every connection finished");
        } else {
            tracing::warn!("drain timeout: closing the connections still open");
        }
        self.reload_loop.abort();
        let _ = self.stop_admin.send(true);
        // Every request has finished or been cut off: write the access log's queued lines.
        let access_log = self.access_log.clone();
        let _ = tokio::task::spawn_blocking(move || access_log.close()).await;
        Ok(())
    }

    /// Serves until SIGTERM or SIGINT arrives on `signals`, then drains as
    /// [`Gateway::shutdown`] does. A second signal during the drain exits the process at once.
    pub async fn run_until_signal(self, mut signals: ShutdownSignals) -> anyhow::Result<()> {
        let first = signals.recv().await;
        tracing::info!(signal = first, "shutdown requested");
        tokio::spawn(async move {
            let second = signals.recv().await;
            tracing::warn!(signal = second, "second signal: exiting without draining");
            std::process::exit(130);
        });
        self.shutdown().await
    }
}

// === impl ShutdownSignals ===

/// SIGTERM and SIGINT, caught from the moment [`ShutdownSignals::install`] returns.
///
/// Install it before [`Gateway::start`]: the default action of both signals ends the process,
/// so a signal sent as soon as the listeners answer (a rolling deploy) must already be caught
/// to be drained.
#[derive(Debug)]
pub struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Needs a tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next signal and names it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

// === reload ===

/// Applies reload requests one at a time, so two triggers never build snapshots concurrently.
async fn reload_loop(
    shared: Arc<Shared>,
    handle: ReloadHandle,
    mut requests: mpsc::Receiver<ReloadRequest>,
    watcher: Option<FileWatcher>,
) {
    while let Some(request) = requests.recv().await {
        // Triggers that arrived while we were busy are answered by this one reload: the file
        // is read once, after all of them.
        let mut waiting = vec![request];
        while let Ok(more) = requests.try_recv() {
            waiting.push(more);
        }
        let cause = waiting[0].cause;
        let started = Instant::now();
        let outcome = reload_once(&shared).await;
        let took = started.elapsed();
        handle.record(cause, &outcome);
        match &outcome {
            Ok(version) => {
                shared.metrics.config_reloaded(ReloadResult::Success);
                tracing::info!(
                    ?cause,
                    version,
                    duration_ms = took.as_secs_f64() * 1e3,
                    "config reloaded"
                );
                if let Some(watcher) = &watcher {
                    let config = shared.snapshot.load().config.clone();
                    if let Err(error) =
                        watcher.set_files(watched_files(&shared.config_path, &config))
                    {
                        tracing::warn!(%error, "could not watch the new config's files");
                    }
                }
            }
            Err(error) => {
                shared.metrics.config_reloaded(ReloadResult::Error);
                tracing::error!(?cause, %error, "config reload failed; the old config keeps serving");
            }
        }
        for request in waiting {
            if let Some(reply) = request.reply {
                let _ = reply.send(outcome.clone());
            }
        }
    }
}

/// Prepares the config file (see the module docs), then commits it. Any error leaves the
/// serving snapshot, its shared state and the listeners untouched.
async fn reload_once(shared: &Shared) -> Result<u64, String> {
    let current = shared.snapshot.load_full();
    let (next, listeners) = prepare_reload(shared, &current).await?;
    if next.snapshot().config.admin != current.config.admin {
        tracing::warn!("admin listener changes apply at the next restart");
    }
    // Nothing below fails. The listeners go first: one bound now serves the current snapshot
    // for the instant until the store below, which is harmless.
    let next = next.commit();
    let version = next.version;
    shared.listeners.commit(listeners);
    shared.snapshot.store(Arc::new(next));
    Ok(version)
}

/// The fallible phase of a reload: the next snapshot and the listeners' new sockets, with
/// nothing applied yet. Dropping the result undoes it (new sockets close, new clusters and
/// their DNS tasks stop).
async fn prepare_reload(
    shared: &Shared,
    current: &Snapshot,
) -> Result<(Prepared, ListenerPlan), String> {
    let (config, hash) = read_config(&shared.config_path).await?;
    let config = Arc::new(config);
    let ctx = BuildContext {
        metrics: shared.metrics.clone(),
        store: shared.store.clone(),
        plugins: shared.plugins.load(&config, Some(&current.plugins)).await?,
    };
    let next = Snapshot::prepare(
        config.clone(),
        current.version + 1,
        hash,
        Some(current),
        &ctx,
    )
    .map_err(|error| error.to_string())?;
    next.resolve().await;
    let listeners = shared
        .listeners
        .prepare(&config.listeners)
        .map_err(|error| error.to_string())?;
    Ok((next, listeners))
}

/// Reads and validates the config file; the error text lists every problem found.
async fn read_config(path: &Path) -> Result<(Config, String), String> {
    let owned = path.to_path_buf();
    let text = tokio::task::spawn_blocking(move || read_config_text(&owned))
        .await
        .map_err(|error| format!("{}: {error}", path.display()))?
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let config = levee_config::load(&Source { path, text: &text }, &StdFileSystem)
        .map_err(|errors| errors.to_string())?;
    Ok((config, content_hash(text.as_bytes())))
}

/// A config file's text, reading at most one byte past [`levee_config::MAX_FILE_BYTES`]: a
/// huge file (or a device such as `/dev/zero`) is never read whole, and `levee_config::load`
/// rejects what was read as too large, naming the file.
pub(crate) fn read_config_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;

    let limit = u64::try_from(levee_config::MAX_FILE_BYTES).unwrap_or(u64::MAX) + 1;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    if bytes.len() > levee_config::MAX_FILE_BYTES {
        // Cut mid-character maybe; only its length matters now.
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Every file whose change should trigger a reload: the config file and the files it names.
fn watched_files(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    for listener in &config.listeners {
        if let Some(tls) = &listener.tls {
            for pair in &tls.certificates {
                files.push(pair.cert.clone());
                files.push(pair.key.clone());
            }
            if let Some(auth) = &tls.client_auth {
                files.push(auth.ca_file.clone());
            }
        }
    }
    for tls in config.clusters.iter().filter_map(|c| c.tls.as_ref()) {
        files.extend(tls.ca_file.clone());
        if let Some(pair) = &tls.client_cert {
            files.push(pair.cert.clone());
            files.push(pair.key.clone());
        }
    }
    // A replaced `.wasm` hot-swaps its plugin.
    files.extend(config.plugins.iter().map(|p| p.path.clone()));
    files.sort();
    files.dedup();
    files
}

async fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("reading the admin token file {}", path.display()))?;
    let token = token.trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the admin token file {} is empty",
        path.display()
    );
    Ok(token)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// A stable hash of the config text, as 16 hex digits. It tells versions apart in `/config`;
/// it is not a security measure.
fn content_hash(bytes: &[u8]) -> String {
    format!("{:016x}", levee_balance::hash_key(bytes))
}
