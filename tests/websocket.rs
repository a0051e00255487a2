//! WebSocket: a client crate's frames (split at odd places, compressed or not, masked or not,
//! over TLS) carry the NATS protocol to and from TCP clients; bad origins and bad frames get
//! nats-server's answers.

mod common;

use std::net::SocketAddr;

use common::{encode_jwt, options, TestServer, TIMEOUT};
use courier::options::WebsocketOptions;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn ws_server(ws: WebsocketOptions) -> TestServer {
    let ws = WebsocketOptions { host: Some("127.0.0.1".into()), port: 0, ..ws };
    TestServer::start(courier::Options { websocket: Some(ws), ..options() }).await
}

fn plain() -> WebsocketOptions {
    WebsocketOptions { no_tls: true, ..WebsocketOptions::default() }
}

fn ws_addr(s: &TestServer) -> SocketAddr {
    s.handle.websocket_addr().expect("websocket is on")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn ws_connect(addr: SocketAddr) -> Ws {
    let (ws, response) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(format!("ws://{addr}/")))
        .await
        .expect("in time")
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

/// Reads binary frames until their bytes contain `want`; returns everything read.
async fn read_until<S>(ws: &mut S, want: &str) -> String
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut text = String::new();
    while !text.contains(want) {
        match tokio::time::timeout(TIMEOUT, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Binary(b))) => text.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?} while waiting for {want:?}; so far {text:?}"),
        }
    }
    text
}

#[tokio::test]
async fn a_websocket_client_talks_with_tcp_clients() {
    let s = ws_server(plain()).await;
    let mut ws = ws_connect(ws_addr(&s)).await;
    let info = read_until(&mut ws, "\r\n").await;
    assert!(info.starts_with("INFO {"), "{info}");
    assert!(!info.contains("\"tls_required\":true"), "{info}");
    // An operation may span frames, split anywhere.
    for part in
        ["CONNECT {\"verbose\":false,\"headers\":true,\"protocol\":1}\r\nPI", "NG\r\nSUB ws.", "in 1\r\nPING\r\n"]
    {
        ws.send(Message::binary(part.as_bytes().to_vec())).await.unwrap();
    }
    read_until(&mut ws, "PONG\r\nPONG\r\n").await;

    let tcp = async_nats::connect(s.url()).await.unwrap();
    let mut from_ws = tcp.subscribe("ws.out").await.unwrap();
    tcp.flush().await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Origin-Client", "tcp");
    tcp.publish_with_headers("ws.in", headers, "hello browser".into()).await.unwrap();
    let got = read_until(&mut ws, "hello browser").await;
    assert!(got.starts_with("HMSG ws.in 1 "), "{got}");
    assert!(got.contains("Origin-Client: tcp"), "{got}");
    // Text frames are accepted too, as nats-server accepts them.
    ws.send(Message::text("PUB ws.out 8\r\nfrom web\r\n")).await.unwrap();
    let m = tokio::time::timeout(TIMEOUT, from_ws.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"from web");
}

#[tokio::test]
async fn request_reply_crosses_between_websocket_and_tcp() {
    let s = ws_server(plain()).await;
    let mut ws = ws_connect(ws_addr(&s)).await;
    read_until(&mut ws, "\r\n").await;
    ws.send(Message::binary(&b"CONNECT {\"verbose\":false}\r\nSUB svc.time 7\r\nPING\r\n"[..])).await.unwrap();
    read_until(&mut ws, "PONG\r\n").await;
    let tcp = async_nats::connect(s.url()).await.unwrap();
    let request = tokio::spawn(async move { tcp.request("svc.time", "now?".into()).await });
    let msg = read_until(&mut ws, "now?").await;
    // MSG svc.time 7 <reply> 4
    let reply = msg.split_whitespace().nth(3).expect("reply subject").to_string();
    ws.send(Message::binary(format!("PUB {reply} 4\r\nnoon\r\n").into_bytes())).await.unwrap();
    let answer = tokio::time::timeout(TIMEOUT, request).await.unwrap().unwrap().expect("answered");
    assert_eq!(&answer.payload[..], b"noon");
}

/// Sends an upgrade request with `extra` headers over raw TCP; returns the socket and the
/// response head.
async fn raw_upgrade(addr: SocketAddr, extra: &str) -> (TcpStream, String, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut chunk)).await.expect("in time").unwrap();
        assert!(n > 0, "closed before answering: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    (tcp, head, buf[head_end..].to_vec())
}

#[tokio::test]
async fn a_bad_origin_gets_403_as_on_nats_server() {
    let s = ws_server(WebsocketOptions { allowed_origins: vec!["http://good.example:8080".into()], ..plain() }).await;
    let (mut tcp, head, mut rest) = raw_upgrade(ws_addr(&s), "Origin: http://bad.example\r\n").await;
    assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
    assert!(head.contains("Sec-Websocket-Version: 13\r\n"), "{head}");
    let _ = tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut rest)).await;
    assert!(String::from_utf8_lossy(&rest).contains("Forbidden\n"));
    let (_, head, _) = raw_upgrade(ws_addr(&s), "Origin: http://good.example:8080\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
}

fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![first_byte];
    assert!(payload.len() < 65536);
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Reads one server frame (unmasked) from `buf`, reading more from `tcp` as needed.
async fn server_frame(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
    loop {
        if buf.len() >= 2 {
            let (len, at) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
                126 | 127 => (usize::MAX, 0),
                n => (n as usize, 2),
            };
            if len != usize::MAX && buf.len() >= at + len {
                let first = buf[0];
                let payload = buf[at..at + len].to_vec();
                buf.drain(..at + len);
                return (first, payload);
            }
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut chunk)).await.expect("a frame in time").unwrap();
        assert!(n > 0, "closed while waiting for a frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn an_unmasked_frame_closes_with_a_protocol_error() {
    let s = ws_server(plain()).await;
    let (mut tcp, head, mut buf) = raw_upgrade(ws_addr(&s), "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (first, info) = server_frame(&mut tcp, &mut buf).await;
    assert_eq!(first, 0x82);
    assert!(info.starts_with(b"INFO "));
    // An unmasked binary frame.
    tcp.write_all(&[0x82, 6]).await.unwrap();
    tcp.write_all(b"PING\r\n").await.unwrap();
    let (first, close) = server_frame(&mut tcp, &mut buf).await;
    assert_eq!(first, 0x88, "a close frame");
    assert_eq!(&close[..2], &1002u16.to_be_bytes());
    assert_eq!(&close[2..], b"mask bit missing");
}

#[tokio::test]
async fn nats_no_masking_lets_a_client_send_plain_frames() {
    let s = ws_server(plain()).await;
    let (mut tcp, head, mut buf) = raw_upgrade(ws_addr(&s), "Nats-No-Masking: true\r\n").await;
    assert!(head.contains("Nats-No-Masking: true\r\n"), "{head}");
    server_frame(&mut tcp, &mut buf).await;
    tcp.write_all(&[0x82, 6]).await.unwrap();
    tcp.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(server_frame(&mut tcp, &mut buf).await, (0x82, b"PONG\r\n".to_vec()));
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::new();
    let mut d = flate2::Decompress::new(false);
    out.reserve(1 << 16);
    d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync).expect("inflates");
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, flate2::FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

#[tokio::test]
async fn compression_is_negotiated_and_used_both_ways() {
    let s = ws_server(WebsocketOptions { compression: true, ..plain() }).await;
    let (mut tcp, head, mut buf) =
        raw_upgrade(ws_addr(&s), "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n").await;
    assert!(
        head.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ),
        "{head}"
    );
    // INFO is over 64 bytes: compressed (RSV1 set).
    let (first, info) = server_frame(&mut tcp, &mut buf).await;
    assert_eq!(first, 0xc2, "FIN, RSV1, binary");
    assert!(inflate(&info).starts_with(b"INFO {"));
    // A compressed request; the short PONG comes back uncompressed.
    let frame = masked_frame(0xc2, &deflate(b"CONNECT {\"verbose\":false}\r\nSUB big 1\r\nPING\r\n"));
    tcp.write_all(&frame).await.unwrap();
    assert_eq!(server_frame(&mut tcp, &mut buf).await, (0x82, b"PONG\r\n".to_vec()));
    let tcp_client = async_nats::connect(s.url()).await.unwrap();
    tcp_client.publish("big", vec![b'q'; 1000].into()).await.unwrap();
    tcp_client.flush().await.unwrap();
    let (first, msg) = server_frame(&mut tcp, &mut buf).await;
    assert_eq!(first, 0xc2);
    let msg = inflate(&msg);
    assert!(msg.starts_with(b"MSG big 1 1000\r\nqqqq"), "{:?}", String::from_utf8_lossy(&msg[..20]));
    assert!(msg.len() < 1100);
}

#[tokio::test]
async fn without_compression_configured_none_is_offered() {
    let s = ws_server(plain()).await;
    let (_, head, _) = raw_upgrade(ws_addr(&s), "Sec-WebSocket-Extensions: permessage-deflate\r\n").await;
    assert!(!head.contains("permessage-deflate"), "{head}");
}

#[tokio::test]
async fn a_ping_frame_gets_a_pong_on_an_idle_connection() {
    let s = ws_server(plain()).await;
    let (mut tcp, _, mut buf) = raw_upgrade(ws_addr(&s), "").await;
    server_frame(&mut tcp, &mut buf).await;
    tcp.write_all(&masked_frame(0x89, b"are you there")).await.unwrap();
    assert_eq!(server_frame(&mut tcp, &mut buf).await, (0x8a, b"are you there".to_vec()));
}

#[tokio::test]
async fn websocket_clients_show_in_connz() {
    let s = TestServer::start(courier::Options {
        websocket: Some(WebsocketOptions { host: Some("127.0.0.1".into()), ..plain() }),
        http_port: Some(0),
        ..options()
    })
    .await;
    let mut ws = ws_connect(ws_addr(&s)).await;
    read_until(&mut ws, "\r\n").await;
    ws.send(Message::binary(&b"CONNECT {\"verbose\":false,\"name\":\"dashboard\"}\r\nPING\r\n"[..])).await.unwrap();
    read_until(&mut ws, "PONG\r\n").await;
    let http = s.handle.monitor_addr().unwrap();
    let (_, _, body) = common::http_get(http, "/connz").await;
    let connz: serde_json::Value = serde_json::from_str(&body).unwrap();
    let c = &connz["connections"][0];
    assert_eq!(c["type"], "websocket", "{connz}");
    assert_eq!(c["name"], "dashboard");
    let (_, _, metrics) = common::http_get(http, "/metrics").await;
    assert!(metrics.contains("\ncourier_websocket_connections 1\n"));
}

#[tokio::test]
async fn websocket_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, connector) = common::self_signed_tls(dir.path());
    let s = ws_server(WebsocketOptions { tls: Some(tls), ..WebsocketOptions::default() }).await;
    let addr = ws_addr(&s);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls_stream = connector.connect(name, tcp).await.expect("TLS");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{}/", addr.port()), tls_stream)
        .await
        .expect("upgrade over TLS");
    read_until(&mut ws, "\r\n").await;
    ws.send(Message::binary(&b"CONNECT {\"verbose\":false}\r\nPING\r\n"[..])).await.unwrap();
    read_until(&mut ws, "PONG\r\n").await;
}

#[test]
fn a_websocket_block_without_tls_is_refused_as_on_nats_server() {
    let map = courier::conf::parse_str("websocket { port: 8080 }", "ws.conf", None).unwrap();
    let err = courier::config::apply(&map, &mut options()).expect_err("refused");
    assert!(err.to_string().contains("websocket requires TLS configuration"), "{err}");
    let map =
        courier::conf::parse_str("websocket { port: 8080, no_tls: true, compression: true }", "ws.conf", None).unwrap();
    let mut opts = options();
    courier::config::apply(&map, &mut opts).expect("no_tls accepted");
    let ws = opts.websocket.expect("websocket");
    assert!(ws.compression && ws.no_tls && ws.port == 8080);
}

#[tokio::test]
async fn websocket_clients_are_still_served_after_a_bad_one() {
    let s = ws_server(plain()).await;
    // Garbage instead of an upgrade.
    let mut bad = TcpStream::connect(ws_addr(&s)).await.unwrap();
    bad.write_all(b"\x16\x03\x01 not http at all\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, bad.read_to_end(&mut rest)).await;
    assert!(
        String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 400 Bad Request"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    let mut ws = ws_connect(ws_addr(&s)).await;
    read_until(&mut ws, "INFO").await;
}

/// Where the nats.ws bundle is: `.ci/run` installs it from the npm registry.
fn nats_ws_bundle() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/npm/node_modules/nats.ws/esm/nats.js");
    path.is_file().then_some(path)
}

fn find_chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(b).is_file()))
    })
}

/// A child process killed (and reaped) when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves the test page and the bundle, and hands on what the page posts to `/result`.
async fn serve_page(
    listener: tokio::net::TcpListener,
    page: String,
    bundle: Vec<u8>,
    results: tokio::sync::mpsc::UnboundedSender<String>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let (page, bundle, results) = (page.clone(), bundle.clone(), results.clone());
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let head_end = loop {
                let mut chunk = [0u8; 4096];
                let Ok(n) = stream.read(&mut chunk).await else { return };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let (status, kind, body): (&str, &str, Vec<u8>) = if head.starts_with("GET / ") {
                ("200 OK", "text/html", page.into_bytes())
            } else if head.starts_with("GET /nats.js ") {
                ("200 OK", "text/javascript", bundle)
            } else if head.starts_with("POST /result ") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = results.send(String::from_utf8_lossy(&buf[head_end..]).to_string());
                ("200 OK", "text/plain", b"ok".to_vec())
            } else {
                ("404 Not Found", "text/plain", b"no".to_vec())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        });
    }
}

/// The official browser client, nats.ws from the npm registry, in headless Chromium: it
/// connects over WebSocket, answers a request from a Rust client, and gets its own request
/// answered by one. Needs Chromium and the bundle (`.ci/run` installs both); without them the
/// test says so and passes, except under CI.
#[tokio::test]
async fn nats_ws_in_a_real_browser_talks_to_rust_clients() {
    let (Some(chromium), Some(bundle)) = (find_chromium(), nats_ws_bundle()) else {
        assert!(std::env::var_os("CI").is_none(), "chromium and target/npm/node_modules/nats.ws are needed under CI");
        eprintln!("skipped: chromium or the nats.ws bundle is not installed");
        return;
    };
    let s = ws_server(plain()).await;
    let ws = ws_addr(&s);
    let rust = async_nats::connect(s.url()).await.unwrap();
    let mut service = rust.subscribe("rust.svc").await.unwrap();
    rust.flush().await.unwrap();
    let responder = {
        let rust = rust.clone();
        tokio::spawn(async move {
            if let Some(m) = service.next().await {
                let text = format!("pong:{}", String::from_utf8_lossy(&m.payload));
                rust.publish(m.reply.expect("a reply subject"), text.into()).await.unwrap();
                rust.flush().await.unwrap();
            }
        })
    };
    let page = format!(
        r#"<!doctype html><html><body><script type="module">
import {{ connect, StringCodec }} from "/nats.js";
const sc = StringCodec();
const report = (text) => fetch("/result", {{ method: "POST", body: text }});
try {{
  const nc = await connect({{ servers: "ws://{ws}" }});
  const sub = nc.subscribe("browser.echo", {{ max: 1 }});
  (async () => {{ for await (const m of sub) {{ m.respond(sc.encode("echo:" + sc.decode(m.data))); }} }})();
  await nc.flush();
  await report("ready");
  const r = await nc.request("rust.svc", sc.encode("from the browser"), {{ timeout: 5000 }});
  await report(sc.decode(r.data));
}} catch (e) {{
  await report("error: " + e);
}}
</script></body></html>"#
    );
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let (tx, mut results) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(serve_page(http, page, std::fs::read(bundle).unwrap(), tx));
    let profile = tempfile::tempdir().unwrap();
    let _browser = KillOnDrop(
        std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &format!("--user-data-dir={}", profile.path().display()),
                &format!("http://{http_addr}/"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromium"),
    );
    let wait = std::time::Duration::from_secs(30);
    let ready = tokio::time::timeout(wait, results.recv()).await.expect("the page reported in time").unwrap();
    assert_eq!(ready, "ready");
    let echo = tokio::time::timeout(TIMEOUT, rust.request("browser.echo", "hi from rust".into()))
        .await
        .expect("in time")
        .expect("the browser answered");
    assert_eq!(&echo.payload[..], b"echo:hi from rust");
    let answer = tokio::time::timeout(wait, results.recv()).await.expect("the page reported in time").unwrap();
    assert_eq!(answer, "pong:from the browser");
    responder.await.unwrap();
}

/// Sends CONNECT (with `fields`) and PING; returns what came back up to PONG or an error.
async fn login_over_ws(ws: &mut Ws, fields: &str) -> String {
    let info = read_until(ws, "\r\n").await;
    assert!(info.starts_with("INFO "), "{info}");
    ws.send(Message::binary(format!("CONNECT {{\"verbose\":false{fields}}}\r\nPING\r\n").into_bytes())).await.unwrap();
    let mut text = String::new();
    while !text.contains("PONG\r\n") && !text.contains("-ERR") {
        match tokio::time::timeout(TIMEOUT, ws.next()).await.expect("an answer in time") {
            Some(Ok(Message::Binary(b))) => text.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    text
}

fn configured_opts(text: &str) -> courier::Options {
    let map = courier::conf::parse_str(text, "ws.conf", None).expect("parse");
    let mut opts = options();
    courier::config::apply(&map, &mut opts).expect("apply");
    opts.port = 0;
    opts
}

#[tokio::test]
async fn the_websocket_listener_has_its_own_authorization_and_no_auth_user() {
    let s = TestServer::start(configured_opts(
        r#"
        authorization { users [ {user: alice, password: a1}, {user: guest, password: g1, permissions: {publish: "public.>", subscribe: "public.>"}} ] }
        websocket { host: "127.0.0.1", port: 0, no_tls: true, authorization { user: browser, password: b1 } }
        "#,
    ))
    .await;
    let mut ws = ws_connect(ws_addr(&s)).await;
    assert!(login_over_ws(&mut ws, r#","user":"browser","pass":"b1""#).await.contains("PONG"));
    let mut ws = ws_connect(ws_addr(&s)).await;
    let refused = login_over_ws(&mut ws, r#","user":"alice","pass":"a1""#).await;
    assert!(refused.contains("-ERR 'Authorization Violation'"), "{refused}");
    // TCP clients keep the server's users.
    let tcp = async_nats::ConnectOptions::with_user_and_password("alice".into(), "a1".into()).connect(s.url()).await;
    assert!(tcp.is_ok());
    let mut raw = TcpStream::connect(s.addr).await.unwrap();
    raw.write_all(b"CONNECT {\"verbose\":false,\"user\":\"browser\",\"pass\":\"b1\"}\r\nPING\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, raw.read_to_end(&mut answer)).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("-ERR 'Authorization Violation'"),
        "the listener's user is not a TCP user: {}",
        String::from_utf8_lossy(&answer)
    );

    let s = TestServer::start(configured_opts(
        r#"
        authorization { users [ {user: alice, password: a1}, {user: guest, password: g1, permissions: {publish: "public.>", subscribe: "public.>"}} ] }
        websocket { host: "127.0.0.1", port: 0, no_tls: true, no_auth_user: guest }
        "#,
    ))
    .await;
    let mut ws = ws_connect(ws_addr(&s)).await;
    assert!(login_over_ws(&mut ws, "").await.contains("PONG"), "a browser without credentials is guest");
    ws.send(Message::binary(&b"PUB private.x 2\r\nno\r\nPING\r\n"[..])).await.unwrap();
    let answer = read_until(&mut ws, "PONG").await;
    assert!(
        answer.contains("-ERR 'Permissions Violation for Publish to \"private.x\"'"),
        "guest's permissions apply: {answer}"
    );
}

#[test]
fn a_websocket_no_auth_user_must_be_a_user() {
    let map = courier::conf::parse_str(
        "authorization { users [ {user: a, password: b} ] }\nwebsocket { port: 1, no_tls: true, no_auth_user: ghost }",
        "ws.conf",
        None,
    )
    .unwrap();
    let err = courier::config::apply(&map, &mut options()).expect_err("refused");
    assert!(err.to_string().contains("websocket no_auth_user: \"ghost\" not present as user or nkey"), "{err}");
}

#[tokio::test]
async fn a_browser_can_bring_its_jwt_in_the_configured_cookie() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let op_jwt = encode_jwt(serde_json::json!({"iss": operator.public_key(), "sub": operator.public_key()}), &operator);
    let acc_jwt = encode_jwt(
        serde_json::json!({"iss": operator.public_key(), "sub": account.public_key(), "nats": {}}),
        &operator,
    );
    let user = nkeys::KeyPair::new_user();
    let bearer = encode_jwt(
        serde_json::json!({"iss": account.public_key(), "sub": user.public_key(), "nats": {"bearer_token": true}}),
        &account,
    );
    let trust =
        courier::auth::Trust::new([op_jwt.as_str()], [(account.public_key().as_str(), acc_jwt.as_str())]).unwrap();
    let ws = WebsocketOptions {
        host: Some("127.0.0.1".into()),
        no_tls: true,
        jwt_cookie: Some("nats_jwt".into()),
        ..WebsocketOptions::default()
    };
    let s = TestServer::start(courier::Options {
        authorization: courier::auth::Authorization { trust: Some(trust), ..Default::default() },
        websocket: Some(ws),
        ..options()
    })
    .await;
    let addr = ws_addr(&s);
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/"))
            .unwrap();
    request.headers_mut().insert("Cookie", format!("theme=dark; nats_jwt={bearer}").parse().unwrap());
    let (mut with_cookie, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
    assert!(login_over_ws(&mut with_cookie, "").await.contains("PONG"), "the cookie's JWT logs the browser in");
    let mut without = ws_connect(addr).await;
    assert!(login_over_ws(&mut without, "").await.contains("-ERR 'Authorization Violation'"));
}
