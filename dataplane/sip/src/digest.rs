//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760):
//! answering a trunk's challenge as a client, and challenging and checking
//! REGISTERs as a registrar.
//!
//! Algorithms MD5 and SHA-256 (and their `-sess` forms), `qop=auth` or no
//! qop (RFC 2069 compatibility). `auth-int` is not offered and not answered.
//! Sans-IO: the caller supplies the time and the random bytes.
//!
//! Server nonces are stateless: `<timestamp>.<random>.<mac>`, where the MAC
//! is an HMAC-SHA256 over the first two parts and the realm under a key only
//! the registrar knows. A nonce is accepted while younger than its maximum
//! age; an older one earns a `stale=true` challenge, so the phone retries
//! without asking its user for the password again.

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::header::Auth;

/// Digest hash algorithms, strongest first in preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha256Sess,
    Md5,
    Md5Sess,
}

impl Algorithm {
    pub fn parse(s: &[u8]) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case(b"MD5") {
            Some(Algorithm::Md5)
        } else if s.eq_ignore_ascii_case(b"MD5-sess") {
            Some(Algorithm::Md5Sess)
        } else if s.eq_ignore_ascii_case(b"SHA-256") {
            Some(Algorithm::Sha256)
        } else if s.eq_ignore_ascii_case(b"SHA-256-sess") {
            Some(Algorithm::Sha256Sess)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    fn rank(self) -> u8 {
        match self {
            Algorithm::Sha256 | Algorithm::Sha256Sess => 2,
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
        }
    }

    /// Lowercase hex of the hash of `parts` joined by `:`.
    fn hash(self, parts: &[&[u8]]) -> String {
        fn run<D: Digest>(parts: &[&[u8]]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            hex(&d.finalize())
        }
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => run::<Md5>(parts),
            Algorithm::Sha256 | Algorithm::Sha256Sess => run::<Sha256>(parts),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("not a Digest challenge")]
    NotDigest,
    #[error("challenge lacks realm or nonce")]
    Incomplete,
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("challenge offers only qop values we do not support")]
    UnsupportedQop,
    #[error("credential value contains a quote, backslash or control character")]
    BadCharacters,
}

/// A parsed Digest challenge (WWW-Authenticate / Proxy-Authenticate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offered `qop=auth` (we then use it).
    pub qop_auth: bool,
    pub stale: bool,
}

fn text(v: Option<std::borrow::Cow<'_, [u8]>>) -> Option<String> {
    v.and_then(|b| String::from_utf8(b.into_owned()).ok())
}

impl Challenge {
    pub fn from_auth(a: &Auth) -> Result<Challenge, DigestError> {
        if !a.is_digest() {
            return Err(DigestError::NotDigest);
        }
        let realm = text(a.realm()).ok_or(DigestError::Incomplete)?;
        let nonce = text(a.nonce()).ok_or(DigestError::Incomplete)?;
        let algorithm = match a.algorithm() {
            None => Algorithm::Md5,
            Some(v) => Algorithm::parse(&v).ok_or(DigestError::UnsupportedAlgorithm)?,
        };
        let qop_auth = match a.qop() {
            None => false,
            Some(q) => {
                let offered = q.split(|b| *b == b',').map(|t| t.trim_ascii());
                let mut auth = false;
                for t in offered {
                    auth |= t.eq_ignore_ascii_case(b"auth");
                }
                if !auth {
                    return Err(DigestError::UnsupportedQop);
                }
                true
            }
        };
        Ok(Challenge {
            realm,
            nonce,
            opaque: text(a.opaque()),
            algorithm,
            qop_auth,
            stale: a.stale(),
        })
    }
}

/// The challenge to answer among several (RFC 8760 §2.4: the strongest
/// algorithm we support), considering only `realm` when given: a trunk
/// answers challenges for its own realm and no other.
pub fn pick_challenge<'a>(
    challenges: impl IntoIterator<Item = &'a Auth>,
    realm: Option<&str>,
) -> Option<Challenge> {
    challenges
        .into_iter()
        .filter_map(|a| Challenge::from_auth(a).ok())
        .filter(|c| realm.is_none_or(|r| c.realm == r))
        .max_by_key(|c| c.algorithm.rank())
}

/// Parameters of one answer to a challenge.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    /// The Request-URI, exactly as sent.
    pub uri: &'a str,
    /// Client nonce (random, from the caller); used with qop or -sess.
    pub cnonce: &'a str,
    /// How many times this nonce has been used, starting at 1.
    pub nc: u32,
}

fn safe(s: &str) -> Result<&str, DigestError> {
    if s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        Err(DigestError::BadCharacters)
    } else {
        Ok(s)
    }
}

/// The per-request inputs of the response hash.
struct Exchange<'a> {
    nonce: &'a str,
    cnonce: &'a str,
    nc: &'a str,
    qop: Option<&'a str>,
    method: &'a str,
    uri: &'a str,
}

fn response_hash(alg: Algorithm, ha1_plain: &str, x: &Exchange<'_>) -> String {
    let ha1 = if alg.is_sess() {
        alg.hash(&[
            ha1_plain.as_bytes(),
            x.nonce.as_bytes(),
            x.cnonce.as_bytes(),
        ])
    } else {
        ha1_plain.to_owned()
    };
    let ha2 = alg.hash(&[x.method.as_bytes(), x.uri.as_bytes()]);
    match x.qop {
        Some(q) => alg.hash(&[
            ha1.as_bytes(),
            x.nonce.as_bytes(),
            x.nc.as_bytes(),
            x.cnonce.as_bytes(),
            q.as_bytes(),
            ha2.as_bytes(),
        ]),
        None => alg.hash(&[ha1.as_bytes(), x.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// The Authorization / Proxy-Authorization header value answering `ch`.
pub fn authorize(ch: &Challenge, a: &Answer<'_>) -> Result<String, DigestError> {
    let username = safe(a.username)?;
    let uri = safe(a.uri)?;
    let cnonce = safe(a.cnonce)?;
    safe(&ch.realm)?;
    safe(&ch.nonce)?;
    let ha1 = ch.algorithm.hash(&[
        username.as_bytes(),
        ch.realm.as_bytes(),
        a.password.as_bytes(),
    ]);
    let nc = format!("{:08x}", a.nc);
    let qop = ch.qop_auth.then_some("auth");
    let x = Exchange {
        nonce: &ch.nonce,
        cnonce,
        nc: &nc,
        qop,
        method: a.method,
        uri,
    };
    let response = response_hash(ch.algorithm, &ha1, &x);
    let mut v = format!(
        "Digest username=\"{username}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
        ch.realm,
        ch.nonce,
        ch.algorithm.as_str()
    );
    if qop.is_some() || ch.algorithm.is_sess() {
        v.push_str(&format!(", cnonce=\"{cnonce}\""));
    }
    if qop.is_some() {
        v.push_str(&format!(", qop=auth, nc={nc}"));
    }
    if let Some(o) = &ch.opaque {
        v.push_str(&format!(", opaque=\"{}\"", safe(o)?));
    }
    Ok(v)
}

/// The registrar side: nonce minting and credential checking.
#[derive(Clone)]
pub struct Verifier {
    key: [u8; 32],
    realm: String,
    /// Nonces older than this are stale.
    pub max_age_secs: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// Outcome of checking credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Ok,
    /// Right password, old nonce: challenge again with `stale=true`.
    Stale,
    /// Wrong user, password, realm, URI or nonce.
    Bad,
}

impl Verifier {
    pub fn new(key: [u8; 32], realm: impl Into<String>) -> Verifier {
        Verifier {
            key,
            realm: realm.into(),
            max_age_secs: 300,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn mac(&self, ts: &str, rand: &str) -> String {
        #[allow(clippy::expect_used)]
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        m.update(ts.as_bytes());
        m.update(b".");
        m.update(rand.as_bytes());
        m.update(b".");
        m.update(self.realm.as_bytes());
        hex(&m.finalize().into_bytes()[..16])
    }

    /// A fresh nonce for a challenge.
    pub fn nonce(&self, now_secs: u64, random: [u8; 8]) -> String {
        let ts = format!("{now_secs:x}");
        let rand = hex(&random);
        let mac = self.mac(&ts, &rand);
        format!("{ts}.{rand}.{mac}")
    }

    /// The WWW-Authenticate value (offer SHA-256 and MD5 as separate
    /// headers: callers add one header per algorithm).
    pub fn challenge(&self, nonce: &str, algorithm: Algorithm, stale: bool) -> String {
        let mut v = format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
            self.realm,
            algorithm.as_str()
        );
        if stale {
            v.push_str(", stale=true");
        }
        v
    }

    /// Checks `creds` for `method` against the user's password. The caller
    /// has looked the user up by `creds.username()`.
    pub fn check(&self, creds: &Auth, method: &str, password: &str, now_secs: u64) -> Check {
        let get = |v: Option<std::borrow::Cow<'_, [u8]>>| text(v);
        let (Some(user), Some(realm), Some(nonce), Some(uri), Some(resp)) = (
            get(creds.username()),
            get(creds.realm()),
            get(creds.nonce()),
            get(creds.uri()),
            get(creds.response()),
        ) else {
            return Check::Bad;
        };
        if !creds.is_digest() || realm != self.realm {
            return Check::Bad;
        }
        let alg = match creds.algorithm() {
            None => Algorithm::Md5,
            Some(a) => match Algorithm::parse(&a) {
                Some(a) => a,
                None => return Check::Bad,
            },
        };
        let mut parts = nonce.split('.');
        let (Some(ts), Some(rand), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Check::Bad;
        };
        if !ct_eq(self.mac(ts, rand).as_bytes(), mac.as_bytes()) {
            return Check::Bad;
        }
        let Ok(issued) = u64::from_str_radix(ts, 16) else {
            return Check::Bad;
        };
        let qop = get(creds.qop());
        let (cnonce, nc) = (
            get(creds.cnonce()).unwrap_or_default(),
            get(creds.nc()).unwrap_or_default(),
        );
        let qop = match qop.as_deref() {
            None => None,
            Some("auth") => {
                if cnonce.is_empty() || nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Check::Bad;
                }
                Some("auth")
            }
            Some(_) => return Check::Bad,
        };
        let ha1 = alg.hash(&[user.as_bytes(), realm.as_bytes(), password.as_bytes()]);
        let x = Exchange {
            nonce: &nonce,
            cnonce: &cnonce,
            nc: &nc,
            qop,
            method,
            uri: &uri,
        };
        let want = response_hash(alg, &ha1, &x);
        if !ct_eq(want.as_bytes(), resp.to_ascii_lowercase().as_bytes()) {
            return Check::Bad;
        }
        if now_secs.saturating_sub(issued) > self.max_age_secs
            || issued > now_secs.saturating_add(5)
        {
            return Check::Stale;
        }
        Check::Ok
    }
}

/// The nonce counts a registrar has accepted (RFC 7616 §3.4.5, RFC 2617
/// §3.2.2): each use of a nonce must carry a higher `nc` than the last
/// (one without `qop` may be used once), so credentials captured off the
/// wire cannot be sent again while their nonce is fresh. A nonce is
/// remembered until it is stale; at most `max` are (the oldest goes
/// first), which only credentials that checked out can fill.
#[derive(Debug)]
pub struct NonceCounts {
    /// Each nonce's last count.
    seen: std::collections::HashMap<String, u32>,
    /// The nonces in the order they were first used, with that time.
    order: std::collections::VecDeque<(String, u64)>,
    max: usize,
}

impl NonceCounts {
    pub fn new(max: usize) -> NonceCounts {
        NonceCounts {
            seen: std::collections::HashMap::new(),
            order: std::collections::VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Records a use of `creds` (already checked good by
    /// [`Verifier::check`]); false if it repeats an earlier one: a count
    /// not above the last for its nonce, or a second use of a nonce
    /// without `qop`.
    pub fn fresh(&mut self, creds: &Auth, verifier: &Verifier, now_secs: u64) -> bool {
        let Some(nonce) = text(creds.nonce()) else {
            return false;
        };
        let nc = match text(creds.nc()) {
            Some(nc) => match u32::from_str_radix(&nc, 16) {
                Ok(n) if n > 0 => n,
                _ => return false,
            },
            None => 0,
        };
        // Nonces past their age are stale to the verifier anyway.
        let ttl = verifier.max_age_secs.saturating_add(5);
        while let Some((old, at)) = self.order.front()
            && (now_secs.saturating_sub(*at) > ttl || self.order.len() >= self.max)
        {
            self.seen.remove(old);
            self.order.pop_front();
        }
        match self.seen.get_mut(&nonce) {
            Some(last) if nc <= *last => false,
            Some(last) => {
                *last = nc;
                true
            }
            None => {
                self.seen.insert(nonce.clone(), nc);
                self.order.push_back((nonce, now_secs));
                true
            }
        }
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use bytes::Bytes;

    fn auth(s: &str) -> Auth {
        let b = Bytes::copy_from_slice(s.as_bytes());
        Auth::parse(&b, &b, &Limits::default()).unwrap()
    }

    /// Credentials taken off the wire cannot be sent again: each use of a
    /// nonce needs a higher count, a nonce without qop is good once, and
    /// the ledger is bounded and forgets stale nonces.
    #[test]
    fn a_nonce_count_is_accepted_once() {
        let v = Verifier::new([7; 32], "codeb");
        let creds = |nonce: &str, nc: Option<&str>| {
            let nc = nc
                .map(|n| format!(", qop=auth, nc={n}, cnonce=\"c\""))
                .unwrap_or_default();
            auth(&format!(
                "Digest username=\"alex\", realm=\"codeb\", nonce=\"{nonce}\", uri=\"sip:codeb\", response=\"00\"{nc}"
            ))
        };
        let mut seen = NonceCounts::new(3);
        let t = 1_000;
        assert!(seen.fresh(&creds("n1", Some("00000001")), &v, t));
        assert!(
            !seen.fresh(&creds("n1", Some("00000001")), &v, t),
            "a replay"
        );
        assert!(seen.fresh(&creds("n1", Some("00000002")), &v, t));
        assert!(
            !seen.fresh(&creds("n1", Some("00000001")), &v, t),
            "an older count"
        );
        assert!(!seen.fresh(&creds("n1", Some("00000000")), &v, t));
        assert!(!seen.fresh(&creds("n1", Some("zz")), &v, t));
        assert!(seen.fresh(&creds("n2", None), &v, t));
        assert!(!seen.fresh(&creds("n2", None), &v, t), "without qop: once");
        // Bounded: the oldest nonce goes first.
        assert!(seen.fresh(&creds("n3", Some("00000001")), &v, t + 1));
        assert!(seen.fresh(&creds("n4", Some("00000001")), &v, t + 2));
        assert_eq!(seen.len(), 3);
        assert!(
            seen.fresh(&creds("n1", Some("00000001")), &v, t + 2),
            "n1 was forgotten"
        );
        // Stale nonces are forgotten with time.
        assert!(seen.fresh(&creds("n5", Some("00000001")), &v, t + 10_000));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn rfc7616_examples() {
        // RFC 7616 §3.9.1, SHA-256 and MD5 with the same inputs.
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        for (alg, want) in [
            (
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ] {
            let ch = Challenge::from_auth(&auth(&format!(
                "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={alg}, nonce=\"{nonce}\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            )))
            .unwrap();
            let v = authorize(
                &ch,
                &Answer {
                    username: "Mufasa",
                    password: "Circle of Life",
                    method: "GET",
                    uri: "/dir/index.html",
                    cnonce,
                    nc: 1,
                },
            )
            .unwrap();
            assert!(v.contains(&format!("response=\"{want}\"")), "{v}");
            assert!(v.contains("qop=auth, nc=00000001"));
            assert!(v.contains("opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""));
        }
    }

    #[test]
    fn rfc2617_without_qop_shape() {
        let ch = Challenge::from_auth(&auth("Digest realm=\"asterisk\", nonce=\"abc\"")).unwrap();
        assert_eq!(ch.algorithm, Algorithm::Md5);
        assert!(!ch.qop_auth);
        let v = authorize(
            &ch,
            &Answer {
                username: "u",
                password: "p",
                method: "INVITE",
                uri: "sip:x@y",
                cnonce: "c",
                nc: 1,
            },
        )
        .unwrap();
        let ha1 = Algorithm::Md5.hash(&[b"u", b"asterisk", b"p"]);
        let ha2 = Algorithm::Md5.hash(&[b"INVITE", b"sip:x@y"]);
        let want = Algorithm::Md5.hash(&[ha1.as_bytes(), b"abc", ha2.as_bytes()]);
        assert!(
            v.contains(&want) && !v.contains("qop") && !v.contains("cnonce"),
            "{v}"
        );
    }

    #[test]
    fn picks_strongest_for_our_realm() {
        let md5 = auth("Digest realm=\"carrier\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"");
        let sha = auth("Digest realm=\"carrier\", nonce=\"n2\", algorithm=SHA-256, qop=\"auth\"");
        let evil = auth("Digest realm=\"evil\", nonce=\"n3\", algorithm=SHA-256");
        let c = pick_challenge([&md5, &sha, &evil], Some("carrier")).unwrap();
        assert_eq!((c.algorithm, c.nonce.as_str()), (Algorithm::Sha256, "n2"));
        assert!(
            pick_challenge([&evil], Some("carrier")).is_none(),
            "other realms are not answered"
        );
        assert!(
            pick_challenge(
                [&auth("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"")],
                None
            )
            .is_none()
        );
        assert!(
            pick_challenge(
                [&auth(
                    "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256"
                )],
                None
            )
            .is_none()
        );
        assert!(pick_challenge([&auth("Basic realm=\"r\"")], None).is_none());
    }

    #[test]
    fn registrar_round_trip_stale_and_forgery() {
        let v = Verifier::new([7; 32], "codeb");
        let nonce = v.nonce(1000, [1, 2, 3, 4, 5, 6, 7, 8]);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let ch = Challenge::from_auth(&auth(&v.challenge(&nonce, alg, false))).unwrap();
            let answer = |pw| {
                authorize(
                    &ch,
                    &Answer {
                        username: "alex",
                        password: pw,
                        method: "REGISTER",
                        uri: "sip:codeb",
                        cnonce: "xyz",
                        nc: 1,
                    },
                )
                .unwrap()
            };
            let good = auth(&answer("secret"));
            assert_eq!(v.check(&good, "REGISTER", "secret", 1010), Check::Ok);
            assert_eq!(v.check(&good, "REGISTER", "other", 1010), Check::Bad);
            assert_eq!(
                v.check(&good, "INVITE", "secret", 1010),
                Check::Bad,
                "method is bound"
            );
            assert_eq!(
                v.check(&good, "REGISTER", "secret", 1000 + 301),
                Check::Stale
            );
            let wrong = auth(&answer("guess"));
            assert_eq!(v.check(&wrong, "REGISTER", "secret", 1010), Check::Bad);
        }
        // A nonce minted under another key or realm is refused.
        let other = Verifier::new([8; 32], "codeb");
        let forged_nonce = other.nonce(1000, [0; 8]);
        let ch = Challenge::from_auth(&auth(&other.challenge(
            &forged_nonce,
            Algorithm::Md5,
            false,
        )))
        .unwrap();
        let creds = auth(
            &authorize(
                &ch,
                &Answer {
                    username: "alex",
                    password: "secret",
                    method: "REGISTER",
                    uri: "sip:codeb",
                    cnonce: "c",
                    nc: 1,
                },
            )
            .unwrap(),
        );
        assert_eq!(v.check(&creds, "REGISTER", "secret", 1010), Check::Bad);
        assert_eq!(
            v.check(
                &auth("Digest username=\"alex\""),
                "REGISTER",
                "secret",
                1010
            ),
            Check::Bad
        );
    }

    #[test]
    fn refuses_header_injection() {
        let ch = Challenge::from_auth(&auth("Digest realm=\"r\", nonce=\"n\"")).unwrap();
        let bad = Answer {
            username: "a\"b",
            password: "p",
            method: "INVITE",
            uri: "sip:x",
            cnonce: "c",
            nc: 1,
        };
        assert_eq!(authorize(&ch, &bad), Err(DigestError::BadCharacters));
        let bad = Answer {
            username: "a",
            password: "p",
            method: "INVITE",
            uri: "sip:x\r\nVia: evil",
            cnonce: "c",
            nc: 1,
        };
        assert_eq!(authorize(&ch, &bad), Err(DigestError::BadCharacters));
    }
}
