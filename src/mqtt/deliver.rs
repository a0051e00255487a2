//! What an MQTT subscription delivers to: the device's connection, the QoS it was granted,
//! and the packet ids of the QoS 1 messages in flight to the device.
//!
//! A subscription delivers in one of two ways, as in nats-server. The plain way takes what is
//! published on the subject (by NATS clients, or by devices at QoS 0) and sends it at QoS 0; a
//! QoS 1 subscription leaves a device's QoS 1 publishes to the other way. That way takes the
//! deliveries of the subscription's durable consumer on `$MQTT_msgs` (subject
//! `$MQTT.msgs.<subject>`, reply the consumer's ack subject) and sends them at QoS 1 with a
//! packet id; the device's PUBACK for that id acknowledges the stream message.

use std::sync::Arc;

use bytes::BufMut;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::header::{put_fixed, PacketType};
use super::topic::{topic_len, write_topic};
use crate::connection::{Connection, Push};
use crate::proto::encode::Message;

/// The subject prefix of QoS 1 messages kept in `$MQTT_msgs`.
pub const STORED_PREFIX: &[u8] = b"$MQTT.msgs.";

/// The header nats-server adds to what a device publishes, with its QoS as the value.
const PUBLISHED_QOS_HEADER: &[u8] = b"Nmqtt-Pub:";

/// One MQTT subscription's delivery target.
pub struct MqttTarget {
    /// The device's connection.
    pub conn: Arc<Connection>,
    /// The QoS the subscription was granted: 0 or 1.
    pub qos: u8,
    /// `Some(consumer number)` for the target of a QoS 1 consumer's deliveries; `None` for a
    /// plain subscription.
    pub consumer: Option<u32>,
    /// The session's QoS 1 messages in flight, shared by its subscriptions.
    pub inflight: Arc<Inflight>,
}

impl MqttTarget {
    /// Queues `msg` for the device as a PUBLISH. `None` when this subscription leaves the
    /// message to another (a device's QoS 1 publish reaching a QoS 1 subscription, which its
    /// consumer delivers), or when it cannot be sent (a topic too long, no packet id free).
    #[inline]
    pub fn push(&self, msg: &Message<'_>) -> Option<Push> {
        let (headers, body) = msg.payload.split_at(msg.header_len.min(msg.payload.len()));
        match self.consumer {
            None => {
                if self.qos > 0 && published_qos(headers) > 0 {
                    return None;
                }
                Some(push_publish(&self.conn, msg.subject, 0, None, false, body))
            }
            Some(consumer) => {
                let subject = msg.subject.strip_prefix(STORED_PREFIX)?;
                let reply = msg.reply?;
                let (delivered, stream_seq) = ack_reply_counts(reply)?;
                let (packet_id, again) = self.inflight.assign(consumer, stream_seq, reply)?;
                Some(push_publish(&self.conn, subject, 1, Some(packet_id), again || delivered > 1, body))
            }
        }
    }
}

/// Queues a PUBLISH of `body` on the topic of `subject`. Retained messages sent to a new
/// subscription go this way too, with `retain` set by the caller through [`push_retained`].
fn push_publish(conn: &Connection, subject: &[u8], qos: u8, packet_id: Option<u16>, dup: bool, body: &[u8]) -> Push {
    write_publish(conn, subject, qos, packet_id, dup, false, body)
}

/// Queues a retained message for a subscription that just started.
pub fn push_retained(conn: &Connection, subject: &[u8], qos: u8, packet_id: Option<u16>, body: &[u8]) -> Push {
    write_publish(conn, subject, qos, packet_id, false, true, body)
}

fn write_publish(
    conn: &Connection,
    subject: &[u8],
    qos: u8,
    packet_id: Option<u16>,
    dup: bool,
    retain: bool,
    body: &[u8],
) -> Push {
    let topic_len = topic_len(subject);
    if topic_len > usize::from(u16::MAX) {
        return Push::Closed;
    }
    let id_len = if qos > 0 { 2 } else { 0 };
    let remaining = 2 + topic_len + id_len + body.len();
    let flags = (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    conn.outbound.push_message(remaining + 5, body.len(), |out| {
        put_fixed(out, PacketType::Publish, flags, remaining);
        out.put_u16(topic_len as u16);
        write_topic(out, subject);
        if let Some(id) = packet_id.filter(|_| qos > 0) {
            out.put_u16(id);
        }
        out.put_slice(body);
    })
}

/// The QoS a device published a message with, from the `Nmqtt-Pub` header; 0 for messages
/// from NATS clients.
pub fn published_qos(headers: &[u8]) -> u8 {
    let Some(at) = memchr::memmem::find(headers, PUBLISHED_QOS_HEADER) else { return 0 };
    headers[at + PUBLISHED_QOS_HEADER.len()..].iter().find(|b| **b != b' ').map_or(0, |b| b.wrapping_sub(b'0').min(2))
}

/// The delivery count and stream sequence in a JetStream ack subject
/// (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`).
fn ack_reply_counts(reply: &[u8]) -> Option<(u64, u64)> {
    let mut tokens = reply.rsplit(|b| *b == b'.');
    let _pending = tokens.next()?;
    let _time = tokens.next()?;
    let _consumer_seq = tokens.next()?;
    let stream_seq = number(tokens.next()?)?;
    let delivered = number(tokens.next()?)?;
    Some((delivered, stream_seq))
}

fn number(token: &[u8]) -> Option<u64> {
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// The QoS 1 messages in flight to one device: packet id ↔ (consumer, stream sequence) and
/// the ack subject its PUBACK answers.
pub struct Inflight {
    table: Mutex<InflightTable>,
}

/// A message in flight: the consumer that delivered it and its stream sequence.
type InflightKey = (u32, u64);

#[derive(Default)]
struct InflightTable {
    by_id: FxHashMap<u16, (InflightKey, Box<[u8]>)>,
    by_message: FxHashMap<InflightKey, u16>,
    last_id: u16,
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight { table: Mutex::new(InflightTable::default()) }
    }
}

impl Inflight {
    /// The packet id for stream message `stream_seq` of `consumer`, and whether it was already
    /// in flight (a redelivery: the DUP flag); `None` when all 65,535 ids are taken.
    pub fn assign(&self, consumer: u32, stream_seq: u64, reply: &[u8]) -> Option<(u16, bool)> {
        let mut t = self.table.lock();
        let key = (consumer, stream_seq);
        if let Some(&id) = t.by_message.get(&key) {
            if let Some(entry) = t.by_id.get_mut(&id) {
                entry.1 = reply.into();
            }
            return Some((id, true));
        }
        if t.by_id.len() >= usize::from(u16::MAX) {
            return None;
        }
        let mut id = t.last_id;
        loop {
            id = id.wrapping_add(1).max(1);
            if !t.by_id.contains_key(&id) {
                break;
            }
        }
        t.last_id = id;
        t.by_id.insert(id, (key, reply.into()));
        t.by_message.insert(key, id);
        Some((id, false))
    }

    /// Takes the message `packet_id` names, once the device acknowledged it: its ack subject.
    pub fn acknowledged(&self, packet_id: u16) -> Option<Box<[u8]>> {
        let mut t = self.table.lock();
        let (key, reply) = t.by_id.remove(&packet_id)?;
        t.by_message.remove(&key);
        Some(reply)
    }

    /// Forgets what `consumer` had in flight (its subscription ended).
    pub fn forget_consumer(&self, consumer: u32) {
        let mut t = self.table.lock();
        t.by_id.retain(|_, (key, _)| key.0 != consumer);
        t.by_message.retain(|key, _| key.0 != consumer);
    }

    /// How many messages are in flight.
    pub fn len(&self) -> usize {
        self.table.lock().by_id.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Kind;

    /// Takes what the connection has queued.
    fn queued(conn: &Connection) -> Vec<u8> {
        let mut out = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(conn.outbound.flush_to(&mut out));
        out
    }

    fn target(qos: u8, consumer: Option<u32>) -> MqttTarget {
        MqttTarget {
            conn: Arc::new(Connection::new(1, Kind::Client, 1 << 20)),
            qos,
            consumer,
            inflight: Arc::new(Inflight::default()),
        }
    }

    #[test]
    fn a_nats_publish_reaches_a_device_at_qos_0_on_its_topic() {
        let t = target(1, None);
        let m = Message { subject: b"/.lead.a./.b", reply: None, header_len: 0, payload: b"hi" };
        assert!(matches!(t.push(&m), Some(Push::Queued)));
        let topic = b"/lead/a//b";
        let mut want = vec![0x30, (2 + topic.len() + 2) as u8, 0, topic.len() as u8];
        want.extend_from_slice(topic);
        want.extend_from_slice(b"hi");
        assert_eq!(queued(&t.conn), want);
        assert_eq!(super::super::topic::subject_to_topic(b"/.lead.a./.b"), topic.to_vec());
    }

    #[test]
    fn a_device_qos_1_publish_is_left_to_the_consumer_of_a_qos_1_subscription() {
        let hdr = b"NATS/1.0\r\nNmqtt-Pub:1\r\n\r\n";
        let payload = [&hdr[..], b"x"].concat();
        let m = Message { subject: b"a.b", reply: None, header_len: hdr.len(), payload: &payload };
        assert!(target(1, None).push(&m).is_none());
        let t = target(0, None);
        assert!(t.push(&m).is_some(), "a QoS 0 subscription gets it at QoS 0");
        assert_eq!(queued(&t.conn), [&[0x30, 6, 0, 3][..], b"a/b", b"x"].concat());
    }

    #[test]
    fn consumer_deliveries_carry_packet_ids_and_dup_on_redelivery() {
        let t = target(1, Some(7));
        let m = |reply: &'static [u8]| Message {
            subject: b"$MQTT.msgs.a.b",
            reply: Some(reply),
            header_len: 0,
            payload: b"v",
        };
        assert!(t.push(&m(b"$JS.ACK.$MQTT_msgs.c1.1.42.1.1700000000.0")).is_some());
        assert_eq!(queued(&t.conn), [&[0x32, 8, 0, 3][..], b"a/b", &[0, 1], b"v"].concat());
        // Redelivered while still in flight: the same id, with DUP.
        assert!(t.push(&m(b"$JS.ACK.$MQTT_msgs.c1.2.42.2.1700000001.0")).is_some());
        assert_eq!(queued(&t.conn), [&[0x3a, 8, 0, 3][..], b"a/b", &[0, 1], b"v"].concat());
        assert_eq!(t.inflight.acknowledged(1).as_deref(), Some(&b"$JS.ACK.$MQTT_msgs.c1.2.42.2.1700000001.0"[..]));
        assert!(t.inflight.acknowledged(1).is_none(), "an id is answered once");
        assert!(t.inflight.is_empty());
    }

    #[test]
    fn published_qos_reads_the_header() {
        assert_eq!(published_qos(b"NATS/1.0\r\nNmqtt-Pub:1\r\n\r\n"), 1);
        assert_eq!(published_qos(b"NATS/1.0\r\nNmqtt-Pub: 0\r\n\r\n"), 0);
        assert_eq!(published_qos(b"NATS/1.0\r\nOther:1\r\n\r\n"), 0);
        assert_eq!(published_qos(b""), 0);
    }
}
