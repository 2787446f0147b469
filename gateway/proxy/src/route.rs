//! Routing: picks the route for a request by host, path, method and headers.
//!
//! OWNER: request-path helper.

/// The routing table of one snapshot.
#[derive(Debug, Default)]
pub struct Router {}
