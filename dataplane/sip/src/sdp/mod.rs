//! SDP (RFC 8866) as a B2BUA needs it: a bounded parser and a printer for
//! session descriptions, and RFC 3264 offer/answer for audio with the codecs
//! the switch handles (PCMU, PCMA, Opus, telephone-event).
//!
//! The switch never passes a far end's SDP through: it answers and offers
//! with its own media address and ports, so both legs only ever see the
//! switch (topology hiding, and the media engine can relay or transcode).

mod negotiate;
mod parse;

pub use negotiate::{Codec, LocalMedia, Negotiated, NegotiationError, answer, offer, read_answer};
pub use parse::{SdpError, SdpLimits};

use std::fmt::Write as _;
use std::net::IpAddr;

/// Media direction attribute (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// What an answerer says to an offer with this direction.
    pub fn answer_to(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub pt: u8,
    pub encoding: String,
    pub clock: u32,
    pub channels: Option<u8>,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, ...
    pub kind: String,
    pub port: u16,
    pub proto: String,
    /// Format list: payload types for RTP protocols, raw tokens otherwise.
    pub formats: Vec<String>,
    pub connection: Option<IpAddr>,
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp:<pt> <params>`
    pub fmtps: Vec<(u8, String)>,
    pub direction: Option<Direction>,
    pub ptime: Option<u32>,
    /// Other attributes, kept as written (name, optional value).
    pub attributes: Vec<(String, Option<String>)>,
}

impl Media {
    pub fn is_rtp(&self) -> bool {
        self.proto.starts_with("RTP/")
    }

    /// Payload types of an RTP section, in the offerer's preference order.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|pt| *pt <= 127)
    }

    pub fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|r| r.pt == pt)
    }

    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, v)| v.as_str())
    }
}

/// A session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    pub origin_user: String,
    pub session_id: u64,
    pub session_version: u64,
    pub origin_addr: IpAddr,
    pub session_name: String,
    /// Session-level `c=`.
    pub connection: Option<IpAddr>,
    /// Session-level direction, the default for every section.
    pub direction: Option<Direction>,
    pub media: Vec<Media>,
}

impl Sdp {
    /// Where a section's media goes: its own `c=` or the session's.
    pub fn media_addr(&self, m: &Media) -> Option<IpAddr> {
        m.connection.or(self.connection)
    }

    /// A section's effective direction (`sendrecv` when unsaid).
    pub fn media_direction(&self, m: &Media) -> Direction {
        m.direction
            .or(self.direction)
            .unwrap_or(Direction::SendRecv)
    }

    /// Prints the description with CRLF line ends.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(256);
        let net = |a: &IpAddr| if a.is_ipv4() { "IP4" } else { "IP6" };
        let _ = write!(
            s,
            "v=0\r\no={} {} {} IN {} {}\r\ns={}\r\n",
            self.origin_user,
            self.session_id,
            self.session_version,
            net(&self.origin_addr),
            self.origin_addr,
            self.session_name
        );
        if let Some(c) = &self.connection {
            let _ = write!(s, "c=IN {} {c}\r\n", net(c));
        }
        s.push_str("t=0 0\r\n");
        if let Some(d) = self.direction {
            let _ = write!(s, "a={}\r\n", d.as_str());
        }
        for m in &self.media {
            let _ = write!(s, "m={} {} {}", m.kind, m.port, m.proto);
            for f in &m.formats {
                let _ = write!(s, " {f}");
            }
            s.push_str("\r\n");
            if let Some(c) = &m.connection {
                let _ = write!(s, "c=IN {} {c}\r\n", net(c));
            }
            for r in &m.rtpmaps {
                let _ = write!(s, "a=rtpmap:{} {}/{}", r.pt, r.encoding, r.clock);
                if let Some(ch) = r.channels {
                    let _ = write!(s, "/{ch}");
                }
                s.push_str("\r\n");
            }
            for (pt, v) in &m.fmtps {
                let _ = write!(s, "a=fmtp:{pt} {v}\r\n");
            }
            if let Some(p) = m.ptime {
                let _ = write!(s, "a=ptime:{p}\r\n");
            }
            if let Some(d) = m.direction {
                let _ = write!(s, "a={}\r\n", d.as_str());
            }
            for (k, v) in &m.attributes {
                match v {
                    Some(v) => {
                        let _ = write!(s, "a={k}:{v}\r\n");
                    }
                    None => {
                        let _ = write!(s, "a={k}\r\n");
                    }
                }
            }
        }
        s
    }
}
