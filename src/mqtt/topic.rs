//! MQTT topics and NATS subjects, mapped as nats-server 2.9.10 maps them: `/` and `.`, `+` and
//! `*`, `#` and `>`; a leading slash becomes `/.`, an empty level `/.` after its separator,
//! and a trailing slash `./`, so that every topic has a subject and back. Topics with `.` or a
//! space have none (2.9.10 refuses them).

/// Why a topic has no subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty.
    #[error("topic cannot be empty")]
    Empty,
    /// A `.` or a space, which 2.9.10 does not map.
    #[error("topic {0:?} has a '.' or a space")]
    Unmappable(String),
    /// Wildcards in a topic name (a PUBLISH's).
    #[error("wildcards not allowed in publish's topic: {0:?}")]
    Wildcard(String),
    /// A filter that makes no valid subscription (a `#` not last, `$MQTT.sub.` reserved).
    #[error("invalid topic filter {0:?}")]
    InvalidFilter(String),
}

/// The subject of a PUBLISH topic.
pub fn topic_to_subject(topic: &str) -> Result<String, TopicError> {
    let mut out = String::with_capacity(topic.len() + 4);
    topic_to_subject_in(topic, &mut out)?;
    Ok(out)
}

/// The subject of a PUBLISH topic, written over `out` (a buffer the caller reuses, so that a
/// publish allocates nothing).
pub fn topic_to_subject_in(topic: &str, out: &mut String) -> Result<(), TopicError> {
    if topic.contains(['+', '#']) {
        return Err(TopicError::Wildcard(topic.to_string()));
    }
    convert_in(topic, out)
}

/// The subscription subject of a SUBSCRIBE filter; the caller also subscribes to the parent of
/// a filter ending in `/#` (`x/#` matches `x` too).
pub fn filter_to_subject(filter: &str) -> Result<String, TopicError> {
    let subject = convert(filter)?;
    if subject.starts_with("$MQTT.sub.") || !crate::subject::is_valid_subscription(subject.as_bytes()) {
        return Err(TopicError::InvalidFilter(filter.to_string()));
    }
    Ok(subject)
}

fn convert(topic: &str) -> Result<String, TopicError> {
    let mut out = String::with_capacity(topic.len() + 4);
    convert_in(topic, &mut out)?;
    Ok(out)
}

fn convert_in(topic: &str, out: &mut String) -> Result<(), TopicError> {
    out.clear();
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.contains(['.', ' ']) {
        return Err(TopicError::Unmappable(topic.to_string()));
    }
    let mut previous = None;
    for (i, c) in topic.char_indices() {
        match c {
            // A separator that opens an empty level (at the start, or right after another).
            '/' if i == 0 || previous == Some('/') => out.push_str("/."),
            '/' => out.push('.'),
            '+' => out.push('*'),
            '#' => out.push('>'),
            c => out.push(c),
        }
        previous = Some(c);
    }
    if previous == Some('/') {
        out.push('/');
    }
    Ok(())
}

/// The topic an MQTT subscriber sees for a message on `subject`.
pub fn subject_to_topic(subject: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(topic_len(subject));
    write_topic(&mut out, subject);
    out
}

/// The length of `subject`'s topic.
pub fn topic_len(subject: &[u8]) -> usize {
    subject.len() - memchr::memchr_iter(b'/', subject).count()
}

/// Writes the topic of `subject` into `out` (a delivery's PUBLISH, without a copy first): `.`
/// becomes `/`, and the `/` that marks an empty level or a leading or trailing slash goes.
pub fn write_topic(out: &mut impl bytes::BufMut, subject: &[u8]) {
    let mut rest = subject;
    while let Some(at) = memchr::memchr2(b'.', b'/', rest) {
        out.put_slice(&rest[..at]);
        if rest[at] == b'.' {
            out.put_u8(b'/');
        }
        rest = &rest[at + 1..];
    }
    out.put_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_as_nats_server_maps_them() {
        // Measured on nats-server 2.9.10.
        for (topic, subject) in [("/lead", "/.lead"), ("a//b", "a./.b"), ("trail/", "trail./"), ("x/y", "x.y")] {
            assert_eq!(topic_to_subject(topic).unwrap(), subject, "{topic}");
            assert_eq!(subject_to_topic(subject.as_bytes()), topic.as_bytes(), "{subject}");
        }
        assert_eq!(filter_to_subject("a/+/c").unwrap(), "a.*.c");
        assert_eq!(filter_to_subject("x/#").unwrap(), "x.>");
        assert_eq!(filter_to_subject("a+/b").unwrap(), "a*.b", "accepted, as by nats-server");
        assert_eq!(filter_to_subject("a/b#").unwrap(), "a.b>");
    }

    #[test]
    fn refused_as_nats_server_refuses_them() {
        assert!(matches!(filter_to_subject("bad.topic"), Err(TopicError::Unmappable(_))));
        assert!(matches!(filter_to_subject("a/#/b"), Err(TopicError::InvalidFilter(_))));
        assert!(matches!(filter_to_subject("$MQTT/sub/x"), Err(TopicError::InvalidFilter(_))));
        assert!(matches!(topic_to_subject("a/+"), Err(TopicError::Wildcard(_))));
        assert_eq!(topic_to_subject(""), Err(TopicError::Empty));
    }
}
