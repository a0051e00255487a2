//! PUBLISH, in both directions.

use super::header::{packet_id, put_bytes, put_fixed, string, DecodeError, PacketType};

/// A PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    /// A redelivery.
    pub dup: bool,
    /// 0, 1 or 2 (2 is for the session to refuse, as nats-server 2.9.10 does).
    pub qos: u8,
    /// Keep it as the topic's retained message.
    pub retain: bool,
    /// The topic name (no wildcards allowed; the session checks).
    pub topic: &'a str,
    /// For QoS 1 and 2.
    pub packet_id: Option<u16>,
    /// The application message.
    pub payload: &'a [u8],
}

/// Decodes a PUBLISH body with the fixed header's `flags`.
pub fn decode(flags: u8, body: &[u8]) -> Result<Publish<'_>, DecodeError> {
    let qos = (flags >> 1) & 0x03;
    if qos == 3 {
        return Err(DecodeError::QoS3);
    }
    let mut at = 0;
    let topic = string(body, &mut at)?;
    let id = if qos > 0 {
        let id = packet_id(&body[at..])?;
        at += 2;
        Some(id)
    } else {
        None
    };
    Ok(Publish { dup: flags & 0x08 != 0, qos, retain: flags & 0x01 != 0, topic, packet_id: id, payload: &body[at..] })
}

/// Appends a PUBLISH to a client.
pub fn encode(out: &mut Vec<u8>, p: &Publish<'_>) {
    let qos = p.qos.min(2);
    let id_len = if qos > 0 { 2 } else { 0 };
    let flags = (u8::from(p.dup) << 3) | (qos << 1) | u8::from(p.retain);
    put_fixed(out, PacketType::Publish, flags, 2 + p.topic.len() + id_len + p.payload.len());
    put_bytes(out, p.topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&p.packet_id.unwrap_or(1).to_be_bytes());
    }
    out.extend_from_slice(p.payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivery_nats_server_sends() {
        // Captured from nats-server: a QoS 1 delivery, packet id 1, on a/b/c.
        let p = Publish { dup: false, qos: 1, retain: false, topic: "a/b/c", packet_id: Some(1), payload: b"r1" };
        let mut out = Vec::new();
        encode(&mut out, &p);
        assert_eq!(out, [&[0x32, 0x0b, 0x00, 0x05][..], b"a/b/c", &[0x00, 0x01], b"r1"].concat());
        assert_eq!(decode(0x02, &out[2..]).unwrap(), p);
    }

    #[test]
    fn qos_0_has_no_packet_id_and_qos_3_is_refused() {
        let body = [&[0x00, 0x01][..], b"t", b"payload"].concat();
        let p = decode(0x01, &body).unwrap();
        assert_eq!((p.qos, p.retain, p.packet_id, p.payload), (0, true, None, &b"payload"[..]));
        assert_eq!(decode(0x06, &body), Err(DecodeError::QoS3));
        assert_eq!(decode(0x02, &[0x00, 0x01, b't', 0x00, 0x00]), Err(DecodeError::ZeroPacketId));
    }
}
