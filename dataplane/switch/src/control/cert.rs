//! The few facts of an X.509 certificate (RFC 5280 §4.1) the control
//! link checks before serving one: when it is valid, and whether it is a
//! CA's. rustls takes a server certificate that has expired, or a CA
//! certificate put first in the chain, and the control planes then refuse
//! every handshake; checked here, such a file is refused when it is read.
//!
//! A bounded DER walk over the fields before them, no more: every length is
//! checked against what is left, and anything unexpected gives None (the
//! checks are then skipped; rustls has accepted the certificate).

use codeb_types::UtcMillis;

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
    let text = std::str::from_utf8(&text[..digits]).ok()?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest_digits) = if digits == 12 {
        // RFC 5280: YY of 50 and above is 19YY, below 20YY.
        let yy: u32 = text[..2].parse().ok()?;
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
    } else {
        (text[..4].parse().ok()?, &text[4..])
    };
    let d = |i: usize| &rest_digits[i..i + 2];
    let rfc3339 = format!("{year:04}-{}-{}T{}:{}:{}Z", d(0), d(2), d(4), d(6), d(8));
    let at = UtcMillis::parse_rfc3339(&rfc3339).ok()?;
    Some((at.0.div_euclid(1000), rest))
}

/// `secs` since the epoch, as the API prints instants.
pub fn utc(secs: i64) -> String {
    UtcMillis::from_secs(secs).to_iso()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_both_forms() {
        let utc_time = [&[UTC_TIME, 13][..], b"491231235959Z"].concat();
        assert_eq!(
            time(&utc_time).map(|t| utc(t.0)),
            Some("2049-12-31T23:59:59.000Z".into())
        );
        let old = [&[UTC_TIME, 13][..], b"500101000000Z"].concat();
        assert_eq!(
            time(&old).map(|t| utc(t.0)),
            Some("1950-01-01T00:00:00.000Z".into())
        );
        let generalized = [&[GENERALIZED_TIME, 15][..], b"20500101000000Z"].concat();
        assert_eq!(
            time(&generalized).map(|t| utc(t.0)),
            Some("2050-01-01T00:00:00.000Z".into())
        );
        for bad in [
            [&[UTC_TIME, 13][..], b"491331235959Z"].concat(),
            [&[UTC_TIME, 13][..], b"490230235959Z"].concat(),
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
