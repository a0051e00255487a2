//! MQTT 3.1.1, the protocol most IoT devices speak: the packet codec, one module per packet
//! family, and the mapping between MQTT topics and NATS subjects as nats-server 2.9.10 maps
//! them.
//!
//! The codec is Courier's own: the broker-side codecs published as crates are either stale
//! (`mqttbytes`, whose code moved into a client) or part of a client (`rumqttc`), and a 3.1.1
//! broker needs only fourteen small packet types. Decoding borrows from the read buffer and
//! says when a packet is incomplete; every refusal is a [`DecodeError`] naming nats-server's
//! reason, so that the connection can be closed (or, for a wrong protocol level, answered with
//! CONNACK return code 1) as nats-server does.

pub mod connect;
pub mod deliver;
pub mod header;
pub mod publish;
pub mod subscribe;
pub mod topic;

pub use connect::{Connect, Will};
pub use deliver::{Inflight, MqttTarget};
pub use header::{DecodeError, PacketType};
pub use publish::Publish;
pub use subscribe::{Subscribe, Unsubscribe};

/// One packet from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// CONNECT.
    Connect(Connect<'a>),
    /// PUBLISH.
    Publish(Publish<'a>),
    /// PUBACK with its packet id.
    PubAck(u16),
    /// PUBREC, PUBREL or PUBCOMP: QoS 2, which nats-server 2.9.10 does not support.
    QoS2(PacketType, u16),
    /// SUBSCRIBE.
    Subscribe(Subscribe<'a>),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe<'a>),
    /// PINGREQ.
    PingReq,
    /// DISCONNECT.
    Disconnect,
}

/// Decodes the packet at the start of `buf`: `Ok(None)` when it is not complete yet, else the
/// packet and the bytes it took. Packets longer than `max_packet` are refused.
pub fn decode(buf: &[u8], max_packet: usize) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    let Some((kind, flags, len, at)) = header::fixed(buf)? else { return Ok(None) };
    if len > max_packet {
        return Err(DecodeError::TooLarge(len));
    }
    if buf.len() < at + len {
        return Ok(None);
    }
    let body = &buf[at..at + len];
    let packet = match kind {
        PacketType::Connect => {
            header::expect_flags(kind, flags, 0)?;
            Packet::Connect(connect::decode(body)?)
        }
        PacketType::Publish => Packet::Publish(publish::decode(flags, body)?),
        PacketType::PubAck => {
            header::expect_flags(kind, flags, 0)?;
            Packet::PubAck(header::packet_id(body)?)
        }
        PacketType::PubRec | PacketType::PubRel | PacketType::PubComp => Packet::QoS2(kind, header::packet_id(body)?),
        PacketType::Subscribe => {
            header::expect_flags(kind, flags, 2)?;
            Packet::Subscribe(subscribe::decode_subscribe(body)?)
        }
        PacketType::Unsubscribe => {
            header::expect_flags(kind, flags, 2)?;
            Packet::Unsubscribe(subscribe::decode_unsubscribe(body)?)
        }
        PacketType::PingReq => {
            header::expect_flags(kind, flags, 0)?;
            Packet::PingReq
        }
        PacketType::Disconnect => {
            header::expect_flags(kind, flags, 0)?;
            Packet::Disconnect
        }
        other => return Err(DecodeError::Unsupported(other as u8)),
    };
    Ok(Some((packet, at + len)))
}

/// PINGRESP.
pub const PINGRESP: [u8; 2] = [0xd0, 0x00];

/// Appends PUBACK for `packet_id`.
pub fn encode_puback(out: &mut Vec<u8>, packet_id: u16) {
    out.extend_from_slice(&[0x40, 0x02]);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_in_a_stream_decode_one_by_one() {
        let mut stream = vec![0xc0, 0x00]; // PINGREQ
        stream.extend_from_slice(&[0x40, 0x02, 0x00, 0x07]); // PUBACK 7
        stream.extend_from_slice(&[0xe0, 0x00]); // DISCONNECT
        let (p, n) = decode(&stream, 1024).unwrap().unwrap();
        assert_eq!((p, n), (Packet::PingReq, 2));
        let (p, n2) = decode(&stream[n..], 1024).unwrap().unwrap();
        assert_eq!((p, n2), (Packet::PubAck(7), 4));
        assert_eq!(decode(&stream[n + n2..], 1024).unwrap().unwrap().0, Packet::Disconnect);
        assert_eq!(decode(&stream[..3], 1024).unwrap(), Some((Packet::PingReq, 2)));
        assert_eq!(decode(&[0x40, 0x02, 0x00], 1024).unwrap(), None, "incomplete");
    }

    #[test]
    fn refusals() {
        assert_eq!(decode(&[0xc1, 0x00], 1024), Err(DecodeError::InvalidFlags(PacketType::PingReq)));
        assert_eq!(decode(&[0x20, 0x02, 0, 0], 1024), Err(DecodeError::Unsupported(2)), "CONNACK from a client");
        assert_eq!(decode(&[0x50, 0x02, 0, 1], 1024).unwrap().unwrap().0, Packet::QoS2(PacketType::PubRec, 1));
        assert_eq!(
            decode(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 1 << 30),
            Err(DecodeError::Malformed("remaining length"))
        );
        assert_eq!(decode(&[0x30, 0x80, 0x01], 10), Err(DecodeError::TooLarge(128)));
    }

    #[test]
    fn server_packets_encode_as_nats_server_sends_them() {
        let mut out = Vec::new();
        encode_puback(&mut out, 7);
        assert_eq!(out, [0x40, 0x02, 0x00, 0x07]);
        assert_eq!(PINGRESP, [0xd0, 0x00]);
    }
}
