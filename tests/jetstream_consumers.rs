//! JetStream consumers through the official client: pull and push delivery, acks of every
//! kind, redelivery on ack_wait and backoff, poison messages reaching max_deliver with their
//! advisory and dead letter, workqueue and interest retention, the lag in consumer info, the
//! status messages of pull requests byte for byte, and key-value buckets.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, push, AckPolicy};
use async_nats::jetstream::{self, stream, AckKind};
use common::{options, TestServer, TIMEOUT};
use courier::options::JetStreamOptions;
use futures::StreamExt;

async fn js_server(dir: &std::path::Path) -> TestServer {
    let js = JetStreamOptions { store_dir: Some(dir.to_path_buf()), ..Default::default() };
    TestServer::start(courier::Options { jetstream: Some(js), ..options() }).await
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, f).await.expect("in time")
}

async fn setup(s: &TestServer, retention: stream::RetentionPolicy) -> (jetstream::Context, stream::Stream) {
    let js = jetstream::new(s.nats().await);
    let st = js
        .create_stream(stream::Config {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            retention,
            ..Default::default()
        })
        .await
        .expect("create stream");
    (js, st)
}

async fn publish_n(js: &jetstream::Context, n: u64) {
    for i in 1..=n {
        within(async { js.publish(format!("s.{}", i % 3), format!("m{i}").into()).await.unwrap().await.unwrap() })
            .await;
    }
}

fn pull_config(name: &str) -> pull::Config {
    pull::Config { durable_name: Some(name.into()), ack_policy: AckPolicy::Explicit, ..Default::default() }
}

#[tokio::test]
async fn a_pull_consumer_delivers_in_order_and_its_lag_and_ack_floor_follow_the_acks() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let (js, st) = setup(&s, stream::RetentionPolicy::Limits).await;
    publish_n(&js, 10).await;
    let mut c: jetstream::consumer::PullConsumer = st.create_consumer(pull_config("D")).await.expect("create");
    let info = c.info().await.unwrap().clone();
    assert_eq!((info.num_pending, info.num_ack_pending), (10, 0));
    assert_eq!(info.config.ack_wait, Duration::from_secs(30));
    assert_eq!(info.config.max_ack_pending, 1000);

    let mut batch = c.fetch().max_messages(4).messages().await.expect("fetch");
    let mut got = Vec::new();
    while let Some(m) = within(batch.next()).await {
        let m = m.expect("message");
        let i = m.info().expect("ack subject");
        got.push((i.stream_sequence, i.consumer_sequence, i.delivered, i.pending, m.payload.to_vec()));
        if i.stream_sequence != 2 {
            m.ack().await.expect("ack");
        }
    }
    let want: Vec<(u64, u64, i64, u64, Vec<u8>)> =
        (1..=4u64).map(|q| (q, q, 1, 10 - q, format!("m{q}").into_bytes())).collect();
    assert_eq!(got, want);
    let info = c.info().await.unwrap().clone();
    assert_eq!((info.num_pending, info.num_ack_pending), (6, 1));
    assert_eq!((info.delivered.consumer_sequence, info.delivered.stream_sequence), (4, 4));
    assert_eq!((info.ack_floor.consumer_sequence, info.ack_floor.stream_sequence), (1, 1));
    assert_eq!(st.clone().info().await.unwrap().state.consumer_count, 1);

    // The consumer shows up by name and in the list, and goes when deleted.
    let names: Vec<String> = st.consumer_names().map(|n| n.unwrap()).collect().await;
    assert_eq!(names, vec!["D".to_string()]);
    assert!(st.delete_consumer("D").await.expect("delete").success);
    assert!(st.get_consumer::<pull::Config>("D").await.is_err());
}

#[tokio::test]
async fn unacknowledged_messages_come_back_after_ack_wait_and_on_a_nak_with_the_delivery_count() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let (js, st) = setup(&s, stream::RetentionPolicy::Limits).await;
    publish_n(&js, 2).await;
    let c = st
        .create_consumer(pull::Config { ack_wait: Duration::from_millis(300), max_ack_pending: 1, ..pull_config("R") })
        .await
        .unwrap();
    let mut msgs = c.messages().await.expect("messages");
    let m1 = within(msgs.next()).await.unwrap().unwrap();
    assert_eq!(m1.info().unwrap().delivered, 1);
    // Not acked: back after ack_wait, counted as a second delivery.
    let again = within(msgs.next()).await.unwrap().unwrap();
    let i = again.info().unwrap();
    assert_eq!((i.stream_sequence, i.delivered), (1, 2), "max_ack_pending 1 holds the second message back");
    again.ack_with(AckKind::Nak(None)).await.unwrap();
    let third = within(msgs.next()).await.unwrap().unwrap();
    let i = third.info().unwrap();
    assert_eq!((i.stream_sequence, i.delivered), (1, 3));
    third.double_ack().await.expect("a synchronous ack is answered");
    let next = within(msgs.next()).await.unwrap().unwrap();
    assert_eq!(next.info().unwrap().stream_sequence, 2);
    next.ack().await.unwrap();
}

#[tokio::test]
async fn a_poison_message_reaches_max_deliver_its_advisory_and_its_dead_letter_and_the_rest_flow() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let (js, st) = setup(&s, stream::RetentionPolicy::Limits).await;
    let client = s.nats().await;
    let mut advisories = client.subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.S.W").await.unwrap();
    let mut dead = client.subscribe("dlq.S").await.unwrap();
    client.flush().await.unwrap();
    publish_n(&js, 5).await;
    let metadata = [("dead_letter_subject".to_string(), "dlq.S".to_string())].into_iter().collect();
    let c = st
        .create_consumer(pull::Config {
            max_deliver: 3,
            ack_wait: Duration::from_secs(30),
            metadata,
            ..pull_config("W")
        })
        .await
        .unwrap();
    let mut msgs = c.messages().await.unwrap();
    let mut acked = Vec::new();
    let mut poison_deliveries = 0;
    while acked.len() < 4 || poison_deliveries < 3 {
        let m = within(msgs.next()).await.unwrap().unwrap();
        let i = m.info().unwrap();
        if i.stream_sequence == 2 {
            poison_deliveries += 1;
            m.ack_with(AckKind::Nak(None)).await.unwrap();
        } else {
            acked.push(i.stream_sequence);
            m.ack().await.unwrap();
        }
    }
    acked.sort();
    assert_eq!(acked, vec![1, 3, 4, 5], "the messages behind the poison one kept flowing");
    let adv = within(advisories.next()).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&adv.payload).unwrap();
    assert_eq!(v["type"], "io.nats.jetstream.advisory.v1.max_deliver");
    assert_eq!((v["stream"].as_str(), v["consumer"].as_str()), (Some("S"), Some("W")));
    assert_eq!((v["stream_seq"].as_u64(), v["deliveries"].as_u64()), (Some(2), Some(3)));
    assert_eq!(poison_deliveries, 3);
    let letter = within(dead.next()).await.unwrap();
    assert_eq!(&letter.payload[..], b"m2");
    let h = letter.headers.expect("dead letter headers");
    assert_eq!(h.get("Nats-Dead-Letter-Sequence").map(|v| v.as_str()), Some("2"));
    assert_eq!(h.get("Nats-Dead-Letter-Subject").map(|v| v.as_str()), Some("s.2"));
    assert_eq!(h.get("Nats-Dead-Letter-Reason").map(|v| v.as_str()), Some("max_deliveries"));
    assert_eq!(h.get("Nats-Dead-Letter-Deliveries").map(|v| v.as_str()), Some("3"));
    let info = within(c.clone().info()).await.unwrap().clone();
    assert_eq!(info.num_ack_pending, 0, "the poison message no longer holds a slot");
}

#[tokio::test]
async fn backoff_sets_the_wait_before_each_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let (js, st) = setup(&s, stream::RetentionPolicy::Limits).await;
    publish_n(&js, 1).await;
    let c = st
        .create_consumer(pull::Config {
            backoff: vec![Duration::from_millis(100), Duration::from_millis(600)],
            max_deliver: 4,
            ..pull_config("B")
        })
        .await
        .unwrap();
    assert_eq!(c.cached_info().config.ack_wait, Duration::from_millis(100));
    let mut msgs = c.messages().await.unwrap();
    let mut at = Vec::new();
    let start = std::time::Instant::now();
    for _ in 0..3 {
        let m = within(msgs.next()).await.unwrap().unwrap();
        at.push(start.elapsed());
        assert_eq!(m.info().unwrap().stream_sequence, 1);
    }
    let gap1 = at[1] - at[0];
    let gap2 = at[2] - at[1];
    assert!(gap1 >= Duration::from_millis(90) && gap1 < Duration::from_millis(550), "first wait {gap1:?}");
    assert!(gap2 >= Duration::from_millis(550), "second wait {gap2:?}");
}

#[tokio::test]
async fn a_push_consumer_sends_to_its_deliver_subject_and_an_ordered_consumer_reads_everything() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let (js, st) = setup(&s, stream::RetentionPolicy::Limits).await;
    publish_n(&js, 20).await;
    let client = s.nats().await;
    let inbox = client.new_inbox();
    let c = st
        .create_consumer(push::Config {
            durable_name: Some("P".into()),
            deliver_subject: inbox,
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = c.messages().await.unwrap();
    for want in 1..=20u64 {
        let m = within(msgs.next()).await.unwrap().unwrap();
        assert_eq!(m.info().unwrap().stream_sequence, want);
        m.ack().await.unwrap();
    }
    let ordered = st
        .create_consumer(push::OrderedConfig { deliver_subject: client.new_inbox(), ..Default::default() })
        .await
        .unwrap();
    let mut msgs = ordered.messages().await.unwrap();
    for want in 1..=20u64 {
        let m = within(msgs.next()).await.unwrap().unwrap();
        assert_eq!(m.payload, format!("m{want}").into_bytes());
    }
}

#[tokio::test]
async fn a_workqueue_removes_what_is_acked_and_refuses_a_second_unfiltered_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let (js, st) = setup(&s, stream::RetentionPolicy::WorkQueue).await;
    publish_n(&js, 3).await;
    let c = st.create_consumer(pull_config("Q")).await.unwrap();
    let err = st.create_consumer(pull_config("Q2")).await.expect_err("second unfiltered consumer");
    assert!(err.to_string().contains("multiple non-filtered consumers not allowed on workqueue stream"), "{err}");
    let mut batch = c.fetch().max_messages(2).messages().await.unwrap();
    while let Some(m) = within(batch.next()).await {
        m.unwrap().double_ack().await.unwrap();
    }
    let info = st.clone().info().await.unwrap().clone();
    assert_eq!((info.state.messages, info.state.first_sequence), (1, 3));
}

#[tokio::test]
async fn an_interest_stream_keeps_a_message_until_every_interested_consumer_acked_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let (js, st) = setup(&s, stream::RetentionPolicy::Interest).await;
    let a = st.create_consumer(pull_config("A")).await.unwrap();
    let b = st.create_consumer(pull_config("B")).await.unwrap();
    publish_n(&js, 2).await;
    for (c, expect_left) in [(&a, 2u64), (&b, 0)] {
        let mut batch = c.fetch().max_messages(2).messages().await.unwrap();
        while let Some(m) = within(batch.next()).await {
            m.unwrap().double_ack().await.unwrap();
        }
        let info = st.clone().info().await.unwrap().clone();
        assert_eq!(info.state.messages, expect_left);
    }
}

/// Raw protocol: the status messages of pull requests, byte for byte as nats-server sends them.
#[tokio::test]
async fn pull_request_statuses_are_byte_for_byte_nats_servers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let (js, st) = setup(&s, stream::RetentionPolicy::Limits).await;
    st.create_consumer(pull_config("D")).await.unwrap();
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = within(sock.read(&mut buf)).await.unwrap();
    sock.write_all(b"CONNECT {\"verbose\":false,\"headers\":true}\r\nSUB r 1\r\n").await.unwrap();
    let next = |body: &str| format!("PUB $JS.API.CONSUMER.MSG.NEXT.S.D r {}\r\n{body}\r\n", body.len()).into_bytes();
    let mut read_until = async |sock: &mut tokio::net::TcpStream, want: &[u8]| {
        let mut got = Vec::new();
        while !got.windows(want.len()).any(|w| w == want) {
            let n = within(sock.read(&mut buf)).await.unwrap();
            assert!(n > 0, "closed; got {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        got
    };
    sock.write_all(&next(r#"{"no_wait":true}"#)).await.unwrap();
    read_until(&mut sock, b"HMSG r 1 28 28\r\nNATS/1.0 404 No Messages\r\n\r\n\r\n").await;
    publish_n(&js, 2).await;
    sock.write_all(&next(r#"{"batch":5,"expires":50000000}"#)).await.unwrap();
    let got = read_until(&mut sock, b"Nats-Pending-Bytes: 0\r\n\r\n").await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("MSG s.1 1 $JS.ACK.S.D.1.1.1."), "{text}");
    assert!(text.contains("MSG s.2 1 $JS.ACK.S.D.1.2.2."), "{text}");
    assert!(
        text.contains("NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\nNats-Pending-Bytes: 0\r\n\r\n"),
        "{text}"
    );
    sock.write_all(&next(r#"{"expires":100,"idle_heartbeat":60}"#)).await.unwrap();
    read_until(&mut sock, b"NATS/1.0 400 Bad Request - heartbeat value too large\r\n\r\n").await;
}

#[tokio::test]
async fn key_value_put_get_history_watch_and_keys_through_the_client() {
    use async_nats::jetstream::kv;
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let js = jetstream::new(s.nats().await);
    let kv = within(js.create_key_value(kv::Config { bucket: "cfg".into(), history: 5, ..Default::default() }))
        .await
        .expect("bucket");
    kv.put("a", "1".into()).await.unwrap();
    kv.put("a", "2".into()).await.unwrap();
    kv.put("b", "x".into()).await.unwrap();
    assert_eq!(kv.get("a").await.unwrap().map(|v| v.to_vec()), Some(b"2".to_vec()));
    let history: Vec<Vec<u8>> =
        within(kv.history("a").await.unwrap().map(|e| e.unwrap().value.to_vec()).collect()).await;
    assert_eq!(history, vec![b"1".to_vec(), b"2".to_vec()]);
    let mut keys: Vec<String> = within(kv.keys().await.unwrap().map(|k| k.unwrap()).collect()).await;
    keys.sort();
    assert_eq!(keys, vec!["a".to_string(), "b".to_string()]);
    let mut watch = kv.watch("a").await.unwrap();
    kv.put("a", "3".into()).await.unwrap();
    let e = within(watch.next()).await.unwrap().unwrap();
    assert_eq!((e.key.as_str(), &e.value[..]), ("a", &b"3"[..]));
    kv.delete("b").await.unwrap();
    assert_eq!(kv.get("b").await.unwrap(), None);
}

#[tokio::test]
async fn a_watch_with_history_knows_when_it_has_caught_up() {
    use async_nats::jetstream::kv;
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let js = jetstream::new(s.nats().await);
    let kv = within(js.create_key_value(kv::Config { bucket: "h".into(), history: 15, ..Default::default() }))
        .await
        .expect("bucket");
    for i in 0..10 {
        kv.put(format!("key.{i}"), i.to_string().into()).await.unwrap();
    }
    let mut watch = kv.watch_with_history("key.>").await.unwrap();
    let writer = tokio::spawn({
        let kv = kv.clone();
        async move {
            for i in 10..20 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                kv.put(format!("key.{i}"), i.to_string().into()).await.unwrap();
            }
        }
    });
    for i in 0..20 {
        let e = within(watch.next()).await.unwrap().unwrap();
        assert_eq!(e.key, format!("key.{i}"));
        assert_eq!(e.seen_current, i >= 9, "entry {i}: delta {}", e.delta);
    }
    writer.await.unwrap();
}

#[tokio::test]
async fn stream_and_consumer_actions_are_advised() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let client = s.nats().await;
    let mut adv = client.subscribe("$JS.EVENT.ADVISORY.>").await.unwrap();
    client.flush().await.unwrap();
    let (js, st) = setup(&s, stream::RetentionPolicy::Limits).await;
    st.create_consumer(pull_config("A")).await.unwrap();
    st.delete_consumer("A").await.unwrap();
    js.delete_stream("S").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let m = within(adv.next()).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        seen.push((
            m.subject.to_string(),
            v["type"].as_str().unwrap().to_string(),
            v["action"].as_str().unwrap().to_string(),
        ));
    }
    let want = [
        ("$JS.EVENT.ADVISORY.STREAM.CREATED.S", "stream_action", "create"),
        ("$JS.EVENT.ADVISORY.CONSUMER.CREATED.S.A", "consumer_action", "create"),
        ("$JS.EVENT.ADVISORY.CONSUMER.DELETED.S.A", "consumer_action", "delete"),
        ("$JS.EVENT.ADVISORY.STREAM.DELETED.S", "stream_action", "delete"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(s, t, a)| (s.to_string(), format!("io.nats.jetstream.advisory.v1.{t}"), a.to_string()))
        .collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn headers_only_sends_the_size_and_sample_freq_samples_acks() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let (js, st) = setup(&s, stream::RetentionPolicy::Limits).await;
    let client = s.nats().await;
    let mut metrics = client.subscribe("$JS.EVENT.METRIC.CONSUMER.ACK.S.H").await.unwrap();
    client.flush().await.unwrap();
    publish_n(&js, 1).await;
    let c = st
        .create_consumer(pull::Config { headers_only: true, sample_frequency: 100, ..pull_config("H") })
        .await
        .unwrap();
    let mut batch = c.fetch().max_messages(1).messages().await.unwrap();
    let m = within(batch.next()).await.unwrap().unwrap();
    assert!(m.payload.is_empty(), "no payload");
    let h = m.headers.clone().expect("headers");
    assert_eq!(h.get("Nats-Msg-Size").map(|v| v.as_str()), Some("2"), "the size of \"m1\"");
    m.double_ack().await.unwrap();
    let metric = within(metrics.next()).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&metric.payload).unwrap();
    assert_eq!(v["type"], "io.nats.jetstream.metric.v1.consumer_ack");
    assert_eq!(
        (v["stream_seq"].as_u64(), v["consumer_seq"].as_u64(), v["deliveries"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    assert!(v["ack_time"].as_i64().is_some_and(|t| t > 0));
}

#[tokio::test]
async fn an_unused_ephemeral_consumer_is_deleted_after_its_inactive_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let (_js, st) = setup(&s, stream::RetentionPolicy::Limits).await;
    let client = s.nats().await;
    let mut deleted = client.subscribe("$JS.EVENT.ADVISORY.CONSUMER.DELETED.S.*").await.unwrap();
    client.flush().await.unwrap();
    let c = st
        .create_consumer(pull::Config {
            name: Some("EPH".into()),
            ack_policy: AckPolicy::Explicit,
            inactive_threshold: Duration::from_millis(300),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(c.cached_info().config.inactive_threshold, Duration::from_millis(300));
    let adv = within(deleted.next()).await.unwrap();
    assert_eq!(adv.subject.as_str(), "$JS.EVENT.ADVISORY.CONSUMER.DELETED.S.EPH");
    assert!(st.get_consumer::<pull::Config>("EPH").await.is_err(), "gone");
    // A durable without a threshold stays.
    st.create_consumer(pull_config("KEEP")).await.unwrap();
    assert!(st.get_consumer::<pull::Config>("KEEP").await.is_ok());
}

#[tokio::test]
async fn a_push_consumer_with_a_deliver_group_is_bound_only_by_members_of_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let s = js_server(dir.path()).await;
    let (js, st) = setup(&s, stream::RetentionPolicy::Limits).await;
    publish_n(&js, 6).await;
    let client = s.nats().await;
    let mut outsider = client.subscribe("deliver.g").await.unwrap();
    client.flush().await.unwrap();
    let mut c = st
        .create_consumer(push::Config {
            durable_name: Some("G".into()),
            deliver_subject: "deliver.g".into(),
            deliver_group: Some("workers".into()),
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!c.info().await.unwrap().push_bound, "a plain subscriber does not bind a grouped consumer");
    let mut a = client.queue_subscribe("deliver.g", "workers".into()).await.unwrap();
    let mut b = client.queue_subscribe("deliver.g", "workers".into()).await.unwrap();
    let mut got = 0;
    while got < 6 {
        tokio::select! {
            m = a.next() => { m.unwrap(); got += 1; }
            m = b.next() => { m.unwrap(); got += 1; }
            _ = tokio::time::sleep(TIMEOUT) => panic!("only {got} of 6 delivered"),
        }
    }
    assert!(c.info().await.unwrap().push_bound);
    // The plain subscriber saw everything too (it is on the subject), but did not bind it.
    let first = within(outsider.next()).await.unwrap();
    assert!(first.reply.is_some_and(|r| r.starts_with("$JS.ACK.S.G.")));
}
