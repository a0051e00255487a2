use std::sync::Arc;

use parking_lot::Mutex;

use super::*;
use crate::account::Account;
use crate::connection::Kind;
use crate::delivery::{InternalSink, OwnedMessage};
use crate::options::Options;
use crate::state::{Live, ServerState};

fn state() -> ServerState {
    ServerState::new(Live::build(Options::default(), "NTEST", 4222).expect("live config"))
}

fn conn(cid: u64, kind: Kind) -> Arc<Connection> {
    let c = Arc::new(Connection::new(cid, kind, 1 << 20));
    c.set_headers(true);
    c
}

fn sub(target: Target, subject: &str, queue: Option<&str>) -> Arc<Subscription> {
    Arc::new(Subscription::new(target, subject.as_bytes(), queue.map(str::as_bytes), b"1"))
}

async fn written(c: &Connection) -> Vec<u8> {
    let mut out = Vec::new();
    c.outbound.flush_to(&mut out).await;
    out
}

fn msg<'a>(subject: &'a [u8], reply: Option<&'a [u8]>, payload: &'a [u8]) -> Message<'a> {
    Message { subject, reply, header_len: 0, payload }
}

#[tokio::test]
async fn a_route_gets_one_copy_naming_the_queue_groups_picked_there() {
    let state = state();
    let account = Account::new("$G");
    let route = conn(1, Kind::Router);
    let client = conn(2, Kind::Client);
    account.add_subscription(sub(Target::Route(Arc::clone(&route)), "orders.*", None));
    account.add_subscription(sub(Target::Route(Arc::clone(&route)), "orders.>", None));
    account.add_subscription(sub(Target::Route(Arc::clone(&route)), "orders.new", Some("workers")));
    let mut publisher = Publisher::new(7);
    let origin = Origin::Client { conn: &client, echo: true };
    assert!(publisher.publish(&state, &account, origin, &msg(b"orders.new", Some(b"_INBOX.a"), b"hi")));
    publisher.flush(&state);
    assert_eq!(written(&route).await, b"RMSG $G orders.new + _INBOX.a workers 2\r\nhi\r\n");
    // What arrives over a route is not sent into the cluster again.
    let from_route = conn(3, Kind::Router);
    assert!(!publisher.publish(&state, &account, Origin::Route(&from_route), &msg(b"orders.x", None, b"x")));
    publisher.flush(&state);
    assert!(written(&route).await.is_empty());
}

#[tokio::test]
async fn a_leaf_does_not_get_its_own_messages_back() {
    let state = state();
    let account = Account::new("$G");
    let leaf = conn(1, Kind::Leaf);
    let other = conn(2, Kind::Leaf);
    account.add_subscription(sub(Target::Leaf(Arc::clone(&leaf)), "t.>", None));
    account.add_subscription(sub(Target::Leaf(Arc::clone(&other)), "t.*", Some("g")));
    let mut publisher = Publisher::new(1);
    assert!(publisher.publish(&state, &account, Origin::Leaf(&leaf), &msg(b"t.1", None, b"q")));
    publisher.flush(&state);
    assert!(written(&leaf).await.is_empty());
    assert_eq!(written(&other).await, b"LMSG t.1 | g 1\r\nq\r\n");
}

#[derive(Default)]
struct Collect {
    got: Mutex<Vec<OwnedMessage>>,
}

impl InternalSink for Collect {
    fn deliver(&self, _sub: &Subscription, msg: &Message<'_>) -> bool {
        self.got.lock().push(OwnedMessage::copy_of(msg));
        true
    }
    fn name(&self) -> &str {
        "collect"
    }
}

#[tokio::test]
async fn internal_consumers_and_clients_share_the_path() {
    let state = Arc::new(state());
    let account = Arc::clone(state.accounts.global());
    let sink = Arc::new(Collect::default());
    let client = conn(1, Kind::Client);
    account.add_subscription(sub(Target::Internal(sink.clone()), "events.>", None));
    let client_sub = sub(Target::Client(Arc::clone(&client)), "events.*", None);
    client_sub.set_max(1);
    account.add_subscription(Arc::clone(&client_sub));
    let internal = InternalPublisher::new(Arc::clone(&state));
    assert!(internal.publish(&account, &msg(b"events.a", None, b"one")));
    assert!(internal.publish(&account, &msg(b"events.b", None, b"two")));
    assert_eq!(written(&client).await, b"MSG events.a 1 3\r\none\r\n");
    let got: Vec<Vec<u8>> = sink.got.lock().iter().map(|m| m.payload.to_vec()).collect();
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    // The one-shot subscription ended in the publisher's task; its owner is told its sid.
    assert!(client_sub.is_removed());
    let mut ended = Vec::new();
    client.take_ended(&mut ended);
    assert_eq!(ended, vec![b"1".to_vec().into_boxed_slice()]);
    assert_eq!(client.stats.subscriptions.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_servers_publisher_in_two_accounts_keeps_their_subjects_apart() {
    let state = Arc::new(state());
    let (a, b) = (Account::new("A"), Account::new("B"));
    let (in_a, in_b) = (conn(1, Kind::Client), conn(2, Kind::Client));
    a.add_subscription(sub(Target::Client(Arc::clone(&in_a)), "same.subject", None));
    b.add_subscription(sub(Target::Client(Arc::clone(&in_b)), "same.subject", None));
    let publisher = InternalPublisher::new(Arc::clone(&state));
    for _ in 0..3 {
        assert!(publisher.publish(&a, &msg(b"same.subject", None, b"for a")));
    }
    assert!(publisher.publish(&b, &msg(b"same.subject", None, b"for b")));
    publisher.batch(|batch| {
        assert!(batch.publish_to(&a, b"same.subject", &msg(b"same.subject", None, b"for a")));
        assert!(batch.publish_to(&b, b"same.subject", &msg(b"same.subject", None, b"for b")));
    });
    assert_eq!(written(&in_b).await, b"MSG same.subject 1 5\r\nfor b\r\n".repeat(2));
    assert_eq!(written(&in_a).await.len(), 4 * b"MSG same.subject 1 5\r\nfor a\r\n".len());
}
