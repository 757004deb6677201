//! ISO-8601 timestamps: the API's `createdAt` form, and the forms clients send in
//! filters (JavaScript's `toISOString()`, Python's `isoformat()`, bare dates).

/// Nanoseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn iso8601(unix_nano: u64) -> String {
    let millis = unix_nano / 1_000_000;
    let (secs, ms) = (millis / 1000, millis % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses an ISO-8601 date-time into Unix nanoseconds: `2024-01-15T10:35:00.000Z` (as
/// JavaScript's `toISOString()` writes it), `2024-01-15T10:35:00.123456+02:00` (Python's
/// `isoformat()` of an aware datetime), or without an offset (a naive one, read as UTC),
/// or a bare date (midnight UTC). Times beyond what nanoseconds hold saturate.
pub(crate) fn parse_iso8601(text: &str) -> Option<i64> {
    let text = text.trim();
    let b = text.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |s: &str| -> Option<i64> {
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(&text[..4])?, num(&text[5..7])?, num(&text[8..10])?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut seconds = i128::from(days_from_civil(year, month, day)) * 86_400;
    let mut nanos: i128 = 0;
    let rest = &text[10..];
    if !rest.is_empty() {
        let time = rest.strip_prefix(['T', 't', ' '])?;
        let tb = time.as_bytes();
        if tb.len() < 5 || tb[2] != b':' {
            return None;
        }
        let (hour, minute) = (num(&time[..2])?, num(&time[3..5])?);
        let mut rest = &time[5..];
        let mut second = 0;
        if let Some(s) = rest.strip_prefix(':') {
            second = num(s.get(..2)?)?;
            rest = &s[2..];
            if let Some(fraction) = rest.strip_prefix(['.', ',']) {
                let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 {
                    return None;
                }
                let kept = &fraction[..digits.min(9)];
                nanos = i128::from(num(kept)?) * 10i128.pow(9 - kept.len() as u32);
                rest = &fraction[digits..];
            }
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        seconds += i128::from(hour * 3600 + minute * 60 + second);
        seconds -= match rest {
            "" | "Z" | "z" => 0,
            offset => {
                let sign = match offset.as_bytes()[0] {
                    // An unencoded `+` in a query string arrives as a space.
                    b'+' | b' ' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let digits = offset[1..].replace(':', "");
                let (h, m) = match digits.len() {
                    2 => (num(&digits)?, 0),
                    4 => (num(&digits[..2])?, num(&digits[2..])?),
                    _ => return None,
                };
                if h > 23 || m > 59 {
                    return None;
                }
                sign * i128::from(h * 3600 + m * 60)
            }
        };
    }
    let total = seconds * 1_000_000_000 + nanos;
    Some(total.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123_000_000), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            iso8601(1_767_225_599_999_000_000),
            "2025-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn parses_iso8601() {
        let at = |s| parse_iso8601(s).map(|n| iso8601(n as u64));
        assert_eq!(
            at("2026-01-01T00:00:00.000Z").unwrap(),
            "2026-01-01T00:00:00.000Z"
        );
        assert_eq!(
            at("2000-02-29T23:59:59.123456789Z").unwrap(),
            "2000-02-29T23:59:59.123Z"
        );
        assert_eq!(
            at("2026-01-01T10:30+02:00").unwrap(),
            "2026-01-01T08:30:00.000Z"
        );
        assert_eq!(
            at("2026-01-01T01:00:00-01:30").unwrap(),
            "2026-01-01T02:30:00.000Z"
        );
        assert_eq!(at("2026-03-05").unwrap(), "2026-03-05T00:00:00.000Z");
        assert_eq!(
            at("1970-01-01T00:00:00").unwrap(),
            "1970-01-01T00:00:00.000Z"
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2025-02-29",
            "2026-01-01T24:00",
            "2026-1-1",
            "2026-01-01T10:00Zjunk",
            "2026-01-01T10",
            "1767225600000",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn iso8601_forms_of_both_sdks() {
        let at = 1_705_314_900_000_000_000; // 2024-01-15T10:35:00Z
        assert_eq!(parse_iso8601("2024-01-15T10:35:00.000Z"), Some(at));
        assert_eq!(parse_iso8601("2024-01-15T10:35:00Z"), Some(at));
        assert_eq!(parse_iso8601("2024-01-15T10:35:00"), Some(at));
        assert_eq!(parse_iso8601("2024-01-15T12:35:00+02:00"), Some(at));
        assert_eq!(parse_iso8601("2024-01-15T12:35:00 02:00"), Some(at));
        assert_eq!(parse_iso8601("2024-01-15T05:35:00-0500"), Some(at));
        assert_eq!(parse_iso8601("2024-01-15T10:35:00+00:00"), Some(at));
        assert_eq!(
            parse_iso8601("2024-01-15T10:35:00.123456+00:00"),
            Some(at + 123_456_000)
        );
        assert_eq!(parse_iso8601("2024-01-15T10:35"), Some(at));
        assert_eq!(parse_iso8601("2024-01-15"), Some(at - 38_100_000_000_000));
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso8601("2000-02-29"), Some(951_782_400_000_000_000));
        assert_eq!(parse_iso8601("9999-12-31"), Some(i64::MAX));
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2023-02-29",
            "2024-01-15T25:00:00Z",
            "2024-01-15T10:35:00.Z",
            "2024-01-15T10:35:00+2",
            "2024-01-15X10:35:00",
            "1705314900",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
