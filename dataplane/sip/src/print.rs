//! The printer: a [`Message`] to wire octets.
//!
//! Output is canonical: CRLF line ends, one header per line (values are
//! already unfolded), known headers under their full name (compact forms
//! expand), unknown headers as received, and exactly one Content-Length
//! equal to the body's length, placed where the first one was (or last).
//! Printing a parsed message and parsing the result gives the same message
//! up to that Content-Length (see `tests/roundtrip.rs`). The printed form
//! can be slightly longer than what was parsed (compact names expand, a
//! missing Content-Length is added), so a message right at a [`Limits`]
//! bound may need a little headroom to be parsed again.
//!
//! [`Limits`]: crate::Limits

use bytes::{BufMut, Bytes, BytesMut};

use crate::header::{Headers, KnownHeader};
use crate::message::{Message, Request, Response};

fn put_version(out: &mut BytesMut, v: crate::message::Version) {
    out.put_slice(v.to_string().as_bytes());
}

fn put_content_length(out: &mut BytesMut, len: usize) {
    out.put_slice(b"Content-Length: ");
    out.put_slice(len.to_string().as_bytes());
    out.put_slice(b"\r\n");
}

fn put_headers(out: &mut BytesMut, headers: &Headers, body_len: usize) {
    let mut length_written = false;
    for h in headers {
        if h.name().known() == Some(KnownHeader::ContentLength) {
            if !length_written {
                put_content_length(out, body_len);
                length_written = true;
            }
            continue;
        }
        out.put_slice(h.name().as_bytes());
        out.put_slice(b": ");
        out.put_slice(h.value());
        out.put_slice(b"\r\n");
    }
    if !length_written {
        put_content_length(out, body_len);
    }
    out.put_slice(b"\r\n");
}

fn size_hint(headers: &Headers, body: &Bytes) -> usize {
    let heads: usize = headers
        .iter()
        .map(|h| h.name().as_bytes().len() + h.value().len() + 4)
        .sum();
    128 + heads + body.len()
}

impl Request {
    /// Appends the request in wire form to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(size_hint(&self.headers, &self.body));
        out.put_slice(self.method.as_bytes());
        out.put_u8(b' ');
        self.uri.render(out);
        out.put_u8(b' ');
        put_version(out, self.version);
        out.put_slice(b"\r\n");
        put_headers(out, &self.headers, self.body.len());
        out.put_slice(&self.body);
    }
}

impl Response {
    /// Appends the response in wire form to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(size_hint(&self.headers, &self.body));
        put_version(out, self.version);
        out.put_u8(b' ');
        out.put_slice(self.status.to_string().as_bytes());
        out.put_u8(b' ');
        out.put_slice(&self.reason);
        out.put_slice(b"\r\n");
        put_headers(out, &self.headers, self.body.len());
        out.put_slice(&self.body);
    }
}

impl Message {
    /// Appends the message in wire form to `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        match self {
            Self::Request(r) => r.write_to(out),
            Self::Response(r) => r.write_to(out),
        }
    }

    /// The message in wire form.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.write_to(&mut out);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use crate::{Limits, parse_datagram};

    #[test]
    fn canonical_form() {
        let wire = "INVITE sip:bob@example.com SIP/2.0\r\n\
                    v: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
                    l: 999\r\n\
                    X-Custom : folded\r\n  value\r\n\
                    i: abc\r\n\
                    \r\nhello";
        // Content-Length 999 over a 5-octet datagram is an error, so use a
        // correct value and let the printer rewrite the spelling.
        let wire = wire.replace("l: 999", "l: 005");
        let msg = parse_datagram(wire.into(), &Limits::default()).unwrap();
        let printed = msg.to_bytes();
        assert_eq!(
            &printed[..],
            &b"INVITE sip:bob@example.com SIP/2.0\r\n\
               Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
               Content-Length: 5\r\n\
               X-Custom: folded  value\r\n\
               Call-ID: abc\r\n\
               \r\nhello"[..]
        );
    }

    #[test]
    fn appends_content_length_when_absent() {
        let msg = parse_datagram(
            "SIP/2.0 200 \r\nCall-ID: x\r\n\r\n".into(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            &msg.to_bytes()[..],
            b"SIP/2.0 200 \r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
        );
    }
}
