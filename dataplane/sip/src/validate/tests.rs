use super::*;

fn request(method_line: &str, extra: &str) -> String {
    format!(
        "{method_line}\r\n\
         Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKabc\r\n\
         From: <sip:a@example.com>;tag=1\r\n\
         To: <sip:b@example.com>\r\n\
         Call-ID: id@example.com\r\n\
         {extra}\r\n"
    )
}

fn screen(wire: &str, policy: &Policy<'_>) -> Verdict {
    screen_datagram(
        Bytes::copy_from_slice(wire.as_bytes()),
        &Limits::default(),
        policy,
    )
}

fn status(v: &Verdict) -> Option<u16> {
    match v {
        Verdict::Reply { response, .. } => Some(response.status.as_u16()),
        _ => None,
    }
}

const UAS: Policy<'static> = Policy {
    role: Role::Uas,
    implemented: Some(MethodSet::all_known()),
    supported: &["100rel", "timer"],
    accepted: Some(&["application/sdp"]),
    answer_type: Some("application/sdp"),
    accept_tel: false,
    tag_key: 7,
};

#[test]
fn accepts_a_good_request() {
    let v = screen(
        &request(
            "OPTIONS sip:b@example.com SIP/2.0",
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n",
        ),
        &UAS,
    );
    assert!(matches!(v, Verdict::Accept(Message::Request(_))), "{v:?}");
}

#[test]
fn each_rule_has_its_status() {
    let cases: [(&str, &str, u16); 12] = [
        (
            "OPTIONS sip:b@example.com SIP/3.0",
            "CSeq: 1 OPTIONS\r\n",
            505,
        ),
        (
            "OPTIONS sip:b@example.com SIP/2.0",
            "CSeq: 1 INVITE\r\n",
            400,
        ),
        ("FOO sip:b@example.com SIP/2.0", "CSeq: 1 BAR\r\n", 501),
        ("OPTIONS tel:+15551234 SIP/2.0", "CSeq: 1 OPTIONS\r\n", 416),
        (
            "OPTIONS mailto:b@example.com SIP/2.0",
            "CSeq: 1 OPTIONS\r\n",
            416,
        ),
        (
            "OPTIONS sip:b@example.com?Subject=x SIP/2.0",
            "CSeq: 1 OPTIONS\r\n",
            400,
        ),
        (
            "OPTIONS sip:b@example.com SIP/2.0",
            "CSeq: 1 OPTIONS\r\nRequire: 100rel, foo\r\n",
            420,
        ),
        (
            "MESSAGE sip:b@example.com SIP/2.0",
            "CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nl: 2\r\n\r\nhi",
            415,
        ),
        (
            "INVITE sip:b@example.com SIP/2.0",
            "CSeq: 1 INVITE\r\nAccept: text/plain\r\n",
            406,
        ),
        (
            "MESSAGE sip:b@example.com SIP/2.0",
            "CSeq: 1 MESSAGE\r\nl: 2\r\n\r\nhi",
            400,
        ),
        (
            "REGISTER sip:example.com SIP/2.0",
            "CSeq: 1 REGISTER\r\nContact: *\r\n",
            400,
        ),
        (
            "OPTIONS sip:b@example.com SIP/2.0",
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 256\r\n",
            400,
        ),
    ];
    for (line, extra, code) in cases {
        // Requests carrying a body end the head themselves.
        let wire = if extra.contains("\r\n\r\n") {
            request(line, extra).trim_end_matches("\r\n").to_string()
        } else {
            request(line, extra)
        };
        let v = screen(&wire, &UAS);
        assert_eq!(status(&v), Some(code), "{line} / {extra:?}: {v:?}");
    }
}

#[test]
fn reject_headers_name_the_problem() {
    let v = screen(
        &request(
            "OPTIONS sip:b@example.com SIP/2.0",
            "CSeq: 1 FOO\r\nRequire: foo\r\n",
        ),
        &UAS,
    );
    let Verdict::Reply { response, problem } = v else {
        panic!("{v:?}")
    };
    assert_eq!(problem, Problem::CSeqMethodMismatch);
    assert_eq!(
        &response.reason[..],
        b"CSeq Method Does Not Match Request Method"
    );

    let v = screen(
        &request(
            "OPTIONS sip:b@example.com SIP/2.0",
            "CSeq: 1 OPTIONS\r\nRequire: 100rel, Foo\r\n",
        ),
        &UAS,
    );
    let Verdict::Reply { response, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(
        response
            .headers
            .get(KnownHeader::Unsupported)
            .map(|v| &v[..]),
        Some(&b"Foo"[..])
    );
    let tag = response.headers.to().unwrap().tag().map(<[u8]>::to_vec);
    assert_eq!(tag.as_ref().map(Vec::len), Some(16));

    let v = screen(
        &request("BAR sip:b@example.com SIP/2.0", "CSeq: 1 BAR\r\n"),
        &UAS,
    );
    let Verdict::Reply { response, .. } = v else {
        panic!("{v:?}")
    };
    let allow = response.headers.allow().unwrap();
    assert_eq!(allow.len(), 14);

    let v = screen(
        &request(
            "OPTIONS sip:b@example.com SIP/2.0",
            "CSeq: 99999999999 OPTIONS\r\n",
        ),
        &UAS,
    );
    let Verdict::Reply { response, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(&response.reason[..], b"Bad CSeq (out of range)");
}

#[test]
fn stateless_tags_are_stable_and_keyed() {
    let wire = request(
        "OPTIONS sip:b@example.com SIP/2.0",
        "CSeq: 1 OPTIONS\r\nRequire: x\r\n",
    );
    let tag = |key| {
        let policy = Policy {
            tag_key: key,
            ..UAS
        };
        match screen(&wire, &policy) {
            Verdict::Reply { response, .. } => {
                response.headers.to().unwrap().tag().map(<[u8]>::to_vec)
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(tag(1), tag(1));
    assert_ne!(tag(1), tag(2));
}

#[test]
fn policy_defaults_are_permissive() {
    let wire = request(
        "FOO sip:b@example.com SIP/2.0",
        "CSeq: 1 FOO\r\nl: 1\r\nContent-Type: x/y\r\n\r\nz",
    );
    let wire = wire.trim_end_matches("\r\n");
    assert!(matches!(screen(wire, &Policy::uas()), Verdict::Accept(_)));
    // Proxies check Proxy-Require and Max-Forwards instead of Require.
    let wire = request(
        "OPTIONS sip:b@example.com SIP/2.0",
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 0\r\n",
    );
    assert_eq!(status(&screen(&wire, &Policy::proxy())), Some(483));
    assert!(matches!(screen(&wire, &Policy::uas()), Verdict::Accept(_)));
    let policy = Policy {
        supported: &["known"],
        ..Policy::proxy()
    };
    let wire = request(
        "OPTIONS sip:b@example.com SIP/2.0",
        "CSeq: 1 OPTIONS\r\nProxy-Require: known, unknown\r\n",
    );
    assert_eq!(status(&screen(&wire, &policy)), Some(420));
}

#[test]
fn never_answers_ack_or_responses() {
    let ack = request("ACK sip:b@example.com SIP/2.0", "CSeq: 1 INVITE\r\n");
    assert!(matches!(
        screen(&ack, &UAS),
        Verdict::Drop(Problem::CSeqMethodMismatch)
    ));
    let bad_ack = "ACK sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nl: 9\r\n\r\n";
    assert!(matches!(
        screen(bad_ack, &UAS),
        Verdict::Drop(Problem::Unparsable(ParseError::TruncatedBody))
    ));
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: x INVITE\r\n\r\n";
    assert!(matches!(
        screen(resp, &UAS),
        Verdict::Drop(Problem::BadHeader(KnownHeader::CSeq, ValueError::Malformed))
    ));
    let good = resp.replace("CSeq: x", "CSeq: 1");
    assert!(matches!(
        screen(&good, &UAS),
        Verdict::Accept(Message::Response(_))
    ));
    assert!(matches!(
        screen(&good.replace("SIP/2.0 200", "SIP/3.0 200"), &UAS),
        Verdict::Drop(Problem::UnsupportedVersion)
    ));
}

#[test]
fn unparsable_requests_are_answered_when_possible() {
    let wire = "OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: c\r\nl: 99\r\n\r\nshort";
    let v = screen(wire, &UAS);
    assert_eq!(status(&v), Some(400));
    let Verdict::Reply { response, problem } = v else {
        panic!()
    };
    assert_eq!(problem, Problem::Unparsable(ParseError::TruncatedBody));
    assert_eq!(&response.reason[..], b"Content-Length Larger Than Body");
    assert_eq!(response.headers.call_id().unwrap(), "c");
    // Nothing to copy a Via from: drop.
    assert!(matches!(
        screen("OPTIONS sip:b@example.com\r\nCall-ID: c\r\n\r\n", &UAS),
        Verdict::Drop(_)
    ));
    let big = Limits {
        max_message_len: 100,
        ..Limits::default()
    };
    let wire = format!(
        "OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nl: 200\r\n\r\n{}",
        "x".repeat(20)
    );
    let v = screen_datagram(Bytes::from(wire), &big, &UAS);
    assert_eq!(status(&v), Some(513));
}

/// A request over one of our bounds (a header line, the number of header
/// lines) is answered 513, its Via and Call-ID found around what is cut,
/// not dropped unanswered: the sender would retransmit it for 32 s.
#[test]
fn a_request_over_a_bound_is_answered_513() {
    let head = "OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n";
    let tail = "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let long = Limits::default().max_line_len + 10;
    let cases = [
        format!("{head}X-Long: {}\r\n{tail}", "a".repeat(long)),
        format!("{head}X-Folded: a\r\n {}\r\n{tail}", "b".repeat(long)),
        format!(
            "{head}{}{tail}",
            "X-Many: 1\r\n".repeat(Limits::default().max_headers)
        ),
    ];
    let mut cases = cases.to_vec();
    // Vias filling the bound, the rest after it: the answer, which copies
    // every Via kept, must itself stay within the bound (it parses again).
    cases.push(format!(
        "OPTIONS sip:b@example.com SIP/2.0\r\n{}{tail}",
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n".repeat(Limits::default().max_headers + 5)
    ));
    let roomy = Limits {
        max_headers: Limits::default().max_headers + 2,
        max_via: usize::MAX,
        ..Limits::default()
    };
    for wire in &cases {
        let v = screen(wire, &UAS);
        assert_eq!(status(&v), Some(513), "{v:?}");
        let Verdict::Reply { response, .. } = v else {
            panic!()
        };
        assert_eq!(response.headers.call_id().unwrap(), "c");
        let again = Message::Response(response).to_bytes();
        crate::parse_datagram(again, &roomy).expect("the answer parses");
    }
}
