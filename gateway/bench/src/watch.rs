//! The admin watcher: polls Levee's `GET /clusters` and records how one endpoint's state moves.
//!
//! The chaos scenario times how long the gateway takes to stop sending to a killed upstream and
//! to send to it again once it is back. The gateway's own view is the `/clusters` JSON: an
//! endpoint's `usable` (what the balancer reads: active-healthy and not ejected), its active
//! `health` and its `ejected` reason. Polling it every 50 to 100 ms bounds each measured time
//! to within one poll interval plus one admin round trip, which is precise enough for
//! detection times of tens of milliseconds to seconds.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// Time allowed for one `/clusters` call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// One endpoint as `/clusters` showed it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observation {
    /// When the answer arrived, from the start of the scenario.
    pub(crate) at: Duration,
    /// Whether the balancer may pick the endpoint.
    pub(crate) usable: bool,
    /// The active health-check state: `healthy`, `unhealthy`, `unchecked` or `unknown`.
    pub(crate) health: String,
    /// Why the endpoint is ejected (the detector's name), when it is.
    pub(crate) ejected: Option<String>,
}

/// Polls `GET /clusters` on `admin` every `every` until `stop` turns true, and returns what it
/// showed of `endpoint` each time, in order. Polls that fail (the gateway is busy, the
/// connection dropped) are skipped and retried on a new connection; the scenario reports the
/// gaps as wider bounds, not as errors.
pub(crate) async fn watch(
    admin: SocketAddr,
    endpoint: SocketAddr,
    start: Instant,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<Observation> {
    let mut observations = Vec::new();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return observations;
        }
        let call = tokio::time::timeout(CALL_TIMEOUT, get(admin, &mut sender, "/clusters")).await;
        let Some(json) = call
            .ok()
            .and_then(Result::ok)
            .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
        else {
            sender = None;
            continue;
        };
        if let Some(mut observation) = find_endpoint(&json, endpoint) {
            observation.at = start.elapsed();
            observations.push(observation);
        }
    }
}

/// One `GET /clusters` on a new connection, parsed.
pub(crate) async fn fetch_clusters(admin: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let body = fetch(admin, "/clusters").await?;
    serde_json::from_slice(&body).context("parsing /clusters")
}

/// One `GET path` on the admin listener, on a new connection: the body of a 2xx answer.
pub(crate) async fn fetch(admin: SocketAddr, path: &str) -> anyhow::Result<Bytes> {
    tokio::time::timeout(CALL_TIMEOUT, get(admin, &mut None, path))
        .await
        .with_context(|| format!("{path} timed out"))?
}

/// One `GET path` on the kept connection (a new one if there is none): the body of a 2xx answer.
async fn get(
    admin: SocketAddr,
    sender: &mut Option<SendRequest<Empty<Bytes>>>,
    path: &str,
) -> anyhow::Result<Bytes> {
    let ready = match sender.as_mut() {
        Some(s) => s.ready().await.is_ok(),
        None => false,
    };
    if !ready {
        let stream = TcpStream::connect(admin)
            .await
            .context("connecting to admin")?;
        let (s, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        *sender = Some(s);
    }
    let s = sender.as_mut().context("no admin connection")?;
    let request = http::Request::get(path)
        .header(http::header::HOST, admin.to_string())
        .body(Empty::new())?;
    let response = s.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{path} answered {status}");
    }
    Ok(body)
}

/// `endpoint` in a `/clusters` answer (`{ "clusters": [ { "endpoints": [ { "address",
/// "usable", "health", "ejected": { "reason" } | null } ] } ] }`), with `at` zero.
pub(crate) fn find_endpoint(json: &serde_json::Value, endpoint: SocketAddr) -> Option<Observation> {
    let address = endpoint.to_string();
    json.get("clusters")?
        .as_array()?
        .iter()
        .filter_map(|c| c.get("endpoints")?.as_array())
        .flatten()
        .find(|e| e.get("address").and_then(|a| a.as_str()) == Some(address.as_str()))
        .map(|e| Observation {
            at: Duration::ZERO,
            usable: e
                .get("usable")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            health: e
                .get("health")
                .and_then(|h| h.as_str())
                .unwrap_or("unknown")
                .to_string(),
            ejected: e
                .get("ejected")
                .and_then(|j| j.get("reason"))
                .and_then(|r| r.as_str())
                .map(str::to_string),
        })
}

/// The first observation at or after `from` for which `pick` holds, if any.
pub(crate) fn first_after(
    observations: &[Observation],
    from: Duration,
    pick: impl Fn(&Observation) -> bool,
) -> Option<&Observation> {
    observations.iter().find(|o| o.at >= from && pick(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(at_ms: u64, usable: bool, health: &str) -> Observation {
        Observation {
            at: Duration::from_millis(at_ms),
            usable,
            health: health.to_string(),
            ejected: None,
        }
    }

    #[test]
    fn finds_the_endpoint_by_address_in_any_cluster() {
        let json = serde_json::json!({ "clusters": [
            { "name": "a", "endpoints": [
                { "address": "127.0.0.1:1", "usable": true, "health": "healthy", "ejected": null },
            ] },
            { "name": "b", "endpoints": [
                { "address": "127.0.0.1:2", "usable": true, "health": "healthy", "ejected": null },
                { "address": "127.0.0.1:3", "usable": false, "health": "healthy",
                  "ejected": { "reason": "consecutive-gateway-failure", "remaining_ms": 29000 } },
            ] },
        ] });
        let found = find_endpoint(&json, "127.0.0.1:3".parse().unwrap()).unwrap();
        assert!(!found.usable);
        assert_eq!(found.health, "healthy");
        assert_eq!(
            found.ejected.as_deref(),
            Some("consecutive-gateway-failure")
        );
        let found = find_endpoint(&json, "127.0.0.1:1".parse().unwrap()).unwrap();
        assert!(found.usable);
        assert_eq!(found.ejected, None);
        assert_eq!(find_endpoint(&json, "127.0.0.1:4".parse().unwrap()), None);
        assert_eq!(
            find_endpoint(&serde_json::json!({}), "127.0.0.1:1".parse().unwrap()),
            None
        );
    }

    #[test]
    fn first_after_skips_observations_before_the_event() {
        let seen = [
            observation(100, false, "healthy"),
            observation(200, true, "healthy"),
            observation(300, false, "unhealthy"),
            observation(400, true, "healthy"),
        ];
        let unusable = first_after(&seen, Duration::from_millis(150), |o| !o.usable);
        assert_eq!(unusable.map(|o| o.at), Some(Duration::from_millis(300)));
        let usable = first_after(&seen, Duration::from_millis(301), |o| o.usable);
        assert_eq!(usable.map(|o| o.at), Some(Duration::from_millis(400)));
        assert_eq!(
            first_after(&seen, Duration::from_millis(401), |o| !o.usable),
            None
        );
    }
}
