//! Time and duration text as nats-server writes it in JSON (monitoring, JetStream).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Date and time of day in UTC for seconds since the Unix epoch:
/// (year, month, day, hour, minute, second), by Howard Hinnant's civil-from-days algorithm.
pub(crate) fn civil(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// RFC 3339 with nanoseconds in UTC, trailing zeros of the fraction dropped, as Go prints
/// `time.Time` in JSON: `2026-11-28T04:32:06.448988225Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (year, month, day, hour, minute, second) = civil(d.as_secs());
    let mut out = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    let nanos = d.subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// A timestamp in nanoseconds since the Unix epoch as Go writes `time.Time` in JSON; 0 is Go's
/// zero time, `0001-01-01T00:00:00Z`, as nats-server writes it for a stream that never had a
/// message.
pub fn rfc3339_nanos(nanos: i64) -> String {
    if nanos <= 0 {
        return "0001-01-01T00:00:00Z".to_string();
    }
    rfc3339(UNIX_EPOCH + Duration::from_nanos(nanos as u64))
}

/// Parses an RFC 3339 time (`2026-11-28T04:32:06.448988225Z`, or with an offset such as
/// `+02:00`) into nanoseconds since the Unix epoch; `None` when it is not one.
pub fn parse_rfc3339_nanos(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if b.get(at) == Some(&b'.') {
        let start = at + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        let digits = &text[start..end.min(start + 9)];
        nanos = digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32);
        at = end;
    }
    let offset = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == b.len() && b[at + 3] == b':' => {
            let m = num(at + 1..at + 3)? * 60 + num(at + 4..at + 6)?;
            if *sign == b'+' {
                m * 60
            } else {
                -m * 60
            }
        }
        _ => return None,
    };
    // Days from the civil date (the inverse of `civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// A count with thousands separators, as nats-server logs counts: `1,000,000`.
pub fn comma(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Nanoseconds since the Unix epoch now.
pub fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// A duration as nats-server prints uptimes: `1d2h3m4s`, `5m0s`, `0s`.
pub fn uptime(d: Duration) -> String {
    let total = d.as_secs();
    let (days, hours, minutes, seconds) = (total / 86_400, total / 3600 % 24, total / 60 % 60, total % 60);
    if days > 0 {
        format!("{days}d{hours}h{minutes}m{seconds}s")
    } else if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// A duration as Go's `Duration.String()` prints it: `3.923682ms`, `1.5s`, `250ns`, `0s`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let trim = |whole: u128, frac: u128, width: usize, unit: &str| {
        let frac = format!("{frac:0width$}");
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            format!("{whole}{unit}")
        } else {
            format!("{whole}.{frac}{unit}")
        }
    };
    if nanos == 0 {
        "0s".to_string()
    } else if nanos < 1_000 {
        format!("{nanos}ns")
    } else if nanos < 1_000_000 {
        trim(nanos / 1_000, nanos % 1_000, 3, "µs")
    } else if nanos < 1_000_000_000 {
        trim(nanos / 1_000_000, nanos % 1_000_000, 6, "ms")
    } else {
        let secs = d.as_secs();
        let frac = trim(u128::from(secs % 60), u128::from(d.subsec_nanos()), 9, "s");
        match (secs / 3600, secs / 60 % 60) {
            (0, 0) => frac,
            (0, m) => format!("{m}m{frac}"),
            (h, m) => format!("{h}h{m}m{frac}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let t = UNIX_EPOCH + Duration::new(1_795_840_326, 448_988_225);
        assert_eq!(rfc3339(t), "2026-11-28T04:32:06.448988225Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::new(0, 500_000_000)), "1970-01-01T00:00:00.5Z");
        assert_eq!(uptime(Duration::from_secs(0)), "0s");
        assert_eq!(uptime(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(uptime(Duration::from_secs(90_061)), "1d1h1m1s");
        assert_eq!(go_duration(Duration::from_nanos(3_923_682)), "3.923682ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(62)), "1m2s");
        assert_eq!(go_duration(Duration::from_nanos(250)), "250ns");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn counts_with_thousands_separators() {
        let got: Vec<String> = [0, 7, 999, 1000, 12_345, 1_000_000].into_iter().map(comma).collect();
        assert_eq!(got, ["0", "7", "999", "1,000", "12,345", "1,000,000"]);
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for nanos in [1i64, 1_795_840_326_448_988_225, 951_782_400_000_000_000, 4_102_444_799_999_999_999] {
            assert_eq!(parse_rfc3339_nanos(&rfc3339_nanos(nanos)), Some(nanos), "{nanos}");
        }
        assert_eq!(parse_rfc3339_nanos("1970-01-01T02:00:00+02:00"), Some(0));
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00.5Z"), Some(500_000_000));
        for bad in [
            "",
            "2026-11-28",
            "2026-13-01T00:00:00Z",
            "2026-11-28T04:32:06.Z",
            "2026-11-28T04:32:06",
            "x026-11-28T04:32:06Z",
        ] {
            assert_eq!(parse_rfc3339_nanos(bad), None, "{bad}");
        }
    }
}
