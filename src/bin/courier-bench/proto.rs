//! The client side of the NATS text protocol, kept as lean as possible: an incremental frame
//! parser that borrows from the read buffer (no allocation per message), PUB frame encoding into
//! a reusable batch buffer, and the connection handshake.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// The CONNECT line sent first on every connection.
pub const CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}\r\n";

/// How much spare room the read buffer keeps before each read.
pub const READ_CHUNK: usize = 128 * 1024;

/// Flush a batch of outgoing frames once it holds this many bytes.
pub const WRITE_BATCH: usize = 64 * 1024;

/// One frame received from the server. Slices borrow from the read buffer.
#[derive(Debug)]
pub enum Frame<'a> {
    /// A delivered message (MSG or HMSG).
    Msg {
        /// The subject it was published to.
        subject: &'a [u8],
        /// The reply subject, if any.
        reply: Option<&'a [u8]>,
        /// The header block of an HMSG, if any.
        headers: Option<&'a [u8]>,
        /// The payload (after the headers for HMSG).
        payload: &'a [u8],
    },
    /// The server pings us: answer PONG.
    Ping,
    /// The answer to one of our PINGs.
    Pong,
    /// INFO with its JSON body.
    Info(&'a [u8]),
    /// +OK (only sent in verbose mode).
    Ok,
    /// -ERR with its text.
    Err(&'a [u8]),
}

/// Parses a decimal number made of ASCII digits only.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    Some(n)
}

/// Splits a protocol line's arguments on spaces/tabs into `out`; returns how many were found
/// (at most `out.len()`; more arguments than that is reported as `out.len() + 1`).
fn split_args<'a>(line: &'a [u8], out: &mut [&'a [u8]]) -> usize {
    let mut n = 0;
    for arg in line.split(|&c| c == b' ' || c == b'\t').filter(|a| !a.is_empty()) {
        if n == out.len() {
            return n + 1;
        }
        out[n] = arg;
        n += 1;
    }
    n
}

/// Parses every complete frame at the start of `buf`, calling `on_frame` for each, and returns
/// how many bytes were consumed. An incomplete trailing frame is left for the next call.
pub fn parse<F: FnMut(Frame<'_>)>(buf: &[u8], mut on_frame: F) -> Result<usize> {
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let Some(nl) = memchr::memchr(b'\n', rest) else { break };
        let line_end = if nl > 0 && rest[nl - 1] == b'\r' { nl - 1 } else { nl };
        let line = &rest[..line_end];
        let after_line = nl + 1;
        let op = line.get(..4).unwrap_or(line);
        if op.eq_ignore_ascii_case(b"MSG ") || line.get(..5).is_some_and(|o| o.eq_ignore_ascii_case(b"HMSG ")) {
            let hmsg = line[0] == b'H' || line[0] == b'h';
            let mut args: [&[u8]; 5] = [&[]; 5];
            let n = split_args(&line[if hmsg { 5 } else { 4 }..], &mut args);
            let (subject, reply, hdr_len, total) = match (hmsg, n) {
                (false, 3) => (args[0], None, 0, args[2]),
                (false, 4) => (args[0], Some(args[2]), 0, args[3]),
                (true, 4) => (args[0], None, parse_len(args[2])?, args[3]),
                (true, 5) => (args[0], Some(args[2]), parse_len(args[3])?, args[4]),
                _ => bail!("malformed message line from server: {:?}", String::from_utf8_lossy(line)),
            };
            let total = parse_len(total)?;
            if hdr_len > total {
                bail!("malformed HMSG line from server: header size exceeds total size");
            }
            if rest.len() < after_line + total + 2 {
                break;
            }
            let body = &rest[after_line..after_line + total];
            let headers = if hmsg { Some(&body[..hdr_len]) } else { None };
            on_frame(Frame::Msg { subject, reply, headers, payload: &body[hdr_len..] });
            pos += after_line + total + 2;
            continue;
        }
        let frame = if line.eq_ignore_ascii_case(b"PING") {
            Frame::Ping
        } else if line.eq_ignore_ascii_case(b"PONG") {
            Frame::Pong
        } else if line.eq_ignore_ascii_case(b"+OK") {
            Frame::Ok
        } else if op.eq_ignore_ascii_case(b"INFO") {
            Frame::Info(line[4..].trim_ascii())
        } else if op.eq_ignore_ascii_case(b"-ERR") {
            Frame::Err(line[4..].trim_ascii())
        } else {
            bail!("unexpected line from server: {:?}", String::from_utf8_lossy(line));
        };
        on_frame(frame);
        pos += after_line;
    }
    Ok(pos)
}

/// Parses a byte count in a MSG/HMSG line.
fn parse_len(s: &[u8]) -> Result<usize> {
    parse_u64(s)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| anyhow!("bad size {:?} in message line", String::from_utf8_lossy(s)))
}

/// Appends `PUB <subject> [reply] <len>\r\n<payload>\r\n` to `out`.
pub fn encode_pub(out: &mut Vec<u8>, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    if let Some(reply) = reply {
        out.extend_from_slice(reply);
        out.push(b' ');
    }
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(n.format(payload.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// The `PUB <subject> <len>\r\n` line for a fixed subject and size, precomputed once.
pub fn pub_prefix(subject: &str, size: usize) -> Vec<u8> {
    format!("PUB {subject} {size}\r\n").into_bytes()
}

/// The read half of a connection: plain TCP, or the bytes inside WebSocket frames.
pub type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;
/// The write half of a connection.
pub type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;

/// A write half shared between a connection's sending task and its reading task (which answers
/// the server's PINGs).
pub type SharedWriter = Arc<Mutex<WriteHalf>>;

/// Where the server is: its loopback address, and whether to speak over WebSocket there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The loopback socket address.
    pub addr: SocketAddr,
    /// WebSocket (`ws://`): the protocol goes in masked binary frames, as a browser sends it.
    pub websocket: bool,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", if self.websocket { "ws" } else { "nats" }, self.addr)
    }
}

/// An established connection: the handshake is done and the server answered our first PING.
pub struct Conn {
    /// The read half.
    pub rd: ReadHalf,
    /// The write half.
    pub wr: WriteHalf,
    /// Bytes read but not parsed yet.
    pub rbuf: BytesMut,
}

/// Upgrades `stream` to WebSocket; returns the framed halves.
async fn upgrade(mut stream: TcpStream, addr: SocketAddr) -> Result<(ReadHalf, WriteHalf)> {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: Y291cmllci1iZW5jaC1rZXk=\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte, so that nothing after the response head is taken from the frames.
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 || head.len() > 8192 {
            bail!("the server closed or garbled the WebSocket upgrade");
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("WebSocket upgrade refused: {}", String::from_utf8_lossy(&head).lines().next().unwrap_or(""));
    }
    let (rd, wr) = stream.into_split();
    let control = Arc::new(courier::websocket::Control::default());
    let reader = courier::websocket::WsReader::new(rd, control, false, false, 64 << 20);
    Ok((Box::new(reader), Box::new(courier::websocket::WsWriter::client(wr, true))))
}

impl Conn {
    /// Connects, reads INFO, sends CONNECT and PING, and waits for the PONG. Fails if the
    /// server's max_payload is below `payload`.
    pub async fn connect(endpoint: Endpoint, payload: usize) -> Result<Conn> {
        let addr = endpoint.addr;
        if !addr.ip().is_loopback() {
            bail!("refusing to connect to {addr}: only loopback addresses are allowed");
        }
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {endpoint}"))?;
        stream.set_nodelay(true)?;
        let (rd, wr): (ReadHalf, WriteHalf) = if endpoint.websocket {
            upgrade(stream, addr).await?
        } else {
            let (rd, wr) = stream.into_split();
            (Box::new(rd), Box::new(wr))
        };
        let mut conn = Conn { rd, wr, rbuf: BytesMut::with_capacity(READ_CHUNK) };
        // The server speaks first with INFO.
        let mut max_payload = None;
        let mut got_info = false;
        while !got_info {
            conn.fill().await.context("waiting for INFO")?;
            let mut err = None;
            let used = parse(&conn.rbuf, |f| match f {
                Frame::Info(json) => {
                    got_info = true;
                    max_payload = serde_json::from_slice::<serde_json::Value>(json)
                        .ok()
                        .and_then(|v| v.get("max_payload").and_then(serde_json::Value::as_u64));
                }
                Frame::Err(e) => err = Some(String::from_utf8_lossy(e).into_owned()),
                _ => {}
            })?;
            conn.rbuf.advance(used);
            if let Some(e) = err {
                bail!("server refused the connection: -ERR {e}");
            }
        }
        if let Some(max) = max_payload.filter(|&m| (payload as u64) > m) {
            bail!("payload size {payload} exceeds the server's max_payload {max}");
        }
        let mut hello = CONNECT.to_vec();
        hello.extend_from_slice(b"PING\r\n");
        conn.wr.write_all(&hello).await?;
        conn.wait_pong().await.context("waiting for the server to accept CONNECT")?;
        Ok(conn)
    }

    /// Reads more bytes into the buffer; fails on end of stream.
    pub async fn fill(&mut self) -> Result<usize> {
        self.rbuf.reserve(READ_CHUNK);
        let n = self.rd.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            bail!("server closed the connection");
        }
        Ok(n)
    }

    /// Reads until a PONG arrives, answering PINGs. Messages before the PONG are an error (this
    /// is only used before any load starts).
    pub async fn wait_pong(&mut self) -> Result<()> {
        loop {
            let mut pong = false;
            let mut pings = 0;
            let mut err = None;
            let mut msgs = 0;
            let used = parse(&self.rbuf, |f| match f {
                Frame::Pong if !pong => pong = true,
                Frame::Ping => pings += 1,
                Frame::Err(e) => err = Some(String::from_utf8_lossy(e).into_owned()),
                Frame::Msg { .. } => msgs += 1,
                _ => {}
            })?;
            self.rbuf.advance(used);
            for _ in 0..pings {
                self.wr.write_all(b"PONG\r\n").await?;
            }
            if let Some(e) = err {
                bail!("server error: -ERR {e}");
            }
            if msgs > 0 {
                bail!("received {msgs} unexpected message(s) before the benchmark started");
            }
            if pong {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Waits until a message published on this connection's server reaches a subscriber on
    /// `other`'s: between two servers of a cluster, interest registered on `other` before this
    /// call has then crossed the route (it went ahead of the probe's).
    pub async fn await_route(&mut self, other: &mut Conn, within: std::time::Duration) -> Result<()> {
        let subject = format!("_BENCH_PROBE.{}", rand::random::<u64>());
        other.subscribe(&subject, None, 999_999).await?;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = format!("PUB {subject} 0\r\n\r\nPING\r\n");
            self.wr.write_all(line.as_bytes()).await?;
            self.wait_pong().await?;
            let seen = tokio::time::timeout(std::time::Duration::from_millis(100), async {
                loop {
                    let mut msg = false;
                    let used = parse(&other.rbuf, |f| msg |= matches!(f, Frame::Msg { .. }))?;
                    other.rbuf.advance(used);
                    if msg {
                        return Ok::<(), anyhow::Error>(());
                    }
                    other.fill().await?;
                }
            })
            .await;
            match seen {
                Ok(r) => break r?,
                Err(_) if tokio::time::Instant::now() < deadline => continue,
                Err(_) => bail!("no route between the servers within {within:?}"),
            }
        }
        let unsub = "UNSUB 999999\r\nPING\r\n";
        other.wr.write_all(unsub.as_bytes()).await?;
        other.wait_pong_discarding().await
    }

    /// Like [`Conn::wait_pong`], but probe messages still arriving are dropped.
    async fn wait_pong_discarding(&mut self) -> Result<()> {
        loop {
            let mut pong = false;
            let used = parse(&self.rbuf, |f| pong |= matches!(f, Frame::Pong))?;
            self.rbuf.advance(used);
            if pong {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Sends SUB (with an optional queue group) and waits until the server has registered it.
    pub async fn subscribe(&mut self, subject: &str, queue: Option<&str>, sid: u64) -> Result<()> {
        let line = match queue {
            Some(q) => format!("SUB {subject} {q} {sid}\r\nPING\r\n"),
            None => format!("SUB {subject} {sid}\r\nPING\r\n"),
        };
        self.wr.write_all(line.as_bytes()).await?;
        self.wait_pong().await.with_context(|| format!("subscribing to {subject}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(buf: &[u8]) -> (usize, Vec<String>) {
        let mut out = Vec::new();
        let used = parse(buf, |f| {
            out.push(match f {
                Frame::Msg { subject, reply, headers, payload } => format!(
                    "MSG {} {:?} {:?} {}",
                    String::from_utf8_lossy(subject),
                    reply.map(|r| String::from_utf8_lossy(r).into_owned()),
                    headers.map(|h| h.len()),
                    String::from_utf8_lossy(payload)
                ),
                other => format!("{other:?}"),
            })
        })
        .unwrap();
        (used, out)
    }

    #[test]
    fn parses_frames_and_keeps_partial_tail() {
        let buf = b"INFO {}\r\nPING\r\nMSG a.b 1 5\r\nhello\r\nMSG a.b 1 _INBOX.x 2\r\nhi\r\nHMSG c 2 12 14\r\nNATS/1.0\r\n\r\nok\r\nMSG a 1 10\r\nabc";
        let (used, frames) = collect(buf);
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[2], "MSG a.b None None hello");
        assert_eq!(frames[3], "MSG a.b Some(\"_INBOX.x\") None hi");
        assert_eq!(frames[4], "MSG c None Some(12) ok");
        assert_eq!(&buf[used..], b"MSG a 1 10\r\nabc");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"WHAT\r\n", |_| {}).is_err());
        assert!(parse(b"MSG a 1 x\r\n", |_| {}).is_err());
    }

    #[test]
    fn encodes_pub() {
        let mut out = Vec::new();
        encode_pub(&mut out, b"s", Some(b"r"), b"xy");
        assert_eq!(out, b"PUB s r 2\r\nxy\r\n");
    }
}
