//! Resilience state machines: everything that decides whether a request may go to an endpoint,
//! and what an outcome does to that decision.
//!
//! Nothing here knows about files, YAML, hyper servers or wasmtime. Each type takes its own
//! parameter struct (the gateway converts from `levee-config`), keeps its clock on
//! `tokio::time::Instant` so tests run on a paused clock, and returns the state changes it makes
//! so the caller can log and count them.

pub mod availability;
pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod health;
pub mod outlier;
pub mod rate_limit;
pub mod store;
