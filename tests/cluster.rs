//! Clusters of server processes on 127.0.0.1: Courier nodes given one seed route each meet the
//! whole mesh by gossip; messages, queue groups, request-reply, headers and interest cross the
//! routes; a killed node is redialed when it comes back and clients fail over to the others;
//! and nats-server 2.9.10 nodes (when installed) take part in the same mesh.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{self, Proc, COURIER};
use futures::StreamExt;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);
const TIMEOUT: Duration = Duration::from_secs(10);

/// A server process of the cluster, killed when dropped.
type Node = Proc;

/// Starts a Courier node named `name` with cluster `C1`, its route listener on `port` (0: a
/// free one) and seed routes to `seeds` (route ports).
fn courier(dir: &Path, name: &str, port: u16, seeds: &[u16]) -> Node {
    courier_in(dir, "C1", name, port, seeds, "")
}

/// As [`courier`], in cluster `cluster`, with `extra` inside the `cluster {}` block.
fn courier_in(dir: &Path, cluster: &str, name: &str, port: u16, seeds: &[u16], extra: &str) -> Node {
    courier_conf(dir, name, &cluster_conf(cluster, name, port, seeds, extra))
}

/// The configuration of a node of `cluster` (nats-server reads it too).
fn cluster_conf(cluster: &str, name: &str, port: u16, seeds: &[u16], extra: &str) -> String {
    let routes: Vec<String> = seeds.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
    let listen = if port == 0 { "-1".to_string() } else { port.to_string() };
    format!(
        "server_name: {name}\nlisten: 127.0.0.1:-1\nhttp: 127.0.0.1:-1\n\
         cluster {{ name: {cluster}, listen: 127.0.0.1:{listen}, routes: [{}]\n{extra}\n}}\n",
        routes.join(", ")
    )
}

/// Starts a Courier node with the configuration `text`.
fn courier_conf(dir: &Path, name: &str, text: &str) -> Node {
    process::start(COURIER, dir, name, text)
}

/// Starts a nats-server node of cluster `C1`, or `None` when it is not installed.
fn nats_server(dir: &Path, name: &str, seeds: &[u16]) -> Option<Node> {
    let bin = process::nats_server_bin()?;
    Some(process::start(bin, dir, name, &cluster_conf("C1", name, 0, seeds, "")))
}

/// The route port of a node.
fn route_port(node: &Node) -> u16 {
    node.cluster_port.expect("a route listener")
}

/// `/routez` of `node`.
async fn routez(node: &Node) -> serde_json::Value {
    node.monitor("/routez").await
}

/// Waits until `node` has `n` routes.
async fn wait_routes(node: &Node, n: usize) {
    node.wait_monitor("/routez", &format!("{n} routes"), |v| v["num_routes"].as_u64() == Some(n as u64)).await;
}

/// Waits until some route of `node` has (or, with `present` false, no route has) remote
/// interest in `subject`.
async fn wait_remote_interest(node: &Node, subject: &str, present: bool) {
    node.wait_link_interest("/routez?subs=1", "routes", subject, present).await;
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    timeout(TIMEOUT, sub.next()).await.expect("message in time").expect("subscription open")
}

/// Pub/sub with wildcards and headers, queue groups spanning nodes, request-reply and
/// no-responders, between clients of two different nodes.
async fn exercise(
    publisher: &async_nats::Client,
    subscriber: &async_nats::Client,
    third: &async_nats::Client,
    hub: &Node,
) {
    let mut orders = subscriber.subscribe("orders.>").await.unwrap();
    let mut q1 = subscriber.queue_subscribe("work", "workers".into()).await.unwrap();
    let mut q2 = third.queue_subscribe("work", "workers".into()).await.unwrap();
    let mut svc = third.subscribe("svc.echo").await.unwrap();
    subscriber.flush().await.unwrap();
    third.flush().await.unwrap();
    // Interest crosses the routes: the publisher's node sees it.
    for subject in ["orders.>", "work", "svc.echo"] {
        wait_remote_interest(hub, subject, true).await;
    }

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Trace", "t-1");
    publisher.publish_with_headers("orders.eu.1", headers, "o1".into()).await.unwrap();
    publisher.publish("other.subject", "nobody".into()).await.unwrap();
    publisher.publish("orders.us.2", "o2".into()).await.unwrap();
    publisher.flush().await.unwrap();
    let m = next(&mut orders).await;
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("orders.eu.1", &b"o1"[..]));
    assert_eq!(m.headers.as_ref().and_then(|h| h.get("X-Trace")).map(|v| v.as_str()), Some("t-1"));
    assert_eq!(next(&mut orders).await.subject.as_str(), "orders.us.2", "each message once, in order");

    // One member of the group in the whole cluster gets each message.
    for i in 0..200 {
        publisher.publish("work", format!("{i}").into()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let (mut a, mut b) = (0, 0);
    while a + b < 200 {
        tokio::select! {
            m = q1.next() => { m.expect("open"); a += 1; }
            m = q2.next() => { m.expect("open"); b += 1; }
            _ = tokio::time::sleep(TIMEOUT) => panic!("queue messages missing: {a} + {b}"),
        }
    }
    assert!(a > 20 && b > 20, "both members get a share: {a} / {b}");
    let extra = timeout(Duration::from_millis(200), async {
        tokio::select! { _ = q1.next() => true, _ = q2.next() => true }
    })
    .await;
    assert!(extra.is_err(), "no message went to both members");

    // Request-reply across nodes, and no responders when nobody listens anywhere.
    let responder = third.clone();
    let echo = tokio::spawn(async move {
        let m = next(&mut svc).await;
        responder.publish(m.reply.unwrap(), m.payload).await.unwrap();
        responder.flush().await.unwrap();
    });
    let reply = timeout(TIMEOUT, publisher.request("svc.echo", "ping".into())).await.unwrap().unwrap();
    assert_eq!(&reply.payload[..], b"ping");
    echo.await.unwrap();
    let err = timeout(TIMEOUT, publisher.request("svc.nobody", "x".into())).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_from_one_seed_form_a_mesh_and_carry_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let a = courier(dir.path(), "A", 0, &[]);
    let b = courier(dir.path(), "B", 0, &[route_port(&a)]);
    let c = courier(dir.path(), "C", 0, &[route_port(&a)]);
    for n in [&a, &b, &c] {
        wait_routes(n, 2).await;
    }
    let routez = routez(&b).await;
    let solicited: Vec<bool> =
        routez["routes"].as_array().unwrap().iter().map(|r| r["did_solicit"].as_bool().unwrap()).collect();
    assert_eq!(solicited.len(), 2, "{routez}");

    let (ca, cb, cc) = (a.client().await, b.client().await, c.client().await);
    exercise(&cc, &cb, &ca, &c).await;

    // A client learns every node's URL.
    let info = cc.server_info();
    assert_eq!(info.connect_urls.len(), 3, "{:?}", info.connect_urls);

    // UNSUB propagates: once B has no interest left, C stops sending.
    let mut gone = cb.subscribe("temp.*").await.unwrap();
    cb.flush().await.unwrap();
    wait_remote_interest(&c, "temp.*", true).await;
    gone.unsubscribe().await.unwrap();
    cb.flush().await.unwrap();
    wait_remote_interest(&c, "temp.*", false).await;

    // A burst across one route arrives complete and in order.
    let mut burst = cb.subscribe("burst").await.unwrap();
    cb.flush().await.unwrap();
    wait_remote_interest(&c, "burst", true).await;
    for i in 0..20_000u32 {
        cc.publish("burst", i.to_be_bytes().to_vec().into()).await.unwrap();
    }
    cc.flush().await.unwrap();
    for i in 0..20_000u32 {
        let m = next(&mut burst).await;
        assert_eq!(&m.payload[..], &i.to_be_bytes(), "message {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_redialed_and_its_clients_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let a = courier(dir.path(), "A", 0, &[]);
    let port_a = route_port(&a);
    let b = courier(dir.path(), "B", 0, &[port_a]);
    let c = courier(dir.path(), "C", 0, &[port_a]);
    for n in [&a, &b, &c] {
        wait_routes(n, 2).await;
    }
    // A client of A, told of B and C by A's INFO, fails over when A dies.
    let roaming = a.client().await;
    let mut sub = roaming.subscribe("roam").await.unwrap();
    roaming.flush().await.unwrap();
    let cb = b.client().await;
    drop(a); // SIGKILL
    wait_routes(&b, 1).await;
    wait_routes(&c, 1).await;
    let deadline = Instant::now() + WAIT;
    loop {
        cb.publish("roam", "here".into()).await.unwrap();
        cb.flush().await.unwrap();
        if let Ok(Some(m)) = timeout(Duration::from_millis(200), sub.next()).await {
            assert_eq!(&m.payload[..], b"here");
            break;
        }
        assert!(Instant::now() < deadline, "the client did not fail over");
    }

    // A comes back on its port; B and C redial it and traffic reaches it again.
    let a = courier(dir.path(), "A", port_a, &[]);
    for n in [&a, &b, &c] {
        wait_routes(n, 2).await;
    }
    let ca = a.client().await;
    let mut at_a = ca.subscribe("back").await.unwrap();
    ca.flush().await.unwrap();
    wait_remote_interest(&c, "back", true).await;
    let cc = c.client().await;
    cc.publish("back", "again".into()).await.unwrap();
    cc.flush().await.unwrap();
    assert_eq!(&next(&mut at_a).await.payload[..], b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_nodes_join_the_same_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let a = courier(dir.path(), "A", 0, &[]);
    let Some(n) = nats_server(dir.path(), "N", &[route_port(&a)]) else {
        assert!(std::env::var_os("CI").is_none(), "CI installs nats-server");
        eprintln!("nats-server not installed: skipping");
        return;
    };
    // C is given only N: gossip makes it meet A too.
    let c = courier(dir.path(), "C", 0, &[route_port(&n)]);
    wait_routes(&a, 2).await;
    wait_routes(&c, 2).await;
    wait_routes(&n, 2).await;

    let (ca, cn, cc) = (a.client().await, n.client().await, c.client().await);
    // Courier → nats-server → Courier and back, every pairing.
    exercise(&ca, &cn, &cc, &a).await;
    exercise(&cn, &cc, &ca, &n).await;
    assert!(!n.log().contains("[ERR]"), "nats-server logged errors:\n{}", n.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = courier(dir.path(), "A", 0, &[]);
    let x = courier_in(dir.path(), "OTHER", "X", 0, &[route_port(&a)], "");
    let deadline = Instant::now() + WAIT;
    while !a.log().contains("does not match") {
        assert!(Instant::now() < deadline, "A did not refuse X:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.log().contains(r#"Rejecting connection, cluster name "OTHER" does not match "C1""#), "{}", a.log());
    assert_eq!(routez(&a).await["num_routes"], 0);
    assert_eq!(routez(&x).await["num_routes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_permissions_limit_what_crosses() {
    let dir = tempfile::tempdir().unwrap();
    let a = courier_in(
        dir.path(),
        "C1",
        "A",
        0,
        &[],
        r#"permissions { import: ["allowed.>", "marker"], export: ["out.>", "marker"] }"#,
    );
    let b = courier(dir.path(), "B", 0, &[route_port(&a)]);
    wait_routes(&a, 1).await;
    wait_routes(&b, 1).await;
    let (ca, cb) = (a.client().await, b.client().await);
    // Import: A tells B of its interest, and takes messages, only where it may import.
    let mut allowed = ca.subscribe("allowed.>").await.unwrap();
    let mut blocked = ca.subscribe("blocked.>").await.unwrap();
    let mut marker_a = ca.subscribe("marker").await.unwrap();
    ca.flush().await.unwrap();
    wait_remote_interest(&b, "marker", true).await;
    wait_remote_interest(&b, "allowed.>", true).await;
    wait_remote_interest(&b, "blocked.>", false).await;
    cb.publish("blocked.x", "no".into()).await.unwrap();
    cb.publish("allowed.x", "yes".into()).await.unwrap();
    cb.publish("marker", "m".into()).await.unwrap();
    cb.flush().await.unwrap();
    assert_eq!(&next(&mut allowed).await.payload[..], b"yes");
    next(&mut marker_a).await;
    assert!(timeout(Duration::from_millis(100), blocked.next()).await.is_err(), "not imported");

    // Export: A takes B's interest, and sends messages, only where it may export.
    let mut out = cb.subscribe("out.y").await.unwrap();
    let mut secret = cb.subscribe("secret.y").await.unwrap();
    let mut marker_b = cb.subscribe("marker").await.unwrap();
    cb.flush().await.unwrap();
    wait_remote_interest(&a, "marker", true).await;
    wait_remote_interest(&a, "out.y", true).await;
    wait_remote_interest(&a, "secret.y", false).await;
    ca.publish("secret.y", "no".into()).await.unwrap();
    ca.publish("out.y", "yes".into()).await.unwrap();
    ca.publish("marker", "m".into()).await.unwrap();
    ca.flush().await.unwrap();
    assert_eq!(&next(&mut out).await.payload[..], b"yes");
    next(&mut marker_b).await;
    assert!(timeout(Duration::from_millis(100), secret.next()).await.is_err(), "not exported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_over_tls_check_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap().self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.path().join("route.pem"), dir.path().join("route-key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let tls = format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}",
        cert_file.to_str().unwrap(),
        key_file.to_str().unwrap(),
        cert_file.to_str().unwrap()
    );
    let a = courier_in(dir.path(), "C1", "A", 0, &[], &tls);
    let b = courier_in(dir.path(), "C1", "B", 0, &[route_port(&a)], &tls);
    wait_routes(&a, 1).await;
    wait_routes(&b, 1).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let mut sub = cb.subscribe("secure").await.unwrap();
    cb.flush().await.unwrap();
    wait_remote_interest(&a, "secure", true).await;
    ca.publish("secure", "over tls".into()).await.unwrap();
    ca.flush().await.unwrap();
    assert_eq!(&next(&mut sub).await.payload[..], b"over tls");
    // A server without TLS cannot join.
    let plain = courier(dir.path(), "P", 0, &[route_port(&a)]);
    let deadline = Instant::now() + WAIT;
    while !a.log().contains("Route TLS handshake error") {
        assert!(Instant::now() < deadline, "A did not refuse a plain route:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(routez(&plain).await["num_routes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_stay_apart_across_routes() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = "accounts { A: { users: [{user: a, password: a}] }, B: { users: [{user: b, password: b}] } }\n";
    let n1 = courier_conf(dir.path(), "N1", &format!("{accounts}{}", cluster_conf("C1", "N1", 0, &[], "")));
    let n2 =
        courier_conf(dir.path(), "N2", &format!("{accounts}{}", cluster_conf("C1", "N2", 0, &[route_port(&n1)], "")));
    wait_routes(&n1, 1).await;
    wait_routes(&n2, 1).await;
    let connect = |node: &Node, user: &str| {
        let url = node.client.clone();
        let user = user.to_string();
        async move {
            let opts =
                async_nats::ConnectOptions::with_user_and_password(user.clone(), user).connection_timeout(TIMEOUT);
            timeout(TIMEOUT, opts.connect(url)).await.unwrap().unwrap()
        }
    };
    let (pub_a, pub_b) = (connect(&n1, "a").await, connect(&n1, "b").await);
    let (sub_a, sub_b) = (connect(&n2, "a").await, connect(&n2, "b").await);
    let mut in_a = sub_a.subscribe("same.subject").await.unwrap();
    let mut in_b = sub_b.subscribe("same.subject").await.unwrap();
    sub_a.flush().await.unwrap();
    sub_b.flush().await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let detail = n1.monitor("/routez?subs=detail").await;
        let accounts: Vec<String> = detail["routes"][0]["subscriptions_list_detail"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["subject"] == "same.subject")
            .map(|d| d["account"].as_str().unwrap_or("").to_string())
            .collect();
        if accounts.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "interest of both accounts: {detail}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Interleaved, so that one route carries both accounts' messages on the same subject.
    for i in 0..20 {
        let (client, text) = if i % 2 == 0 { (&pub_a, "for a") } else { (&pub_b, "for b") };
        client.publish("same.subject", text.into()).await.unwrap();
        client.flush().await.unwrap();
    }
    for _ in 0..10 {
        assert_eq!(&next(&mut in_a).await.payload[..], b"for a");
        assert_eq!(&next(&mut in_b).await.payload[..], b"for b");
    }
    assert!(timeout(Duration::from_millis(100), in_a.next()).await.is_err());
    assert!(timeout(Duration::from_millis(100), in_b.next()).await.is_err());
}

#[test]
fn jetstream_with_a_cluster_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(COURIER)
        .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd", dir.path().to_str().unwrap()])
        .args(["--cluster", "nats://127.0.0.1:-1", "--cluster_name", "C1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("JetStream in a cluster is not supported yet"), "{text}");
}
