//! The Replaces header value (RFC 3891 §6.1): the dialog an INVITE is to
//! take over, `callid *(SEMI replaces-param)` with exactly one `to-tag`
//! and one `from-tag` and an optional `early-only` flag. It also arrives
//! %-escaped inside a Refer-To URI (`?Replaces=...`, RFC 5589 §7); the
//! caller unescapes it first.
//!
//! The tags are "as if they were tags present in an incoming request"
//! (§3): the receiver compares `to-tag` with its local tag and `from-tag`
//! with the remote one.

use bytes::Bytes;

use super::scalar::parse_call_id;
use crate::error::ValueError;
use crate::limits::Limits;
use crate::params::{ParamKind, Params};
use crate::syntax::{is_token, trim_ws};

/// A parsed Replaces value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    pub call_id: Bytes,
    /// The receiver's local tag.
    pub to_tag: Bytes,
    /// The receiver's remote tag.
    pub from_tag: Bytes,
    /// Replace the dialog only while it is early (§6.1 `early-only`).
    pub early_only: bool,
}

impl Replaces {
    /// Parses one Replaces value. The Call-ID and the tags are bounded by
    /// `limits.max_ident_len`, the parameters by `limits.max_params` (and
    /// none may repeat); a tag must be a non-empty token.
    pub fn parse(owner: &Bytes, s: &[u8], limits: &Limits) -> Result<Self, ValueError> {
        let s = trim_ws(s);
        let semi = s.iter().position(|&b| b == b';').unwrap_or(s.len());
        let (call_id, params) = s.split_at_checked(semi).ok_or(ValueError::Malformed)?;
        let call_id = parse_call_id(owner, call_id, limits)?;
        let params = Params::parse(owner.slice_ref(params), ParamKind::Header, limits)?;
        let tag = |name: &str| -> Result<Bytes, ValueError> {
            let v = params.value(name).ok_or(ValueError::Missing)?;
            if v.len() > limits.max_ident_len {
                return Err(ValueError::TooLong);
            }
            if !is_token(v) {
                return Err(ValueError::Malformed);
            }
            Ok(owner.slice_ref(v))
        };
        let to_tag = tag("to-tag")?;
        let from_tag = tag("from-tag")?;
        let early_only = match params.get("early-only") {
            None => false,
            Some(p) if p.value.is_none() => true,
            Some(_) => return Err(ValueError::Malformed),
        };
        Ok(Self {
            call_id,
            to_tag,
            from_tag,
            early_only,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Replaces, ValueError> {
        let b = Bytes::copy_from_slice(s.as_bytes());
        Replaces::parse(&b, &b, &Limits::default())
    }

    #[test]
    fn parses_the_rfc_3891_examples() {
        let r = parse("425928@bobster.example.org;to-tag=7743;from-tag=6472").unwrap();
        assert_eq!(&r.call_id[..], b"425928@bobster.example.org");
        assert_eq!(&r.to_tag[..], b"7743");
        assert_eq!(&r.from_tag[..], b"6472");
        assert!(!r.early_only);
        let r =
            parse("98732@sip.example.com ;from-tag=r33th4x0r ;to-tag=ff87ff ;early-only").unwrap();
        assert_eq!(&r.call_id[..], b"98732@sip.example.com");
        assert_eq!(&r.to_tag[..], b"ff87ff");
        assert_eq!(&r.from_tag[..], b"r33th4x0r");
        assert!(r.early_only);
        // Parameter names compare without case; unknown ones are allowed.
        let r = parse("abc;TO-TAG=1;From-Tag=2;x=y").unwrap();
        assert_eq!((&r.to_tag[..], &r.from_tag[..]), (&b"1"[..], &b"2"[..]));
    }

    #[test]
    fn refuses_what_names_no_dialog() {
        assert_eq!(parse("abc;to-tag=1"), Err(ValueError::Missing));
        assert_eq!(parse("abc;from-tag=2"), Err(ValueError::Missing));
        assert_eq!(parse("abc"), Err(ValueError::Missing));
        assert_eq!(parse("abc;to-tag;from-tag=2"), Err(ValueError::Missing));
        assert_eq!(parse(";to-tag=1;from-tag=2"), Err(ValueError::Malformed));
        assert_eq!(parse("a b;to-tag=1;from-tag=2"), Err(ValueError::Malformed));
        assert_eq!(
            parse("a@b@c;to-tag=1;from-tag=2"),
            Err(ValueError::Malformed)
        );
        assert_eq!(
            parse("abc;to-tag=\"1\";from-tag=2"),
            Err(ValueError::Malformed)
        );
        assert_eq!(
            parse("abc;to-tag=1;from-tag=2;early-only=yes"),
            Err(ValueError::Malformed)
        );
        assert_eq!(
            parse("abc;to-tag=1;to-tag=3;from-tag=2"),
            Err(ValueError::Repeated)
        );
    }

    #[test]
    fn bounds_lengths_and_counts() {
        let long = "x".repeat(257);
        assert_eq!(
            parse(&format!("{long};to-tag=1;from-tag=2")),
            Err(ValueError::TooLong)
        );
        assert_eq!(
            parse(&format!("abc;to-tag={long};from-tag=2")),
            Err(ValueError::TooLong)
        );
        let many: String = (0..40).map(|i| format!(";p{i}=1")).collect();
        assert_eq!(
            parse(&format!("abc;to-tag=1;from-tag=2{many}")),
            Err(ValueError::TooMany)
        );
    }
}
