//! Bodies for tests: empty, full, and a generated pattern of any length that is never held in
//! memory, plus a checker that verifies the pattern chunk by chunk.
//!
//! The pattern is `byte[i] = i % 251`: a prime period, so a dropped, repeated or reordered
//! chunk of any power-of-two size shows up as a mismatch.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;

use crate::BoxError;

/// The body type every test client and server sends.
pub type Body = BoxBody<Bytes, BoxError>;

/// Size of the chunks a [`PatternBody`] yields.
pub const CHUNK: usize = 64 * 1024;

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new().map_err(|e| match e {}).boxed()
}

/// A body of these bytes, with a known length.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed()
}

/// The pattern byte at `offset`.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// `len` pattern bytes starting at `offset`.
pub fn pattern_chunk(offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| pattern_byte(offset + i))
        .collect::<Vec<u8>>()
        .into()
}

/// A body of `len` pattern bytes, generated as it is polled.
#[derive(Debug)]
pub struct PatternBody {
    offset: u64,
    len: u64,
    known_length: bool,
}

impl PatternBody {
    /// `len` bytes; the length is announced (content-length) when `known_length` is set,
    /// otherwise the body is sent chunked.
    pub fn new(len: u64, known_length: bool) -> PatternBody {
        PatternBody {
            offset: 0,
            len,
            known_length,
        }
    }

    /// Boxed, as a [`Body`].
    pub fn boxed(self) -> Body {
        BodyExt::boxed(self)
    }
}

impl HttpBody for PatternBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let left = self.len - self.offset;
        if left == 0 {
            return Poll::Ready(None);
        }
        let n = left.min(CHUNK as u64) as usize;
        let chunk = pattern_chunk(self.offset, n);
        self.offset += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset == self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.known_length {
            SizeHint::with_exact(self.len - self.offset)
        } else {
            SizeHint::default()
        }
    }
}

/// A body that yields a fixed list of frames (data and trailers); for gRPC-style responses.
#[derive(Debug)]
pub struct FramesBody {
    frames: VecDeque<Frame<Bytes>>,
}

impl FramesBody {
    /// The frames, in order.
    pub fn new(frames: Vec<Frame<Bytes>>) -> FramesBody {
        FramesBody {
            frames: frames.into(),
        }
    }
}

impl HttpBody for FramesBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.frames.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Checks that data arrives as the pattern, chunk by chunk, without keeping it.
#[derive(Debug, Default, Clone)]
pub struct PatternCheck {
    /// Bytes seen so far.
    pub bytes: u64,
    /// Offset of the first byte that did not match, if any.
    pub first_mismatch: Option<u64>,
}

impl PatternCheck {
    /// Feeds the next data chunk.
    pub fn feed(&mut self, data: &[u8]) {
        if self.first_mismatch.is_none()
            && let Some(i) = data
                .iter()
                .enumerate()
                .position(|(i, b)| *b != pattern_byte(self.bytes + i as u64))
        {
            self.first_mismatch = Some(self.bytes + i as u64);
        }
        self.bytes += data.len() as u64;
    }

    /// Reads `body` to its end, checking every chunk.
    pub async fn consume<B>(body: B) -> Result<PatternCheck, BoxError>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut body = body;
        let mut check = PatternCheck::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(Into::into)?;
            if let Some(data) = frame.data_ref() {
                check.feed(data);
            }
        }
        Ok(check)
    }
}
