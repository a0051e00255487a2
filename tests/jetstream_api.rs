//! The JetStream API over raw TCP, byte for byte as nats-server 2.9.10 answers (captured from
//! it): acknowledgements, error bodies, create and info JSON, direct get headers.

mod common;

use common::{options, RawClient, TestServer};
use courier::options::JetStreamOptions;

async fn js_server(dir: &std::path::Path) -> TestServer {
    let js = JetStreamOptions { store_dir: Some(dir.to_path_buf()), ..Default::default() };
    TestServer::start(courier::Options { jetstream: Some(js), ..options() }).await
}

/// Sends `body` to `subject` with reply `_R` and returns the answer's headers and payload.
async fn request(c: &mut RawClient, subject: &str, body: &str) -> (Option<Vec<u8>>, String) {
    c.send(format!("PUB {subject} _R {}\r\n{body}\r\n", body.len())).await;
    let m = c.read_msgs(1).await.remove(0);
    (m.headers, String::from_utf8(m.payload).unwrap())
}

/// An HPUB with reply `_R`.
fn hpub(subject: &str, header: &str, body: &str) -> String {
    let h = format!("NATS/1.0\r\n{header}\r\n\r\n");
    format!("HPUB {subject} _R {} {}\r\n{h}{body}\r\n", h.len(), h.len() + body.len())
}

/// Timestamps vary; the rest must match exactly.
fn without_times(json: &str) -> String {
    let mut out = String::new();
    let mut rest = json;
    while let Some(i) = rest.find("\"20") {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        match tail[1..].find('"') {
            Some(end) if tail[1..end + 1].ends_with('Z') => {
                out.push_str("\"TS\"");
                rest = &tail[end + 2..];
            }
            _ => {
                out.push('"');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

const CONFIG_S: &str = r#"{"name":"S","subjects":["s.\u003e"],"retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,"duplicate_window":120000000000,"allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false}"#;

#[tokio::test]
async fn stream_api_answers_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let mut c = s.raw_with(r#"{"verbose":false,"headers":true}"#).await;
    c.send("SUB _R 1\r\n").await;
    c.ping_pong().await;
    assert!(String::from_utf8_lossy(&c.info_line).contains("\"jetstream\":true"));

    let (_, create) = request(&mut c, "$JS.API.STREAM.CREATE.S", r#"{"name":"S","subjects":["s.>"]}"#).await;
    assert_eq!(
        without_times(&create),
        format!(
            r#"{{"type":"io.nats.jetstream.api.v1.stream_create_response","config":{CONFIG_S},"created":"TS","state":{{"messages":0,"bytes":0,"first_seq":0,"first_ts":"0001-01-01T00:00:00Z","last_seq":0,"last_ts":"0001-01-01T00:00:00Z","consumer_count":0}},"did_create":true}}"#
        ),
        "an empty stream's times are Go's zero time"
    );

    let (_, ack) = request(&mut c, "s.a", "hello").await;
    assert_eq!(ack, r#"{"stream":"S", "seq":1}"#);
    c.send(hpub("s.b", "Nats-Msg-Id: x", "world")).await;
    assert_eq!(c.read_msgs(1).await[0].payload, br#"{"stream":"S", "seq":2}"#);
    c.send(hpub("s.b", "Nats-Msg-Id: x", "world")).await;
    assert_eq!(c.read_msgs(1).await[0].payload, br#"{"stream":"S", "seq":2,"duplicate": true}"#);
    c.send(hpub("s.c", "Nats-Expected-Last-Sequence: 7", "w")).await;
    assert_eq!(
        String::from_utf8(c.read_msgs(1).await[0].payload.clone()).unwrap(),
        r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 2"},"stream":"S","seq":0}"#
    );

    let (_, info) = request(&mut c, "$JS.API.STREAM.INFO.S", "").await;
    assert_eq!(
        without_times(&info),
        format!(
            r#"{{"type":"io.nats.jetstream.api.v1.stream_info_response","total":0,"offset":0,"limit":0,"config":{CONFIG_S},"created":"TS","state":{{"messages":2,"bytes":108,"first_seq":1,"first_ts":"TS","last_seq":2,"last_ts":"TS","num_subjects":2,"consumer_count":0}}}}"#
        ),
        "bytes accounted as nats-server's file store: 22 + subject + payload + 8 (+ 4 + headers)"
    );
    let (_, missing) = request(&mut c, "$JS.API.STREAM.INFO.NOPE", "").await;
    assert_eq!(
        missing,
        r#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0,"offset":0,"limit":0}"#
    );
    let (_, diff) = request(&mut c, "$JS.API.STREAM.CREATE.S", r#"{"name":"S","subjects":["t"]}"#).await;
    assert_eq!(
        diff,
        r#"{"type":"io.nats.jetstream.api.v1.stream_create_response","error":{"code":400,"err_code":10058,"description":"stream name already in use with a different configuration"}}"#
    );
    let (_, replicas) = request(&mut c, "$JS.API.STREAM.CREATE.R", r#"{"name":"R","num_replicas":3}"#).await;
    assert_eq!(
        replicas,
        r#"{"type":"io.nats.jetstream.api.v1.stream_create_response","error":{"code":500,"err_code":10074,"description":"replicas \u003e 1 not supported in non-clustered mode"}}"#
    );
    let (_, get) = request(&mut c, "$JS.API.STREAM.MSG.GET.S", r#"{"seq":2}"#).await;
    assert_eq!(
        without_times(&get),
        r#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"s.b","seq":2,"hdrs":"TkFUUy8xLjANCk5hdHMtTXNnLUlkOiB4DQoNCg==","data":"d29ybGQ=","time":"TS"}}"#
    );
    let (_, nothing) = request(&mut c, "$JS.API.STREAM.MSG.GET.S", r#"{"seq":99}"#).await;
    assert_eq!(
        nothing,
        r#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":404,"err_code":10037,"description":"no message found"}}"#
    );
    let (_, again) = request(&mut c, "$JS.API.STREAM.MSG.DELETE.S", r#"{"seq":1}"#).await;
    assert_eq!(again, r#"{"type":"io.nats.jetstream.api.v1.stream_msg_delete_response","success":true}"#);
    let (_, again) = request(&mut c, "$JS.API.STREAM.MSG.DELETE.S", r#"{"seq":1}"#).await;
    assert_eq!(
        again,
        r#"{"type":"io.nats.jetstream.api.v1.stream_msg_delete_response","error":{"code":500,"err_code":10057,"description":"no message found"}}"#
    );
    let (_, names) = request(&mut c, "$JS.API.STREAM.NAMES", r#"{"subject":"zzz"}"#).await;
    assert_eq!(
        names,
        r#"{"type":"io.nats.jetstream.api.v1.stream_names_response","total":0,"offset":0,"limit":1024,"streams":null}"#
    );
    let (_, purge) = request(&mut c, "$JS.API.STREAM.PURGE.S", "").await;
    assert_eq!(purge, r#"{"type":"io.nats.jetstream.api.v1.stream_purge_response","success":true,"purged":1}"#);
    let (_, body) = request(&mut c, "$JS.API.STREAM.DELETE.S", r#"{"x":1}"#).await;
    assert_eq!(
        body,
        r#"{"type":"io.nats.jetstream.api.v1.stream_delete_response","error":{"code":400,"err_code":10038,"description":"expected an empty request payload"}}"#
    );
}

#[tokio::test]
async fn direct_get_answers_with_headers() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let mut c = s.raw_with(r#"{"verbose":false,"headers":true}"#).await;
    c.send("SUB _R 1\r\n").await;
    let cfg = r#"{"name":"D","subjects":["d.>"],"allow_direct":true,"storage":"memory"}"#;
    request(&mut c, "$JS.API.STREAM.CREATE.D", cfg).await;
    request(&mut c, "d.x", "dd").await;
    let (hdr, body) = request(&mut c, "$JS.API.DIRECT.GET.D.d.x", "").await;
    let hdr = String::from_utf8(hdr.expect("headers")).unwrap();
    assert!(
        hdr.starts_with("NATS/1.0\r\nNats-Stream: D\r\nNats-Subject: d.x\r\nNats-Sequence: 1\r\nNats-Time-Stamp: 20"),
        "{hdr}"
    );
    assert_eq!(body, "dd");
    let (hdr, body) = request(&mut c, "$JS.API.DIRECT.GET.D", r#"{"seq":5}"#).await;
    assert_eq!((hdr.as_deref(), body.as_str()), (Some(&b"NATS/1.0 404 Message Not Found\r\n\r\n"[..]), ""));
    let (hdr, _) = request(&mut c, "$JS.API.DIRECT.GET.D", "").await;
    assert_eq!(hdr.as_deref(), Some(&b"NATS/1.0 408 Empty Request\r\n\r\n"[..]));
    // A stream that does not exist (or does not allow direct get) has nobody to answer.
    let mut n = s.raw_with(r#"{"verbose":false,"headers":true,"no_responders":true}"#).await;
    n.send("SUB _R 1\r\nPUB $JS.API.DIRECT.GET.NOPE _R 9\r\n{\"seq\":1}\r\n").await;
    let m = n.read_msgs(1).await.remove(0);
    assert_eq!(m.headers.as_deref(), Some(&b"NATS/1.0 503\r\n\r\n"[..]));
}

#[tokio::test]
async fn jetstream_off_means_no_responders() {
    let s = TestServer::start_default().await;
    let mut c = s.raw_with(r#"{"verbose":false,"headers":true,"no_responders":true}"#).await;
    assert!(!String::from_utf8_lossy(&c.info_line).contains("jetstream"));
    c.send("SUB _R 1\r\nPUB $JS.API.INFO _R 0\r\n\r\n").await;
    let m = c.read_msgs(1).await.remove(0);
    assert_eq!(m.headers.as_deref(), Some(&b"NATS/1.0 503\r\n\r\n"[..]));
}
