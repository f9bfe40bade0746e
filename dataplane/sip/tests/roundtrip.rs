//! Round-trip properties: structured messages survive print → parse
//! unchanged, and any input that parses reaches a fixed point after one
//! print (up to the recomputed Content-Length).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use bytes::Bytes;
use codeb_sip::{
    Frame, Header, HeaderName, Headers, KnownHeader, Limits, Message, Method, Request, Response,
    StatusCode, Uri, Version, frame_stream, parse_datagram, parse_stream_message, screen_datagram,
    validate::Policy,
};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,10}"
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Ack),
        Just(Method::Bye),
        Just(Method::Cancel),
        Just(Method::Options),
        Just(Method::Register),
        Just(Method::Prack),
        Just(Method::Publish),
        token().prop_map(|t| Method::parse(t).unwrap()),
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,8}[a-z0-9](\\.[a-z][a-z0-9]{0,6}){0,2}",
        any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

fn uri() -> impl Strategy<Value = String> {
    let user = prop::option::of("([a-zA-Z0-9_.!~*'()&=+$,;?/-]|%[0-9A-F]{2}){1,12}");
    let params = prop::collection::btree_map(
        "[a-z][a-z0-9-]{0,6}",
        prop::option::of("[a-zA-Z0-9_.~-]{1,8}"),
        0..4,
    );
    (
        prop::bool::ANY,
        user,
        host(),
        prop::option::of(any::<u16>()),
        params,
    )
        .prop_map(|(secure, user, host, port, params)| {
            let mut s = String::from(if secure { "sips:" } else { "sip:" });
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            for (k, v) in params {
                s.push(';');
                s.push_str(&k);
                if let Some(v) = v {
                    s.push('=');
                    s.push_str(&v);
                }
            }
            s
        })
}

/// Printable text without leading or trailing white space (the parser
/// trims both), possibly empty.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[!-~]([ -~]{0,30}[!-~])?"]
}

fn header() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        (
            prop_oneof![Just("Via"), Just("v"), Just("VIA")],
            host(),
            token()
        )
            .prop_map(|(n, h, b)| (n.to_string(), format!("SIP/2.0/UDP {h};branch=z9hG4bK{b}"))),
        (
            prop_oneof![
                Just("From"),
                Just("f"),
                Just("To"),
                Just("t"),
                Just("Contact"),
                Just("m"),
                Just("Route")
            ],
            uri(),
            token()
        )
            .prop_map(|(n, u, t)| (n.to_string(), format!("\"Some One\" <{u}>;tag={t}"))),
        ("[A-Za-z0-9.!%*_+`'~-]{1,12}(@[a-z0-9.]{1,10})?").prop_map(|c| ("Call-ID".to_string(), c)),
        (0u32..).prop_map(|n| ("Max-Forwards".to_string(), (n % 256).to_string())),
        (
            prop_oneof![Just("Subject"), Just("s"), Just("User-Agent")],
            text()
        )
            .prop_map(|(n, v)| (n.to_string(), v)),
        ("X-[A-Za-z0-9-]{1,10}", text()),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(header(), 0..12)
}

fn build_headers(list: &[(String, String)], body_len: usize, cl_at: usize) -> Headers {
    let mut h = Headers::new();
    for (n, v) in list {
        h.push(Header::new(HeaderName::parse(n.clone()).unwrap(), v.clone()).unwrap());
    }
    let cl = Header::new(KnownHeader::ContentLength, body_len.to_string()).unwrap();
    h.insert(cl_at % (list.len() + 1), cl);
    h
}

fn request() -> impl Strategy<Value = Message> {
    (
        method(),
        uri(),
        headers(),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<usize>(),
        any::<u32>(),
    )
        .prop_map(|(method, uri, list, body, cl_at, seq)| {
            let mut headers = build_headers(&list, body.len(), cl_at);
            headers.push(Header::new(KnownHeader::CSeq, format!("{seq} {method}")).unwrap());
            Message::Request(Request {
                method,
                uri: Uri::parse(uri).unwrap(),
                version: Version::SIP_2_0,
                headers,
                body: Bytes::from(body),
            })
        })
}

fn response() -> impl Strategy<Value = Message> {
    (
        100u16..700,
        text(),
        headers(),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<usize>(),
    )
        .prop_map(|(code, reason, list, body, cl_at)| {
            Message::Response(Response {
                version: Version::SIP_2_0,
                status: StatusCode::new(code).unwrap(),
                reason: Bytes::from(reason),
                headers: build_headers(&list, body.len(), cl_at),
                body: Bytes::from(body),
            })
        })
}

fn without_length(m: &Message) -> Message {
    let mut m = m.clone();
    m.headers_mut().remove(KnownHeader::ContentLength);
    m
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![request(), response()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn structured_messages_round_trip(msg in message()) {
        let wire = msg.to_bytes();
        let back = parse_datagram(wire.clone(), &Limits::default());
        prop_assert_eq!(back.as_ref(), Ok(&msg), "wire: {:?}", String::from_utf8_lossy(&wire));
        // Typed views read what was generated.
        for via in msg.headers().get_all(KnownHeader::Via) {
            let b = codeb_sip::Via::from_bytes(via.clone());
            prop_assert!(b.is_ok(), "{:?}", via);
        }
        prop_assert!(!msg.is_request() || msg.headers().cseq().is_ok());
        // The same octets frame identically on a stream, even with a second
        // message behind them.
        let mut stream = wire.to_vec();
        stream.extend_from_slice(&wire);
        prop_assert_eq!(frame_stream(&stream, &Limits::default()), Ok(Frame::Complete { len: wire.len() }));
        prop_assert_eq!(parse_stream_message(wire, &Limits::default()), Ok(msg));
    }

    #[test]
    fn mutated_messages_never_panic_and_reach_a_fixed_point(
        msg in message(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut wire = msg.to_bytes().to_vec();
        for (at, byte, op) in edits {
            let at = at % (wire.len() + 1);
            match op {
                0 if at < wire.len() => wire[at] = byte,
                1 => wire.insert(at, byte),
                _ => wire.truncate(at.max(1)),
            }
        }
        let wire = Bytes::from(wire);
        let _ = screen_datagram(wire.clone(), &Limits::default(), &Policy::uas());
        let _ = frame_stream(&wire, &Limits::default());
        if let Ok(first) = parse_datagram(wire, &Limits::default()) {
            let printed = first.to_bytes();
            let roomy = Limits { max_headers: 129, max_line_len: 4096 + 32, ..Limits::default() };
            let second = parse_datagram(printed.clone(), &roomy);
            prop_assert!(second.is_ok(), "reprint failed: {:?}", String::from_utf8_lossy(&printed));
            let second = second.unwrap();
            prop_assert_eq!(without_length(&first), without_length(&second));
            prop_assert_eq!(second.to_bytes(), printed);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let b = Bytes::from(bytes);
        let _ = screen_datagram(b.clone(), &Limits::default(), &Policy::uas());
        let _ = frame_stream(&b, &Limits::default());
        let _ = parse_stream_message(b, &Limits::default());
    }
}
