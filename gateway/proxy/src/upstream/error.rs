//! Why sending a request to an upstream endpoint failed, sorted into a few stable kinds.
//!
//! The pipeline turns these into the failure response and its `x-levee-error` header, and
//! decides on retries: a connect-phase failure means the request never left the gateway.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use super::connector::ConnectError;
use crate::body::BoxError;

/// Sending a request upstream failed before a response head arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection could not be opened (refused, unreachable, ...).
    #[error("upstream connect failed: {0}")]
    Connect(#[source] io::Error),
    /// Opening the connection (TCP and TLS) took longer than the cluster's `connect_timeout`.
    #[error("upstream connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The TLS handshake with the endpoint failed.
    #[error("upstream TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    /// The connection was closed or reset before a complete response head arrived, or the
    /// upstream reset the HTTP/2 stream (RST_STREAM) or sent GOAWAY for it.
    #[error("upstream closed the connection before responding: {0}")]
    Closed(#[source] BoxError),
    /// The upstream broke the HTTP protocol, or the request could not be sent as given.
    #[error("upstream protocol error: {0}")]
    Protocol(#[source] BoxError),
}

impl UpstreamError {
    /// Stable kind, used as `x-levee-error`: `upstream-connect-failure`,
    /// `upstream-connect-timeout`, `upstream-tls`, `upstream-reset` or `upstream-protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "upstream-connect-failure",
            Self::ConnectTimeout(_) => "upstream-connect-timeout",
            Self::Tls(_) => "upstream-tls",
            Self::Closed(_) => "upstream-reset",
            Self::Protocol(_) => "upstream-protocol",
        }
    }

    /// Whether the failure happened while opening the connection, so the request was never
    /// sent and retrying it (elsewhere) cannot repeat a side effect.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::ConnectTimeout(_) | Self::Tls(_)
        )
    }

    /// A failure of hyper's client connection: the upstream closing or resetting it, or a
    /// protocol error.
    pub(crate) fn from_hyper(error: hyper::Error) -> Self {
        if is_closed(&error) {
            Self::Closed(Box::new(error))
        } else {
            Self::Protocol(Box::new(error))
        }
    }
}

impl From<ConnectError> for UpstreamError {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::Io(e) => Self::Connect(e),
            ConnectError::Timeout(d) => Self::ConnectTimeout(d),
            ConnectError::Tls(e) => Self::Tls(e),
        }
    }
}

/// The first error of type `T` in `error`'s source chain.
fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

fn is_closed(error: &(dyn StdError + 'static)) -> bool {
    if let Some(e) = find::<hyper::Error>(error)
        && (e.is_incomplete_message() || e.is_canceled() || e.is_closed())
    {
        return true;
    }
    // An HTTP/2 reset or GOAWAY the upstream sent is the upstream ending the exchange, whatever
    // its reason code; one h2 itself raised (a malformed response) stays a protocol error.
    // h2::Error has no `source()`, so its IO error is looked at directly.
    if let Some(e) = find::<h2::Error>(error) {
        if (e.is_reset() || e.is_go_away()) && e.is_remote() {
            return true;
        }
        if e.get_io().is_some_and(is_closed_io) {
            return true;
        }
    }
    find::<io::Error>(error).is_some_and(is_closed_io)
}

fn is_closed_io(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}
