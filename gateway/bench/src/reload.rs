//! The reload probe: `POST /config/reload` on the admin port, timed by the gateway's own log.
//!
//! The gateway logs `{"message":"config reloaded","duration_ms":...}` for each reload, measured
//! around read, parse, validate, build and swap. That figure excludes the admin round trip, so
//! it is the one reported; the harness also times the HTTP call as a cross-check.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Time allowed for one reload call.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls `POST /config/reload` on `admin` and returns the round-trip time. Fails unless the
/// answer is 2xx.
pub(crate) async fn trigger(admin: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let call = async {
        let stream = TcpStream::connect(admin)
            .await
            .context("connecting to admin")?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let request = http::Request::post("/config/reload")
            .header(http::header::HOST, admin.to_string())
            .body(Empty::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "reload answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(RELOAD_TIMEOUT, call)
        .await
        .context("reload call timed out")??;
    Ok(started.elapsed())
}

/// The `duration_ms` of an admin-triggered `config reloaded` log line, if `line` is one.
pub(crate) fn logged_duration(line: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "config reloaded" {
        return None;
    }
    // File-change reloads are not ours; only the admin trigger is timed.
    if v.get("cause")
        .and_then(|c| c.as_str())
        .is_some_and(|c| c != "Admin")
    {
        return None;
    }
    v.get("duration_ms")?.as_f64()
}

/// The median of `values` (mean of the middle two for an even count); 0 when empty.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_duration_of_admin_reloads_only() {
        let admin = r#"{"timestamp":"t","level":"INFO","cause":"Admin","version":2,"duration_ms":3.25,"message":"config reloaded"}"#;
        let file = r#"{"level":"INFO","cause":"FileChange","duration_ms":9.0,"message":"config reloaded"}"#;
        let other = r#"{"level":"INFO","message":"listener bound","address":"127.0.0.1:1"}"#;
        assert_eq!(logged_duration(admin), Some(3.25));
        assert_eq!(logged_duration(file), None);
        assert_eq!(logged_duration(other), None);
        assert_eq!(logged_duration("not json"), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
