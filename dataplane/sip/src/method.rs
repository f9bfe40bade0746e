//! SIP request methods: the ones this stack knows by name, extension methods
//! as validated tokens, and a compact set type for `Allow` and policy.
//!
//! Methods are case-sensitive (RFC 3261 §7.1): `invite` is an extension
//! method, not INVITE, and `RE%47IST%45R` (RFC 4475 `esc02`) is not REGISTER.

use bytes::Bytes;

use crate::error::ValueError;
use crate::syntax::is_token;

/// A request method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other token. Never holds the spelling of a known method.
    Extension(Bytes),
}

const KNOWN_COUNT: usize = 14;

const KNOWN: [(Method, &str); KNOWN_COUNT] = [
    (Method::Invite, "INVITE"),
    (Method::Ack, "ACK"),
    (Method::Bye, "BYE"),
    (Method::Cancel, "CANCEL"),
    (Method::Options, "OPTIONS"),
    (Method::Register, "REGISTER"),
    (Method::Info, "INFO"),
    (Method::Update, "UPDATE"),
    (Method::Prack, "PRACK"),
    (Method::Subscribe, "SUBSCRIBE"),
    (Method::Notify, "NOTIFY"),
    (Method::Refer, "REFER"),
    (Method::Message, "MESSAGE"),
    (Method::Publish, "PUBLISH"),
];

impl Method {
    /// Parses a method token. `owner` is the buffer `token` was borrowed
    /// from, so an extension method stays a zero-copy slice.
    pub(crate) fn from_token(owner: &Bytes, token: &[u8]) -> Result<Self, ValueError> {
        if let Some((m, _)) = KNOWN.iter().find(|(_, name)| name.as_bytes() == token) {
            return Ok(m.clone());
        }
        if is_token(token) {
            Ok(Self::Extension(owner.slice_ref(token)))
        } else {
            Err(ValueError::Malformed)
        }
    }

    /// Parses a method from owned bytes (validated as an RFC 3261 token).
    pub fn parse(bytes: impl Into<Bytes>) -> Result<Self, ValueError> {
        let bytes = bytes.into();
        Self::from_token(&bytes, &bytes)
    }

    /// The method's spelling on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Extension(b) => b,
            known => KNOWN
                .iter()
                .find(|(m, _)| m == known)
                .map_or(&b""[..], |(_, name)| name.as_bytes()),
        }
    }

    /// `true` for the methods this stack knows by name. Whether an unknown
    /// method gets 501 or is forwarded is the caller's policy
    /// ([`crate::Policy::implemented`]).
    pub fn is_known(&self) -> bool {
        !matches!(self, Self::Extension(_))
    }

    /// The bit of a known method in a [`MethodSet`].
    fn bit(&self) -> Option<u16> {
        KNOWN.iter().position(|(m, _)| m == self).map(|i| 1 << i)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A set of known methods (extension methods are never members).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MethodSet(u16);

impl MethodSet {
    /// The empty set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Every method this stack knows by name.
    pub const fn all_known() -> Self {
        Self((1 << KNOWN_COUNT) - 1)
    }

    /// The set plus `method` (no-op for extension methods).
    pub fn with(self, method: &Method) -> Self {
        Self(self.0 | method.bit().unwrap_or(0))
    }

    /// Whether `method` is in the set.
    pub fn contains(&self, method: &Method) -> bool {
        method.bit().is_some_and(|bit| self.0 & bit != 0)
    }

    /// Members in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = Method> + '_ {
        KNOWN
            .iter()
            .filter(|(m, _)| self.contains(m))
            .map(|(m, _)| m.clone())
    }
}

impl FromIterator<Method> for MethodSet {
    fn from_iter<I: IntoIterator<Item = Method>>(iter: I) -> Self {
        iter.into_iter().fold(Self::empty(), |set, m| set.with(&m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_case_sensitive_tokens() {
        assert_eq!(Method::parse("INVITE"), Ok(Method::Invite));
        assert_eq!(
            Method::parse("invite"),
            Ok(Method::Extension(Bytes::from("invite")))
        );
        let esc = Method::parse("RE%47IST%45R").unwrap();
        assert!(!esc.is_known());
        assert_eq!(esc.as_bytes(), b"RE%47IST%45R");
        assert_eq!(Method::parse("BAD METHOD"), Err(ValueError::Malformed));
        assert_eq!(Method::parse(""), Err(ValueError::Malformed));
        assert_eq!(Method::Publish.as_bytes(), b"PUBLISH");
        assert_eq!(Method::Prack.to_string(), "PRACK");
    }

    #[test]
    fn method_sets_hold_known_methods_only() {
        let set: MethodSet = [Method::Invite, Method::Ack, Method::parse("FOO").unwrap()]
            .into_iter()
            .collect();
        assert!(set.contains(&Method::Invite));
        assert!(!set.contains(&Method::Bye));
        assert!(!set.contains(&Method::parse("FOO").unwrap()));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![Method::Invite, Method::Ack]
        );
        assert_eq!(MethodSet::all_known().iter().count(), 14);
    }
}
