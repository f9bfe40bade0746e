//! Inbound routing: which user an incoming call rings.
//!
//! Rows are evaluated in order and the first match wins. A row's DID
//! matches the dialled number (Request-URI user, else To user); `*` in a DID
//! or From pattern matches any run of characters; the DID `anonymous`
//! matches calls without caller ID, whatever was dialled; a leading `+` is
//! optional on both sides, as carriers differ on sending it.

use crate::config::RouteConfig;

/// The facts of a call that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    /// The tenant of the trunk the call came from: only its rows apply.
    pub tenant: &'a str,
    pub did: &'a str,
    /// The caller's number, or None when the caller withheld it.
    pub from: Option<&'a str>,
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

fn number_matches(pattern: &str, number: &str) -> bool {
    let strip = |s: &str| s.strip_prefix('+').unwrap_or(s).to_owned();
    glob(pattern, number) || glob(&strip(pattern), &strip(number))
}

/// Whether a From user part means "no caller ID".
pub fn is_anonymous(user: Option<&str>) -> bool {
    match user {
        None => true,
        Some(u) => {
            u.is_empty()
                || u.eq_ignore_ascii_case("anonymous")
                || u.eq_ignore_ascii_case("restricted")
        }
    }
}

fn row_matches(r: &RouteConfig, call: &CallFacts<'_>) -> bool {
    let did_ok = if r.did.eq_ignore_ascii_case("anonymous") {
        call.from.is_none()
    } else {
        number_matches(&r.did, call.did)
    };
    let from_ok = match r.from.as_deref() {
        None | Some("*") => true,
        Some(p) if p.eq_ignore_ascii_case("anonymous") => call.from.is_none(),
        Some(p) => call.from.is_some_and(|f| number_matches(p, f)),
    };
    r.tenant == call.tenant && did_ok && from_ok
}

/// The first row matching `call`, in table order.
pub fn route<'a>(table: &'a [RouteConfig], call: &CallFacts<'_>) -> Option<&'a RouteConfig> {
    table.iter().find(|r| row_matches(r, call))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(did: &str, from: Option<&str>, user: &str) -> RouteConfig {
        RouteConfig {
            tenant: String::new(),
            did: did.into(),
            from: from.map(Into::into),
            user: Some(user.into()),
            trunk: None,
            virtual_number: None,
        }
    }

    #[test]
    fn globbing() {
        assert!(glob("*", ""));
        assert!(glob("+356*", "+35621234567"));
        assert!(!glob("+356*", "+35721234567"));
        assert!(glob("*567", "+15551234567"));
        assert!(glob("1*3*5", "1234445"));
        assert!(!glob("1*3*5", "12344456"));
        assert!(glob("abc", "abc") && !glob("abc", "abcd"));
    }

    #[test]
    fn first_match_in_order() {
        let table = vec![
            r("+15551234567", Some("+356*"), "malta"),
            r("+15551234567", None, "alex"),
            r("anonymous", Some("*"), "callcentre"),
            r("1000", None, "ext"),
            r("*", None, "codeb"),
        ];
        let call = |did, from| {
            route(
                &table,
                &CallFacts {
                    tenant: "",
                    did,
                    from,
                },
            )
            .and_then(|r| r.user.as_deref())
        };
        assert_eq!(call("+15551234567", Some("+35621234567")), Some("malta"));
        assert_eq!(call("+15551234567", Some("+4930123")), Some("alex"));
        assert_eq!(
            call("15551234567", Some("+4930123")),
            Some("alex"),
            "+ is optional"
        );
        assert_eq!(call("+15551234567", None), Some("alex"));
        assert_eq!(call("999", None), Some("callcentre"));
        assert_eq!(call("1000", Some("200")), Some("ext"));
        assert_eq!(call("4711", Some("200")), Some("codeb"));
        assert_eq!(
            route(
                &table[..2],
                &CallFacts {
                    tenant: "",
                    did: "4711",
                    from: None
                }
            ),
            None
        );
        assert!(
            is_anonymous(Some("Anonymous")) && is_anonymous(None) && !is_anonymous(Some("+1555"))
        );
    }
}
