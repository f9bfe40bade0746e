use super::*;

fn sip(s: &'static str) -> SipUri {
    match Uri::parse(s) {
        Ok(Uri::Sip(u)) => u,
        other => panic!("{s}: {other:?}"),
    }
}

#[test]
fn sip_uri_parts() {
    let u = sip("sip:alice:secret@Example.COM:5070;transport=tcp;lr?Subject=hi&Priority=urgent");
    assert_eq!(u.user.as_deref(), Some(&b"alice"[..]));
    assert_eq!(u.password.as_deref(), Some(&b"secret"[..]));
    assert_eq!(u.host, Host::Domain(Bytes::from("Example.COM")));
    assert_eq!(u.port, Some(5070));
    assert_eq!(u.params.value("transport"), Some(&b"tcp"[..]));
    assert!(u.params.contains("lr"));
    let pairs: Vec<_> = u
        .header_pairs()
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (b"Subject".to_vec(), b"hi".to_vec()),
            (b"Priority".to_vec(), b"urgent".to_vec())
        ]
    );
}

#[test]
fn torture_user_parts() {
    let u = sip("sip:sips%3Auser%40example.com@example.net");
    assert_eq!(u.user_unescaped().unwrap(), &b"sips:user@example.com"[..]);
    let u = sip("sip:user;par=u%40example.net@example.com");
    assert_eq!(u.user_unescaped().unwrap(), &b"user;par=u@example.net"[..]);
    let u = sip(
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
    );
    assert_eq!(
        u.user.as_deref(),
        Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
    );
    assert_eq!(
        u.password.as_deref(),
        Some(&b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"[..])
    );
    assert_eq!(
        sip("sip:null-%00-null@example.com")
            .user_unescaped()
            .unwrap(),
        &b"null-\0-null"[..]
    );
}

#[test]
fn ipv6_references_per_rfc5118() {
    let u = sip("sip:[2001:db8::10:5070]");
    assert_eq!(u.host, Host::V6("2001:db8::10:5070".parse().unwrap()));
    assert_eq!(u.port, None);
    let u = sip("sip:[2001:db8::10]:5070");
    assert_eq!(u.port, Some(5070));
    assert_eq!(Uri::parse("sip:2001:db8::10"), Err(ValueError::Malformed));
    assert_eq!(
        Uri::parse("sip:user@[2001:db8:::192.0.2.1]"),
        Err(ValueError::Malformed)
    );
    assert_eq!(
        sip("sip:user@[2001:db8::192.0.2.1]").host,
        Host::V6("2001:db8::c000:201".parse().unwrap())
    );
    assert_eq!(
        sip("sip:ted@[::ffff:192.0.2.2]").to_string_lossy(),
        "sip:ted@[::ffff:192.0.2.2]"
    );
}

#[test]
fn bad_sip_uris() {
    for bad in [
        "sip:",
        "sip:@host",
        "sip:user@",
        "sip:host:99999",
        "sip:host:",
        "sip:ho st",
        "sip:host;;",
        "sip:host?x",
        "sip:host?=v",
        "sip:1.2.3.999",
        "sip:-bad.com",
        "<sip:user@example.com>",
        "sip:user@example.com; lr",
        "sip:host;a=%g0",
    ] {
        assert!(Uri::parse(bad).is_err(), "{bad}");
    }
    let limits = Limits {
        max_uri_len: 10,
        ..Limits::default()
    };
    let b = Bytes::from("sip:long.example.com");
    assert_eq!(Uri::parse_in(&b, &b, &limits), Err(ValueError::TooLong));
}

#[test]
fn tel_and_other_schemes() {
    match Uri::parse("tel:+1-201-555-0123;ext=1") {
        Ok(Uri::Tel(t)) => {
            assert!(t.is_global());
            assert_eq!(t.params.value("ext"), Some(&b"1"[..]));
        }
        other => panic!("{other:?}"),
    }
    assert!(Uri::parse("tel:7042;phone-context=example.com").is_ok());
    assert!(Uri::parse("tel:7042").is_err());
    assert!(Uri::parse("tel:+").is_err());
    for other in [
        "nobodyKnowsThisScheme:totallyopaquecontent",
        "soap.beep://192.0.2.103:3002",
        "isbn:2983792873",
        "http://www.example.com",
    ] {
        let u = Uri::parse(other).unwrap();
        assert!(matches!(u, Uri::Other(_)), "{other}");
        assert_eq!(u.to_bytes(), other);
    }
    assert!(Uri::parse("1bad:x").is_err());
    assert!(Uri::parse("foo:has space").is_err());
}

impl SipUri {
    fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&Uri::Sip(self.clone()).to_bytes()).into_owned()
    }
}
