//! JetStream streams through the official client's jetstream API: managing streams,
//! publishing with acknowledgements, dedupe and expectations, getting messages, limits and
//! retention, and streams surviving a restart on the same store.

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::{options, TestServer, TIMEOUT};
use courier::options::JetStreamOptions;
use futures::StreamExt;

/// A server with JetStream on, storing under `dir`.
async fn js_server(dir: &std::path::Path) -> TestServer {
    let js = JetStreamOptions { store_dir: Some(dir.to_path_buf()), ..Default::default() };
    TestServer::start(courier::Options { jetstream: Some(js), ..options() }).await
}

async fn context(s: &TestServer) -> jetstream::Context {
    jetstream::new(s.nats().await)
}

fn config(name: &str, subjects: &[&str]) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn publish(js: &jetstream::Context, subject: &str, payload: &str) -> jetstream::publish::PublishAck {
    tokio::time::timeout(TIMEOUT, async { js.publish(subject.to_string(), payload.to_string().into()).await?.await })
        .await
        .expect("ack in time")
        .expect("ack")
}

#[tokio::test]
async fn create_publish_get_and_delete_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let js = context(&s).await;
    let mut orders = js.create_stream(config("ORDERS", &["orders.>"])).await.expect("create");
    assert_eq!(orders.cached_info().config.max_messages, -1);
    assert_eq!(orders.cached_info().config.duplicate_window, Duration::from_secs(120));
    for i in 1..=3u64 {
        let ack = publish(&js, &format!("orders.{i}"), &format!("order {i}")).await;
        assert_eq!((ack.stream.as_str(), ack.sequence, ack.duplicate), ("ORDERS", i, false));
    }
    let info = orders.info().await.expect("info");
    assert_eq!((info.state.messages, info.state.first_sequence, info.state.last_sequence), (3, 1, 3));
    assert_eq!(info.state.subjects_count, 3);
    let m = orders.get_raw_message(2).await.expect("get");
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("orders.2", &b"order 2"[..]));
    let last = orders.get_last_raw_message_by_subject("orders.3").await.expect("last by subject");
    assert_eq!(last.sequence, 3);
    assert!(orders.delete_message(2).await.expect("delete message"));
    assert!(orders.get_raw_message(2).await.is_err());
    let info = orders.info().await.expect("info");
    assert_eq!((info.state.messages, info.state.deleted_count), (2, Some(1)));

    let names: Vec<String> = js.stream_names().map(|n| n.unwrap()).collect().await;
    assert_eq!(names, vec!["ORDERS".to_string()]);
    // A different configuration under the same name is refused; the same one is fine.
    assert!(js.create_stream(config("ORDERS", &["other"])).await.is_err());
    js.create_stream(config("ORDERS", &["orders.>"])).await.expect("same config again");
    // Overlapping subjects are refused.
    let err = js.create_stream(config("ALSO", &["orders.new"])).await.expect_err("overlap");
    assert!(err.to_string().contains("subjects overlap"), "{err}");
    assert!(js.delete_stream("ORDERS").await.expect("delete").success);
    assert!(js.get_stream("ORDERS").await.is_err());
}

#[tokio::test]
async fn msg_id_dedupes_and_expectations_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let js = context(&s).await;
    js.create_stream(config("PAY", &["pay.*"])).await.unwrap();
    let send = |subject: &str, msg: jetstream::message::PublishMessage| {
        let js = js.clone();
        let subject = subject.to_string();
        async move {
            tokio::time::timeout(TIMEOUT, async { js.send_publish(subject, msg).await?.await }).await.expect("in time")
        }
    };
    let p = jetstream::message::PublishMessage::build;
    let first = send("pay.a", p().message_id("tx-1").payload("10".into())).await.unwrap();
    let again = send("pay.a", p().message_id("tx-1").payload("10".into())).await.unwrap();
    assert_eq!((first.sequence, first.duplicate), (1, false));
    assert_eq!((again.sequence, again.duplicate), (1, true));
    assert!(send("pay.a", p().expected_last_sequence(1).payload("x".into())).await.is_ok());
    let err = send("pay.b", p().expected_last_sequence(1).payload("x".into())).await.expect_err("wrong last seq");
    assert!(err.to_string().contains("wrong last sequence: 2"), "{err}");
    let err = send("pay.b", p().expected_stream("OTHER").payload("x".into())).await.expect_err("wrong stream");
    assert!(err.to_string().contains("expected stream does not match"), "{err}");
    assert!(send("pay.b", p().expected_last_subject_sequence(0).payload("first b".into())).await.is_ok());
    let err = send("pay.b", p().expected_last_subject_sequence(0).payload("x".into())).await.expect_err("subject seq");
    assert!(err.to_string().contains("wrong last sequence: 3"), "{err}");
    let err = send("pay.c", p().expected_last_message_id("nope").payload("x".into())).await.expect_err("last msg id");
    assert!(err.to_string().contains("wrong last msg ID"), "{err}");
}

#[tokio::test]
async fn limits_discard_old_and_new_and_per_subject() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let js = context(&s).await;
    let mut old = js.create_stream(stream::Config { max_messages: 3, ..config("OLD", &["old.>"]) }).await.unwrap();
    for i in 0..5 {
        publish(&js, "old.x", &i.to_string()).await;
    }
    let st = old.info().await.unwrap().state.clone();
    assert_eq!((st.messages, st.first_sequence, st.last_sequence), (3, 3, 5));

    let new_cfg = stream::Config { max_messages: 2, discard: stream::DiscardPolicy::New, ..config("NEW", &["new.>"]) };
    js.create_stream(new_cfg).await.unwrap();
    publish(&js, "new.a", "1").await;
    publish(&js, "new.a", "2").await;
    let err = tokio::time::timeout(TIMEOUT, async { js.publish("new.a", "3".into()).await?.await }).await.unwrap();
    assert!(err.expect_err("full").to_string().contains("maximum messages exceeded"));

    let kv_like = stream::Config { max_messages_per_subject: 1, ..config("KEYS", &["keys.>"]) };
    let mut keys = js.create_stream(kv_like).await.unwrap();
    for v in ["a1", "a2", "a3"] {
        publish(&js, "keys.a", v).await;
    }
    publish(&js, "keys.b", "b1").await;
    let info = keys.info().await.unwrap();
    assert_eq!(info.state.messages, 2);
    assert_eq!(&keys.get_last_raw_message_by_subject("keys.a").await.unwrap().payload[..], b"a3");

    let bytes = stream::Config { max_bytes: 300, ..config("BYTES", &["bytes"]) };
    let mut b = js.create_stream(bytes).await.unwrap();
    for _ in 0..10 {
        publish(&js, "bytes", &"x".repeat(50)).await;
    }
    let st = b.info().await.unwrap().state.clone();
    assert!(st.bytes <= 300 && st.messages == 3, "{st:?}");
}

#[tokio::test]
async fn max_age_expires_messages() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let js = context(&s).await;
    let cfg = stream::Config { max_age: Duration::from_millis(300), ..config("AGE", &["age"]) };
    let mut st = js.create_stream(cfg).await.unwrap();
    publish(&js, "age", "soon gone").await;
    assert_eq!(st.info().await.unwrap().state.messages, 1);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if st.info().await.unwrap().state.messages == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the message did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(st.info().await.unwrap().state.first_sequence, 2);
}

#[tokio::test]
async fn purge_by_filter_keep_and_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let js = context(&s).await;
    let mut st = js.create_stream(config("P", &["p.*"])).await.unwrap();
    for i in 0..10 {
        publish(&js, if i % 2 == 0 { "p.even" } else { "p.odd" }, &i.to_string()).await;
    }
    assert_eq!(st.purge().filter("p.even").keep(1).await.unwrap().purged, 4);
    assert_eq!(st.purge().sequence(8).await.unwrap().purged, 3);
    let info = st.info().await.unwrap().state.clone();
    assert_eq!((info.messages, info.first_sequence), (3, 8));
    assert_eq!(st.purge().await.unwrap().purged, 3);
    let info = st.info().await.unwrap().state.clone();
    assert_eq!((info.messages, info.first_sequence, info.last_sequence), (0, 11, 10));
}

#[tokio::test]
async fn direct_get_and_update() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let js = context(&s).await;
    let st = js.create_stream(stream::Config { allow_direct: true, ..config("D", &["d.>"]) }).await.unwrap();
    publish(&js, "d.a", "one").await;
    publish(&js, "d.b", "two").await;
    let m = st.direct_get(2).await.expect("direct get");
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("d.b", &b"two"[..]));
    let m = st.direct_get_last_for_subject("d.a").await.expect("direct last");
    assert_eq!(m.sequence, 1);
    assert!(st.direct_get(9).await.is_err());
    let info = js
        .update_stream(stream::Config { allow_direct: true, max_messages: 1, ..config("D", &["d.>", "e"]) })
        .await
        .expect("update");
    assert_eq!((info.config.max_messages, info.state.messages), (1, 1));
    publish(&js, "e", "via new subject").await;
    let err = js
        .update_stream(stream::Config { storage: stream::StorageType::Memory, ..config("D", &["d.>"]) })
        .await
        .expect_err("storage cannot change");
    assert!(err.to_string().contains("can not change storage type"), "{err}");
}

#[tokio::test]
async fn memory_streams_and_the_account_info() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let js = context(&s).await;
    js.create_stream(stream::Config { storage: stream::StorageType::Memory, ..config("M", &["m"]) }).await.unwrap();
    publish(&js, "m", "in memory").await;
    let account = js.query_account().await.expect("account info");
    assert_eq!(account.streams, 1);
    assert_eq!(account.memory, ("m".len() + "in memory".len() + 16) as u64, "memory accounting as nats-server");
}

#[tokio::test]
async fn file_streams_survive_a_restart_with_dedupe_window() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = js_server(dir.path()).await;
        let js = context(&s).await;
        js.create_stream(config("KEEP", &["keep.>"])).await.unwrap();
        for i in 0..100 {
            let msg = jetstream::message::PublishMessage::build().message_id(format!("id-{i}")).payload("x".into());
            js.send_publish(format!("keep.{}", i % 7), msg).await.unwrap().await.unwrap();
        }
        s.stop().await;
    }
    let s = js_server(dir.path()).await;
    let js = context(&s).await;
    let mut st = js.get_stream("KEEP").await.expect("stream recovered");
    let info = st.info().await.unwrap();
    assert_eq!((info.state.messages, info.state.last_sequence), (100, 100));
    assert_eq!(st.get_raw_message(42).await.unwrap().subject.as_str(), "keep.6");
    let dup = jetstream::message::PublishMessage::build().message_id("id-5").payload("x".into());
    let ack = js.send_publish("keep.1", dup).await.unwrap().await.unwrap();
    assert!(ack.duplicate && ack.sequence == 6, "dedupe survives a restart: {ack:?}");
}
