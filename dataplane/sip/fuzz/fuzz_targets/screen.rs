//! Server-side screening: never panics, and every reply it builds is itself
//! a message that parses.
#![no_main]

use bytes::Bytes;
use codeb_sip::{Limits, Message, Policy, Verdict, parse_datagram, screen_datagram};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Verdict::Reply { response, .. } = screen_datagram(Bytes::copy_from_slice(data), &limits, &Policy::uas()) {
        let wire = Message::Response(response).to_bytes();
        // A reply copies a subset of the request's lines and adds at most
        // Content-Length and one of Allow/Unsupported/Accept.
        let roomy = Limits { max_headers: limits.max_headers + 2, max_message_len: limits.max_message_len * 2, ..limits };
        parse_datagram(wire, &roomy).expect("a reply we build must parse");
    }
});
