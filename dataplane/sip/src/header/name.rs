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

/// Longest known name, in 8-byte words: names are compared a word at a
/// time rather than a byte at a time.
const WORDS: usize = 3;
const KEY_BYTES: usize = WORDS * 8;

/// A known name as words for comparison: `mask` has 0x20 in every letter
/// position and `folded` the name with that bit set there, so
/// `wire | mask == folded` exactly when the wire name equals the known
/// one ignoring ASCII case. Other bytes (`-`) must match exactly, and the
/// zero padding past the end matches only a name of the same length.
#[derive(Clone, Copy)]
struct Key {
    folded: [u64; WORDS],
    mask: [u64; WORDS],
}

const KEYS: [Key; KnownHeader::ALL.len()] = {
    let mut keys = [Key {
        folded: [0; WORDS],
        mask: [0; WORDS],
    }; KnownHeader::ALL.len()];
    let mut i = 0;
    while i < KnownHeader::ALL.len() {
        let name = KnownHeader::ALL[i].0.as_bytes();
        assert!(name.len() <= KEY_BYTES, "a known header name is too long");
        let mut j = 0;
        while j < name.len() {
            let (byte, fold) = if name[j].is_ascii_alphabetic() {
                (name[j] | 0x20, 0x20u64)
            } else {
                (name[j], 0)
            };
            keys[i].folded[j / 8] |= (byte as u64) << (8 * (j % 8));
            keys[i].mask[j / 8] |= fold << (8 * (j % 8));
            j += 1;
        }
        i += 1;
    }
    keys
};

/// Up to 8 bytes as a little-endian word, zero above them. Two
/// overlapping loads cover every length without a byte loop; the bytes
/// both loads hold are the same, so OR-ing them is exact.
fn load_le(b: &[u8]) -> u64 {
    fn word<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
        b.get(..N).and_then(|s| s.try_into().ok())
    }
    let n = b.len();
    let tail = |k: usize| b.get(n.saturating_sub(k)..).unwrap_or_default();
    match n {
        8.. => word::<8>(b).map_or(0, u64::from_le_bytes),
        4..=7 => {
            let lo = word::<4>(b).map_or(0, u32::from_le_bytes);
            let hi = word::<4>(tail(4)).map_or(0, u32::from_le_bytes);
            u64::from(lo) | (u64::from(hi) << (8 * (n - 4)))
        }
        2..=3 => {
            let lo = word::<2>(b).map_or(0, u16::from_le_bytes);
            let hi = word::<2>(tail(2)).map_or(0, u16::from_le_bytes);
            u64::from(lo) | (u64::from(hi) << (8 * (n - 2)))
        }
        1 => b.first().map_or(0, |&x| u64::from(x)),
        0 => 0,
    }
}

/// `name` (at most `KEY_BYTES` long) as little-endian words, zero-padded.
fn words(name: &[u8]) -> [u64; WORDS] {
    let mut out = [0u64; WORDS];
    for (w, chunk) in out.iter_mut().zip(name.chunks(8)) {
        *w = load_le(chunk);
    }
    out
}

impl KnownHeader {
    /// Looks a wire name up, ignoring case and accepting compact forms.
    pub fn lookup(name: &[u8]) -> Option<Self> {
        if let [c] = name {
            return Self::from_compact(*c);
        }
        if name.len() > KEY_BYTES {
            return None;
        }
        let slots = BUCKETS.get(bucket(name.len(), *name.first()?))?;
        let wire = words(name);
        slots
            .iter()
            .take_while(|&&i| i != EMPTY)
            .map(|&i| usize::from(i))
            .find(|&i| {
                KEYS.get(i)
                    .is_some_and(|k| (0..WORDS).all(|w| wire[w] | k.mask[w] == k.folded[w]))
            })
            .and_then(|i| Self::ALL.get(i))
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
    /// Inlined into the framer so the name is built where it is stored,
    /// not returned through memory and copied (a stalled load per header).
    #[inline(always)]
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

    /// The reference the word-wise lookup must agree with: every known
    /// name compared byte by byte, ignoring ASCII case.
    fn lookup_by_scan(name: &[u8]) -> Option<KnownHeader> {
        if let [c] = name {
            return KnownHeader::from_compact(*c);
        }
        KnownHeader::ALL
            .iter()
            .find(|(known, _)| known.as_bytes().eq_ignore_ascii_case(name))
            .map(|(_, k)| *k)
    }

    #[test]
    fn lookup_matches_every_spelling_of_every_known_name_and_nothing_near_it() {
        for (name, k) in KnownHeader::ALL {
            let b = name.as_bytes();
            assert_eq!(KnownHeader::lookup(b), Some(*k), "{name}");
            assert_eq!(KnownHeader::lookup(&b.to_ascii_lowercase()), Some(*k));
            assert_eq!(KnownHeader::lookup(&b.to_ascii_uppercase()), Some(*k));
            // One byte off anywhere, a byte more or less: no match. The
            // 0x20 bit flipped on a `-` gives CR, which must not match
            // although case folding flips exactly that bit on letters.
            for i in 0..b.len() {
                for flip in [0x20u8, 0x01, 0x40] {
                    let mut near = b.to_vec();
                    near[i] ^= flip;
                    assert_eq!(
                        KnownHeader::lookup(&near),
                        lookup_by_scan(&near),
                        "{name} with byte {i} ^ {flip:#x}"
                    );
                }
            }
            assert_eq!(
                KnownHeader::lookup(&b[..b.len() - 1]),
                lookup_by_scan(&b[..b.len() - 1])
            );
            let mut longer = b.to_vec();
            longer.push(b'a');
            assert_eq!(KnownHeader::lookup(&longer), None);
            longer.truncate(b.len());
            longer.push(0);
            assert_eq!(KnownHeader::lookup(&longer), None);
        }
        assert_eq!(KnownHeader::lookup(b"Call\rID"), None);
        assert_eq!(KnownHeader::lookup(b"Min\rSE"), None);
        assert_eq!(KnownHeader::lookup(b""), None);
    }

    #[test]
    fn words_are_the_bytes_little_endian_and_zero_padded() {
        let name = b"abcdefghijklmnopqrstuvw";
        for n in 0..=name.len() {
            let mut padded = [0u8; KEY_BYTES];
            padded[..n].copy_from_slice(&name[..n]);
            let want: Vec<u64> = padded
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(words(&name[..n]).to_vec(), want, "length {n}");
        }
    }

    proptest::proptest! {
        #[test]
        fn lookup_agrees_with_a_plain_scan(name in proptest::collection::vec(
            proptest::sample::select(b"aAcCdDeEiIlLmMnNoOrRsStTvV-\r\x00\x0d\x2d\xff".to_vec()), 0..30)) {
            proptest::prop_assert_eq!(KnownHeader::lookup(&name), lookup_by_scan(&name));
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
