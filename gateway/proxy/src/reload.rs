//! Reload triggers (config file changes, SIGHUP, the admin API) and the last reload's status.
//!
//! OWNER: admin/metrics helper. The reload itself (parse, validate, build, swap) is done by
//! `gateway.rs`, which receives [`ReloadRequest`]s from the channel made by [`channel`].

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadCause {
    /// The first load at startup.
    Startup,
    /// A watched file changed.
    FileChange,
    /// SIGHUP.
    Signal,
    /// `POST /config/reload`.
    Admin,
}

/// One request to reload; `reply` (if any) gets the new version or the error.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Why.
    pub cause: ReloadCause,
    /// Where to send the outcome.
    pub reply: Option<oneshot::Sender<Result<u64, String>>>,
}

/// The outcome of the last reload attempts, shown by `/config`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Version of the snapshot serving now.
    pub version: u64,
    /// When the last attempt finished.
    pub last_attempt: Option<SystemTime>,
    /// What caused the last attempt.
    pub last_cause: Option<ReloadCause>,
    /// Whether the last attempt succeeded.
    pub last_ok: Option<bool>,
    /// The error of the last failed attempt (kept until a later attempt succeeds).
    pub last_error: Option<String>,
    /// Successful reloads since start.
    pub successes: u64,
    /// Failed reloads since start.
    pub failures: u64,
}

/// Asks for reloads and reads their status. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<ReloadRequest>,
    status: Arc<Mutex<ReloadStatus>>,
}

/// A reload channel: the handle for triggers, the receiver for the gateway's reload loop.
pub fn channel() -> (ReloadHandle, mpsc::Receiver<ReloadRequest>) {
    let (tx, rx) = mpsc::channel(16);
    (
        ReloadHandle {
            tx,
            status: Arc::default(),
        },
        rx,
    )
}

impl ReloadHandle {
    /// Asks for a reload and waits for its outcome: the new version, or the error.
    pub async fn reload(&self, cause: ReloadCause) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ReloadRequest {
                cause,
                reply: Some(reply),
            })
            .await
            .map_err(|_| "the gateway is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the gateway is shutting down".to_string())?
    }

    /// Asks for a reload without waiting; a request already queued makes this one redundant.
    pub fn request(&self, cause: ReloadCause) {
        let _ = self.tx.try_send(ReloadRequest { cause, reply: None });
    }

    /// A copy of the current status.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the outcome of an attempt.
    pub fn record(&self, cause: ReloadCause, outcome: &Result<u64, String>) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.last_attempt = Some(SystemTime::now());
        status.last_cause = Some(cause);
        match outcome {
            Ok(version) => {
                status.version = *version;
                status.last_ok = Some(true);
                status.last_error = None;
                status.successes += 1;
            }
            Err(error) => {
                status.last_ok = Some(false);
                status.last_error = Some(error.clone());
                status.failures += 1;
            }
        }
    }
}
