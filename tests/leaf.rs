//! Leaf nodes over real sockets: a Courier leaf of a Courier hub, and (when nats-server is
//! installed; CI installs it) a Courier leaf of a nats-server hub and a nats-server leaf of a
//! Courier hub. Messages, headers, queue groups spanning both sides, request-reply and
//! unsubscribes cross the link; only what someone on the other side wants crosses; the leaf
//! keeps serving its own clients while the hub is down and picks up again when it is back; a
//! loop is refused; accounts, users and deny lists hold. Raw TCP checks the hub's bytes.

mod common;

use std::time::Duration;

use common::process::{self, Proc, COURIER};
use common::RawClient;
use courier::options::leaf::{LeafNodeOptions, LeafUser};
use futures::StreamExt;
use tokio::time::timeout;

use common::TIMEOUT;

/// A hub's configuration: leaf nodes accepted on `leaf_port` (0: a free one), with `extra`
/// inside `leafnodes {}` and `top` outside it.
fn hub_conf(name: &str, leaf_port: u16, extra: &str, top: &str) -> String {
    let port = if leaf_port == 0 { "-1".to_string() } else { leaf_port.to_string() };
    format!(
        "server_name: {name}\nlisten: 127.0.0.1:-1\nhttp: 127.0.0.1:-1\n{top}\n\
         leafnodes {{ listen: 127.0.0.1:{port}\n{extra}\n}}\n"
    )
}

/// A leaf's configuration: one remote to `url`, with `extra` inside the remote.
fn leaf_conf(name: &str, url: &str, extra: &str) -> String {
    format!(
        "server_name: {name}\nlisten: 127.0.0.1:-1\nhttp: 127.0.0.1:-1\n\
         leafnodes {{ remotes [ {{ url: \"{url}\"\n{extra}\n}} ] }}\n"
    )
}

/// A hub's configuration with `top` (which names the server) and no server name of its own.
fn hub_conf_named(leaf_port: u16, top: &str) -> String {
    let port = if leaf_port == 0 { "-1".to_string() } else { leaf_port.to_string() };
    format!("listen: 127.0.0.1:-1\nhttp: 127.0.0.1:-1\n{top}\nleafnodes {{ listen: 127.0.0.1:{port} }}\n")
}

fn leaf_url(hub: &Proc) -> String {
    format!("nats-leaf://127.0.0.1:{}", hub.leaf_port.expect("the hub accepts leaf nodes"))
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    timeout(TIMEOUT, sub.next()).await.expect("message in time").expect("subscription open")
}

async fn nothing_more(sub: &mut async_nats::Subscriber, what: &str) {
    assert!(timeout(Duration::from_millis(200), sub.next()).await.is_err(), "{what}");
}

/// Waits until `node` has `n` leaf links.
async fn wait_links(node: &Proc, n: u64) {
    node.wait_monitor("/leafz", &format!("{n} leaf links"), |v| v["leafnodes"].as_u64() == Some(n)).await;
}

/// Waits until `node`'s leaf links list (or, `present` false, do not list) interest in
/// `subject` from the other side.
async fn wait_interest(node: &Proc, subject: &str, present: bool) {
    node.wait_link_interest("/leafz?subs=1", "leafs", subject, present).await;
}

/// The `cluster` block (and server name) of hub `name` of cluster HUBS, seeded with the route
/// port `seed` when it is not the first.
fn hub_cluster(name: &str, seed: Option<u16>) -> String {
    let routes = seed.map(|p| format!("routes: [\"nats-route://127.0.0.1:{p}\"]")).unwrap_or_default();
    format!("cluster {{ name: HUBS, listen: 127.0.0.1:-1, {routes} }}\nserver_name: {name}")
}

/// Messages `node` has taken in over its leaf links.
async fn leaf_in_msgs(node: &Proc) -> u64 {
    let v = node.monitor("/leafz").await;
    v["leafs"].as_array().into_iter().flatten().map(|l| l["in_msgs"].as_u64().unwrap_or(0)).sum()
}

/// Everything a user of the link depends on, between a hub and its leaf.
async fn exercise(hub: &Proc, leaf: &Proc) {
    wait_links(hub, 1).await;
    wait_links(leaf, 1).await;
    let (ch, cl) = (hub.client().await, leaf.client().await);

    // Only interest crosses: with nobody on the hub listening, nothing goes up.
    let before = leaf_in_msgs(hub).await;
    for i in 0..50 {
        cl.publish("site.local", format!("{i}").into()).await.unwrap();
    }
    cl.flush().await.unwrap();
    let mut up = ch.subscribe("up.>").await.unwrap();
    ch.flush().await.unwrap();
    wait_interest(leaf, "up.>", true).await;
    cl.publish("up.one", "u1".into()).await.unwrap();
    cl.flush().await.unwrap();
    let m = next(&mut up).await;
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("up.one", &b"u1"[..]));
    assert_eq!(leaf_in_msgs(hub).await, before + 1, "only the message someone wanted crossed");

    // Hub to leaf, with headers.
    let mut down = cl.subscribe("down.*").await.unwrap();
    cl.flush().await.unwrap();
    wait_interest(hub, "down.*", true).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Site", "s-1");
    ch.publish_with_headers("down.cmd", headers, "d1".into()).await.unwrap();
    ch.publish("down.too.deep", "no".into()).await.unwrap();
    ch.flush().await.unwrap();
    let m = next(&mut down).await;
    assert_eq!(&m.payload[..], b"d1");
    assert_eq!(m.headers.as_ref().and_then(|h| h.get("X-Site")).map(|v| v.as_str()), Some("s-1"));
    nothing_more(&mut down, "down.too.deep does not match down.*").await;

    // A queue group spanning both sides: each message once; each side's own members first;
    // the other side's when it has none.
    let mut qh = ch.queue_subscribe("jobs", "workers".into()).await.unwrap();
    let mut ql = cl.queue_subscribe("jobs", "workers".into()).await.unwrap();
    ch.flush().await.unwrap();
    cl.flush().await.unwrap();
    wait_interest(hub, "jobs", true).await;
    wait_interest(leaf, "jobs", true).await;
    for i in 0..50 {
        ch.publish("jobs", format!("h{i}").into()).await.unwrap();
        cl.publish("jobs", format!("l{i}").into()).await.unwrap();
    }
    ch.flush().await.unwrap();
    cl.flush().await.unwrap();
    let (mut at_hub, mut at_leaf) = (0, 0);
    while at_hub + at_leaf < 100 {
        tokio::select! {
            m = qh.next() => { assert!(m.expect("open").payload.starts_with(b"h")); at_hub += 1; }
            m = ql.next() => { assert!(m.expect("open").payload.starts_with(b"l")); at_leaf += 1; }
            _ = tokio::time::sleep(TIMEOUT) => panic!("queue messages missing: {at_hub} + {at_leaf}"),
        }
    }
    nothing_more(&mut qh, "no message went to both members").await;
    nothing_more(&mut ql, "no message went to both members").await;
    qh.unsubscribe().await.unwrap();
    ch.flush().await.unwrap();
    wait_interest(leaf, "jobs", false).await;
    for i in 0..10 {
        ch.publish("jobs", format!("x{i}").into()).await.unwrap();
    }
    ch.flush().await.unwrap();
    for _ in 0..10 {
        assert!(next(&mut ql).await.payload.starts_with(b"x"), "the leaf's member serves when the hub has none");
    }
    nothing_more(&mut ql, "each message once").await;

    // Request-reply across the link, both ways; no responders when nobody listens anywhere.
    for (server, client) in [(&cl, &ch), (&ch, &cl)] {
        let mut svc = server.subscribe("svc.echo").await.unwrap();
        server.flush().await.unwrap();
        let responder = server.clone();
        let echo = tokio::spawn(async move {
            let m = next(&mut svc).await;
            responder.publish(m.reply.unwrap(), m.payload).await.unwrap();
            responder.flush().await.unwrap();
        });
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let reply = loop {
            // The service's interest may still be on its way over the link.
            match timeout(TIMEOUT, client.request("svc.echo", "ping".into())).await.unwrap() {
                Ok(reply) => break reply,
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    assert!(tokio::time::Instant::now() < deadline, "the service never became reachable");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("request: {e}"),
            }
        };
        assert_eq!(&reply.payload[..], b"ping");
        echo.await.unwrap();
    }
    let err = timeout(TIMEOUT, ch.request("svc.nobody", "x".into())).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);

    // UNSUB crosses: once the leaf has no interest left, the hub stops being told of it.
    let mut temp = cl.subscribe("temp.>").await.unwrap();
    cl.flush().await.unwrap();
    wait_interest(hub, "temp.>", true).await;
    temp.unsubscribe().await.unwrap();
    cl.flush().await.unwrap();
    wait_interest(hub, "temp.>", false).await;
}

fn nats_server_or_skip() -> Option<&'static str> {
    let bin = process::nats_server_bin();
    if bin.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI installs nats-server");
        eprintln!("nats-server not installed: skipping");
    }
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_courier_leaf_of_a_courier_hub() {
    let dir = tempfile::tempdir().unwrap();
    let hub = process::start(COURIER, dir.path(), "HUB", &hub_conf("HUB", 0, "", ""));
    let leaf = process::start(COURIER, dir.path(), "LEAF", &leaf_conf("LEAF", &leaf_url(&hub), ""));
    exercise(&hub, &leaf).await;
    // Both sides show the link, the leaf's varz its remote.
    let varz = leaf.monitor("/varz").await;
    assert_eq!(varz["leafnodes"], 1, "{varz}");
    assert_eq!(varz["leaf"]["remotes"][0]["local_account"], "$G", "{varz}");
    let varz = hub.monitor("/varz").await;
    assert_eq!(varz["leaf"]["port"].as_u64(), hub.leaf_port.map(u64::from), "{varz}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_courier_leaf_of_a_nats_server_hub() {
    let Some(bin) = nats_server_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hub = process::start(bin, dir.path(), "NHUB", &hub_conf("NHUB", 0, "", ""));
    let leaf = process::start(COURIER, dir.path(), "LEAF", &leaf_conf("LEAF", &leaf_url(&hub), ""));
    exercise(&hub, &leaf).await;
    assert!(!hub.log().contains("[ERR]"), "nats-server logged errors:\n{}", hub.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_leaf_of_a_courier_hub() {
    let Some(bin) = nats_server_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hub = process::start(COURIER, dir.path(), "HUB", &hub_conf("HUB", 0, "", ""));
    let leaf = process::start(bin, dir.path(), "NLEAF", &leaf_conf("NLEAF", &leaf_url(&hub), ""));
    exercise(&hub, &leaf).await;
    assert!(!leaf.log().contains("[ERR]"), "nats-server logged errors:\n{}", leaf.log());
}

/// A free port on 127.0.0.1, for a server that must come back on the same one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaf_serves_its_site_while_the_hub_is_down_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hub = process::start(COURIER, dir.path(), "HUB", &hub_conf("HUB", port, "", ""));
    let leaf = process::start(COURIER, dir.path(), "LEAF", &leaf_conf("LEAF", &leaf_url(&hub), ""));
    wait_links(&hub, 1).await;
    let cl = leaf.client().await;
    let mut site = cl.subscribe("site.>").await.unwrap();
    let mut commands = cl.subscribe("cmd.site1").await.unwrap();
    cl.flush().await.unwrap();
    wait_interest(&hub, "cmd.site1", true).await;

    drop(hub); // SIGKILL
    wait_links(&leaf, 0).await;
    for i in 0..20 {
        cl.publish("site.temp", format!("{i}").into()).await.unwrap();
    }
    cl.flush().await.unwrap();
    for i in 0..20 {
        assert_eq!(next(&mut site).await.payload, format!("{i}"), "local traffic goes on without the hub");
    }

    // The hub comes back on its port: the leaf redials and tells it its interest again.
    let hub = process::start(COURIER, dir.path(), "HUB", &hub_conf("HUB", port, "", ""));
    wait_links(&hub, 1).await;
    wait_interest(&hub, "cmd.site1", true).await;
    let ch = hub.client().await;
    ch.publish("cmd.site1", "reboot".into()).await.unwrap();
    ch.flush().await.unwrap();
    assert_eq!(&next(&mut commands).await.payload[..], b"reboot");
    let mut up = ch.subscribe("site.>").await.unwrap();
    ch.flush().await.unwrap();
    wait_interest(&leaf, "site.>", true).await;
    cl.publish("site.temp", "again".into()).await.unwrap();
    cl.flush().await.unwrap();
    assert_eq!(&next(&mut up).await.payload[..], b"again");
    assert!(leaf.log().contains("Leafnode connection created"), "{}", leaf.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_that_are_each_others_leaf_are_a_loop_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let conf = |name: &str, own: u16, other: u16| {
        hub_conf(name, own, &format!("remotes [ {{ url: \"nats-leaf://127.0.0.1:{other}\" }} ]"), "")
    };
    let a = process::start(COURIER, dir.path(), "A", &conf("A", pa, pb));
    let b = process::start(COURIER, dir.path(), "B", &conf("B", pb, pa));
    let needle = r#"Loop detected for leafnode account="$G". Delaying attempt to reconnect for 30s"#;
    a.wait_log(needle).await;
    b.wait_log(needle).await;
    drop((a, b));
}

/// A hub in this process, accepting leaf nodes (with `users`, when given).
async fn hub_in_process(users: Vec<LeafUser>) -> common::TestServer {
    let mut opts = common::options();
    opts.leafnodes = Some(LeafNodeOptions { port: Some(0), users, ..LeafNodeOptions::default() });
    common::TestServer::start(opts).await
}

/// The JSON of an `INFO` line.
fn info_json(line: &[u8]) -> serde_json::Value {
    let text = std::str::from_utf8(line).unwrap();
    serde_json::from_str(text.trim().strip_prefix("INFO ").expect("an INFO line")).unwrap()
}

#[tokio::test]
async fn the_hubs_handshake_and_loop_detection_bytes() {
    let hub = hub_in_process(Vec::new()).await;
    let addr = hub.handle.leaf_addr().expect("leaf listener");
    let mut raw = RawClient::connect_bare(addr).await;
    let info = info_json(&raw.read_line().await);
    assert_eq!(info["auth_required"], true, "{info}");
    assert_eq!(info["info_on_connect"], true, "{info}");
    assert!(info["client_id"].as_u64().unwrap() > 0, "{info}");
    assert_eq!(info["nonce"].as_str().unwrap().len(), 15, "{info}");
    assert_eq!(info["leafnode_urls"], serde_json::json!([addr.to_string()]), "{info}");
    raw.send("CONNECT {\"name\":\"EDGE\",\"cluster\":\"EDGE\",\"headers\":true}\r\n").await;
    let second = info_json(&raw.read_line().await);
    assert_eq!((second["connect_info"].clone(), second["remote_account"].clone()), (true.into(), "$G".into()));
    let lds = String::from_utf8(raw.read_line().await).unwrap();
    let lds = lds.trim().strip_prefix("LS+ ").expect("the loop detection subject first").to_string();
    assert!(lds.starts_with("$LDS.") && lds.len() == 5 + 22, "{lds}");
    // Interest and a message from the leaf are taken (after the hub's own interest).
    raw.send("LS+ edge.cmd\r\nLMSG edge.up 2\r\nhi\r\nPING\r\n").await;
    let told = raw.read_through(b"PONG\r\n").await;
    assert!(!common::show(&told).contains("edge.cmd"), "the leaf is not told its own interest back");
    // The hub's own loop detection subject coming back is a loop.
    raw.send(format!("LS+ {lds}\r\n")).await;
    raw.expect("-ERR 'Loop detected for leafnode account=\"$G\". Delaying attempt to reconnect for 30s'\r\n").await;
    raw.expect_closed().await;
    hub.assert_healthy().await;
}

#[tokio::test]
async fn the_hub_refuses_clients_and_bad_credentials() {
    let users = vec![LeafUser { name: "edge".into(), password: "s3cret".into(), account: None }];
    let hub = hub_in_process(users).await;
    let addr = hub.handle.leaf_addr().expect("leaf listener");
    let mut client = RawClient::connect_bare(addr).await;
    client.read_line().await;
    client.send("CONNECT {\"lang\":\"go\",\"verbose\":false}\r\n").await;
    client.expect("-ERR 'attempted to connect to leaf node port'\r\n").await;
    client.expect_closed().await;
    let mut wrong = RawClient::connect_bare(addr).await;
    wrong.read_line().await;
    wrong.send("CONNECT {\"name\":\"EDGE\",\"user\":\"edge\",\"pass\":\"guess\"}\r\n").await;
    wrong.expect("-ERR 'Authorization Violation'\r\n").await;
    wrong.expect_closed().await;
    let mut right = RawClient::connect_bare(addr).await;
    right.read_line().await;
    right.send("CONNECT {\"name\":\"EDGE\",\"user\":\"edge\",\"pass\":\"s3cret\"}\r\n").await;
    assert_eq!(info_json(&right.read_line().await)["connect_info"], true);
    hub.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_links_are_bound_to_an_account_and_deny_what_they_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let top = "accounts { A { users [ {user: a, password: a} ] }, B { users [ {user: b, password: b} ] } }";
    let auth = "authorization { users [ {user: edge, password: pw, account: A} ] }";
    let hub = process::start(COURIER, dir.path(), "HUB", &hub_conf("HUB", 0, auth, top));
    let url = format!("nats-leaf://edge:pw@127.0.0.1:{}", hub.leaf_port.unwrap());
    let deny = "deny_exports: [\"secret.>\"], deny_imports: [\"private.>\"]";
    let leaf = process::start(COURIER, dir.path(), "LEAF", &leaf_conf("LEAF", &url, deny));
    wait_links(&hub, 1).await;
    let link = hub.monitor("/leafz").await;
    assert_eq!(link["leafs"][0]["account"], "A", "{link}");

    let connect = |user: &str| {
        async_nats::ConnectOptions::with_user_and_password(user.into(), user.into()).connection_timeout(TIMEOUT)
    };
    let client = hub.client.clone();
    let ha = timeout(TIMEOUT, connect("a").connect(&client)).await.unwrap().unwrap();
    let hb = timeout(TIMEOUT, connect("b").connect(&client)).await.unwrap().unwrap();
    let cl = leaf.client().await;
    let mut a_shared = ha.subscribe("shared.>").await.unwrap();
    let mut a_secret = ha.subscribe("secret.>").await.unwrap();
    let mut b_shared = hb.subscribe("shared.>").await.unwrap();
    ha.flush().await.unwrap();
    hb.flush().await.unwrap();
    wait_interest(&leaf, "shared.>", true).await;
    cl.publish("secret.plan", "no".into()).await.unwrap();
    cl.publish("shared.x", "yes".into()).await.unwrap();
    cl.flush().await.unwrap();
    assert_eq!(&next(&mut a_shared).await.payload[..], b"yes", "the bound account gets it");
    nothing_more(&mut b_shared, "another account does not").await;
    nothing_more(&mut a_secret, "deny_exports keeps it on the leaf").await;

    let mut private = cl.subscribe("private.>").await.unwrap();
    let mut open = cl.subscribe("open.>").await.unwrap();
    cl.flush().await.unwrap();
    wait_interest(&hub, "open.>", true).await;
    wait_interest(&hub, "private.>", false).await;
    ha.publish("private.x", "no".into()).await.unwrap();
    ha.publish("open.x", "yes".into()).await.unwrap();
    ha.flush().await.unwrap();
    assert_eq!(&next(&mut open).await.payload[..], b"yes");
    nothing_more(&mut private, "deny_imports keeps it off the leaf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_whose_hub_is_unreachable_still_serves_its_clients() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = process::start(
        COURIER,
        dir.path(),
        "SOLO",
        &leaf_conf("SOLO", &format!("nats-leaf://127.0.0.1:{}", free_port()), ""),
    );
    assert!(leaf.leaf_port.is_none(), "no leaf listener without a listen");
    leaf.wait_log("Error trying to connect as leafnode to remote server").await;
    let c = leaf.client().await;
    let mut sub = c.subscribe("here").await.unwrap();
    c.publish("here", "ok".into()).await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(&next(&mut sub).await.payload[..], b"ok");
}

#[tokio::test]
async fn a_leaf_reconnecting_from_the_same_server_replaces_its_old_link() {
    let hub = hub_in_process(Vec::new()).await;
    let addr = hub.handle.leaf_addr().expect("leaf listener");
    let connect = "CONNECT {\"name\":\"EDGE\",\"cluster\":\"EDGE\"}\r\n";
    let mut old = RawClient::connect_bare(addr).await;
    old.read_line().await;
    old.send(connect).await;
    assert_eq!(info_json(&old.read_line().await)["connect_info"], true);
    let mut new = RawClient::connect_bare(addr).await;
    new.read_line().await;
    new.send(connect).await;
    assert_eq!(info_json(&new.read_line().await)["connect_info"], true);
    let rest = old.read_through(b"-ERR 'Duplicate Remote LeafNode Connection'\r\n").await;
    assert!(!rest.is_empty());
    old.expect_closed().await;
    new.send("PING\r\n").await;
    new.read_through(b"PONG\r\n").await;
}

/// An operator, an account it signs and a `.creds` file of a user of that account, in `dir`.
struct Creds {
    operator_jwt: String,
    account: nkeys::KeyPair,
    account_jwt: String,
    path: std::path::PathBuf,
}

/// Version 2 claims as nsc writes them (nats-server refuses others), without limits.
fn claims(issuer: &nkeys::KeyPair, subject: &str, kind: &str) -> serde_json::Value {
    let limits = match kind {
        "account" => serde_json::json!({"conn": -1, "leaf": -1, "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true}),
        _ => serde_json::json!({"subs": -1, "data": -1, "payload": -1}),
    };
    let mut nats = serde_json::json!({"type": kind, "version": 2});
    match kind {
        "account" => nats["limits"] = limits,
        // A user's limits sit beside its type.
        "user" => nats.as_object_mut().unwrap().extend(limits.as_object().unwrap().clone()),
        _ => {}
    }
    serde_json::json!({
        "jti": format!("{kind}-{subject}"),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": kind,
        "sub": subject,
        "nats": nats,
    })
}

fn creds(dir: &std::path::Path) -> Creds {
    let operator = nkeys::KeyPair::new_operator();
    let operator_jwt = common::encode_jwt(claims(&operator, &operator.public_key(), "operator"), &operator);
    let account = nkeys::KeyPair::new_account();
    let account_jwt = common::encode_jwt(claims(&operator, &account.public_key(), "account"), &operator);
    let user = nkeys::KeyPair::new_user();
    let user_jwt = common::encode_jwt(claims(&account, &user.public_key(), "user"), &account);
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    let path = dir.join("edge.creds");
    std::fs::write(&path, text).unwrap();
    Creds { operator_jwt, account, account_jwt, path }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_signs_the_hubs_nonce_with_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let c = creds(dir.path());
    let account = c.account.public_key();
    let trust =
        courier::auth::Trust::new([c.operator_jwt.as_str()], [(account.as_str(), c.account_jwt.as_str())]).unwrap();
    let mut hub_opts = common::options();
    hub_opts.authorization.trust = Some(trust);
    hub_opts.leafnodes = Some(LeafNodeOptions { port: Some(0), ..LeafNodeOptions::default() });
    let hub = common::TestServer::start(hub_opts).await;
    let hub_leaf = hub.handle.leaf_addr().unwrap();
    let mut leaf_opts = common::options();
    leaf_opts.leafnodes = Some(LeafNodeOptions {
        remotes: vec![courier::options::leaf::RemoteLeafOptions {
            urls: vec![
                courier::options::route_url::RouteUrl::parse_leaf(&format!("nats-leaf://{hub_leaf}")).unwrap().0,
            ],
            credentials: Some(c.path.clone()),
            ..Default::default()
        }],
        ..LeafNodeOptions::default()
    });
    let leaf = common::TestServer::start(leaf_opts).await;
    // The link is bound to the account of the credentials' user.
    common::eventually("the link binds to the user's account", || {
        let a = hub.handle.state().accounts.get(&account);
        a.is_some_and(|a| a.sublist.all().iter().any(|s| s.subject.starts_with(b"$LDS.")))
    })
    .await;
    let cl = leaf.nats().await;
    let mut down = cl.subscribe("down").await.unwrap();
    cl.flush().await.unwrap();
    common::eventually("the leaf's interest reaches the account", || {
        let a = hub.handle.state().accounts.get(&account);
        a.is_some_and(|a| a.sublist.all().iter().any(|s| &s.subject[..] == b"down"))
    })
    .await;
    // A user of the same account on the hub reaches the leaf.
    let user = std::sync::Arc::new(nkeys::KeyPair::new_user());
    let jwt = common::encode_jwt(claims(&c.account, &user.public_key(), "user"), &c.account);
    let signer = std::sync::Arc::clone(&user);
    let ch = async_nats::ConnectOptions::with_jwt(jwt, move |nonce| {
        let signer = std::sync::Arc::clone(&signer);
        async move { signer.sign(&nonce).map_err(async_nats::AuthError::new) }
    })
    .connect(hub.url())
    .await
    .unwrap();
    ch.publish("down", "signed".into()).await.unwrap();
    ch.flush().await.unwrap();
    assert_eq!(&next(&mut down).await.payload[..], b"signed");
    leaf.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_courier_leaf_with_credentials_joins_a_nats_server_hub_in_operator_mode() {
    let Some(bin) = nats_server_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let c = creds(dir.path());
    let top = format!(
        "operator: {}\nresolver: MEMORY\nresolver_preload: {{ {}: {} }}",
        c.operator_jwt,
        c.account.public_key(),
        c.account_jwt
    );
    let hub = process::start(bin, dir.path(), "NHUB", &hub_conf("NHUB", 0, "", &top));
    let extra = format!("credentials: \"{}\"", c.path.display());
    let leaf = process::start(COURIER, dir.path(), "LEAF", &leaf_conf("LEAF", &leaf_url(&hub), &extra));
    wait_links(&hub, 1).await;
    let link = hub.monitor("/leafz").await;
    assert_eq!(link["leafs"][0]["account"], c.account.public_key(), "{link}\n{}\n{}", hub.log(), leaf.log());
    wait_links(&leaf, 1).await;
    assert!(!hub.log().contains("[ERR]"), "nats-server logged errors:\n{}", hub.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_of_one_server_of_a_hub_cluster_reaches_the_whole_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let a = process::start(COURIER, dir.path(), "A", &hub_conf_named(0, &hub_cluster("A", None)));
    let b = process::start(COURIER, dir.path(), "B", &hub_conf_named(0, &hub_cluster("B", a.cluster_port)));
    a.wait_monitor("/routez", "a route", |v| v["num_routes"] == 1).await;
    let leaf = process::start(COURIER, dir.path(), "LEAF", &leaf_conf("LEAF", &leaf_url(&a), ""));
    wait_links(&a, 1).await;
    let (cb, cl) = (b.client().await, leaf.client().await);
    // B's subscriber gets what the leaf publishes, through A.
    let mut at_b = cb.subscribe("up.>").await.unwrap();
    cb.flush().await.unwrap();
    wait_interest(&leaf, "up.>", true).await;
    cl.publish("up.x", "from the edge".into()).await.unwrap();
    cl.flush().await.unwrap();
    assert_eq!(&next(&mut at_b).await.payload[..], b"from the edge");
    // The leaf's subscriber gets what B publishes, through A.
    let mut at_leaf = cl.subscribe("down.>").await.unwrap();
    cl.flush().await.unwrap();
    wait_interest(&a, "down.>", true).await;
    b.wait_monitor("/routez?subs=1", "the leaf's interest over the route", |v| {
        v["routes"][0]["subscriptions_list"].as_array().into_iter().flatten().any(|s| s == "down.>")
    })
    .await;
    cb.publish("down.y", "to the edge".into()).await.unwrap();
    cb.flush().await.unwrap();
    assert_eq!(&next(&mut at_leaf).await.payload[..], b"to the edge");
    nothing_more(&mut at_leaf, "once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_courier_leaf_fails_over_to_another_server_of_a_nats_server_hub_cluster() {
    let Some(bin) = nats_server_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let n1 = process::start(bin, dir.path(), "N1", &hub_conf_named(0, &hub_cluster("N1", None)));
    let n2 = process::start(bin, dir.path(), "N2", &hub_conf_named(0, &hub_cluster("N2", n1.cluster_port)));
    n1.wait_monitor("/routez", "a route", |v| v["num_routes"] == 1).await;
    // The leaf is told of N1 only; N1's INFO names N2's leaf port too.
    let leaf = process::start(COURIER, dir.path(), "LEAF", &leaf_conf("LEAF", &leaf_url(&n1), ""));
    wait_links(&n1, 1).await;
    let cl = leaf.client().await;
    let cn2 = n2.client().await;
    let mut at_n2 = cn2.subscribe("up").await.unwrap();
    cn2.flush().await.unwrap();
    drop(n1); // SIGKILL
    wait_links(&n2, 1).await;
    wait_interest(&leaf, "up", true).await;
    cl.publish("up", "through N2".into()).await.unwrap();
    cl.flush().await.unwrap();
    assert_eq!(&next(&mut at_n2).await.payload[..], b"through N2");
}
