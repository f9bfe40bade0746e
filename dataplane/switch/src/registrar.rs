//! The registrar (RFC 3261 §10.3): bindings of a user's address-of-record
//! to contacts, with expiry, several contacts per user (calls fork to all),
//! and the parameters of each Contact kept as the phone sent them (RFC 4475
//! `cparam01`/`cparam02`: URI parameters stay inside the URI, header
//! parameters after it, and only `expires` is ours to rewrite).
//!
//! Sans-IO: the caller passes `now` and the parsed request parts; digest
//! checking happens before this (see `codeb_sip::digest::Verifier`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use codeb_io::ConnId;
use codeb_sip::header::Contact;

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI, as sent.
    pub uri: String,
    /// Header parameters after the URI, as sent, without `expires`.
    pub params: String,
    pub expires_at: Instant,
    pub call_id: Vec<u8>,
    pub cseq: u32,
    /// Where the REGISTER came from (the contact may sit behind NAT).
    pub source: SocketAddr,
    /// The TCP connection the REGISTER came on (from `source`), if it came
    /// over TCP: a contact that asks for TCP is reached over it while it
    /// is open (RFC 3261 §18.1.1 connection reuse; a phone behind NAT can
    /// be reached no other way).
    pub conn: Option<ConnId>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// 423 with Min-Expires.
    #[error("interval too brief")]
    IntervalTooBrief { min: u32 },
    /// 400: `Contact: *` with other contacts or a non-zero Expires.
    #[error("Contact: * needs Expires: 0 and no other contact")]
    BadStar,
    /// 500 (RFC 3261 §10.3 step 7): a CSeq not above the stored one for
    /// the same Call-ID.
    #[error("out-of-order REGISTER")]
    OutOfOrder,
    /// 503: the table or the user's contact list is full.
    #[error("too many bindings")]
    Full,
}

#[derive(Debug, Clone)]
pub struct RegistrarLimits {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_per_user: usize,
    pub max_total: usize,
}

impl Default for RegistrarLimits {
    fn default() -> Self {
        RegistrarLimits {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_per_user: 10,
            max_total: 100_000,
        }
    }
}

/// A REGISTER, as far as the registrar cares.
#[derive(Debug)]
pub struct Registration<'a> {
    pub user: &'a str,
    pub contacts: &'a [Contact],
    pub header_expires: Option<u32>,
    pub call_id: &'a [u8],
    pub cseq: u32,
    pub source: SocketAddr,
    /// The TCP connection it came on, if any.
    pub conn: Option<ConnId>,
}

#[derive(Debug, Default)]
pub struct Registrar {
    limits: RegistrarLimits,
    bindings: HashMap<String, Vec<Binding>>,
    total: usize,
}

fn uri_text(c: &Contact) -> Option<(String, String)> {
    let a = c.addr()?;
    let mut out = BytesMut::new();
    a.uri.render(&mut out);
    let uri = String::from_utf8(out.to_vec()).ok()?;
    let params: Vec<String> = a
        .params
        .iter()
        .filter(|p| !p.name.eq_ignore_ascii_case(b"expires"))
        .map(|p| match p.value {
            Some(v) => format!(
                ";{}={}",
                String::from_utf8_lossy(p.name),
                String::from_utf8_lossy(v)
            ),
            None => format!(";{}", String::from_utf8_lossy(p.name)),
        })
        .collect();
    Some((uri, params.concat()))
}

impl Registrar {
    pub fn new(limits: RegistrarLimits) -> Registrar {
        Registrar {
            limits,
            bindings: HashMap::new(),
            total: 0,
        }
    }

    pub fn limits(&self) -> &RegistrarLimits {
        &self.limits
    }

    /// Applies a REGISTER; returns the user's bindings afterwards (for the
    /// 200's Contact headers).
    pub fn register(
        &mut self,
        r: &Registration<'_>,
        now: Instant,
    ) -> Result<Vec<Binding>, RegisterError> {
        self.purge_user(r.user, now);
        let star = r.contacts.iter().any(|c| matches!(c, Contact::Star));
        if star {
            if r.contacts.len() != 1 || r.header_expires != Some(0) {
                return Err(RegisterError::BadStar);
            }
            if let Some(list) = self.bindings.remove(r.user) {
                self.total -= list.len();
            }
            return Ok(Vec::new());
        }
        // Validate everything first, so a refused request changes nothing.
        let mut plans = Vec::new();
        for c in r.contacts {
            let Some((uri, params)) = uri_text(c) else {
                continue;
            };
            let expires = c
                .expires()
                .or(r.header_expires)
                .unwrap_or(self.limits.default_expires);
            if expires != 0 && expires < self.limits.min_expires {
                return Err(RegisterError::IntervalTooBrief {
                    min: self.limits.min_expires,
                });
            }
            if let Some(existing) = self
                .bindings
                .get(r.user)
                .and_then(|l| l.iter().find(|b| b.uri == uri))
                && existing.call_id == r.call_id
                && r.cseq <= existing.cseq
            {
                return Err(RegisterError::OutOfOrder);
            }
            plans.push((uri, params, expires.min(self.limits.max_expires)));
        }
        let list = self.bindings.entry(r.user.to_owned()).or_default();
        let before = list.len();
        for (uri, params, expires) in plans {
            list.retain(|b| b.uri != uri);
            if expires > 0 {
                list.push(Binding {
                    uri,
                    params,
                    expires_at: now + Duration::from_secs(u64::from(expires)),
                    call_id: r.call_id.to_vec(),
                    cseq: r.cseq,
                    source: r.source,
                    conn: r.conn,
                });
            }
        }
        let after = list.len();
        if after > self.limits.max_per_user || self.total - before + after > self.limits.max_total {
            // Undo by dropping the newest entries beyond the limits.
            list.truncate(before.min(self.limits.max_per_user));
            self.total = self.total - before + list.len();
            return Err(RegisterError::Full);
        }
        self.total = self.total - before + after;
        let current = list.clone();
        if current.is_empty() {
            self.bindings.remove(r.user);
        }
        Ok(current)
    }

    fn purge_user(&mut self, user: &str, now: Instant) {
        if let Some(list) = self.bindings.get_mut(user) {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            self.total -= before - list.len();
            if list.is_empty() {
                self.bindings.remove(user);
            }
        }
    }

    /// Live bindings of a user.
    pub fn lookup(&self, user: &str, now: Instant) -> Vec<&Binding> {
        self.bindings
            .get(user)
            .map(|l| l.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default()
    }

    /// Drops every expired binding (call now and then).
    pub fn purge(&mut self, now: Instant) {
        let mut dropped = 0;
        self.bindings.retain(|_, list| {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            dropped += before - list.len();
            !list.is_empty()
        });
        self.total -= dropped;
    }

    /// The TCP connections live bindings were registered over: a phone
    /// reachable only through its own connection (behind NAT) must keep
    /// it for as long as it is registered.
    pub fn connections(&self, now: Instant) -> impl Iterator<Item = ConnId> + '_ {
        self.bindings
            .values()
            .flatten()
            .filter(move |b| b.expires_at > now)
            .filter_map(|b| b.conn)
    }

    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use codeb_sip::Limits;

    fn contact(s: &str) -> Contact {
        let b = Bytes::copy_from_slice(s.as_bytes());
        Contact::parse(&b, &b, &Limits::default()).unwrap()
    }

    fn reg<'a>(contacts: &'a [Contact], expires: Option<u32>, cseq: u32) -> Registration<'a> {
        Registration {
            user: "alex",
            contacts,
            header_expires: expires,
            call_id: b"c1",
            cseq,
            source: "192.0.2.1:5060".parse().unwrap(),
            conn: None,
        }
    }

    #[test]
    fn bind_refresh_remove() {
        let mut r = Registrar::new(RegistrarLimits::default());
        let t = Instant::now();
        let c = [contact(
            "<sip:alex@192.0.2.1:5060;transport=udp>;+sip.instance=\"<urn:uuid:1>\";expires=120",
        )];
        let b = r.register(&reg(&c, Some(3600), 1), t).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].uri, "sip:alex@192.0.2.1:5060;transport=udp",
            "URI parameters stay in the URI"
        );
        assert_eq!(
            b[0].params, ";+sip.instance=\"<urn:uuid:1>\"",
            "header parameters kept, expires ours"
        );
        assert_eq!(
            b[0].expires_at,
            t + Duration::from_secs(120),
            "the contact's expires wins"
        );
        let two = [contact("<sip:alex@198.51.100.2>")];
        assert_eq!(
            r.register(&reg(&two, Some(7200), 2), t).unwrap().len(),
            2,
            "forks to both"
        );
        assert_eq!(
            r.lookup("alex", t)[1].expires_at,
            t + Duration::from_secs(3600),
            "clamped to max"
        );
        assert_eq!(
            r.lookup("alex", t + Duration::from_secs(121)).len(),
            1,
            "the first expired"
        );
        assert_eq!(
            r.register(&reg(&two, Some(1), 3), t),
            Err(RegisterError::IntervalTooBrief { min: 60 })
        );
        assert_eq!(
            r.register(&reg(&two, Some(600), 2), t),
            Err(RegisterError::OutOfOrder)
        );
        let star = [contact("*")];
        assert_eq!(
            r.register(&reg(&star, Some(10), 4), t),
            Err(RegisterError::BadStar)
        );
        assert_eq!(r.register(&reg(&star, Some(0), 4), t).unwrap(), vec![]);
        assert!(r.lookup("alex", t).is_empty());
        assert_eq!(r.total(), 0);
    }

    #[test]
    fn bounded() {
        let mut r = Registrar::new(RegistrarLimits {
            max_per_user: 2,
            ..RegistrarLimits::default()
        });
        let t = Instant::now();
        let cs: Vec<Contact> = (1..=3)
            .map(|i| contact(&format!("<sip:alex@192.0.2.{i}>")))
            .collect();
        assert_eq!(r.register(&reg(&cs, None, 1), t), Err(RegisterError::Full));
        assert!(r.lookup("alex", t).len() <= 2);
        assert_eq!(r.total(), r.lookup("alex", t).len());
    }
}
