//! The hostile-input suite: the attacks the gateway withstands today, pinned so that they keep
//! being withstood. Request smuggling in its many spellings, HTTP/2 floods (rapid reset,
//! CONTINUATION, HPACK expansion, too many streams), slowloris on the head and on the body, and
//! size bombs.
//!
//! Every case runs against the real gateway with small listener limits, in front of a raw
//! upstream ([`Recorder`]) that frames strictly what it receives, so a request smuggled past
//! the gateway would show up there as a request nobody was answered for, or as bytes that frame
//! nothing. After every case a normal request on a fresh connection must still get `200`.
//!
//! Every read has a timeout; the slow clients send a byte per 200 ms and are expected to be cut
//! off well before they would finish on their own.

use std::net::SocketAddr;
use std::time::Duration;

use levee_tests::h2frames::{self, code, flag, kind};
use levee_tests::recorder::Recorder;
use levee_tests::tcp::{self, RawOutcome};
use levee_tests::{Server, TestGateway, bounded, client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a client waits for more bytes before deciding the gateway has said all it will.
/// Long for loopback; a smuggled second response would follow the first at once.
const QUIET: Duration = Duration::from_secs(1);

/// The listener limits of every case: small, so that the timeouts and size limits are reached
/// quickly.
const LIMITS: &str = "    limits:
      header_read_timeout: 1s
      max_header_size: 8KiB
      max_headers: 30
      http2_max_concurrent_streams: 4
      http2_max_pending_resets: 20
";

/// A gateway with [`LIMITS`] and one route to `upstream` with a 2 s timeout and a 1 KiB body
/// limit.
async fn gateway(upstream: SocketAddr) -> TestGateway {
    let yaml = format!(
        "listeners:
  - name: public
    address: 127.0.0.1:0
{LIMITS}admin:
  address: 127.0.0.1:0
routes:
  - name: all
    match:
      path_prefix: /
    cluster: backend
    timeout: 2s
    max_body_size: 1KiB
clusters:
  - name: backend
    endpoints:
      - address: {upstream}
shutdown:
  drain_delay: 0s
  drain_timeout: 1s
log:
  access_log: false
"
    );
    TestGateway::start(&yaml).await.expect("gateway starts")
}

/// A normal request on a fresh connection still gets `200`.
async fn assert_serves(addr: SocketAddr, case: &str) {
    let reply = client::get(&client::http1(), &client::url(addr, "/still-ok"))
        .await
        .unwrap_or_else(|e| panic!("{case}: a normal request afterwards failed: {e}"));
    assert_eq!(reply.status, 200, "{case}: a normal request afterwards");
}

// === HTTP/1.1 smuggling ===

/// The request a smuggling attempt hides; the upstream must never see it.
const HIDDEN: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// What a smuggling case must come to.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Refused: `400` (or another 4xx/5xx of the gateway's own) or a close, and nothing reaches
    /// the upstream.
    Refused,
    /// Refused once the body turned out bad: the head was already on its way upstream, so the
    /// upstream saw a request start but its body cut short, never a complete request.
    Aborted,
    /// Forwarded as exactly these well-framed requests (targets, in order).
    Forwarded(&'static [&'static str]),
}

/// `POST /` with `headers` (CRLF-terminated lines) and a body in which [`HIDDEN`] follows an
/// empty chunked body, with a Content-Length that covers all of it when `with_length`.
fn hiding(headers: &str, with_length: bool) -> Vec<u8> {
    let body = format!("0\r\n\r\n{HIDDEN}");
    let length = if with_length {
        format!("Content-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    format!("POST / HTTP/1.1\r\nHost: x\r\n{length}{headers}\r\n{body}").into_bytes()
}

fn raw(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// The smuggling table: each case's name, the bytes sent on one connection, and what it must
/// come to. Whatever the outcome, the upstream never sees `/smuggled` and never receives bytes
/// it cannot frame.
fn smuggling_cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::{Aborted, Forwarded, Refused};
    vec![
        // Transfer-Encoding beside Content-Length: hyper frames by TE alone, drops CL, and
        // closes after the response, so the hidden request is never read as one.
        (
            "cl_and_te",
            hiding("Transfer-Encoding: chunked\r\n", true),
            Forwarded(&["/"]),
        ),
        (
            "te_xchunked_with_cl",
            hiding("Transfer-Encoding: xchunked\r\n", true),
            Refused,
        ),
        (
            "te_xchunked",
            hiding("Transfer-Encoding: xchunked\r\n", false),
            Refused,
        ),
        (
            "te_chunked_identity",
            hiding("Transfer-Encoding: chunked, identity\r\n", true),
            Refused,
        ),
        (
            "te_identity_then_chunked_header",
            hiding(
                "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
                true,
            ),
            Refused,
        ),
        // A transfer coding other than exactly one `chunked`, `chunked` twice included, is
        // 501 (nginx answers 400 to the duplicate): nothing reaches the upstream.
        (
            "te_duplicate",
            hiding(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                true,
            ),
            Refused,
        ),
        (
            "te_space_before_colon",
            hiding("Transfer-Encoding : chunked\r\n", true),
            Refused,
        ),
        (
            "te_tab_before_colon",
            hiding("Transfer-Encoding\t: chunked\r\n", true),
            Refused,
        ),
        (
            "te_leading_whitespace_in_value",
            hiding("Transfer-Encoding:  \tchunked\r\n", true),
            Forwarded(&["/"]),
        ),
        (
            "te_folded_onto_previous_header",
            hiding("X-Pad: a\r\n Transfer-Encoding: chunked\r\n", true),
            Refused,
        ),
        (
            "te_on_http_1_0",
            {
                let body = format!("0\r\n\r\n{HIDDEN}");
                raw(&format!(
                    "POST / HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
                    body.len()
                ))
            },
            Refused,
        ),
        (
            "two_content_lengths_differ",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            )),
            Refused,
        ),
        (
            "content_length_list",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0, {}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            )),
            Refused,
        ),
        (
            "content_length_plus_sign",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +{}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            )),
            Refused,
        ),
        (
            "content_length_negative",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{HIDDEN}"
            )),
            Refused,
        ),
        (
            "content_length_hex",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x{:x}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            )),
            Refused,
        ),
        (
            "content_length_inner_space",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 0\r\n\r\n{HIDDEN}"
            )),
            Refused,
        ),
        // Whitespace around the value is optional whitespace (RFC 9110 §5.5): one framing.
        (
            "content_length_padded",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \t{} \r\n\r\n{HIDDEN}",
                HIDDEN.len()
            )),
            Forwarded(&["/"]),
        ),
        (
            "chunk_size_overflow",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 1000000000000000000000005\r\nhello\r\n0\r\n\r\n{HIDDEN}"
            )),
            Refused,
        ),
        (
            "chunk_size_negative",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 -5\r\nhello\r\n0\r\n\r\n{HIDDEN}"
            )),
            Refused,
        ),
        (
            "chunk_size_0x",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 0x5\r\nhello\r\n0\r\n\r\n{HIDDEN}"
            )),
            Refused,
        ),
        // Extensions are allowed and dropped; the upstream gets clean chunks, then the
        // pipelined request is a real one the client sent (and is answered).
        (
            "chunk_extension",
            raw(
                "POST /ext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;name=value\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
            Forwarded(&["/ext", "/next"]),
        ),
        (
            "chunk_extension_with_bare_lf",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;a\nb\r\nhello\r\n0\r\n\r\n{HIDDEN}"
            )),
            Refused,
        ),
        (
            "chunk_data_overrun",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhelloXX0\r\n\r\n{HIDDEN}"
            )),
            Aborted,
        ),
        (
            "bare_lf_chunk_framing",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\nhello\n0\n\n{HIDDEN}"
            )),
            Refused,
        ),
        // httparse accepts bare LF line endings in the head; the upstream still gets one
        // request, written with CRLF.
        (
            "bare_lf_head",
            raw("GET /lf HTTP/1.1\nHost: x\n\n"),
            Forwarded(&["/lf"]),
        ),
        (
            "obs_fold",
            raw("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
            Refused,
        ),
        (
            "nul_in_header_value",
            raw("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
            Refused,
        ),
        (
            "cr_in_header_value",
            raw(&format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: {}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            )),
            Refused,
        ),
        (
            "space_in_header_name",
            raw(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent Length: {}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            )),
            Refused,
        ),
        (
            "request_line_double_space",
            raw("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Refused,
        ),
        (
            "request_line_trailing_space",
            raw("GET / HTTP/1.1 \r\nHost: x\r\n\r\n"),
            Refused,
        ),
        ("http_0_9", raw("GET /\r\n\r\n"), Refused),
        // A body framed by Content-Length, then a second request on the same connection: both
        // are real requests and both are answered, each framed on its own.
        (
            "pipelined_after_body",
            raw(
                "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                 GET /second HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
            Forwarded(&["/first", "/second"]),
        ),
    ]
}

/// Writes `bytes` and reads responses until the gateway closes or goes [`QUIET`]. Returns the
/// responses and whether the connection was closed.
async fn send_and_read_all(addr: SocketAddr, bytes: &[u8]) -> (Vec<tcp::RawResponse>, bool) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The gateway may answer and close before reading everything; a failed write is fine.
    let _ = stream.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let closed = loop {
        match tokio::time::timeout(QUIET, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    (split_responses(&buf), closed)
}

/// Splits raw bytes into the responses they hold (every gateway and recorder response here
/// has a Content-Length).
fn split_responses(mut bytes: &[u8]) -> Vec<tcp::RawResponse> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let Some(status) = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
        else {
            break;
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let body_end = (end + 4 + length).min(bytes.len());
        out.push(tcp::RawResponse {
            status,
            headers,
            body: bytes[end + 4..body_end].to_vec(),
        });
        bytes = &bytes[body_end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_are_refused_or_forwarded_as_exactly_the_requests_sent() {
    bounded(async {
        let mut failures = Vec::new();
        for (case, bytes, expect) in smuggling_cases() {
            let recorder = Recorder::run().await;
            let gateway = gateway(recorder.addr()).await;
            let addr = gateway.addr("public");

            let (responses, closed) = send_and_read_all(addr, &bytes).await;
            let seen = recorder.requests();
            let targets: Vec<String> = seen
                .iter()
                .map(|r| r.request_line.split(' ').nth(1).unwrap_or_default().to_string())
                .collect();
            let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
            let answered_by_upstream = responses
                .iter()
                .filter(|r| r.header("x-recorded").is_some())
                .count();
            let what = format!(
                "{case}: sent {:?}\n  client got {statuses:?} (closed: {closed}), upstream saw {targets:?}, malformed {:?}, incomplete {:?}",
                String::from_utf8_lossy(&bytes),
                recorder
                    .malformed()
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect::<Vec<_>>(),
                recorder.incomplete(),
            );

            let smuggled = targets.iter().any(|t| t.contains("smuggled"))
                || !recorder.malformed().is_empty()
                || seen.len() != answered_by_upstream;
            let as_expected = match expect {
                Expect::Refused => {
                    seen.is_empty()
                        && recorder.incomplete().is_empty()
                        && responses.iter().all(|r| r.status >= 400)
                        && (closed || responses.is_empty())
                }
                Expect::Aborted => {
                    seen.is_empty()
                        && statuses == [400]
                        && closed
                }
                Expect::Forwarded(want) => targets == want,
            };
            if smuggled || !as_expected {
                failures.push(format!("{what}\n  expected {expect:?}"));
            }
            assert_serves(addr, case).await;
            gateway.shutdown().await.expect("shutdown");
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    })
    .await;
}

/// The oracle itself: sent straight to the recorder, with no gateway to refuse it, the
/// hiding request does deliver `/smuggled`, and a double framing is flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_sees_what_a_transparent_proxy_would_smuggle() {
    bounded(async {
        let recorder = Recorder::run().await;
        let (responses, _) = send_and_read_all(
            recorder.addr(),
            &hiding("Transfer-Encoding: chunked\r\n", false),
        )
        .await;
        assert_eq!(responses.len(), 2);
        let lines: Vec<String> = recorder
            .requests()
            .into_iter()
            .map(|r| r.request_line)
            .collect();
        assert_eq!(lines, ["POST / HTTP/1.1", "GET /smuggled HTTP/1.1"]);

        let recorder = Recorder::run().await;
        send_and_read_all(
            recorder.addr(),
            &hiding("Transfer-Encoding: chunked\r\n", true),
        )
        .await;
        assert!(recorder.requests().is_empty());
        assert_eq!(
            recorder.malformed().len(),
            1,
            "CL and TE together are flagged"
        );
    })
    .await;
}

// === HTTP/2 floods ===

/// A gateway for the HTTP/2 cases, in front of an ordinary upstream.
async fn h2_gateway() -> (TestGateway, levee_tests::Upstream) {
    let upstream = Server::http1().run().await;
    let gateway = gateway(upstream.addr()).await;
    (gateway, upstream)
}

/// The quiet period after which an HTTP/2 client decides the gateway has stopped talking.
const H2_QUIET: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_cut_off_with_enhance_your_calm() {
    bounded(async {
        let (gateway, upstream) = h2_gateway().await;
        let addr = gateway.addr("public");
        let mut tcp = h2frames::handshake(addr).await;

        // 1 000 streams opened and cancelled at once: far beyond `http2_max_pending_resets`.
        const STREAMS: u32 = 1_000;
        let mut flood = Vec::new();
        for i in 0..STREAMS {
            let stream = 1 + 2 * i;
            let block = h2frames::get_block("/reset", "x");
            flood.extend(
                h2frames::headers(stream, flag::END_HEADERS | flag::END_STREAM, block).encode(),
            );
            flood.extend(h2frames::rst_stream(stream, code::CANCEL).encode());
        }
        let (mut read, mut write) = tcp.split();
        let (_, ending) = tokio::join!(
            write.write_all(&flood),
            h2frames::read_until_closed(&mut read, H2_QUIET)
        );
        let h2frames::Ending { frames, closed } = ending;
        let goaway = frames.iter().find(|f| f.kind == kind::GOAWAY);
        assert!(closed, "connection left open after a rapid-reset flood");
        assert_eq!(
            goaway.and_then(h2frames::Frame::error_code),
            Some(code::ENHANCE_YOUR_CALM),
            "frames: {:?}",
            frames
                .iter()
                .map(|f| (f.kind, f.stream))
                .collect::<Vec<_>>()
        );
        // Today the GOAWAY names stream 41: the 21st reset, one past the limit of 20.
        let last_stream = goaway.map(|g| {
            u32::from_be_bytes([g.payload[0], g.payload[1], g.payload[2], g.payload[3]])
                & 0x7fff_ffff
        });
        assert!(
            last_stream.is_some_and(|id| id < 2 * STREAMS - 1),
            "the gateway processed every stream before GOAWAY (last stream {last_stream:?})"
        );
        let requests = upstream.requests();
        assert!(
            requests < STREAMS as usize / 2,
            "{requests} of {STREAMS} reset streams reached the upstream"
        );
        assert_serves(addr, "rapid reset").await;
    })
    .await;
}

/// Writes HEADERS without END_HEADERS and then up to `frames` CONTINUATION frames carrying
/// `piece` each, while reading; returns how the connection ended and how many CONTINUATION
/// frames went out before the gateway closed or stopped reading.
async fn continuation_flood(
    addr: SocketAddr,
    piece: Vec<u8>,
    frames: usize,
) -> (h2frames::Ending, usize) {
    let mut tcp = h2frames::handshake(addr).await;
    let (mut read, mut write) = tcp.split();
    let writer = async {
        let mut written = 0;
        let first = h2frames::headers(1, flag::END_STREAM, h2frames::get_block("/cont", "x"));
        if write.write_all(&first.encode()).await.is_err() {
            return written;
        }
        let frame = h2frames::continuation(1, 0, piece).encode();
        for _ in 0..frames {
            match tokio::time::timeout(H2_QUIET, write.write_all(&frame)).await {
                Ok(Ok(())) => written += 1,
                // The gateway closed, or stopped reading (its buffers are full).
                Ok(Err(_)) | Err(_) => break,
            }
        }
        written
    };
    // The writer may stall on a full socket for H2_QUIET; the reader waits longer.
    let reader = h2frames::read_until_closed(&mut read, H2_QUIET * 2);
    let (written, ending) = tokio::join!(writer, reader);
    (ending, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_closed() {
    bounded(async {
        let (gateway, upstream) = h2_gateway().await;
        let addr = gateway.addr("public");

        // Frames carrying a header each, and empty frames (which add nothing to the header
        // list, so only a count of frames stops them).
        let mut header = Vec::new();
        h2frames::literal_new_name(&mut header, "x-flood", &[b'a'; 1000]);
        for (case, piece, frames) in [("filled", header, 20_000), ("empty", Vec::new(), 200_000)] {
            let (ending, written) = continuation_flood(addr, piece, frames).await;
            assert!(
                ending.closed,
                "{case}: connection open after {written} of {frames} CONTINUATION frames; got {:?}",
                ending.frames.iter().map(|f| f.kind).collect::<Vec<_>>()
            );
            assert!(
                written < frames,
                "{case}: the gateway read all {frames} CONTINUATION frames"
            );
            assert_eq!(
                ending.goaway().and_then(h2frames::Frame::error_code),
                Some(code::ENHANCE_YOUR_CALM),
                "{case}: {:?}",
                ending.frames
            );
            assert_serves(addr, case).await;
        }
        assert_eq!(
            upstream.requests(),
            2,
            "only the two normal requests arrived"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_hpack_bombs_are_refused() {
    bounded(async {
        let (gateway, upstream) = h2_gateway().await;
        let addr = gateway.addr("public");

        // A 4 000-byte entry in the dynamic table, then referenced by one byte (index 62) 500
        // times: 2 MB of headers from 4.5 KB of HPACK, far beyond max_header_size (8 KiB).
        let mut bomb = h2frames::get_block("/bomb", "x");
        h2frames::literal_new_name_indexed(&mut bomb, "x-bomb", &[b'a'; 4000]);
        bomb.extend(std::iter::repeat_n(0xbe, 500));
        // A dynamic table size update far above the 4 096 bytes the gateway allows.
        let mut resize = Vec::new();
        h2frames::integer(&mut resize, 5, 0x20, 1 << 30);
        resize.extend(h2frames::get_block("/resize", "x"));

        for (case, block) in [("indexed_expansion", bomb), ("table_size_update", resize)] {
            let mut tcp = h2frames::handshake(addr).await;
            let frame = h2frames::headers(1, flag::END_HEADERS | flag::END_STREAM, block);
            let _ = tcp.write_all(&frame.encode()).await;
            let ending = h2frames::read_until_closed(&mut tcp, H2_QUIET).await;
            // Today both end the connection: GOAWAY with ENHANCE_YOUR_CALM for the expansion,
            // PROTOCOL_ERROR for the table size; no response is started.
            let status = ending.frames.iter().find_map(h2frames::Frame::status);
            let error = ending.goaway().and_then(h2frames::Frame::error_code);
            assert!(
                ending.closed && error.is_some_and(|code| code != 0) && status.is_none(),
                "{case}: not refused: {:?}",
                ending.frames
            );
            assert_serves(addr, case).await;
        }
        let seen: Vec<String> = upstream.seen().into_iter().map(|s| s.uri).collect();
        assert!(
            !seen.iter().any(|u| u == "/bomb" || u == "/resize"),
            "upstream saw {seen:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_beyond_max_concurrent_are_refused() {
    bounded(async {
        // The upstream holds every request, so the streams stay open.
        let upstream = Server::http1().gated().run().await;
        let gateway = gateway(upstream.addr()).await;
        let addr = gateway.addr("public");
        let mut tcp = h2frames::handshake(addr).await;

        const OPENED: u32 = 12;
        let mut burst = Vec::new();
        for i in 0..OPENED {
            let block = h2frames::get_block("/held", "x");
            burst.extend(
                h2frames::headers(1 + 2 * i, flag::END_HEADERS | flag::END_STREAM, block).encode(),
            );
        }
        tcp.write_all(&burst).await.expect("write streams");
        let mut refused = Vec::new();
        while let Some(frame) = h2frames::read_frame(&mut tcp, QUIET).await {
            if frame.kind == kind::RST_STREAM && frame.error_code() == Some(code::REFUSED_STREAM) {
                refused.push(frame.stream);
            }
            if frame.kind == kind::GOAWAY {
                break;
            }
        }
        // The limit is 4 (LIMITS): every stream past it is refused, not queued or forwarded.
        assert_eq!(refused.len(), OPENED as usize - 4, "refused {refused:?}");
        assert!(
            upstream.requests() <= 4,
            "{} requests reached the upstream",
            upstream.requests()
        );
        drop(tcp);
        upstream.release();
        assert_serves(addr, "max concurrent streams").await;
    })
    .await;
}

// === Slowloris ===

/// Sends `bytes` one at a time, 200 ms apart, until the gateway closes or all are sent; reads
/// alongside. Returns how many bytes went out and what came back.
async fn trickle(stream: TcpStream, bytes: &[u8]) -> (usize, RawOutcome) {
    let (mut read, mut write) = stream.into_split();
    let (closed_tx, mut closed_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let outcome = loop {
            match tokio::time::timeout(tcp::READ_TIMEOUT * 3, read.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break RawOutcome::Closed { partial: buf },
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => break RawOutcome::TimedOut { partial: buf },
            }
        };
        let _ = closed_tx.send(());
        outcome
    };
    let writer = async move {
        let mut sent = 0;
        for byte in bytes {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = &mut closed_rx => break,
            }
        }
        sent
    };
    let (sent, outcome) = tokio::join!(writer, reader);
    (sent, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_head_is_closed_at_header_read_timeout() {
    bounded(async {
        let recorder = Recorder::run().await;
        let gateway = gateway(recorder.addr()).await;
        let addr = gateway.addr("public");

        // 60 bytes at 5 a second would take 12 s; header_read_timeout is 1 s.
        let head = format!(
            "GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: {}\r\n\r\n",
            "a".repeat(24)
        );
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sent, outcome) = trickle(stream, head.as_bytes()).await;

        let RawOutcome::Closed { partial } = &outcome else {
            panic!("slow head not closed: {outcome:?}");
        };
        assert!(
            sent < head.len(),
            "the whole slow head was read ({sent} bytes)"
        );
        let text = String::from_utf8_lossy(partial);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
        assert!(recorder.requests().is_empty() && recorder.incomplete().is_empty());
        assert_serves(addr, "slowloris head").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_is_cut_by_the_route_timeout() {
    bounded(async {
        let recorder = Recorder::run().await;
        let gateway = gateway(recorder.addr()).await;
        let addr = gateway.addr("public");

        // The head arrives at once; the 100-byte body at 5 bytes a second would take 20 s,
        // and the recorder answers only once it has all of it. The route's timeout is 2 s; the
        // gateway answers 408 (`request-timeout`: the body did not arrive in time) and closes.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"POST /trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            .await
            .expect("write head");
        let body = [b'b'; 100];
        let (sent, outcome) = trickle(stream, &body).await;

        assert!(
            sent < body.len(),
            "the whole slow body was taken ({sent} bytes)"
        );
        let status = match &outcome {
            RawOutcome::Closed { partial } | RawOutcome::TimedOut { partial } => status_of(partial),
            RawOutcome::Response(r) => Some(r.status),
        };
        assert_eq!(status, Some(408), "the answer to a slow body: {outcome:?}");
        assert!(
            matches!(outcome, RawOutcome::Closed { .. }),
            "slow body connection left open: {outcome:?}"
        );
        let hostile = hostile_requests(&recorder);
        assert!(
            hostile.is_empty(),
            "the slow body completed upstream: {hostile:?}"
        );
        assert_serves(addr, "slow body").await;
    })
    .await;
}

/// The status of the response `bytes` start with, if they start with one.
fn status_of(bytes: &[u8]) -> Option<u16> {
    split_responses(bytes).first().map(|r| r.status)
}

/// What the recorder got apart from the normal requests of [`assert_serves`].
fn hostile_requests(recorder: &Recorder) -> Vec<String> {
    recorder
        .requests()
        .into_iter()
        .map(|r| r.request_line)
        .filter(|line| !line.contains("/still-ok"))
        .collect()
}

// === Size bombs ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_bombs_get_their_4xx_and_never_reach_the_upstream() {
    bounded(async {
        let recorder = Recorder::run().await;
        let gateway = gateway(recorder.addr()).await;
        let addr = gateway.addr("public");

        let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
        let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
            (
                "head_over_max_header_size",
                raw(&format!(
                    "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                    "a".repeat(64 * 1024)
                )),
                &[431],
            ),
            (
                "too_many_headers",
                raw(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
                &[431],
            ),
            (
                "huge_uri",
                raw(&format!(
                    "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
                    "u".repeat(64 * 1024)
                )),
                &[414, 431],
            ),
            (
                "declared_body_over_max_body_size",
                raw(&format!(
                    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n{}",
                    "b".repeat(4096)
                )),
                &[413],
            ),
            (
                "chunked_body_over_max_body_size",
                {
                    let chunk = format!("400\r\n{}\r\n", "c".repeat(0x400));
                    raw(&format!(
                        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
                        chunk.repeat(4)
                    ))
                },
                &[413],
            ),
        ];
        for (case, bytes, want) in cases {
            let (responses, _) = send_and_read_all(addr, &bytes).await;
            let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
            assert!(
                statuses.len() == 1 && want.contains(&statuses[0]),
                "{case}: got {statuses:?}, want one of {want:?}"
            );
            let hostile = hostile_requests(&recorder);
            assert!(
                hostile.is_empty(),
                "{case}: the upstream got a whole request: {hostile:?}"
            );
            assert_serves(addr, case).await;
        }
    })
    .await;
}
