//! Subject transforms: how a subject in one namespace becomes a subject in another, for stream
//! and service imports between accounts.
//!
//! A transform is built from a source pattern and a destination pattern. The source's wildcard
//! tokens capture what they matched (`*` one token, `>` the rest); the destination is written
//! with literal tokens and references to the captures: `$N` or `{{wildcard(N)}}` for the N-th
//! wildcard (from 1), or a plain `*` / `>` for the next `*` capture / the `>` capture, as
//! nats-server reads an import whose `to` repeats the source's wildcards.

use super::{FWC, PWC, SEP};

/// Why a pair of patterns makes no transform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// The destination refers to a wildcard the source does not have.
    #[error("invalid mapping destination: wildcard index out of range")]
    WildcardIndex,
    /// A `>` in the destination without one in the source, or not as the last token.
    #[error("invalid mapping destination: full wildcard")]
    FullWildcard,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<[u8]>),
    /// The N-th single-token capture (from 0), in the order the source's wildcards appear.
    Capture(usize),
    /// What the source's `>` matched.
    Rest,
}

/// A compiled transform from subjects matching a source pattern to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTransform {
    /// Source token positions that capture, in order.
    captures: Vec<usize>,
    /// Tokens in the source pattern.
    source_len: usize,
    /// How the destination is written.
    parts: Vec<Part>,
}

impl SubjectTransform {
    /// A transform taking subjects matching `source` to `destination`.
    pub fn new(source: &[u8], destination: &[u8]) -> Result<Self, TransformError> {
        let src: Vec<&[u8]> = source.split(|&b| b == SEP).collect();
        let captures: Vec<usize> = src.iter().enumerate().filter(|(_, t)| **t == PWC).map(|(i, _)| i).collect();
        let rest = src.last().is_some_and(|t| *t == FWC);
        let dst: Vec<&[u8]> = destination.split(|&b| b == SEP).collect();
        let mut parts = Vec::with_capacity(dst.len());
        let mut next_star = 0;
        for (i, token) in dst.iter().enumerate() {
            let part = if *token == PWC {
                next_star += 1;
                Part::Capture(next_star - 1)
            } else if *token == FWC {
                if !rest || i + 1 != dst.len() {
                    return Err(TransformError::FullWildcard);
                }
                Part::Rest
            } else if let Some(n) = wildcard_reference(token) {
                if n == 0 {
                    return Err(TransformError::WildcardIndex);
                }
                Part::Capture(n - 1)
            } else {
                Part::Literal((*token).into())
            };
            if let Part::Capture(n) = part {
                if n >= captures.len() {
                    return Err(TransformError::WildcardIndex);
                }
            }
            parts.push(part);
        }
        Ok(SubjectTransform { captures, source_len: src.len(), parts })
    }

    /// A transform that puts `prefix` and a dot before every subject.
    pub fn prefix(prefix: &[u8]) -> Self {
        let mut parts: Vec<Part> =
            prefix.split(|&b| b == SEP).filter(|t| !t.is_empty()).map(|t| Part::Literal(t.into())).collect();
        parts.push(Part::Rest);
        SubjectTransform { captures: Vec::new(), source_len: 1, parts }
    }

    /// Writes the transform of `subject` (which must match the source pattern) into `out`.
    pub fn apply(&self, subject: &[u8], out: &mut Vec<u8>) {
        out.clear();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push(SEP);
            }
            match part {
                Part::Literal(t) => out.extend_from_slice(t),
                Part::Capture(n) => {
                    if let Some(t) = subject.split(|&b| b == SEP).nth(self.captures[*n]) {
                        out.extend_from_slice(t);
                    }
                }
                Part::Rest => out.extend_from_slice(after_tokens(subject, self.source_len - 1)),
            }
        }
    }
}

/// What follows the first `n` tokens of `subject`.
fn after_tokens(subject: &[u8], n: usize) -> &[u8] {
    let mut start = 0;
    for _ in 0..n {
        match subject[start..].iter().position(|&b| b == SEP) {
            Some(p) => start += p + 1,
            None => return &[],
        }
    }
    &subject[start..]
}

/// `$N` or `{{wildcard(N)}}`, as a number.
fn wildcard_reference(token: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(token).ok()?;
    let digits = if let Some(d) = text.strip_prefix('$') {
        d
    } else {
        let inner = text.strip_prefix("{{")?.strip_suffix("}}")?.trim();
        let inner = inner.strip_prefix("wildcard(").or_else(|| inner.strip_prefix("Wildcard("))?;
        inner.strip_suffix(')')?.trim()
    };
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(src: &str, dst: &str, subject: &str) -> String {
        let t = SubjectTransform::new(src.as_bytes(), dst.as_bytes()).expect("transform");
        let mut out = Vec::new();
        t.apply(subject.as_bytes(), &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn literal_and_wildcards() {
        assert_eq!(map("a.b", "c.d", "a.b"), "c.d");
        assert_eq!(map("a.*", "b.*", "a.x"), "b.x");
        assert_eq!(map("a.*.*", "b.$2.$1", "a.x.y"), "b.y.x");
        assert_eq!(map("a.*.*", "b.{{wildcard(2)}}.{{ wildcard(1) }}", "a.x.y"), "b.y.x");
        assert_eq!(map("a.>", "b.>", "a.x.y.z"), "b.x.y.z");
        assert_eq!(map("a.*.>", "b.*.c.>", "a.x.y.z"), "b.x.c.y.z");
        assert_eq!(map(">", "p.>", "x.y"), "p.x.y");
    }

    #[test]
    fn prefixes() {
        let mut out = Vec::new();
        SubjectTransform::prefix(b"p").apply(b"a.b", &mut out);
        assert_eq!(out, b"p.a.b");
        SubjectTransform::prefix(b"p.q.").apply(b"a", &mut out);
        assert_eq!(out, b"p.q.a");
    }

    #[test]
    fn refused() {
        assert_eq!(SubjectTransform::new(b"a.*", b"b.$2"), Err(TransformError::WildcardIndex));
        assert_eq!(SubjectTransform::new(b"a.*", b"b.>"), Err(TransformError::FullWildcard));
        assert_eq!(SubjectTransform::new(b"a.*", b"b.*.*"), Err(TransformError::WildcardIndex));
    }
}
