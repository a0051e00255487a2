//! Random names as nats-server makes them: base-62 digits, 22 for a unique id (a "nuid": server
//! generated consumer and subject names, advisory ids), fewer for short suffixes; and the
//! nonces clients and leaf nodes sign.

/// The digits of nats-server's names and hashes, in its order.
pub const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A unique id: 22 random base-62 digits, as nats-server's nuids.
pub fn nuid() -> String {
    random(22)
}

/// A fresh nonce as nats-server makes them: 11 random bytes, base64url without padding.
pub fn nonce() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 11]>())
}

/// `len` random base-62 digits.
pub fn random(len: usize) -> String {
    (0..len).map(|_| char::from(DIGITS[rand::random::<usize>() % DIGITS.len()])).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn nuids_are_22_base62_digits_and_differ() {
        let (a, b) = (super::nuid(), super::nuid());
        assert_eq!(a.len(), 22);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
