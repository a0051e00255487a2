//! Authentication over the wire: users and passwords (plain and bcrypt), tokens, nkeys and
//! JWTs with account isolation, with async-nats, and the exact errors over raw TCP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{encode_jwt, options, RawClient, TestServer, TIMEOUT};
use courier::auth::{Authorization, NkeyUser, Trust, User};
use futures::StreamExt;

async fn server_with(auth: Authorization) -> TestServer {
    TestServer::start(courier::Options { authorization: auth, ..options() }).await
}

fn users(list: &[(&str, &str)]) -> Authorization {
    Authorization {
        users: list
            .iter()
            .map(|(n, p)| User { name: n.to_string(), password: p.to_string(), permissions: None })
            .collect(),
        ..Default::default()
    }
}

async fn try_connect(
    server: &TestServer,
    opts: async_nats::ConnectOptions,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    tokio::time::timeout(TIMEOUT, opts.connect(server.url())).await.expect("connect answered in time")
}

fn refused(result: Result<async_nats::Client, async_nats::ConnectError>) {
    match result {
        Err(e) => assert_eq!(e.kind(), async_nats::ConnectErrorKind::AuthorizationViolation, "{e}"),
        Ok(_) => panic!("connected with bad credentials"),
    }
}

async fn works(client: &async_nats::Client) {
    let mut sub = client.subscribe("auth.check").await.unwrap();
    client.publish("auth.check", "hi".into()).await.unwrap();
    let msg = tokio::time::timeout(TIMEOUT, sub.next()).await.expect("in time").expect("message");
    assert_eq!(&msg.payload[..], b"hi");
}

#[tokio::test]
async fn user_and_password() {
    let hash = bcrypt::hash("hashed-pw", 4).unwrap();
    let server = server_with(users(&[("derek", "s3cr3t"), ("bob", &hash)])).await;
    let ok = try_connect(&server, async_nats::ConnectOptions::with_user_and_password("derek".into(), "s3cr3t".into()))
        .await
        .expect("right password");
    works(&ok).await;
    let bcrypted =
        try_connect(&server, async_nats::ConnectOptions::with_user_and_password("bob".into(), "hashed-pw".into()))
            .await
            .expect("bcrypt password");
    works(&bcrypted).await;
    refused(
        try_connect(&server, async_nats::ConnectOptions::with_user_and_password("derek".into(), "nope".into())).await,
    );
    refused(try_connect(&server, async_nats::ConnectOptions::with_user_and_password("bob".into(), hash.clone())).await);
    refused(try_connect(&server, async_nats::ConnectOptions::new()).await);
}

#[tokio::test]
async fn token() {
    let server = server_with(Authorization { token: Some("tok3n".into()), ..Default::default() }).await;
    let ok = try_connect(&server, async_nats::ConnectOptions::with_token("tok3n".into())).await.expect("token");
    works(&ok).await;
    refused(try_connect(&server, async_nats::ConnectOptions::with_token("other".into())).await);
}

#[tokio::test]
async fn nkey_users_sign_the_nonce() {
    let user = nkeys::KeyPair::new_user();
    let server = server_with(Authorization {
        nkeys: vec![NkeyUser { nkey: user.public_key(), permissions: None }],
        ..Default::default()
    })
    .await;
    let client = try_connect(&server, async_nats::ConnectOptions::with_nkey(user.seed().unwrap())).await.expect("nkey");
    works(&client).await;
    let stranger = nkeys::KeyPair::new_user();
    refused(try_connect(&server, async_nats::ConnectOptions::with_nkey(stranger.seed().unwrap())).await);

    // Every connection gets its own nonce.
    let a = RawClient::connect(server.addr).await;
    let b = RawClient::connect(server.addr).await;
    let (na, nb) = (a.info()["nonce"].as_str().unwrap().to_string(), b.info()["nonce"].as_str().unwrap().to_string());
    assert!(!na.is_empty() && na != nb);
    assert_eq!(a.info()["auth_required"], true);
}

fn jwt_opts(jwt: String, user: Arc<nkeys::KeyPair>) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_jwt(jwt, move |nonce| {
        let user = Arc::clone(&user);
        async move { user.sign(&nonce).map_err(async_nats::AuthError::new) }
    })
}

#[tokio::test]
async fn jwt_users_are_kept_to_their_account() {
    let operator = nkeys::KeyPair::new_operator();
    let op_jwt = encode_jwt(serde_json::json!({"iss": operator.public_key(), "sub": operator.public_key()}), &operator);
    let (acc_a, acc_b) = (nkeys::KeyPair::new_account(), nkeys::KeyPair::new_account());
    let account_jwt = |acc: &nkeys::KeyPair| {
        encode_jwt(serde_json::json!({"iss": operator.public_key(), "sub": acc.public_key(), "nats": {}}), &operator)
    };
    let (jwt_a, jwt_b) = (account_jwt(&acc_a), account_jwt(&acc_b));
    let trust = Trust::new(
        [op_jwt.as_str()],
        [(acc_a.public_key().as_str(), jwt_a.as_str()), (acc_b.public_key().as_str(), jwt_b.as_str())],
    )
    .unwrap();
    let server = server_with(Authorization { trust: Some(trust), ..Default::default() }).await;

    let user_in = |acc: &nkeys::KeyPair| {
        let user = Arc::new(nkeys::KeyPair::new_user());
        let jwt = encode_jwt(serde_json::json!({"iss": acc.public_key(), "sub": user.public_key(), "nats": {}}), acc);
        jwt_opts(jwt, user)
    };
    let a1 = try_connect(&server, user_in(&acc_a)).await.expect("user of A");
    let a2 = try_connect(&server, user_in(&acc_a)).await.expect("another user of A");
    let b1 = try_connect(&server, user_in(&acc_b)).await.expect("user of B");

    let mut a_sub = a2.subscribe("shared.subject").await.unwrap();
    let mut b_sub = b1.subscribe("shared.subject").await.unwrap();
    // Round trips make sure both subscriptions are in place before publishing.
    a2.flush().await.unwrap();
    b1.flush().await.unwrap();
    works(&b1).await;
    works(&a2).await;
    a1.publish("shared.subject", "for A only".into()).await.unwrap();
    let got = tokio::time::timeout(TIMEOUT, a_sub.next()).await.expect("A hears A").unwrap();
    assert_eq!(&got.payload[..], b"for A only");
    // B publishes after A: once B's own subscriber has B's message, A's would have come first.
    b1.publish("shared.subject", "for B only".into()).await.unwrap();
    let got = tokio::time::timeout(TIMEOUT, b_sub.next()).await.expect("B hears B").unwrap();
    assert_eq!(&got.payload[..], b"for B only", "B never sees A's message");

    // A user signed by an account the operator never signed is refused.
    let rogue = nkeys::KeyPair::new_account();
    refused(try_connect(&server, user_in(&rogue)).await);
    // A user that cannot sign the nonce is refused.
    let user = nkeys::KeyPair::new_user();
    let jwt = encode_jwt(serde_json::json!({"iss": acc_a.public_key(), "sub": user.public_key()}), &acc_a);
    refused(try_connect(&server, jwt_opts(jwt, Arc::new(nkeys::KeyPair::new_user()))).await);
}

/// A version 1 JWT, as the older tools made them: `"alg":"ed25519"`, the claim type at the top
/// level, and the signature over the payload alone.
fn encode_v1_jwt(claims: serde_json::Value, signer: &nkeys::KeyPair) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"typ":"jwt","alg":"ed25519"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(signer.sign(p.as_bytes()).unwrap()))
}

#[tokio::test]
async fn version_1_jwts_are_accepted_as_nats_server_accepts_them() {
    let operator = nkeys::KeyPair::new_operator();
    let op_jwt = encode_v1_jwt(
        serde_json::json!({"iss": operator.public_key(), "sub": operator.public_key(), "type": "operator", "nats": {}}),
        &operator,
    );
    let account = nkeys::KeyPair::new_account();
    let acc_jwt = encode_v1_jwt(
        serde_json::json!({"iss": operator.public_key(), "sub": account.public_key(), "type": "account", "nats": {}}),
        &operator,
    );
    let trust = Trust::new([op_jwt.as_str()], [(account.public_key().as_str(), acc_jwt.as_str())]).expect("v1 trust");
    let server = server_with(Authorization { trust: Some(trust), ..Default::default() }).await;
    let user = Arc::new(nkeys::KeyPair::new_user());
    let user_jwt = encode_v1_jwt(
        serde_json::json!({"iss": account.public_key(), "sub": user.public_key(), "type": "user", "nats": {}}),
        &account,
    );
    let client = try_connect(&server, jwt_opts(user_jwt, Arc::clone(&user))).await.expect("a v1 user connects");
    works(&client).await;
    // The signature is still checked: one made by another key is refused.
    let forged = encode_v1_jwt(
        serde_json::json!({"iss": account.public_key(), "sub": user.public_key(), "type": "user", "nats": {}}),
        &nkeys::KeyPair::new_account(),
    );
    refused(try_connect(&server, jwt_opts(forged, user)).await);
}

#[tokio::test]
async fn operations_before_connect_and_the_timeout() {
    let mut auth = users(&[("u", "p")]);
    auth.timeout = Some(Duration::from_millis(200));
    let server = server_with(auth).await;

    let mut early = RawClient::connect(server.addr).await;
    early.send("PING\r\n").await;
    early.expect("-ERR 'Authorization Violation'\r\n").await;
    early.expect_closed().await;

    let mut bad = RawClient::connect(server.addr).await;
    bad.send("CONNECT {\"verbose\":false,\"user\":\"u\",\"pass\":\"x\"}\r\n").await;
    bad.expect("-ERR 'Authorization Violation'\r\n").await;
    bad.expect_closed().await;

    let mut silent = RawClient::connect(server.addr).await;
    silent.expect("-ERR 'Authentication Timeout'\r\n").await;
    silent.expect_closed().await;

    let mut good = RawClient::connect(server.addr).await;
    good.send("CONNECT {\"verbose\":false,\"user\":\"u\",\"pass\":\"p\"}\r\n").await;
    good.ping_pong().await;
}

/// With authentication required, anything but CONNECT is refused at its first byte, as
/// nats-server does: a client announcing a large payload is not left waiting (and the server
/// reserves nothing for it) until the authentication timeout.
#[tokio::test]
async fn publish_before_connect_is_refused_at_once() {
    let mut auth = users(&[("derek", "s3cr3t")]);
    // Far past the test's own wait, so only an immediate answer passes.
    auth.timeout = Some(Duration::from_secs(60));
    let server = server_with(auth).await;
    let mut c = RawClient::connect(server.addr).await;
    c.send("PUB x 900000\r\n").await;
    c.expect("-ERR 'Authorization Violation'\r\n").await;
    c.expect_closed().await;
    let mut c = RawClient::connect(server.addr).await;
    c.send("P").await;
    c.expect("-ERR 'Authorization Violation'\r\n").await;
    c.expect_closed().await;
}

/// A bcrypt check takes tens of milliseconds: it runs off the runtime's threads, so the other
/// connections (here on a single-threaded runtime, as the test's) are not held up meanwhile.
#[tokio::test]
async fn bcrypt_does_not_hold_up_other_connections() {
    let slow = bcrypt::hash("pw", 8).unwrap();
    let server = server_with(users(&[("slow", &slow), ("fast", "pw")])).await;
    let mut fast = RawClient::connect(server.addr).await;
    fast.send("CONNECT {\"verbose\":false,\"user\":\"fast\",\"pass\":\"pw\"}\r\n").await;
    fast.ping_pong().await;
    let mut slow = RawClient::connect(server.addr).await;
    slow.send("CONNECT {\"verbose\":false,\"user\":\"slow\",\"pass\":\"pw\"}\r\nPING\r\n").await;
    fast.send("PING\r\n").await;
    fast.expect("PONG\r\n").await;
    assert!(!slow.has_buffered(b"PONG").await, "the slow CONNECT was answered before another connection's PING");
    slow.expect("PONG\r\n").await;
}

/// Exports and imports in account JWTs link accounts as the configuration file's do: a stream
/// under a prefix (the older `to`) and a service under its `local_subject`; an export that
/// needs an activation token is not importable without one.
#[tokio::test]
async fn account_jwt_exports_and_imports_link_accounts() {
    let operator = nkeys::KeyPair::new_operator();
    let op_jwt = encode_jwt(serde_json::json!({"iss": operator.public_key(), "sub": operator.public_key()}), &operator);
    let (exporter, importer) = (nkeys::KeyPair::new_account(), nkeys::KeyPair::new_account());
    let exporter_jwt = encode_jwt(
        serde_json::json!({"iss": operator.public_key(), "sub": exporter.public_key(), "nats": {
            "exports": [
                {"subject": "metrics.>", "type": "stream"},
                {"subject": "time.now", "type": "service"},
                {"subject": "private.>", "type": "stream", "token_req": true}
            ],
            "version": 2
        }}),
        &operator,
    );
    let importer_jwt = encode_jwt(
        serde_json::json!({"iss": operator.public_key(), "sub": importer.public_key(), "nats": {
            "imports": [
                {"subject": "metrics.>", "account": exporter.public_key(), "to": "remote", "type": "stream"},
                {"subject": "time.now", "account": exporter.public_key(), "local_subject": "clock", "type": "service"},
                {"subject": "private.>", "account": exporter.public_key(), "type": "stream"}
            ],
            "version": 2
        }}),
        &operator,
    );
    let trust = Trust::new(
        [op_jwt.as_str()],
        [
            (exporter.public_key().as_str(), exporter_jwt.as_str()),
            (importer.public_key().as_str(), importer_jwt.as_str()),
        ],
    )
    .unwrap();
    let server = server_with(Authorization { trust: Some(trust), ..Default::default() }).await;
    let user_in = |acc: &nkeys::KeyPair| {
        let user = Arc::new(nkeys::KeyPair::new_user());
        let jwt = encode_jwt(serde_json::json!({"iss": acc.public_key(), "sub": user.public_key(), "nats": {}}), acc);
        jwt_opts(jwt, user)
    };
    let exp = try_connect(&server, user_in(&exporter)).await.expect("exporter user");
    let imp = try_connect(&server, user_in(&importer)).await.expect("importer user");

    let mut metrics = imp.subscribe("remote.metrics.>").await.unwrap();
    let mut private = imp.subscribe("private.>").await.unwrap();
    imp.flush().await.unwrap();
    exp.publish("private.x", "secret".into()).await.unwrap();
    exp.publish("metrics.cpu", "0.5".into()).await.unwrap();
    let m = tokio::time::timeout(TIMEOUT, metrics.next()).await.expect("in time").unwrap();
    assert_eq!(m.subject.as_str(), "remote.metrics.cpu");
    assert_eq!(&m.payload[..], b"0.5");

    let mut clock = exp.subscribe("time.now").await.unwrap();
    exp.flush().await.unwrap();
    let responder = tokio::spawn(async move {
        let req = clock.next().await.expect("a request");
        exp.publish(req.reply.expect("reply"), "noon".into()).await.unwrap();
        exp.flush().await.unwrap();
    });
    let answer = tokio::time::timeout(TIMEOUT, imp.request("clock", "".into())).await.expect("in time").unwrap();
    assert_eq!(&answer.payload[..], b"noon");
    responder.await.unwrap();
    // The token-protected stream never arrived (it was published before the metrics one).
    assert!(tokio::time::timeout(Duration::from_millis(100), private.next()).await.is_err());
}

/// An account JWT whose limits allow JetStream gets it, with its stream limit; an account
/// JWT without JetStream limits has none.
#[tokio::test]
async fn account_jwts_with_jetstream_limits_get_jetstream() {
    let dir = tempfile::tempdir().unwrap();
    let operator = nkeys::KeyPair::new_operator();
    let op_jwt = encode_jwt(serde_json::json!({"iss": operator.public_key(), "sub": operator.public_key()}), &operator);
    let (with_js, without) = (nkeys::KeyPair::new_account(), nkeys::KeyPair::new_account());
    let account_jwt = |acc: &nkeys::KeyPair, nats: serde_json::Value| {
        encode_jwt(serde_json::json!({"iss": operator.public_key(), "sub": acc.public_key(), "nats": nats}), &operator)
    };
    let js_jwt = account_jwt(
        &with_js,
        serde_json::json!({"limits": {"mem_storage": -1, "disk_storage": 1_000_000, "streams": 1}, "version": 2}),
    );
    let plain_jwt = account_jwt(&without, serde_json::json!({"version": 2}));
    let trust = Trust::new(
        [op_jwt.as_str()],
        [(with_js.public_key().as_str(), js_jwt.as_str()), (without.public_key().as_str(), plain_jwt.as_str())],
    )
    .unwrap();
    let server = TestServer::start(courier::Options {
        authorization: Authorization { trust: Some(trust), ..Default::default() },
        jetstream: Some(courier::options::JetStreamOptions {
            store_dir: Some(dir.path().into()),
            ..Default::default()
        }),
        ..options()
    })
    .await;
    let user_in = |acc: &nkeys::KeyPair| {
        let user = Arc::new(nkeys::KeyPair::new_user());
        let jwt = encode_jwt(serde_json::json!({"iss": acc.public_key(), "sub": user.public_key(), "nats": {}}), acc);
        jwt_opts(jwt, user)
    };
    let client = try_connect(&server, user_in(&with_js)).await.expect("user with JetStream");
    let api = |subject: &'static str, body: serde_json::Value| {
        let client = client.clone();
        async move {
            let reply = client.request(subject, body.to_string().into()).await.expect("answered");
            serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
        }
    };
    let info = api("$JS.API.INFO", serde_json::json!({})).await;
    assert_eq!(info["limits"]["max_storage"], 1_000_000, "{info}");
    assert!(api("$JS.API.STREAM.CREATE.ONE", serde_json::json!({"name": "ONE", "subjects": ["one"]})).await["error"]
        .is_null());
    let second = api("$JS.API.STREAM.CREATE.TWO", serde_json::json!({"name": "TWO", "subjects": ["two"]})).await;
    assert_eq!(second["error"]["err_code"], 10027, "{second}");
    let other = try_connect(&server, user_in(&without)).await.expect("user without JetStream");
    let err = other.request("$JS.API.INFO", "".into()).await.expect_err("no JetStream there");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}
