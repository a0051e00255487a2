//! Size suffixes and duration/size helpers shared by the parser and the
//! option mapping.

use std::time::Duration;

use super::error::{ConfError, ErrorKind};
use super::value::{Item, Value};

/// The multiplier for a size suffix (case-insensitive), as nats-server
/// defines them: single letters are decimal (`k` = 1000), `b`/`i`/`ib`
/// forms are binary (`kb` = `ki` = `kib` = 1024). An empty suffix is 1.
pub(crate) fn suffix_multiplier(suffix: &str) -> Option<i64> {
    const DEC: [(char, i64); 6] = [
        ('k', 1_000),
        ('m', 1_000_000),
        ('g', 1_000_000_000),
        ('t', 1_000_000_000_000),
        ('p', 1_000_000_000_000_000),
        ('e', 1_000_000_000_000_000_000),
    ];
    if suffix.is_empty() {
        return Some(1);
    }
    let lower = suffix.to_ascii_lowercase();
    let mut chars = lower.chars();
    let first = chars.next()?;
    let rest = chars.as_str();
    let (pos, dec) = DEC.iter().enumerate().find(|(_, (c, _))| *c == first).map(|(i, (_, m))| (i, *m))?;
    match rest {
        "" => Some(dec),
        "b" | "i" | "ib" => Some(1i64 << (10 * (pos + 1))),
        _ => None,
    }
}

/// Splits `text` into an optional `-`, a run of ASCII digits and the rest.
fn split_number(text: &str) -> (bool, &str, &str) {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text),
    };
    let end = body.find(|c: char| !c.is_ascii_digit()).unwrap_or(body.len());
    let (digits, rest) = body.split_at(end);
    (neg, digits, rest)
}

/// Outcome of classifying an unquoted token that may be an integer.
pub(crate) enum IntParse {
    /// Not integer syntax; the caller decides what it is instead.
    NotInteger,
    /// A valid integer with its suffix applied.
    Value(i64),
    /// Integer syntax whose value does not fit in an `i64`.
    Overflow,
}

/// Parses `-?[0-9]+suffix?` with the suffix applied.
pub(crate) fn parse_integer(text: &str) -> IntParse {
    let (neg, digits, suffix) = split_number(text);
    if digits.is_empty() {
        return IntParse::NotInteger;
    }
    let Some(mult) = suffix_multiplier(suffix) else {
        return IntParse::NotInteger;
    };
    // Parse with the sign so that i64::MIN is accepted.
    let signed = if neg { format!("-{digits}") } else { digits.to_string() };
    match signed.parse::<i64>().ok().and_then(|n| n.checked_mul(mult)) {
        Some(v) => IntParse::Value(v),
        None => IntParse::Overflow,
    }
}

/// Interprets an item as a duration.
///
/// Exists because nats-server accepts durations both as Go-style strings
/// (`"2m"`, `"500ms"`, `"1h30m"`, `"1.5s"`) and, for backwards compatibility,
/// as bare numbers of seconds. Negative durations are rejected.
pub fn duration_of(item: &Item) -> Result<Duration, ConfError> {
    let err = |kind| ConfError::new(item.pos.clone(), kind);
    match &item.value {
        Value::Integer(n) => u64::try_from(*n).map(Duration::from_secs).map_err(|_| err(ErrorKind::NegativeDuration)),
        Value::Float(f) => {
            if *f < 0.0 {
                Err(err(ErrorKind::NegativeDuration))
            } else {
                Duration::try_from_secs_f64(*f).map_err(|_| err(ErrorKind::DurationOverflow))
            }
        }
        Value::String(s) => parse_duration(s).map_err(err),
        other => Err(err(ErrorKind::TypeMismatch { expected: "a duration", found: other.type_name() })),
    }
}

/// Parses a Go `time.ParseDuration` string into a non-negative duration.
fn parse_duration(text: &str) -> Result<Duration, ErrorKind> {
    let invalid = |reason| ErrorKind::InvalidDuration { text: text.to_string(), reason };
    let mut s = text.trim();
    if let Some(rest) = s.strip_prefix('-') {
        // A negative zero is still zero; anything else negative is rejected.
        if rest.starts_with(['-', '+']) {
            return Err(invalid("more than one sign"));
        }
        return match parse_duration(rest)? {
            Duration::ZERO => Ok(Duration::ZERO),
            _ => Err(ErrorKind::NegativeDuration),
        };
    }
    if let Some(rest) = s.strip_prefix('+') {
        if rest.starts_with(['-', '+']) {
            return Err(invalid("more than one sign"));
        }
        s = rest;
    }
    if s.is_empty() {
        return Err(invalid("empty duration"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    const NANOS: u128 = 1;
    const UNITS: [(&str, u128); 8] = [
        ("ns", NANOS),
        ("us", 1_000),
        ("\u{b5}s", 1_000),
        ("\u{3bc}s", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let overflow = || ErrorKind::DurationOverflow;
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int_part, rest) = s.split_at(int_end);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let e = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                r.split_at(e)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid("expected a number"));
        }
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_end);
        if unit.is_empty() {
            return Err(invalid("missing unit (use ns, us, ms, s, m or h)"));
        }
        let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(invalid("unknown unit (use ns, us, ms, s, m or h)"));
        };
        let mut whole: u128 = 0;
        for d in int_part.bytes() {
            whole = whole.checked_mul(10).and_then(|w| w.checked_add(u128::from(d - b'0'))).ok_or_else(overflow)?;
        }
        let mut value = whole.checked_mul(scale).ok_or_else(overflow)?;
        // Fractional part: keep enough digits for nanosecond precision.
        let mut frac: u128 = 0;
        let mut denom: u128 = 1;
        for d in frac_part.bytes().take(24) {
            frac = frac * 10 + u128::from(d - b'0');
            denom *= 10;
        }
        value = value.checked_add(frac * scale / denom).ok_or_else(overflow)?;
        total = total.checked_add(value).ok_or_else(overflow)?;
        s = rest;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| overflow())?;
    // The remainder is below 1e9, so it always fits in a u32.
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, nanos))
}

/// Interprets an item as a size in bytes.
///
/// Exists because sizes (`max_payload`, `max_pending`, storage limits) may
/// be written as integers (any suffix already applied by the parser: `1k` is
/// 1000, `1kb`/`1KiB` is 1024) or as quoted strings using the same suffixes
/// (`"64MB"`, `"1k"`). Negative sizes are rejected.
pub fn size_of(item: &Item) -> Result<u64, ConfError> {
    let err = |kind| ConfError::new(item.pos.clone(), kind);
    match &item.value {
        Value::Integer(n) => u64::try_from(*n).map_err(|_| err(ErrorKind::NegativeSize)),
        Value::String(s) => parse_size(s).map_err(err),
        other => Err(err(ErrorKind::TypeMismatch { expected: "a size", found: other.type_name() })),
    }
}

fn parse_size(text: &str) -> Result<u64, ErrorKind> {
    let trimmed = text.trim();
    let (neg, digits, suffix) = split_number(trimmed);
    if digits.is_empty() {
        return Err(ErrorKind::InvalidSize(text.to_string()));
    }
    let mult = suffix_multiplier(suffix.trim_start()).ok_or_else(|| ErrorKind::InvalidSize(text.to_string()))?;
    let n: u64 = digits.parse().map_err(|_| ErrorKind::SizeOverflow(text.to_string()))?;
    if neg && n != 0 {
        return Err(ErrorKind::NegativeSize);
    }
    // Multipliers are all positive.
    let mult = u64::try_from(mult).map_err(|_| ErrorKind::InvalidSize(text.to_string()))?;
    n.checked_mul(mult).ok_or_else(|| ErrorKind::SizeOverflow(text.to_string()))
}
