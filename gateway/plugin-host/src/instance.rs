//! One plugin instance: its `Store`, the state behind the `host` imports, the memory limiter,
//! and the classification of what went wrong when a call fails.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

use crate::bindings::levee::policy::{host, types as wit};
use crate::bindings::{self, convert};
use crate::params::PluginLimits;
use crate::services::{CounterHandle, HostServices};
use crate::status::PluginStats;
use crate::types::FaultKind;

/// What every instance of one plugin shares: its identity, limits, services and counters.
pub(crate) struct PluginShared {
    pub(crate) name: String,
    pub(crate) limits: PluginLimits,
    pub(crate) services: Arc<dyn HostServices>,
    pub(crate) stats: PluginStats,
    /// Counter names seen so far, capped at `limits.counters`.
    counter_names: Mutex<HashSet<String>>,
}

/// The data of a plugin's `Store`.
pub(crate) struct HostState {
    shared: Arc<PluginShared>,
    limiter: MemoryLimiter,
    /// The counters this instance has added to, with their handles (if the services give
    /// handles): the name cap is checked once per name, and the counter found once.
    counters: Vec<(String, Option<CounterHandle>)>,
    /// Epoch ticks the running call may still take before it is interrupted.
    ticks_left: u64,
}

/// Caps linear memory growth at the plugin's `limits.memory`, and remembers that it refused,
/// so the trap that usually follows (a guest's allocator aborting) is classified as
/// out-of-memory.
#[derive(Debug)]
struct MemoryLimiter {
    cap: usize,
    /// Bytes of linear memory the instance has (all its memories).
    size: usize,
    refused: bool,
}

/// A live instance, with its bindings and how many calls it has served.
pub(crate) struct Instance {
    pub(crate) store: Store<HostState>,
    pub(crate) bindings: bindings::Plugin,
    pub(crate) calls: u32,
}

/// A call's failure, classified.
#[derive(Debug)]
pub(crate) struct Fault {
    pub(crate) kind: FaultKind,
    pub(crate) detail: String,
}

// === impl PluginShared ===

impl PluginShared {
    pub(crate) fn new(name: String, limits: PluginLimits, services: Arc<dyn HostServices>) -> Self {
        Self {
            name,
            limits,
            services,
            stats: PluginStats::default(),
            counter_names: Mutex::new(HashSet::new()),
        }
    }

    /// Whether `name` may be used as a counter: already known, or a new name under the cap.
    fn admit_counter(&self, name: &str) -> bool {
        let mut names = self
            .counter_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if names.contains(name) {
            return true;
        }
        if names.len() >= usize::try_from(self.limits.counters).unwrap_or(usize::MAX) {
            return false;
        }
        names.insert(name.to_owned());
        true
    }
}

impl fmt::Debug for PluginShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginShared")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

// === impl HostState ===

impl HostState {
    pub(crate) fn new(shared: Arc<PluginShared>) -> Self {
        let cap = usize::try_from(shared.limits.memory).unwrap_or(usize::MAX);
        shared.stats.instances_alive.fetch_add(1, Ordering::Relaxed);
        shared.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        Self {
            shared,
            limiter: MemoryLimiter {
                cap,
                size: 0,
                refused: false,
            },
            counters: Vec::new(),
            ticks_left: 0,
        }
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        self.shared
            .stats
            .instances_alive
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl wit::Host for HostState {}

impl host::Host for HostState {
    fn upstream_health(&mut self, cluster: String) -> Option<wit::ClusterHealth> {
        self.shared
            .services
            .upstream_health(&cluster)
            .map(convert::cluster_health)
    }

    fn cache_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.shared
            .services
            .cache_get(&self.shared.name, &key)
            .map(|value| value.to_vec())
    }

    fn cache_put(&mut self, key: String, value: Vec<u8>, ttl_ms: u32) -> bool {
        let cap = usize::try_from(self.shared.limits.cache_value_bytes).unwrap_or(usize::MAX);
        if value.len() > cap {
            self.shared
                .stats
                .cache_puts_refused
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.shared.services.cache_put(
            &self.shared.name,
            &key,
            Bytes::from(value),
            Duration::from_millis(u64::from(ttl_ms)),
            self.shared.limits.cache_entries,
        )
    }

    fn counter_add(&mut self, name: String, delta: i64) {
        let shared = &self.shared;
        let known = match self.counters.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None if shared.admit_counter(&name) => {
                let handle = shared.services.counter(&shared.name, &name);
                self.counters.push((name, handle));
                self.counters.len() - 1
            }
            None => {
                shared
                    .stats
                    .counters_dropped
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match &self.counters[known] {
            (_, Some(handle)) => handle(delta),
            (name, None) => shared.services.counter_add(&shared.name, name, delta),
        }
    }

    fn log(&mut self, level: wit::LogLevel, message: String) {
        self.shared
            .services
            .log(&self.shared.name, convert::log_level(level), &message);
    }

    fn now_ms(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

// === impl MemoryLimiter ===

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limiter = &mut self.limiter;
        let size = limiter.size.saturating_sub(current).saturating_add(desired);
        if size > limiter.cap {
            limiter.refused = true;
            return Ok(false);
        }
        limiter.size = size;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

// === impl Instance ===

impl Instance {
    /// Bytes of linear memory the instance holds (committed at most this much).
    pub(crate) fn memory_size(&self) -> usize {
        self.store.data().limiter.size
    }

    /// Arms the instance for one call into the guest.
    pub(crate) fn arm(&mut self, deadline_ticks: u64) {
        arm(&mut self.store, deadline_ticks);
        self.store.data_mut().limiter.refused = false;
    }

    /// Classifies a wasmtime error from a call into this instance.
    pub(crate) fn fault(&self, error: &wasmtime::Error) -> Fault {
        classify(error, self.store.data().limiter.refused, true)
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("calls", &self.calls)
            .field("memory_size", &self.memory_size())
            .finish_non_exhaustive()
    }
}

/// Sets up a `Store` for a new instance of the plugin behind `shared`.
///
/// The guest runs for one epoch tick at a time: at each tick it yields to the executor (a
/// tokio `yield_now`, so the worker thread runs its other tasks first) and goes on, until
/// `deadline_ticks` have passed, when it is interrupted (`Trap::Interrupt`, a `deadline`
/// fault). The deadline is still wall-clock time since the call began, as with a plain epoch
/// deadline of that many ticks; a yield costs one fiber switch and one trip through the
/// scheduler per tick.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    shared: &Arc<PluginShared>,
    deadline_ticks: u64,
) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(Arc::clone(shared)));
    store.limiter(|state| state);
    store.epoch_deadline_callback(|mut store| {
        let left = &mut store.data_mut().ticks_left;
        if *left <= 1 {
            return Ok(UpdateDeadline::Interrupt);
        }
        *left -= 1;
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    arm(&mut store, deadline_ticks);
    store
}

/// Gives the next call `deadline_ticks` epoch ticks, checked (and yielded at) one at a time.
fn arm(store: &mut Store<HostState>, deadline_ticks: u64) {
    store.data_mut().ticks_left = deadline_ticks;
    store.set_epoch_deadline(1);
}

/// Classifies an error from instantiation or a call. `refused_memory` says whether the memory
/// limiter refused a growth during it; `in_guest` whether the guest was running (a call, or
/// `init`), as opposed to the host setting up an instance.
pub(crate) fn classify(error: &wasmtime::Error, refused_memory: bool, in_guest: bool) -> Fault {
    let kind = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FaultKind::Deadline,
        _ if refused_memory => FaultKind::OutOfMemory,
        Some(_) => FaultKind::Trap,
        // An error a host function raised (a denied WASI import) is a trap to the guest.
        None if in_guest => FaultKind::Trap,
        // Otherwise the guest never ran: the pool is full, or a start function failed.
        None => FaultKind::Instantiate,
    };
    Fault {
        kind,
        detail: format!("{error:#}"),
    }
}
