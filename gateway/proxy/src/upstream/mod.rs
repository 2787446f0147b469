//! Upstream clusters at runtime: endpoints, connection pools, DNS discovery.
//!
//! OWNER: request-path helper.

/// A cluster at runtime.
#[derive(Debug)]
pub struct Cluster {}
