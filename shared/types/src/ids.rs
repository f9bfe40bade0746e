//! Identifiers and their wire forms. Each id is a fixed prefix plus lowercase
//! hex of a fixed length (`oac-0123456789ab`, `tr_0123456789abcdef`, ...).
//! Parsing is strict so a path segment that is not an id of the right kind
//! is told apart from an id that does not exist.

use std::fmt;

/// A string that is not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    pub kind: &'static str,
    pub expected: &'static str,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a valid {} id (expected {})",
            self.kind, self.expected
        )
    }
}

impl std::error::Error for IdError {}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex_of(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal, $bytes:literal, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            /// Number of random bytes behind the hex part.
            pub const RANDOM_BYTES: usize = $bytes;

            /// Builds an id from random bytes the caller drew from the OS RNG.
            pub fn from_random(bytes: [u8; $bytes]) -> Self {
                $name(format!("{}{}", $prefix, hex_of(&bytes)))
            }

            pub fn parse(s: &str) -> Result<Self, IdError> {
                let err = || IdError { kind: $kind, expected: $expected };
                let rest = s.strip_prefix($prefix).ok_or_else(err)?;
                if rest.len() != $bytes * 2 || !is_lower_hex(rest) {
                    return Err(err());
                }
                Ok($name(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// An outbound AI call: `oac-` + 12 hex.
    CallId, "call", "oac-", 6, "oac- followed by 12 lowercase hex digits"
);
prefixed_id!(
    /// An inbound call to a virtual number: `vnum` + 12 hex.
    VnumCallId, "vnum call", "vnum", 6, "vnum followed by 12 lowercase hex digits"
);
prefixed_id!(
    /// A SIP trunk: `tr_` + 16 hex.
    TrunkId, "trunk", "tr_", 8, "tr_ followed by 16 lowercase hex digits"
);
prefixed_id!(
    /// A webhook subscription: 16 hex.
    SubscriptionId, "webhook", "", 8, "16 lowercase hex digits"
);
prefixed_id!(
    /// An API key's public id (never the key itself): `key_` + 16 hex.
    ApiKeyId, "api key", "key_", 8, "key_ followed by 16 lowercase hex digits"
);
prefixed_id!(
    /// A platform user (admin or viewer): `usr_` + 16 hex.
    UserId, "user", "usr_", 8, "usr_ followed by 16 lowercase hex digits"
);
prefixed_id!(
    /// A transcript share link's id (not its token): `sh_` + 16 hex.
    ShareId, "share", "sh_", 8, "sh_ followed by 16 lowercase hex digits"
);
prefixed_id!(
    /// One event the platform emitted (a call ended, a share was viewed):
    /// `evt_` + 16 hex.
    EventId, "event", "evt_", 8, "evt_ followed by 16 lowercase hex digits"
);
prefixed_id!(
    /// One event on its way to one subscription: `dlv_` + 16 hex. Sent as
    /// `X-CodeB-Delivery-Id` and `webhook-id`, the same on every attempt.
    DeliveryId, "delivery", "dlv_", 8, "dlv_ followed by 16 lowercase hex digits"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shape() {
        let c = CallId::from_random([0x01, 0x23, 0x45, 0x67, 0x89, 0xab]);
        assert_eq!(c.as_str(), "oac-0123456789ab");
        assert_eq!(CallId::parse("oac-0123456789ab").unwrap(), c);
        let t = TrunkId::from_random([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        assert_eq!(t.as_str(), "tr_0123456789abcdef");
        let v = VnumCallId::from_random([0; 6]);
        assert_eq!(v.as_str(), "vnum000000000000");
        let s = SubscriptionId::from_random([0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10]);
        assert_eq!(s.as_str(), "fedcba9876543210");
    }

    #[test]
    fn strict_parse() {
        for bad in [
            "oac-0123456789AB",
            "oac-0123456789a",
            "oac-0123456789abc",
            "OAC-0123456789ab",
            "0123456789ab",
            "oac-01234567 9ab",
            "",
        ] {
            assert!(CallId::parse(bad).is_err(), "{bad}");
        }
        assert!(TrunkId::parse("tr_0123456789abcdeg").is_err());
        assert!(SubscriptionId::parse("0123456789abcdef0").is_err());
    }

    #[test]
    fn serde_checks_shape() {
        let c: CallId = serde_json::from_str("\"oac-0123456789ab\"").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"oac-0123456789ab\"");
        assert!(serde_json::from_str::<CallId>("\"oac-x\"").is_err());
    }
}
