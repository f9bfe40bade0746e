//! Field validation shared by the resource handlers. Each check returns a
//! 400 that names the field and says what is expected.

use super::error::ApiError;

/// A required text field: present, not blank, at most `max` characters, no
/// control characters (unless `multiline`, which allows newlines and tabs).
pub fn required_text(
    field: &str,
    value: Option<String>,
    max: usize,
    multiline: bool,
) -> Result<String, ApiError> {
    match value {
        Some(v) if !v.trim().is_empty() => text(field, v, max, multiline),
        _ => Err(ApiError::field(field, "is required")),
    }
}

/// An optional text field with the same rules; blank means absent.
pub fn optional_text(
    field: &str,
    value: Option<String>,
    max: usize,
    multiline: bool,
) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if !v.trim().is_empty() => text(field, v, max, multiline).map(Some),
        _ => Ok(None),
    }
}

fn text(field: &str, v: String, max: usize, multiline: bool) -> Result<String, ApiError> {
    if v.chars().count() > max {
        return Err(ApiError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    let bad = v
        .chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')));
    if bad {
        return Err(ApiError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(v)
}

/// Printable ASCII without spaces (keys, tokens, model names).
pub fn token(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > max || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::field(
            field,
            format!("must be 1-{max} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

pub fn int_range(field: &str, v: i64, lo: i64, hi: i64) -> Result<i64, ApiError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::field(
            field,
            format!("must be between {lo} and {hi}, got {v}"),
        ))
    }
}

pub fn one_of(field: &str, v: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            format!("must be one of: {}", allowed.join(", ")),
        ))
    }
}

/// A plausible e-mail address: one `@`, a non-empty local part, a dotted
/// domain, no spaces or control characters, at most 254 characters.
pub fn email(field: &str, v: &str) -> Result<(), ApiError> {
    let ok = v.len() <= 254
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ','))
        && match v.rsplit_once('@') {
            // RFC 5321 §4.5.3.1 sizes; a dot-atom local part (RFC 5322
            // §3.4.1: no leading, trailing or doubled dot); a domain of
            // letters, digits and hyphens (or IDN), at least two labels.
            Some((local, domain)) => {
                (1..=64).contains(&local.len())
                    && !local.contains('@')
                    && !local.starts_with('.')
                    && !local.ends_with('.')
                    && !local.contains("..")
                    && domain.contains('.')
                    && domain.split('.').all(|label| {
                        (1..=63).contains(&label.len())
                            && !label.starts_with('-')
                            && !label.ends_with('-')
                            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
                    })
            }
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(field, "must be an e-mail address"))
    }
}

/// A BCP-47-style language tag (`en-US`, `de-DE`, `pt-BR`, `yue-Hant-HK`).
pub fn language(field: &str, v: &str) -> Result<(), ApiError> {
    let mut parts = v.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    let rest_ok =
        parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if primary_ok && rest_ok && v.len() <= 35 {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "must be a language tag such as en-US or de-DE",
        ))
    }
}

/// A voice name: letters, digits, `_` and `-`, at most 40 characters.
pub fn voice(field: &str, v: &str) -> Result<(), ApiError> {
    if !v.is_empty()
        && v.len() <= 40
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "must be a voice name such as Aoede or Charon",
        ))
    }
}

/// `model` names a voice-AI model the switch can start a session with
/// (the switch's own rule, [`codeb_types::vendor::parse_model`]): refused
/// here rather than by the switch once the callee has answered.
pub fn model(field: &str, model: &str) -> Result<(), ApiError> {
    match codeb_types::vendor::parse_model(model) {
        Some(_) => Ok(()),
        None => Err(ApiError::field(
            field,
            "must be a Gemini Live model (gemini-…, models/gemini-…) or an OpenAI \
             Realtime model (openai/<model>, gpt-…)",
        )),
    }
}

/// `voice` is one the vendor of `model` has, where that vendor refuses
/// any other (OpenAI Realtime): a call that names a Gemini voice for an
/// OpenAI model is refused here, not failed by the vendor mid-dial.
pub fn voice_for_model(field: &str, voice: &str, model: &str) -> Result<(), ApiError> {
    let vendor = codeb_types::Vendor::of_model(model);
    match vendor.closed_voices() {
        Some(voices) if !voices.contains(&voice) => Err(ApiError::field(
            field,
            format!(
                "is not a voice of the model's vendor ({model}): one of {}",
                voices.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// A DNS host name, IPv4 address or IPv6 address (bare or in brackets).
pub fn host(field: &str, v: &str) -> Result<String, ApiError> {
    let bare = v
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(v);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(bare.to_owned());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let name = v.strip_suffix('.').unwrap_or(v);
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(ApiError::field(
            field,
            "must be a host name or an IP address",
        ))
    }
}

/// A SIP user part we accept for users and route targets.
pub fn sip_user(field: &str, v: &str) -> Result<(), ApiError> {
    if !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
    {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "must be 1-64 letters, digits, '.', '_', '-' or '+'",
        ))
    }
}

/// A digest user name or password (trunks, SIP users). Credentials end up
/// inside quoted digest parameters; keep them free of quotes, backslashes
/// and control characters.
pub fn credential(field: &str, v: &str) -> Result<(), ApiError> {
    if v.len() > 128 || v.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err(ApiError::field(
            field,
            "must be at most 128 characters without quotes, backslashes or control characters",
        ));
    }
    Ok(())
}

/// Masks a secret for display: `...` and its last four characters when it
/// is long enough that those four say little; otherwise only `***`.
pub fn mask_secret(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let n = s.chars().count();
    if n >= 16 {
        let tail: String = s.chars().skip(n - 4).collect();
        Some(format!("...{tail}"))
    } else {
        Some("***".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for good in [
            "ops@example.com",
            "first.last+tag@sub.example.co.uk",
            "a@xn--bcher-kva.example",
            "jörg@bücher.de",
        ] {
            assert!(email("email", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a@b@example.com",
            "a@example",
            "a@-x.example.com",
            "a@x..example.com",
            "a@exa_mple.com",
            "a@example.com.",
            "a b@example.com",
            "<a@example.com>",
            "a@example.com,b@example.com",
        ] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
        assert!(email("email", &format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn texts() {
        assert_eq!(required_text("f", Some("x".into()), 5, false).unwrap(), "x");
        assert!(required_text("f", Some("   ".into()), 5, false).is_err());
        assert!(
            required_text("f", None, 5, false)
                .unwrap_err()
                .description
                .starts_with("f: is required")
        );
        assert!(required_text("f", Some("123456".into()), 5, false).is_err());
        assert!(required_text("f", Some("a\u{0}b".into()), 5, false).is_err());
        assert!(required_text("f", Some("a\nb".into()), 5, false).is_err());
        assert!(required_text("f", Some("a\nb".into()), 5, true).is_ok());
        assert_eq!(
            optional_text("f", Some(" ".into()), 5, false).unwrap(),
            None
        );
    }

    #[test]
    fn formats() {
        assert!(email("e", "ops@example.com").is_ok());
        for bad in [
            "ops",
            "@example.com",
            "ops@",
            "ops@example",
            "a b@example.com",
            "a@b@c.com",
            "a@.com",
            "a@x..com",
        ] {
            assert!(email("e", bad).is_err(), "{bad}");
        }
        for ok in ["en-US", "de-DE", "yue-Hant-HK", "fr"] {
            assert!(language("l", ok).is_ok(), "{ok}");
        }
        for bad in ["", "english", "en_US", "e", "en--US"] {
            assert!(language("l", bad).is_err(), "{bad}");
        }
        assert_eq!(host("h", "Sip.Example.COM").unwrap(), "sip.example.com");
        assert_eq!(host("h", "[2001:db8::1]").unwrap(), "2001:db8::1");
        assert!(host("h", "10.0.0.1").is_ok());
        for bad in ["", "-a.com", "a_b.com", "a..com", "a b", &"a".repeat(64)] {
            assert!(host("h", bad).is_err(), "{bad}");
        }
        assert_eq!(
            mask_secret("AIzaSyA-0123456789abcdef"),
            Some("...cdef".into())
        );
        assert_eq!(mask_secret("short"), Some("***".into()));
        assert_eq!(mask_secret(""), None);
        assert!(int_range("n", 5, 1, 10).is_ok());
        assert!(
            int_range("n", 11, 1, 10)
                .unwrap_err()
                .description
                .contains("between 1 and 10")
        );
    }
}
