//! SIP and SIPS URIs (RFC 3261 §19.1): userinfo, hostport, uri-parameters
//! and headers, each validated against its character set and kept in
//! escaped wire form.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use super::host::{Host, split_hostport};
use crate::error::ValueError;
use crate::limits::Limits;
use crate::params::{ParamKind, Params};
use crate::syntax::{
    is_escaped_text, is_hnv_char, is_password_char, is_user_char, parse_port, pct_decode,
};

/// `sip:` or `sips:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SipScheme {
    Sip,
    Sips,
}

/// A SIP or SIPS URI. `user`, `password`, `params` and `headers` are in
/// escaped wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub scheme: SipScheme,
    pub user: Option<Bytes>,
    pub password: Option<Bytes>,
    pub host: Host,
    pub port: Option<u16>,
    /// uri-parameters, e.g. `;transport=tcp;lr`.
    pub params: Params,
    /// The `hname=hvalue&...` part after `?`, validated.
    pub headers: Option<Bytes>,
}

impl SipUri {
    /// The user part with `%HH` resolved (RFC 4475 `esc01`: `sips%3Auser%40example.com`
    /// is the user `sips:user@example.com`).
    pub fn user_unescaped(&self) -> Option<Cow<'_, [u8]>> {
        self.user.as_deref().map(pct_decode)
    }

    /// `hname=hvalue` pairs of the URI headers, unescaped.
    pub fn header_pairs(&self) -> impl Iterator<Item = (Cow<'_, [u8]>, Cow<'_, [u8]>)> {
        self.headers
            .as_deref()
            .unwrap_or_default()
            .split(|&b| b == b'&')
            .filter_map(|pair| {
                let eq = pair.iter().position(|&b| b == b'=')?;
                let (name, value) = pair.split_at_checked(eq)?;
                Some((
                    pct_decode(name),
                    pct_decode(value.get(1..).unwrap_or_default()),
                ))
            })
    }

    pub(super) fn parse_after_scheme(
        owner: &Bytes,
        scheme: SipScheme,
        s: &[u8],
        limits: &Limits,
    ) -> Result<Self, ValueError> {
        // '@' can only appear in userinfo: neither uri-parameters nor URI
        // headers allow it unescaped. The user part may contain ';' and '?'
        // (RFC 4475 `semiuri`), so userinfo must be split off first.
        let (userinfo, rest) = match s.iter().position(|&b| b == b'@') {
            Some(at) => (s.get(..at), s.get(at + 1..).unwrap_or_default()),
            None => (None, s),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.iter().position(|&b| b == b':') {
                    Some(c) => (ui.get(..c).unwrap_or_default(), ui.get(c + 1..)),
                    None => (ui, None),
                };
                if u.is_empty() || !is_escaped_text(u, is_user_char) {
                    return Err(ValueError::Malformed);
                }
                if p.is_some_and(|p| !is_escaped_text(p, is_password_char)) {
                    return Err(ValueError::Malformed);
                }
                (Some(owner.slice_ref(u)), p.map(|p| owner.slice_ref(p)))
            }
        };
        let hp_end = rest
            .iter()
            .position(|&b| b == b';' || b == b'?')
            .unwrap_or(rest.len());
        let (hostport, tail) = rest.split_at_checked(hp_end).ok_or(ValueError::Malformed)?;
        let (host, port) = split_hostport(hostport)?;
        let host = Host::parse(owner, host)?;
        let port = port
            .map(parse_port)
            .transpose()
            .map_err(|_| ValueError::Malformed)?;
        let q = tail.iter().position(|&b| b == b'?').unwrap_or(tail.len());
        let (params, headers) = tail.split_at_checked(q).ok_or(ValueError::Malformed)?;
        let params = Params::parse(owner.slice_ref(params), ParamKind::Uri, limits)?;
        let headers = match headers.strip_prefix(b"?") {
            None => None,
            Some(h) => {
                let valid = h.split(|&b| b == b'&').all(|pair| {
                    let mut kv = pair.splitn(2, |&b| b == b'=');
                    let name = kv.next().unwrap_or_default();
                    let value = kv.next();
                    !name.is_empty()
                        && is_escaped_text(name, is_hnv_char)
                        && value.is_some_and(|v| is_escaped_text(v, is_hnv_char))
                });
                if !valid {
                    return Err(ValueError::Malformed);
                }
                Some(owner.slice_ref(h))
            }
        };
        Ok(Self {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    pub(super) fn render(&self, out: &mut BytesMut) {
        out.put_slice(match self.scheme {
            SipScheme::Sip => b"sip:",
            SipScheme::Sips => b"sips:",
        });
        if let Some(user) = &self.user {
            out.put_slice(user);
            if let Some(pw) = &self.password {
                out.put_u8(b':');
                out.put_slice(pw);
            }
            out.put_u8(b'@');
        }
        self.host.render(out);
        if let Some(port) = self.port {
            out.put_u8(b':');
            out.put_slice(port.to_string().as_bytes());
        }
        out.put_slice(self.params.as_bytes());
        if let Some(h) = &self.headers {
            out.put_u8(b'?');
            out.put_slice(h);
        }
    }
}
