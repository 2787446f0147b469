//! Downstream listeners: accept, TLS, HTTP/1.1 and HTTP/2, limits, graceful drain.
//!
//! A [`ListenerSet`] owns one accept loop per configured listener. Reload diffs by listener
//! name in two steps: [`ListenerSet::prepare`] does all fallible work (binding sockets, reading
//! certificates) and changes nothing, and [`ListenerSet::commit`] (which cannot fail) starts
//! the new accept loops and closes the old ones. The gateway prepares the listeners together
//! with the next snapshot and commits both only when everything is ready, so a bad reload
//! leaves the running listeners exactly as they were. Connections are tracked across the whole set, so those of a
//! removed listener still finish and are still drained at shutdown.

mod accept;
mod io;
mod serve;
mod tls;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use levee_config::ListenerLimits;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::io::Activity;
use crate::metrics::{Metrics, Rejection};
use crate::proxy::Proxy;

/// Binding or configuring a listener failed.
#[derive(Debug, thiserror::Error)]
#[error("listener {name}: {reason}")]
pub struct ListenerError {
    /// The listener's name.
    pub name: String,
    /// What went wrong.
    pub reason: String,
}

/// The set of running listeners. Reload applies a new listener list to it.
#[derive(Debug)]
pub struct ListenerSet {
    proxy: Proxy,
    metrics: Arc<Metrics>,
    tracker: Arc<Tracker>,
    running: Mutex<HashMap<String, Running>>,
    /// Set by [`ListenerSet::stop_accepting`]: a reload committed during the drain must not
    /// open listeners again.
    stopped: AtomicBool,
}

/// The listeners of a config with their sockets bound and certificates read, not yet serving:
/// made by [`ListenerSet::prepare`], carried out by [`ListenerSet::commit`]. Dropping it
/// closes the sockets it bound.
#[derive(Debug)]
#[must_use = "a plan changes nothing until committed"]
pub struct ListenerPlan {
    listeners: Vec<Planned>,
}

/// One listener of a [`ListenerPlan`].
#[derive(Debug)]
struct Planned {
    name: String,
    /// The configured address (port 0 stays 0), kept to compare on the next reload.
    address: SocketAddr,
    settings: Arc<Settings>,
    /// A socket bound for a new listener or a changed address; `None` keeps the running one.
    socket: Option<(tokio::net::TcpListener, SocketAddr)>,
}

impl ListenerSet {
    /// An empty set that hands requests to `proxy`.
    pub fn new(proxy: Proxy, metrics: Arc<Metrics>) -> Self {
        Self {
            proxy,
            metrics,
            tracker: Arc::new(Tracker::new()),
            running: Mutex::new(HashMap::new()),
            stopped: AtomicBool::new(false),
        }
    }

    /// Makes the running listeners match `listeners`: [`ListenerSet::prepare`], then
    /// [`ListenerSet::commit`]. An error changes nothing.
    pub async fn apply(&self, listeners: &[levee_config::Listener]) -> Result<(), ListenerError> {
        let plan = self.prepare(listeners)?;
        self.commit(plan);
        Ok(())
    }

    /// Does the fallible half of making the running listeners match `listeners`: reads every
    /// certificate and binds a socket for each new listener and each changed address, while
    /// the running listeners keep serving untouched. Dropping the returned plan closes the new
    /// sockets and changes nothing; [`ListenerSet::commit`] carries it out.
    ///
    /// Certificate files are read again on every call, so new handshakes use the files as they
    /// are after the commit.
    pub fn prepare(
        &self,
        listeners: &[levee_config::Listener],
    ) -> Result<ListenerPlan, ListenerError> {
        let running = self.running();
        let mut plans = Vec::with_capacity(listeners.len());
        for listener in listeners {
            let tls = listener
                .tls
                .as_ref()
                .map(|tls| tls::load(&listener.name, tls))
                .transpose()?;
            let settings = Arc::new(Settings {
                limits: listener.limits.clone(),
                path_normalization: listener.path_normalization,
                tls,
                trust_client_headers: listener.trust_client_headers,
                forward_client_cert: listener
                    .tls
                    .as_ref()
                    .and_then(|t| t.client_auth.as_ref())
                    .is_some_and(|a| a.forward_client_cert),
            });
            let rebind = running
                .get(&listener.name)
                .is_none_or(|r| r.address != listener.address);
            let socket = match rebind {
                true => Some(accept::bind(listener.address).map_err(|e| ListenerError {
                    name: listener.name.clone(),
                    reason: format!("bind {}: {e}", listener.address),
                })?),
                false => None,
            };
            plans.push(Planned {
                name: listener.name.clone(),
                address: listener.address,
                settings,
                socket,
            });
        }
        Ok(ListenerPlan { listeners: plans })
    }

    /// Carries out a plan from [`ListenerSet::prepare`]; nothing here fails. New listeners
    /// start accepting on the sockets bound in `prepare`, a moved listener's old socket closes
    /// only once the new one accepts, listeners at an unchanged address swap their limits and
    /// certificates in place (existing connections keep the settings they started with), and
    /// listeners the plan does not name close.
    ///
    /// Plans are committed in the order they were prepared, by one caller at a time (the
    /// reload loop). After [`ListenerSet::stop_accepting`] a commit starts nothing.
    pub fn commit(&self, plan: ListenerPlan) {
        let mut running = self.running();
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let names: Vec<String> = plan.listeners.iter().map(|p| p.name.clone()).collect();
        for planned in plan.listeners {
            let Some((socket, local)) = planned.socket else {
                if let Some(r) = running.get(&planned.name) {
                    r.shared.settings.store(planned.settings);
                }
                continue;
            };
            let open = running
                .get(&planned.name)
                .map_or_else(Default::default, |r| r.shared.open.clone());
            let shared = Arc::new(accept::Shared {
                name: Arc::from(planned.name.as_str()),
                local,
                settings: ArcSwap::new(planned.settings),
                open,
                proxy: self.proxy.clone(),
                metrics: self.metrics.clone(),
                parked: self.metrics.downstream_parked(&planned.name),
                send_timeouts: self.metrics.downstream_send_timeouts(&planned.name),
                tracker: self.tracker.clone(),
            });
            let task = tokio::spawn(accept::accept_loop(socket, shared.clone()));
            tracing::info!(listener = %planned.name, address = %local, "listening");
            let new = Running {
                address: planned.address,
                shared,
                task,
            };
            // The old accept loop (if any) stops only now that the new one runs.
            if let Some(old) = running.insert(planned.name, new) {
                tracing::info!(listener = %old.shared.name, address = %old.shared.local, "stopped listening");
            }
        }
        running.retain(|name, r| {
            let keep = names.contains(name);
            if !keep {
                tracing::info!(listener = %name, address = %r.shared.local, "stopped listening");
            }
            keep
        });
    }

    /// The bound address of the listener called `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.running().get(name).map(|r| r.shared.local)
    }

    /// Stops accepting new connections on every listener (sockets are closed). Open
    /// connections are not touched; see [`ListenerSet::drain`].
    pub fn stop_accepting(&self) {
        let mut running = self.running();
        self.stopped.store(true, Ordering::Release);
        running.clear();
    }

    /// Asks every open connection to finish (HTTP/1.1 closes after the current response,
    /// HTTP/2 sends GOAWAY), and waits up to `timeout`. Returns whether all finished in time;
    /// if not, the remaining connections are closed at once.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.tracker.drain.send_replace(true);
        let mut live = self.tracker.live.subscribe();
        let finished = tokio::time::timeout(timeout, live.wait_for(|n| *n == 0))
            .await
            .is_ok();
        if !finished {
            tracing::warn!(
                open = *live.borrow(),
                "drain timed out; closing the remaining connections"
            );
            self.tracker.abort.send_replace(true);
        }
        finished
    }

    /// How many downstream connections are open across every listener, removed ones included.
    pub fn open_connections(&self) -> usize {
        *self.tracker.live.borrow()
    }

    fn running(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a listener's connections are served with; swapped as a whole on reload.
#[derive(Debug)]
struct Settings {
    limits: ListenerLimits,
    path_normalization: levee_config::PathNormalization,
    tls: Option<Arc<rustls::ServerConfig>>,
    trust_client_headers: bool,
    /// `tls.client_auth.forward_client_cert`.
    forward_client_cert: bool,
}

/// One bound listener with its accept loop.
#[derive(Debug)]
struct Running {
    /// The configured address (port 0 stays 0 here), compared on reload.
    address: SocketAddr,
    shared: Arc<accept::Shared>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropping the accept loop drops its socket: new connections are refused.
        self.task.abort();
    }
}

/// Every open connection of the set, and the signals that end them.
#[derive(Debug)]
struct Tracker {
    /// Open connections.
    live: watch::Sender<usize>,
    /// Raised once by `drain`: connections shut down gracefully.
    drain: watch::Sender<bool>,
    /// Raised when the drain timed out: connections are dropped.
    abort: watch::Sender<bool>,
}

// === impl Tracker ===

impl Tracker {
    fn new() -> Self {
        Self {
            live: watch::Sender::new(0),
            drain: watch::Sender::new(false),
            abort: watch::Sender::new(false),
        }
    }
}

/// The open connections of one listener, for `max_connections` (closing the oldest idle one
/// to make room) and `max_connections_per_client`. Shared with the listener's previous socket
/// after an address change, so its connections still count.
#[derive(Debug, Default)]
pub(super) struct Table(Mutex<Connections>);

#[derive(Debug, Default)]
struct Connections {
    /// Every open connection that counts against `max_connections`; one closed to make room
    /// leaves at once, not when its socket is gone.
    open: HashMap<u64, Arc<Activity>>,
    /// Open sockets per client address, until each is gone.
    per_client: HashMap<IpAddr, u32>,
    next_id: u64,
}

// === impl Table ===

impl Table {
    fn lock(&self) -> MutexGuard<'_, Connections> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts one open connection until dropped: on its listener (for `max_connections` and
/// `max_connections_per_client`), in the set (for drain), and in metrics.
#[derive(Debug)]
struct ConnGuard {
    shared: Arc<accept::Shared>,
    id: u64,
    client: IpAddr,
    activity: Arc<Activity>,
}

// === impl ConnGuard ===

impl ConnGuard {
    /// Counts a new connection from `client`, or returns `None` (and counts a rejection) if
    /// the client is at `max_connections_per_client`, or the listener at `max_connections`
    /// with no idle connection to close for it. An idle connection is one handling no
    /// request; the one idle the longest goes first.
    fn admit(
        shared: &Arc<accept::Shared>,
        limits: &ListenerLimits,
        client: IpAddr,
    ) -> Option<Self> {
        let client = client.to_canonical();
        let mut table = shared.open.lock();
        let from_client = table.per_client.get(&client).copied().unwrap_or(0);
        if limits
            .max_connections_per_client
            .is_some_and(|cap| from_client >= cap)
        {
            drop(table);
            shared
                .metrics
                .downstream_connection_rejected(&shared.name, Rejection::PerClient);
            return None;
        }
        if table.open.len() >= limits.max_connections as usize {
            let oldest_idle = table
                .open
                .iter()
                .filter_map(|(id, activity)| Some((activity.idle_since()?, *id)))
                .min();
            let Some((_, id)) = oldest_idle else {
                drop(table);
                shared
                    .metrics
                    .downstream_connection_rejected(&shared.name, Rejection::Full);
                return None;
            };
            if let Some(idle) = table.open.remove(&id) {
                idle.evict();
                shared.metrics.downstream_connection_evicted(&shared.name);
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let activity = Activity::new();
        table.open.insert(id, activity.clone());
        *table.per_client.entry(client).or_default() += 1;
        drop(table);
        shared.metrics.downstream_connection_opened(&shared.name);
        shared.tracker.live.send_modify(|n| *n += 1);
        Some(Self {
            shared: shared.clone(),
            id,
            client,
            activity,
        })
    }

    fn listener_name(&self) -> Arc<str> {
        self.shared.name.clone()
    }

    fn drain_signal(&self) -> watch::Receiver<bool> {
        self.shared.tracker.drain.subscribe()
    }

    fn abort_signal(&self) -> watch::Receiver<bool> {
        self.shared.tracker.abort.subscribe()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        {
            let mut table = self.shared.open.lock();
            table.open.remove(&self.id);
            if let Some(n) = table.per_client.get_mut(&self.client) {
                *n -= 1;
                if *n == 0 {
                    table.per_client.remove(&self.client);
                }
            }
        }
        self.shared
            .metrics
            .downstream_connection_closed(&self.shared.name);
        self.shared
            .tracker
            .live
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}
