use bytes::Bytes;

use super::*;
use crate::error::ValueError;
use crate::message::Version;

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
    Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
    Max-Forwards: 70\r\n\
    From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
    To: Bob <sip:bob@biloxi.example.com>\r\n\
    Call-ID: 3848276298220188511@atlanta.example.com\r\n\
    CSeq: 1 INVITE\r\n\
    Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n\
    Content-Type: application/sdp\r\n\
    Content-Length: 4\r\n\
    \r\n\
    v=0\n";

fn datagram(s: &str) -> Result<Message, ParseError> {
    parse_datagram(Bytes::copy_from_slice(s.as_bytes()), &Limits::default())
}

#[test]
fn parses_a_plain_invite_zero_copy() {
    let buf = Bytes::from_static(INVITE.as_bytes());
    let msg = parse_datagram(buf.clone(), &Limits::default()).unwrap();
    let Message::Request(req) = &msg else {
        panic!("not a request")
    };
    assert_eq!(req.method, Method::Invite);
    assert_eq!(req.version, Version::SIP_2_0);
    assert_eq!(req.headers.len(), 9);
    assert_eq!(&req.body[..], b"v=0\n");
    // Zero-copy: the body and a header value point into the input buffer.
    let range = buf.as_ptr_range();
    assert!(range.contains(&req.body.as_ptr()));
    assert!(range.contains(&req.headers.get(KnownHeader::CallId).unwrap().as_ptr()));
}

#[test]
fn folding_and_names() {
    let msg = datagram(
        "OPTIONS sip:a@b SIP/2.0\r\nSubject: one\r\n two\r\n\tthree\r\nX-Bypass-me : lol\r\ns :\r\nContact:\r\n  <sip:c@d>\r\n\r\n",
    )
    .unwrap();
    let h = msg.headers();
    assert_eq!(&h.get(KnownHeader::Subject).unwrap()[..], b"one two\tthree");
    assert_eq!(
        h.get_named(b"x-bypass-me").map(|v| &v[..]),
        Some(&b"lol"[..])
    );
    let names: Vec<_> = h.iter().map(|x| x.name().as_bytes().to_vec()).collect();
    assert_eq!(names[1], b"X-Bypass-me");
    assert_eq!(
        h.get_all(KnownHeader::Subject).nth(1).map(|v| v.len()),
        Some(0)
    );
    assert_eq!(&h.get(KnownHeader::Contact).unwrap()[..], b"<sip:c@d>");
}

#[test]
fn start_line_errors() {
    let tail = "\r\nVia: SIP/2.0/UDP h\r\n\r\n";
    for (line, expected) in [
        ("INVITE  sip:a@b SIP/2.0", ParseError::BadRequestLine),
        ("INVITE sip:a@b SIP/2.0 ", ParseError::BadRequestLine),
        ("INVITE sip:a@b; lr SIP/2.0", ParseError::BadRequestLine),
        ("INVITE sip:a@b", ParseError::BadRequestLine),
        ("INV@TE sip:a@b SIP/2.0", ParseError::BadRequestLine),
        ("INVITE sip:a@b SIP/2", ParseError::BadRequestLine),
        ("INVITE sip:a\x01@b SIP/2.0", ParseError::BadRequestLine),
        ("SIP/2.0 4294967301 big", ParseError::BadStatusLine),
        ("SIP/2.0 099 low", ParseError::BadStatusLine),
        ("SIP/2.0 20 short", ParseError::BadStatusLine),
        ("SIP/2.0x 200 OK", ParseError::BadStatusLine),
        ("SIP/2.0 200 OK\x07", ParseError::BadStatusLine),
    ] {
        assert_eq!(
            datagram(&format!("{line}{tail}")).unwrap_err(),
            expected,
            "{line:?}"
        );
    }
    assert!(matches!(
        datagram(&format!("INVITE <sip:a@b> SIP/2.0{tail}")),
        Err(ParseError::BadRequestUri(ValueError::Malformed))
    ));
    let ok = datagram(&format!("SIP/2.0 100{tail}")).unwrap();
    assert_eq!(ok.as_response().unwrap().reason.len(), 0);
    let odd = datagram(&format!("OPTIONS sip:a@b SIP/7.0{tail}")).unwrap();
    assert_eq!(odd.version(), Version { major: 7, minor: 0 });
}

#[test]
fn framing_errors() {
    for (wire, expected) in [
        ("", ParseError::Empty),
        ("\r\n\r\n", ParseError::Empty),
        (
            "OPTIONS sip:a@b SIP/2.0\nVia: x\n\n",
            ParseError::BareLineBreak,
        ),
        (
            "OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\r\n\r\n",
            ParseError::BareLineBreak,
        ),
        (
            "OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n",
            ParseError::UnterminatedHead,
        ),
        (
            "OPTIONS sip:a@b SIP/2.0\r\n folded-start\r\n\r\n",
            ParseError::MalformedHeaderLine,
        ),
        (
            "OPTIONS sip:a@b SIP/2.0\r\nFoobar roobar\r\n\r\n",
            ParseError::MalformedHeaderLine,
        ),
        (
            "OPTIONS sip:a@b SIP/2.0\r\n: empty-name\r\n\r\n",
            ParseError::MalformedHeaderLine,
        ),
        (
            "OPTIONS sip:a@b SIP/2.0\r\nX-A: a\x00b\r\n\r\n",
            ParseError::ControlCharacter,
        ),
        (
            "OPTIONS sip:a@b SIP/2.0\r\nl: 5\r\nl: 5\r\n\r\nhello",
            ParseError::MultipleContentLength,
        ),
        (
            "OPTIONS sip:a@b SIP/2.0\r\nl: -999\r\n\r\n",
            ParseError::BadContentLength,
        ),
        (
            "OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999999999999999\r\n\r\n",
            ParseError::MessageTooLarge,
        ),
        (
            "OPTIONS sip:a@b SIP/2.0\r\nl: 70000\r\n\r\n",
            ParseError::MessageTooLarge,
        ),
        (
            "OPTIONS sip:a@b SIP/2.0\r\nl: 10\r\n\r\nshort",
            ParseError::TruncatedBody,
        ),
    ] {
        assert_eq!(datagram(wire).unwrap_err(), expected, "{wire:?}");
    }
}

#[test]
fn datagram_body_rules() {
    // Extra octets after Content-Length are discarded (RFC 3261 §18.3).
    let m = datagram("OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nhi and more").unwrap();
    assert_eq!(&m.body()[..], b"hi");
    // Without Content-Length the body is the rest of the datagram.
    let m = datagram("OPTIONS sip:a@b SIP/2.0\r\nX: y\r\n\r\nall of it").unwrap();
    assert_eq!(&m.body()[..], b"all of it");
    // Leading CRLFs are ignored before the start line.
    assert!(datagram("\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\n\r\n").is_ok());
}

#[test]
fn limits_are_enforced() {
    let tight = Limits {
        max_headers: 2,
        max_line_len: 40,
        max_message_len: 200,
        ..Limits::default()
    };
    let p = |s: &str| parse_datagram(Bytes::copy_from_slice(s.as_bytes()), &tight);
    assert_eq!(
        p("OPTIONS sip:a@b SIP/2.0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n").unwrap_err(),
        ParseError::TooManyHeaders
    );
    let long = format!("OPTIONS sip:a@b SIP/2.0\r\nA: {}\r\n\r\n", "x".repeat(50));
    assert_eq!(p(&long).unwrap_err(), ParseError::LineTooLong);
    let folded = format!(
        "OPTIONS sip:a@b SIP/2.0\r\nA: {0}\r\n {0}\r\n\r\n",
        "x".repeat(20)
    );
    assert_eq!(p(&folded).unwrap_err(), ParseError::LineTooLong);
    assert_eq!(
        p(&"x".repeat(201)).unwrap_err(),
        ParseError::MessageTooLarge
    );
}

#[test]
fn stream_framing() {
    let limits = Limits::default();
    assert_eq!(
        frame_stream(b"\r\n\r\nINVITE", &limits),
        Ok(Frame::KeepAlive { len: 4 })
    );
    assert_eq!(
        frame_stream(b"INVITE sip:a@b SIP/2.0\r\nVia", &limits),
        Ok(Frame::Incomplete { needed: None })
    );
    assert_eq!(
        frame_stream(b"\r", &limits),
        Ok(Frame::Incomplete { needed: None })
    );
    let head = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\r\n 5\r\n\r\n";
    let mut buf = head.to_vec();
    buf.extend_from_slice(b"he");
    assert_eq!(
        frame_stream(&buf, &limits),
        Ok(Frame::Incomplete { needed: Some(3) })
    );
    buf.extend_from_slice(b"lloNEXT");
    let Ok(Frame::Complete { len }) = frame_stream(&buf, &limits) else {
        panic!("not complete")
    };
    assert_eq!(len, head.len() + 5);
    let framed = Bytes::copy_from_slice(buf.get(..len).unwrap());
    let msg = parse_stream_message(framed, &limits).unwrap();
    assert_eq!(&msg.body()[..], b"hello");

    assert_eq!(
        frame_stream(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n", &limits),
        Err(ParseError::MissingContentLength)
    );
    assert_eq!(
        frame_stream(
            b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\nx",
            &limits
        ),
        Err(ParseError::MultipleContentLength)
    );
    assert_eq!(
        frame_stream(b"OPTIONS sip:a@b SIP/2.0\r\nl: 1 2\r\n\r\n", &limits),
        Err(ParseError::BadContentLength)
    );
    assert_eq!(
        frame_stream(b"OPTIONS sip:a@b SIP/2.0\nl: 1\n\n", &limits),
        Err(ParseError::BareLineBreak)
    );
    assert_eq!(
        frame_stream(b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999\r\n\r\n", &limits),
        Err(ParseError::MessageTooLarge)
    );
    let endless = vec![b'a'; limits.max_line_len + 2];
    assert_eq!(
        frame_stream(&endless, &limits),
        Err(ParseError::LineTooLong)
    );
    // A framed message whose body does not match its Content-Length.
    let wrong = Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\n\r\nxy");
    assert_eq!(
        parse_stream_message(wrong, &limits).unwrap_err(),
        ParseError::TruncatedBody
    );
}

#[test]
fn salvage_skips_bad_lines_and_refuses_responses() {
    let limits = Limits::default();
    let buf = Bytes::from_static(
        b"INVITE sip:alan@jasomi.com\r\nVia: SIP/2.0/UDP h\r\nFoobar roobar\r\nCall-ID: x\r\n",
    );
    let (method, headers) = salvage(&buf, &limits).unwrap();
    assert_eq!(method, Some(Method::Invite));
    assert_eq!(headers.len(), 2);
    assert!(
        salvage(
            &Bytes::from_static(b"SIP/2.0 4294967301 x\r\nVia: a\r\n\r\n"),
            &limits
        )
        .is_none()
    );
    assert!(salvage(&Bytes::from_static(b"\x00\x01 junk\r\n\r\n"), &limits).is_none());
}
