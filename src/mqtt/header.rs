//! The fixed header every packet starts with (type, flags, remaining length), the strings and
//! packet ids inside packets, and why a packet is refused.

use bytes::BufMut;

/// The packet types of MQTT 3.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketType {
    /// 1: a client connects.
    Connect = 1,
    /// 2: the server's answer to CONNECT.
    ConnAck = 2,
    /// 3: a message.
    Publish = 3,
    /// 4: QoS 1 acknowledgement.
    PubAck = 4,
    /// 5: QoS 2, first answer.
    PubRec = 5,
    /// 6: QoS 2, release.
    PubRel = 6,
    /// 7: QoS 2, completion.
    PubComp = 7,
    /// 8: subscribe.
    Subscribe = 8,
    /// 9: the server's answer to SUBSCRIBE.
    SubAck = 9,
    /// 10: unsubscribe.
    Unsubscribe = 10,
    /// 11: the server's answer to UNSUBSCRIBE.
    UnsubAck = 11,
    /// 12: ping.
    PingReq = 12,
    /// 13: the answer to a ping.
    PingResp = 13,
    /// 14: a clean goodbye.
    Disconnect = 14,
}

impl PacketType {
    fn of(code: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match code {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            _ => return None,
        })
    }
}

/// Why a client's packet is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not make the packet they claim to be.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A packet type a client may not send, or an unknown one.
    #[error("protocol {0} not supported")]
    Unsupported(u8),
    /// The fixed header's flags are wrong for the type.
    #[error("invalid flags for packet {0:?}")]
    InvalidFlags(PacketType),
    /// Longer than the server takes.
    #[error("packet of {0} bytes is too large")]
    TooLarge(usize),
    /// A string that is not UTF-8.
    #[error("invalid UTF-8 string")]
    Utf8,
    /// CONNECT for another protocol (MQTT 3.1 says `MQIsdp`): closed without CONNACK.
    #[error("protocol name not supported")]
    ProtocolName,
    /// CONNECT with a protocol level other than 4: answered with CONNACK return code 1.
    #[error("unacceptable protocol version {0}")]
    ProtocolLevel(u8),
    /// CONNECT's reserved flag is set.
    #[error("connect reserved flag must be set to 0")]
    ReservedFlag,
    /// Will QoS or retain set without a will.
    #[error("if Will flag is set to 0, Will QoS and Will Retain must be 0")]
    WillFlags,
    /// A will QoS of 3.
    #[error("invalid Will QoS")]
    WillQoS,
    /// A password without a user name.
    #[error("password flag set but username flag is not")]
    PasswordWithoutUser,
    /// A PUBLISH with QoS 3.
    #[error("invalid QoS 3")]
    QoS3,
    /// A SUBSCRIBE or UNSUBSCRIBE without filters.
    #[error("subscribe protocol must contain at least 1 topic filter")]
    NoFilters,
    /// A packet id of 0 where one is needed.
    #[error("packet identifier cannot be 0")]
    ZeroPacketId,
}

/// The fixed header at the start of `buf`: type, flags, remaining length and header length;
/// `None` when more bytes are needed.
pub fn fixed(buf: &[u8]) -> Result<Option<(PacketType, u8, usize, usize)>, DecodeError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let kind = PacketType::of(first >> 4).ok_or(DecodeError::Unsupported(first >> 4))?;
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else { return Ok(None) };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((kind, first & 0x0f, len, 2 + i)));
        }
    }
    Err(DecodeError::Malformed("remaining length"))
}

/// Refuses a packet whose flags are not `want`.
pub fn expect_flags(kind: PacketType, flags: u8, want: u8) -> Result<(), DecodeError> {
    if flags == want {
        Ok(())
    } else {
        Err(DecodeError::InvalidFlags(kind))
    }
}

/// A packet id: two bytes, not zero.
pub fn packet_id(body: &[u8]) -> Result<u16, DecodeError> {
    let id = match body {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => return Err(DecodeError::Malformed("packet identifier")),
    };
    if id == 0 {
        return Err(DecodeError::ZeroPacketId);
    }
    Ok(id)
}

/// Reads the bytes of a length-prefixed field at `*at`, moving past it.
pub fn bytes<'a>(body: &'a [u8], at: &mut usize) -> Result<&'a [u8], DecodeError> {
    let Some(len) = body.get(*at..*at + 2) else { return Err(DecodeError::Malformed("field length")) };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let start = *at + 2;
    let field = body.get(start..start + len).ok_or(DecodeError::Malformed("field"))?;
    *at = start + len;
    Ok(field)
}

/// Reads a UTF-8 string field at `*at`, moving past it.
pub fn string<'a>(body: &'a [u8], at: &mut usize) -> Result<&'a str, DecodeError> {
    let raw = bytes(body, at)?;
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::Utf8)?;
    if text.contains('\0') {
        return Err(DecodeError::Utf8);
    }
    Ok(text)
}

/// Appends a fixed header for `kind` with `flags` and `len` bytes to follow.
pub fn put_fixed(out: &mut impl BufMut, kind: PacketType, flags: u8, mut len: usize) {
    out.put_u8(((kind as u8) << 4) | (flags & 0x0f));
    loop {
        let mut b = (len & 0x7f) as u8;
        len >>= 7;
        if len > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if len == 0 {
            break;
        }
    }
}

/// Appends a length-prefixed field.
pub fn put_bytes(out: &mut impl BufMut, field: &[u8]) {
    let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
    out.put_u16(len);
    out.put_slice(&field[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455] {
            let mut out = Vec::new();
            put_fixed(&mut out, PacketType::Publish, 0, len);
            let (kind, flags, got, at) = fixed(&out).unwrap().unwrap();
            assert_eq!((kind, flags, got, at), (PacketType::Publish, 0, len, out.len()));
        }
    }
}
