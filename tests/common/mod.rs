//! Shared helpers for the black-box tests: an in-process server on an ephemeral port, a raw TCP
//! client that asserts on exact protocol bytes, and an async-nats connect helper.
//!
//! Every wait is bounded by [`TIMEOUT`]. Tests synchronise with PING/PONG round trips: once a
//! client has its PONG, the server has processed everything that client sent before the PING,
//! including queueing every message it published to its subscribers.
#![allow(dead_code)]

pub mod process;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use courier::server::ServerStats;
use courier::{Options, Server, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Options for a test server: loopback, a free port, everything else at its default.
pub fn options() -> Options {
    Options { host: "127.0.0.1".into(), port: 0, ..Default::default() }
}

/// A server running in-process. Dropping it starts a shutdown; [`TestServer::stop`] also waits
/// for the server to finish.
pub struct TestServer {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The server's handle: counters, the subscription trie, shutdown.
    pub handle: ServerHandle,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Binds and runs a server with `opts`.
    pub async fn start(opts: Options) -> TestServer {
        let server = Server::bind(opts).await.expect("bind test server");
        let handle = server.handle();
        let addr = handle.local_addr();
        let task = tokio::spawn(server.run());
        TestServer { addr, handle, task: Some(task) }
    }

    /// A server with the default options.
    pub async fn start_default() -> TestServer {
        TestServer::start(options()).await
    }

    /// The server's counters.
    pub fn stats(&self) -> &ServerStats {
        &self.handle.state().stats
    }

    /// Subscriptions the server holds, over all clients.
    pub fn sub_count(&self) -> usize {
        subscriptions(&self.handle)
    }

    /// Clients connected right now.
    pub fn connections(&self) -> usize {
        self.stats().connections.load(Ordering::SeqCst)
    }

    /// The URL async-nats connects to.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// A raw TCP client that has read its INFO line.
    pub async fn raw(&self) -> RawClient {
        RawClient::connect(self.addr).await
    }

    /// A raw TCP client that has sent `CONNECT {json}` (which should turn verbose off) and
    /// seen the server process it.
    pub async fn raw_with(&self, connect_json: &str) -> RawClient {
        let mut c = self.raw().await;
        c.send(format!("CONNECT {connect_json}\r\n")).await;
        c.ping_pong().await;
        c
    }

    /// A raw TCP client with verbose off, otherwise nats-server's default client options.
    pub async fn raw_quiet(&self) -> RawClient {
        self.raw_with(r#"{"verbose":false}"#).await
    }

    /// Panics unless a fresh connection gets INFO and answers PING with PONG.
    pub async fn assert_healthy(&self) {
        let mut c = self.raw().await;
        c.ping_pong().await;
    }

    /// An async-nats client with default options.
    pub async fn nats(&self) -> async_nats::Client {
        self.nats_with(async_nats::ConnectOptions::new()).await
    }

    /// An async-nats client with `opts`.
    pub async fn nats_with(&self, opts: async_nats::ConnectOptions) -> async_nats::Client {
        timeout(TIMEOUT, opts.connection_timeout(TIMEOUT).connect(self.url()))
            .await
            .expect("async-nats connect timed out")
            .expect("async-nats connect")
    }

    /// Shuts the server down and waits for `run()` to return.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        let task = self.task.take().expect("server task");
        timeout(TIMEOUT, task).await.expect("server did not stop in time").expect("server task panicked");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// Subscriptions `server` holds, over all clients.
pub fn subscriptions(server: &ServerHandle) -> usize {
    server.state().subscriptions()
}

/// Polls `cond` until it holds, failing the test after [`TIMEOUT`]. For state that changes
/// after a connection closes, where no reply on another connection can serve as a barrier.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bytes as an escaped string for failure messages, shortened when long.
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 400;
    let mut out = String::new();
    for &b in &bytes[..bytes.len().min(MAX)] {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    if bytes.len() > MAX {
        let _ = write!(out, "... ({} bytes in all)", bytes.len());
    }
    format!("\"{out}\"")
}

/// A client speaking the protocol by hand over TCP, for exact bytes.
pub struct RawClient {
    stream: TcpStream,
    /// Received bytes not yet consumed by an `expect` or `read_*`.
    buf: Vec<u8>,
    /// True once the server closed the connection (EOF or reset).
    closed: bool,
    /// When an expectation does not match because the server sent its keepalive `PING\r\n`
    /// there, answer it and drop it instead of failing. Off in the keepalive tests.
    pub auto_pong: bool,
    /// The INFO line the server sent first, when it was read.
    pub info_line: Vec<u8>,
}

impl RawClient {
    /// Connects and reads the INFO line.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let mut c = RawClient::connect_bare(addr).await;
        c.info_line = c.read_line().await;
        assert!(
            c.info_line.starts_with(b"INFO {") && c.info_line.ends_with(b"} \r\n"),
            "expected an INFO line, got {}",
            show(&c.info_line)
        );
        c
    }

    /// Connects with a small kernel receive buffer (so that a client that does not read backs
    /// up quickly), and reads the INFO line.
    pub async fn connect_with_recv_buffer(addr: SocketAddr, size: u32) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        let stream = timeout(TIMEOUT, socket.connect(addr)).await.expect("connect timed out").expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut c = RawClient::from_stream(stream);
        c.info_line = c.read_line().await;
        assert!(c.info_line.starts_with(b"INFO {"), "expected an INFO line, got {}", show(&c.info_line));
        c
    }

    /// Connects without reading anything.
    pub async fn connect_bare(addr: SocketAddr) -> RawClient {
        let stream = timeout(TIMEOUT, TcpStream::connect(addr)).await.expect("connect timed out").expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        RawClient::from_stream(stream)
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: TcpStream) -> RawClient {
        RawClient { stream, buf: Vec::new(), closed: false, auto_pong: true, info_line: Vec::new() }
    }

    /// The INFO JSON.
    pub fn info(&self) -> serde_json::Value {
        let json = &self.info_line[b"INFO ".len()..self.info_line.len() - b" \r\n".len()];
        serde_json::from_slice(json).unwrap_or_else(|e| panic!("INFO is not JSON ({e}): {}", show(json)))
    }

    /// Sends `bytes` in one write.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let bytes = bytes.as_ref();
        timeout(TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("send timed out")
            .unwrap_or_else(|e| panic!("send {} failed: {e}", show(bytes)));
    }

    /// Sends `bytes` one byte per write, letting the server run between them.
    pub async fn send_bytewise(&mut self, bytes: impl AsRef<[u8]>) {
        for &b in bytes.as_ref() {
            self.send([b]).await;
            self.stream.flush().await.expect("flush");
            tokio::task::yield_now().await;
        }
    }

    /// Reads more bytes into the buffer. Returns false on EOF or reset.
    async fn fill(&mut self, deadline: Instant, waiting_for: &dyn Fn(&[u8]) -> String) -> bool {
        if self.closed {
            return false;
        }
        self.buf.reserve(64 * 1024);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => panic!("timed out: {}", waiting_for(&self.buf)),
            Ok(Ok(0)) => {
                self.closed = true;
                false
            }
            Ok(Ok(_)) => true,
            Ok(Err(e)) if is_reset(&e) => {
                self.closed = true;
                false
            }
            Ok(Err(e)) => panic!("read failed ({e}): {}", waiting_for(&self.buf)),
        }
    }

    /// Reads until exactly `expected` has arrived next, and consumes it. Fails at the first
    /// byte that differs, when the connection closes first, or after [`TIMEOUT`].
    pub async fn expect(&mut self, expected: impl AsRef<[u8]>) {
        let expected = expected.as_ref();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let n = self.buf.len().min(expected.len());
            if let Some(at) = (0..n).find(|&i| self.buf[i] != expected[i]) {
                if self.auto_pong && self.buf[at..].starts_with(b"PING\r\n") && !expected[at..].starts_with(b"PING") {
                    self.buf.drain(at..at + 6);
                    self.send("PONG\r\n").await;
                    continue;
                }
                if !(self.auto_pong && b"PING\r\n".starts_with(&self.buf[at..])) {
                    panic!("expected {}\n     got {}", show(expected), show(&self.buf));
                }
            } else if self.buf.len() >= expected.len() {
                self.buf.drain(..expected.len());
                return;
            }
            let show_wait = |got: &[u8]| format!("expected {}\n     got {}", show(expected), show(got));
            if !self.fill(deadline, &show_wait).await {
                panic!("connection closed: expected {}\n     got {}", show(expected), show(&self.buf));
            }
        }
    }

    /// Sends PING and expects PONG as the very next bytes: the server has processed everything
    /// sent before, and nothing else was sent to this client in between.
    pub async fn ping_pong(&mut self) {
        self.send("PING\r\n").await;
        self.expect("PONG\r\n").await;
    }

    /// Expects the server to close the connection without sending anything more.
    pub async fn expect_closed(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if !self.buf.is_empty() {
                panic!("expected the connection to close, got {}", show(&self.buf));
            }
            let show_wait = |_: &[u8]| "expected the connection to close".to_string();
            if !self.fill(deadline, &show_wait).await {
                return;
            }
        }
    }

    /// Takes whatever has already arrived, without waiting for more, and says whether `needle`
    /// is among the bytes not yet consumed.
    pub async fn has_buffered(&mut self, needle: &[u8]) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        self.buf.windows(needle.len()).any(|w| w == needle)
    }

    /// Reads one line, up to and including `\n`.
    pub async fn read_line(&mut self) -> Vec<u8> {
        self.read_through(b"\n").await
    }

    /// Reads up to and including the first occurrence of `end`, and returns it all.
    pub async fn read_through(&mut self, end: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(at) = find(&self.buf, end) {
                return self.buf.drain(..at + end.len()).collect();
            }
            let show_wait = |got: &[u8]| format!("waiting for {} in {}", show(end), show(got));
            if !self.fill(deadline, &show_wait).await {
                panic!("connection closed while waiting for {}; got {}", show(end), show(&self.buf));
            }
        }
    }

    /// Sends PING and returns the frames that arrived before its PONG (server PINGs answered and
    /// left out).
    pub async fn frames_until_pong(&mut self) -> Vec<Frame> {
        self.send("PING\r\n").await;
        let mut frames = Vec::new();
        loop {
            match self.next_frame().await {
                Frame::Pong => return frames,
                Frame::Ping => self.send("PONG\r\n").await,
                f => frames.push(f),
            }
        }
    }

    /// Sends PING and returns the messages that arrived before its PONG; anything but messages
    /// fails the test.
    pub async fn msgs_until_pong(&mut self) -> Vec<Msg> {
        self.frames_until_pong()
            .await
            .into_iter()
            .map(|f| match f {
                Frame::Msg(m) => m,
                f => panic!("expected only messages before PONG, got {f:?}"),
            })
            .collect()
    }

    /// Reads the next whole frame.
    pub async fn next_frame(&mut self) -> Frame {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return frame;
            }
            let show_wait = |got: &[u8]| format!("waiting for a frame in {}", show(got));
            if !self.fill(deadline, &show_wait).await {
                panic!("connection closed while waiting for a frame; got {}", show(&self.buf));
            }
        }
    }

    /// Reads the next `n` messages (server PINGs answered and left out; anything else fails).
    pub async fn read_msgs(&mut self, n: usize) -> Vec<Msg> {
        let deadline = Instant::now() + TIMEOUT;
        let mut msgs = Vec::with_capacity(n);
        while msgs.len() < n {
            let mut at = 0;
            while msgs.len() < n {
                let Some((frame, used)) = parse_frame(&self.buf[at..]) else { break };
                at += used;
                match frame {
                    Frame::Msg(m) => msgs.push(m),
                    Frame::Ping => self.send("PONG\r\n").await,
                    f => panic!("expected messages, got {f:?} after {} of {n}", msgs.len()),
                }
            }
            self.buf.drain(..at);
            if msgs.len() < n {
                let got = msgs.len();
                let show_wait = |_: &[u8]| format!("waiting for messages: {got} of {n}");
                if !self.fill(deadline, &show_wait).await {
                    panic!("connection closed after {got} of {n} messages");
                }
            }
        }
        msgs
    }

    /// Reads until the server closes the connection (EOF or reset) and returns what arrived.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        let show_wait = |got: &[u8]| format!("waiting for the connection to close; got {} bytes", got.len());
        while self.fill(deadline, &show_wait).await {}
        std::mem::take(&mut self.buf)
    }

    /// The underlying stream, for tests that manage reads themselves.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One message as a client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The subject it was published to.
    pub subject: String,
    /// The subscription it was delivered for.
    pub sid: String,
    /// The reply subject, if any.
    pub reply: Option<String>,
    /// The header block, for HMSG.
    pub headers: Option<Vec<u8>>,
    /// The body.
    pub payload: Vec<u8>,
}

/// One thing the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `MSG` or `HMSG`.
    Msg(Msg),
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK`.
    Ok,
    /// `-ERR` with its text.
    Err(String),
    /// `INFO` with its JSON.
    Info(String),
}

/// Parses the first whole frame in `data`, with the bytes it took; `None` when it is not all
/// there yet. Malformed input fails the test.
pub fn parse_frame(data: &[u8]) -> Option<(Frame, usize)> {
    let nl = data.iter().position(|&b| b == b'\n')?;
    assert!(nl > 0 && data[nl - 1] == b'\r', "control line not ended by CRLF: {}", show(&data[..=nl]));
    let line = std::str::from_utf8(&data[..nl - 1]).expect("control line is UTF-8");
    let line_len = nl + 1;
    let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
    let frame = match op {
        "PING" => Frame::Ping,
        "PONG" => Frame::Pong,
        "+OK" => Frame::Ok,
        "-ERR" => Frame::Err(rest.to_string()),
        "INFO" => Frame::Info(rest.to_string()),
        "MSG" | "HMSG" => {
            let args: Vec<&str> = rest.split(' ').collect();
            let hmsg = op == "HMSG";
            let sizes = if hmsg { 2 } else { 1 };
            assert!(args.len() == 2 + sizes || args.len() == 3 + sizes, "bad {op} line: {line:?}");
            let reply = (args.len() == 3 + sizes).then(|| args[2].to_string());
            let total: usize = args[args.len() - 1].parse().expect("size");
            let hlen: usize = if hmsg { args[args.len() - 2].parse().expect("header size") } else { 0 };
            if data.len() < line_len + total + 2 {
                return None;
            }
            let body = &data[line_len..line_len + total];
            assert_eq!(&data[line_len + total..line_len + total + 2], b"\r\n", "payload not ended by CRLF");
            let msg = Msg {
                subject: args[0].to_string(),
                sid: args[1].to_string(),
                reply,
                headers: hmsg.then(|| body[..hlen].to_vec()),
                payload: body[hlen..].to_vec(),
            };
            return Some((Frame::Msg(msg), line_len + total + 2));
        }
        _ => panic!("unexpected line from the server: {line:?}"),
    };
    Some((frame, line_len))
}

/// Every frame in `data`, which must end at a frame boundary.
pub fn parse_frames(mut data: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !data.is_empty() {
        let (frame, used) = parse_frame(data).unwrap_or_else(|| panic!("incomplete frame at the end: {}", show(data)));
        frames.push(frame);
        data = &data[used..];
    }
    frames
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written into `dir`: the TLS
/// options that serve it, and a client connector that trusts it.
pub fn self_signed_tls(dir: &std::path::Path) -> (courier::tls::TlsOptions, tokio_rustls::TlsConnector) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let tls = courier::tls::TlsOptions {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
        ..courier::tls::TlsOptions::default()
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    (tls, tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
}

/// A plain HTTP/1.1 GET; returns the status line, the headers and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = timeout(TIMEOUT, TcpStream::connect(addr)).await.unwrap().unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    timeout(TIMEOUT, stream.read_to_end(&mut raw)).await.expect("response in time").unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let body = if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status.to_string(), headers.to_string(), body)
}

pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A JWT with `claims`, signed by `signer` (an operator, account or user key), as nsc writes
/// them.
pub fn encode_jwt(claims: serde_json::Value, signer: &nkeys::KeyPair) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let h = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{h}.{p}");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signer.sign(signed.as_bytes()).unwrap()))
}
