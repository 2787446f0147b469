//! A loaded plugin, and its bindings to routes: instance pools, the call path, the fault policy.
//!
//! A [`Plugin`] is one compiled version plus its params, breaker and counters. A route binds it
//! with its own config ([`Plugin::bind`]): that instantiates one instance and runs `init`, so a
//! config the plugin rejects fails the reload, and the hooks `init` returns decide which hooks
//! are ever called. The [`BoundPlugin`] keeps the warm instances for that route, since every
//! instance has been `init`-ed with that route's config.
//!
//! A call takes an instance (a warm one, or a fresh one under `per-request` isolation or when
//! the pool is empty), arms its deadline, runs the hook, validates the decision, and gives the
//! instance back unless it faulted or has served `recycle_after` calls. A faulted instance is
//! always dropped: a trap can leave a guest's heap or globals half-updated. So is one whose
//! call was dropped half-way (the request went away): the future owns the instance.
//!
//! Hook calls are futures. The guest runs on a fiber and yields at every epoch tick, so a
//! plugin that runs up to its deadline shares the worker thread with the other requests
//! instead of holding it (see `instance::new_store`).
//!
//! Hot swap: bound plugins hold an `Arc` of their plugin and of its compiled component, so a
//! call in flight on an old version finishes on it, and the old pools are dropped with the old
//! snapshot.

use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use crate::bindings::{convert, levee::policy::types as wit};
use crate::breaker::{Admission, Breaker};
use crate::error::PluginError;
use crate::instance::{Fault, Instance, PluginShared, classify, new_store};
use crate::params::{Isolation, OnError, PluginParams};
use crate::runtime::CompiledPlugin;
use crate::services::HostServices;
use crate::status::{PluginStats, PluginStatus};
use crate::types::{
    Bypass, FallbackDecision, FaultKind, HeaderFilter, Hook, Hooks, Outcome, RequestAction,
    RequestHead, ResponseAction, ResponseHead, UpstreamFailure,
};

/// One plugin version, loaded: compiled component, params, breaker and counters.
pub struct Plugin {
    engine: Engine,
    params: PluginParams,
    compiled: Arc<CompiledPlugin>,
    shared: Arc<PluginShared>,
    breaker: Mutex<Breaker>,
    /// [`Breaker::is_clean`], kept up to date under the breaker's lock: while it holds, a call
    /// takes neither the lock nor the time, before or after.
    clean: AtomicBool,
    deadline_ticks: u64,
}

/// A plugin bound to one route with that route's config: `init` has accepted the config.
pub struct BoundPlugin {
    plugin: Arc<Plugin>,
    config: Box<[u8]>,
    hooks: Hooks,
    request_headers: HeaderFilter,
    response_headers: HeaderFilter,
    pool: Mutex<Vec<Instance>>,
}

// === impl Plugin ===

impl Plugin {
    pub(crate) fn new(
        engine: Engine,
        epoch_tick: Duration,
        params: PluginParams,
        compiled: Arc<CompiledPlugin>,
        services: Arc<dyn HostServices>,
    ) -> Self {
        let shared = Arc::new(PluginShared::new(
            params.name.clone(),
            params.limits.clone(),
            services,
        ));
        Self {
            engine,
            deadline_ticks: deadline_ticks(params.limits.deadline, epoch_tick),
            breaker: Mutex::new(Breaker::new(params.breaker.clone())),
            clean: AtomicBool::new(true),
            params,
            compiled,
            shared,
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.params.name
    }

    /// The plugin's version: the sha256 of its `.wasm`, in hex.
    pub fn version(&self) -> &str {
        self.compiled.version()
    }

    /// The params it was loaded with.
    pub fn params(&self) -> &PluginParams {
        &self.params
    }

    /// The compiled component.
    pub fn compiled(&self) -> &Arc<CompiledPlugin> {
        &self.compiled
    }

    /// Counters and state, for `/plugins` and metrics.
    pub fn status(&self) -> PluginStatus {
        let (state, opened) = {
            let breaker = self.breaker();
            (breaker.state(), breaker.opened())
        };
        self.shared
            .stats
            .snapshot(self.name(), self.version(), state, opened)
    }

    /// Binds the plugin to a route with `config` (the route's `config` as JSON text, `null`
    /// when absent): instantiates one instance and calls `init`. Slow compared with a call:
    /// do it when loading a config.
    ///
    /// Fails when `init` rejects the config, or faults (traps, runs out of time or memory).
    ///
    /// Blocks the calling thread for as long as `init` runs (at most the plugin's deadline).
    pub fn bind(self: &Arc<Self>, config: &[u8]) -> Result<BoundPlugin, PluginError> {
        let instantiated = run_to_completion(self.instantiate(config));
        let (instance, hooks) = instantiated.map_err(|init| match init {
            InitError::Rejected(message) => PluginError::Init {
                plugin: self.name().to_owned(),
                message,
            },
            InitError::Fault(fault) => PluginError::InitFault {
                plugin: self.name().to_owned(),
                kind: fault.kind,
                detail: fault.detail,
            },
        })?;
        let bound = BoundPlugin {
            plugin: Arc::clone(self),
            config: config.into(),
            hooks,
            request_headers: HeaderFilter::All,
            response_headers: HeaderFilter::All,
            pool: Mutex::new(Vec::new()),
        };
        bound.give_back(instance);
        Ok(bound)
    }

    /// A fresh instance, `init`-ed with `config`.
    async fn instantiate(&self, config: &[u8]) -> Result<(Instance, Hooks), InitError> {
        let mut store = new_store(&self.engine, &self.shared, self.deadline_ticks);
        let bindings = self
            .compiled
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| InitError::Fault(classify(&e, false, false)))?;
        let mut instance = Instance {
            store,
            bindings,
            calls: 0,
        };
        instance.arm(self.deadline_ticks);
        let init = instance
            .bindings
            .levee_policy_policy()
            .call_init(&mut instance.store, config)
            .await;
        match init {
            Ok(Ok(hooks)) => Ok((instance, convert::hooks(hooks))),
            Ok(Err(message)) => Err(InitError::Rejected(message)),
            Err(e) => Err(InitError::Fault(instance.fault(&e))),
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.params.name)
            .field("version", &self.compiled.version())
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

enum InitError {
    Rejected(String),
    Fault(Fault),
}

/// Polls `future` on this thread until it is ready. For [`Plugin::bind`], which runs off the
/// request path: the only time a plugin future is pending is an epoch yield, which is ready to
/// go on at once, so polling again straight away is right and no waker is needed.
fn run_to_completion<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

/// Epoch ticks for a deadline: rounded up, plus one because the current tick is already
/// partly over when the deadline is armed.
fn deadline_ticks(deadline: Duration, tick: Duration) -> u64 {
    let tick = tick.as_nanos().max(1);
    let ticks = deadline.as_nanos().div_ceil(tick);
    u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
}

// === impl BoundPlugin ===

impl BoundPlugin {
    /// The plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The hooks the plugin implements, as `init` returned them.
    pub fn hooks(&self) -> Hooks {
        self.hooks
    }

    /// Passes the hooks only the request and response headers the filters let through (by
    /// default, all of them).
    #[must_use]
    pub fn with_headers(mut self, request: HeaderFilter, response: HeaderFilter) -> Self {
        self.request_headers = request;
        self.response_headers = response;
        self
    }

    /// Warm instances waiting in this binding's pool.
    pub fn pooled(&self) -> usize {
        self.pool().len()
    }

    /// Bytes of linear memory held by each warm instance in the pool.
    pub fn pooled_memory(&self) -> Vec<usize> {
        self.pool().iter().map(Instance::memory_size).collect()
    }

    /// Runs `on-request`.
    pub async fn on_request(&self, req: &RequestHead<'_>) -> Outcome<RequestAction> {
        if !self.hooks.on_request {
            return Outcome::NotImplemented;
        }
        let headers = convert::header_list(req.headers, &self.request_headers);
        let req = convert::request_head(req, &headers);
        self.call(Hook::OnRequest, &OnRequestCall { req }).await
    }

    /// Runs `on-response`.
    pub async fn on_response(
        &self,
        req: &RequestHead<'_>,
        resp: &ResponseHead<'_>,
    ) -> Outcome<ResponseAction> {
        if !self.hooks.on_response {
            return Outcome::NotImplemented;
        }
        let req_headers = convert::header_list(req.headers, &self.request_headers);
        let req = convert::request_head(req, &req_headers);
        let resp_headers = convert::header_list(resp.headers, &self.response_headers);
        let resp = convert::response_head(resp, &resp_headers);
        self.call(Hook::OnResponse, &OnResponseCall { req, resp })
            .await
    }

    /// Runs `on-upstream-failure`.
    pub async fn on_upstream_failure(
        &self,
        req: &RequestHead<'_>,
        failure: &UpstreamFailure<'_>,
    ) -> Outcome<FallbackDecision> {
        if !self.hooks.on_upstream_failure {
            return Outcome::NotImplemented;
        }
        let headers = convert::header_list(req.headers, &self.request_headers);
        let req = convert::request_head(req, &headers);
        let failure = convert::upstream_failure(failure);
        self.call(Hook::OnUpstreamFailure, &OnFailureCall { req, failure })
            .await
    }

    /// The call path shared by the hooks: breaker, instance, deadline, fault policy.
    async fn call<C: HookCall>(&self, hook: Hook, input: &C) -> Outcome<C::Output> {
        let plugin = &*self.plugin;
        let stats = &plugin.shared.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let clean = plugin.clean.load(Ordering::Acquire);
        let admission = if clean {
            Admission::Run
        } else {
            plugin.breaker().admit(tokio::time::Instant::now())
        };
        if admission == Admission::Reject {
            stats.bypassed.fetch_add(1, Ordering::Relaxed);
            return match plugin.params.on_error {
                OnError::FailClosed => Outcome::FailClosed(Bypass::BreakerOpen),
                OnError::FailOpen | OnError::Reload => Outcome::FailOpen(Bypass::BreakerOpen),
            };
        }

        let started = Instant::now();
        let mut result = self.run_once(false, input).await;
        if result.is_err() && plugin.params.on_error == OnError::Reload {
            stats.reloads.fetch_add(1, Ordering::Relaxed);
            result = self.run_once(true, input).await;
        }
        stats.latency(started.elapsed());
        let opened = if clean && result.is_ok() {
            None
        } else {
            let mut breaker = plugin.breaker();
            let opened = breaker.record(
                admission,
                hook,
                result.is_err(),
                tokio::time::Instant::now(),
            );
            plugin.clean.store(breaker.is_clean(), Ordering::Release);
            opened
        };
        if let (Some(open_for), Err(kind)) = (opened, &result) {
            tracing::warn!(
                plugin = plugin.name(),
                last_fault = %kind,
                ?open_for,
                "plugin breaker opened: calls bypass the plugin (on_error policy) until it is probed"
            );
        }

        match result {
            Ok(decision) => Outcome::Decided(decision),
            Err(kind) => match plugin.params.on_error {
                OnError::FailClosed => Outcome::FailClosed(Bypass::Fault(kind)),
                OnError::FailOpen | OnError::Reload => Outcome::FailOpen(Bypass::Fault(kind)),
            },
        }
    }

    /// One attempt: take (or make) an instance, run, put it back if it is still good.
    async fn run_once<C: HookCall>(&self, fresh: bool, input: &C) -> Result<C::Output, FaultKind> {
        let plugin = &*self.plugin;
        let pooled = plugin.params.isolation == Isolation::Pooled;
        let warm = if pooled && !fresh { self.take() } else { None };
        let mut instance = match warm {
            Some(instance) => instance,
            None => match plugin.instantiate(&self.config).await {
                Ok((instance, _)) => instance,
                Err(InitError::Rejected(message)) => {
                    return Err(self.fault(Fault {
                        kind: FaultKind::Instantiate,
                        detail: format!("init rejected the config it accepted before: {message}"),
                    }));
                }
                Err(InitError::Fault(fault)) => return Err(self.fault(fault)),
            },
        };
        instance.arm(plugin.deadline_ticks);
        match input.run(&mut instance, &plugin.shared.stats).await {
            Ok(Ok(decision)) => {
                instance.calls += 1;
                if pooled && instance.calls < plugin.params.recycle_after {
                    self.give_back(instance);
                }
                Ok(decision)
            }
            Ok(Err(invalid)) => Err(self.fault(Fault {
                kind: FaultKind::InvalidOutput,
                detail: invalid.to_string(),
            })),
            Err(e) => Err(self.fault(instance.fault(&e))),
        }
    }

    fn fault(&self, fault: Fault) -> FaultKind {
        self.plugin.shared.stats.fault(fault.kind);
        tracing::debug!(
            plugin = self.plugin.name(),
            kind = %fault.kind,
            detail = %fault.detail,
            "plugin call faulted"
        );
        fault.kind
    }

    fn take(&self) -> Option<Instance> {
        let instance = self.pool().pop()?;
        self.plugin
            .shared
            .stats
            .pooled
            .fetch_sub(1, Ordering::Relaxed);
        Some(instance)
    }

    fn give_back(&self, instance: Instance) {
        let plugin = &*self.plugin;
        if plugin.params.isolation != Isolation::Pooled {
            return;
        }
        let mut pool = self.pool();
        if pool.len() < plugin.params.pool_size {
            pool.push(instance);
            plugin.shared.stats.pooled.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === hook calls ===

/// One hook's inputs, and how to call the hook with them on an instance. Run at most twice
/// per call (the `reload` policy's second attempt), so the inputs are borrowed, not consumed.
trait HookCall {
    type Output;

    async fn run(
        &self,
        instance: &mut Instance,
        stats: &PluginStats,
    ) -> wasmtime::Result<Result<Self::Output, convert::Invalid>>;
}

struct OnRequestCall<'a> {
    req: wit::RequestHead<'a>,
}

struct OnResponseCall<'a> {
    req: wit::RequestHead<'a>,
    resp: wit::ResponseHead<'a>,
}

struct OnFailureCall<'a> {
    req: wit::RequestHead<'a>,
    failure: wit::UpstreamFailure<'a>,
}

impl HookCall for OnRequestCall<'_> {
    type Output = RequestAction;

    async fn run(
        &self,
        instance: &mut Instance,
        stats: &PluginStats,
    ) -> wasmtime::Result<Result<RequestAction, convert::Invalid>> {
        let action = instance
            .bindings
            .levee_policy_policy()
            .call_on_request(&mut instance.store, self.req.clone())
            .await?;
        Ok(convert::request_action(action, stats))
    }
}

impl HookCall for OnResponseCall<'_> {
    type Output = ResponseAction;

    async fn run(
        &self,
        instance: &mut Instance,
        stats: &PluginStats,
    ) -> wasmtime::Result<Result<ResponseAction, convert::Invalid>> {
        let action = instance
            .bindings
            .levee_policy_policy()
            .call_on_response(&mut instance.store, self.req.clone(), self.resp.clone())
            .await?;
        Ok(convert::response_action(action, stats))
    }
}

impl HookCall for OnFailureCall<'_> {
    type Output = FallbackDecision;

    async fn run(
        &self,
        instance: &mut Instance,
        stats: &PluginStats,
    ) -> wasmtime::Result<Result<FallbackDecision, convert::Invalid>> {
        let decision = instance
            .bindings
            .levee_policy_policy()
            .call_on_upstream_failure(&mut instance.store, self.req.clone(), self.failure.clone())
            .await?;
        Ok(convert::fallback_decision(decision, stats))
    }
}

impl Drop for BoundPlugin {
    fn drop(&mut self) {
        let pooled = self.pool().len();
        self.plugin
            .shared
            .stats
            .pooled
            .fetch_sub(i64::try_from(pooled).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
}

impl fmt::Debug for BoundPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundPlugin")
            .field("plugin", &self.plugin.name())
            .field("hooks", &self.hooks)
            .field("pooled", &self.pooled())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_to_whole_ticks_plus_one() {
        let ms = Duration::from_millis(1);
        assert_eq!(deadline_ticks(Duration::from_millis(5), ms), 6);
        assert_eq!(deadline_ticks(Duration::from_micros(1500), ms), 3);
        assert_eq!(deadline_ticks(Duration::ZERO, ms), 1);
    }
}
