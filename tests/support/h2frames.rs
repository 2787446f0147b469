//! Raw HTTP/2 frames over plain TCP (h2c prior knowledge), written by hand so that tests can
//! send what a well-behaved client library never would: streams reset as soon as they open,
//! header blocks that never end, HPACK that expands without bound.
//!
//! A frame is a 9-byte header (24-bit length, type, flags, 31-bit stream id) and a payload
//! (RFC 9113 §4.1). Header blocks are HPACK (RFC 7541) written with static-table indexes and
//! literals without Huffman coding, which every decoder must accept.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Flags.
pub mod flag {
    /// END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
}

/// Error codes (RFC 9113 §7).
pub mod code {
    /// CANCEL.
    pub const CANCEL: u32 = 0x8;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// ENHANCE_YOUR_CALM.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// One frame: header fields and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id.
    pub stream: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let len = u32::try_from(self.payload.len()).expect("frame fits");
        let mut out = Vec::with_capacity(9 + self.payload.len());
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&(self.stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            kind::RST_STREAM => 0,
            kind::GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }

    /// The `:status` of a HEADERS frame whose block starts with a static-table status (as h2
    /// encodes 200, 204, 206, 304, 400, 404 and 500) or a literal status with an indexed name.
    pub fn status(&self) -> Option<u16> {
        if self.kind != kind::HEADERS {
            return None;
        }
        match *self.payload.first()? {
            0x88 => Some(200),
            0x89 => Some(204),
            0x8a => Some(206),
            0x8b => Some(304),
            0x8c => Some(400),
            0x8d => Some(404),
            0x8e => Some(500),
            // A literal with the name `:status` (static index 8), with or without indexing.
            0x48 | 0x08 | 0x18 => {
                let len = usize::from(*self.payload.get(1)? & 0x7f);
                std::str::from_utf8(self.payload.get(2..2 + len)?)
                    .ok()?
                    .parse()
                    .ok()
            }
            _ => None,
        }
    }
}

/// An empty SETTINGS frame.
pub fn settings() -> Frame {
    Frame {
        kind: kind::SETTINGS,
        flags: 0,
        stream: 0,
        payload: Vec::new(),
    }
}

/// A SETTINGS acknowledgement.
pub fn settings_ack() -> Frame {
    Frame {
        kind: kind::SETTINGS,
        flags: flag::ACK,
        stream: 0,
        payload: Vec::new(),
    }
}

/// A HEADERS frame carrying `block` with `flags`.
pub fn headers(stream: u32, flags: u8, block: Vec<u8>) -> Frame {
    Frame {
        kind: kind::HEADERS,
        flags,
        stream,
        payload: block,
    }
}

/// A CONTINUATION frame carrying `block` with `flags`.
pub fn continuation(stream: u32, flags: u8, block: Vec<u8>) -> Frame {
    Frame {
        kind: kind::CONTINUATION,
        flags,
        stream,
        payload: block,
    }
}

/// A RST_STREAM frame.
pub fn rst_stream(stream: u32, error: u32) -> Frame {
    Frame {
        kind: kind::RST_STREAM,
        flags: 0,
        stream,
        payload: error.to_be_bytes().to_vec(),
    }
}

/// HPACK for `GET path` with `:scheme http` and `:authority authority`: static indexes for
/// `:method GET` (2) and `:scheme http` (6), literals without indexing for the rest.
pub fn get_block(path: &str, authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86];
    literal_indexed_name(&mut block, 4, path);
    literal_indexed_name(&mut block, 1, authority);
    block
}

/// Appends a literal header field without indexing whose name is static-table entry `index`
/// (below 15).
pub fn literal_indexed_name(block: &mut Vec<u8>, index: u8, value: &str) {
    assert!(index < 15);
    block.push(index);
    string(block, value.as_bytes());
}

/// Appends a literal header field with incremental indexing and a new name: the entry is added
/// to the dynamic table, where index 62 then refers to it.
pub fn literal_new_name_indexed(block: &mut Vec<u8>, name: &str, value: &[u8]) {
    block.push(0x40);
    string(block, name.as_bytes());
    string(block, value);
}

/// Appends a literal header field without indexing and with a new name.
pub fn literal_new_name(block: &mut Vec<u8>, name: &str, value: &[u8]) {
    block.push(0x00);
    string(block, name.as_bytes());
    string(block, value);
}

/// Appends an HPACK string (no Huffman) of `bytes`.
fn string(block: &mut Vec<u8>, bytes: &[u8]) {
    integer(block, 7, 0x00, bytes.len());
    block.extend_from_slice(bytes);
}

/// Appends an HPACK integer with an `n`-bit prefix and the high bits `first`.
pub fn integer(block: &mut Vec<u8>, n: u8, first: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        block.push(first | value as u8);
        return;
    }
    block.push(first | max as u8);
    value -= max;
    while value >= 128 {
        block.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    block.push(value as u8);
}

/// Connects, sends the preface and an empty SETTINGS, reads the server's SETTINGS and
/// acknowledges it, so that the server's advertised limits are in force when this returns.
pub async fn handshake(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut hello = PREFACE.to_vec();
    hello.extend(settings().encode());
    tcp.write_all(&hello).await.expect("write preface");
    loop {
        let frame = read_frame(&mut tcp, crate::tcp::READ_TIMEOUT)
            .await
            .expect("server SETTINGS");
        if frame.kind == kind::SETTINGS && frame.flags & flag::ACK == 0 {
            break;
        }
    }
    tcp.write_all(&settings_ack().encode()).await.expect("ack");
    tcp
}

/// What one read of a frame came to.
#[derive(Debug)]
pub enum Read {
    /// A whole frame.
    Frame(Frame),
    /// The server closed the connection (or reset it).
    Closed,
    /// Nothing, or not a whole frame, arrived within the timeout.
    Quiet,
}

/// Reads one frame, waiting at most `timeout`.
pub async fn next_frame<R: AsyncRead + Unpin>(tcp: &mut R, timeout: Duration) -> Read {
    let read = async {
        let mut header = [0u8; 9];
        tcp.read_exact(&mut header).await.ok()?;
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: header[3],
            flags: header[4],
            stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
            payload,
        })
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Some(frame)) => Read::Frame(frame),
        Ok(None) => Read::Closed,
        Err(_) => Read::Quiet,
    }
}

/// Reads one frame; `None` if the connection closed or nothing came within `timeout`.
pub async fn read_frame<R: AsyncRead + Unpin>(tcp: &mut R, timeout: Duration) -> Option<Frame> {
    match next_frame(tcp, timeout).await {
        Read::Frame(frame) => Some(frame),
        Read::Closed | Read::Quiet => None,
    }
}

/// How a connection ended for a client that kept reading.
#[derive(Debug)]
pub struct Ending {
    /// Every frame received, in order.
    pub frames: Vec<Frame>,
    /// Whether the server closed the connection (false: it went quiet for the read timeout).
    pub closed: bool,
}

impl Ending {
    /// The GOAWAY frame, if one came.
    pub fn goaway(&self) -> Option<&Frame> {
        self.frames.iter().find(|f| f.kind == kind::GOAWAY)
    }
}

/// Reads frames until the server closes the connection or sends nothing for `quiet`.
pub async fn read_until_closed<R: AsyncRead + Unpin>(tcp: &mut R, quiet: Duration) -> Ending {
    let mut frames = Vec::new();
    loop {
        match next_frame(tcp, quiet).await {
            Read::Frame(frame) => frames.push(frame),
            Read::Closed => {
                return Ending {
                    frames,
                    closed: true,
                };
            }
            Read::Quiet => {
                return Ending {
                    frames,
                    closed: false,
                };
            }
        }
    }
}
