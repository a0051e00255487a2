//! Encoders for what the server sends, writing straight into an outbound buffer.

use bytes::{BufMut, BytesMut};

/// `PONG\r\n`.
pub const PONG: &[u8] = b"PONG\r\n";
/// `PING\r\n`.
pub const PING: &[u8] = b"PING\r\n";
/// `+OK\r\n`, the verbose-mode acknowledgement.
pub const OK: &[u8] = b"+OK\r\n";
/// The header block of a no-responders status message, as nats-server 2.9 sends it.
pub const NO_RESPONDERS_HEADER: &[u8] = b"NATS/1.0 503\r\n\r\n";

/// Appends `-ERR '<text>'\r\n`.
pub fn err(out: &mut BytesMut, text: &str) {
    out.reserve(text.len() + 9);
    out.put_slice(b"-ERR '");
    out.put_slice(text.as_bytes());
    out.put_slice(b"'\r\n");
}

/// One message to deliver, as the publisher sent it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The subject it was published to.
    pub subject: &'a [u8],
    /// Reply subject, if any.
    pub reply: Option<&'a [u8]>,
    /// Bytes of header block at the start of `payload` (0: none).
    pub header_len: usize,
    /// Header block and body.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// Bytes this message takes in a consumer's buffer, an upper bound used for reserving.
    #[inline]
    pub fn encoded_len_hint(&self, sid: &[u8]) -> usize {
        // "HMSG " + subject + sid + reply + two sizes + spaces + CRLFs.
        self.subject.len() + sid.len() + self.reply.map_or(0, <[u8]>::len) + self.payload.len() + 48
    }
}

/// Appends the message as `MSG` or, when the consumer understands headers and the message has
/// them, `HMSG`. A consumer without header support gets the body only.
#[inline]
pub fn msg(out: &mut BytesMut, m: &Message<'_>, sid: &[u8], with_headers: bool) {
    out.reserve(m.encoded_len_hint(sid));
    let hdr = with_headers && m.header_len > 0;
    let body = if hdr || m.header_len == 0 { m.payload } else { &m.payload[m.header_len..] };
    out.put_slice(if hdr { b"HMSG " } else { b"MSG " });
    out.put_slice(m.subject);
    out.put_u8(b' ');
    out.put_slice(sid);
    out.put_u8(b' ');
    if let Some(reply) = m.reply {
        out.put_slice(reply);
        out.put_u8(b' ');
    }
    let mut num = itoa::Buffer::new();
    if hdr {
        out.put_slice(num.format(m.header_len).as_bytes());
        out.put_u8(b' ');
    }
    out.put_slice(num.format(body.len()).as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_msg_and_hmsg() {
        let mut out = BytesMut::new();
        let m = Message { subject: b"a.b", reply: Some(b"r"), header_len: 0, payload: b"hi" };
        msg(&mut out, &m, b"1", true);
        assert_eq!(&out[..], b"MSG a.b 1 r 2\r\nhi\r\n");
        out.clear();
        let m = Message { subject: b"a", reply: None, header_len: 12, payload: b"NATS/1.0\r\n\r\nhi" };
        msg(&mut out, &m, b"9", true);
        assert_eq!(&out[..], b"HMSG a 9 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
        out.clear();
        msg(&mut out, &m, b"9", false);
        assert_eq!(&out[..], b"MSG a 9 2\r\nhi\r\n");
        out.clear();
        err(&mut out, "Invalid Subject");
        assert_eq!(&out[..], b"-ERR 'Invalid Subject'\r\n");
    }
}
