//! Parser + printer: any input that parses must print to octets that parse
//! to the same message (up to the recomputed Content-Length) and reach a
//! fixed point; typed header views must not panic either.
#![no_main]

use bytes::Bytes;
use codeb_sip::{KnownHeader, Limits, Message, frame_stream, parse_datagram, parse_stream_message};
use libfuzzer_sys::fuzz_target;

fn without_length(m: &Message) -> Message {
    let mut m = m.clone();
    m.headers_mut().remove(KnownHeader::ContentLength);
    m
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let buf = Bytes::copy_from_slice(data);
    if let Ok(codeb_sip::Frame::Complete { len }) = frame_stream(data, &limits) {
        let _ = parse_stream_message(buf.slice(..len), &limits);
    }
    let Ok(first) = parse_datagram(buf, &limits) else { return };
    let h = first.headers();
    let _ = (h.vias(), h.from(), h.to(), h.call_id(), h.cseq(), h.contacts(), h.routes());
    let _ = (h.accept(), h.allow(), h.authorizations(), h.www_authenticates(), h.reasons());
    let _ = (h.content_type(), h.session_expires(), h.expires(), h.max_forwards());
    let printed = first.to_bytes();
    // Printing can grow a message a little (compact names expand, a missing
    // Content-Length is added), so reparse with that much headroom.
    let roomy = Limits {
        max_headers: limits.max_headers + 1,
        max_line_len: limits.max_line_len + 32,
        max_message_len: limits.max_message_len * 2,
        ..limits
    };
    let second = parse_datagram(printed.clone(), &roomy).expect("printed message must parse");
    assert_eq!(without_length(&first), without_length(&second));
    assert_eq!(second.to_bytes(), printed);
});
