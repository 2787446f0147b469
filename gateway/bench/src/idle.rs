//! The memory probe: resident memory of a gateway with thousands of idle keep-alive clients.
//!
//! Each client connection sends one request, reads the whole answer, and then stays open and
//! silent, as a browser or an idle keep-alive pool does. The gateway's `VmRSS` is read before
//! and after, so the difference is what those connections cost it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Connections opened at the same time; more would only fill the listen backlog.
const CONCURRENT_OPENS: usize = 200;

/// Time allowed for one connection's request and answer.
const PER_CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// Opens `count` connections to `address`, each with one finished request, and returns them
/// open. Fails if any request does not get a complete `200` answer.
pub(crate) async fn open_idle(address: SocketAddr, count: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut open = Vec::with_capacity(count);
    let mut tasks = JoinSet::new();
    let mut started = 0;
    while open.len() < count {
        while started < count && tasks.len() < CONCURRENT_OPENS {
            tasks.spawn(tokio::time::timeout(PER_CONNECTION_TIMEOUT, one(address)));
            started += 1;
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        match done.context("connection task panicked")? {
            Ok(Ok(stream)) => open.push(stream),
            Ok(Err(error)) => bail!("connection {} of {count}: {error:#}", open.len() + 1),
            Err(_) => bail!(
                "connection {} of {count}: no answer within {PER_CONNECTION_TIMEOUT:?}",
                open.len() + 1
            ),
        }
    }
    Ok(open)
}

/// One connection: a request, its whole answer, then the open socket.
async fn one(address: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(address).await.context("connecting")?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
        .await
        .context("sending the request")?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .context("reading the answer")?;
        if n == 0 {
            bail!("the gateway closed the connection before the answer was complete");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(total) = complete_length(&buf)?
            && buf.len() >= total
        {
            return Ok(stream);
        }
    }
}

/// The full length of the answer in `buf` (head plus `content-length` body), once the head is
/// complete; fails on a status other than 200.
fn complete_length(buf: &[u8]) -> anyhow::Result<Option<usize>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("answer head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        bail!("unexpected answer: {status}");
    }
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>())
        .transpose()
        .context("bad content-length")?
        .context("the answer has no content-length")?;
    Ok(Some(end + 4 + length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_is_complete_only_with_its_whole_body() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(complete_length(&head[..20]).unwrap(), None);
        let mut full = head.to_vec();
        full.extend_from_slice(b"abcd");
        assert_eq!(complete_length(&full).unwrap(), Some(full.len()));
        assert!(complete_length(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn idle_connections_stay_open_after_their_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..5 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut req = [0u8; 256];
                let _ = s.read(&mut req).await.unwrap();
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                held.push(s);
            }
            // Every client must still be connected: a read sees no EOF within the wait.
            for mut s in held {
                let mut byte = [0u8; 1];
                let read =
                    tokio::time::timeout(Duration::from_millis(200), s.read(&mut byte)).await;
                assert!(read.is_err(), "a client closed its idle connection");
            }
        });
        let open = open_idle(address, 5).await.unwrap();
        assert_eq!(open.len(), 5);
        server.await.unwrap();
        drop(open);
    }
}
