//! Upstream clusters at runtime: endpoints, connection pools, DNS discovery.
//!
//! A [`Cluster`] is built from its config for each snapshot, but the expensive, stateful parts
//! are carried over from the previous snapshot when they still fit: each `Arc<Endpoint>` whose
//! address is unchanged (in-flight counts, EWMA) and the whole connection pool when the
//! connection settings are unchanged. That is what lets a reload happen under load without a
//! burst of new connections or a reset of the load balancer's view.
//!
//! Each endpoint gets its own connection pool ([`pool`]) whose connector always dials that
//! endpoint. The request can then carry the downstream host, which becomes `Host` (HTTP/1.1)
//! or `:authority` (HTTP/2) as the upstream expects, while pools stay per endpoint.

mod connector;
mod dns;
mod error;
mod guard;
mod health;
mod pool;
mod probe;
mod status;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use levee_balance::{
    Algorithm, Endpoint, EndpointSet, Member, PanicMode, PickContext, PriorityPolicy,
};
use levee_config::{HashOn, LbPolicy, UpstreamProtocol, UpstreamTls};
use rustc_hash::FxHashMap;

use crate::body::ProxyBody;
use crate::metrics::Metrics;

use self::connector::{ConnectionCounts, Connector};
pub use self::error::UpstreamError;
pub(crate) use self::guard::{Admission, Guards, Picked};
pub use self::guard::{BreakerForce, ConnectionSlot, TryOutcome};
use self::pool::EndpointPool;
pub use self::pool::UpstreamBody;
pub use self::status::{
    AvailabilityView, BreakerView, ClusterView, EjectionView, EndpointView, HealthView, LevelView,
    LimitView, LimitsView, PanicView,
};
pub(crate) use self::tls::TlsConfigError;

/// A cluster at runtime: its endpoints (static and DNS-discovered), the load balancer over
/// them, and one connection pool per endpoint.
#[derive(Debug)]
pub struct Cluster {
    name: Arc<str>,
    config: levee_config::Cluster,
    endpoints: Arc<Endpoints>,
    pools: Arc<Pools>,
    discovery: Option<dns::Discovery>,
    guards: Guards,
    /// Runs the active health checks and the outlier detector's clock while the cluster lives
    /// (dropping it stops them). Started at commit, not when the cluster is prepared: the
    /// checker writes to the health state this cluster may share with the serving snapshot.
    checker: OnceLock<health::Checker>,
}

/// What committing a prepared [`Cluster`] applies to the state it shares with the serving
/// snapshot's cluster of the same name: see [`Cluster::commit`].
#[derive(Debug)]
#[must_use = "a prepared cluster changes nothing shared until committed"]
pub(crate) struct ClusterCommit {
    guards: guard::PendingGuards,
}

impl Cluster {
    /// Builds and commits the runtime cluster for `config`: [`Cluster::prepare`], then
    /// [`Cluster::commit`]. For one cluster on its own in tests; a reload prepares every
    /// cluster before it commits any.
    #[cfg(test)]
    pub(crate) fn build(
        config: &levee_config::Cluster,
        previous: Option<&Cluster>,
        metrics: &Arc<Metrics>,
    ) -> Result<Cluster, TlsConfigError> {
        let (cluster, pending) = Cluster::prepare(config, previous, metrics)?;
        if let Some(previous) = previous.filter(|p| p.name == cluster.name) {
            previous.stop_checker();
        }
        cluster.commit(pending);
        Ok(cluster)
    }

    /// Prepares the runtime cluster for `config`. When `previous` is the same-named cluster of
    /// the previous snapshot, endpoints with an unchanged address keep their `Arc<Endpoint>`,
    /// the discovered endpoints are kept while the DNS name is unchanged, and the pools are
    /// kept when protocol, TLS (including the CA bundle's content, read again here), timeouts and
    /// pool sizes are unchanged.
    ///
    /// Nothing `previous` serves with changes here: the new limits and health parameters of the
    /// state it shares (bulkhead, health) and the health checker wait in the returned
    /// [`ClusterCommit`], for [`Cluster::commit`]. Dropping both instead leaves `previous`
    /// exactly as it was.
    ///
    /// DNS discovery starts here when called inside a tokio runtime, else on
    /// [`Cluster::resolve`]; it fills only this cluster's own endpoint list.
    pub(crate) fn prepare(
        config: &levee_config::Cluster,
        previous: Option<&Cluster>,
        metrics: &Arc<Metrics>,
    ) -> Result<(Cluster, ClusterCommit), TlsConfigError> {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let previous = previous.filter(|p| p.config.name == config.name);

        let known: HashMap<SocketAddr, Arc<Endpoint>> = previous
            .map(|p| p.endpoints.all().into_iter().map(|(_, e)| (e.address(), e)))
            .into_iter()
            .flatten()
            .collect();
        let statics = config
            .endpoints
            .iter()
            .map(|e| StaticEndpoint {
                endpoint: known
                    .get(&e.address)
                    .cloned()
                    .unwrap_or_else(|| Endpoint::new(e.address)),
                weight: e.weight,
                priority: e.priority,
            })
            .collect();
        let discovered = match (previous, &config.discovery) {
            (Some(p), Some(d)) if p.config.discovery.as_ref().map(|d| &d.dns) == Some(&d.dns) => {
                p.endpoints.discovered()
            }
            _ => Vec::new(),
        };
        let policy = PriorityPolicy {
            panic_threshold: config.panic_threshold,
            panic_mode: match config.panic_mode {
                levee_config::PanicMode::Spread => PanicMode::Spread,
                levee_config::PanicMode::FailFast => PanicMode::FailFast,
            },
        };
        let endpoints = Arc::new(Endpoints::new(
            algorithm(config.lb),
            policy,
            statics,
            discovered,
        ));

        let settings = ConnectionSettings::read(config)?;
        let pools = match previous {
            Some(p) if p.pools.settings == settings => p.pools.clone(),
            _ => Arc::new(Pools::new(name.clone(), settings, metrics.clone())?),
        };

        let discovery = config.discovery.as_ref().map(|d| {
            dns::Discovery::new(
                name.clone(),
                d.dns.clone(),
                d.refresh,
                Arc::downgrade(&endpoints),
            )
        });
        if let Some(discovery) = &discovery {
            discovery.start();
        }

        let (guards, pending) =
            Guards::prepare(name.clone(), config, previous.map(|p| &p.guards), metrics);

        let cluster = Cluster {
            name,
            config: config.clone(),
            endpoints,
            pools,
            discovery,
            guards,
            checker: OnceLock::new(),
        };
        Ok((cluster, ClusterCommit { guards: pending }))
    }

    /// Applies what [`Cluster::prepare`] left pending: the new limits and health parameters
    /// of the shared guards, the health state's endpoint set (this cluster's endpoints), and
    /// the health checker. It cannot fail. Stop the previous cluster's checker first
    /// ([`Cluster::stop_checker`]), so that one checker drives the shared health state.
    pub(crate) fn commit(&self, pending: ClusterCommit) {
        pending.guards.apply();
        self.guards.health.sync(&self.endpoints.all_endpoints());
        if let Some(checker) = health::Checker::start(
            self.name.clone(),
            self.config.health_check.clone(),
            self.guards.health.clone(),
            Arc::downgrade(&self.endpoints),
            self.pools.clone(),
            &self.pools.metrics,
        ) {
            let _ = self.checker.set(checker);
        }
    }

    /// Stops this cluster's health checker: the next snapshot's cluster of the same name has
    /// taken over its health state. Requests still in flight on this cluster keep feeding it.
    pub(crate) fn stop_checker(&self) {
        if let Some(checker) = self.checker.get() {
            checker.stop();
        }
    }

    /// The breakers, limits and outlier detection of this cluster.
    pub(crate) fn resilience(&self) -> &Guards {
        &self.guards
    }

    /// Forces the cluster's breaker (admin API); `None` without a breaker.
    pub fn force_breaker(&self, force: Option<BreakerForce>) -> Option<BreakerView> {
        self.guards
            .force_breaker(force)
            .map(|status| BreakerView::from(&status))
    }

    /// The cluster's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// What consistent hashing hashes on; `None` unless the config sets `hash_on`.
    pub fn hash_on(&self) -> Option<&HashOn> {
        self.config.hash_on.as_ref()
    }

    /// The config this cluster was built from.
    pub fn config(&self) -> &levee_config::Cluster {
        &self.config
    }

    /// Picks an endpoint with the cluster's algorithm; `None` when no endpoint is usable (or
    /// DNS found none yet).
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<Arc<Endpoint>> {
        self.endpoints.set.load().pick(ctx).cloned()
    }

    /// Every endpoint of the cluster right now, static ones first.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints.all().into_iter().map(|(_, e)| e).collect()
    }

    /// Sends `req` (origin-form URI, headers already final) to `endpoint` over a pooled
    /// keep-alive connection, opening one (with the cluster's `connect_timeout`) when none is
    /// idle. For HTTP/2 the downstream `Host` header becomes the URI authority, so the upstream
    /// sees it as `:authority` (without one, the request URI's authority, else the endpoint
    /// address). For HTTP/1.1 the `Host` header goes through as it is and the URI authority is
    /// the endpoint address, so one endpoint keeps one pool whatever hosts its requests name.
    /// Upgrades (101) work: the caller uses `hyper::upgrade::on(&mut response)`.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        self.pools.send(endpoint.address(), req).await
    }

    /// Resolves the DNS name of a discovered cluster that has found no endpoint yet (a first
    /// load or a changed name), waiting at most `limit`, and makes sure discovery runs.
    pub(crate) async fn resolve(&self, limit: Duration) {
        if let Some(discovery) = &self.discovery {
            discovery.start();
            if self.endpoints.discovered().is_empty() {
                let _ = tokio::time::timeout(limit, discovery.resolve_once(&self.endpoints)).await;
            }
        }
    }

    /// The state gauges of this cluster, for `/metrics`.
    pub(crate) fn state(&self) -> crate::metrics::ClusterState {
        status::cluster_state(self)
    }

    /// This cluster's entry in `/clusters`.
    pub fn status(&self) -> ClusterView {
        ClusterView::of(self)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(discovery) = &self.discovery {
            discovery.stop();
        }
    }
}

fn algorithm(lb: LbPolicy) -> Algorithm {
    match lb {
        LbPolicy::RoundRobin => Algorithm::RoundRobin,
        LbPolicy::Random => Algorithm::Random,
        LbPolicy::LeastRequest => Algorithm::LeastRequest,
        LbPolicy::PeakEwma => Algorithm::PeakEwma,
        LbPolicy::RingHash => Algorithm::RingHash,
        LbPolicy::Maglev => Algorithm::Maglev,
    }
}

// === impl Endpoints ===

/// Where an endpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Static,
    Dns,
}

#[derive(Debug)]
struct StaticEndpoint {
    endpoint: Arc<Endpoint>,
    weight: u32,
    priority: u32,
}

/// The endpoints of one cluster and the balancer over them. Shared with the DNS task, which
/// holds it weakly so that it stops once the cluster is gone.
#[derive(Debug)]
pub(crate) struct Endpoints {
    algorithm: Algorithm,
    policy: PriorityPolicy,
    statics: Vec<StaticEndpoint>,
    // Sorted by address, without addresses that are also static.
    discovered: Mutex<Vec<Arc<Endpoint>>>,
    set: ArcSwap<EndpointSet>,
}

/// Weight and priority of DNS-discovered endpoints, which the DNS answer cannot express.
const DISCOVERED_WEIGHT: u32 = 1;
/// See [`DISCOVERED_WEIGHT`].
const DISCOVERED_PRIORITY: u32 = 0;

impl Endpoints {
    fn new(
        algorithm: Algorithm,
        policy: PriorityPolicy,
        statics: Vec<StaticEndpoint>,
        discovered: Vec<Arc<Endpoint>>,
    ) -> Self {
        // An address that became static on reload is no longer counted as discovered too.
        let discovered: Vec<Arc<Endpoint>> = discovered
            .into_iter()
            .filter(|e| !statics.iter().any(|s| s.endpoint.address() == e.address()))
            .collect();
        let set = Self::build_set(algorithm, policy, &statics, &discovered);
        Self {
            algorithm,
            policy,
            statics,
            discovered: Mutex::new(discovered),
            set: ArcSwap::from_pointee(set),
        }
    }

    fn build_set(
        algorithm: Algorithm,
        policy: PriorityPolicy,
        statics: &[StaticEndpoint],
        discovered: &[Arc<Endpoint>],
    ) -> EndpointSet {
        let members = statics
            .iter()
            .map(|s| Member {
                endpoint: s.endpoint.clone(),
                weight: s.weight,
                priority: s.priority,
            })
            .chain(discovered.iter().map(|e| Member {
                endpoint: e.clone(),
                weight: DISCOVERED_WEIGHT,
                priority: DISCOVERED_PRIORITY,
            }))
            .collect();
        EndpointSet::with_policy(members, algorithm, policy)
    }

    fn discovered(&self) -> Vec<Arc<Endpoint>> {
        self.discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every endpoint, static ones first.
    pub(crate) fn all_endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.all().into_iter().map(|(_, e)| e).collect()
    }

    /// Every endpoint with its source, weight and priority, static ones first.
    fn all(&self) -> Vec<(Source, Arc<Endpoint>)> {
        self.statics
            .iter()
            .map(|s| (Source::Static, s.endpoint.clone()))
            .chain(self.discovered().into_iter().map(|e| (Source::Dns, e)))
            .collect()
    }

    /// Replaces the discovered endpoints with `addresses`, keeping the `Arc<Endpoint>` (and so
    /// the load state) of every address that stays. Returns whether anything changed.
    pub(crate) fn replace_discovered(&self, addresses: &[SocketAddr]) -> bool {
        let mut wanted: Vec<SocketAddr> = addresses
            .iter()
            .copied()
            .filter(|a| !self.statics.iter().any(|s| s.endpoint.address() == *a))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();

        let mut discovered = self
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if discovered
            .iter()
            .map(|e| e.address())
            .eq(wanted.iter().copied())
        {
            return false;
        }
        let next: Vec<Arc<Endpoint>> = wanted
            .into_iter()
            .map(|a| {
                discovered
                    .iter()
                    .find(|e| e.address() == a)
                    .cloned()
                    .unwrap_or_else(|| Endpoint::new(a))
            })
            .collect();
        // Swapped while the lock is held so two refreshes cannot interleave their sets.
        self.set.store(Arc::new(Self::build_set(
            self.algorithm,
            self.policy,
            &self.statics,
            &next,
        )));
        *discovered = next;
        true
    }
}

// === impl Pools ===

/// The knobs that shape connections; when all are unchanged on reload the pools are kept.
#[derive(Debug, Clone, PartialEq)]
struct ConnectionSettings {
    protocol: UpstreamProtocol,
    tls: Option<UpstreamTls>,
    /// The content of `tls.ca_file`: the path alone would keep trusting a replaced bundle.
    ca_pem: Option<Arc<[u8]>>,
    /// The content of `tls.cert` and `tls.key`, for the same reason.
    identity: Option<tls::Identity>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_endpoint: u32,
}

impl ConnectionSettings {
    /// The settings of `config`, with its CA file read as it is now.
    fn read(config: &levee_config::Cluster) -> Result<Self, TlsConfigError> {
        let ca_pem = config
            .tls
            .as_ref()
            .and_then(|t| t.ca_file.as_deref())
            .map(tls::read_ca)
            .transpose()?;
        let identity = config
            .tls
            .as_ref()
            .and_then(|t| t.client_cert.as_ref())
            .map(tls::read_identity)
            .transpose()?;
        Ok(Self {
            protocol: config.protocol,
            tls: config.tls.clone(),
            ca_pem,
            identity,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            max_idle_per_endpoint: config.max_idle_per_endpoint,
        })
    }
}

/// Above this many per-endpoint pools, creating another first drops those of endpoints
/// without open connections. Large enough that static clusters never hit it.
const PRUNE_POOLS_AT: usize = 256;

/// One connection pool per endpoint address, created on first use.
#[derive(Debug)]
struct Pools {
    cluster: Arc<str>,
    settings: ConnectionSettings,
    scheme: Scheme,
    tls: Option<tls::TlsSettings>,
    metrics: Arc<Metrics>,
    counts: Arc<ConnectionCounts>,
    endpoints: Mutex<FxHashMap<SocketAddr, Arc<EndpointPool>>>,
}

impl Pools {
    fn new(
        cluster: Arc<str>,
        settings: ConnectionSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TlsConfigError> {
        let tls = settings
            .tls
            .as_ref()
            .map(|t| {
                tls::settings(
                    t,
                    settings.ca_pem.as_deref(),
                    settings.identity.as_ref(),
                    settings.protocol,
                )
            })
            .transpose()?;
        Ok(Self {
            cluster,
            scheme: if tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            settings,
            tls,
            metrics,
            counts: Arc::default(),
            endpoints: Mutex::default(),
        })
    }

    /// The pool of `address`.
    fn pool_for(&self, address: SocketAddr) -> Arc<EndpointPool> {
        let mut pools = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(&address) {
            return pool.clone();
        }
        if pools.len() >= PRUNE_POOLS_AT {
            // DNS may hand out ever new addresses; pools of endpoints with no open
            // connection hold nothing worth keeping.
            pools.retain(|a, _| self.counts.open(*a) > 0);
        }
        let pool = Arc::new(EndpointPool::new(
            Connector::new(
                self.cluster.clone(),
                address,
                self.settings.connect_timeout,
                self.tls.clone(),
                self.metrics.clone(),
                self.counts.clone(),
            ),
            self.settings.idle_timeout,
            self.settings.max_idle_per_endpoint as usize,
        ));
        pools.insert(address, pool.clone());
        pool
    }

    /// Sends `req` to `address` over its pool; see [`Cluster::send`].
    async fn send(
        &self,
        address: SocketAddr,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let pool = self.pool_for(address);
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));

        if self.settings.protocol == UpstreamProtocol::Http1 {
            // HTTP/1.1 sends the origin form; the host goes in `Host`, which every request
            // needs. The proxy path always sets one; a request without (a health check sent
            // with no `host`) names the endpoint.
            *req.uri_mut() = Uri::from(path_and_query);
            if !req.headers().contains_key(http::header::HOST) {
                let host = HeaderValue::try_from(address.to_string())
                    .map_err(|e| UpstreamError::Protocol(Box::new(e)))?;
                req.headers_mut().insert(http::header::HOST, host);
            }
            *req.version_mut() = Version::HTTP_11;
            return pool.send_http1(req).await;
        }

        // HTTP/2 carries the host as `:authority`, taken from the URI: the downstream `Host`,
        // else the request URI's authority, else the endpoint address.
        let host = req
            .headers_mut()
            .remove(http::header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok());
        let authority = match host.or_else(|| req.uri().authority().cloned()) {
            Some(authority) => authority,
            None => Authority::try_from(address.to_string())
                .map_err(|e| UpstreamError::Protocol(Box::new(e)))?,
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(authority);
        // `PathAndQuery` is `Bytes` inside: cloning it copies nothing.
        parts.path_and_query = Some(path_and_query);
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|e| UpstreamError::Protocol(Box::new(e)))?;
        *req.version_mut() = Version::HTTP_2;
        pool.send_http2(req).await
    }

    /// Idle pooled connections to `address` right now (without making its pool).
    fn idle_connections(&self, address: SocketAddr) -> usize {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&address)
            .map_or(0, |pool| pool.idle_connections())
    }

    fn open_connections(&self, address: SocketAddr) -> u64 {
        self.counts.open(address)
    }
}
