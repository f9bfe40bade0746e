//! UTC instants as milliseconds since the Unix epoch, printed the way the
//! v1 spec prints them (`2026-01-01T12:00:05.500Z`) and parsed from RFC 3339
//! (the ISO-8601 profile the API accepts for `scheduleAtUtc` and `since`).
//!
//! Calendar arithmetic is the proleptic Gregorian "days from civil"
//! algorithm (H. Hinnant), valid for years 0000–9999, which is all RFC 3339
//! can spell.

use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z. The clock is read by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UtcMillis(pub i64);

/// Why a timestamp did not parse; shown to API callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeParseError(&'static str);

impl fmt::Display for TimeParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TimeParseError {}

const MS_PER_DAY: i64 = 86_400_000;
/// 0000-01-01 and 9999-12-31T23:59:59.999Z, the range RFC 3339 can spell.
const MIN_MS: i64 = -62_167_219_200_000;
const MAX_MS: i64 = 253_402_300_799_999;

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    pub millis: i64,
}

impl UtcMillis {
    pub const fn from_secs(s: i64) -> Self {
        UtcMillis(s * 1000)
    }

    /// Whole seconds from `earlier` to this instant, to the nearest (half
    /// up, as the spec's example rounds 144.5 s of talk to 145); none if
    /// `earlier` is later.
    pub fn seconds_since(self, earlier: UtcMillis) -> i64 {
        self.0.saturating_sub(earlier.0).max(0).saturating_add(500) / 1000
    }

    pub fn civil(self) -> Civil {
        let ms = self.0.clamp(MIN_MS, MAX_MS);
        let days = ms.div_euclid(MS_PER_DAY);
        let rem = ms.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: rem / 3_600_000,
            minute: rem / 60_000 % 60,
            second: rem / 1000 % 60,
            millis: rem % 1000,
        }
    }

    /// `2026-01-01T12:00:05.500Z`: the spec's spelling everywhere.
    pub fn to_iso(self) -> String {
        let c = self.civil();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
        )
    }

    /// `20260101-120000`: the stamp in transcript file names.
    pub fn to_compact(self) -> String {
        let c = self.civil();
        format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    }

    pub fn plus_ms(self, ms: i64) -> Self {
        UtcMillis(self.0.saturating_add(ms))
    }

    /// Parses RFC 3339 (`2026-01-01T12:00:00Z`, `...T12:00:00.5+02:00`) and
    /// returns the instant in UTC. Fractions past milliseconds are truncated;
    /// leap seconds (`:60`) are refused, as nothing downstream can hold them.
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimeParseError> {
        let b = s.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Result<i64, TimeParseError> {
            let part = b.get(range).ok_or(TimeParseError("is truncated"))?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(TimeParseError(
                    "must be ISO-8601, e.g. 2026-01-01T12:00:00Z",
                ));
            }
            Ok(part.iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0')))
        };
        let sep = |i: usize, want: &[u8]| -> Result<(), TimeParseError> {
            match b.get(i) {
                Some(c) if want.contains(c) => Ok(()),
                _ => Err(TimeParseError(
                    "must be ISO-8601, e.g. 2026-01-01T12:00:00Z",
                )),
            }
        };
        if b.len() > 40 {
            return Err(TimeParseError("is too long for a timestamp"));
        }
        let year = num(0..4)?;
        sep(4, b"-")?;
        let month = num(5..7)?;
        sep(7, b"-")?;
        let day = num(8..10)?;
        sep(10, b"Tt")?;
        let hour = num(11..13)?;
        sep(13, b":")?;
        let minute = num(14..16)?;
        sep(16, b":")?;
        let second = num(17..19)?;
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(TimeParseError("has an invalid calendar date"));
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(TimeParseError("has an invalid time of day"));
        }
        let mut i = 19;
        let mut millis = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                if i - start < 3 {
                    millis = millis * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            if i == start {
                return Err(TimeParseError("has an empty fraction of a second"));
            }
            for _ in (i - start)..3 {
                millis *= 10;
            }
        }
        let offset_min = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(&c @ (b'+' | b'-')) if i + 6 == b.len() => {
                sep(i + 3, b":")?;
                let oh = num(i + 1..i + 3)?;
                let om = num(i + 4..i + 6)?;
                if oh > 23 || om > 59 {
                    return Err(TimeParseError("has an invalid UTC offset"));
                }
                let m = oh * 60 + om;
                if c == b'-' { -m } else { m }
            }
            _ => {
                return Err(TimeParseError(
                    "must end with Z or a UTC offset like +00:00 (e.g. 2026-01-01T12:00:00Z)",
                ));
            }
        };
        let days = days_from_civil(year, month, day);
        let ms = days * MS_PER_DAY + hour * 3_600_000 + minute * 60_000 + second * 1000 + millis
            - offset_min * 60_000;
        Ok(UtcMillis(ms))
    }
}

impl fmt::Display for UtcMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_spec() {
        assert_eq!(UtcMillis(0).to_iso(), "1970-01-01T00:00:00.000Z");
        let t = UtcMillis::parse_rfc3339("2026-01-01T12:00:05.500Z").unwrap();
        assert_eq!(t.to_iso(), "2026-01-01T12:00:05.500Z");
        assert_eq!(t.to_compact(), "20260101-120005");
        assert_eq!(
            UtcMillis(1_780_595_712_401).to_iso(),
            "2026-06-04T17:55:12.401Z"
        );
    }

    #[test]
    fn seconds_between_instants_round_to_the_nearest() {
        // The spec's GET /calls/{id} example: answered 12:00:05.500, ended
        // 12:02:30.000, durationSec 145.
        let answered = UtcMillis::parse_rfc3339("2026-01-01T12:00:05.500Z").unwrap();
        let ended = UtcMillis::parse_rfc3339("2026-01-01T12:02:30.000Z").unwrap();
        assert_eq!(ended.seconds_since(answered), 145);
        assert_eq!(UtcMillis(4_499).seconds_since(UtcMillis(0)), 4);
        assert_eq!(UtcMillis(0).seconds_since(UtcMillis(5_000)), 0);
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let a = UtcMillis::parse_rfc3339("2026-01-01T12:00:00Z").unwrap();
        let b = UtcMillis::parse_rfc3339("2026-01-01T14:00:00+02:00").unwrap();
        let c = UtcMillis::parse_rfc3339("2026-01-01t11:30:00.000000-00:30").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        let f = UtcMillis::parse_rfc3339("2026-01-01T12:00:00.1234Z").unwrap();
        assert_eq!(f.0 - a.0, 123);
        let leap = UtcMillis::parse_rfc3339("2024-02-29T00:00:00Z").unwrap();
        assert_eq!(leap.to_iso(), "2024-02-29T00:00:00.000Z");
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T12:00:00",
            "2026-01-01 12:00:00Z",
            "2026-13-01T12:00:00Z",
            "2026-02-29T12:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T12:00:60Z",
            "2026-01-01T12:00:00.Z",
            "2026-01-01T12:00:00+2:00",
            "2026-01-01T12:00:00Zjunk",
            "+2026-01-01T12:00:00Z",
            "２026-01-01T12:00:00Z",
            "tomorrow",
        ] {
            assert!(UtcMillis::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        let mut ms = MIN_MS;
        while ms < MAX_MS {
            let iso = UtcMillis(ms).to_iso();
            assert_eq!(UtcMillis::parse_rfc3339(&iso).unwrap().0, ms, "{iso}");
            ms += 7_777_777_777;
        }
    }
}
