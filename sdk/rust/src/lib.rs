//! Write Levee policy plugins in Rust.
//!
//! A plugin is a type that implements [`Policy`], exported with [`export!`] and built for
//! `wasm32-wasip2` as a `cdylib`: the result is a WebAssembly component for the
//! `levee:policy/plugin` world (`sdk/wit/levee.wit`). The gateway calls [`Policy::init`] once
//! per instance with the route's config, then only the hooks the plugin declared in
//! [`Policy::HOOKS`] (or, when its config turns some off, in [`Policy::hooks`]).
//!
//! ```
//! use levee_sdk::{HeaderMutation, Hooks, Policy, RequestAction, RequestHead};
//!
//! /// Tags every request with the route it matched.
//! #[derive(Debug)]
//! struct RouteTag;
//!
//! impl Policy for RouteTag {
//!     const HOOKS: Hooks = Hooks::ON_REQUEST;
//!
//!     fn init(_config: &[u8]) -> Result<Self, String> {
//!         Ok(RouteTag)
//!     }
//!
//!     fn on_request(&mut self, req: &RequestHead) -> RequestAction {
//!         RequestAction::proceed_with(HeaderMutation::new().set("x-route", req.route.as_str()))
//!     }
//! }
//!
//! levee_sdk::export!(RouteTag);
//! ```
//!
//! Plugins decide; the host does all I/O. The only outside world a plugin has is [`host`]. On
//! targets other than `wasm32` the [`host`] functions go to a thread-local [`testing::Host`], and
//! [`testing::Plugin`] drives a policy the way the gateway does, so unit tests need no Wasm.

// The generated bindings name their runtime as `levee_sdk::...`, so that the paths resolve both
// here and in the plugin crates that `export!` expands into.
#[cfg(target_arch = "wasm32")]
extern crate self as levee_sdk;

#[allow(unsafe_code)]
pub mod alloc;
pub mod host;
mod types;

#[cfg(feature = "json")]
pub mod config;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// Every `wasm32` plugin allocates through free lists of small blocks: see [`alloc`].
#[cfg(all(target_arch = "wasm32", feature = "small-alloc"))]
#[global_allocator]
static ALLOC: alloc::SmallAlloc<std::alloc::System> = alloc::SmallAlloc::new(std::alloc::System);

// The generated bindings are only compiled for Wasm, so native builds need no host imports.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[allow(unsafe_code)]
pub mod guest;

pub use types::{
    CircuitState, ClusterHealth, FailureKind, FallbackDecision, HeaderList, HeaderMutation, Hooks,
    LogLevel, RequestAction, RequestHead, Response, ResponseAction, ResponseHead, RetrySpec,
    StoreSpec, UpstreamFailure, header, header_str, is_valid_header_name, is_valid_header_value,
};

/// A policy plugin: what it does at each hook.
///
/// One value is created per component instance by [`Policy::init`] and kept for the life of
/// the instance; the gateway reuses instances across requests (pooled isolation) and recycles
/// them after a number of calls or any trap, so state in `self` is per instance, never global.
///
/// Every hook has a default that changes nothing, so a policy implements only the hooks it
/// lists in [`Policy::HOOKS`]. The host never calls a hook missing from `HOOKS`, nor one that
/// [`Policy::hooks`] leaves out.
pub trait Policy: Sized + 'static {
    /// The hooks this policy implements.
    const HOOKS: Hooks;

    /// The hooks this instance wants called, decided once its config is known: by default all
    /// of [`Policy::HOOKS`]. Leave out a hook the config makes a no-op, and the gateway saves
    /// the whole call on every request. Hooks outside `HOOKS` are ignored.
    fn hooks(&self) -> Hooks {
        Self::HOOKS
    }

    /// Builds the policy from the route's `config`: JSON text, `null` when the route gives none
    /// (see [`config::parse`] and [`config::parse_or_default`]). An error rejects the config: the
    /// reload fails and the old config keeps serving.
    fn init(config: &[u8]) -> Result<Self, String>;

    /// Before forwarding. By default this forwards the request unchanged.
    fn on_request(&mut self, req: &RequestHead) -> RequestAction {
        let _ = req;
        RequestAction::proceed()
    }

    /// When the upstream response head arrives. By default this sends it on unchanged.
    fn on_response(&mut self, req: &RequestHead, resp: &ResponseHead) -> ResponseAction {
        let _ = (req, resp);
        ResponseAction::proceed()
    }

    /// When forwarding failed (after retries), before the route's declarative fallback. By
    /// default this propagates: the gateway goes on as if there were no plugin.
    fn on_upstream_failure(
        &mut self,
        req: &RequestHead,
        failure: &UpstreamFailure,
    ) -> FallbackDecision {
        let _ = (req, failure);
        FallbackDecision::Propagate
    }
}

/// Exports a [`Policy`] type as the plugin's `levee:policy/policy` implementation.
///
/// Use it once per plugin crate, at the crate root: `levee_sdk::export!(MyPolicy);`. It expands
/// to the component exports in `wasm32` builds and to nothing elsewhere, so the same crate builds
/// natively for tests. The policy value lives in a thread-local cell of the instance, created by
/// `init`; a hook called before a successful `init` traps.
#[macro_export]
macro_rules! export {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            use $crate::guest::exports::levee::policy::policy as __wit_policy;
            use $crate::guest::levee::policy::types as __wit_types;

            ::std::thread_local! {
                static __LEVEE_POLICY: ::core::cell::RefCell<::core::option::Option<$policy>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct __LeveeGuest;

            impl __wit_policy::Guest for __LeveeGuest {
                fn init(
                    config: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<__wit_types::Hooks, ::std::string::String> {
                    __LEVEE_POLICY.with(|cell| $crate::guest::init::<$policy>(cell, &config))
                }

                fn on_request(req: __wit_types::RequestHead) -> __wit_types::RequestAction {
                    __LEVEE_POLICY.with(|cell| $crate::guest::on_request::<$policy>(cell, req))
                }

                fn on_response(
                    req: __wit_types::RequestHead,
                    resp: __wit_types::ResponseHead,
                ) -> __wit_types::ResponseAction {
                    __LEVEE_POLICY
                        .with(|cell| $crate::guest::on_response::<$policy>(cell, req, resp))
                }

                fn on_upstream_failure(
                    req: __wit_types::RequestHead,
                    failure: __wit_types::UpstreamFailure,
                ) -> __wit_types::FallbackDecision {
                    __LEVEE_POLICY.with(|cell| {
                        $crate::guest::on_upstream_failure::<$policy>(cell, req, failure)
                    })
                }
            }

    $crate::guest::__export_levee_plugin!(__LeveeGuest with_types_in $crate::guest);
        };
    };
}

// Compiles the README's examples as doctests, so the guide cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
