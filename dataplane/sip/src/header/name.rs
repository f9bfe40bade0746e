//! Header field names: the known set with canonical spelling and compact
//! forms (RFC 3261 §7.3.3 and the extension RFCs that define letters), and
//! unknown names kept in their original spelling.
//!
//! Names compare ignoring ASCII case. A known name parsed from its compact
//! form prints in full; an unknown name prints exactly as received, so
//! policy code can strip, say, `X-Bypass-me` whatever its case.

use bytes::Bytes;

use crate::error::ValueError;
use crate::syntax::is_token;

macro_rules! known_headers {
    ($( $variant:ident => $name:literal $(, $compact:literal)? ; )*) => {
        /// A header this stack knows by name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum KnownHeader { $( $variant, )* }

        impl KnownHeader {
            /// Canonical spelling.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $name, )* }
            }

            /// The compact form, if the header has one.
            pub fn compact(self) -> Option<u8> {
                match self {
                    $( $( Self::$variant => Some($compact), )? )*
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }

            fn from_compact(c: u8) -> Option<Self> {
                match c.to_ascii_lowercase() {
                    $( $( $compact => Some(Self::$variant), )? )*
                    _ => None,
                }
            }

            /// Every known header with its canonical spelling.
            const ALL: &'static [(&'static str, KnownHeader)] = &[ $( ($name, KnownHeader::$variant), )* ];
        }
    };
}

known_headers! {
    Accept => "Accept";
    AcceptContact => "Accept-Contact", b'a';
    AcceptEncoding => "Accept-Encoding";
    AcceptLanguage => "Accept-Language";
    AlertInfo => "Alert-Info";
    Allow => "Allow";
    AllowEvents => "Allow-Events", b'u';
    AuthenticationInfo => "Authentication-Info";
    Authorization => "Authorization";
    CallId => "Call-ID", b'i';
    CallInfo => "Call-Info";
    Contact => "Contact", b'm';
    ContentDisposition => "Content-Disposition";
    ContentEncoding => "Content-Encoding", b'e';
    ContentLanguage => "Content-Language";
    ContentLength => "Content-Length", b'l';
    ContentType => "Content-Type", b'c';
    CSeq => "CSeq";
    Date => "Date";
    ErrorInfo => "Error-Info";
    Event => "Event", b'o';
    Expires => "Expires";
    From => "From", b'f';
    Identity => "Identity", b'y';
    InReplyTo => "In-Reply-To";
    MaxForwards => "Max-Forwards";
    MimeVersion => "MIME-Version";
    MinExpires => "Min-Expires";
    MinSe => "Min-SE";
    Organization => "Organization";
    PAssertedIdentity => "P-Asserted-Identity";
    PPreferredIdentity => "P-Preferred-Identity";
    Path => "Path";
    Priority => "Priority";
    Privacy => "Privacy";
    ProxyAuthenticate => "Proxy-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyRequire => "Proxy-Require";
    RAck => "RAck";
    Reason => "Reason";
    RecordRoute => "Record-Route";
    ReferTo => "Refer-To", b'r';
    ReferredBy => "Referred-By", b'b';
    RejectContact => "Reject-Contact", b'j';
    Replaces => "Replaces";
    ReplyTo => "Reply-To";
    RequestDisposition => "Request-Disposition", b'd';
    Require => "Require";
    RetryAfter => "Retry-After";
    Route => "Route";
    RSeq => "RSeq";
    Server => "Server";
    ServiceRoute => "Service-Route";
    SessionExpires => "Session-Expires", b'x';
    Subject => "Subject", b's';
    SubscriptionState => "Subscription-State";
    Supported => "Supported", b'k';
    Timestamp => "Timestamp";
    To => "To", b't';
    Unsupported => "Unsupported";
    UserAgent => "User-Agent";
    Via => "Via", b'v';
    Warning => "Warning";
    WwwAuthenticate => "WWW-Authenticate";
}

/// Candidates per lookup bucket; checked when the table is built.
const SLOTS: usize = 4;
const EMPTY: u8 = u8::MAX;

/// Buckets by (length, first letter ignoring case): a lookup compares the
/// name with at most `SLOTS` candidates instead of scanning every name.
const fn bucket(len: usize, first: u8) -> usize {
    ((len & 31) << 5) | (first.to_ascii_lowercase() & 31) as usize
}

const BUCKETS: [[u8; SLOTS]; 1024] = {
    let mut table = [[EMPTY; SLOTS]; 1024];
    let mut i = 0;
    while i < KnownHeader::ALL.len() {
        let name = KnownHeader::ALL[i].0.as_bytes();
        let slots = &mut table[bucket(name.len(), name[0])];
        let mut s = 0;
        while slots[s] != EMPTY {
            s += 1;
            assert!(s < SLOTS, "header lookup bucket overflow: raise SLOTS");
        }
        slots[s] = i as u8;
        i += 1;
    }
    table
};

impl KnownHeader {
    /// Looks a wire name up, ignoring case and accepting compact forms.
    pub fn lookup(name: &[u8]) -> Option<Self> {
        if let [c] = name {
            return Self::from_compact(*c);
        }
        let slots = BUCKETS.get(bucket(name.len(), *name.first()?))?;
        slots
            .iter()
            .take_while(|&&i| i != EMPTY)
            .filter_map(|&i| Self::ALL.get(usize::from(i)))
            .find(|(known, _)| known.as_bytes().eq_ignore_ascii_case(name))
            .map(|(_, k)| *k)
    }

    /// Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1),
    /// so several lines may be combined and one line may hold many values.
    pub fn is_list(self) -> bool {
        use KnownHeader::*;
        matches!(
            self,
            Accept
                | AcceptContact
                | AcceptEncoding
                | AcceptLanguage
                | AlertInfo
                | Allow
                | AllowEvents
                | CallInfo
                | Contact
                | ContentEncoding
                | ContentLanguage
                | ErrorInfo
                | InReplyTo
                | PAssertedIdentity
                | PPreferredIdentity
                | Path
                | Privacy
                | ProxyRequire
                | Reason
                | RecordRoute
                | RejectContact
                | RequestDisposition
                | Require
                | Route
                | ServiceRoute
                | Supported
                | Unsupported
                | Via
                | Warning
        )
    }
}

/// A header field name.
#[derive(Debug, Clone)]
pub enum HeaderName {
    Known(KnownHeader),
    /// Any other token, in its original spelling.
    Other(Bytes),
}

impl HeaderName {
    /// Classifies a wire name; `name` must be a sub-slice of `owner`.
    pub(crate) fn from_wire(owner: &Bytes, name: &[u8]) -> Self {
        match KnownHeader::lookup(name) {
            Some(k) => Self::Known(k),
            None => Self::Other(owner.slice_ref(name)),
        }
    }

    /// Parses a name (must be an RFC 3261 token).
    pub fn parse(name: impl Into<Bytes>) -> Result<Self, ValueError> {
        let name = name.into();
        if is_token(&name) {
            Ok(Self::from_wire(&name, &name))
        } else {
            Err(ValueError::Malformed)
        }
    }

    /// The spelling the printer uses.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Known(k) => k.as_str().as_bytes(),
            Self::Other(b) => b,
        }
    }

    /// The known header, if any.
    pub fn known(&self) -> Option<KnownHeader> {
        match self {
            Self::Known(k) => Some(*k),
            Self::Other(_) => None,
        }
    }

    /// `true` if this is `name`, ignoring case (compact forms included).
    pub fn is(&self, name: &[u8]) -> bool {
        match KnownHeader::lookup(name) {
            Some(k) => self.known() == Some(k),
            None => self.as_bytes().eq_ignore_ascii_case(name),
        }
    }
}

impl From<KnownHeader> for HeaderName {
    fn from(k: KnownHeader) -> Self {
        Self::Known(k)
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Known(a), Self::Known(b)) => a == b,
            (Self::Other(a), Self::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

impl Eq for HeaderName {}

impl std::fmt::Display for KnownHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case_and_maps_compact_forms() {
        assert_eq!(KnownHeader::lookup(b"ViA"), Some(KnownHeader::Via));
        assert_eq!(KnownHeader::lookup(b"V"), Some(KnownHeader::Via));
        assert_eq!(KnownHeader::lookup(b"i"), Some(KnownHeader::CallId));
        assert_eq!(
            KnownHeader::lookup(b"MaX-fOrWaRdS"),
            Some(KnownHeader::MaxForwards)
        );
        assert_eq!(
            KnownHeader::lookup(b"www-authenticate"),
            Some(KnownHeader::WwwAuthenticate)
        );
        assert_eq!(KnownHeader::lookup(b"C%6Fntact"), None);
        assert_eq!(KnownHeader::lookup(b"q"), None);
        assert_eq!(KnownHeader::lookup(&[b'a'; 200]), None);
        for (c, k) in [
            (b'a', KnownHeader::AcceptContact),
            (b'b', KnownHeader::ReferredBy),
            (b'c', KnownHeader::ContentType),
            (b'd', KnownHeader::RequestDisposition),
            (b'e', KnownHeader::ContentEncoding),
            (b'f', KnownHeader::From),
            (b'j', KnownHeader::RejectContact),
            (b'k', KnownHeader::Supported),
            (b'l', KnownHeader::ContentLength),
            (b'm', KnownHeader::Contact),
            (b'o', KnownHeader::Event),
            (b'r', KnownHeader::ReferTo),
            (b's', KnownHeader::Subject),
            (b't', KnownHeader::To),
            (b'u', KnownHeader::AllowEvents),
            (b'x', KnownHeader::SessionExpires),
            (b'y', KnownHeader::Identity),
        ] {
            assert_eq!(KnownHeader::lookup(&[c]), Some(k));
            assert_eq!(k.compact(), Some(c));
        }
    }

    #[test]
    fn unknown_names_keep_their_spelling() {
        let n = HeaderName::parse("X-Bypass-me").unwrap();
        assert_eq!(n.as_bytes(), b"X-Bypass-me");
        assert!(n.is(b"x-bypass-ME"));
        assert_eq!(n, HeaderName::parse("X-BYPASS-ME").unwrap());
        assert!(HeaderName::parse("Bad Name").is_err());
        assert_eq!(
            HeaderName::parse("l").unwrap().as_bytes(),
            b"Content-Length"
        );
        assert!(HeaderName::Known(KnownHeader::ContentLength).is(b"l"));
    }
}
