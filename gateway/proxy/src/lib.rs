//! Levee, a resilience gateway: listeners, TLS, routing, forwarding, hot reload, admin and CLI.
//!
//! This crate is the only one that reads files and the environment, handles signals and owns the
//! `ArcSwap<Snapshot>`. See `ARCHITECTURE.md` at the repository root for the code map.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod cli;
pub mod conn;
pub mod demo;
pub mod gateway;
pub mod listener;
pub mod metrics;
pub mod path;
pub mod plugins;
pub mod proxy;
pub mod readiness;
pub mod reload;
pub mod route;
pub mod snapshot;
pub mod upstream;

pub use gateway::{Gateway, GatewayOptions, ShutdownSignals};
