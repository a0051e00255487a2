//! Subject permissions over the wire: allow and deny for publish and subscribe, queue-specific
//! rules, wildcard subscriptions filtered by deny rules, allow_responses, default permissions,
//! and the exact errors (the connection stays open).

mod common;

use common::{options, RawClient, TestServer, TIMEOUT};
use courier::auth::permissions::{ResponsePermission, Rule, SubjectRules};
use courier::auth::{Authorization, Permissions, User};
use futures::StreamExt;

fn rules(allow: Option<&[&str]>, deny: &[&str]) -> Option<SubjectRules> {
    Some(SubjectRules {
        allow: allow.map(|a| a.iter().map(|s| Rule::parse(s)).collect()),
        deny: deny.iter().map(|s| Rule::parse(s)).collect(),
    })
}

fn user(name: &str, permissions: Option<Permissions>) -> User {
    User { name: name.into(), password: name.into(), permissions }
}

async fn server() -> TestServer {
    let orders = Permissions {
        publish: rules(Some(&["orders.>", "_INBOX.>"]), &["orders.secret"]),
        subscribe: rules(Some(&["orders.*", "jobs.* workers", "_INBOX.>"]), &["orders.hidden"]),
        allow_responses: None,
    };
    let responder = Permissions {
        publish: rules(Some(&["nothing"]), &[]),
        subscribe: rules(Some(&["svc.>"]), &[]),
        allow_responses: Some(ResponsePermission::default()),
    };
    let auth = Authorization {
        users: vec![user("a", Some(orders)), user("r", Some(responder)), user("d", None)],
        default_permissions: Some(Permissions { publish: rules(Some(&["public.>"]), &[]), ..Default::default() }),
        ..Default::default()
    };
    // "d" has no permissions of its own, so it gets the defaults.
    TestServer::start(courier::Options { authorization: auth, ..options() }).await
}

async fn login(server: &TestServer, name: &str, verbose: bool) -> RawClient {
    let mut c = RawClient::connect(server.addr).await;
    c.send(format!("CONNECT {{\"verbose\":{verbose},\"user\":\"{name}\",\"pass\":\"{name}\"}}\r\n")).await;
    if verbose {
        c.expect("+OK\r\n").await;
    }
    c
}

#[tokio::test]
async fn publish_violations_are_reported_and_dropped() {
    let server = server().await;
    let mut watcher = login(&server, "a", false).await;
    watcher.send("SUB orders.* 1\r\n").await;
    watcher.ping_pong().await;
    let mut c = login(&server, "a", true).await;
    c.send("PUB orders.new 1\r\nx\r\nPUB orders.secret 1\r\ns\r\nPUB other 1\r\no\r\nPING\r\n").await;
    c.expect(
        "+OK\r\n-ERR 'Permissions Violation for Publish to \"orders.secret\"'\r\n\
         -ERR 'Permissions Violation for Publish to \"other\"'\r\nPONG\r\n",
    )
    .await;
    // Only the allowed message got through.
    watcher.expect("MSG orders.new 1 1\r\nx\r\n").await;
    watcher.send("PING\r\n").await;
    watcher.expect("PONG\r\n").await;
}

#[tokio::test]
async fn subscribe_rules_queues_and_deny_filters() {
    let server = server().await;
    let mut c = login(&server, "a", true).await;
    c.send("SUB orders.new 1\r\nSUB orders.hidden 2\r\nSUB jobs.x 3\r\nSUB jobs.x workers 4\r\nSUB jobs.x other 5\r\n")
        .await;
    c.expect(
        "+OK\r\n-ERR 'Permissions Violation for Subscription to \"orders.hidden\"'\r\n\
         -ERR 'Permissions Violation for Subscription to \"jobs.x\"'\r\n+OK\r\n\
         -ERR 'Permissions Violation for Subscription to \"jobs.x\" using queue \"other\"'\r\n",
    )
    .await;
    // A wildcard subscription is allowed, but messages on denied subjects are kept from it.
    c.send("SUB orders.* 7\r\nPUB orders.hidden 1\r\nh\r\nPUB orders.seen 1\r\nn\r\nPING\r\n").await;
    c.expect("+OK\r\n+OK\r\n+OK\r\nMSG orders.seen 7 1\r\nn\r\nPONG\r\n").await;
}

#[tokio::test]
async fn responders_may_answer_requests_they_receive_once() {
    let server = server().await;
    let mut responder = login(&server, "r", false).await;
    responder.send("SUB svc.echo 1\r\n").await;
    responder.ping_pong().await;
    let mut requester = login(&server, "a", false).await;
    requester.send("SUB _INBOX.abc 9\r\nPUB svc.echo _INBOX.abc 2\r\nhi\r\nPING\r\n").await;
    requester.expect("-ERR 'Permissions Violation for Publish to \"svc.echo\"'\r\nPONG\r\n").await;

    // A requester with no restrictions and a responder allowed to answer once.
    let open = TestServer::start(courier::Options {
        authorization: Authorization {
            users: vec![
                user(
                    "r",
                    Some(Permissions {
                        publish: rules(Some(&["nothing"]), &[]),
                        allow_responses: Some(ResponsePermission::default()),
                        ..Default::default()
                    }),
                ),
                User { name: "x".into(), password: "x".into(), permissions: Some(Permissions::default()) },
            ],
            ..Default::default()
        },
        ..options()
    })
    .await;
    let mut responder = login(&open, "r", false).await;
    responder.send("SUB svc.echo 1\r\n").await;
    responder.ping_pong().await;
    let mut requester = login(&open, "x", false).await;
    requester.send("SUB reply.1 9\r\nPUB svc.echo reply.1 2\r\nhi\r\nPING\r\n").await;
    requester.expect("PONG\r\n").await;
    responder.expect("MSG svc.echo 1 reply.1 2\r\nhi\r\n").await;
    // One answer is allowed, the second is not, and an unrelated subject never was.
    responder.send("PUB reply.1 2\r\nok\r\nPUB reply.1 2\r\nno\r\nPUB reply.2 2\r\nno\r\nPING\r\n").await;
    responder
        .expect(
            "-ERR 'Permissions Violation for Publish to \"reply.1\"'\r\n\
             -ERR 'Permissions Violation for Publish to \"reply.2\"'\r\nPONG\r\n",
        )
        .await;
    requester.expect("MSG reply.1 9 2\r\nok\r\n").await;
    requester.send("PING\r\n").await;
    requester.expect("PONG\r\n").await;
}

#[tokio::test]
async fn default_permissions_apply_to_users_without_their_own() {
    let server = server().await;
    let client = server.nats_with(async_nats::ConnectOptions::with_user_and_password("d".into(), "d".into())).await;
    let mut sub = client.subscribe("public.news").await.unwrap();
    client.publish("private.news", "no".into()).await.unwrap();
    client.publish("public.news", "yes".into()).await.unwrap();
    let msg = tokio::time::timeout(TIMEOUT, sub.next()).await.expect("in time").unwrap();
    assert_eq!(&msg.payload[..], b"yes");
}
