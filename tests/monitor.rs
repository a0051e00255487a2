//! HTTP monitoring with real traffic: /varz, /connz (paging, sorting, closed connections),
//! /subsz (with test), /healthz, the empty endpoints, /metrics, and the live page in a browser.

mod common;

use std::net::SocketAddr;

use common::{options, TestServer, TIMEOUT};
use futures::StreamExt;
use serde_json::Value;

async fn monitored() -> (TestServer, SocketAddr) {
    let server = TestServer::start(courier::Options { http_port: Some(0), ..options() }).await;
    let addr = server.handle.monitor_addr().expect("monitoring is on");
    (server, addr)
}

async fn json(addr: SocketAddr, path: &str) -> Value {
    let (status, headers, body) = common::http_get(addr, path).await;
    assert!(status.contains("200"), "{path}: {status}\n{body}");
    assert!(headers.to_ascii_lowercase().contains("access-control-allow-origin: *"), "{path}: {headers}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}\n{body}"))
}

/// Publishes `n` messages of `size` bytes on `subject` and waits until `sub` has them all.
async fn traffic(client: &async_nats::Client, sub: &mut async_nats::Subscriber, subject: &str, n: usize, size: usize) {
    for _ in 0..n {
        client.publish(subject.to_string(), vec![b'x'; size].into()).await.unwrap();
    }
    for _ in 0..n {
        tokio::time::timeout(TIMEOUT, sub.next()).await.expect("message in time").unwrap();
    }
}

#[tokio::test]
async fn varz_counts_exactly() {
    let (server, http) = monitored().await;
    let publisher = server.nats().await;
    let subscriber = server.nats().await;
    let mut sub = subscriber.subscribe("metrics.test").await.unwrap();
    subscriber.flush().await.unwrap();
    common::eventually("subscription registered", || common::subscriptions(&server.handle) >= 1).await;
    traffic(&publisher, &mut sub, "metrics.test", 25, 10).await;
    let v = json(http, "/varz").await;
    assert_eq!(v["port"], server.addr.port());
    assert_eq!(v["http_port"], http.port());
    assert_eq!(v["connections"], 2);
    assert_eq!(v["total_connections"], 2);
    assert_eq!(v["in_msgs"], 25);
    assert_eq!(v["out_msgs"], 25);
    assert_eq!(v["in_bytes"], 250);
    assert_eq!(v["out_bytes"], 250);
    assert_eq!(v["max_payload"], 1024 * 1024);
    assert_eq!(v["slow_consumers"], 0);
    assert!(v["mem"].as_u64().unwrap() > 0);
    let subs = v["subscriptions"].as_u64().unwrap();
    // The client's own request inbox subscription may or may not exist yet.
    assert!((1..=2).contains(&subs), "{subs}");
    assert_eq!(json(http, "/healthz").await, serde_json::json!({"status": "ok"}));
    assert_eq!(json(http, "/routez").await["num_routes"], 0);
    assert_eq!(json(http, "/leafz").await["leafnodes"], 0);
    // As nats-server: the global account and the system account.
    assert_eq!(json(http, "/accountz").await["accounts"], serde_json::json!(["$G", "$SYS"]));
}

#[tokio::test]
async fn connz_pages_sorts_and_remembers_closed_connections() {
    let (server, http) = monitored().await;
    let named = |name: &str| async_nats::ConnectOptions::new().name(name);
    let quiet = server.nats_with(named("quiet")).await;
    let busy = server.nats_with(named("busy")).await;
    let listener = server.nats_with(named("listener")).await;
    let mut sub = listener.subscribe("connz.>").await.unwrap();
    let _other = listener.subscribe("other").await.unwrap();
    listener.flush().await.unwrap();
    common::eventually("subscriptions registered", || common::subscriptions(&server.handle) >= 2).await;
    traffic(&busy, &mut sub, "connz.a", 7, 3).await;

    let all = json(http, "/connz?sort=msgs_from").await;
    assert_eq!(all["num_connections"], 3);
    assert_eq!(all["total"], 3);
    let conns = all["connections"].as_array().unwrap();
    assert_eq!(conns[0]["name"], "busy");
    assert_eq!(conns[0]["in_msgs"], 7);
    assert_eq!(conns[0]["in_bytes"], 21);
    assert_eq!(conns[0]["lang"], "rust");

    let by_out = json(http, "/connz?sort=msgs_to&limit=1").await;
    assert_eq!(by_out["num_connections"], 1);
    assert_eq!(by_out["total"], 3);
    assert_eq!(by_out["limit"], 1);
    assert_eq!(by_out["connections"][0]["name"], "listener");
    assert_eq!(by_out["connections"][0]["out_msgs"], 7);

    let page2 = json(http, "/connz?sort=cid&offset=1&limit=1").await;
    let page1 = json(http, "/connz?sort=cid&limit=1").await;
    assert!(page2["connections"][0]["cid"].as_u64() > page1["connections"][0]["cid"].as_u64());

    let with_subs = json(http, "/connz?subs=1&sort=subs").await;
    let top = &with_subs["connections"][0];
    assert_eq!(top["name"], "listener");
    let mut list: Vec<String> =
        top["subscriptions_list"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    list.retain(|s| !s.starts_with("_INBOX"));
    list.sort();
    assert_eq!(list, vec!["connz.>", "other"]);

    let cid = json(http, "/connz?sort=cid").await["connections"][0]["cid"].as_u64().unwrap();
    let one = json(http, &format!("/connz?cid={cid}")).await;
    assert_eq!(one["total"], 1);
    assert_eq!(one["connections"][0]["cid"], cid);

    drop(quiet);
    common::eventually("closed connection recorded", || server.handle.state().registry.closed().len() == 1).await;
    let closed = json(http, "/connz?state=closed").await;
    assert_eq!(closed["total"], 1);
    assert_eq!(closed["connections"][0]["name"], "quiet");
    assert_eq!(closed["connections"][0]["reason"], "Client Closed");
    assert!(closed["connections"][0]["stop"].is_string());
    assert_eq!(json(http, "/connz?state=any").await["total"], 3);

    let (status, _, _) = common::http_get(http, "/connz?sort=bogus").await;
    assert!(status.contains("400"), "{status}");
}

#[tokio::test]
async fn subsz_and_test_subject() {
    let (server, http) = monitored().await;
    let client = server.nats().await;
    let _a = client.subscribe("orders.*").await.unwrap();
    let _b = client.queue_subscribe("orders.new", "workers".to_string()).await.unwrap();
    let _c = client.subscribe("invoices.>").await.unwrap();
    client.flush().await.unwrap();
    common::eventually("subscriptions registered", || common::subscriptions(&server.handle) >= 3).await;
    let base = json(http, "/subsz").await;
    let n = base["num_subscriptions"].as_u64().unwrap();
    assert!(n >= 3);
    assert_eq!(base["num_inserts"].as_u64().unwrap(), n);
    assert_eq!(base["num_removes"], 0);
    assert!(base.get("subscriptions_list").is_none());

    let test = json(http, "/subsz?test=orders.new").await;
    let mut subjects: Vec<(String, Option<String>)> = test["subscriptions_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["subject"].as_str().unwrap().to_string(), s["qgroup"].as_str().map(str::to_string)))
        .collect();
    subjects.sort();
    assert_eq!(subjects, vec![("orders.*".into(), None), ("orders.new".into(), Some("workers".into()))]);
    assert_eq!(test["total"], 2);

    let all = json(http, "/subsz?subs=1&limit=2").await;
    assert_eq!(all["subscriptions_list"].as_array().unwrap().len(), 2);
    assert_eq!(all["total"].as_u64().unwrap(), n);
    let (status, _, _) = common::http_get(http, "/subsz?test=orders.*").await;
    assert!(status.contains("400"), "a test subject must be literal: {status}");
}

#[tokio::test]
async fn prometheus_metrics() {
    let (server, http) = monitored().await;
    let client = server.nats().await;
    let mut sub = client.subscribe("prom").await.unwrap();
    client.flush().await.unwrap();
    common::eventually("subscription registered", || common::subscriptions(&server.handle) >= 1).await;
    traffic(&client, &mut sub, "prom", 4, 5).await;
    let (status, headers, body) = common::http_get(http, "/metrics").await;
    assert!(status.contains("200"));
    assert!(headers.to_ascii_lowercase().contains("content-type: text/plain"), "{headers}");
    let value = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
    };
    assert_eq!(value("courier_connections"), 1.0);
    assert_eq!(value("courier_in_msgs_total"), 4.0);
    assert_eq!(value("courier_out_msgs_total"), 4.0);
    assert_eq!(value("courier_in_bytes_total"), 20.0);
    assert_eq!(value("courier_slow_consumers_total"), 0.0);
    assert_eq!(value("courier_pending_bytes_count"), 1.0);
    assert!(value("courier_process_resident_memory_bytes") > 0.0);
    assert!(body.contains("# TYPE courier_pending_bytes histogram"));
}

/// The live page in headless Chromium shows non-zero message rates while traffic flows.
/// Needs Debian's `chromium` (`.ci/run` installs it); without it the test says so and passes,
/// except under CI, where a missing browser fails it.
#[tokio::test]
async fn live_page_shows_rates_in_a_browser() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|b| which(b)) else {
        assert!(std::env::var_os("CI").is_none(), "chromium is needed under CI");
        eprintln!("skipped: chromium is not installed");
        return;
    };
    let (server, http) = monitored().await;
    let (status, _, body) = common::http_get(http, "/").await;
    assert!(status.contains("200") && body.contains("<canvas"), "{status}");
    // Steady traffic for the browser to see.
    let client = server.nats().await;
    let mut sub = client.subscribe("page.rates").await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let pumping = {
        let stop = stop.clone();
        let client = client.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                for _ in 0..100 {
                    let _ = client.publish("page.rates", "tick".into()).await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let draining = tokio::spawn(async move { while sub.next().await.is_some() {} });
    let dom = dump_dom(chromium, &format!("http://{http}/"), 6000).await;
    stop.cancel();
    let _ = pumping.await;
    draining.abort();
    let html = String::from_utf8_lossy(&dom.stdout);
    let rate = |id: &str| -> f64 {
        let start = html.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in page:\n{html}"));
        let text = &html[start..];
        let value = &text[text.find('>').unwrap() + 1..text.find('<').unwrap()];
        let (num, scale) = match value.chars().last() {
            Some('k') => (&value[..value.len() - 1], 1e3),
            Some('M') => (&value[..value.len() - 1], 1e6),
            _ => (value, 1.0),
        };
        num.parse::<f64>().unwrap_or(0.0) * scale
    };
    assert!(rate("rate-in") > 0.0, "messages in /s shown as zero:\n{html}");
    assert!(rate("rate-out") > 0.0, "messages out /s shown as zero");
    assert!(html.contains("<td>page") || html.contains("127.0.0.1:"), "connections listed");
    assert!(html.contains("<td>TCP</td>"), "each connection's transport shown");
}

/// The live page lists a consumer with its lag and dead letters, rendered by a real browser.
#[tokio::test]
async fn live_page_shows_consumer_lag_in_a_browser() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|b| which(b)) else {
        assert!(std::env::var_os("CI").is_none(), "chromium is needed under CI");
        eprintln!("skipped: chromium is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let js_opts =
        courier::options::JetStreamOptions { store_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let server =
        TestServer::start(courier::Options { http_port: Some(0), jetstream: Some(js_opts), ..options() }).await;
    let http = server.handle.monitor_addr().unwrap();
    let js = async_nats::jetstream::new(server.nats().await);
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "TELEMETRY".into(),
            subjects: vec!["telemetry.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("DASHBOARD".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 0..1234 {
        js.publish(format!("telemetry.{}", i % 10), "reading".into()).await.unwrap();
    }
    js.publish("telemetry.last", "reading".into()).await.unwrap().await.unwrap();
    let dom = dump_dom(chromium, &format!("http://{http}/"), 3000).await;
    let html = String::from_utf8_lossy(&dom.stdout);
    let row = html
        .split("<tr>")
        .find(|r| r.contains("<td>DASHBOARD</td>"))
        .unwrap_or_else(|| panic!("no consumer row in the page:\n{html}"));
    assert!(row.contains("<td>TELEMETRY</td>"), "{row}");
    assert!(row.contains("<td>1235</td>") || row.contains("<td>1.2k</td>"), "the lag (1,235 pending) is shown: {row}");
}

/// Loads `url` in headless Chromium, lets its scripts run for `budget_ms` of virtual time, and
/// returns the page's DOM.
async fn dump_dom(chromium: &'static str, url: &str, budget_ms: u32) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
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
                &format!("--virtual-time-budget={budget_ms}"),
                "--timeout=15000",
                "--dump-dom",
                &url,
            ])
            .output()
    })
    .await
    .unwrap()
    .expect("run chromium")
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A subscription that ends by reaching its UNSUB limit leaves the connection's count too.
#[tokio::test]
async fn connz_subscription_count_follows_auto_unsubscribe() {
    let (server, http) = monitored().await;
    let mut c = common::RawClient::connect(server.addr).await;
    c.send("CONNECT {\"verbose\":false}\r\nSUB a 1\r\nSUB b 2\r\nUNSUB 1 1\r\n").await;
    c.ping_pong().await;
    assert_eq!(json(http, "/connz").await["connections"][0]["subscriptions"], 2);
    c.send("PUB a 1\r\nx\r\n").await;
    c.expect("MSG a 1 1\r\nx\r\n").await;
    c.ping_pong().await;
    assert_eq!(json(http, "/connz").await["connections"][0]["subscriptions"], 1);
    c.send("UNSUB 2\r\n").await;
    c.ping_pong().await;
    assert_eq!(json(http, "/connz").await["connections"][0]["subscriptions"], 0);
}

/// `/jsz`, the JetStream section of `/varz` and the stream gauges, with a stream holding
/// messages published through the official client.
#[tokio::test]
async fn jetstream_monitoring() {
    let dir = tempfile::tempdir().unwrap();
    let js_opts = courier::options::JetStreamOptions {
        store_dir: Some(dir.path().to_path_buf()),
        max_memory: Some(1 << 20),
        max_store: Some(1 << 30),
        ..Default::default()
    };
    let server =
        TestServer::start(courier::Options { http_port: Some(0), jetstream: Some(js_opts), ..options() }).await;
    let addr = server.handle.monitor_addr().unwrap();
    let js = async_nats::jetstream::new(server.nats().await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.*".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..3 {
        js.publish(format!("orders.{i}"), "x".into()).await.unwrap().await.unwrap();
    }
    let jsz = json(addr, "/jsz").await;
    assert_eq!(jsz["config"]["max_memory"], 1 << 20);
    assert_eq!(jsz["config"]["store_dir"], dir.path().join("jetstream").display().to_string());
    assert_eq!((jsz["streams"].as_u64(), jsz["messages"].as_u64()), (Some(1), Some(3)));
    assert_eq!(jsz["bytes"].as_u64(), Some(3 * (22 + 8 + 1 + 8)), "file store accounting");
    assert!(jsz.get("account_details").is_none());
    let detail = json(addr, "/jsz?accounts=true&streams=true&config=true").await;
    let stream = &detail["account_details"][0]["stream_detail"][0];
    assert_eq!((stream["name"].as_str(), stream["state"]["last_seq"].as_u64()), (Some("ORDERS"), Some(3)));
    assert_eq!(stream["config"]["subjects"][0], "orders.*");
    let varz = json(addr, "/varz").await;
    assert_eq!(varz["jetstream"]["stats"]["storage"].as_u64(), jsz["bytes"].as_u64());
    let (_, _, metrics) = common::http_get(addr, "/metrics").await;
    assert!(metrics.contains("courier_stream_messages{account=\"$G\",stream=\"ORDERS\"} 3"), "{metrics}");
    assert!(metrics.contains("courier_stream_last_seq{account=\"$G\",stream=\"ORDERS\"} 3"));

    // A consumer's lag: in /jsz?consumers=true and as gauges.
    let stream = js.get_stream("ORDERS").await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("SHIP".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let m = batch.next().await.unwrap().unwrap();
    assert_eq!(json(addr, "/jsz").await["consumers"].as_u64(), Some(1));
    let detail = json(addr, "/jsz?accounts=true&consumers=true").await;
    let c = &detail["account_details"][0]["stream_detail"][0]["consumer_detail"][0];
    assert_eq!(c["name"], "SHIP");
    assert_eq!((c["num_pending"].as_u64(), c["num_ack_pending"].as_u64()), (Some(2), Some(1)));
    assert_eq!(c["dead_letters"].as_u64(), Some(0));
    let (_, _, metrics) = common::http_get(addr, "/metrics").await;
    let labels = "{account=\"$G\",stream=\"ORDERS\",consumer=\"SHIP\"}";
    assert!(metrics.contains(&format!("courier_consumer_pending{labels} 2")), "{metrics}");
    assert!(metrics.contains(&format!("courier_consumer_ack_pending{labels} 1")));
    m.double_ack().await.unwrap();
    let (_, _, metrics) = common::http_get(addr, "/metrics").await;
    assert!(metrics.contains(&format!("courier_consumer_ack_pending{labels} 0")), "{metrics}");
}
