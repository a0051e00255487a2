//! Accounts from the configuration file: users (with passwords and nkeys) inside accounts are
//! kept apart from each other's subjects, `no_auth_user` lets a client without credentials in,
//! JetStream is on in the accounts that enable it, and exports and imports share streams and
//! services between accounts as nats-server does.

mod common;

use std::time::Duration;

use common::{options, TestServer, TIMEOUT};
use futures::StreamExt;

const NKEY_SEED: &str = "SUAKYRHVIOREXV7EUZTBHUHL7NUMHPMAS7QMDU3GTIUWEI5LDNOXD43IZY";

/// A server configured by `text` (the configuration file's syntax) over the test defaults.
async fn configured(text: &str) -> TestServer {
    let map = courier::conf::parse_str(text, "accounts.conf", None).expect("parse");
    let mut opts = options();
    courier::config::apply(&map, &mut opts).expect("apply");
    opts.port = 0;
    TestServer::start(opts).await
}

fn conf(store: &std::path::Path) -> String {
    let nkey = nkeys::KeyPair::from_seed(NKEY_SEED).unwrap().public_key();
    format!(
        r#"
        jetstream {{ store_dir: "{}" }}
        accounts {{
          ACME {{
            users: [ {{ user: alice, password: a1 }}, {{ nkey: {nkey} }} ]
            jetstream: enabled
          }}
          GLOBEX {{
            users: [ {{ user: bob, password: b1 }}, {{ user: guest, password: g1, permissions: {{ publish: "public.>", subscribe: "public.>" }} }} ]
          }}
        }}
        no_auth_user: guest
        "#,
        store.display()
    )
}

async fn connect(s: &TestServer, opts: async_nats::ConnectOptions) -> async_nats::Client {
    tokio::time::timeout(TIMEOUT, opts.connect(s.url())).await.expect("in time").expect("connect")
}

#[tokio::test]
async fn users_in_different_accounts_do_not_see_each_others_messages() {
    let dir = tempfile::tempdir().unwrap();
    let s = configured(&conf(dir.path())).await;
    let alice = connect(&s, async_nats::ConnectOptions::with_user_and_password("alice".into(), "a1".into())).await;
    let bob = connect(&s, async_nats::ConnectOptions::with_user_and_password("bob".into(), "b1".into())).await;
    let nkey_user = connect(&s, async_nats::ConnectOptions::with_nkey(NKEY_SEED.into())).await;
    let mut alice_sub = alice.subscribe("orders").await.unwrap();
    let mut bob_sub = bob.subscribe("orders").await.unwrap();
    alice.flush().await.unwrap();
    bob.flush().await.unwrap();
    // The nkey user is in ACME with alice: alice gets it, bob does not.
    nkey_user.publish("orders", "from acme".into()).await.unwrap();
    bob.publish("orders", "from globex".into()).await.unwrap();
    nkey_user.flush().await.unwrap();
    bob.flush().await.unwrap();
    let a = tokio::time::timeout(TIMEOUT, alice_sub.next()).await.unwrap().unwrap();
    assert_eq!(&a.payload[..], b"from acme");
    let b = tokio::time::timeout(TIMEOUT, bob_sub.next()).await.unwrap().unwrap();
    assert_eq!(&b.payload[..], b"from globex");
    // Nothing crossed: a round trip later, neither has another message.
    alice.flush().await.unwrap();
    bob.flush().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(100), alice_sub.next()).await.is_err());
    assert!(tokio::time::timeout(Duration::from_millis(100), bob_sub.next()).await.is_err());
}

#[tokio::test]
async fn no_auth_user_lets_a_client_without_credentials_in_as_that_user() {
    let dir = tempfile::tempdir().unwrap();
    let s = configured(&conf(dir.path())).await;
    let anonymous = connect(&s, async_nats::ConnectOptions::new()).await;
    let bob = connect(&s, async_nats::ConnectOptions::with_user_and_password("bob".into(), "b1".into())).await;
    let mut sub = anonymous.subscribe("public.news").await.unwrap();
    anonymous.flush().await.unwrap();
    bob.publish("public.news", "hello".into()).await.unwrap();
    let m = tokio::time::timeout(TIMEOUT, sub.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"hello", "the anonymous client is guest, in GLOBEX with bob");
    // With guest's permissions: a publish outside public.> does not reach bob.
    let mut private = bob.subscribe("private").await.unwrap();
    bob.flush().await.unwrap();
    anonymous.publish("private", "leak".into()).await.unwrap();
    anonymous.publish("public.news", "after".into()).await.unwrap();
    let m = tokio::time::timeout(TIMEOUT, sub.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"after");
    bob.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), private.next()).await.is_err(),
        "denied publish delivered"
    );
    // Wrong credentials are still refused, not taken as the no_auth_user.
    let wrong = async_nats::ConnectOptions::with_user_and_password("bob".into(), "nope".into()).connect(s.url()).await;
    assert!(wrong.is_err());
}

#[tokio::test]
async fn jetstream_is_on_in_the_accounts_that_enable_it_and_streams_stay_in_their_account() {
    let dir = tempfile::tempdir().unwrap();
    let s = configured(&conf(dir.path())).await;
    let alice = connect(&s, async_nats::ConnectOptions::with_user_and_password("alice".into(), "a1".into())).await;
    let bob = connect(&s, async_nats::ConnectOptions::with_user_and_password("bob".into(), "b1".into())).await;
    let js = async_nats::jetstream::new(alice);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .expect("JetStream in ACME");
    js.publish("orders.1", "x".into()).await.unwrap().await.expect("stored");
    assert!(dir.path().join("jetstream").join("ACME").join("streams").join("ORDERS").is_dir());
    // GLOBEX has no JetStream: nobody answers its API.
    let reply = tokio::time::timeout(TIMEOUT, bob.request("$JS.API.INFO", "".into())).await.unwrap();
    let err = reply.expect_err("no JetStream in GLOBEX");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}

#[test]
fn a_no_auth_user_that_is_not_a_user_is_refused() {
    let map = courier::conf::parse_str(
        "accounts { A { users: [ { user: a, password: a } ] } }\nno_auth_user: ghost\n",
        "x.conf",
        None,
    )
    .unwrap();
    let err = courier::config::apply(&map, &mut options()).expect_err("refused");
    assert!(
        err.to_string().contains(
            "no_auth_user: \"ghost\" not present as user or nkey in authorization block or account configuration"
        ),
        "{err}"
    );
}

/// The guide's example of exports and imports loads as it is written.
#[test]
fn the_guides_exports_and_imports_example_loads() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/guide.md")).unwrap();
    let section = &guide[guide.find("#### Sharing between accounts").expect("the section")..];
    let start = section.find("```conf\n").expect("a conf block") + "```conf\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let map = courier::conf::parse_str(block, "guide.conf", None).expect("parses");
    let mut opts = options();
    courier::config::apply(&map, &mut opts).expect("applies");
    assert_eq!(opts.account_links.len(), 2);
    assert_eq!(opts.account_links.iter().map(|l| l.imports.len() + l.exports.len()).sum::<usize>(), 6);
}

/// The guide's example of accounts loads as it is written.
#[test]
fn the_guides_accounts_example_loads() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/guide.md")).unwrap();
    let section = &guide[guide.find("### Accounts").expect("the section")..];
    let start = section.find("```conf\n").expect("a conf block") + "```conf\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let map = courier::conf::parse_str(block, "guide.conf", None).expect("parses");
    let mut opts = options();
    courier::config::apply(&map, &mut opts).unwrap_or_else(|e| {
        panic!("{e} (a valid nkey: {})", nkeys::KeyPair::from_seed(NKEY_SEED).unwrap().public_key())
    });
    assert_eq!(opts.authorization.no_auth_user.as_deref(), Some("guest"));
    assert_eq!(opts.jetstream_accounts, vec!["ACME".to_string()]);
}

/// DEV exports its telemetry to everyone and two services; APP imports them (the telemetry
/// under a prefix, one service under another name); OTHER imports nothing.
const LINKED: &str = r#"
    accounts {
      DEV {
        users [ {user: dev, password: d} ]
        exports [
          {stream: "telemetry.>"}
          {service: "svc.echo", accounts: [APP]}
          {service: "svc.parts", response_type: stream}
        ]
      }
      APP {
        users [ {user: app, password: a} ]
        imports [
          {stream: {account: DEV, subject: "telemetry.>"}, prefix: "dev"}
          {service: {account: DEV, subject: "svc.echo"}, to: "echo"}
          {service: {account: DEV, subject: "svc.parts"}}
        ]
      }
      OTHER {
        users [ {user: other, password: o}, {user: limited, password: l, permissions: {publish: "allowed.>", subscribe: "allowed.>"}} ]
      }
      RESTRICTED {
        users [ {user: limited2, password: l}, {user: free, password: f, permissions: {}} ]
        default_permissions { publish: "allowed.>", subscribe: "allowed.>" }
      }
    }
"#;

fn login(user: &str, password: &str) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(TIMEOUT, sub.next()).await.expect("a message in time").expect("open")
}

/// Asserts that nothing arrives within a round trip of `client` and a little more.
async fn nothing(client: &async_nats::Client, sub: &mut async_nats::Subscriber) {
    client.flush().await.unwrap();
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(150), sub.next()).await {
        panic!("unexpected message on {}", m.subject);
    }
}

#[tokio::test]
async fn a_stream_import_delivers_the_exporters_messages_under_the_prefix() {
    let s = configured(LINKED).await;
    let dev = connect(&s, login("dev", "d")).await;
    let app = connect(&s, login("app", "a")).await;
    let other = connect(&s, login("other", "o")).await;
    let mut prefixed = app.subscribe("dev.telemetry.>").await.unwrap();
    let mut queued = app.queue_subscribe("dev.telemetry.>", "workers".into()).await.unwrap();
    let mut unprefixed = app.subscribe("telemetry.>").await.unwrap();
    let mut elsewhere = other.subscribe(">").await.unwrap();
    app.flush().await.unwrap();
    other.flush().await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Unit", "C");
    dev.publish_with_reply_and_headers("telemetry.room1", "reply.here", headers, "21.5".into()).await.unwrap();
    dev.flush().await.unwrap();
    let m = next(&mut prefixed).await;
    assert_eq!(m.subject.as_str(), "dev.telemetry.room1");
    assert_eq!(m.reply.as_deref(), Some("reply.here"));
    assert_eq!(m.headers.as_ref().and_then(|h| h.get("Unit")).map(|v| v.as_str()), Some("C"));
    assert_eq!(&m.payload[..], b"21.5");
    assert_eq!(next(&mut queued).await.subject.as_str(), "dev.telemetry.room1");
    nothing(&app, &mut unprefixed).await;
    nothing(&other, &mut elsewhere).await;
    // Publishing under the prefix in APP does not reach DEV.
    let mut at_dev = dev.subscribe(">").await.unwrap();
    dev.flush().await.unwrap();
    app.publish("dev.telemetry.room1", "nope".into()).await.unwrap();
    app.publish("telemetry.room1", "nope".into()).await.unwrap();
    let m = next(&mut prefixed).await;
    assert_eq!(&m.payload[..], b"nope", "APP's own subscribers still get APP's message");
    nothing(&dev, &mut at_dev).await;
}

#[tokio::test]
async fn a_service_import_carries_requests_over_and_only_their_responses_back() {
    let s = configured(LINKED).await;
    let dev = connect(&s, login("dev", "d")).await;
    let app = connect(&s, login("app", "a")).await;
    let other = connect(&s, login("other", "o")).await;
    let mut requests = dev.subscribe("svc.echo").await.unwrap();
    dev.flush().await.unwrap();

    let requester = app.clone();
    let pending = tokio::spawn(async move { requester.request("echo", "ping".into()).await });
    let request = next(&mut requests).await;
    assert_eq!(request.subject.as_str(), "svc.echo");
    let reply = request.reply.clone().expect("a reply subject");
    assert!(reply.starts_with("_R_."), "the exporter sees the server's reply subject, not APP's: {reply}");
    let info = request.headers.as_ref().and_then(|h| h.get("Nats-Request-Info")).map(|v| v.to_string());
    assert_eq!(info.as_deref(), Some(r#"{"acc":"APP"}"#));
    dev.publish(reply.clone(), "pong".into()).await.unwrap();
    let answer = tokio::time::timeout(TIMEOUT, pending).await.unwrap().unwrap().expect("answered");
    assert_eq!(&answer.payload[..], b"pong");

    // A singleton's way back closes with its response: a second answer goes nowhere.
    let mut inbox = app.subscribe("_INBOX.>").await.unwrap();
    app.flush().await.unwrap();
    dev.publish(reply, "late".into()).await.unwrap();
    // Nor can DEV reach APP's subjects directly.
    dev.publish("_INBOX.guess", "direct".into()).await.unwrap();
    nothing(&dev, &mut inbox).await;

    // OTHER imports nothing: its request finds no one.
    let err = other.request("echo", "ping".into()).await.expect_err("no responders in OTHER");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}

#[tokio::test]
async fn a_streamed_service_answers_several_times_until_an_empty_message() {
    let s = configured(LINKED).await;
    let dev = connect(&s, login("dev", "d")).await;
    let app = connect(&s, login("app", "a")).await;
    let mut requests = dev.subscribe("svc.parts").await.unwrap();
    dev.flush().await.unwrap();
    let inbox = app.new_inbox();
    let mut answers = app.subscribe(inbox.clone()).await.unwrap();
    app.publish_with_reply("svc.parts", inbox, "list".into()).await.unwrap();
    let request = next(&mut requests).await;
    let reply = request.reply.expect("reply");
    for part in ["one", "two", "three"] {
        dev.publish(reply.clone(), part.into()).await.unwrap();
    }
    dev.publish(reply.clone(), "".into()).await.unwrap();
    dev.publish(reply, "after the end".into()).await.unwrap();
    for part in ["one", "two", "three", ""] {
        assert_eq!(&next(&mut answers).await.payload[..], part.as_bytes());
    }
    nothing(&app, &mut answers).await;
}

#[tokio::test]
async fn a_request_to_an_imported_service_without_a_responder_times_out_as_on_nats_server() {
    let s = configured(LINKED).await;
    let app = connect(&s, login("app", "a")).await;
    let request = async_nats::Request::new().payload("x".into()).timeout(Some(Duration::from_millis(300)));
    let err = app.send_request("echo", request).await.expect_err("nobody answers");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::TimedOut);
}

#[tokio::test]
async fn an_accounts_default_permissions_apply_to_its_users_without_their_own() {
    let s = configured(LINKED).await;
    let limited = connect(&s, login("limited2", "l")).await;
    let other = connect(&s, login("free", "f")).await;
    let mut allowed = other.subscribe("allowed.x").await.unwrap();
    other.flush().await.unwrap();
    limited.publish("allowed.x", "ok".into()).await.unwrap();
    assert_eq!(&next(&mut allowed).await.payload[..], b"ok");
    let mut denied = limited.subscribe("secret").await.unwrap();
    let mut own = other.subscribe("secret").await.unwrap();
    limited.flush().await.unwrap();
    other.publish("secret", "hidden".into()).await.unwrap();
    // The user with permissions of its own (none) is not held to the defaults.
    assert_eq!(&next(&mut own).await.payload[..], b"hidden");
    nothing(&other, &mut denied).await;
}

#[test]
fn imports_nats_server_would_refuse_are_refused_with_its_words() {
    let cases = [
        (
            r#"accounts { DEV { exports [ {service: "svc", accounts: [APP]} ] }, APP {}, OTHER { imports [ {service: {account: DEV, subject: "svc"}} ] } }"#,
            r#"Error adding service import "svc": service import not authorized"#,
        ),
        (
            r#"accounts { DEV { exports [ {stream: "a.>"} ] }, APP { imports [ {stream: {account: DEV, subject: "b.>"}} ] } }"#,
            r#"Error adding stream import "b.>": stream import not authorized"#,
        ),
        (
            r#"accounts { APP { imports [ {stream: {account: NOPE, subject: "b.>"}} ] } }"#,
            r#""NOPE" account not defined for stream import"#,
        ),
        (
            r#"accounts { DEV { exports [ {stream: "a.>"} ] }, APP { imports [ {stream: {account: DEV, subject: "a.>"}, prefix: "p.*"} ] } }"#,
            "stream import prefix can not contain wildcard tokens",
        ),
        (
            r#"accounts { DEV { exports [ {stream: "a", accounts: [GHOST]} ] } }"#,
            r#""GHOST" account not defined for stream export"#,
        ),
        (
            r#"accounts { DEV { exports [ {stream: "a", response_type: stream} ] } }"#,
            "Detected response directive on non-service",
        ),
        (
            r#"accounts { DEV { exports [ {service: "a", response_type: bogus} ] } }"#,
            r#"Unknown response type: "bogus""#,
        ),
    ];
    for (text, expected) in cases {
        let map = courier::conf::parse_str(text, "x.conf", None).unwrap();
        let err = courier::config::apply(&map, &mut options()).expect_err(text);
        assert!(err.to_string().contains(expected), "{text}: {err}");
    }
}

#[tokio::test]
async fn the_system_account_answers_monitoring_requests_as_nats_server() {
    let s = configured(
        r#"
        server_name: edge-7
        accounts {
          SYS { users [ {user: sys, password: s} ] }
          APP { users [ {user: app, password: a} ] }
        }
        system_account: SYS
        "#,
    )
    .await;
    let sys = connect(&s, login("sys", "s")).await;
    let app = connect(&s, login("app", "a")).await;
    let id = sys.server_info().server_id;
    let ask = |subject: String, body: &'static str| {
        let sys = sys.clone();
        async move {
            let reply = tokio::time::timeout(TIMEOUT, sys.request(subject, body.into()))
                .await
                .expect("in time")
                .expect("answered");
            serde_json::from_slice::<serde_json::Value>(&reply.payload).expect("JSON")
        }
    };
    let ping = ask("$SYS.REQ.SERVER.PING".into(), "").await;
    assert_eq!(ping["server"]["id"], id.as_str());
    assert_eq!(ping["server"]["name"], "edge-7");
    assert!(ping["statsz"]["connections"].as_u64().expect("connections") >= 2, "{ping}");
    let varz = ask("$SYS.REQ.SERVER.PING.VARZ".into(), "").await;
    assert_eq!(varz["data"]["server_id"], id.as_str());
    let connz = ask(format!("$SYS.REQ.SERVER.{id}.CONNZ"), r#"{"subscriptions": true}"#).await;
    let conns = connz["data"]["connections"].as_array().expect("connections");
    assert_eq!(conns.len(), 2, "{connz}");
    assert!(conns.iter().any(|c| c["subscriptions_list"].is_array()), "{connz}");
    let health = ask("$SYS.REQ.SERVER.PING.HEALTHZ".into(), "").await;
    assert_eq!(health["data"]["status"], "ok");
    let bad = ask("$SYS.REQ.SERVER.PING.CONNZ".into(), r#"{"sort": "nonsense"}"#).await;
    assert_eq!(bad["error"]["code"], 500, "{bad}");
    let bad = ask("$SYS.REQ.SERVER.PING.CONNZ".into(), "{not json").await;
    assert_eq!(bad["error"]["code"], 400, "{bad}");
    // A filter naming another server leaves this one silent.
    let request = async_nats::Request::new()
        .payload(r#"{"server_name": "elsewhere"}"#.into())
        .timeout(Some(Duration::from_millis(300)));
    let err = sys.send_request("$SYS.REQ.SERVER.PING.VARZ", request).await.expect_err("not for this server");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::TimedOut);
    // Only the system account has these services.
    let err = app.request("$SYS.REQ.SERVER.PING", "".into()).await.expect_err("not in APP");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}

#[tokio::test]
async fn an_accounts_jetstream_limits_hold_as_on_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = configured(&format!(
        r#"
        jetstream {{ store_dir: "{}" }}
        accounts {{
          T {{ users [ {{user: t, password: t}} ], jetstream {{ max_mem: 1M, max_file: 10K, max_streams: 2, max_consumers: 1 }} }}
        }}
        "#,
        dir.path().display()
    ))
    .await;
    let t = connect(&s, login("t", "t")).await;
    let api = |subject: &'static str, body: serde_json::Value| {
        let t = t.clone();
        async move {
            let reply = t.request(subject, body.to_string().into()).await.expect("answered");
            serde_json::from_slice::<serde_json::Value>(&reply.payload).expect("JSON")
        }
    };
    let info = api("$JS.API.INFO", serde_json::json!({})).await;
    assert_eq!(info["limits"]["max_memory"], 1_000_000);
    assert_eq!(info["limits"]["max_storage"], 10_000);
    assert_eq!(info["limits"]["max_streams"], 2);
    assert_eq!(info["limits"]["max_consumers"], 1);
    let too_big =
        api("$JS.API.STREAM.CREATE.S1", serde_json::json!({"name": "S1", "subjects": ["a"], "max_bytes": 20000})).await;
    assert_eq!(too_big["error"]["err_code"], 10047, "{too_big}");
    let too_big = api(
        "$JS.API.STREAM.CREATE.M",
        serde_json::json!({"name": "M", "subjects": ["m"], "storage": "memory", "max_bytes": 2_000_000}),
    )
    .await;
    assert_eq!(too_big["error"]["err_code"], 10028, "{too_big}");
    for (subject, name) in [("$JS.API.STREAM.CREATE.S1", "S1"), ("$JS.API.STREAM.CREATE.S2", "S2")] {
        let ok = api(subject, serde_json::json!({"name": name, "subjects": [name.to_lowercase()]})).await;
        assert!(ok["error"].is_null(), "{ok}");
    }
    let third = api("$JS.API.STREAM.CREATE.S3", serde_json::json!({"name": "S3", "subjects": ["s3"]})).await;
    assert_eq!(third["error"]["err_code"], 10027, "{third}");
    // max_consumers caps each stream.
    let c = |stream: &'static str, name: &str| serde_json::json!({"stream_name": stream, "config": {"name": name, "ack_policy": "explicit"}});
    assert!(api("$JS.API.CONSUMER.CREATE.S1.C1", c("S1", "C1")).await["error"].is_null());
    assert!(api("$JS.API.CONSUMER.CREATE.S2.C2", c("S2", "C2")).await["error"].is_null());
    let second = api("$JS.API.CONSUMER.CREATE.S1.C3", c("S1", "C3")).await;
    assert_eq!(second["error"]["err_code"], 10026, "{second}");
    // Publishing stops at the account's storage.
    let mut stored = 0;
    let refusal = loop {
        let reply = t.request("s1", vec![b'x'; 1000].into()).await.expect("answered");
        let ack: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        if !ack["error"].is_null() {
            break ack;
        }
        stored += 1;
        assert!(stored < 20, "the limit never applied");
    };
    assert_eq!(stored, 9);
    assert_eq!(refusal["error"]["err_code"], 10002, "{refusal}");
    assert_eq!(refusal["error"]["description"], "resource limits exceeded for account");
}

fn options_of(text: &str) -> courier::Options {
    let map = courier::conf::parse_str(text, "accounts.conf", None).expect("parse");
    let mut opts = options();
    courier::config::apply(&map, &mut opts).expect("apply");
    opts.port = 0;
    opts
}

#[tokio::test]
async fn a_reload_adds_and_removes_imports_and_closes_removed_users() {
    let before = r#"
        accounts {
          DEV { users [ {user: dev, password: d} ], exports [ {stream: "telemetry.>"} ] }
          APP { users [ {user: app, password: a}, {user: gone, password: g} ] }
        }
    "#;
    let after = r#"
        accounts {
          DEV { users [ {user: dev, password: d} ], exports [ {stream: "telemetry.>"} ] }
          APP {
            users [ {user: app, password: a} ]
            imports [ {stream: {account: DEV, subject: "telemetry.>"}} ]
          }
        }
    "#;
    let s = TestServer::start(options_of(before)).await;
    let dev = connect(&s, login("dev", "d")).await;
    let app = connect(&s, login("app", "a")).await;
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let gone = connect(
        &s,
        login("gone", "g").event_callback(move |e| {
            let tx = events_tx.clone();
            async move {
                let _ = tx.send(e);
            }
        }),
    )
    .await;
    let mut telemetry = app.subscribe("telemetry.>").await.unwrap();
    app.flush().await.unwrap();
    dev.publish("telemetry.1", "before".into()).await.unwrap();
    nothing(&dev, &mut telemetry).await;

    s.handle.reload(options_of(after)).expect("reload");
    dev.publish("telemetry.2", "after".into()).await.unwrap();
    assert_eq!(&next(&mut telemetry).await.payload[..], b"after");
    // The user that went away is disconnected.
    let closed = tokio::time::timeout(TIMEOUT, async {
        while let Some(e) = events.recv().await {
            if matches!(e, async_nats::Event::Disconnected) {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the removed user was not disconnected");
    drop(gone);

    s.handle.reload(options_of(before)).expect("reload back");
    dev.publish("telemetry.3", "removed".into()).await.unwrap();
    nothing(&dev, &mut telemetry).await;
}

/// A GET of a monitoring path: the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let (status, _, body) = common::http_get(addr, path).await;
    (status, body)
}

#[tokio::test]
async fn every_account_sees_its_own_connections_and_accountz_shows_its_links() {
    let mut opts = options_of(LINKED);
    opts.http_port = Some(0);
    let s = TestServer::start(opts).await;
    let http = s.handle.monitor_addr().expect("monitoring");
    let app = connect(&s, login("app", "a")).await;
    let _dev = connect(&s, login("dev", "d")).await;
    let _other = connect(&s, login("other", "o")).await;

    // Users of any account may ask for the connections of their own account.
    for subject in ["$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.ACCOUNT.PING.CONNZ"] {
        let reply = tokio::time::timeout(TIMEOUT, app.request(subject, "".into())).await.unwrap().expect(subject);
        let connz: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(connz["data"]["num_connections"], 1, "{subject}: only APP's own connection: {connz}");
    }
    let reply =
        tokio::time::timeout(TIMEOUT, app.request("$SYS.REQ.ACCOUNT.PING.STATZ", "".into())).await.unwrap().unwrap();
    let statz: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(statz["data"]["account_statz"][0]["acc"], "APP", "{statz}");
    assert_eq!(statz["data"]["account_statz"][0]["conns"], 1, "{statz}");

    let (status, body) = http_get(http, "/accountz?acc=APP").await;
    assert!(status.contains("200"), "{status}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    let d = &detail["account_detail"];
    assert_eq!(d["account_name"], "APP");
    assert_eq!(d["client_connections"], 1);
    let imports = d["imports"].as_array().expect("imports");
    assert!(imports.iter().any(|i| i["type"] == "stream"
        && i["subject"] == "telemetry.>"
        && i["local_subject"] == "dev.telemetry.>"
        && i["account"] == "DEV"));
    assert!(imports.iter().any(|i| i["type"] == "service" && i["subject"] == "echo" && i["to"] == "svc.echo"));
    let (_, body) = http_get(http, "/accountz?acc=DEV").await;
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    let exports = detail["account_detail"]["exports"].as_array().expect("exports").clone();
    let echo = exports.iter().find(|e| e["subject"] == "svc.echo").expect("svc.echo");
    assert_eq!(echo["response_type"], "Singleton");
    assert_eq!(echo["approved_accounts"], serde_json::json!(["APP"]));
    let parts = exports.iter().find(|e| e["subject"] == "svc.parts").expect("svc.parts");
    assert_eq!(parts["response_type"], "Streamed");
    let (status, body) = http_get(http, "/accountz?acc=NOPE").await;
    assert!(status.contains("400"), "{status}");
    assert_eq!(body, "Account NOPE does not exist");
    let (_, body) = http_get(http, "/connz?acc=DEV").await;
    let connz: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(connz["num_connections"], 1, "{connz}");
}

#[tokio::test]
async fn the_system_account_hears_of_connections_and_failed_logins() {
    let s = configured(
        r#"
        accounts {
          SYS { users [ {user: sys, password: s} ] }
          APP { users [ {user: app, password: a} ] }
        }
        system_account: SYS
        "#,
    )
    .await;
    let sys = connect(&s, login("sys", "s")).await;
    let mut connects = sys.subscribe("$SYS.ACCOUNT.APP.CONNECT").await.unwrap();
    let mut disconnects = sys.subscribe("$SYS.ACCOUNT.APP.DISCONNECT").await.unwrap();
    let mut conns = sys.subscribe("$SYS.ACCOUNT.APP.SERVER.CONNS").await.unwrap();
    let mut auth_errors = sys.subscribe("$SYS.SERVER.*.CLIENT.AUTH.ERR").await.unwrap();
    sys.flush().await.unwrap();

    let app = connect(&s, login("app", "a").name("sensor-hub")).await;
    let event: serde_json::Value = serde_json::from_slice(&next(&mut connects).await.payload).unwrap();
    assert_eq!(event["type"], "io.nats.server.advisory.v1.client_connect");
    assert_eq!(event["client"]["acc"], "APP");
    assert_eq!(event["client"]["user"], "app");
    assert_eq!(event["client"]["name"], "sensor-hub");
    assert_eq!(event["server"]["id"], sys.server_info().server_id.as_str());
    let counts: serde_json::Value = serde_json::from_slice(&next(&mut conns).await.payload).unwrap();
    assert_eq!(counts["acc"], "APP");
    assert_eq!(counts["conns"], 1);

    app.publish("x", "hello".into()).await.unwrap();
    app.flush().await.unwrap();
    drop(app);
    let event: serde_json::Value = serde_json::from_slice(&next(&mut disconnects).await.payload).unwrap();
    assert_eq!(event["type"], "io.nats.server.advisory.v1.client_disconnect");
    assert_eq!(event["reason"], "Client Closed");
    assert_eq!(event["sent"]["msgs"], 1, "what the client sent: {event}");
    assert_eq!(event["sent"]["bytes"], 5);

    let refused = async_nats::ConnectOptions::with_user_and_password("app".into(), "wrong".into())
        .retry_on_initial_connect()
        .max_reconnects(1);
    let _ = tokio::time::timeout(Duration::from_millis(500), refused.connect(s.url())).await;
    let event: serde_json::Value = serde_json::from_slice(&next(&mut auth_errors).await.payload).unwrap();
    assert_eq!(event["reason"], "Authentication Failure");
    assert_eq!(event["client"]["user"], "app");
}
