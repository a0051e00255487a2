//! Subject validation, and transforms between namespaces ([`transform`]).
//!
//! A subject is a list of tokens separated by `.`; no token is empty and none contains white
//! space. In a subscription, `*` (one token) and `>` (one or more trailing tokens) are wildcards
//! when they stand as a whole token, and `>` only as the last one. A publish subject is literal.

pub mod transform;

pub use transform::{SubjectTransform, TransformError};

/// The token separator.
pub const SEP: u8 = b'.';
/// The single-token wildcard.
pub const PWC: &[u8] = b"*";
/// The trailing wildcard.
pub const FWC: &[u8] = b">";

#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0c)
}

/// True when `subject` may be subscribed to: non-empty tokens, no white space, `>` only last.
pub fn is_valid_subscription(subject: &[u8]) -> bool {
    if subject.is_empty() {
        return false;
    }
    let mut tokens = subject.split(|&b| b == SEP).peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() || token.iter().any(|&b| is_space(b)) {
            return false;
        }
        if token == FWC && tokens.peek().is_some() {
            return false;
        }
    }
    true
}

/// True when `subject` is a valid literal subject: valid and without wildcard tokens.
pub fn is_valid_literal(subject: &[u8]) -> bool {
    is_valid_subscription(subject) && !subject.split(|&b| b == SEP).any(|t| t == PWC || t == FWC)
}

/// True when `subject` has no wildcard token (it may still be invalid otherwise).
#[inline]
pub fn is_literal(subject: &[u8]) -> bool {
    !subject.split(|&b| b == SEP).any(|t| t == PWC || t == FWC)
}

/// True when a queue group name is usable: non-empty and without white space.
pub fn is_valid_queue(queue: &[u8]) -> bool {
    !queue.is_empty() && !queue.iter().any(|&b| is_space(b))
}

/// Whether the literal `subject` is matched by the subscription `filter` (which may hold wildcards).
///
/// The subject trie is the fast path; this is the plain definition, used where only one filter is
/// checked (a client finding its own reply subscription) and as the reference in tests.
pub fn matches(filter: &[u8], subject: &[u8]) -> bool {
    let mut f = filter.split(|&b| b == SEP);
    let mut s = subject.split(|&b| b == SEP);
    loop {
        match (f.next(), s.next()) {
            (Some(ft), Some(_)) if ft == FWC => return true,
            (Some(ft), Some(st)) if ft == PWC || ft == st => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject `subject` matches (it may hold wildcards) is also matched by `filter`:
/// `foo.*` is a subset of `>`, `*.*` and `foo.*`, not of `foo.bar`.
pub fn is_subset(subject: &[u8], filter: &[u8]) -> bool {
    let mut s = subject.split(|&b| b == SEP);
    let mut f = filter.split(|&b| b == SEP);
    loop {
        match (s.next(), f.next()) {
            (_, Some(ft)) if ft == FWC => return true,
            (Some(st), _) if st == FWC => return false,
            (Some(st), Some(ft)) if st == PWC => {
                if ft != PWC {
                    return false;
                }
            }
            (Some(st), Some(ft)) if ft == PWC || ft == st => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some literal subject matches both `a` and `b` (either may hold wildcards).
pub fn collide(a: &[u8], b: &[u8]) -> bool {
    let mut x = a.split(|&c| c == SEP);
    let mut y = b.split(|&c| c == SEP);
    loop {
        match (x.next(), y.next()) {
            (Some(s), _) | (_, Some(s)) if s == FWC => return true,
            (Some(s), Some(t)) if s == PWC || t == PWC || s == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions() {
        for (a, b) in [("a.b", "a.b"), ("a.*", "a.b"), ("a.>", "a.b.c"), (">", "x"), ("*.b", "a.*")] {
            assert!(collide(a.as_bytes(), b.as_bytes()), "{a} {b}");
        }
        for (a, b) in [("a.b", "a.c"), ("a.*", "a.b.c"), ("a", "a.b"), ("b.>", "a.>")] {
            assert!(!collide(a.as_bytes(), b.as_bytes()), "{a} {b}");
        }
    }

    #[test]
    fn subsets() {
        for (s, f) in [
            ("foo.*", ">"),
            ("foo.*", "*.*"),
            ("foo.*", "foo.*"),
            ("foo.bar", "foo.*"),
            ("a.>", "a.>"),
            ("a.b.>", "a.>"),
        ] {
            assert!(is_subset(s.as_bytes(), f.as_bytes()), "{s} in {f}");
        }
        for (s, f) in [("foo.*", "foo.bar"), ("a.>", "a.*"), ("a", "a.b"), ("a.b", "a"), (">", "a.>")] {
            assert!(!is_subset(s.as_bytes(), f.as_bytes()), "{s} not in {f}");
        }
    }

    #[test]
    fn subscriptions() {
        for ok in ["a", "a.b", "*", ">", "a.*", "a.>", "*.*.>", "*a", "a.*b", "a.b>", "ü.x"] {
            assert!(is_valid_subscription(ok.as_bytes()), "{ok}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "a.>.b", ">.a", "a b", "a\tb", "a\nb"] {
            assert!(!is_valid_subscription(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn literals() {
        assert!(is_valid_literal(b"a.b.c"));
        assert!(is_valid_literal(b"a.b*"));
        assert!(!is_valid_literal(b"a.*"));
        assert!(!is_valid_literal(b">"));
        assert!(!is_valid_literal(b"a..b"));
    }

    #[test]
    fn matching() {
        assert!(matches(b"a.*", b"a.b"));
        assert!(!matches(b"a.*", b"a.b.c"));
        assert!(matches(b"a.>", b"a.b.c"));
        assert!(!matches(b"a.>", b"a"));
        assert!(matches(b">", b"a"));
        assert!(matches(b"*.b", b"a.b"));
        assert!(!matches(b"a.b", b"a.c"));
        assert!(matches(b"a.b", b"a.b"));
    }
}
