//! MQTT devices and NATS clients on one server: rumqttc (a real MQTT client) and raw TCP for
//! the exact bytes nats-server 2.9.10 sends, against the `mqtt {}` listener.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestServer, TIMEOUT};
use courier::options::{JetStreamOptions, MqttOptions};
use courier::Options;
use futures::StreamExt;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions as DeviceOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Options for a server with JetStream in `dir` and an MQTT listener on a free port.
fn mqtt_options(dir: &std::path::Path) -> Options {
    Options {
        server_name: "mqtt-test".into(),
        jetstream: Some(JetStreamOptions { store_dir: Some(dir.to_path_buf()), ..Default::default() }),
        mqtt: Some(MqttOptions { host: Some("127.0.0.1".into()), ..Default::default() }),
        ..common::options()
    }
}

struct MqttServer {
    server: TestServer,
    mqtt: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start_with(change: impl FnOnce(&mut Options)) -> MqttServer {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = mqtt_options(dir.path());
    change(&mut opts);
    let server = TestServer::start(opts).await;
    let mqtt = server.handle.mqtt_addr().expect("mqtt listener");
    MqttServer { server, mqtt, _dir: dir }
}

async fn start() -> MqttServer {
    start_with(|_| {}).await
}

/// What a device's event loop saw.
#[derive(Debug)]
enum Seen {
    ConnAck(bool, rumqttc::ConnectReturnCode),
    Publish(rumqttc::Publish),
    SubAck(Vec<rumqttc::SubscribeReasonCode>),
    Closed,
}

/// A rumqttc device whose event loop runs on a task of its own.
struct Device {
    client: AsyncClient,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
    session_present: bool,
}

fn device_options(addr: SocketAddr, id: &str, clean: bool) -> DeviceOptions {
    let mut o = DeviceOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

async fn device(addr: SocketAddr, id: &str, clean: bool) -> Device {
    device_with(device_options(addr, id, clean)).await
}

async fn device_with(opts: DeviceOptions) -> Device {
    let (client, mut events) = AsyncClient::new(opts, 100);
    let (tx, mut seen) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let event = match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c))) => Seen::ConnAck(c.session_present, c.code),
                Ok(Event::Incoming(Packet::Publish(p))) => Seen::Publish(p),
                Ok(Event::Incoming(Packet::SubAck(s))) => Seen::SubAck(s.return_codes),
                Ok(_) => continue,
                Err(_) => {
                    let _ = tx.send(Seen::Closed);
                    return;
                }
            };
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    let first = timeout(TIMEOUT, seen.recv()).await.expect("CONNACK in time").expect("event");
    let Seen::ConnAck(session_present, code) = first else { panic!("expected CONNACK, got {first:?}") };
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);
    Device { client, seen, task, session_present }
}

impl Device {
    async fn next(&mut self) -> Seen {
        timeout(TIMEOUT, self.seen.recv()).await.expect("device event in time").expect("event loop alive")
    }

    async fn next_publish(&mut self) -> rumqttc::Publish {
        loop {
            match self.next().await {
                Seen::Publish(p) => return p,
                Seen::Closed => panic!("connection closed while waiting for a PUBLISH"),
                _ => {}
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.unwrap();
        loop {
            match self.next().await {
                Seen::SubAck(codes) => return codes,
                Seen::Closed => panic!("closed while subscribing"),
                _ => {}
            }
        }
    }

    async fn publish(&self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client.publish(topic, qos, retain, payload.to_vec()).await.unwrap();
    }

    /// Sends DISCONNECT and waits for the event loop to end.
    async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        while !matches!(self.next().await, Seen::Closed) {}
        self.task.abort();
    }

    /// Drops the connection without DISCONNECT.
    fn vanish(self) {
        self.task.abort();
    }
}

/// A raw MQTT connection, for exact bytes.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = timeout(TIMEOUT, TcpStream::connect(addr)).await.unwrap().unwrap();
        Raw { stream, buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads exactly `n` bytes.
    async fn read(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            let got = timeout(TIMEOUT, self.stream.read(&mut chunk)).await.expect("bytes in time").unwrap();
            assert!(got > 0, "closed after {:02x?}", self.buf);
            self.buf.extend_from_slice(&chunk[..got]);
        }
        self.buf.drain(..n).collect()
    }

    async fn expect(&mut self, want: &[u8]) {
        let got = self.read(want.len()).await;
        assert_eq!(got, want, "got {got:02x?}, want {want:02x?}");
    }

    /// Reads one whole packet (fixed header with a one-byte remaining length).
    async fn packet(&mut self) -> Vec<u8> {
        let head = self.read(2).await;
        assert!(head[1] < 0x80, "short packets only");
        let body = self.read(usize::from(head[1])).await;
        [head, body].concat()
    }

    /// Waits for the server to close the connection; returns what came before.
    async fn expect_closed(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("connection still open; got {rest:02x?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return rest,
                Ok(Ok(n)) => rest.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn string(s: &[u8]) -> Vec<u8> {
    [&(s.len() as u16).to_be_bytes()[..], s].concat()
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    [&[first, body.len() as u8][..], body].concat()
}

/// CONNECT with protocol `name` and `level`, connect flags, keep-alive and the payload fields.
fn connect_packet(name: &[u8], level: u8, flags: u8, keep_alive: u16, payload: &[&[u8]]) -> Vec<u8> {
    let mut body = string(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    for field in payload {
        body.extend_from_slice(&string(field));
    }
    packet(0x10, &body)
}

fn connect(id: &str) -> Vec<u8> {
    connect_packet(b"MQTT", 4, 0x02, 30, &[id.as_bytes()])
}

fn subscribe(id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    for (f, q) in filters {
        body.extend_from_slice(&string(f.as_bytes()));
        body.push(*q);
    }
    packet(0x82, &body)
}

fn publish(topic: &str, qos: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

async fn raw_device(addr: SocketAddr, id: &str) -> Raw {
    let mut raw = Raw::connect(addr).await;
    raw.send(&connect(id)).await;
    raw.expect(&CONNACK_OK).await;
    raw
}

async fn nats(s: &MqttServer) -> async_nats::Client {
    s.server.nats().await
}

async fn next_msg(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    timeout(TIMEOUT, sub.next()).await.expect("NATS message in time").expect("subscription open")
}

#[tokio::test]
async fn devices_and_nats_clients_reach_each_other_on_mapped_subjects() {
    let s = start().await;
    let nc = nats(&s).await;
    let mut telemetry = nc.subscribe("telemetry.>").await.unwrap();
    nc.flush().await.unwrap();

    let mut dev = device(s.mqtt, "dev1", true).await;
    assert!(!dev.session_present);
    assert_eq!(
        dev.subscribe("cmd/dev1/#", QoS::AtMostOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );

    // A NATS command reaches the device at QoS 0, on its topic; `#` also matches the parent.
    nc.publish("cmd.dev1.reboot", "now".into()).await.unwrap();
    nc.publish("cmd.dev1", "parent".into()).await.unwrap();
    nc.flush().await.unwrap();
    let p = dev.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain),
        ("cmd/dev1/reboot", &b"now"[..], QoS::AtMostOnce, false)
    );
    let p = dev.next_publish().await;
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("cmd/dev1", &b"parent"[..]));

    // Device telemetry reaches NATS with the header naming its QoS.
    dev.publish("telemetry/dev1/temp", QoS::AtLeastOnce, false, b"21.5").await;
    let m = next_msg(&mut telemetry).await;
    assert_eq!(m.subject.as_str(), "telemetry.dev1.temp");
    assert_eq!(&m.payload[..], b"21.5");
    assert_eq!(m.headers.as_ref().and_then(|h| h.get("Nmqtt-Pub")).map(|v| v.as_str()), Some("1"));
    dev.publish("telemetry/dev1/hum", QoS::AtMostOnce, false, b"40").await;
    let m = next_msg(&mut telemetry).await;
    assert_eq!(m.headers.as_ref().and_then(|h| h.get("Nmqtt-Pub")).map(|v| v.as_str()), Some("0"));
    dev.disconnect().await;
}

#[tokio::test]
async fn connack_suback_puback_and_a_qos_1_delivery_are_nats_servers_bytes() {
    let s = start().await;
    let mut sub = raw_device(s.mqtt, "sub").await;
    // QoS 2 granted as 1; `x/#` at 0; `.` and `$MQTT.sub.` refused.
    sub.send(&subscribe(1, &[("a/+/c", 2), ("x/#", 0), ("bad.topic", 0), ("$MQTT.sub.x", 0)])).await;
    sub.expect(&[0x90, 0x06, 0x00, 0x01, 0x01, 0x00, 0x80, 0x80]).await;

    let mut publisher = raw_device(s.mqtt, "pub").await;
    publisher.send(&publish("a/b/c", 1, 7, b"r1")).await;
    publisher.expect(&[0x40, 0x02, 0x00, 0x07]).await;
    sub.expect(&[&[0x32, 0x0b, 0x00, 0x05][..], b"a/b/c", &[0x00, 0x01], b"r1"].concat()).await;

    // PINGREQ → PINGRESP.
    sub.send(&[0xc0, 0x00]).await;
    sub.expect(&[0xd0, 0x00]).await;
    // UNSUBSCRIBE → UNSUBACK.
    let mut body = 2u16.to_be_bytes().to_vec();
    body.extend_from_slice(&string(b"x/#"));
    sub.send(&packet(0xa2, &body)).await;
    sub.expect(&[0xb0, 0x02, 0x00, 0x02]).await;
}

#[tokio::test]
async fn an_unacknowledged_qos_1_message_comes_again_with_dup_after_ack_wait() {
    let s = start_with(|o| o.mqtt.as_mut().unwrap().ack_wait = Duration::from_millis(500)).await;
    let mut sub = raw_device(s.mqtt, "slow").await;
    sub.send(&subscribe(1, &[("jobs/#", 1)])).await;
    sub.expect(&[0x90, 0x03, 0x00, 0x01, 0x01]).await;
    let nc = nats(&s).await;
    let mut publisher = raw_device(s.mqtt, "producer").await;
    publisher.send(&publish("jobs/1", 1, 1, b"work")).await;
    publisher.expect(&[0x40, 0x02, 0x00, 0x01]).await;
    let first = sub.packet().await;
    assert_eq!(first, [&[0x32, 0x0e, 0x00, 0x06][..], b"jobs/1", &[0x00, 0x01], b"work"].concat());
    // Not acknowledged: sent again, same packet id, DUP set.
    let again = sub.packet().await;
    assert_eq!(again, [&[0x3a, 0x0e, 0x00, 0x06][..], b"jobs/1", &[0x00, 0x01], b"work"].concat());
    sub.send(&[0x40, 0x02, 0x00, 0x01]).await;

    // Acknowledged: the consumer has nothing pending, and the interest stream lets it go.
    let js = async_nats::jetstream::new(nc);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let mut stream = js.get_stream("$MQTT_msgs").await.unwrap();
        let info = stream.info().await.unwrap().clone();
        let names: Vec<String> = stream.consumer_names().map(|n| n.unwrap()).collect().await;
        // `jobs/#` is two subscriptions, `jobs.>` and `jobs`, with a consumer each, named as
        // nats-server names them: the hash of the client id, then a unique part.
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("WCz3T2un_")), "{names:?}");
        let mut pending = 0;
        for name in &names {
            pending += stream.consumer_info(name).await.unwrap().num_ack_pending;
        }
        if pending == 0 && info.state.messages == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "ack not applied: {pending} pending, {:?}", info.state);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_persistent_session_gets_what_was_published_while_it_was_away() {
    let s = start().await;
    let mut dev = device(s.mqtt, "sensor-7", false).await;
    assert!(!dev.session_present);
    dev.subscribe("alerts/#", QoS::AtLeastOnce).await;
    dev.disconnect().await;

    let producer = device(s.mqtt, "producer", true).await;
    producer.publish("alerts/fire", QoS::AtLeastOnce, false, b"kitchen").await;
    producer.publish("alerts/flood", QoS::AtLeastOnce, false, b"basement").await;
    producer.disconnect().await;

    let mut dev = device(s.mqtt, "sensor-7", false).await;
    assert!(dev.session_present, "the session was kept");
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = dev.next_publish().await;
        assert_eq!(p.qos, QoS::AtLeastOnce);
        got.push((p.topic.clone(), p.payload.to_vec()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![("alerts/fire".to_string(), b"kitchen".to_vec()), ("alerts/flood".to_string(), b"basement".to_vec())]
    );
    // Live messages keep coming to the resumed subscription.
    let nc = nats(&s).await;
    nc.publish("alerts.smoke", "hall".into()).await.unwrap();
    nc.flush().await.unwrap();
    let p = dev.next_publish().await;
    assert_eq!((p.topic.as_str(), p.qos), ("alerts/smoke", QoS::AtMostOnce));
    dev.disconnect().await;

    // A clean session deletes it.
    let dev = device(s.mqtt, "sensor-7", true).await;
    assert!(!dev.session_present);
    dev.disconnect().await;
    let dev = device(s.mqtt, "sensor-7", false).await;
    assert!(!dev.session_present, "a clean session left nothing behind");
    dev.disconnect().await;
}

#[tokio::test]
async fn retained_messages_reach_new_subscribers_and_only_the_last_is_kept() {
    let s = start().await;
    let dev = device(s.mqtt, "d1", true).await;
    dev.publish("status/d1", QoS::AtLeastOnce, true, b"online").await;
    dev.publish("status/d1", QoS::AtLeastOnce, true, b"busy").await;
    dev.publish("status/d2", QoS::AtMostOnce, true, b"idle").await;
    // A publish from the same connection after the retained ones: once it reaches a NATS
    // subscriber, the retained ones are stored.
    let nc = nats(&s).await;
    let mut marker = nc.subscribe("marker").await.unwrap();
    nc.flush().await.unwrap();
    dev.publish("marker", QoS::AtLeastOnce, false, b"m").await;
    next_msg(&mut marker).await;

    let mut fresh = device(s.mqtt, "fresh", true).await;
    fresh.subscribe("status/+", QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = fresh.next_publish().await;
        assert!(p.retain, "flagged retained");
        got.push((p.topic.clone(), p.payload.to_vec(), p.qos));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("status/d1".to_string(), b"busy".to_vec(), QoS::AtLeastOnce),
            ("status/d2".to_string(), b"idle".to_vec(), QoS::AtMostOnce),
        ]
    );
    let js = async_nats::jetstream::new(nc.clone());
    let mut rmsgs = js.get_stream("$MQTT_rmsgs").await.unwrap();
    assert_eq!(rmsgs.info().await.unwrap().state.messages, 2, "one retained message per topic");

    // An empty retained publish clears it.
    dev.publish("status/d1", QoS::AtLeastOnce, true, b"").await;
    dev.publish("marker", QoS::AtLeastOnce, false, b"m").await;
    next_msg(&mut marker).await;
    let mut later = device(s.mqtt, "later", true).await;
    later.subscribe("status/#", QoS::AtMostOnce).await;
    let p = later.next_publish().await;
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("status/d2", &b"idle"[..]));
    nc.publish("status.marker", "after".into()).await.unwrap();
    nc.flush().await.unwrap();
    let p = later.next_publish().await;
    assert_eq!(p.topic, "status/marker", "no retained message for status/d1 any more");
    assert_eq!(rmsgs.info().await.unwrap().state.messages, 1);
    dev.disconnect().await;
}

#[tokio::test]
async fn a_will_is_sent_when_a_device_vanishes_and_not_after_disconnect() {
    let s = start().await;
    let nc = nats(&s).await;
    let mut wills = nc.subscribe("wills.>").await.unwrap();
    nc.flush().await.unwrap();

    let mut o = device_options(s.mqtt, "w1", true);
    o.set_last_will(LastWill::new("wills/w1", "gone", QoS::AtMostOnce, false));
    let dev = device_with(o).await;
    dev.vanish();
    let m = next_msg(&mut wills).await;
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("wills.w1", &b"gone"[..]));

    let mut o = device_options(s.mqtt, "w2", true);
    o.set_last_will(LastWill::new("wills/w2", "gone", QoS::AtMostOnce, false));
    let dev = device_with(o).await;
    dev.disconnect().await;
    common::eventually("w2 closed", || s.server.connections() == 1).await;
    nc.publish("wills.marker", "m".into()).await.unwrap();
    let m = next_msg(&mut wills).await;
    assert_eq!(m.subject.as_str(), "wills.marker", "DISCONNECT discards the will");
}

#[tokio::test]
async fn keep_alive_closes_a_silent_device_after_one_and_a_half_periods() {
    let s = start().await;
    let mut raw = Raw::connect(s.mqtt).await;
    raw.send(&connect_packet(b"MQTT", 4, 0x02, 1, &[b"ka"])).await;
    raw.expect(&CONNACK_OK).await;
    // Pings inside the period keep it open.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        raw.send(&[0xc0, 0x00]).await;
        raw.expect(&[0xd0, 0x00]).await;
    }
    let silent = tokio::time::Instant::now();
    assert!(raw.expect_closed().await.is_empty());
    assert!(silent.elapsed() >= Duration::from_millis(900), "closed after {:?}", silent.elapsed());
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let s = start().await;
    let mut first = device(s.mqtt, "same", false).await;
    first.subscribe("t/#", QoS::AtLeastOnce).await;
    let mut second = device(s.mqtt, "same", false).await;
    assert!(second.session_present, "the session passed to the new connection");
    loop {
        if let Seen::Closed = first.next().await {
            break;
        }
    }
    let nc = nats(&s).await;
    nc.publish("t.x", "to the new one".into()).await.unwrap();
    nc.flush().await.unwrap();
    let p = second.next_publish().await;
    assert_eq!(&p.payload[..], b"to the new one");
    second.disconnect().await;
}

#[tokio::test]
async fn refusals_close_the_connection_as_nats_server_does() {
    let s = start().await;
    // MQTT 3.1.1 only: level 3 gets return code 1, then the close.
    let mut raw = Raw::connect(s.mqtt).await;
    raw.send(&connect_packet(b"MQTT", 3, 0x02, 30, &[b"old"])).await;
    assert_eq!(raw.expect_closed().await, [0x20, 0x02, 0x00, 0x01]);
    // MQTT 3.1's protocol name: closed without CONNACK.
    let mut raw = Raw::connect(s.mqtt).await;
    raw.send(&connect_packet(b"MQIsdp", 3, 0x02, 30, &[b"older"])).await;
    assert!(raw.expect_closed().await.is_empty());
    // An empty client id needs a clean session: identifier rejected.
    let mut raw = Raw::connect(s.mqtt).await;
    raw.send(&connect_packet(b"MQTT", 4, 0x00, 30, &[b""])).await;
    assert_eq!(raw.expect_closed().await, [0x20, 0x02, 0x00, 0x02]);
    // The reserved connect flag.
    let mut raw = Raw::connect(s.mqtt).await;
    raw.send(&connect_packet(b"MQTT", 4, 0x03, 30, &[b"r"])).await;
    assert!(raw.expect_closed().await.is_empty());
    // Anything before CONNECT.
    let mut raw = Raw::connect(s.mqtt).await;
    raw.send(&[0xc0, 0x00]).await;
    assert!(raw.expect_closed().await.is_empty());
    // After CONNECT: a second CONNECT, a QoS 2 publish, wildcards in a topic, an empty filter.
    for bad in [connect("again"), publish("q/2", 2, 1, b"x"), publish("a/+", 0, 0, b"x"), subscribe(1, &[("", 0)])] {
        let mut raw = raw_device(s.mqtt, "c").await;
        raw.send(&bad).await;
        assert!(raw.expect_closed().await.is_empty(), "{bad:02x?}");
    }
    // Other connections were not harmed.
    let mut ok = raw_device(s.mqtt, "fine").await;
    ok.send(&[0xc0, 0x00]).await;
    ok.expect(&[0xd0, 0x00]).await;
    s.server.assert_healthy().await;
}

#[tokio::test]
async fn devices_authenticate_with_the_listeners_credentials() {
    let s = start_with(|o| {
        o.mqtt.as_mut().unwrap().authorization = Some(courier::auth::Authorization {
            users: vec![courier::auth::User { name: "dev".into(), password: "s3cret".into(), permissions: None }],
            ..Default::default()
        });
    })
    .await;
    let user_pass = |pass: &[u8]| connect_packet(b"MQTT", 4, 0xc2, 30, &[b"a1", b"dev", pass]);
    let mut raw = Raw::connect(s.mqtt).await;
    raw.send(&user_pass(b"wrong")).await;
    assert_eq!(raw.expect_closed().await, [0x20, 0x02, 0x00, 0x05]);
    let mut raw = Raw::connect(s.mqtt).await;
    raw.send(&connect("a2")).await;
    assert_eq!(raw.expect_closed().await, [0x20, 0x02, 0x00, 0x05], "no credentials");
    let mut raw = Raw::connect(s.mqtt).await;
    raw.send(&user_pass(b"s3cret")).await;
    raw.expect(&CONNACK_OK).await;
}

#[tokio::test]
async fn a_thousand_devices_at_once_each_get_their_commands_and_send_telemetry() {
    const DEVICES: usize = 1000;
    raise_open_files();
    let s = start().await;
    let nc = nats(&s).await;
    let mut telemetry = nc.subscribe("fleet.*.t").await.unwrap();
    nc.flush().await.unwrap();
    let mut devices = Vec::with_capacity(DEVICES);
    for i in 0..DEVICES {
        let mut raw = Raw::connect(s.mqtt).await;
        raw.send(&[connect(&format!("dev-{i}")), subscribe(1, &[(&format!("fleet/{i}/cmd"), 0)])].concat()).await;
        devices.push(raw);
    }
    for raw in devices.iter_mut() {
        raw.expect(&CONNACK_OK).await;
        raw.expect(&[0x90, 0x03, 0x00, 0x01, 0x00]).await;
    }
    for i in 0..DEVICES {
        nc.publish(format!("fleet.{i}.cmd"), format!("go {i}").into()).await.unwrap();
    }
    nc.flush().await.unwrap();
    for (i, raw) in devices.iter_mut().enumerate() {
        let topic = format!("fleet/{i}/cmd");
        let body = format!("go {i}");
        let p = raw.packet().await;
        assert_eq!(
            p,
            [
                &[0x30, (2 + topic.len() + body.len()) as u8, 0, topic.len() as u8][..],
                topic.as_bytes(),
                body.as_bytes()
            ]
            .concat()
        );
        raw.send(&publish(&format!("fleet/{i}/t"), 0, 0, b"22")).await;
    }
    let mut from = std::collections::HashSet::new();
    while from.len() < DEVICES {
        let m = next_msg(&mut telemetry).await;
        assert!(from.insert(m.subject.to_string()), "one message per device");
    }
    assert_eq!(s.server.connections(), DEVICES + 1);
}

/// Lets this test process open as many sockets as the machine allows.
fn raise_open_files() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            let raised = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
}

/// Starts `courier` with an MQTT listener and JetStream in `dir`, and waits for it to listen.
fn start_process(dir: &std::path::Path) -> common::process::Proc {
    let store = dir.join("store");
    let conf = format!(
        "server_name: edge\nlisten: 127.0.0.1:-1\njetstream {{ store_dir: {:?} }}\nmqtt {{ listen: 127.0.0.1:-1 }}\n",
        store.to_str().unwrap()
    );
    common::process::start(common::process::COURIER, dir, "courier", &conf)
}

#[tokio::test]
async fn sessions_held_messages_and_retained_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_process(dir.path());
    let mut keeper = Raw::connect(server.mqtt.expect("MQTT listener")).await;
    keeper.send(&connect_packet(b"MQTT", 4, 0x00, 30, &[b"keeper"])).await;
    keeper.expect(&CONNACK_OK).await;
    keeper.send(&subscribe(1, &[("orders/+", 1)])).await;
    keeper.expect(&[0x90, 0x03, 0x00, 0x01, 0x01]).await;
    keeper.send(&[0xe0, 0x00]).await;
    keeper.expect_closed().await;

    let mut producer = raw_device(server.mqtt.expect("MQTT listener"), "producer").await;
    producer.send(&publish("orders/1", 1, 1, b"o1")).await;
    producer.expect(&[0x40, 0x02, 0x00, 0x01]).await;
    producer.send(&publish("config/site", 1, 2, b"v2")).await;
    // Retained: the flag is bit 0 of the first byte.
    let mut retained = publish("config/site", 1, 3, b"v3");
    retained[0] |= 0x01;
    producer.send(&retained).await;
    producer.expect(&[0x40, 0x02, 0x00, 0x02, 0x40, 0x02, 0x00, 0x03]).await;

    // SIGKILL: nothing is flushed or closed on the way out.
    drop(server);
    let server = start_process(dir.path());
    let mut producer = raw_device(server.mqtt.expect("MQTT listener"), "producer").await;
    producer.send(&publish("orders/2", 1, 4, b"o2")).await;
    producer.expect(&[0x40, 0x02, 0x00, 0x04]).await;

    let mut keeper = Raw::connect(server.mqtt.expect("MQTT listener")).await;
    keeper.send(&connect_packet(b"MQTT", 4, 0x00, 30, &[b"keeper"])).await;
    keeper.expect(&[0x20, 0x02, 0x01, 0x00]).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = keeper.packet().await;
        assert_eq!(p[0], 0x32, "QoS 1: {p:02x?}");
        let topic_len = usize::from(p[3]);
        got.push((p[4..4 + topic_len].to_vec(), p[4 + topic_len + 2..].to_vec()));
        keeper.send(&[0x40, 0x02, p[4 + topic_len], p[5 + topic_len]]).await;
    }
    got.sort();
    assert_eq!(got, vec![(b"orders/1".to_vec(), b"o1".to_vec()), (b"orders/2".to_vec(), b"o2".to_vec())]);

    let mut fresh = raw_device(server.mqtt.expect("MQTT listener"), "fresh").await;
    fresh.send(&subscribe(1, &[("config/#", 0)])).await;
    fresh.expect(&[0x90, 0x03, 0x00, 0x01, 0x00]).await;
    fresh.expect(&[&[0x31, 0x0f, 0x00, 0x0b][..], b"config/site", b"v3"].concat()).await;
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    common::http_get(addr, path).await.2
}

#[tokio::test]
async fn devices_show_in_connz_and_metrics_with_their_client_id() {
    let s = start_with(|o| o.http_port = Some(0)).await;
    let mut dev = raw_device(s.mqtt, "meter-12").await;
    dev.send(&subscribe(1, &[("m/12/#", 0)])).await;
    dev.expect(&[0x90, 0x03, 0x00, 0x01, 0x00]).await;
    let http = s.server.handle.monitor_addr().unwrap();
    let connz: serde_json::Value = serde_json::from_str(&http_get(http, "/connz?subs=1").await).unwrap();
    let c = &connz["connections"][0];
    assert_eq!(c["type"], "mqtt", "{connz}");
    assert_eq!(c["mqtt_client"], "meter-12");
    assert_eq!(c["subscriptions"], 2, "m/12/# is m.12.> and m.12");
    let mut subs: Vec<&str> = c["subscriptions_list"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    subs.sort();
    assert_eq!(subs, ["m.12", "m.12.>"]);
    assert!(http_get(http, "/metrics").await.contains("\ncourier_mqtt_connections 1\n"));
}

#[tokio::test]
async fn permissions_apply_to_devices_as_to_nats_clients() {
    use courier::auth::permissions::{Permissions, Rule, SubjectRules};
    let allow = |s: &str| SubjectRules { allow: Some(vec![Rule::parse(s)]), deny: vec![] };
    let perms =
        Permissions { publish: Some(allow("telemetry.>")), subscribe: Some(allow("cmd.>")), ..Default::default() };
    let s = start_with(|o| {
        o.authorization.users = vec![
            courier::auth::User { name: "dev".into(), password: "pw".into(), permissions: Some(perms) },
            courier::auth::User { name: "ops".into(), password: "pw2".into(), permissions: None },
        ];
    })
    .await;
    let mut raw = Raw::connect(s.mqtt).await;
    raw.send(&connect_packet(b"MQTT", 4, 0xc2, 30, &[b"p1", b"dev", b"pw"])).await;
    raw.expect(&CONNACK_OK).await;
    raw.send(&subscribe(1, &[("cmd/#", 0), ("secrets/#", 0)])).await;
    raw.expect(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x80]).await;
    let ops = s.server.nats_with(async_nats::ConnectOptions::with_user_and_password("ops".into(), "pw2".into())).await;
    let mut all = ops.subscribe(">").await.unwrap();
    ops.flush().await.unwrap();
    // A denied publish is dropped (and still acknowledged, as nats-server does); an allowed
    // one goes through.
    raw.send(&publish("other/x", 1, 1, b"no")).await;
    raw.expect(&[0x40, 0x02, 0x00, 0x01]).await;
    raw.send(&publish("telemetry/x", 1, 2, b"yes")).await;
    raw.expect(&[0x40, 0x02, 0x00, 0x02]).await;
    let m = next_msg(&mut all).await;
    assert_eq!((m.subject.as_str(), &m.payload[..]), ("telemetry.x", &b"yes"[..]));
    // What the device may not subscribe to does not reach it; what it may does.
    ops.publish("secrets.key", "k".into()).await.unwrap();
    ops.publish("cmd.go", "go".into()).await.unwrap();
    ops.flush().await.unwrap();
    assert_eq!(raw.packet().await, [&[0x30, 0x0a, 0x00, 0x06][..], b"cmd/go", b"go"].concat());
}

#[tokio::test]
async fn an_mqtt_listener_needs_a_server_name_and_jetstream() {
    let dir = tempfile::tempdir().unwrap();
    let no_name = Options { server_name: String::new(), ..mqtt_options(dir.path()) };
    let err = courier::Server::bind(no_name).await.err().expect("refused");
    assert_eq!(err.to_string(), "mqtt requires server name to be explicitly set");
    let no_js = Options { jetstream: None, ..mqtt_options(dir.path()) };
    let err = courier::Server::bind(no_js).await.err().expect("refused");
    assert_eq!(err.to_string(), "mqtt requires JetStream to be enabled if running in standalone mode");
}

#[tokio::test]
async fn devices_connect_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (tls, connector) = common::self_signed_tls(certs.path());
    let s = start_with(|o| o.mqtt.as_mut().unwrap().tls = Some(tls)).await;
    let tcp = TcpStream::connect(s.mqtt).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = timeout(TIMEOUT, connector.connect(name, tcp)).await.unwrap().expect("TLS handshake");
    tls.write_all(&[connect("secure"), subscribe(1, &[("s/#", 0)]), vec![0xc0, 0x00]].concat()).await.unwrap();
    let want = [&CONNACK_OK[..], &[0x90, 0x03, 0x00, 0x01, 0x00], &[0xd0, 0x00]].concat();
    let mut got = vec![0u8; want.len()];
    timeout(TIMEOUT, tls.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, want);
}
