//! The few facts of an X.509 certificate (RFC 5280 §4.1) the control
//! link checks before serving one: when it is valid, and whether it is a
//! CA's. rustls takes a server certificate that has expired, or a CA
//! certificate put first in the chain, and the control planes then refuse
//! every handshake; checked here, such a file is refused when it is read.
//!
//! A bounded DER walk over the fields before them, no more: every length is
//! checked against what is left, and anything unexpected gives None (the
//! checks are then skipped; rustls has accepted the certificate).

/// What a certificate says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Validity, in seconds since the Unix epoch (UTC).
    pub not_before: i64,
    pub not_after: i64,
    /// basicConstraints says cA TRUE.
    pub ca: bool,
}

/// Reads `der`, one certificate.
pub fn facts(der: &[u8]) -> Option<Facts> {
    let (cert, _) = tlv(der, SEQUENCE)?;
    let (tbs, _) = tlv(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest, 0xa0)?.1; // version
    }
    rest = tlv(rest, INTEGER)?.1; // serialNumber
    rest = tlv(rest, SEQUENCE)?.1; // signature
    rest = tlv(rest, SEQUENCE)?.1; // issuer
    let (validity, after) = tlv(rest, SEQUENCE)?;
    let (not_before, more) = time(validity)?;
    let (not_after, _) = time(more)?;
    rest = tlv(after, SEQUENCE)?.1; // subject
    rest = tlv(rest, SEQUENCE)?.1; // subjectPublicKeyInfo
    for unique_id in [0x81, 0x82] {
        if rest.first() == Some(&unique_id) {
            rest = tlv(rest, unique_id)?.1;
        }
    }
    let mut ca = false;
    if rest.first() == Some(&0xa3) {
        let (explicit, _) = tlv(rest, 0xa3)?;
        let (mut exts, _) = tlv(explicit, SEQUENCE)?;
        while !exts.is_empty() {
            let (ext, next) = tlv(exts, SEQUENCE)?;
            exts = next;
            let (oid, mut body) = tlv(ext, OID)?;
            if body.first() == Some(&BOOLEAN) {
                body = tlv(body, BOOLEAN)?.1; // critical
            }
            let (value, _) = tlv(body, OCTET_STRING)?;
            if oid == BASIC_CONSTRAINTS {
                let (bc, _) = tlv(value, SEQUENCE)?;
                if bc.first() == Some(&BOOLEAN) {
                    ca = tlv(bc, BOOLEAN)?.0.first().is_some_and(|b| *b != 0);
                }
            }
        }
    }
    Some(Facts {
        not_before,
        not_after,
        ca,
    })
}

const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// 2.5.29.19
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];

/// One TLV of tag `tag` at the start of `b`: its value and what follows.
fn tlv(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = b.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if len > rest.len() {
        return None;
    }
    Some(rest.split_at(len))
}

/// A UTCTime or GeneralizedTime in whole seconds, UTC (`Z`), as RFC 5280
/// §4.1.2.5 requires: seconds since the epoch, and what follows.
fn time(b: &[u8]) -> Option<(i64, &[u8])> {
    let (text, digits, rest) = match *b.first()? {
        UTC_TIME => {
            let (v, r) = tlv(b, UTC_TIME)?;
            (v, 12, r)
        }
        GENERALIZED_TIME => {
            let (v, r) = tlv(b, GENERALIZED_TIME)?;
            (v, 14, r)
        }
        _ => return None,
    };
    if text.len() != digits + 1 || text[digits] != b'Z' {
        return None;
    }
    let text = &text[..digits];
    if !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |i: usize, n: usize| {
        text[i..i + n]
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
    };
    let (year, at) = if digits == 12 {
        // RFC 5280: YY of 50 and above is 19YY, below 20YY.
        let yy = num(0, 2);
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
    } else {
        (num(0, 4), 4)
    };
    let (month, day) = (num(at, 2), num(at + 2, 2));
    let (hour, minute, second) = (num(at + 4, 2), num(at + 6, 2), num(at + 8, 2));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((
        days * 86_400 + hour * 3600 + minute * 60 + second.min(60),
        rest,
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (the inverse of `days_from_civil`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
        let t = days_from_civil(2026, 12, 1) * 86_400 + 13 * 3600 + 5;
        assert_eq!(utc(t), "2026-12-01 13:00:05 UTC");
    }

    #[test]
    fn times_in_both_forms() {
        let utc_time = [&[UTC_TIME, 13][..], b"491231235959Z"].concat();
        assert_eq!(
            time(&utc_time).map(|t| utc(t.0)),
            Some("2049-12-31 23:59:59 UTC".into())
        );
        let old = [&[UTC_TIME, 13][..], b"500101000000Z"].concat();
        assert_eq!(
            time(&old).map(|t| utc(t.0)),
            Some("1950-01-01 00:00:00 UTC".into())
        );
        let generalized = [&[GENERALIZED_TIME, 15][..], b"20500101000000Z"].concat();
        assert_eq!(
            time(&generalized).map(|t| utc(t.0)),
            Some("2050-01-01 00:00:00 UTC".into())
        );
        for bad in [
            [&[UTC_TIME, 13][..], b"491331235959Z"].concat(),
            [&[UTC_TIME, 13][..], b"49123123595+Z"].concat(),
            [&[UTC_TIME, 12][..], b"491231235959"].concat(),
            [&[UTC_TIME, 40][..], b"491231235959Z"].concat(),
        ] {
            assert_eq!(time(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn truncated_or_odd_input_reads_as_nothing() {
        assert_eq!(facts(&[]), None);
        assert_eq!(facts(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(facts(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(facts(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
        assert_eq!(facts(b"not a certificate at all"), None);
    }
}
