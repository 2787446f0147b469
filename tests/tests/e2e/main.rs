//! Levee end to end: the real gateway, in-process or as a process, against real upstream
//! servers on loopback. One test binary, so the gateway and its dependencies are linked once
//! rather than once per file; each module is one area, and `levee_tests` (`tests/support`)
//! holds every shared helper.
//!
//! Run one area with `cargo test -p levee-tests --test e2e -- admin::`.

mod admin;
mod bad_input;
mod chaos;
mod cli;
mod clusters;
mod config_errors;
mod examples;
mod hostile;
mod listener;
mod plugins;
mod proxy;
mod reload;
mod reload_rollback;
mod request_path;
mod resilience;
mod routing;
mod shutdown;
mod slow_clients;
mod streaming;
