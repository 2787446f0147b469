//! An open-loop client: requests sent on a fixed schedule, whatever earlier answers do.
//!
//! The chaos scenario needs the due time, the status and the latency of every single request,
//! transport failures included, to split them into the phases before, during and after a fault.
//! wrk is closed loop (a stalled target is simply sent less), and h2load `--rps` paces each
//! connection and logs only the requests that got an answer, so the harness sends this load
//! itself. Request `i` is due at `start + i / rate` and is sent then, on an idle pooled
//! connection or a new one, however long the requests before it take. Its latency is counted
//! from when it was due, not from when it went out (as wrk2 does), so a stall of the harness or
//! of the target is counted in full: no coordinated omission.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Idle connections the client keeps. Well above what the scenario's rates need in flight at
/// once, so a steady run reuses connections instead of opening one per request.
const MAX_IDLE: usize = 256;

/// What one request of the schedule ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An answer with this status, its body read to the end.
    Status(u16),
    /// No answer within the request timeout.
    Timeout,
    /// The connection failed: refused, reset, or closed before the answer was complete.
    Transport,
}

/// One request of the schedule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// When it was due, from the start of the schedule.
    pub(crate) due: Duration,
    /// From when it was due to the end of its answer (or its failure).
    pub(crate) latency: Duration,
    /// From when it was sent to the end of its answer: `latency` without the wait for the
    /// client's timer (tokio's timer has a 1 ms resolution, so a request goes out up to 1 ms
    /// after it was due even when nothing queues). For comparing targets whose answers are far
    /// quicker than that, at a rate where nothing queues.
    pub(crate) service: Duration,
    /// How it ended.
    pub(crate) outcome: Outcome,
}

/// The fixed-rate schedule of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Requests per second, in total.
    pub(crate) rate: f64,
    /// Length of the schedule: the last request is due just before `start + duration`.
    pub(crate) duration: Duration,
    /// Time allowed for one request, from its send to the end of its answer.
    pub(crate) timeout: Duration,
}

// === impl Outcome ===

impl Outcome {
    /// Whether the request counts as served: a 2xx answer.
    pub(crate) fn is_success(self) -> bool {
        matches!(self, Outcome::Status(status) if (200..300).contains(&status))
    }
}

// === impl Schedule ===

impl Schedule {
    /// Requests in the schedule.
    pub(crate) fn len(&self) -> u64 {
        (self.duration.as_secs_f64() * self.rate).round() as u64
    }

    /// When request `i` is due, from the start. Computed from `i` rather than by adding up a
    /// period, so rounding never drifts the schedule.
    pub(crate) fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// Sends `GET url` on `schedule`, starting at `start`, and returns every request's sample, in
/// no particular order. Fails only if the client cannot be set up or a request task panics;
/// failed requests are samples like any other.
pub(crate) async fn run(
    url: &str,
    schedule: Schedule,
    start: Instant,
) -> anyhow::Result<Vec<Sample>> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(MAX_IDLE)
        .build(connector);

    let total = schedule.len();
    let mut samples = Vec::with_capacity(total as usize);
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let due = start + schedule.due(i);
        tokio::time::sleep_until(due).await;
        let client = client.clone();
        let uri = uri.clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            let outcome = tokio::time::timeout(schedule.timeout, one(&client, uri))
                .await
                .unwrap_or(Outcome::Timeout);
            Sample {
                due: due - start,
                latency: due.elapsed(),
                service: sent.elapsed(),
                outcome,
            }
        });
        // Finished requests are collected as the schedule goes, so the set holds only the
        // requests in flight.
        while let Some(done) = tasks.try_join_next() {
            samples.push(done.context("a request task panicked")?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        samples.push(done.context("a request task panicked")?);
    }
    Ok(samples)
}

/// One request: its answer's status once the body is read, or how it failed.
async fn one(client: &Client<HttpConnector, Empty<Bytes>>, uri: http::Uri) -> Outcome {
    let request = match http::Request::get(uri).body(Empty::new()) {
        Ok(request) => request,
        Err(_) => return Outcome::Transport,
    };
    let Ok(response) = client.request(request).await else {
        return Outcome::Transport;
    };
    let status = response.status().as_u16();
    match response.into_body().collect().await {
        Ok(_) => Outcome::Status(status),
        Err(_) => Outcome::Transport,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    /// A server on 127.0.0.1:0 that answers every request with `status`.
    async fn server(status: u16) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| async move {
                        let mut response = hyper::Response::new(Full::new(Bytes::from("x")));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(response)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        address
    }

    fn schedule(rate: f64, millis: u64) -> Schedule {
        Schedule {
            rate,
            duration: Duration::from_millis(millis),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn schedule_spaces_requests_evenly_without_drift() {
        let s = schedule(3000.0, 10_000);
        assert_eq!(s.len(), 30_000);
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(3000), Duration::from_secs(1));
        assert_eq!(s.due(29_999).as_micros(), 9_999_666);
    }

    #[test]
    fn only_2xx_answers_are_successes() {
        assert!(Outcome::Status(200).is_success());
        assert!(Outcome::Status(204).is_success());
        assert!(!Outcome::Status(503).is_success());
        assert!(!Outcome::Status(304).is_success());
        assert!(!Outcome::Timeout.is_success());
        assert!(!Outcome::Transport.is_success());
    }

    #[tokio::test]
    async fn sends_every_scheduled_request_and_records_its_status() {
        let address = server(200).await;
        let s = schedule(1000.0, 50);
        let mut samples = run(&format!("http://{address}/"), s, Instant::now())
            .await
            .unwrap();
        assert_eq!(samples.len(), 50);
        samples.sort_by_key(|s| s.due);
        for (i, sample) in samples.iter().enumerate() {
            assert_eq!(sample.due, s.due(i as u64));
            assert_eq!(sample.outcome, Outcome::Status(200));
            assert!(sample.service <= sample.latency);
            assert!(sample.service > Duration::ZERO);
        }
    }

    #[tokio::test]
    async fn records_error_statuses_and_refused_connections() {
        let address = server(502).await;
        let samples = run(
            &format!("http://{address}/"),
            schedule(1000.0, 5),
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(samples.len(), 5);
        assert!(samples.iter().all(|s| s.outcome == Outcome::Status(502)));

        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let samples = run(
            &format!("http://{closed}/"),
            schedule(1000.0, 5),
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(samples.len(), 5);
        assert!(samples.iter().all(|s| s.outcome == Outcome::Transport));
    }
}
