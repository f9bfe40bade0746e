//! The bounded SDP parser. Lines end in CRLF (a bare LF is tolerated, as
//! RFC 8866 §5 asks of parsers); every count and number is checked, and
//! anything outside the grammar is an error the B2BUA turns into a 4xx.

use std::net::IpAddr;

use super::{Direction, Media, RtpMap, Sdp};

/// Bounds on what one description may contain.
#[derive(Debug, Clone, Copy)]
pub struct SdpLimits {
    pub max_lines: usize,
    pub max_line_len: usize,
    pub max_media: usize,
    pub max_formats: usize,
    pub max_attributes: usize,
}

impl Default for SdpLimits {
    fn default() -> Self {
        SdpLimits {
            max_lines: 256,
            max_line_len: 1024,
            max_media: 8,
            max_formats: 64,
            max_attributes: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not UTF-8 text")]
    NotText,
    #[error("SDP line {0} is malformed")]
    BadLine(usize),
    #[error("SDP must start with v=0")]
    BadVersion,
    #[error("SDP lacks its {0}= line")]
    Missing(char),
    #[error("SDP exceeds a limit ({0})")]
    TooBig(&'static str),
    #[error("SDP connection address is not an IP address")]
    BadAddress,
    #[error("SDP m= line is malformed")]
    BadMedia,
    #[error("SDP payload type out of range")]
    BadPayloadType,
    #[error("SDP attribute {0} is malformed")]
    BadAttribute(&'static str),
}

fn parse_connection(v: &str) -> Result<IpAddr, SdpError> {
    let mut parts = v.split(' ');
    let (Some("IN"), Some(net), Some(addr), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SdpError::BadAddress);
    };
    // Multicast TTL / count suffixes are not ours to use; the address is.
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr.parse().map_err(|_| SdpError::BadAddress)?;
    match (net, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(SdpError::BadAddress),
    }
}

fn parse_pt(s: &str) -> Result<u8, SdpError> {
    match s.parse::<u8>() {
        Ok(pt) if pt <= 127 => Ok(pt),
        _ => Err(SdpError::BadPayloadType),
    }
}

fn parse_media(v: &str, limits: &SdpLimits) -> Result<Media, SdpError> {
    let mut parts = v.split(' ').filter(|p| !p.is_empty());
    let kind = parts.next().ok_or(SdpError::BadMedia)?;
    let port = parts.next().ok_or(SdpError::BadMedia)?;
    let proto = parts.next().ok_or(SdpError::BadMedia)?;
    let port: u16 = port
        .split('/')
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| SdpError::BadMedia)?;
    let valid_token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !valid_token(kind) || !valid_token(proto) {
        return Err(SdpError::BadMedia);
    }
    let mut formats = Vec::new();
    for f in parts {
        if formats.len() >= limits.max_formats {
            return Err(SdpError::TooBig("formats"));
        }
        if !valid_token(f) {
            return Err(SdpError::BadMedia);
        }
        if proto.starts_with("RTP/") {
            parse_pt(f)?;
        }
        formats.push(f.to_owned());
    }
    if formats.is_empty() {
        return Err(SdpError::BadMedia);
    }
    Ok(Media {
        kind: kind.to_owned(),
        port,
        proto: proto.to_owned(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        direction: None,
        ptime: None,
        attributes: Vec::new(),
    })
}

fn parse_rtpmap(v: &str) -> Result<RtpMap, SdpError> {
    let bad = SdpError::BadAttribute("rtpmap");
    let (pt, rest) = v.split_once(' ').ok_or(bad.clone())?;
    let pt = parse_pt(pt)?;
    let mut p = rest.trim().split('/');
    let encoding = p.next().filter(|e| !e.is_empty()).ok_or(bad.clone())?;
    let clock: u32 = p
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 0)
        .ok_or(bad.clone())?;
    let channels = match p.next() {
        None => None,
        Some(c) => Some(c.parse::<u8>().ok().filter(|c| *c > 0).ok_or(bad.clone())?),
    };
    if p.next().is_some() || !encoding.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad);
    }
    Ok(RtpMap {
        pt,
        encoding: encoding.to_owned(),
        clock,
        channels,
    })
}

fn direction(name: &str) -> Option<Direction> {
    match name {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

impl Sdp {
    pub fn parse(body: &[u8], limits: &SdpLimits) -> Result<Sdp, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
        let mut lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .enumerate();
        let mut sdp = Sdp {
            origin_user: String::new(),
            session_id: 0,
            session_version: 0,
            origin_addr: IpAddr::from([0, 0, 0, 0]),
            session_name: String::new(),
            connection: None,
            direction: None,
            media: Vec::new(),
        };
        let (mut seen_v, mut seen_o, mut seen_s) = (false, false, false);
        let mut count = 0;
        for (i, line) in lines.by_ref() {
            if line.is_empty() {
                continue;
            }
            count += 1;
            if count > limits.max_lines {
                return Err(SdpError::TooBig("lines"));
            }
            if line.len() > limits.max_line_len {
                return Err(SdpError::TooBig("line length"));
            }
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
                return Err(SdpError::BadLine(i + 1));
            }
            let (kind, value) = (bytes[0], &line[2..]);
            if !seen_v {
                if kind != b'v' || value != "0" {
                    return Err(SdpError::BadVersion);
                }
                seen_v = true;
                continue;
            }
            match kind {
                b'o' => {
                    let f: Vec<&str> = value.split(' ').collect();
                    let [user, id, ver, "IN", _, addr] = f.as_slice() else {
                        return Err(SdpError::BadLine(i + 1));
                    };
                    sdp.origin_user = (*user).to_owned();
                    sdp.session_id = id.parse().map_err(|_| SdpError::BadLine(i + 1))?;
                    sdp.session_version = ver.parse().map_err(|_| SdpError::BadLine(i + 1))?;
                    // An origin with a host name is legal; it identifies, it
                    // does not route, so an unparseable one is kept as 0.0.0.0.
                    sdp.origin_addr = addr.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
                    seen_o = true;
                }
                b's' => {
                    sdp.session_name = value.to_owned();
                    seen_s = true;
                }
                b'c' => {
                    let addr = parse_connection(value)?;
                    match sdp.media.last_mut() {
                        Some(m) => m.connection = Some(addr),
                        None => sdp.connection = Some(addr),
                    }
                }
                b'm' => {
                    if sdp.media.len() >= limits.max_media {
                        return Err(SdpError::TooBig("media sections"));
                    }
                    sdp.media.push(parse_media(value, limits)?);
                }
                b'a' => {
                    let (name, val) = match value.split_once(':') {
                        Some((n, v)) => (n, Some(v)),
                        None => (value, None),
                    };
                    // att-field is a token (RFC 8866 §9).
                    let token =
                        |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`{|}~".contains(&b);
                    if name.is_empty() || !name.bytes().all(token) {
                        return Err(SdpError::BadAttribute("name"));
                    }
                    let Some(m) = sdp.media.last_mut() else {
                        if let Some(d) = direction(name) {
                            sdp.direction = Some(d);
                        }
                        continue;
                    };
                    if m.rtpmaps.len() + m.fmtps.len() + m.attributes.len() >= limits.max_attributes
                    {
                        return Err(SdpError::TooBig("attributes"));
                    }
                    match (name, val) {
                        // A malformed rtpmap (no clock rate, as RFC 4475's
                        // `a=rtpmap:31 LPC`) says nothing usable about its
                        // payload type and is left out, as an unknown
                        // attribute is; the rest of the description stands
                        // (RFC 3264 §6 refuses a stream, not the session).
                        ("rtpmap", Some(v)) => {
                            if let Ok(r) = parse_rtpmap(v) {
                                m.rtpmaps.push(r);
                            }
                        }
                        ("fmtp", Some(v)) => {
                            let (pt, params) = v.split_once(' ').unwrap_or((v, ""));
                            m.fmtps.push((parse_pt(pt)?, params.trim().to_owned()));
                        }
                        ("ptime", Some(v)) => {
                            let p: u32 = v
                                .trim()
                                .parse()
                                .map_err(|_| SdpError::BadAttribute("ptime"))?;
                            if !(1..=1000).contains(&p) {
                                return Err(SdpError::BadAttribute("ptime"));
                            }
                            m.ptime = Some(p);
                        }
                        (n, None) if direction(n).is_some() => m.direction = direction(n),
                        (n, v) => m.attributes.push((n.to_owned(), v.map(str::to_owned))),
                    }
                }
                b't' | b'b' | b'i' | b'u' | b'e' | b'p' | b'r' | b'z' | b'k' => {}
                _ => return Err(SdpError::BadLine(i + 1)),
            }
        }
        if !seen_v {
            return Err(SdpError::BadVersion);
        }
        if !seen_o {
            return Err(SdpError::Missing('o'));
        }
        if !seen_s {
            return Err(SdpError::Missing('s'));
        }
        Ok(sdp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 111 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\na=rtcp:49171\r\n";

    #[test]
    fn parses_and_prints() {
        let s = Sdp::parse(OFFER.as_bytes(), &SdpLimits::default()).unwrap();
        assert_eq!(s.session_id, 2890844526);
        assert_eq!(s.connection, Some("192.0.2.10".parse().unwrap()));
        let m = &s.media[0];
        assert_eq!(
            (m.kind.as_str(), m.port, m.proto.as_str()),
            ("audio", 49170, "RTP/AVP")
        );
        assert_eq!(m.payload_types().collect::<Vec<_>>(), vec![0, 8, 111, 101]);
        assert_eq!(m.rtpmap(111).unwrap().channels, Some(2));
        assert_eq!(m.fmtp(101), Some("0-16"));
        assert_eq!(m.ptime, Some(20));
        assert_eq!(m.direction, Some(Direction::SendRecv));
        assert_eq!(
            m.attributes,
            vec![("rtcp".to_owned(), Some("49171".to_owned()))]
        );
        let again = Sdp::parse(s.to_text().as_bytes(), &SdpLimits::default()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn refuses_bad_input() {
        let l = SdpLimits::default();
        let cases: &[(&str, SdpError)] = &[
            ("v=1\r\n", SdpError::BadVersion),
            ("", SdpError::BadVersion),
            ("v=0\r\ns=-\r\n", SdpError::Missing('o')),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 4294967296 RTP/AVP 0\r\n",
                SdpError::BadMedia,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5000 RTP/AVP 4294967296\r\n",
                SdpError::BadPayloadType,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5000 RTP/AVP 128\r\n",
                SdpError::BadPayloadType,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 example.com\r\n",
                SdpError::BadAddress,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP6 1.2.3.4\r\n",
                SdpError::BadAddress,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5000 RTP/AVP 0\r\na=ptime:0\r\n",
                SdpError::BadAttribute("ptime"),
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nX=1\r\n",
                SdpError::BadLine(4),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                Sdp::parse(text.as_bytes(), &l).as_ref().err(),
                Some(want),
                "{text:?}"
            );
        }
        let many = format!(
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5000 RTP/AVP {}\r\n",
            (0..65)
                .map(|i| (i % 128).to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert_eq!(
            Sdp::parse(many.as_bytes(), &l),
            Err(SdpError::TooBig("formats"))
        );
        assert_eq!(Sdp::parse(b"v=0\r\n\xff", &l), Err(SdpError::NotText));
    }

    #[test]
    fn known_bad_sdp_bodies() {
        // The SDP bodies in shared/testdata/sip/known-bad that broke other
        // stacks: each is refused with a specific error, never a panic.
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/testdata/sip/known-bad/"
        );
        for (name, want) in [
            (
                "es2018-02-pjsip-sdp-invalid-fmtp.sip",
                SdpError::BadAttribute("name"),
            ),
            (
                "es2018-03-pjsip-sdp-fmt-4294967296.sip",
                SdpError::BadPayloadType,
            ),
        ] {
            let raw = std::fs::read(format!("{dir}{name}")).unwrap();
            let body_at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(
                Sdp::parse(&raw[body_at..], &SdpLimits::default()),
                Err(want),
                "{name}"
            );
        }
    }
}
