//! Multipart bodies (RFC 2046 §5.1; in SIP, RFC 5621): the session
//! description out of a `multipart/mixed` body, as SIP-I (ITU-T Q.1912.5)
//! and SIP-T (RFC 3372) interconnects send it beside an encapsulated ISUP
//! message (`application/isup`).
//!
//! A B2BUA answers the SDP and builds its own messages, so the other parts
//! are not needed to carry the call; a part that says it must be
//! understood (`Content-Disposition: …;handling=required`, the default
//! when no handling is given, RFC 3261 §20.11) and is not is refused with
//! 415 (RFC 5621 §9). Nested `multipart/mixed` and `multipart/alternative`
//! are read to a bounded depth; every count and length is bounded.

use bytes::Bytes;

use crate::header::{Header, Headers, KnownHeader, MediaType};
use crate::limits::Limits;

/// How deep multiparts may nest (RFC 5621 §3.1 allows nesting; real
/// interconnects send one level).
const MAX_DEPTH: usize = 3;
/// Parts in one multipart, at any level.
const MAX_PARTS: usize = 16;
/// Header lines of one part.
const MAX_PART_HEADERS: usize = 16;
/// RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
const MAX_BOUNDARY: usize = 70;

/// Why a multipart body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// Not a well-formed multipart (no boundary, no delimiter, a part
    /// without its blank line, too many parts or too deep): 400.
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    /// A part of this type must be understood and is not: 415.
    #[error("a body part of type {0} is required and not supported")]
    Required(String),
}

/// The session description a body carries: the body itself for
/// `application/sdp`, the SDP part of a multipart (`None` if it has
/// none), and `None` for any other type (the caller's policy refuses
/// those before).
pub fn session_description(
    content_type: &MediaType,
    body: &Bytes,
    limits: &Limits,
) -> Result<Option<Bytes>, MultipartError> {
    let mut parts = 0;
    find_sdp(content_type, body, limits, 0, &mut parts)
}

/// Reads a message's multipart body down to its session description, in
/// place: the body becomes the SDP part under `Content-Type:
/// application/sdp`, or no body if no part is SDP. Anything but a
/// multipart is left as it is. On an error the message is unchanged.
pub fn unwrap_session(headers: &mut Headers, body: &mut Bytes) -> Result<(), MultipartError> {
    let Ok(Some(ct)) = headers.content_type() else {
        return Ok(());
    };
    // A body in a content coding (gzip, say) is not read here: whoever
    // handles the message refuses the coding (415, RFC 3261 §8.2.3).
    if !is_multipart(&ct) || content_coded(headers) {
        return Ok(());
    }
    let sdp = session_description(&ct, body, headers.limits())?;
    headers.remove(KnownHeader::ContentType);
    headers.remove(KnownHeader::ContentDisposition);
    match sdp {
        Some(sdp) => {
            *body = sdp;
            if let Ok(h) = Header::new(KnownHeader::ContentType, "application/sdp") {
                headers.push(h);
            }
        }
        None => *body = Bytes::new(),
    }
    Ok(())
}

/// `true` if the body is in a content coding other than `identity`
/// (Content-Encoding, RFC 3261 §20.12).
pub fn content_coded(headers: &Headers) -> bool {
    headers
        .get_all(KnownHeader::ContentEncoding)
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|c| c.trim_ascii())
        .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
}

/// `true` for the multipart types this module reads.
pub fn is_multipart(content_type: &MediaType) -> bool {
    content_type.is("multipart/mixed") || content_type.is("multipart/alternative")
}

fn find_sdp(
    ct: &MediaType,
    body: &Bytes,
    limits: &Limits,
    depth: usize,
    parts: &mut usize,
) -> Result<Option<Bytes>, MultipartError> {
    if ct.is("application/sdp") {
        return Ok(Some(body.clone()));
    }
    if !is_multipart(ct) {
        return Ok(None);
    }
    if depth >= MAX_DEPTH {
        return Err(MultipartError::Malformed("multiparts nested too deep"));
    }
    // Of alternatives one is chosen (RFC 2046 §5.1.4): those not taken
    // need not be understood.
    let alternative = ct.is("multipart/alternative");
    let boundary = boundary(ct)?;
    let mut found = None;
    for part in split(body, &boundary)? {
        *parts += 1;
        if *parts > MAX_PARTS {
            return Err(MultipartError::Malformed("too many body parts"));
        }
        let part = Part::parse(body.slice_ref(part), limits)?;
        let sdp = match &part.content_type {
            Some(inner) => find_sdp(inner, &part.content, limits, depth + 1, parts)?,
            None => None,
        };
        match sdp {
            Some(s) if found.is_none() => found = Some(s),
            Some(_) => {}
            None if alternative || !part.required => {}
            None => {
                let ty = part
                    .content_type
                    .as_ref()
                    .map(|t| {
                        format!(
                            "{}/{}",
                            String::from_utf8_lossy(&t.ty),
                            String::from_utf8_lossy(&t.subtype)
                        )
                    })
                    .unwrap_or_else(|| "text/plain".into());
                return Err(MultipartError::Required(ty));
            }
        }
    }
    Ok(found)
}

/// The boundary parameter, unquoted.
fn boundary(ct: &MediaType) -> Result<Vec<u8>, MultipartError> {
    let raw = ct
        .params
        .value("boundary")
        .ok_or(MultipartError::Malformed("no boundary"))?;
    let b = match raw {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    };
    if b.is_empty() || b.len() > MAX_BOUNDARY || b.iter().any(|c| c.is_ascii_control()) {
        return Err(MultipartError::Malformed("bad boundary"));
    }
    Ok(b.to_vec())
}

/// The parts between the delimiters (RFC 2046 §5.1.1): the preamble and
/// epilogue are dropped; each part is its headers, a blank line and its
/// content, without the CRLF that belongs to the next delimiter.
fn split<'a>(body: &'a [u8], boundary: &[u8]) -> Result<Vec<&'a [u8]>, MultipartError> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 4);
    delimiter.extend_from_slice(b"\r\n--");
    delimiter.extend_from_slice(boundary);
    // The first delimiter may open the body, without a CRLF before it.
    let mut at = if body.starts_with(&delimiter[2..]) {
        delimiter.len() - 2
    } else {
        find(body, &delimiter).ok_or(MultipartError::Malformed("no delimiter"))? + delimiter.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            // The close delimiter; what follows is the epilogue.
            return Ok(parts);
        }
        // Transport padding, then the CRLF that ends the delimiter line.
        let pad = rest
            .iter()
            .take_while(|c| matches!(c, b' ' | b'\t'))
            .count();
        let Some(start) = rest[pad..].strip_prefix(b"\r\n") else {
            return Err(MultipartError::Malformed("bad delimiter line"));
        };
        let start_at = at + pad + 2;
        let Some(len) = find(start, &delimiter) else {
            return Err(MultipartError::Malformed("no close delimiter"));
        };
        if parts.len() == MAX_PARTS {
            return Err(MultipartError::Malformed("too many body parts"));
        }
        parts.push(&body[start_at..start_at + len]);
        at = start_at + len + delimiter.len();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One part: what its headers say of it, and its content.
struct Part {
    /// None: the RFC 2046 default, `text/plain`.
    content_type: Option<MediaType>,
    /// Must be understood (`handling=required`, or no handling given).
    required: bool,
    content: Bytes,
}

impl Part {
    fn parse(part: Bytes, limits: &Limits) -> Result<Part, MultipartError> {
        // A part with no headers starts with its blank line.
        let (head, content) = if part.starts_with(b"\r\n") {
            (part.slice(..0), part.slice(2..))
        } else {
            let end = find(&part, b"\r\n\r\n")
                .ok_or(MultipartError::Malformed("a part without its blank line"))?;
            (part.slice(..end), part.slice(end + 4..))
        };
        let mut content_type = None;
        let mut required = true;
        let mut lines = 0;
        for line in unfold(&head) {
            lines += 1;
            if lines > MAX_PART_HEADERS {
                return Err(MultipartError::Malformed("too many part headers"));
            }
            let Some(colon) = line.iter().position(|&c| c == b':') else {
                return Err(MultipartError::Malformed("a part header without a colon"));
            };
            let name = line[..colon].trim_ascii();
            let value = head.slice_ref(line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"Content-Type") || name.eq_ignore_ascii_case(b"c") {
                let t = MediaType::parse(&value, &value, false, limits)
                    .map_err(|_| MultipartError::Malformed("a part's Content-Type"))?;
                content_type = Some(t);
            } else if name.eq_ignore_ascii_case(b"Content-Disposition") {
                required = handling_required(&value);
            }
        }
        Ok(Part {
            content_type,
            required,
            content,
        })
    }
}

/// The header lines of a part's head, each with its continuation lines
/// (leading white space) joined on.
fn unfold(head: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < head.len() {
        if head[i..].starts_with(b"\r\n") && !matches!(head.get(i + 2), Some(b' ' | b'\t')) {
            lines.push(&head[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if start < head.len() {
        lines.push(&head[start..]);
    }
    lines.retain(|l| !l.trim_ascii().is_empty());
    lines
}

/// `handling` of a Content-Disposition (`signal;handling=optional`):
/// required unless it says optional.
fn handling_required(value: &[u8]) -> bool {
    !value.split(|&c| c == b';').skip(1).any(|p| {
        let mut kv = p.splitn(2, |&c| c == b'=');
        let k = kv.next().unwrap_or_default().trim_ascii();
        let v = kv.next().unwrap_or_default().trim_ascii();
        k.eq_ignore_ascii_case(b"handling") && v.eq_ignore_ascii_case(b"optional")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n";

    fn sdp_of(ct: &str, body: String) -> Result<Option<Bytes>, MultipartError> {
        let ct = MediaType::from_bytes(Bytes::from(ct.to_owned())).unwrap();
        session_description(&ct, &Bytes::from(body), &Limits::default())
    }

    /// A SIP-I INVITE's body as carriers send it (Q.1912.5): the SDP and an
    /// IAM, with the ISUP part optional.
    fn sip_i(disposition: &str) -> String {
        format!(
            "--unique-boundary-1\r\n\
             Content-Type: application/sdp\r\n\r\n\
             {SDP}\r\n\
             --unique-boundary-1\r\n\
             Content-Type: application/isup;version=itu-t92+;base=itu-t92+\r\n\
             {disposition}\
             \r\n\
             \x01\x10\x48\x00\x0a\x03\x02\x0a\x08\x03\x10\x09\x19\x73\x23\x01\r\n\
             --unique-boundary-1--\r\n"
        )
    }

    #[test]
    fn the_sdp_of_a_sip_i_body() {
        let got = sdp_of(
            "multipart/mixed;boundary=unique-boundary-1",
            sip_i("Content-Disposition: signal;handling=optional\r\n"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            &got[..],
            SDP.as_bytes(),
            "the part, without the CRLF before the delimiter"
        );
        // A quoted boundary, a preamble and an epilogue, and the SDP second.
        let body = format!(
            "This is a preamble.\r\n--b1\r\n\
             Content-Type: application/isup;version=itu-t92+\r\n\
             Content-Disposition: signal; handling=optional\r\n\r\n\
             \x01\x02\r\n--b1 \t\r\n\
             content-type: Application/SDP\r\n\r\n{SDP}\r\n--b1--\r\nepilogue"
        );
        let got = sdp_of("multipart/mixed; boundary=\"b1\"", body)
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], SDP.as_bytes());
    }

    /// RFC 5621 §9: a part that must be understood and is not is 415; no
    /// handling given means required (RFC 3261 §20.11).
    #[test]
    fn a_required_part_we_do_not_understand_is_refused() {
        for d in [
            "Content-Disposition: signal;handling=required\r\n",
            "Content-Disposition: signal\r\n",
            "",
        ] {
            assert_eq!(
                sdp_of("multipart/mixed;boundary=unique-boundary-1", sip_i(d)),
                Err(MultipartError::Required("application/isup".into())),
                "{d:?}"
            );
        }
    }

    #[test]
    fn a_multipart_without_sdp_has_none_and_alternatives_need_not_be_understood() {
        let body = "--x\r\nContent-Type: text/plain\r\nContent-Disposition: render;handling=optional\r\n\r\nhello\r\n--x--".to_owned();
        assert_eq!(sdp_of("multipart/mixed;boundary=x", body), Ok(None));
        let body = format!(
            "--x\r\nContent-Type: application/foo\r\n\r\n?\r\n--x\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--x--"
        );
        let got = sdp_of("multipart/alternative;boundary=x", body).unwrap();
        assert_eq!(got.as_deref(), Some(SDP.as_bytes()));
        // Nested: an alternative inside the mixed.
        let inner = format!("--in\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--in--");
        let body = format!(
            "--out\r\nContent-Type: multipart/alternative;boundary=in\r\n\r\n{inner}\r\n--out--\r\n"
        );
        let got = sdp_of("multipart/mixed;boundary=out", body).unwrap();
        assert_eq!(got.as_deref(), Some(SDP.as_bytes()));
    }

    #[test]
    fn malformed_multiparts_are_refused_and_bounded() {
        let sdp_part = format!("Content-Type: application/sdp\r\n\r\n{SDP}\r\n");
        for (ct, body) in [
            ("multipart/mixed", format!("--x\r\n{sdp_part}--x--")),
            (
                "multipart/mixed;boundary=x",
                format!("--y\r\n{sdp_part}--y--"),
            ),
            ("multipart/mixed;boundary=x", format!("--x\r\n{sdp_part}")),
            ("multipart/mixed;boundary=x", "--xjunk\r\n".to_owned()),
            (
                "multipart/mixed;boundary=x",
                "--x\r\nContent-Type: application/sdp\r\n--x--".to_owned(),
            ),
            (
                "multipart/mixed;boundary=x",
                "--x\r\nno colon\r\n\r\n\r\n--x--".to_owned(),
            ),
            (
                "multipart/mixed;boundary=\"\"",
                format!("--\r\n{sdp_part}----"),
            ),
        ] {
            assert!(
                matches!(sdp_of(ct, body.clone()), Err(MultipartError::Malformed(_))),
                "{ct} {body:?}"
            );
        }
        let many: String = (0..=MAX_PARTS)
            .map(|_| "--x\r\nContent-Type: text/plain\r\nContent-Disposition: render;handling=optional\r\n\r\nhi\r\n".to_owned())
            .collect::<String>()
            + "--x--";
        assert_eq!(
            sdp_of("multipart/mixed;boundary=x", many),
            Err(MultipartError::Malformed("too many body parts"))
        );
        // Nested past the depth bound.
        let mut body = format!("Content-Type: application/sdp\r\n\r\n{SDP}");
        for level in 0..=MAX_DEPTH {
            body = format!(
                "Content-Type: multipart/mixed;boundary=l{level}\r\n\r\n--l{level}\r\n{body}\r\n--l{level}--"
            );
        }
        let (ct, inner) = body.split_once("\r\n\r\n").unwrap();
        let ct = ct.trim_start_matches("Content-Type: ");
        assert_eq!(
            sdp_of(ct, inner.to_owned()),
            Err(MultipartError::Malformed("multiparts nested too deep"))
        );
    }

    #[test]
    fn a_message_is_unwrapped_in_place() {
        let body = sip_i("Content-Disposition: signal;handling=optional\r\n");
        let wire = format!(
            "INVITE sip:1000@192.0.2.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\nTo: <sip:1000@192.0.2.1>\r\n\
             From: <sip:a@192.0.2.10>;tag=1\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
             Content-Type: multipart/mixed;boundary=unique-boundary-1\r\n\
             MIME-Version: 1.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let msg = crate::parse_datagram(Bytes::from(wire), &Limits::default()).unwrap();
        let crate::Message::Request(mut req) = msg else {
            panic!("a request")
        };
        unwrap_session(&mut req.headers, &mut req.body).unwrap();
        assert_eq!(&req.body[..], SDP.as_bytes());
        assert!(
            req.headers
                .content_type()
                .unwrap()
                .unwrap()
                .is("application/sdp")
        );
        // Printed, it is a plain SDP offer with its own length.
        let printed = crate::Message::Request(req).to_bytes();
        let text = String::from_utf8_lossy(&printed);
        assert!(
            text.contains(&format!("Content-Length: {}\r\n", SDP.len())),
            "{text}"
        );
        // A multipart in a content coding is left for the coding's 415.
        let mut h = Headers::new();
        h.push(Header::new(KnownHeader::ContentType, "multipart/mixed;boundary=x").unwrap());
        h.push(Header::new(KnownHeader::ContentEncoding, "gzip").unwrap());
        let mut b = Bytes::from_static(b"\x1f\x8b\x08\x00");
        unwrap_session(&mut h, &mut b).unwrap();
        assert_eq!(&b[..], b"\x1f\x8b\x08\x00");
        // Unwrapping again (or a plain body) changes nothing.
        let mut h = Headers::new();
        h.push(Header::new(KnownHeader::ContentType, "application/sdp").unwrap());
        let mut b = Bytes::from_static(SDP.as_bytes());
        unwrap_session(&mut h, &mut b).unwrap();
        assert_eq!(&b[..], SDP.as_bytes());
    }

    #[test]
    fn plain_sdp_is_the_body_and_other_types_have_none() {
        assert_eq!(
            sdp_of("application/sdp", SDP.to_owned())
                .unwrap()
                .as_deref(),
            Some(SDP.as_bytes())
        );
        assert_eq!(
            sdp_of("application/dtmf-relay", "Signal=1".to_owned()),
            Ok(None)
        );
    }
}
