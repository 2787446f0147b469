//! Readiness of the process, as `/readyz` reports it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Ready means: a config is loaded, the listeners are bound, and the gateway is not draining.
#[derive(Debug, Default)]
pub struct Readiness {
    config_loaded: AtomicBool,
    listeners_bound: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// Marks that a valid config has been loaded.
    pub fn set_config_loaded(&self) {
        self.config_loaded.store(true, Ordering::Release);
    }

    /// Marks that every listener is bound.
    pub fn set_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::Release);
    }

    /// Marks the start of a drain: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the gateway is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether `/readyz` should answer 200, and if not, why.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            Err("draining")
        } else if !self.config_loaded.load(Ordering::Acquire) {
            Err("config not loaded")
        } else if !self.listeners_bound.load(Ordering::Acquire) {
            Err("listeners not bound")
        } else {
            Ok(())
        }
    }
}
