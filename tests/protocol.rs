//! The client protocol over raw TCP, byte for byte, as nats-server 2.9.10 speaks it.

mod common;

use std::time::Duration;

use common::{options, Frame, Msg, TestServer};

/// A message as the parser in `common` returns it.
fn msg(subject: &str, sid: &str, reply: Option<&str>, payload: &[u8]) -> Msg {
    Msg {
        subject: subject.into(),
        sid: sid.into(),
        reply: reply.map(Into::into),
        headers: None,
        payload: payload.to_vec(),
    }
}

// ---- INFO -------------------------------------------------------------------------------------

#[tokio::test]
async fn info_describes_server_and_client() {
    let s = TestServer::start(courier::Options { max_payload: 12_345, ..options() }).await;
    let a = s.raw().await;
    let b = s.raw().await;
    let info = a.info();

    let id = info["server_id"].as_str().expect("server_id is a string");
    assert_eq!(id.len(), 56, "server_id {id:?}");
    assert!(id.starts_with('N'), "server_id {id:?}");
    assert!(id.bytes().all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c)), "server_id {id:?}");
    assert_eq!(info["server_name"], id, "server_name defaults to the id");
    assert_eq!(info["version"], "2.9.10");
    assert_eq!(info["proto"], 1);
    assert_eq!(info["headers"], true);
    assert_eq!(info["max_payload"], 12_345);
    assert_eq!(info["host"], "127.0.0.1");
    assert_eq!(info["port"], s.addr.port());
    assert_eq!(info["client_ip"], "127.0.0.1");
    assert!(info.get("auth_required").is_none_or(|v| v == false), "{info}");
    assert!(info.get("tls_required").is_none_or(|v| v == false), "{info}");

    let (ca, cb) = (info["client_id"].as_u64().expect("client_id"), b.info()["client_id"].as_u64().expect("client_id"));
    assert!(ca > 0 && cb > 0 && ca != cb, "client ids {ca} and {cb}");
    assert_eq!(b.info()["server_id"], id, "one server id for every client");
}

#[tokio::test]
async fn info_carries_configured_server_name() {
    let s = TestServer::start(courier::Options { server_name: "courier-test".into(), ..options() }).await;
    let c = s.raw().await;
    assert_eq!(c.info()["server_name"], "courier-test");
    assert_ne!(c.info()["server_id"], "courier-test");
}

// ---- verbose and CONNECT ----------------------------------------------------------------------

#[tokio::test]
async fn verbose_is_on_before_connect() {
    let s = TestServer::start_default().await;
    let mut c = s.raw().await;
    c.send("SUB a 1\r\n").await;
    c.expect("+OK\r\n").await;
    c.send("PUB a 1\r\nx\r\n").await;
    c.expect("+OK\r\nMSG a 1 1\r\nx\r\n").await;
    c.send("UNSUB 1\r\n").await;
    c.expect("+OK\r\n").await;
    // UNSUB of an unknown sid is acknowledged too; PING, PONG, +OK and INFO are not.
    c.send("UNSUB 99\r\nPING\r\nPONG\r\n+OK\r\nINFO {}\r\nPING\r\n").await;
    c.expect("+OK\r\nPONG\r\nPONG\r\n").await;
}

#[tokio::test]
async fn connect_keeps_fields_it_leaves_out() {
    let s = TestServer::start_default().await;
    let mut c = s.raw().await;
    // verbose stays on through a CONNECT that does not mention it.
    c.send("CONNECT {}\r\n").await;
    c.expect("+OK\r\n").await;
    c.send("CONNECT {\"name\":\"x\"}\r\n").await;
    c.expect("+OK\r\n").await;
    // Turning it off takes effect for the CONNECT itself.
    c.send("CONNECT {\"verbose\":false}\r\n").await;
    c.ping_pong().await;
    c.send("CONNECT {\"echo\":false}\r\nSUB a 1\r\nPUB a 1\r\nx\r\n").await;
    c.ping_pong().await;
    // echo stays off and verbose stays off through an empty CONNECT.
    c.send("CONNECT {}\r\nPUB a 1\r\ny\r\n").await;
    c.ping_pong().await;
    c.send("CONNECT {\"echo\":true,\"verbose\":true}\r\n").await;
    c.expect("+OK\r\n").await;
    c.send("PUB a 1\r\nz\r\n").await;
    c.expect("+OK\r\nMSG a 1 1\r\nz\r\n").await;
}

#[tokio::test]
async fn pedantic_publish_to_wildcard_is_reported_and_delivered() {
    let s = TestServer::start_default().await;
    let mut c = s.raw().await;
    c.send("SUB a.* 1\r\n").await;
    c.expect("+OK\r\n").await;
    c.send("PUB a.* 1\r\nx\r\n").await;
    c.expect("-ERR 'Invalid Publish Subject'\r\n+OK\r\nMSG a.* 1 1\r\nx\r\n").await;
    c.send("CONNECT {\"verbose\":false}\r\nPUB a.* 1\r\ny\r\n").await;
    c.expect("-ERR 'Invalid Publish Subject'\r\nMSG a.* 1 1\r\ny\r\n").await;
    c.ping_pong().await;
    // Without pedantic the same publish is delivered silently.
    c.send("CONNECT {\"pedantic\":false}\r\nPUB a.* 1\r\nz\r\n").await;
    c.expect("MSG a.* 1 1\r\nz\r\n").await;
    c.ping_pong().await;
}

// ---- PUB / SUB / MSG ----------------------------------------------------------------------------

#[tokio::test]
async fn pub_sub_with_and_without_reply() {
    let s = TestServer::start_default().await;
    let mut sub = s.raw_quiet().await;
    let mut publ = s.raw_quiet().await;
    sub.send("SUB foo 7\r\n").await;
    sub.ping_pong().await;
    publ.send("PUB foo 5\r\nhello\r\nPUB foo inbox.1 2\r\nhi\r\nPUB foo 0\r\n\r\nPUB bar 1\r\nx\r\n").await;
    publ.ping_pong().await;
    sub.expect("MSG foo 7 5\r\nhello\r\nMSG foo 7 inbox.1 2\r\nhi\r\nMSG foo 7 0\r\n\r\n").await;
    sub.ping_pong().await;
}

#[tokio::test]
async fn payload_may_hold_crlf_and_any_byte() {
    let s = TestServer::start_default().await;
    let mut c = s.raw_quiet().await;
    c.send("SUB a 1\r\n").await;
    let payload: Vec<u8> = (0..=255u8).chain(*b"\r\nPING\r\nMSG\r\n").collect();
    let mut bytes = format!("PUB a {}\r\n", payload.len()).into_bytes();
    bytes.extend_from_slice(&payload);
    bytes.extend_from_slice(b"\r\n");
    c.send(&bytes).await;
    let mut expected = format!("MSG a 1 {}\r\n", payload.len()).into_bytes();
    expected.extend_from_slice(&payload);
    expected.extend_from_slice(b"\r\n");
    c.expect(&expected).await;
    c.ping_pong().await;
}

#[tokio::test]
async fn large_payload_spanning_many_reads() {
    let s = TestServer::start_default().await;
    let mut sub = s.raw_quiet().await;
    let mut publ = s.raw_quiet().await;
    sub.send("SUB big 1\r\n").await;
    sub.ping_pong().await;
    let payload: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut bytes = format!("PUB big {}\r\n", payload.len()).into_bytes();
    bytes.extend_from_slice(&payload);
    bytes.extend_from_slice(b"\r\nPING\r\n");
    publ.send(&bytes).await;
    publ.expect("PONG\r\n").await;
    let msgs = sub.msgs_until_pong().await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].payload, payload);
}

#[tokio::test]
async fn hpub_gives_hmsg_to_header_clients_and_msg_to_others() {
    let s = TestServer::start_default().await;
    let mut with = s.raw_with(r#"{"verbose":false,"headers":true}"#).await;
    let mut without = s.raw_quiet().await;
    let mut publ = s.raw_with(r#"{"verbose":false,"headers":true}"#).await;
    with.send("SUB h 1\r\n").await;
    with.ping_pong().await;
    without.send("SUB h 2\r\n").await;
    without.ping_pong().await;

    let hdr = "NATS/1.0\r\nX-Key: v\r\n\r\n";
    assert_eq!(hdr.len(), 22);
    publ.send(format!("HPUB h 22 24\r\n{hdr}hi\r\nHPUB h r.1 22 22\r\n{hdr}\r\n")).await;
    publ.ping_pong().await;
    with.expect(format!("HMSG h 1 22 24\r\n{hdr}hi\r\nHMSG h 1 r.1 22 22\r\n{hdr}\r\n")).await;
    with.ping_pong().await;
    without.expect("MSG h 2 2\r\nhi\r\nMSG h 2 r.1 0\r\n\r\n").await;
    without.ping_pong().await;

    // A plain PUB reaches a header client as MSG.
    publ.send("PUB h 1\r\nz\r\n").await;
    publ.ping_pong().await;
    with.expect("MSG h 1 1\r\nz\r\n").await;
}

#[tokio::test]
async fn unsub_with_max() {
    let s = TestServer::start_default().await;
    let mut c = s.raw_quiet().await;
    c.send("SUB a 1\r\nUNSUB 1 2\r\nPUB a 1\r\nx\r\nPUB a 1\r\ny\r\nPUB a 1\r\nz\r\n").await;
    c.expect("MSG a 1 1\r\nx\r\nMSG a 1 1\r\ny\r\n").await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), 0, "removed once its max was reached");
}

#[tokio::test]
async fn unsub_with_max_already_reached_removes_at_once() {
    let s = TestServer::start_default().await;
    let mut c = s.raw_quiet().await;
    c.send("SUB a 1\r\nPUB a 1\r\nx\r\nPUB a 1\r\ny\r\n").await;
    c.expect("MSG a 1 1\r\nx\r\nMSG a 1 1\r\ny\r\n").await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), 1);
    c.send("UNSUB 1 2\r\n").await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), 0);
    c.send("PUB a 1\r\nz\r\n").await;
    c.ping_pong().await;

    // Below the count already delivered, too.
    c.send("SUB b 2\r\nPUB b 1\r\nx\r\nPUB b 1\r\ny\r\nUNSUB 2 1\r\nPUB b 1\r\nz\r\n").await;
    c.expect("MSG b 2 1\r\nx\r\nMSG b 2 1\r\ny\r\n").await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), 0);
}

#[tokio::test]
async fn unsub_stops_delivery_and_sid_can_be_reused() {
    let s = TestServer::start_default().await;
    let mut c = s.raw_quiet().await;
    c.send("SUB a 1\r\nPUB a 1\r\nx\r\nUNSUB 1\r\nPUB a 1\r\ny\r\nSUB b 1\r\nPUB b 1\r\nz\r\n").await;
    c.expect("MSG a 1 1\r\nx\r\nMSG b 1 1\r\nz\r\n").await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), 1);
}

#[tokio::test]
async fn sub_reusing_live_sid_is_ignored() {
    let s = TestServer::start_default().await;
    let mut c = s.raw().await;
    c.send("SUB a 1\r\nSUB b 1\r\n").await;
    c.expect("+OK\r\n+OK\r\n").await;
    c.send("CONNECT {\"verbose\":false}\r\nPUB b 1\r\nx\r\nPUB a 1\r\ny\r\n").await;
    c.expect("MSG a 1 1\r\ny\r\n").await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), 1);
}

#[tokio::test]
async fn echo_false_skips_own_messages() {
    let s = TestServer::start_default().await;
    let mut me = s.raw_with(r#"{"verbose":false,"echo":false}"#).await;
    let mut other = s.raw_quiet().await;
    other.send("SUB a 2\r\n").await;
    other.ping_pong().await;
    me.send("SUB a 1\r\nPUB a 1\r\nx\r\n").await;
    me.ping_pong().await;
    other.expect("MSG a 2 1\r\nx\r\n").await;
    // Others' messages still reach it.
    other.send("PUB a 1\r\ny\r\n").await;
    other.expect("MSG a 2 1\r\ny\r\n").await;
    other.ping_pong().await;
    me.expect("MSG a 1 1\r\ny\r\n").await;
    me.ping_pong().await;
}

#[tokio::test]
async fn queue_group_delivers_each_message_once() {
    const N: usize = 40;
    let s = TestServer::start_default().await;
    let mut q1 = s.raw_quiet().await;
    let mut q2 = s.raw_quiet().await;
    let mut plain = s.raw_quiet().await;
    let mut publ = s.raw_quiet().await;
    q1.send("SUB work q 1\r\n").await;
    q1.ping_pong().await;
    // Two members of the same group on one connection, too.
    q2.send("SUB work q 2\r\nSUB work q 3\r\n").await;
    q2.ping_pong().await;
    plain.send("SUB work 9\r\n").await;
    plain.ping_pong().await;

    let mut bytes = String::new();
    for i in 0..N {
        let p = format!("{i:03}");
        bytes.push_str(&format!("PUB work 3\r\n{p}\r\n"));
    }
    publ.send(bytes).await;
    publ.ping_pong().await;

    let got1 = q1.msgs_until_pong().await;
    let got2 = q2.msgs_until_pong().await;
    let all = plain.msgs_until_pong().await;
    let expected: Vec<Vec<u8>> = (0..N).map(|i| format!("{i:03}").into_bytes()).collect();
    assert_eq!(all.iter().map(|m| m.payload.clone()).collect::<Vec<_>>(), expected, "plain subscriber gets all");
    assert!(all.iter().all(|m| m.sid == "9"));
    assert!(got1.iter().all(|m| m.sid == "1"));
    assert!(got2.iter().all(|m| m.sid == "2" || m.sid == "3"));
    let mut members: Vec<Vec<u8>> = got1.iter().chain(&got2).map(|m| m.payload.clone()).collect();
    members.sort();
    assert_eq!(members, expected, "each message reaches exactly one member");
}

// ---- framing --------------------------------------------------------------------------------

#[tokio::test]
async fn ops_are_case_insensitive_and_fields_may_be_tabs() {
    let s = TestServer::start_default().await;
    let mut c = s.raw().await;
    c.send("sub\tfoo\t1\r\n").await;
    c.expect("+OK\r\n").await;
    c.send("pub foo\t \t2\r\nhi\r\nPiNg\r\nconnect {\"verbose\":false}\r\nPub\tfoo r\t1\r\nx\r\nunsub 1\r\npub foo 1\r\ny\r\nping\r\n").await;
    c.expect("+OK\r\nMSG foo 1 2\r\nhi\r\nPONG\r\nMSG foo 1 r 1\r\nx\r\nPONG\r\n").await;
}

#[tokio::test]
async fn control_line_and_payload_split_byte_by_byte() {
    let s = TestServer::start_default().await;
    let mut c = s.raw_with(r#"{"verbose":false,"headers":true}"#).await;
    c.send_bytewise("SUB foo.bar 12\r\n").await;
    c.send_bytewise("PUB foo.bar reply.to 10\r\n0123456789\r\n").await;
    c.send_bytewise("HPUB foo.bar 12 14\r\nNATS/1.0\r\n\r\nhi\r\n").await;
    c.send_bytewise("PING\r\n").await;
    c.expect("MSG foo.bar 12 reply.to 10\r\n0123456789\r\nHMSG foo.bar 12 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPONG\r\n")
        .await;
}

#[tokio::test]
async fn many_ops_in_one_write() {
    let s = TestServer::start_default().await;
    let mut c = s.raw_quiet().await;
    let mut bytes = String::from("SUB a 1\r\nSUB b 2\r\nSUB c q 3\r\n");
    for i in 0..100 {
        bytes.push_str(&format!("PUB a 3\r\n{i:03}\r\nPUB b r 1\r\nb\r\nPUB none 1\r\nn\r\n"));
    }
    bytes.push_str("UNSUB 1\r\nPUB a 1\r\nx\r\nPUB c 1\r\nc\r\nPING\r\n");
    c.send(bytes).await;
    let mut expected = String::new();
    for i in 0..100 {
        expected.push_str(&format!("MSG a 1 3\r\n{i:03}\r\nMSG b 2 r 1\r\nb\r\n"));
    }
    expected.push_str("MSG c 3 1\r\nc\r\nPONG\r\n");
    c.expect(expected).await;
}

#[tokio::test]
async fn line_ended_by_bare_newline_is_accepted() {
    let s = TestServer::start_default().await;
    let mut c = s.raw_quiet().await;
    c.send("SUB a 1\nPUB a 1\nx\r\nPING\n").await;
    c.expect("MSG a 1 1\r\nx\r\nPONG\r\n").await;
}

// ---- errors -------------------------------------------------------------------------------------

/// Sends `input` on a fresh connection (verbose on, nothing else negotiated), expects exactly
/// `reply` and then the connection to close, and checks the server still serves others.
async fn expect_error_and_close(s: &TestServer, prelude: Option<&str>, input: &str, reply: &str) {
    let mut c = match prelude {
        Some(json) => s.raw_with(json).await,
        None => s.raw().await,
    };
    c.send(input).await;
    c.expect(reply).await;
    c.expect_closed().await;
    s.assert_healthy().await;
}

#[tokio::test]
async fn unknown_operation_closes() {
    let s = TestServer::start_default().await;
    for input in ["FOO\r\n", "UNSUB\r\n", " PING\r\n", "PUBX a 1\r\n"] {
        expect_error_and_close(&s, None, input, "-ERR 'Unknown Protocol Operation'\r\n").await;
    }
}

#[tokio::test]
async fn payload_not_followed_by_crlf_closes() {
    let s = TestServer::start_default().await;
    expect_error_and_close(&s, None, "PUB a 2\r\nabc\r\n", "-ERR 'Unknown Protocol Operation'\r\n").await;
    expect_error_and_close(&s, None, "PUB a 1\r\nxyPING\r\n", "-ERR 'Unknown Protocol Operation'\r\n").await;
    // The wrong byte is reported as soon as it arrives, with nothing after it.
    expect_error_and_close(&s, None, "PUB s 2\r\nhi\n", "-ERR 'Unknown Protocol Operation'\r\n").await;
    expect_error_and_close(&s, None, "PUB s 3\r\nhi\r\n", "-ERR 'Unknown Protocol Operation'\r\n").await;
}

#[tokio::test]
async fn malformed_arguments_close_without_err() {
    let s = TestServer::start_default().await;
    for input in ["PUB a\r\n", "SUB a\r\n", "PUB a -1\r\n", "PUB a b c 1\r\n", "SUB a b c d\r\n", "PUB a 1x\r\n"] {
        expect_error_and_close(&s, None, input, "").await;
    }
    let headers = Some(r#"{"verbose":false,"headers":true}"#);
    expect_error_and_close(&s, headers, "HPUB a 3 2\r\n", "").await;
    // HPUB from a client that did not ask for headers.
    expect_error_and_close(&s, Some(r#"{"verbose":false}"#), "HPUB a 12 14\r\nNATS/1.0\r\n\r\nhi\r\n", "").await;
    // CONNECT whose JSON does not decode.
    expect_error_and_close(&s, None, "CONNECT {\"verbose\":1}\r\n", "").await;
    expect_error_and_close(&s, None, "CONNECT {bad\r\n", "").await;
    // A client sending -ERR is closed.
    expect_error_and_close(&s, None, "-ERR 'whatever'\r\n", "").await;
}

#[tokio::test]
async fn invalid_subject_keeps_connection() {
    let s = TestServer::start_default().await;
    let mut c = s.raw().await;
    for bad in ["a..", "a..b", ".a", "a.", "a.>.b", ">.a"] {
        c.send(format!("SUB {bad} 1\r\n")).await;
        c.expect("-ERR 'Invalid Subject'\r\n").await;
        c.ping_pong().await;
    }
    assert_eq!(s.sub_count(), 0);
    // The connection still works, and sid 1 was never taken.
    c.send("SUB ok 1\r\nPUB ok 1\r\nx\r\n").await;
    c.expect("+OK\r\n+OK\r\nMSG ok 1 1\r\nx\r\n").await;
}

#[tokio::test]
async fn invalid_client_protocol_closes() {
    let s = TestServer::start_default().await;
    expect_error_and_close(&s, None, "CONNECT {\"protocol\":2}\r\n", "-ERR 'invalid client protocol'\r\n").await;
    // Protocol 0 and 1 are fine.
    let mut c = s.raw().await;
    c.send("CONNECT {\"protocol\":0}\r\nCONNECT {\"protocol\":1}\r\n").await;
    c.expect("+OK\r\n+OK\r\n").await;
}

#[tokio::test]
async fn no_responders_requires_headers() {
    let s = TestServer::start_default().await;
    let reply = "-ERR 'no responders requires headers support'\r\n";
    expect_error_and_close(&s, None, "CONNECT {\"no_responders\":true}\r\n", reply).await;
    expect_error_and_close(&s, None, "CONNECT {\"no_responders\":true,\"headers\":false}\r\n", reply).await;
}

#[tokio::test]
async fn max_payload_violation_closes() {
    let s = TestServer::start(courier::Options { max_payload: 16, ..options() }).await;
    let mut c = s.raw_quiet().await;
    c.send("SUB a 1\r\nPUB a 16\r\n0123456789abcdef\r\n").await;
    c.expect("MSG a 1 16\r\n0123456789abcdef\r\n").await;
    c.ping_pong().await;
    c.send("PUB a 17\r\n").await;
    c.expect("-ERR 'Maximum Payload Violation'\r\n").await;
    c.expect_closed().await;
    // HPUB counts headers and body together.
    expect_error_and_close(
        &s,
        Some(r#"{"verbose":false,"headers":true}"#),
        "HPUB a 12 17\r\n",
        "-ERR 'Maximum Payload Violation'\r\n",
    )
    .await;
}

#[tokio::test]
async fn max_control_line_exceeded_closes() {
    let s = TestServer::start(courier::Options { max_control_line: 64, ..options() }).await;
    // A line that never ends.
    let long = "a".repeat(100);
    expect_error_and_close(&s, None, &format!("SUB {long}"), "-ERR 'maximum control line exceeded'\r\n").await;
    // A whole line that is too long.
    expect_error_and_close(&s, None, &format!("PUB {long} 1\r\nx\r\n"), "-ERR 'maximum control line exceeded'\r\n")
        .await;
    // Short lines are fine.
    let mut c = s.raw_quiet().await;
    c.send(format!("SUB {} 1\r\n", "b".repeat(40))).await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), 1);
}

/// nats-server measures the control line limit on the arguments: from the first byte after the
/// operation name and its blanks to the end of the line, CRLF excluded. With a limit of 64, a SUB
/// whose arguments are exactly 64 bytes is accepted and 65 bytes are refused.
#[tokio::test]
async fn max_control_line_counts_arguments_as_nats_server() {
    let s = TestServer::start(courier::Options { max_control_line: 64, ..options() }).await;
    let mut c = s.raw().await;
    let subject = "s".repeat(62);
    c.send(format!("SUB {subject} 1\r\n")).await; // arguments: 62 + " 1" = 64 bytes
    c.expect("+OK\r\n").await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), 1);
    let subject = "s".repeat(63);
    expect_error_and_close(&s, None, &format!("SUB {subject} 1\r\n"), "-ERR 'maximum control line exceeded'\r\n").await;
}

#[tokio::test]
async fn max_connections_exceeded() {
    let s = TestServer::start(courier::Options { max_connections: 2, ..options() }).await;
    let mut a = s.raw().await;
    let mut b = s.raw().await;
    a.ping_pong().await;
    b.ping_pong().await;
    let mut c = s.raw().await;
    let info = c.info();
    assert_eq!(info["port"], s.addr.port(), "the refused client still gets INFO first");
    c.expect("-ERR 'maximum connections exceeded'\r\n").await;
    c.expect_closed().await;
    // The others are unaffected.
    a.ping_pong().await;
    b.ping_pong().await;
    // Once one leaves, a new client gets in.
    drop(a);
    common::eventually("connections drop to 1", || s.connections() == 1).await;
    let mut d = s.raw().await;
    d.ping_pong().await;
}

#[tokio::test]
async fn max_subscriptions_exceeded_keeps_connection() {
    let s = TestServer::start(courier::Options { max_subscriptions: 2, ..options() }).await;
    let mut c = s.raw().await;
    c.send("SUB a 1\r\nSUB b 2\r\n").await;
    c.expect("+OK\r\n+OK\r\n").await;
    c.send("SUB c 3\r\n").await;
    c.expect("-ERR 'maximum subscriptions exceeded'\r\n").await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), 2);
    c.send("PUB c 1\r\nx\r\n").await;
    c.expect("+OK\r\n").await;
    c.ping_pong().await;
    // Making room lets the next one in.
    c.send("UNSUB 1\r\nSUB c 3\r\nPUB c 1\r\ny\r\n").await;
    c.expect("+OK\r\n+OK\r\n+OK\r\nMSG c 3 1\r\ny\r\n").await;
    // Another connection has its own allowance.
    let mut d = s.raw_quiet().await;
    d.send("SUB x 1\r\nSUB y 2\r\n").await;
    d.ping_pong().await;
    assert_eq!(s.sub_count(), 4);
}

/// nats-server checks the limit before it looks at the subject or the sid: at the limit, a SUB
/// with an invalid subject or a live sid is refused as over the limit.
#[tokio::test]
async fn max_subscriptions_checked_first_as_nats_server() {
    let s = TestServer::start(courier::Options { max_subscriptions: 2, ..options() }).await;
    let mut c = s.raw().await;
    c.send("SUB a 1\r\nSUB b 2\r\n").await;
    c.expect("+OK\r\n+OK\r\n").await;
    c.send("SUB a 1\r\n").await;
    c.expect("-ERR 'maximum subscriptions exceeded'\r\n").await;
    c.send("SUB a.. 4\r\n").await;
    c.expect("-ERR 'maximum subscriptions exceeded'\r\n").await;
    c.ping_pong().await;
}

// ---- no responders ----------------------------------------------------------------------------

const NO_RESPONDERS: &str = r#"{"verbose":false,"headers":true,"no_responders":true}"#;

#[tokio::test]
async fn no_responders_status_on_own_reply_subscription() {
    let s = TestServer::start_default().await;
    let mut c = s.raw_with(NO_RESPONDERS).await;
    c.send("SUB _INBOX.x.* 1\r\nPUB nobody _INBOX.x.1 0\r\n\r\n").await;
    c.expect("HMSG _INBOX.x.1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n").await;
    c.ping_pong().await;
    // With a payload and an exact reply subscription.
    c.send("SUB reply.here 2\r\nPUB nobody reply.here 3\r\nabc\r\n").await;
    c.expect("HMSG reply.here 2 16 16\r\nNATS/1.0 503\r\n\r\n\r\n").await;
    c.ping_pong().await;
}

#[tokio::test]
async fn no_responders_only_when_asked_and_nobody_listens() {
    let s = TestServer::start_default().await;
    let mut c = s.raw_with(NO_RESPONDERS).await;
    c.send("SUB _INBOX.x.* 1\r\n").await;
    // No reply subject: nothing.
    c.send("PUB nobody 0\r\n\r\n").await;
    c.ping_pong().await;
    // A reply subject it has no subscription for: nothing.
    c.send("PUB nobody elsewhere 0\r\n\r\n").await;
    c.ping_pong().await;
    // Someone listens: the request is delivered, no status.
    let mut responder = s.raw_quiet().await;
    responder.send("SUB svc 5\r\n").await;
    responder.ping_pong().await;
    c.send("PUB svc _INBOX.x.2 2\r\nhi\r\n").await;
    c.ping_pong().await;
    responder.expect("MSG svc 5 _INBOX.x.2 2\r\nhi\r\n").await;

    // A client with headers but without no_responders gets nothing.
    let mut plain = s.raw_with(r#"{"verbose":false,"headers":true}"#).await;
    plain.send("SUB _INBOX.y.* 1\r\nPUB nobody _INBOX.y.1 0\r\n\r\n").await;
    plain.ping_pong().await;
}

// ---- keepalive --------------------------------------------------------------------------------

#[tokio::test]
async fn stale_connection_is_closed() {
    let s = TestServer::start(courier::Options { ping_interval: Duration::from_millis(200), ping_max: 1, ..options() })
        .await;
    let start = tokio::time::Instant::now();
    let mut c = s.raw().await;
    c.auto_pong = false;
    c.expect("PING\r\n").await;
    // The first PING comes after the ping interval when that is shorter than two seconds.
    assert!(start.elapsed() < Duration::from_millis(1500), "first PING after {:?}", start.elapsed());
    c.expect("-ERR 'Stale Connection'\r\n").await;
    c.expect_closed().await;
    assert_eq!(s.stats().stale_connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    s.assert_healthy().await;
}

#[tokio::test]
async fn answering_pings_keeps_connection() {
    let s = TestServer::start(courier::Options { ping_interval: Duration::from_millis(200), ping_max: 1, ..options() })
        .await;
    let mut c = s.raw().await;
    c.auto_pong = false;
    for _ in 0..4 {
        c.expect("PING\r\n").await;
        c.send("PONG\r\n").await;
    }
    c.ping_pong().await;
    assert_eq!(s.stats().stale_connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn first_ping_comes_within_two_seconds() {
    let s = TestServer::start_default().await;
    let mut c = s.raw().await;
    c.auto_pong = false;
    let start = tokio::time::Instant::now();
    c.expect("PING\r\n").await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_millis(3500),
        "first PING after {waited:?}"
    );
    c.send("PONG\r\n").await;
    c.ping_pong().await;
}

// ---- server-side cleanup ------------------------------------------------------------------------

#[tokio::test]
async fn subscriptions_removed_when_client_disconnects() {
    let s = TestServer::start_default().await;
    let mut a = s.raw_quiet().await;
    let mut b = s.raw_quiet().await;
    a.send("SUB a 1\r\nSUB a.* 2\r\nSUB > q 3\r\n").await;
    a.ping_pong().await;
    b.send("SUB a 1\r\n").await;
    b.ping_pong().await;
    assert_eq!(s.sub_count(), 4);
    drop(a);
    common::eventually("a's subscriptions are removed", || s.sub_count() == 1).await;
    // b still gets messages, nobody else does.
    let mut publ = s.raw_quiet().await;
    publ.send("PUB a 1\r\nx\r\n").await;
    publ.ping_pong().await;
    b.expect("MSG a 1 1\r\nx\r\n").await;
    drop(b);
    common::eventually("every subscription is removed", || s.sub_count() == 0).await;
    drop(publ);
    common::eventually("every connection is gone", || s.connections() == 0).await;
}

#[tokio::test]
async fn protocol_error_releases_subscriptions() {
    let s = TestServer::start_default().await;
    let mut c = s.raw_quiet().await;
    c.send("SUB a 1\r\nSUB b 2\r\n").await;
    c.ping_pong().await;
    assert_eq!(s.sub_count(), 2);
    c.send("BOGUS\r\n").await;
    c.expect("-ERR 'Unknown Protocol Operation'\r\n").await;
    c.expect_closed().await;
    common::eventually("subscriptions are removed", || s.sub_count() == 0).await;
}

#[tokio::test]
async fn verbose_header_client_gets_each_reply_in_order() {
    let s = TestServer::start_default().await;
    let mut c = s.raw().await;
    c.send("CONNECT {\"headers\":true}\r\n").await;
    c.expect("+OK\r\n").await;
    c.send("SUB a 1\r\nHPUB a r 12 14\r\nNATS/1.0\r\n\r\nhi\r\nSUB a.. 2\r\n").await;
    let mut frames = Vec::new();
    for _ in 0..4 {
        frames.push(c.next_frame().await);
    }
    let hmsg = Msg { headers: Some(b"NATS/1.0\r\n\r\n".to_vec()), ..msg("a", "1", Some("r"), b"hi") };
    assert_eq!(frames, vec![Frame::Ok, Frame::Ok, Frame::Msg(hmsg), Frame::Err("'Invalid Subject'".into())]);
}

/// The old request style (a fresh sid per request, `UNSUB <sid> 1`, the answer published by
/// another connection) ends each subscription in the responder's task; the requester's own
/// table must forget them, or it grows by one entry per request for as long as it lives.
#[tokio::test]
async fn one_shot_subscriptions_are_forgotten() {
    let s = TestServer::start_default().await;
    let mut requester = s.raw_quiet().await;
    let mut responder = s.raw_quiet().await;
    const N: usize = 2000;
    let mut subs = String::new();
    let mut answers = String::new();
    for i in 0..N {
        subs.push_str(&format!("SUB r.{i} {i}\r\nUNSUB {i} 1\r\n"));
        answers.push_str(&format!("PUB r.{i} 1\r\nx\r\nPUB r.{i} 1\r\ny\r\n"));
    }
    requester.send(subs).await;
    requester.ping_pong().await;
    responder.send(answers).await;
    responder.ping_pong().await;
    let msgs = requester.msgs_until_pong().await;
    assert_eq!(msgs.len(), N, "one answer per one-shot subscription");
    assert!(msgs.iter().all(|m| m.payload == b"x"));
    assert_eq!(s.sub_count(), 0);
    let cid = s.handle.state().registry.snapshot(None).iter().map(|c| c.cid).min().expect("requester");
    let conn = s.handle.state().registry.get(cid).expect("requester open");
    assert_eq!(conn.stats.sids.load(std::sync::atomic::Ordering::SeqCst), 0, "ended subscriptions still held");
}
