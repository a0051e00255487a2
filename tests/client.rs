//! The official async-nats client against the server: what applications do.

mod common;

use std::collections::BTreeSet;

use async_nats::{Client, HeaderMap, Message, Subscriber};
use bytes::Bytes;
use common::{options, TestServer, TIMEOUT};
use futures::{FutureExt, StreamExt};
use tokio::time::timeout;

/// The next message on `sub`, failing the test after [`TIMEOUT`] or when the stream ends.
async fn next(sub: &mut Subscriber) -> Message {
    timeout(TIMEOUT, sub.next()).await.expect("no message in time").expect("subscription ended")
}

/// A round trip through the server on each client (async-nats's `flush` only writes the socket
/// out, it does not wait for the server). Each client subscribes to a fresh inbox for one
/// message and publishes to it; once that message is back, the server has processed everything
/// the client sent before, and every message the server queued for the client before has been
/// handed to its subscriptions. The server drops the inbox subscription as it delivers, so
/// subscription counts are unchanged afterwards. Needs echo on.
async fn sync_all(clients: &[&Client]) {
    for c in clients {
        let inbox = c.new_inbox();
        let mut sub = c.subscribe(inbox.clone()).await.expect("subscribe");
        sub.unsubscribe_after(1).await.expect("unsubscribe_after");
        c.publish(inbox, Bytes::new()).await.expect("publish");
        next(&mut sub).await;
    }
}

fn is_sync(m: &Message) -> bool {
    m.subject.starts_with("_INBOX.")
}

/// The messages already handed to `sub`, without waiting for more. (Unconstrained: tokio's
/// cooperative budget would otherwise report an empty channel after a hundred or so.)
fn ready(sub: &mut Subscriber) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(Some(m)) = tokio::task::unconstrained(sub.next()).now_or_never() {
        out.push(m);
    }
    out
}

fn subjects(msgs: &[Message]) -> Vec<String> {
    msgs.iter().map(|m| m.subject.to_string()).collect()
}

/// A task answering every request on `subject` with `re:` and the request's payload.
async fn spawn_responder(s: &TestServer, subject: &str) -> Client {
    let client = s.nats().await;
    let mut sub = client.subscribe(subject.to_string()).await.expect("subscribe");
    sync_all(&[&client]).await;
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let Some(reply) = m.reply else { continue };
            let mut answer = b"re:".to_vec();
            answer.extend_from_slice(&m.payload);
            if responder.publish(reply, answer.into()).await.is_err() {
                break;
            }
        }
    });
    client
}

#[tokio::test]
async fn publish_subscribe() {
    let s = TestServer::start_default().await;
    let sub_client = s.nats().await;
    let publisher = s.nats().await;
    let mut sub = sub_client.subscribe("greet").await.unwrap();
    sync_all(&[&sub_client]).await;

    publisher.publish("greet", "hello".into()).await.unwrap();
    publisher.publish_with_reply("greet", "answer.here", "with reply".into()).await.unwrap();
    publisher.publish("greet", Bytes::new()).await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!((m.subject.as_str(), &m.payload[..], m.reply.as_deref()), ("greet", &b"hello"[..], None));
    let m = next(&mut sub).await;
    assert_eq!((&m.payload[..], m.reply.as_deref()), (&b"with reply"[..], Some("answer.here")));
    let m = next(&mut sub).await;
    assert!(m.payload.is_empty());
    assert!(m.headers.is_none());
}

#[tokio::test]
async fn wildcards_match_and_non_matches_are_not_delivered() {
    let s = TestServer::start_default().await;
    let c = s.nats().await;
    let mut one = c.subscribe("sensors.*.temp").await.unwrap();
    let mut tail = c.subscribe("sensors.>").await.unwrap();
    let mut two = c.subscribe("sensors.*").await.unwrap();
    let mut all = c.subscribe(">").await.unwrap();
    let mut exact = c.subscribe("sensors.kitchen.temp").await.unwrap();
    sync_all(&[&c]).await;

    let published = [
        "sensors.kitchen.temp",
        "sensors.kitchen.humidity",
        "sensors.kitchen",
        "sensors",
        "other.kitchen.temp",
        "sensors.a.b.c",
    ];
    for subject in published {
        c.publish(subject, subject.into()).await.unwrap();
    }
    sync_all(&[&c]).await;

    assert_eq!(subjects(&ready(&mut one)), ["sensors.kitchen.temp"]);
    assert_eq!(
        subjects(&ready(&mut tail)),
        ["sensors.kitchen.temp", "sensors.kitchen.humidity", "sensors.kitchen", "sensors.a.b.c"]
    );
    assert_eq!(subjects(&ready(&mut two)), ["sensors.kitchen"]);
    let everything: Vec<Message> = ready(&mut all).into_iter().filter(|m| !is_sync(m)).collect();
    assert_eq!(subjects(&everything), published);
    assert_eq!(subjects(&ready(&mut exact)), ["sensors.kitchen.temp"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_members_share_and_plain_subscriber_gets_all() {
    const N: usize = 300;
    let s = TestServer::start_default().await;
    let mut clients = Vec::new();
    let mut members = Vec::new();
    for _ in 0..3 {
        let c = s.nats().await;
        members.push(c.queue_subscribe("jobs", "workers".into()).await.unwrap());
        clients.push(c);
    }
    let plain_client = s.nats().await;
    let mut plain = plain_client.subscribe("jobs").await.unwrap();
    let publisher = s.nats().await;
    sync_all(&clients.iter().chain([&plain_client]).collect::<Vec<_>>()).await;
    assert_eq!(s.sub_count(), 4);

    for i in 0..N {
        publisher.publish("jobs", i.to_string().into()).await.unwrap();
    }
    sync_all(&[&publisher]).await;
    sync_all(&clients.iter().chain([&plain_client]).collect::<Vec<_>>()).await;

    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    let plain_got: Vec<String> =
        ready(&mut plain).iter().map(|m| String::from_utf8(m.payload.to_vec()).unwrap()).collect();
    assert_eq!(plain_got, expected, "the plain subscriber gets every message in order");

    let mut seen = BTreeSet::new();
    let mut total = 0;
    for (i, member) in members.iter_mut().enumerate() {
        let got = ready(member);
        assert!(!got.is_empty(), "member {i} got none of {N}");
        total += got.len();
        for m in got {
            let n: usize = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
            assert!(seen.insert(n), "message {n} reached two members");
        }
    }
    assert_eq!(total, N, "every message reaches exactly one member");
    assert_eq!(seen.len(), N);
}

#[tokio::test]
async fn no_echo_skips_own_messages() {
    let s = TestServer::start_default().await;
    let quiet = s.nats_with(async_nats::ConnectOptions::new().no_echo()).await;
    let other = s.nats().await;
    let mut own = quiet.subscribe("news").await.unwrap();
    let mut theirs = other.subscribe("news").await.unwrap();
    common::eventually("both subscriptions are registered", || s.sub_count() == 2).await;

    quiet.publish("news", "mine".into()).await.unwrap();
    // Once `other` has "mine", the server has routed it to every subscriber it goes to.
    assert_eq!(next(&mut theirs).await.payload, "mine");
    other.publish("news", "yours".into()).await.unwrap();
    assert_eq!(next(&mut theirs).await.payload, "yours");
    // So had "mine" been echoed, it would come first.
    assert_eq!(next(&mut own).await.payload, "yours");
}

#[tokio::test]
async fn request_reply_with_muxed_inbox() {
    let s = TestServer::start_default().await;
    let _responder = spawn_responder(&s, "svc.echo").await;
    let c = s.nats().await;
    for i in 0..5 {
        let payload = format!("n{i}");
        let resp = timeout(TIMEOUT, c.request("svc.echo", payload.clone().into())).await.unwrap().unwrap();
        assert_eq!(resp.payload, format!("re:{payload}"));
    }
    // The default style uses one wildcard inbox subscription for every request.
    assert_eq!(s.sub_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_get_their_own_answers() {
    const N: usize = 200;
    let s = TestServer::start_default().await;
    let _responder = spawn_responder(&s, "svc.echo").await;
    let c = s.nats().await;
    let requests = (0..N).map(|i| {
        let c = c.clone();
        async move {
            let payload = format!("request-{i}");
            let resp = c.request("svc.echo", payload.clone().into()).await.expect("request");
            assert_eq!(resp.payload, format!("re:{payload}"));
        }
    });
    timeout(TIMEOUT, futures::future::join_all(requests)).await.expect("requests timed out");
}

#[tokio::test]
async fn old_style_request_with_own_inbox() {
    let s = TestServer::start_default().await;
    let _responder = spawn_responder(&s, "svc.echo").await;
    let c = s.nats().await;
    let inbox = c.new_inbox();
    assert!(inbox.starts_with("_INBOX."), "{inbox}");
    let mut sub = c.subscribe(inbox.clone()).await.unwrap();
    sub.unsubscribe_after(1).await.unwrap();
    sync_all(&[&c]).await;
    assert_eq!(s.sub_count(), 2);

    c.publish_with_reply("svc.echo", inbox.clone(), "ping".into()).await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.payload, "re:ping");
    assert_eq!(m.subject.as_str(), inbox);
    // The server dropped the inbox subscription with its one delivery, and the stream ends.
    assert_eq!(s.sub_count(), 1);
    assert!(timeout(TIMEOUT, sub.next()).await.expect("stream did not end").is_none());
}

#[tokio::test]
async fn request_to_nobody_fails_at_once_with_no_responders() {
    let s = TestServer::start_default().await;
    let c =
        s.nats_with(async_nats::ConnectOptions::new().request_timeout(Some(std::time::Duration::from_secs(60)))).await;
    let err = timeout(TIMEOUT, c.request("nobody.home", "hello?".into()))
        .await
        .expect("no-responders status did not arrive")
        .expect_err("a request nobody hears must fail");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders, "{err}");

    // The same with a dedicated inbox.
    let request = async_nats::Request::new().payload("again?".into()).inbox(c.new_inbox());
    let err = timeout(TIMEOUT, c.send_request("nobody.home", request))
        .await
        .expect("no-responders status did not arrive")
        .expect_err("a request nobody hears must fail");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders, "{err}");

    // A service that appears later answers.
    let _responder = spawn_responder(&s, "nobody.home").await;
    let resp = timeout(TIMEOUT, c.request("nobody.home", "now?".into())).await.unwrap().unwrap();
    assert_eq!(resp.payload, "re:now?");
}

#[tokio::test]
async fn headers_round_trip() {
    let s = TestServer::start_default().await;
    let c = s.nats().await;
    let mut sub = c.subscribe("with.headers").await.unwrap();
    sync_all(&[&c]).await;

    let mut headers = HeaderMap::new();
    headers.insert("X-Trace", "abc-123");
    headers.append("X-Multi", "one");
    headers.append("X-Multi", "two");
    c.publish_with_headers("with.headers", headers, "body".into()).await.unwrap();
    let mut empty_body = HeaderMap::new();
    empty_body.insert("Only", "headers");
    c.publish_with_headers("with.headers", empty_body, Bytes::new()).await.unwrap();

    let m = next(&mut sub).await;
    assert_eq!(m.payload, "body");
    let h = m.headers.expect("headers arrive");
    assert_eq!(h.get("X-Trace").map(|v| v.as_str()), Some("abc-123"));
    let multi: Vec<&str> = h.get_all("X-Multi").map(|v| v.as_str()).collect();
    assert_eq!(multi, ["one", "two"]);
    assert!(m.status.is_none());

    let m = next(&mut sub).await;
    assert!(m.payload.is_empty());
    assert_eq!(m.headers.expect("headers arrive").get("Only").map(|v| v.as_str()), Some("headers"));
}

#[tokio::test]
async fn message_over_max_payload_is_refused() {
    let s = TestServer::start(courier::Options { max_payload: 1024, ..options() }).await;
    let c = s.nats().await;
    assert_eq!(c.server_info().max_payload, 1024);
    let mut sub = c.subscribe("big").await.unwrap();
    sync_all(&[&c]).await;

    let err = c.publish("big", vec![b'x'; 1025].into()).await.expect_err("over max_payload");
    assert_eq!(err.kind(), async_nats::client::PublishErrorKind::MaxPayloadExceeded, "{err}");
    let err = c.request("big", vec![b'x'; 1025].into()).await.expect_err("over max_payload");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::MaxPayloadExceeded, "{err}");

    // Exactly max_payload goes through, and the connection is fine.
    c.publish("big", vec![b'y'; 1024].into()).await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.payload, vec![b'y'; 1024]);
    sync_all(&[&c]).await;
}

#[tokio::test]
async fn flush_sends_everything_published() {
    const N: u64 = 1000;
    let s = TestServer::start_default().await;
    let c = s.nats().await;
    for i in 0..N {
        c.publish("counted", i.to_string().into()).await.unwrap();
    }
    timeout(TIMEOUT, c.flush()).await.expect("flush timed out").expect("flush");
    common::eventually("the server receives every message", || {
        s.stats().in_msgs.load(std::sync::atomic::Ordering::SeqCst) == N
    })
    .await;
    // Nothing more arrives than was published: one more round trip adds exactly its own message.
    sync_all(&[&c]).await;
    assert_eq!(s.stats().in_msgs.load(std::sync::atomic::Ordering::SeqCst), N + 1);
}

#[tokio::test]
async fn subscriptions_go_away_with_their_clients() {
    let s = TestServer::start_default().await;
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for i in 0..3 {
        let c = s.nats().await;
        subs.push(c.subscribe(format!("room.{i}")).await.unwrap());
        subs.push(c.subscribe("room.*").await.unwrap());
        subs.push(c.queue_subscribe("room.>", "q".into()).await.unwrap());
        sync_all(&[&c]).await;
        clients.push(c);
    }
    assert_eq!(s.sub_count(), 9);
    assert_eq!(s.connections(), 3);

    // One client drains: its subscriptions go, the others stay.
    let drained = clients.pop().unwrap();
    timeout(TIMEOUT, drained.drain()).await.unwrap().unwrap();
    common::eventually("the drained client's subscriptions are removed", || s.sub_count() == 6).await;

    drop(subs);
    drop(clients);
    drop(drained);
    common::eventually("every subscription is removed", || s.sub_count() == 0).await;
    common::eventually("every client is disconnected", || s.connections() == 0).await;
}

/// Zero limits in a config file mean nats-server's defaults, not "none": a server started
/// from this file serves clients normally.
#[tokio::test]
async fn zero_limits_in_the_config_mean_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero.conf");
    std::fs::write(
        &path,
        "ping_max: 0\nmax_connections: 0\nping_interval: 0\nwrite_deadline: 0\nmax_payload: 0\n\
         max_pending: 0\nmax_control_line: 0\nlame_duck_duration: 0\nlame_duck_grace_period: 0\n",
    )
    .unwrap();
    let mut opts = options();
    courier::config::load_file(&path, &mut opts).expect("config loads");
    let s = TestServer::start(opts).await;
    let live = s.handle.state().opts();
    let d = courier::Options::default();
    assert_eq!(
        (live.ping_max, live.max_connections, live.ping_interval, live.write_deadline),
        (d.ping_max, d.max_connections, d.ping_interval, d.write_deadline)
    );
    assert_eq!(
        (live.max_payload, live.max_pending, live.max_control_line),
        (d.max_payload, d.max_pending, d.max_control_line)
    );
    assert_eq!(
        (live.lame_duck_duration, live.lame_duck_grace_period),
        (d.lame_duck_duration, d.lame_duck_grace_period)
    );
    let client = s.nats().await;
    let mut sub = client.subscribe("zero.check").await.unwrap();
    client.publish("zero.check", "x".repeat(1000).into()).await.unwrap();
    assert_eq!(next(&mut sub).await.payload.len(), 1000);
}
