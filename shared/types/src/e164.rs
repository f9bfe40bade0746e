//! E.164 telephone numbers as the API accepts them: `+`, a country code that
//! does not start with 0, and at most 15 digits in all (ITU-T E.164 §6).

use std::fmt;

/// A validated E.164 number, stored in its canonical `+digits` form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

/// Why a string is not an E.164 number; the text is shown to API callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E164Error {
    MissingPlus,
    NotDigits,
    LeadingZero,
    TooShort,
    TooLong,
}

impl fmt::Display for E164Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            E164Error::MissingPlus => "must start with '+' (E.164, e.g. +15551234567)",
            E164Error::NotDigits => "must contain only digits after '+'",
            E164Error::LeadingZero => "country code cannot start with 0",
            E164Error::TooShort => "is too short for an E.164 number (at least 8 digits)",
            E164Error::TooLong => "is too long for an E.164 number (at most 15 digits)",
        })
    }
}

impl std::error::Error for E164Error {}

/// Shortest number we accept. E.164 sets no formal minimum; real
/// international numbers have at least 8 digits including the country code
/// (e.g. +290 XXXX for Saint Helena has 7, so we allow 7).
const MIN_DIGITS: usize = 7;
const MAX_DIGITS: usize = 15;

impl E164 {
    pub fn parse(s: &str) -> Result<Self, E164Error> {
        let digits = s.strip_prefix('+').ok_or(E164Error::MissingPlus)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.is_empty() {
            return Err(E164Error::NotDigits);
        }
        if digits.starts_with('0') {
            return Err(E164Error::LeadingZero);
        }
        if digits.len() < MIN_DIGITS {
            return Err(E164Error::TooShort);
        }
        if digits.len() > MAX_DIGITS {
            return Err(E164Error::TooLong);
        }
        Ok(E164(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without the leading `+` (what goes into a SIP user part
    /// for trunks that want national-style dialling strings).
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_numbers() {
        for n in ["+15551234567", "+35621234567", "+4930123456", "+2904123"] {
            assert_eq!(E164::parse(n).unwrap().as_str(), n);
        }
        assert_eq!(E164::parse("+15551234567").unwrap().digits(), "15551234567");
    }

    #[test]
    fn rejects_with_reason() {
        assert_eq!(E164::parse("15551234567"), Err(E164Error::MissingPlus));
        assert_eq!(E164::parse("+1555 123"), Err(E164Error::NotDigits));
        assert_eq!(E164::parse("+"), Err(E164Error::NotDigits));
        assert_eq!(E164::parse("+0123456789"), Err(E164Error::LeadingZero));
        assert_eq!(E164::parse("+12345"), Err(E164Error::TooShort));
        assert_eq!(E164::parse("+1234567890123456"), Err(E164Error::TooLong));
        assert_eq!(E164::parse("+1555123456７"), Err(E164Error::NotDigits));
        assert_eq!(E164::parse("+SAFETESTNUMBER"), Err(E164Error::NotDigits));
    }
}
