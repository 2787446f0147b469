//! Fuzzes the plugin boundary from the host's side: decisions as a guest could return them
//! (any strings and bytes for header names and values, any `u16` status, any body), through
//! the host's validation (`levee_plugin_host::fuzzing`, the one place a plugin's raw output
//! becomes `http` types), then through what the gateway makes of them
//! (`levee::proxy::fuzzing`: the local response, the header mutation, `shed`, and a response
//! kept by `proceed-and-store` and served back by `serve-cached`). Checks, per
//! `docs/plugins.md`:
//!
//! - `status`: a status outside 200-599 (1xx are interim) makes the decision an
//!   `invalid-output` fault; any other is sent as given;
//! - `headers`: invalid names and values are dropped and counted, valid ones kept as given
//!   (names lower-cased), in order;
//! - `local`: a local response has the plugin's status and body, its headers, and
//!   `content-type: text/plain; charset=utf-8` when it has a body and no `content-type`;
//! - `framing`: a local response carries no hop-by-hop header and no `content-length` other
//!   than its body's length, so a plugin cannot frame the gateway's downstream connection;
//! - `mutation`: a header mutation removes, then sets, exactly as documented; it never sets a
//!   framing or connection header (those entries are dropped and counted);
//! - `shed`: the status, `retry-after: 1`, `x-levee-error: shed`;
//! - `stored`: a stored response is served back with its status and headers (without
//!   `content-length`, `transfer-encoding` and `age`; with `x-levee-cache: plugin`) and body.
//!
//! Input, split on `\n`: `DECISION N` (one of `proceed respond route-to response-proceed store
//! replace serve serve-cached shed retry degrade propagate`; N the status, ttl or delay), then
//! lines `name:value` (headers to set, or of the local response), `-name` (headers to remove),
//! and a line starting with `=`, whose rest up to the end of the input is the body (or the
//! cluster or key).

#![no_main]

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;
use levee::body::ProxyBody;
use levee::proxy::fuzzing::{local_response, shed_response, store_and_serve};
use levee_fuzz::fail;
use levee_plugin_host::fuzzing::{
    Converted, fallback_decision, request_action, response_action, wit,
};
use levee_plugin_host::{
    FallbackDecision, HeaderMutation, LocalResponse, RequestAction, ResponseAction,
};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

/// The hop-by-hop headers the gateway drops (`proxy/headers.rs`), which a local response must
/// not carry (`te` only as `te: trailers`, which the gateway keeps).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
});

struct Input {
    decision: String,
    number: u32,
    set: Vec<(String, Vec<u8>)>,
    remove: Vec<String>,
    body: Vec<u8>,
}

fn parse(data: &[u8]) -> Input {
    let (head, body) = match data.windows(2).position(|w| w == b"\n=") {
        Some(at) => (&data[..at], data[at + 2..].to_vec()),
        None => (data, Vec::new()),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut words = first.split(' ');
    let decision = words.next().unwrap_or_default().to_owned();
    let number = words.next().and_then(|n| n.parse().ok()).unwrap_or(200);
    let (mut set, mut remove) = (Vec::new(), Vec::new());
    for line in lines {
        if let Some(name) = line.strip_prefix(b"-") {
            remove.push(String::from_utf8_lossy(name).into_owned());
            continue;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &b""[..]),
        };
        set.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
    }
    Input {
        decision,
        number,
        set,
        remove,
        body,
    }
}

fn status(number: u32) -> u16 {
    u16::try_from(number).unwrap_or(u16::MAX)
}

/// The entries the host must keep: the valid ones, names lower-cased.
fn valid(list: &[(String, Vec<u8>)]) -> Vec<(HeaderName, HeaderValue)> {
    list.iter()
        .filter_map(|(n, v)| {
            Some((
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_bytes(v).ok()?,
            ))
        })
        .collect()
}

/// Headers a mutation may not set: the gateway frames every message from its body.
const FRAMING: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// The entries of `list` a header mutation keeps: valid, and not framing.
fn settable(list: &[(String, Vec<u8>)]) -> Vec<(HeaderName, HeaderValue)> {
    valid(list)
        .into_iter()
        .filter(|(name, _)| !FRAMING.contains(&name.as_str()))
        .collect()
}

/// Entries dropped: invalid ones, and for a mutation (`with_remove`) framing ones too.
fn invalid_count(input: &Input, with_remove: bool) -> u64 {
    let kept = if with_remove {
        settable(&input.set).len()
    } else {
        valid(&input.set).len()
    };
    let bad_set = input.set.len() - kept;
    let bad_remove = if with_remove {
        input
            .remove
            .iter()
            .filter(|n| HeaderName::from_bytes(n.as_bytes()).is_err())
            .count()
    } else {
        0
    };
    (bad_set + bad_remove) as u64
}

fn wit_mutation(input: &Input) -> wit::HeaderMutation {
    wit::HeaderMutation {
        set: input.set.clone(),
        remove: input.remove.clone(),
    }
}

fn wit_local(input: &Input) -> wit::LocalResponse {
    wit::LocalResponse {
        status: status(input.number),
        headers: input.set.clone(),
        body: input.body.clone(),
    }
}

fn body_bytes(response: Response<ProxyBody>) -> (http::response::Parts, Bytes) {
    let (parts, body) = response.into_parts();
    let bytes = RUNTIME
        .block_on(body.collect())
        .map(|c| c.to_bytes())
        .unwrap_or_else(|e| panic!("a full body failed: {e}"));
    (parts, bytes)
}

/// The host's verdict on the status and the header entries.
fn check_converted<T: std::fmt::Debug>(
    input: &Input,
    converted: &Converted<T>,
    status: Option<u16>,
    carries_headers: bool,
    with_remove: bool,
) {
    // A refused decision is thrown away whole: its headers are not looked at.
    let expected = if converted.decision.is_ok() && carries_headers {
        invalid_count(input, with_remove)
    } else {
        0
    };
    if converted.dropped != expected {
        fail(
            "headers",
            format_args!("{} entries dropped, {expected} invalid", converted.dropped),
        );
    }
    let in_range = status.is_none_or(|s| (200..=599).contains(&s));
    match (&converted.decision, in_range) {
        (Ok(_), true) | (Err(_), false) => {}
        (Ok(decision), false) => fail(
            "status",
            format_args!("status {status:?} accepted: {decision:?}"),
        ),
        (Err(e), true) => fail("status", format_args!("status {status:?} refused: {e}")),
    }
}

fn check_mutation(input: &Input, mutation: &HeaderMutation) {
    if mutation.set != settable(&input.set) {
        fail(
            "headers",
            format_args!("set {:?} from {:?}", mutation.set, input.set),
        );
    }
    let removed: Vec<HeaderName> = input
        .remove
        .iter()
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    if mutation.remove != removed {
        fail(
            "headers",
            format_args!("remove {:?} from {:?}", mutation.remove, input.remove),
        );
    }
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "example.com"),
        ("x-forwarded-for", "192.0.2.1"),
        ("x-request-id", "id"),
        ("accept", "text/html"),
        ("accept", "*/*"),
        ("content-type", "application/json"),
    ] {
        headers.append(name, HeaderValue::from_static(value));
    }
    let before = headers.clone();
    mutation.apply(&mut headers);
    for name in before
        .keys()
        .chain(mutation.remove.iter())
        .chain(mutation.set.iter().map(|(n, _)| n))
    {
        let set: Vec<&HeaderValue> = mutation
            .set
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        let expected: Vec<&HeaderValue> = if !set.is_empty() {
            set
        } else if mutation.remove.contains(name) {
            Vec::new()
        } else {
            before.get_all(name).iter().collect()
        };
        let got: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
        if got != expected {
            fail(
                "mutation",
                format_args!("`{name}` is {got:?}, expected {expected:?} after {mutation:?}"),
            );
        }
    }
}

fn check_local(input: &Input, local: LocalResponse) {
    let headers = local.headers.clone();
    let (parts, body) = body_bytes(local_response(local));
    if parts.status.as_u16() != status(input.number) || body != input.body {
        fail(
            "local",
            format_args!(
                "status {} and {} body bytes sent for {} and {}",
                parts.status,
                body.len(),
                input.number,
                input.body.len()
            ),
        );
    }
    // Headers the plugin's `connection` names are hop-by-hop too.
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| *n == "connection")
        .filter_map(|(_, v)| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let plain = HeaderValue::from_static("text/plain; charset=utf-8");
    let content_types: Vec<&HeaderValue> = headers
        .iter()
        .filter(|(n, _)| *n == "content-type" && !named.iter().any(|n| n == "content-type"))
        .map(|(_, v)| v)
        .collect();
    let expected_type = if content_types.is_empty() && !body.is_empty() {
        vec![&plain]
    } else {
        content_types
    };
    if parts
        .headers
        .get_all("content-type")
        .iter()
        .collect::<Vec<_>>()
        != expected_type
    {
        fail(
            "local",
            format_args!("content-type {:?}", parts.headers.get_all("content-type")),
        );
    }
    for name in HOP_BY_HOP {
        let te_trailers = name == "te"
            && parts
                .headers
                .get_all(name)
                .iter()
                .eq([&HeaderValue::from_static("trailers")]);
        if parts.headers.contains_key(name) && !te_trailers {
            fail(
                "framing",
                format_args!("a local response carries `{name}`: {:?}", parts.headers),
            );
        }
    }
    let length = body.len().to_string();
    if parts
        .headers
        .get_all("content-length")
        .iter()
        .any(|v| v.as_bytes() != length.as_bytes())
    {
        fail(
            "framing",
            format_args!(
                "a local response of {length} bytes says {:?}",
                parts.headers.get_all("content-length")
            ),
        );
    }
    // Every other header the plugin gave is sent as given, values in order.
    for (name, _) in &headers {
        if HOP_BY_HOP.contains(&name.as_str())
            || named.iter().any(|n| n == name.as_str())
            || name == "content-length"
            || name == "content-type"
        {
            continue;
        }
        let given: Vec<&HeaderValue> = headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        if parts.headers.get_all(name).iter().collect::<Vec<_>>() != given {
            fail(
                "local",
                format_args!("`{name}` not sent as given: {:?}", parts.headers),
            );
        }
    }
}

fn check_stored(input: &Input, mutation: &HeaderMutation) {
    let status =
        StatusCode::from_u16(status(input.number).clamp(200, 599)).unwrap_or(StatusCode::OK);
    let mut headers = HeaderMap::new();
    headers.insert("content-length", HeaderValue::from(input.body.len()));
    headers.insert("age", HeaderValue::from_static("3"));
    mutation.apply(&mut headers);
    let Some(served) = store_and_serve(status, &headers, Bytes::from(input.body.clone())) else {
        fail("stored", format_args!("a small response was not stored"));
        return;
    };
    let (parts, body) = body_bytes(served);
    if parts.status != status || body != input.body {
        fail(
            "stored",
            format_args!(
                "served {} with {} bytes, stored {status} with {}",
                parts.status,
                body.len(),
                input.body.len()
            ),
        );
    }
    let mut expected = headers.clone();
    expected.remove("content-length");
    expected.remove("transfer-encoding");
    expected.remove("age");
    expected.insert("x-levee-cache", HeaderValue::from_static("plugin"));
    for name in expected.keys().chain(parts.headers.keys()) {
        let (want, got): (Vec<_>, Vec<_>) = (
            expected.get_all(name).iter().collect(),
            parts.headers.get_all(name).iter().collect(),
        );
        if want != got {
            fail(
                "stored",
                format_args!("`{name}` served as {got:?}, stored {want:?}"),
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = parse(data);
    match input.decision.as_str() {
        "proceed" => {
            let converted = request_action(wit::RequestAction::Proceed(wit_mutation(&input)));
            check_converted(&input, &converted, None, true, true);
            if let Ok(RequestAction::Proceed(mutation)) = &converted.decision {
                check_mutation(&input, mutation);
            }
        }
        "route-to" => {
            let cluster = String::from_utf8_lossy(&input.body).into_owned();
            let converted = request_action(wit::RequestAction::RouteTo(cluster.clone()));
            if !matches!(&converted.decision, Ok(RequestAction::RouteTo(c)) if *c == cluster) {
                fail("route-to", format_args!("{:?}", converted.decision));
            }
        }
        "response-proceed" => {
            let converted = response_action(wit::ResponseAction::Proceed(wit_mutation(&input)));
            check_converted(&input, &converted, None, true, true);
            if let Ok(ResponseAction::Proceed(mutation)) = &converted.decision {
                check_mutation(&input, mutation);
            }
        }
        "store" => {
            let spec = wit::StoreSpec {
                mutation: wit_mutation(&input),
                key: "key".into(),
                ttl_seconds: input.number,
            };
            let converted = response_action(wit::ResponseAction::ProceedAndStore(spec));
            check_converted(&input, &converted, None, true, true);
            if let Ok(ResponseAction::ProceedAndStore(spec)) = &converted.decision {
                check_mutation(&input, &spec.mutation);
                check_stored(&input, &spec.mutation);
            }
        }
        "replace" => {
            let converted = response_action(wit::ResponseAction::Replace(wit_local(&input)));
            check_converted(&input, &converted, Some(status(input.number)), true, false);
            if let Ok(ResponseAction::Replace(local)) = converted.decision {
                check_local(&input, local);
            }
        }
        "serve" => {
            let converted = fallback_decision(wit::FallbackDecision::Serve(wit_local(&input)));
            check_converted(&input, &converted, Some(status(input.number)), true, false);
            if let Ok(FallbackDecision::Serve(local)) = converted.decision {
                check_local(&input, local);
            }
        }
        "shed" => {
            let converted = fallback_decision(wit::FallbackDecision::Shed(status(input.number)));
            check_converted(&input, &converted, Some(status(input.number)), false, false);
            if let Ok(FallbackDecision::Shed(code)) = converted.decision {
                let response = shed_response(code);
                let headers = response.headers();
                if response.status() != code
                    || headers.get("retry-after").is_none_or(|v| v != "1")
                    || headers.get("x-levee-error").is_none_or(|v| v != "shed")
                {
                    fail(
                        "shed",
                        format_args!("{} {headers:?} for shed({code})", response.status()),
                    );
                }
            }
        }
        "retry" | "degrade" | "serve-cached" | "propagate" => {
            let text = String::from_utf8_lossy(&input.body).into_owned();
            let raw = match input.decision.as_str() {
                "retry" => wit::FallbackDecision::Retry(wit::RetrySpec {
                    cluster: (!text.is_empty()).then(|| text.clone()),
                    delay_ms: input.number,
                }),
                "degrade" => wit::FallbackDecision::Degrade(text),
                "serve-cached" => wit::FallbackDecision::ServeCached(text),
                _ => wit::FallbackDecision::Propagate,
            };
            let converted = fallback_decision(raw);
            if converted.decision.is_err() || converted.dropped != 0 {
                fail("status", format_args!("{converted:?}"));
            }
        }
        // `respond`, and anything else.
        _ => {
            let converted = request_action(wit::RequestAction::Respond(wit_local(&input)));
            check_converted(&input, &converted, Some(status(input.number)), true, false);
            if let Ok(RequestAction::Respond(local)) = converted.decision {
                check_local(&input, local);
            }
        }
    }
});
