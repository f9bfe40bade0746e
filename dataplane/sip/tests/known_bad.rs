//! Messages that crashed other SIP stacks (`shared/testdata/sip/known-bad`):
//! no panic, an error or a 4xx (or, where the defect is in a body this
//! layer does not interpret, an intact hand-over), and bounded work.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_sip::{
    Frame, KnownHeader, Limits, ParseError, Problem, ValueError, Verdict, frame_stream,
    parse_datagram,
};
use common::{Outcome, UAS, files, outcome, screen};

fn problem(v: &Verdict) -> Option<&Problem> {
    match v {
        Verdict::Reply { problem, .. } | Verdict::Drop(problem) => Some(problem),
        Verdict::Accept(_) => None,
    }
}

#[test]
fn each_known_bad_message_is_refused_or_handed_over_intact() {
    let corpus = files("known-bad", "sip");
    assert_eq!(corpus.len(), 8);
    for (name, bytes) in &corpus {
        let started = Instant::now();
        let verdict = screen(bytes, &UAS);
        // Also feed it as a stream; it must frame or fail, never hang.
        let _ = frame_stream(bytes, &Limits::default());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{name} took {:?}",
            started.elapsed()
        );
        let got = outcome(&verdict);
        match name.as_str() {
            "es2017-01-pjsip-cseq-overflow" => {
                assert_eq!(got, Outcome::Reply(400), "{name}");
                assert_eq!(problem(&verdict), Some(&Problem::CSeqMethodMismatch));
            }
            // Bare LF line ends: not a SIP message; nothing to answer.
            "es2017-02-pjsip-multipart-lf-only" => {
                assert_eq!(got, Outcome::Drop, "{name}");
                assert_eq!(
                    problem(&verdict),
                    Some(&Problem::Unparsable(ParseError::BareLineBreak))
                );
            }
            "es2018-01-pjsip-subscribe-50-accept" => {
                assert_eq!(got, Outcome::Reply(400), "{name}");
                assert_eq!(
                    problem(&verdict),
                    Some(&Problem::BadHeader(
                        KnownHeader::Accept,
                        ValueError::Malformed
                    ))
                );
            }
            // The SIP message is valid; the defect is in the SDP, which
            // this layer hands over byte for byte for the SDP parser to
            // refuse (488). Checked here: the body arrives intact.
            "es2018-02-pjsip-sdp-invalid-fmtp" | "es2018-03-pjsip-sdp-fmt-4294967296" => {
                let Verdict::Accept(m) = &verdict else {
                    panic!("{name}: {verdict:?}")
                };
                let declared = m.headers().content_length().unwrap().unwrap() as usize;
                assert_eq!(m.body().len(), declared, "{name}");
                assert!(bytes.ends_with(m.body()), "{name}");
            }
            // A 264-octet From tag exceeds the identifier bound (256).
            "es2018-05-kamailio-tmx-long-from-tag" => {
                assert_eq!(got, Outcome::Reply(400), "{name}");
                assert_eq!(
                    problem(&verdict),
                    Some(&Problem::BadHeader(KnownHeader::From, ValueError::TooLong))
                );
            }
            // `X-Bypass-me : lol` is a header named X-Bypass-me, which
            // policy can find and strip whatever the spacing.
            "es2020-01-kamailio-header-smuggling-space-before-colon" => {
                let Verdict::Accept(mut m) = verdict.clone() else {
                    panic!("{name}: {verdict:?}")
                };
                let h = m.headers();
                let smuggled = h
                    .iter()
                    .find(|h| h.name().is(b"x-bypass-me"))
                    .expect("header recognised");
                assert_eq!(smuggled.name().as_bytes(), b"X-Bypass-me");
                assert_eq!(&smuggled.value()[..], b"lol");
                assert_eq!(m.headers_mut().remove_named(b"X-BYPASS-ME"), 1);
                let printed = m.to_bytes();
                assert!(
                    !printed
                        .windows(11)
                        .any(|w| w.eq_ignore_ascii_case(b"x-bypass-me"))
                );
            }
            // 4 KiB From lines exceed the header line bound: answered 513
            // from the headers around them, none of theirs copied.
            "synth-cve-2020-27507-class-duplicate-from-to-overlong-tags" => {
                assert_eq!(got, Outcome::Reply(513), "{name}");
                let Verdict::Reply { response, .. } = &verdict else {
                    panic!("{name}: {verdict:?}")
                };
                let wire = codeb_sip::Message::Response(response.clone()).to_bytes();
                assert!(wire.len() < 1024, "{name}");
                assert_eq!(
                    problem(&verdict),
                    Some(&Problem::Unparsable(ParseError::LineTooLong))
                );
                // With a larger line bound the duplicate From is what fails.
                let roomy = Limits {
                    max_line_len: 8192,
                    max_ident_len: 8192,
                    ..Limits::default()
                };
                let v = codeb_sip::screen_datagram(bytes.clone(), &roomy, &UAS);
                assert_eq!(
                    problem(&v),
                    Some(&Problem::BadHeader(KnownHeader::From, ValueError::Repeated))
                );
            }
            other => panic!("no expectation for {other}"),
        }
    }
}

#[test]
fn the_next_valid_request_is_still_served() {
    // Stateless parsing: nothing carries over, but check it anyway the way
    // the README asks: after each bad message, a good one parses.
    let good = Bytes::from_static(
        b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: ok\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    );
    for (_, bytes) in files("known-bad", "sip") {
        let _ = screen(&bytes, &UAS);
        assert!(matches!(screen(&good, &UAS), Verdict::Accept(_)));
    }
}

#[test]
fn oversized_and_repetitive_inputs_stay_bounded() {
    let limits = Limits::default();
    // 64 KiB of header lines: refused by count, not by memory.
    let mut wire = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    while wire.len() < 65_000 {
        wire.extend_from_slice(b"X: y\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    assert_eq!(
        parse_datagram(Bytes::from(wire.clone()), &limits).unwrap_err(),
        ParseError::TooManyHeaders
    );
    assert_eq!(
        frame_stream(&wire, &limits),
        Err(ParseError::TooManyHeaders)
    );
    // One endless line over a stream: refused once it passes the bound.
    let endless = vec![b'A'; limits.max_line_len * 2];
    assert_eq!(
        frame_stream(&endless, &limits),
        Err(ParseError::LineTooLong)
    );
    // A head that never ends over a stream: refused at the message bound.
    let mut slow = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    while slow.len() <= limits.max_message_len {
        slow.extend_from_slice(b"X: y\r\n");
    }
    assert!(matches!(
        frame_stream(&slow, &limits),
        Err(ParseError::TooManyHeaders | ParseError::MessageTooLarge)
    ));
    let _ = Frame::Incomplete { needed: None };
}
