//! The wasmtime host for Levee policy plugins: one engine, the bindings of `sdk/wit/levee.wit`,
//! instance pools, per-call limits, and what a fault does to a request.
//!
//! The gateway builds one [`PluginRuntime`] per process, loads each config's plugins into a
//! [`PluginSet`] (compiling off the request path, cached by content hash), and binds a plugin to
//! each route that names it ([`Plugin::bind`], which runs `init` with the route's config). On
//! the request path it awaits the hooks of the [`BoundPlugin`]: futures that resolve to an
//! [`Outcome`], either the plugin's validated decision or what the `on_error` policy says to do
//! instead.
//!
//! Containment: every call has an epoch deadline and a memory cap; a trap, a timeout or an
//! out-of-memory never reaches the gateway as anything but a [`FaultKind`]. A call yields to the
//! executor at every epoch tick, so a plugin running up to its deadline never holds a worker
//! thread for longer than a tick at a time. A faulted instance
//! is dropped, never reused. A breaker per plugin stops running a plugin that keeps faulting.
//! Plugins get no WASI: the imports a standard-library guest declares are linked to functions
//! that trap, so the only way out of the sandbox is the `host` interface ([`HostServices`]).
//!
//! This crate receives plain data and returns decisions. It does not depend on the config,
//! balance or resilience crates; the gateway converts its config into [`PluginParams`].

mod bindings;
mod breaker;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod instance;
mod params;
mod plugin;
mod runtime;
mod services;
mod set;
mod status;
mod types;

pub use breaker::BreakerState;
pub use error::PluginError;
pub use params::{BreakerParams, EngineParams, Isolation, OnError, PluginLimits, PluginParams};
pub use plugin::{BoundPlugin, Plugin};
pub use runtime::{CompiledPlugin, PluginRuntime};
pub use services::{CounterHandle, HostServices, NoServices};
pub use set::PluginSet;
pub use status::{LATENCY_BUCKETS_MICROS, PluginStatus};
pub use types::{
    Bypass, CircuitState, ClusterHealth, FailureKind, FallbackDecision, FaultKind, HeaderFilter,
    HeaderMutation, Hook, Hooks, LocalResponse, LogLevel, Outcome, RequestAction, RequestHead,
    ResponseAction, ResponseHead, RetrySpec, StoreSpec, UpstreamFailure,
};
