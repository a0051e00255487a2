//! Accounts from the configuration file: users (with passwords and nkeys) inside accounts are
//! kept apart from each other's subjects, `no_auth_user` lets a client without credentials in,
//! and JetStream is on in the accounts that enable it.

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
    let map =
        courier::conf::parse_str("accounts { A { exports: [ { stream: \"a.>\" } ] } }\n", "x.conf", None).unwrap();
    assert!(courier::config::apply(&map, &mut options()).unwrap_err().to_string().contains("not supported yet"));
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
