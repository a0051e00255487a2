//! Number and size literals, and the duration/size helpers shared by the
//! parser and the option mapping.

use std::time::Duration;

use nom::branch::alt;
use nom::bytes::complete::take_while;
use nom::character::complete::{anychar, char, digit1, satisfy};
use nom::combinator::{all_consuming, map, map_opt, opt, recognize, success, value};
use nom::sequence::preceded;
use nom::{IResult, Parser as _};

use super::error::{ConfError, ErrorKind};
use super::value::{Item, Value};

/// The decimal size prefixes, in order of magnitude (`k` = 1000^1 ...).
const SIZE_PREFIXES: &str = "kmgtpe";

/// One letter, ignoring ASCII case only (so that, say, the Kelvin sign is
/// not taken for a `k`).
fn letter<'a>(wanted: char) -> impl FnMut(&'a str) -> IResult<&'a str, char> {
    satisfy(move |c: char| c.eq_ignore_ascii_case(&wanted))
}

/// A size suffix, case-insensitive, as nats-server defines them: a single
/// letter is decimal (`k` = 1000), the `b`/`i`/`ib` forms are binary
/// (`kb` = `ki` = `kib` = 1024). Without a suffix the multiplier is 1.
fn size_suffix(input: &str) -> IResult<&str, i64> {
    let prefix =
        map_opt(anychar, |c: char| SIZE_PREFIXES.find(c.to_ascii_lowercase()).and_then(|i| u32::try_from(i + 1).ok()));
    let binary = alt((recognize((letter('i'), letter('b'))), recognize(letter('b')), recognize(letter('i'))));
    let scaled = map((prefix, opt(binary)), |(power, binary)| match binary {
        // At most 1024^6 = 2^60 and 1000^6 = 10^18, both within i64.
        Some(_) => 1i64 << (10 * power),
        None => 1000i64.pow(power),
    });
    alt((scaled, success(1))).parse(input)
}

/// What an unquoted token is, numerically.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    /// Not number syntax (so, to the parser, a bare string).
    Other,
    /// `-?[0-9]+` with an optional size suffix, already applied.
    Integer(i64),
    /// Integer syntax whose value (suffix applied) does not fit in an `i64`.
    IntegerOverflow,
    /// `-?[0-9]+.[0-9]+`.
    Float(f64),
    /// Float syntax whose value is too large to represent.
    FloatOutOfRange,
    /// `.[0-9]+`: a float without the leading digit the format requires.
    LeadingDot,
}

/// Classifies an unquoted token as an integer (with size suffix), a float,
/// a malformed float, or not a number at all.
pub(crate) fn number(text: &str) -> Number {
    // The sign is parsed with the digits so that i64::MIN is accepted.
    let integer = map((recognize((opt(char('-')), digit1)), size_suffix), |(digits, mult): (&str, i64)| {
        digits.parse::<i64>().ok().and_then(|n| n.checked_mul(mult)).map_or(Number::IntegerOverflow, Number::Integer)
    });
    let float = map(recognize((opt(char('-')), digit1, char('.'), digit1)), |text: &str| match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Number::Float(f),
        _ => Number::FloatOutOfRange,
    });
    let leading_dot = value(Number::LeadingDot, (char('.'), digit1));
    // Each form must take the whole token: "1.5" is not the integer 1.
    alt((all_consuming(integer), all_consuming(float), all_consuming(leading_dot)))
        .parse(text)
        .map_or(Number::Other, |(_, n)| n)
}

/// A size written as text: `-?[0-9]+`, optional whitespace, optional
/// suffix. Returns whether it is negative, the digits and the multiplier.
fn size_literal(text: &str) -> IResult<&str, (bool, &str, i64)> {
    let sign = map(opt(char('-')), |minus| minus.is_some());
    all_consuming((sign, digit1, preceded(take_while(char::is_whitespace), size_suffix))).parse(text)
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
    let invalid = || ErrorKind::InvalidSize(text.to_string());
    let (_, (neg, digits, mult)) = size_literal(text.trim()).map_err(|_| invalid())?;
    let n: u64 = digits.parse().map_err(|_| ErrorKind::SizeOverflow(text.to_string()))?;
    if neg && n != 0 {
        return Err(ErrorKind::NegativeSize);
    }
    // Multipliers are all positive.
    let mult = u64::try_from(mult).map_err(|_| invalid())?;
    n.checked_mul(mult).ok_or_else(|| ErrorKind::SizeOverflow(text.to_string()))
}
