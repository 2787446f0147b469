//! Endpoint sets and load balancing.
