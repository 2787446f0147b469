//! `levee demo`: the gateway with an embedded config and built-in demo upstreams.
