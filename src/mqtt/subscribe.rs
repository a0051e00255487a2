//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.

use super::header::{packet_id, put_fixed, string, DecodeError, PacketType};

/// A SUBSCRIBE: filters with the QoS asked for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// Its packet id, echoed in SUBACK.
    pub packet_id: u16,
    /// Topic filters and requested QoS.
    pub filters: Vec<(&'a str, u8)>,
}

/// An UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    /// Its packet id, echoed in UNSUBACK.
    pub packet_id: u16,
    /// Topic filters.
    pub filters: Vec<&'a str>,
}

/// The SUBACK code of a refused filter.
pub const FAILURE: u8 = 0x80;

/// Decodes a SUBSCRIBE body.
pub fn decode_subscribe(body: &[u8]) -> Result<Subscribe<'_>, DecodeError> {
    let id = packet_id(body)?;
    let mut at = 2;
    let mut filters = Vec::new();
    while at < body.len() {
        let filter = string(body, &mut at)?;
        let qos = *body.get(at).ok_or(DecodeError::Malformed("requested QoS"))?;
        if qos > 2 {
            return Err(DecodeError::Malformed("subscribe QoS value must be 0, 1 or 2"));
        }
        at += 1;
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(DecodeError::NoFilters);
    }
    Ok(Subscribe { packet_id: id, filters })
}

/// Decodes an UNSUBSCRIBE body.
pub fn decode_unsubscribe(body: &[u8]) -> Result<Unsubscribe<'_>, DecodeError> {
    let id = packet_id(body)?;
    let mut at = 2;
    let mut filters = Vec::new();
    while at < body.len() {
        filters.push(string(body, &mut at)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoFilters);
    }
    Ok(Unsubscribe { packet_id: id, filters })
}

/// Appends SUBACK with one code per filter (the QoS granted, or [`FAILURE`]).
pub fn encode_suback(out: &mut Vec<u8>, packet_id: u16, codes: &[u8]) {
    put_fixed(out, PacketType::SubAck, 0, 2 + codes.len());
    out.extend_from_slice(&packet_id.to_be_bytes());
    out.extend_from_slice(codes);
}

/// Appends UNSUBACK.
pub fn encode_unsuback(out: &mut Vec<u8>, packet_id: u16) {
    put_fixed(out, PacketType::UnsubAck, 0, 2);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_and_the_suback_nats_server_sends() {
        let mut body = vec![0x00, 0x06];
        for (f, q) in [("a/+/c", 2u8), ("x/#", 0), ("bad.topic", 0), ("$MQTT.sub.x", 1)] {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f.as_bytes());
            body.push(q);
        }
        let s = decode_subscribe(&body).unwrap();
        assert_eq!(s.packet_id, 6);
        assert_eq!(s.filters[0], ("a/+/c", 2));
        // Captured from nats-server 2.9.10 for those four filters.
        let mut out = Vec::new();
        encode_suback(&mut out, 6, &[1, 0, FAILURE, FAILURE]);
        assert_eq!(out, [0x90, 0x06, 0x00, 0x06, 0x01, 0x00, 0x80, 0x80]);
    }

    #[test]
    fn empty_and_bad_subscribes_are_refused() {
        assert_eq!(decode_subscribe(&[0x00, 0x01]), Err(DecodeError::NoFilters));
        for qos in [3, 4] {
            assert_eq!(
                decode_subscribe(&[0x00, 0x01, 0x00, 0x01, b'a', qos]),
                Err(DecodeError::Malformed("subscribe QoS value must be 0, 1 or 2"))
            );
        }
        assert_eq!(decode_unsubscribe(&[0x00, 0x02, 0x00, 0x01, b'a']).unwrap().filters, vec!["a"]);
        let mut out = Vec::new();
        encode_unsuback(&mut out, 2);
        assert_eq!(out, [0xb0, 0x02, 0x00, 0x02]);
    }
}
