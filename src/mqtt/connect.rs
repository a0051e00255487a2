//! CONNECT and CONNACK.

use super::header::{bytes, put_fixed, string, DecodeError, PacketType};

/// A client's CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    /// Start with no session state (and delete it at the end).
    pub clean_session: bool,
    /// Seconds between packets the client promises; 0 means none.
    pub keep_alive: u16,
    /// The client identifier; may be empty with a clean session.
    pub client_id: &'a str,
    /// The message to publish if the connection ends without DISCONNECT.
    pub will: Option<Will<'a>>,
    /// The user name.
    pub username: Option<&'a str>,
    /// The password.
    pub password: Option<&'a [u8]>,
}

/// A will message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its payload.
    pub message: &'a [u8],
    /// Its QoS.
    pub qos: u8,
    /// Whether it is retained.
    pub retain: bool,
}

/// Decodes a CONNECT body, with nats-server's refusals.
pub fn decode(body: &[u8]) -> Result<Connect<'_>, DecodeError> {
    let mut at = 0;
    let name = bytes(body, &mut at)?;
    if name != b"MQTT" {
        return Err(DecodeError::ProtocolName);
    }
    let level = *body.get(at).ok_or(DecodeError::Malformed("protocol level"))?;
    if level != 4 {
        return Err(DecodeError::ProtocolLevel(level));
    }
    let flags = *body.get(at + 1).ok_or(DecodeError::Malformed("connect flags"))?;
    let keep_alive = match body.get(at + 2..at + 4) {
        Some(k) => u16::from_be_bytes([k[0], k[1]]),
        None => return Err(DecodeError::Malformed("keep alive")),
    };
    at += 4;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ReservedFlag);
    }
    let clean_session = flags & 0x02 != 0;
    let has_will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_user = flags & 0x80 != 0;
    if !has_will && (will_qos != 0 || will_retain) {
        return Err(DecodeError::WillFlags);
    }
    if will_qos == 3 {
        return Err(DecodeError::WillQoS);
    }
    if has_password && !has_user {
        return Err(DecodeError::PasswordWithoutUser);
    }
    let client_id = string(body, &mut at)?;
    let will = if has_will {
        let topic = string(body, &mut at)?;
        let message = bytes(body, &mut at)?;
        Some(Will { topic, message, qos: will_qos, retain: will_retain })
    } else {
        None
    };
    let username = if has_user { Some(string(body, &mut at)?) } else { None };
    let password = if has_password { Some(bytes(body, &mut at)?) } else { None };
    Ok(Connect { clean_session, keep_alive, client_id, will, username, password })
}

/// CONNACK return codes.
pub mod code {
    /// Connection accepted.
    pub const ACCEPTED: u8 = 0;
    /// Unacceptable protocol version.
    pub const BAD_PROTOCOL: u8 = 1;
    /// Identifier rejected.
    pub const BAD_CLIENT_ID: u8 = 2;
    /// Server unavailable.
    pub const UNAVAILABLE: u8 = 3;
    /// Bad user name or password.
    pub const BAD_CREDENTIALS: u8 = 4;
    /// Not authorized.
    pub const NOT_AUTHORIZED: u8 = 5;
}

/// Appends CONNACK.
pub fn encode_connack(out: &mut Vec<u8>, session_present: bool, code: u8) {
    put_fixed(out, PacketType::ConnAck, 0, 2);
    out.push(u8::from(session_present && code == code::ACCEPTED));
    out.push(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(flags: u8, payload: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60];
        for p in payload {
            body.extend_from_slice(&(p.len() as u16).to_be_bytes());
            body.extend_from_slice(p);
        }
        body
    }

    #[test]
    fn a_full_connect_decodes() {
        let body = connect(0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02, &[b"dev-1", b"will/t", b"gone", b"user", b"pw"]);
        let c = decode(&body).unwrap();
        assert!(c.clean_session);
        assert_eq!(c.keep_alive, 60);
        assert_eq!(c.client_id, "dev-1");
        assert_eq!(c.will, Some(Will { topic: "will/t", message: b"gone", qos: 1, retain: true }));
        assert_eq!((c.username, c.password), (Some("user"), Some(&b"pw"[..])));
    }

    #[test]
    fn refusals_as_nats_server() {
        let mut v3 = connect(0x02, &[b"x"]);
        v3[6] = 3;
        assert_eq!(decode(&v3), Err(DecodeError::ProtocolLevel(3)));
        let mqisdp = [&[0u8, 6][..], b"MQIsdp", &[3, 2, 0, 60]].concat();
        assert_eq!(decode(&mqisdp), Err(DecodeError::ProtocolName));
        assert_eq!(decode(&connect(0x03, &[b"x"])), Err(DecodeError::ReservedFlag));
        assert_eq!(decode(&connect(0x22, &[b"x"])), Err(DecodeError::WillFlags));
        assert_eq!(decode(&connect(0x42, &[b"x", b"pw"])), Err(DecodeError::PasswordWithoutUser));
        assert_eq!(decode(&connect(0x02, &[])), Err(DecodeError::Malformed("field length")));
    }

    #[test]
    fn connack_bytes() {
        let mut out = Vec::new();
        encode_connack(&mut out, false, code::ACCEPTED);
        assert_eq!(out, [0x20, 0x02, 0x00, 0x00]);
        out.clear();
        encode_connack(&mut out, true, code::BAD_PROTOCOL);
        assert_eq!(out, [0x20, 0x02, 0x00, 0x01], "no session with a refusal");
    }
}
