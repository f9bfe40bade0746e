//! Multipart bodies (RFC 2046, RFC 5621) as a SIP-I or SIP-T peer sends
//! them: the input is read as parts (each picks a type and a disposition,
//! and carries the bytes up to the next 0xFF), joined with delimiters, or,
//! with the first byte's top bit set, taken as a raw body. Asserts: no
//! panic; the session description found is a slice of the body (never
//! bytes of our own); a message unwrapped in place keeps its body or gets
//! that slice under `application/sdp`, and is left alone on an error.
#![no_main]

use bytes::Bytes;
use codeb_sip::Limits;
use codeb_sip::header::{Header, Headers, KnownHeader, MediaType};
use codeb_sip::multipart::{session_description, unwrap_session};
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 6] = [
    "application/sdp",
    "application/isup;version=itu-t92+",
    "multipart/mixed;boundary=in",
    "multipart/alternative;boundary=in",
    "text/plain",
    "application/sdp;charset=x",
];
const DISPOSITIONS: [&str; 5] = [
    "",
    "Content-Disposition: signal;handling=optional\r\n",
    "Content-Disposition: signal;handling=required\r\n",
    "Content-Disposition: session\r\n",
    "Content-Disposition: render; handling = OPTIONAL\r\n",
];
const OUTER: [&str; 4] = [
    "multipart/mixed;boundary=b",
    "multipart/alternative; boundary=\"b\"",
    "multipart/mixed;boundary=in",
    "multipart/mixed",
];

fn body_of(data: &[u8]) -> (&'static str, Vec<u8>) {
    let Some((&first, rest)) = data.split_first() else {
        return (OUTER[0], Vec::new());
    };
    let outer = OUTER[usize::from(first) % OUTER.len()];
    if first & 0x80 != 0 {
        return (outer, rest.to_vec());
    }
    let mut body = Vec::new();
    for (i, seg) in rest.split(|&b| b == 0xFF).enumerate() {
        let (pick, content) = seg.split_first().unwrap_or((&0, &[]));
        let ty = TYPES[usize::from(pick & 7) % TYPES.len()];
        let disposition = DISPOSITIONS[usize::from(pick >> 3) % DISPOSITIONS.len()];
        let boundary = if ty.ends_with("=in") {
            "b"
        } else if i % 3 == 2 {
            "in"
        } else {
            "b"
        };
        body.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: {ty}\r\n{disposition}\r\n").as_bytes(),
        );
        body.extend_from_slice(content);
    }
    if first & 0x40 == 0 {
        body.extend_from_slice(b"\r\n--b--\r\n");
    }
    (outer, body)
}

fuzz_target!(|data: &[u8]| {
    let (outer, body) = body_of(data);
    let body = Bytes::from(body);
    let Ok(ct) = MediaType::from_bytes(Bytes::from_static(outer.as_bytes())) else {
        return;
    };
    let within = |s: &Bytes| {
        let (start, end) = (body.as_ptr() as usize, body.as_ptr() as usize + body.len());
        s.is_empty() || (s.as_ptr() as usize >= start && s.as_ptr() as usize + s.len() <= end)
    };
    let found = session_description(&ct, &body, &Limits::default());
    if let Ok(Some(sdp)) = &found {
        assert!(within(sdp), "the SDP is a slice of the body");
    }
    let mut headers = Headers::new();
    let Ok(h) = Header::new(KnownHeader::ContentType, outer) else {
        return;
    };
    headers.push(h);
    let mut unwrapped = body.clone();
    match unwrap_session(&mut headers, &mut unwrapped) {
        Ok(()) => {
            assert_eq!(found.ok().flatten().unwrap_or_default(), unwrapped);
            let ct = headers
                .content_type()
                .expect("a Content-Type we set parses");
            if unwrapped.is_empty() {
                assert!(ct.is_none_or(|t| t.is("application/sdp")));
            } else {
                assert!(ct.is_some_and(|t| t.is("application/sdp")));
            }
        }
        Err(_) => {
            assert!(found.is_err());
            assert_eq!(unwrapped, body, "left alone");
        }
    }
});
