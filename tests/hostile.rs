//! Hostile and broken clients over raw TCP: malformed sizes and subjects, oversized lines, bad
//! CONNECT JSON, clients that trickle bytes, and thousands of connections dropped mid-payload.
//!
//! Where nats-server 2.9.10 answers, the exact bytes it sends (and whether it closes) are
//! asserted. After each case the server must still be healthy: a fresh connection gets PONG, and
//! the subscription and connection counts are back where they started.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{eventually, options, show, RawClient, TestServer, TIMEOUT};
use courier::auth::Authorization;
use courier::proto::{ClientOp, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const UNKNOWN_OP: &str = "-ERR 'Unknown Protocol Operation'\r\n";
const MAX_CONTROL_LINE: &str = "-ERR 'maximum control line exceeded'\r\n";

/// What the server holds before a case: subscriptions and connections.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    subs: usize,
    conns: usize,
}

impl Baseline {
    fn of(s: &TestServer) -> Baseline {
        Baseline { subs: s.sub_count(), conns: s.connections() }
    }

    /// Waits until the counts are back to this baseline, then checks a fresh client gets PONG
    /// (and waits for that client to be gone too, so the next case starts from the baseline).
    async fn restored(self, s: &TestServer, case: &str) {
        self.restored_with(s, case, None).await;
    }

    /// As [`Baseline::restored`], with the fresh client sending `connect_json` first (where the
    /// server requires authentication).
    async fn restored_with(self, s: &TestServer, case: &str, connect_json: Option<&str>) {
        let conns = || s.connections() == self.conns;
        eventually(&format!("connections back to {} after {case}", self.conns), conns).await;
        eventually(&format!("subscriptions back to {} after {case}", self.subs), || s.sub_count() == self.subs).await;
        match connect_json {
            Some(json) => s.raw_with(json).await.ping_pong().await,
            None => s.assert_healthy().await,
        }
        eventually(&format!("connections back to {} after the health check", self.conns), conns).await;
    }
}

/// Sends `input` on a fresh connection (after `connect_json`, if given, as CONNECT), then expects
/// exactly `answer` and the connection closed; checks the server is as before.
async fn closes_with(s: &TestServer, connect_json: Option<&str>, input: &[u8], answer: &str) {
    let before = Baseline::of(s);
    let mut c = match connect_json {
        Some(json) => s.raw_with(json).await,
        None => s.raw().await,
    };
    c.send(input).await;
    if !answer.is_empty() {
        c.expect(answer).await;
    }
    c.expect_closed().await;
    drop(c);
    before.restored(s, &show(input)).await;
}

// ---- sizes ------------------------------------------------------------------------------------

/// Sizes nats-server cannot read (too many digits, a sign) and header blocks longer than the
/// message close the connection without a `-ERR`, before and after CONNECT.
#[tokio::test]
async fn bad_sizes_close_silently() {
    let s = TestServer::start_default().await;
    let headers = Some(r#"{"verbose":false,"headers":true}"#);
    let quiet = Some(r#"{"verbose":false}"#);
    let cases: &[(Option<&str>, &[u8])] = &[
        (None, b"PUB a 99999999999999999999\r\n"),
        (quiet, b"PUB a 99999999999999999999\r\nPING\r\n"),
        (quiet, b"PUB a reply 1234567890\r\n"),
        (None, b"PUB a -1\r\n"),
        (quiet, b"PUB a -1\r\nPING\r\n"),
        (quiet, b"PUB a +1\r\nx\r\n"),
        (headers, b"HPUB a 10 5\r\n"),
        (headers, b"HPUB a r 6 5\r\nNATS/\r\n"),
        (headers, b"HPUB a -1 5\r\n"),
        (headers, b"HPUB a 2 99999999999999999999\r\n"),
        (headers, b"HPUB a 99999999999999999999 2\r\n"),
        // Without headers:true in CONNECT, even a well-formed HPUB closes.
        (quiet, b"HPUB a 10 5\r\n"),
        (quiet, b"HPUB a 12 12\r\nNATS/1.0\r\n\r\n\r\n"),
    ];
    for &(connect, input) in cases {
        closes_with(&s, connect, input, "").await;
    }
}

/// A publish larger than max_payload is refused with nats-server's text before any payload.
#[tokio::test]
async fn payload_over_the_limit_is_refused() {
    let s = TestServer::start(courier::Options { max_payload: 1024, ..options() }).await;
    closes_with(&s, None, b"PUB a 1025\r\n", "-ERR 'Maximum Payload Violation'\r\n").await;
    closes_with(&s, Some(r#"{"verbose":false}"#), b"PUB a 999999999\r\n", "-ERR 'Maximum Payload Violation'\r\n").await;
}

// ---- subjects ---------------------------------------------------------------------------------

/// NUL bytes and invalid UTF-8 are ordinary bytes in subjects, queues, reply subjects and sids:
/// nats-server accepts and delivers them as they are, in pedantic mode too.
#[tokio::test]
async fn nul_and_invalid_utf8_in_subjects_are_plain_bytes() {
    let s = TestServer::start_default().await;
    let before = Baseline::of(&s);
    // Pedantic stays on: CONNECT only turns verbose off.
    let mut c = s.raw_quiet().await;
    c.send(b"SUB a.\x00b 1\r\nSUB c.\xff\xfe 2\r\nSUB q q\x00\xff 3\r\nSUB r \x00\xff\r\n").await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), before.subs + 4);
    c.send(b"PUB a.\x00b 1\r\nx\r\nPUB c.\xff\xfe r\x00\xff 1\r\ny\r\nPUB q 1\r\nz\r\nPUB r 1\r\nw\r\nPING\r\n").await;
    c.expect(b"MSG a.\x00b 1 1\r\nx\r\nMSG c.\xff\xfe 2 r\x00\xff 1\r\ny\r\nMSG q 3 1\r\nz\r\nMSG r \x00\xff 1\r\nw\r\nPONG\r\n")
        .await;

    // Verbose acknowledges each of them.
    let mut v = s.raw().await;
    v.send(b"CONNECT {\"headers\":true}\r\nSUB \xff.> 9\r\nHPUB \xff.\x00 12 13\r\nNATS/1.0\r\n\r\nx\r\nPING\r\n")
        .await;
    v.expect(b"+OK\r\n+OK\r\n+OK\r\nHMSG \xff.\x00 9 12 13\r\nNATS/1.0\r\n\r\nx\r\nPONG\r\n").await;

    c.send(b"UNSUB 1\r\nUNSUB 2\r\nUNSUB 3\r\nUNSUB \x00\xff\r\nPUB a.\x00b 1\r\nx\r\nPING\r\n").await;
    c.expect("PONG\r\n").await;
    assert_eq!(s.sub_count(), before.subs + 1, "only the verbose client's subscription is left");
    drop((c, v));
    before.restored(&s, "NUL and invalid UTF-8 subjects").await;
}

// ---- CONNECT ----------------------------------------------------------------------------------

/// CONNECT that is not a JSON object of the right shape closes without a `-ERR`.
#[tokio::test]
async fn connect_that_is_not_json_closes_silently() {
    let s = TestServer::start_default().await;
    let deep_arrays = format!("CONNECT {}\r\nPING\r\n", "[".repeat(2000));
    let deep_closed = format!("CONNECT {}{}\r\n", "[".repeat(1000), "]".repeat(1000));
    let cases: Vec<&[u8]> = vec![
        deep_arrays.as_bytes(),
        deep_closed.as_bytes(),
        b"CONNECT hello\r\nPING\r\n",
        b"CONNECT\r\nPING\r\n",
        b"CONNECT []\r\n",
        b"CONNECT \"verbose\"\r\n",
        b"CONNECT {\"verbose\":false\r\n",
        b"CONNECT {\"verbose\":1}\r\n",
        b"CONNECT {\"verbose\":false}}\r\n",
    ];
    for input in cases {
        closes_with(&s, None, input, "").await;
    }
    // And after a CONNECT that was accepted.
    closes_with(&s, Some(r#"{"verbose":false}"#), b"CONNECT {\r\n", "").await;
}

/// Deep nesting inside a field the server does not know is skipped, as nats-server does.
#[tokio::test]
async fn deeply_nested_unknown_connect_field_is_accepted() {
    let s = TestServer::start_default().await;
    let mut c = s.raw().await;
    let nested = format!("{}1{}", r#"{"a":"#.repeat(500), "}".repeat(500));
    c.send(format!("CONNECT {{\"x\":{nested},\"verbose\":false}}\r\nPING\r\n")).await;
    c.expect("PONG\r\n").await;
    let nested = format!("{}{}", "[".repeat(1500), "]".repeat(1500));
    c.send(format!("CONNECT {{\"x\":{nested}}}\r\nPING\r\n")).await;
    c.expect("PONG\r\n").await;
}

/// Bytes that are not UTF-8 inside a CONNECT string: nats-server (Go's JSON decoder) takes them
/// as U+FFFD and accepts the CONNECT. Refusing the JSON instead would close such a client without
/// a `-ERR`, so that it could not connect at all.
#[tokio::test]
async fn invalid_utf8_in_connect_strings_is_accepted() {
    let s = TestServer::start_default().await;
    let mut c = s.raw().await;
    c.send(b"CONNECT {\"name\":\"caf\xe9\",\"lang\":\"\xff\xfe\"}\r\nPING\r\n").await;
    c.expect("+OK\r\nPONG\r\n").await;
}

// ---- control lines and payload framing --------------------------------------------------------

/// A control line whose arguments pass max_control_line is refused, whether its line end has
/// arrived or not.
#[tokio::test]
async fn control_lines_past_the_limit() {
    let s = TestServer::start_default().await;
    let long = "a".repeat(5000);
    closes_with(&s, None, format!("SUB {long} 1\r\n").as_bytes(), MAX_CONTROL_LINE).await;
    closes_with(&s, None, format!("SUB {long}").as_bytes(), MAX_CONTROL_LINE).await;
    closes_with(&s, None, format!("PUB {long}").as_bytes(), MAX_CONTROL_LINE).await;
    closes_with(&s, Some(r#"{"verbose":false}"#), format!("PUB {long} 1\r\nx\r\n").as_bytes(), MAX_CONTROL_LINE).await;
    closes_with(&s, None, format!("CONNECT {{\"name\":\"{long}\"}}\r\n").as_bytes(), MAX_CONTROL_LINE).await;
    // Exactly at the limit is fine: 4094 + " 1" is 4096 bytes of arguments.
    let before = Baseline::of(&s);
    let mut c = s.raw_quiet().await;
    c.send(format!("SUB {} 1\r\n", "s".repeat(4094))).await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), before.subs + 1);
    drop(c);
    before.restored(&s, "a line at the limit").await;
    // Something that is no operation at all is refused as soon as that is known.
    closes_with(&s, None, "a".repeat(5000).as_bytes(), UNKNOWN_OP).await;
}

/// The limit counts arguments only, so whether a read ends between the `\r` and the `\n` of a
/// line exactly at the limit must not matter: nats-server accepts the line either way, and the
/// `\r` must not count as an argument byte while its `\n` has not arrived yet.
#[test]
fn control_line_at_the_limit_split_between_cr_and_lf() {
    let line = format!("SUB {} 1\r\n", "s".repeat(4094));
    let line = line.as_bytes();
    let mut whole = Parser::new(4096, 1024 * 1024);
    assert!(matches!(whole.parse(line), Ok(Some((ClientOp::Sub { .. }, n))) if n == line.len()));

    let mut split = Parser::new(4096, 1024 * 1024);
    let cr = line.len() - 1;
    assert_eq!(split.parse(&line[..cr]), Ok(None), "a read ending just after the \\r");
    assert!(matches!(split.parse(line), Ok(Some((ClientOp::Sub { .. }, n))) if n == line.len()));
}

/// A payload must be followed by exactly CRLF.
#[tokio::test]
async fn payload_without_its_crlf() {
    let s = TestServer::start_default().await;
    let quiet = Some(r#"{"verbose":false}"#);
    closes_with(&s, quiet, b"PUB a 2\r\nabc\r\n", UNKNOWN_OP).await;
    closes_with(&s, quiet, b"PUB a 2\r\nabXY", UNKNOWN_OP).await;
    closes_with(&s, quiet, b"PUB a 2\r\nab\n\r", UNKNOWN_OP).await;
    closes_with(&s, quiet, b"PUB a 0\r\n\n\r", UNKNOWN_OP).await;
    // A subscriber sees the good message before the bad one, and nothing of the bad one.
    let mut sub = s.raw_quiet().await;
    sub.send("SUB a 1\r\n").await;
    sub.ping_pong().await;
    closes_with(&s, quiet, b"PUB a 2\r\nok\r\nPUB a 2\r\nbad\r\n", UNKNOWN_OP).await;
    sub.send("PING\r\n").await;
    sub.expect("MSG a 1 2\r\nok\r\nPONG\r\n").await;
}

/// An empty line where an operation should start is an unknown operation to nats-server, which
/// says so and closes. Waiting for more bytes instead would never consume the empty line: nothing
/// the client sent after it would be processed, and all of it would stay buffered.
#[tokio::test]
async fn empty_line_is_an_unknown_operation() {
    let s = TestServer::start_default().await;
    closes_with(&s, None, b"\r\nPING\r\n", UNKNOWN_OP).await;
    closes_with(&s, None, b"\nPING\r\n", UNKNOWN_OP).await;
    let mut c = s.raw_quiet().await;
    c.send("PING\r\n\r\nPING\r\n").await;
    c.expect(format!("PONG\r\n{UNKNOWN_OP}")).await;
    c.expect_closed().await;
}

// ---- slow clients -----------------------------------------------------------------------------

/// Sends `bytes` one at a time, `gap` apart, until they run out or the server closes; returns
/// what the server sent meanwhile and whether it closed.
async fn trickle(stream: &mut TcpStream, bytes: &[u8], gap: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + TIMEOUT;
    let mut got = Vec::new();
    for &b in bytes {
        assert!(Instant::now() < deadline, "trickling took too long; got {}", show(&got));
        if stream.write_all(&[b]).await.is_err() {
            return (got, true);
        }
        // Pacing, not synchronisation: this is the slow client, listening while it dawdles.
        let wait_until = Instant::now() + gap;
        loop {
            match tokio::time::timeout_at(wait_until, stream.read_buf(&mut got)).await {
                Err(_) => break,
                Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
                Ok(Ok(_)) => {}
            }
        }
    }
    (got, false)
}

/// A normal client's work while a slow one dawdles: `rounds` publishes, each received back.
async fn pub_sub_rounds(c: &mut RawClient, rounds: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..rounds {
        let started = Instant::now();
        let body = format!("m{i}");
        c.send(format!("PUB work {}\r\n{body}\r\nPING\r\n", body.len())).await;
        c.expect(format!("MSG work 1 {}\r\n{body}\r\nPONG\r\n", body.len())).await;
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slowest
}

const TOKEN_CONNECT: &str = r#"{"verbose":false,"auth_token":"s3cr3t"}"#;

/// With authorization configured, a client that trickles its CONNECT one byte every 50 ms is
/// told `Authentication Timeout` and closed when the timeout passes; everyone else carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connect_hits_the_authentication_timeout() {
    let auth =
        Authorization { token: Some("s3cr3t".into()), timeout: Some(Duration::from_millis(500)), ..Default::default() };
    let s = TestServer::start(courier::Options { authorization: auth, ..options() }).await;
    let before = Baseline::of(&s);
    let mut normal = s.raw_with(TOKEN_CONNECT).await;
    normal.send("SUB work 1\r\n").await;
    normal.ping_pong().await;

    let mut slow = s.raw().await;
    assert_eq!(slow.info()["auth_required"], true);
    let connect = br#"CONNECT {"verbose":false,"auth_token":"s3cr3t","name":"a very slow client indeed"}"#;
    let started = Instant::now();
    let (slow_result, slowest) =
        tokio::join!(trickle(slow.stream(), connect, Duration::from_millis(50)), pub_sub_rounds(&mut normal, 20));
    let (got, closed) = slow_result;
    let elapsed = started.elapsed();
    assert!(closed, "the slow client was not closed; got {}", show(&got));
    assert_eq!(got, b"-ERR 'Authentication Timeout'\r\n", "got {}", show(&got));
    assert!(elapsed >= Duration::from_millis(450), "closed after {elapsed:?}, before the timeout");
    assert!(slowest < Duration::from_secs(2), "a normal round trip took {slowest:?}");
    println!("slow client closed after {elapsed:?}; slowest normal round trip {slowest:?}");

    normal.ping_pong().await;
    drop(normal);
    before.restored_with(&s, "a slow CONNECT with authorization", Some(TOKEN_CONNECT)).await;
    // Unauthenticated, a fresh client is refused as before.
    let mut refused = s.raw().await;
    refused.send("PING\r\n").await;
    refused.expect("-ERR 'Authorization Violation'\r\n").await;
    refused.expect_closed().await;
}

/// Without authorization a slow client may take its time: it holds a connection and nothing
/// else, others work meanwhile, and once its CONNECT is finally whole it is served normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connect_without_auth_is_harmless() {
    let s = TestServer::start_default().await;
    let before = Baseline::of(&s);
    let mut normal = s.raw_quiet().await;
    normal.send("SUB work 1\r\n").await;
    normal.ping_pong().await;

    let mut slow = s.raw().await;
    let connect = br#"CONNECT {"name":"slow"#;
    let (slow_result, slowest) =
        tokio::join!(trickle(slow.stream(), connect, Duration::from_millis(50)), pub_sub_rounds(&mut normal, 20));
    let (got, closed) = slow_result;
    assert!(!closed, "the slow client was closed; got {}", show(&got));
    // Nothing but the server's keepalive, should the trickle outlast the first PING.
    assert!(got.chunks(6).all(|c| c == b"PING\r\n"), "the slow client got {}", show(&got));
    assert!(slowest < Duration::from_secs(2), "a normal round trip took {slowest:?}");
    assert_eq!(s.connections(), before.conns + 2);
    assert_eq!(s.sub_count(), before.subs + 1);

    slow.send("\",\"verbose\":false}\r\nSUB work 2\r\nPING\r\n").await;
    slow.expect("PONG\r\n").await;
    normal.send("PUB work 1\r\nx\r\n").await;
    slow.expect("MSG work 2 1\r\nx\r\n").await;
    drop((slow, normal));
    before.restored(&s, "a slow CONNECT without authorization").await;
}

// ---- connection churn and memory --------------------------------------------------------------

/// The server process's resident memory, in KiB (the server runs in this process).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/self/status");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
}

const CHURN: usize = 2000;
const BATCH: usize = 100;

/// One hostile connection: `PUB x 1000` with only 100 bytes of its payload, then gone. Some
/// subscribe first (and wait until the server has the subscriptions), some never read INFO
/// (so closing resets), some close their side first.
async fn drop_mid_payload(addr: std::net::SocketAddr, i: usize) {
    let partial = [&b"PUB x 1000\r\n"[..], &[b'p'; 100]].concat();
    match i % 4 {
        0 => {
            let mut c = RawClient::connect(addr).await;
            c.send("CONNECT {\"verbose\":false}\r\nSUB x 1\r\nSUB y q 2\r\n").await;
            c.ping_pong().await;
            c.send(&partial).await;
        }
        1 => {
            let mut c = RawClient::connect(addr).await;
            c.send(&partial).await;
        }
        2 => {
            let mut c = RawClient::connect_bare(addr).await;
            c.send(&partial).await;
        }
        _ => {
            let mut c = RawClient::connect_bare(addr).await;
            c.send(&partial).await;
            let _ = c.stream().shutdown().await;
        }
    }
}

async fn churn(s: &TestServer) {
    for batch in 0..CHURN / BATCH {
        let conns = (0..BATCH).map(|j| drop_mid_payload(s.addr, batch * BATCH + j));
        timeout(TIMEOUT, futures::future::join_all(conns)).await.expect("a batch of churn connections took too long");
    }
}

/// Thousands of connections dropped halfway through a payload leave no subscription, no
/// connection and no memory behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_mid_payload_leaves_nothing_behind() {
    let s = TestServer::start_default().await;
    let before = Baseline::of(&s);
    let total_before = s.stats().total_connections.load(Ordering::SeqCst);
    // A subscriber that stays, and must receive nothing from the half-sent messages.
    let mut watcher = s.raw_quiet().await;
    watcher.send("SUB x 1\r\nSUB y 2\r\n").await;
    watcher.ping_pong().await;
    let watching = Baseline::of(&s);

    let rss_before = rss_kib();
    let started = Instant::now();
    churn(&s).await;
    eventually("churned connections to close", || s.connections() == watching.conns).await;
    let first_round = started.elapsed();
    let rss_first = rss_kib();
    churn(&s).await;
    eventually("churned connections to close", || s.connections() == watching.conns).await;
    let rss_after = rss_kib();
    let elapsed = started.elapsed();

    println!(
        "churn: {} connections in {elapsed:?} ({first_round:?} for the first {CHURN}); VmRSS {rss_before} KiB \
         before, {rss_first} KiB after one round, {rss_after} KiB after two",
        2 * CHURN
    );
    assert_eq!(s.stats().total_connections.load(Ordering::SeqCst) - total_before, 2 * CHURN as u64 + 1);
    assert_eq!(s.sub_count(), watching.subs, "subscriptions of dropped connections are gone");
    let bound = rss_before + 64 * 1024;
    assert!(rss_after <= bound, "VmRSS grew from {rss_before} KiB to {rss_after} KiB (bound {bound} KiB)");
    assert!(watcher.msgs_until_pong().await.is_empty(), "a half-sent message was delivered");
    drop(watcher);
    before.restored(&s, "connection churn").await;
}
