//! The owned form of a message, for consumers that keep it past the delivery.

use bytes::Bytes;

use super::Message;

/// A message that owns its bytes, for what outlives the publisher's read buffer: a stored
/// record, a message queued for a forwarder, an internal publish with no read buffer at all.
/// Cloning it shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedMessage {
    /// The subject it was published to.
    pub subject: Bytes,
    /// Reply subject, if any.
    pub reply: Option<Bytes>,
    /// Bytes of header block at the start of `payload` (0: none).
    pub header_len: usize,
    /// Header block and body.
    pub payload: Bytes,
}

impl OwnedMessage {
    /// Copies a borrowed message.
    pub fn copy_of(m: &Message<'_>) -> Self {
        OwnedMessage {
            subject: Bytes::copy_from_slice(m.subject),
            reply: m.reply.map(Bytes::copy_from_slice),
            header_len: m.header_len,
            payload: Bytes::copy_from_slice(m.payload),
        }
    }

    /// A message with no headers.
    pub fn new(subject: impl Into<Bytes>, reply: Option<Bytes>, payload: impl Into<Bytes>) -> Self {
        OwnedMessage { subject: subject.into(), reply, header_len: 0, payload: payload.into() }
    }

    /// The borrowed form, for publishing or encoding.
    pub fn as_message(&self) -> Message<'_> {
        Message {
            subject: &self.subject,
            reply: self.reply.as_deref(),
            header_len: self.header_len,
            payload: &self.payload,
        }
    }

    /// The header block, when there is one.
    pub fn headers(&self) -> Option<&[u8]> {
        (self.header_len > 0).then(|| &self.payload[..self.header_len])
    }

    /// The body, without headers.
    pub fn body(&self) -> &[u8] {
        &self.payload[self.header_len..]
    }
}
