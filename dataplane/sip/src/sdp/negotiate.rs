//! RFC 3264 offer/answer for the audio stream of a call.
//!
//! The switch takes the first usable audio section (RTP, port not 0) and
//! rejects the others (port 0, formats echoed, RFC 3264 §6). The answer keeps
//! the offerer's payload-type numbers and names one codec, the first of the
//! offer's that we support, which the call uses. Telephone-event (RFC 4733)
//! rides along when both sides have it: at the audio's clock rate where
//! offered (RFC 4733 recommends it), else at another (Opus beside
//! telephone-event/8000 is common); the media engine times the events on
//! their own clock.

use std::net::{IpAddr, SocketAddr};

use super::{Direction, Media, RtpMap, Sdp};

/// Codecs the media engine handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
    Opus,
    /// Linear 16-bit PCM (RFC 3551 L16), mono, at 8 or 16 kHz (dynamic
    /// payload types; the static 10/11 are 44.1 kHz, which we do not take).
    L16 {
        rate: u32,
    },
    /// RFC 4733 events at the clock `rate` of the audio beside them.
    TelephoneEvent {
        rate: u32,
    },
}

impl Codec {
    /// Every codec the media engine handles, in the switch's order of
    /// preference for its offers.
    pub const ALL: [Codec; 8] = [
        Codec::Pcmu,
        Codec::Pcma,
        Codec::Opus,
        Codec::L16 { rate: 16_000 },
        Codec::L16 { rate: 8_000 },
        Codec::TelephoneEvent { rate: 8_000 },
        Codec::TelephoneEvent { rate: 48_000 },
        Codec::TelephoneEvent { rate: 16_000 },
    ];

    /// The payload type we use when we offer.
    pub fn default_pt(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => 111,
            Codec::L16 { rate: 16_000 } => 119,
            Codec::L16 { .. } => 118,
            Codec::TelephoneEvent { rate: 48_000 } => 102,
            Codec::TelephoneEvent { rate: 16_000 } => 103,
            Codec::TelephoneEvent { .. } => 101,
        }
    }

    pub fn encoding(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
            Codec::L16 { .. } => "L16",
            Codec::TelephoneEvent { .. } => "telephone-event",
        }
    }

    /// RTP clock rate.
    pub fn clock(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::L16 { rate } | Codec::TelephoneEvent { rate } => rate,
            _ => 8_000,
        }
    }

    /// Telephone-event (at any rate): never a call's audio codec.
    pub fn is_events(self) -> bool {
        matches!(self, Codec::TelephoneEvent { .. })
    }

    fn channels(self) -> Option<u8> {
        (self == Codec::Opus).then_some(2)
    }

    fn fmtp(self) -> Option<&'static str> {
        match self {
            Codec::Opus => Some("useinbandfec=1"),
            Codec::TelephoneEvent { .. } => Some("0-16"),
            _ => None,
        }
    }

    /// Which codec a payload type of `m` denotes, if one of ours: by rtpmap,
    /// or by the static table (RFC 3551) when there is no rtpmap.
    fn of(m: &Media, pt: u8) -> Option<Codec> {
        match m.rtpmap(pt) {
            Some(r) => Self::by_name(r),
            None => match pt {
                0 => Some(Codec::Pcmu),
                8 => Some(Codec::Pcma),
                _ => None,
            },
        }
    }

    fn by_name(r: &RtpMap) -> Option<Codec> {
        let e = r.encoding.as_str();
        Codec::ALL
            .into_iter()
            .find(|c| c.encoding().eq_ignore_ascii_case(e) && c.clock() == r.clock)
            // Stereo linear PCM is not ours.
            .filter(|c| !matches!(c, Codec::L16 { .. }) || r.channels.is_none_or(|n| n == 1))
    }
}

/// Our side of the media: where we receive and what we accept.
#[derive(Debug, Clone)]
pub struct LocalMedia {
    pub addr: IpAddr,
    pub port: u16,
    /// Accepted codecs in our order of preference (for our offers).
    pub codecs: Vec<Codec>,
    pub ptime: u32,
    /// What we want: `SendRecv` normally, `SendOnly`/`Inactive` to hold.
    pub direction: Direction,
    pub session_id: u64,
    pub session_version: u64,
}

/// The result of an exchange, for the media engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send RTP; None while the far end holds (port 0 / 0.0.0.0).
    pub remote: Option<SocketAddr>,
    pub codec: Codec,
    pub pt: u8,
    /// Payload type of telephone-event, if both sides have it.
    pub dtmf_pt: Option<u8>,
    /// Clock rate of the telephone-event `dtmf_pt` names (8000 without).
    pub dtmf_clock: u32,
    /// Our direction for this stream.
    pub direction: Direction,
    pub ptime: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error("no usable audio stream")]
    NoAudio,
    #[error("no codec in common")]
    NoCommonCodec,
    #[error("the answer does not match the offer")]
    AnswerMismatch,
    #[error(
        "the stream's address is not one we can send to (another IP version, multicast or broadcast)"
    )]
    UnreachableAddress,
}

/// Whether RTP from `ours` can go to the far end's `theirs`: the same IP
/// version, one host (not multicast or broadcast). The unspecified address
/// (an RFC 2543 hold) is judged by the caller: it says where not to send.
fn reachable(theirs: IpAddr, ours: IpAddr) -> bool {
    let one_host = match theirs {
        IpAddr::V4(a) => !a.is_multicast() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_multicast(),
    };
    one_host && theirs.is_ipv4() == ours.is_ipv4()
}

/// The stream's address, refused where we cannot send to it.
fn check_address(sdp: &Sdp, m: &Media, local: &LocalMedia) -> Result<(), NegotiationError> {
    match sdp.media_addr(m) {
        Some(a) if !a.is_unspecified() && !reachable(a, local.addr) => {
            Err(NegotiationError::UnreachableAddress)
        }
        _ => Ok(()),
    }
}

fn media_section(local: &LocalMedia, listed: &[(u8, Codec)], direction: Direction) -> Media {
    Media {
        kind: "audio".into(),
        port: local.port,
        proto: "RTP/AVP".into(),
        formats: listed.iter().map(|(pt, _)| pt.to_string()).collect(),
        connection: None,
        rtpmaps: listed
            .iter()
            .map(|(pt, c)| RtpMap {
                pt: *pt,
                encoding: c.encoding().into(),
                clock: c.clock(),
                channels: c.channels(),
            })
            .collect(),
        fmtps: listed
            .iter()
            .filter_map(|(pt, c)| c.fmtp().map(|f| (*pt, f.to_owned())))
            .collect(),
        direction: Some(direction),
        ptime: Some(local.ptime),
        attributes: Vec::new(),
    }
}

fn session(local: &LocalMedia, media: Vec<Media>) -> Sdp {
    Sdp {
        origin_user: "codeb".into(),
        session_id: local.session_id,
        session_version: local.session_version,
        origin_addr: local.addr,
        session_name: "codeb".into(),
        connection: Some(local.addr),
        direction: None,
        media,
    }
}

/// Our offer: every codec we accept, with our payload types.
pub fn offer(local: &LocalMedia) -> Sdp {
    let listed: Vec<(u8, Codec)> = local.codecs.iter().map(|c| (c.default_pt(), *c)).collect();
    session(local, vec![media_section(local, &listed, local.direction)])
}

/// Combines what the other side allows with what we want.
fn our_direction(theirs: Direction, ours: Direction) -> Direction {
    let they_recv = matches!(theirs, Direction::SendRecv | Direction::RecvOnly);
    let they_send = matches!(theirs, Direction::SendRecv | Direction::SendOnly);
    let we_send = matches!(ours, Direction::SendRecv | Direction::SendOnly) && they_recv;
    let we_recv = matches!(ours, Direction::SendRecv | Direction::RecvOnly) && they_send;
    match (we_send, we_recv) {
        (true, true) => Direction::SendRecv,
        (true, false) => Direction::SendOnly,
        (false, true) => Direction::RecvOnly,
        (false, false) => Direction::Inactive,
    }
}

fn remote_of(sdp: &Sdp, m: &Media) -> Option<SocketAddr> {
    let addr = sdp.media_addr(m)?;
    (m.port != 0 && !addr.is_unspecified()).then(|| SocketAddr::new(addr, m.port))
}

fn is_usable_audio(m: &Media) -> bool {
    m.kind == "audio" && m.port != 0 && matches!(m.proto.as_str(), "RTP/AVP" | "RTP/AVPF")
}

/// Answers `offer` (a far end's), or says why the call cannot be taken
/// (the B2BUA then answers 488).
pub fn answer(offer: &Sdp, local: &LocalMedia) -> Result<(Sdp, Negotiated), NegotiationError> {
    let chosen = offer
        .media
        .iter()
        .position(is_usable_audio)
        .ok_or(NegotiationError::NoAudio)?;
    let m = &offer.media[chosen];
    check_address(offer, m, local)?;
    let common: Vec<(u8, Codec)> = m
        .payload_types()
        .filter_map(|pt| Codec::of(m, pt).map(|c| (pt, c)))
        .filter(|(_, c)| local.codecs.contains(c))
        .fold(Vec::new(), |mut acc, (pt, c)| {
            if !acc.iter().any(|(_, seen)| *seen == c) {
                acc.push((pt, c));
            }
            acc
        });
    let (pt, codec) = common
        .iter()
        .copied()
        .find(|(_, c)| !c.is_events())
        .ok_or(NegotiationError::NoCommonCodec)?;
    let dtmf = events_for(codec, &common);
    let dtmf_pt = dtmf.map(|(pt, _)| pt);
    let dtmf_clock = dtmf.map_or(8_000, |(_, c)| c.clock());
    let direction = our_direction(offer.media_direction(m), local.direction);
    // The answer names the one codec the call uses (and telephone-event):
    // listing every common one would let the far end switch to another
    // mid-call (RFC 3264 §6.1), which the other leg never agreed to.
    let answered: Vec<(u8, Codec)> = std::iter::once((pt, codec)).chain(dtmf).collect();
    let media = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, other)| {
            if i == chosen {
                media_section(local, &answered, direction)
            } else {
                Media {
                    port: 0,
                    connection: None,
                    rtpmaps: Vec::new(),
                    fmtps: Vec::new(),
                    direction: None,
                    ptime: None,
                    attributes: Vec::new(),
                    ..other.clone()
                }
            }
        })
        .collect();
    let negotiated = Negotiated {
        remote: remote_of(offer, m),
        codec,
        pt,
        dtmf_pt,
        dtmf_clock,
        direction,
        ptime: m.ptime.unwrap_or(local.ptime),
    };
    Ok((session(local, media), negotiated))
}

/// The telephone-event to use beside `codec` among `listed` (payload type,
/// codec): the one at the audio's rate, else at 8 kHz, else the first.
fn events_for(codec: Codec, listed: &[(u8, Codec)]) -> Option<(u8, Codec)> {
    let events = || listed.iter().copied().filter(|(_, c)| c.is_events());
    events()
        .find(|(_, c)| c.clock() == codec.clock())
        .or_else(|| events().find(|(_, c)| c.clock() == 8_000))
        .or_else(|| events().next())
}

/// Reads the far end's answer to our `offer(local)`.
pub fn read_answer(local: &LocalMedia, answer: &Sdp) -> Result<Negotiated, NegotiationError> {
    let m = answer
        .media
        .iter()
        .find(|m| is_usable_audio(m))
        .ok_or(NegotiationError::NoAudio)?;
    check_address(answer, m, local)?;
    let mut first = None;
    let mut events = Vec::new();
    for pt in m.payload_types() {
        let Some(c) = Codec::of(m, pt) else { continue };
        if !local.codecs.contains(&c) {
            return Err(NegotiationError::AnswerMismatch);
        }
        if c.is_events() {
            events.push((pt, c));
        } else {
            first = first.or(Some((pt, c)));
        }
    }
    let (pt, codec) = first.ok_or(NegotiationError::NoCommonCodec)?;
    let dtmf = events_for(codec, &events);
    Ok(Negotiated {
        remote: remote_of(answer, m),
        codec,
        pt,
        dtmf_pt: dtmf.map(|(pt, _)| pt),
        dtmf_clock: dtmf.map_or(8_000, |(_, c)| c.clock()),
        direction: our_direction(answer.media_direction(m), local.direction),
        ptime: m.ptime.unwrap_or(local.ptime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::SdpLimits;

    fn local() -> LocalMedia {
        LocalMedia {
            addr: "203.0.113.5".parse().unwrap(),
            port: 20000,
            codecs: vec![
                Codec::Pcmu,
                Codec::Pcma,
                Codec::Opus,
                Codec::TelephoneEvent { rate: 8_000 },
                Codec::TelephoneEvent { rate: 48_000 },
            ],
            ptime: 20,
            direction: Direction::SendRecv,
            session_id: 42,
            session_version: 1,
        }
    }

    fn sdp(s: &str) -> Sdp {
        Sdp::parse(s.as_bytes(), &SdpLimits::default()).unwrap()
    }

    const HEAD: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";

    #[test]
    fn answers_with_offerers_numbers_and_order() {
        let o = sdp(&format!(
            "{HEAD}m=audio 4000 RTP/AVP 96 8 0 97 98\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:97 telephone-event/8000\r\na=rtpmap:98 telephone-event/48000\r\n"
        ));
        let (a, n) = answer(&o, &local()).unwrap();
        assert_eq!((n.codec, n.pt, n.dtmf_pt), (Codec::Opus, 96, Some(98)));
        assert_eq!(n.remote, Some("192.0.2.1:4000".parse().unwrap()));
        let m = &a.media[0];
        // One codec, the offerer's first we take, under its number (PCMA
        // and PCMU, also common, are left out: the far end may not switch
        // to them mid-call), and telephone-event at the audio's rate.
        assert_eq!(m.formats, vec!["96", "98"]);
        assert_eq!(m.port, 20000);
        assert_eq!(
            a.connection,
            Some("203.0.113.5".parse().unwrap()),
            "our address, never theirs"
        );
        assert!(!a.to_text().contains("192.0.2.1"));
        // The answer parses, and reading it as an answer agrees.
        let again = sdp(&a.to_text());
        let back = read_answer(&local(), &again).unwrap();
        assert_eq!(
            (back.codec, back.pt, back.dtmf_pt),
            (Codec::Opus, 96, Some(98))
        );
    }

    /// Telephone-event is agreed beside any codec: at the audio's clock
    /// rate where offered, else at 8 kHz, else at the rate offered; the
    /// negotiation says which clock the events run on.
    #[test]
    fn telephone_event_prefers_the_audio_clock_rate() {
        let cases = [
            (
                "96 97",
                "a=rtpmap:96 opus/48000/2\r\na=rtpmap:97 telephone-event/8000",
                Codec::Opus,
                Some((97, 8_000)),
            ),
            (
                "96 97 98",
                "a=rtpmap:96 opus/48000/2\r\na=rtpmap:97 telephone-event/8000\r\na=rtpmap:98 telephone-event/48000",
                Codec::Opus,
                Some((98, 48_000)),
            ),
            (
                "0 101",
                "a=rtpmap:101 telephone-event/48000",
                Codec::Pcmu,
                Some((101, 48_000)),
            ),
            (
                "0 100 101",
                "a=rtpmap:100 telephone-event/48000\r\na=rtpmap:101 telephone-event/8000",
                Codec::Pcmu,
                Some((101, 8_000)),
            ),
            (
                "97 98",
                "a=rtpmap:97 L16/16000\r\na=rtpmap:98 telephone-event/16000",
                Codec::L16 { rate: 16_000 },
                Some((98, 16_000)),
            ),
            (
                "97 98",
                "a=rtpmap:97 L16/16000\r\na=rtpmap:98 telephone-event/24000",
                Codec::L16 { rate: 16_000 },
                None,
            ),
        ];
        let mut with_l16 = local();
        with_l16.codecs = Codec::ALL.to_vec();
        for (formats, maps, codec, dtmf) in cases {
            let o = sdp(&format!(
                "{HEAD}m=audio 4000 RTP/AVP {formats}\r\n{maps}\r\n"
            ));
            let (a, n) = answer(&o, &with_l16).unwrap();
            let got = n.dtmf_pt.map(|pt| (pt, n.dtmf_clock));
            assert_eq!((n.codec, got), (codec, dtmf), "{formats} {maps}");
            // The answer names that one, and read back as an answer to our
            // offer, the same holds.
            let back = read_answer(&with_l16, &sdp(&a.to_text())).unwrap();
            let got = back.dtmf_pt.map(|pt| (pt, back.dtmf_clock));
            assert_eq!(got, dtmf, "{formats} {maps}");
        }
        // An answer that pairs Opus with events at 8 kHz: taken at 8 kHz.
        let mixed = sdp(&format!(
            "{HEAD}m=audio 4000 RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n"
        ));
        let n = read_answer(&with_l16, &mixed).unwrap();
        assert_eq!((n.dtmf_pt, n.dtmf_clock), (Some(101), 8_000));
        // Our offer carries events at each of our audio rates.
        let text = offer(&with_l16).to_text();
        for line in [
            "a=rtpmap:101 telephone-event/8000",
            "a=rtpmap:102 telephone-event/48000",
            "a=rtpmap:103 telephone-event/16000",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn static_types_without_rtpmap_and_no_common_codec() {
        let o = sdp(&format!("{HEAD}m=audio 4000 RTP/AVP 18 0\r\n"));
        let (_, n) = answer(&o, &local()).unwrap();
        assert_eq!((n.codec, n.pt, n.dtmf_pt), (Codec::Pcmu, 0, None));
        let g729 = sdp(&format!(
            "{HEAD}m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
        ));
        assert_eq!(
            answer(&g729, &local()).err(),
            Some(NegotiationError::NoCommonCodec)
        );
        let dtmf_only = sdp(&format!(
            "{HEAD}m=audio 4000 RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        ));
        assert_eq!(
            answer(&dtmf_only, &local()).err(),
            Some(NegotiationError::NoCommonCodec)
        );
        let video = sdp(&format!(
            "{HEAD}m=video 4000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        ));
        assert_eq!(
            answer(&video, &local()).err(),
            Some(NegotiationError::NoAudio)
        );
        let mut pcma_only = local();
        pcma_only.codecs = vec![Codec::Pcma];
        let o = sdp(&format!("{HEAD}m=audio 4000 RTP/AVP 0\r\n"));
        assert_eq!(
            answer(&o, &pcma_only).err(),
            Some(NegotiationError::NoCommonCodec)
        );
    }

    #[test]
    fn other_sections_are_rejected_in_place() {
        let o = sdp(&format!(
            "{HEAD}m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 8\r\n"
        ));
        let (a, n) = answer(&o, &local()).unwrap();
        assert_eq!(a.media.len(), 3, "same number of sections, same order");
        assert_eq!((a.media[0].port, a.media[0].kind.as_str()), (0, "video"));
        assert_eq!(a.media[1].port, 20000);
        assert_eq!(a.media[2].port, 0);
        assert_eq!(n.remote, Some("192.0.2.1:4000".parse().unwrap()));
    }

    #[test]
    fn hold_and_directions() {
        let hold = sdp(&format!("{HEAD}m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n"));
        let (a, n) = answer(&hold, &local()).unwrap();
        assert_eq!(n.direction, Direction::RecvOnly);
        assert_eq!(a.media[0].direction, Some(Direction::RecvOnly));
        let old_hold = sdp(
            "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
        );
        assert_eq!(answer(&old_hold, &local()).unwrap().1.remote, None);
        let inactive = sdp(&format!("{HEAD}a=inactive\r\nm=audio 4000 RTP/AVP 0\r\n"));
        assert_eq!(
            answer(&inactive, &local()).unwrap().1.direction,
            Direction::Inactive
        );
        let mut holding = local();
        holding.direction = Direction::SendOnly;
        let o = sdp(&format!("{HEAD}m=audio 4000 RTP/AVP 0\r\n"));
        assert_eq!(
            answer(&o, &holding).unwrap().1.direction,
            Direction::SendOnly
        );
        let off = offer(&holding);
        assert_eq!(off.media[0].direction, Some(Direction::SendOnly));
    }

    #[test]
    fn a_stream_we_cannot_send_to_is_refused() {
        let at = |c: &str| {
            sdp(&format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc={c}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
            ))
        };
        // Our media address is IPv4.
        for c in [
            "IN IP6 ::1",
            "IN IP6 2001:db8::1",
            "IN IP4 224.2.1.1/127",
            "IN IP4 255.255.255.255",
        ] {
            assert_eq!(
                answer(&at(c), &local()).map(|_| ()),
                Err(NegotiationError::UnreachableAddress),
                "{c}"
            );
            assert_eq!(
                read_answer(&local(), &at(c)).map(|_| ()),
                Err(NegotiationError::UnreachableAddress),
                "{c}"
            );
        }
        // A host of our version, and the old hold address, are fine.
        assert!(answer(&at("IN IP4 198.51.100.7"), &local()).is_ok());
        assert_eq!(
            answer(&at("IN IP4 0.0.0.0"), &local()).unwrap().1.remote,
            None
        );
        let mut v6 = local();
        v6.addr = "2001:db8::5".parse().unwrap();
        assert!(answer(&at("IN IP6 2001:db8::1"), &v6).is_ok());
        assert!(answer(&at("IN IP4 198.51.100.7"), &v6).is_err());
    }

    #[test]
    fn linear_pcm_is_taken_mono_at_8_or_16_khz() {
        let mut ours = local();
        ours.codecs.insert(3, Codec::L16 { rate: 16_000 });
        ours.codecs.insert(4, Codec::L16 { rate: 8_000 });
        let o = sdp(&format!(
            "{HEAD}m=audio 4000 RTP/AVP 96 97\r\na=rtpmap:96 L16/16000\r\na=rtpmap:97 L16/8000/1\r\n"
        ));
        let (a, n) = answer(&o, &ours).unwrap();
        assert_eq!((n.codec, n.pt), (Codec::L16 { rate: 16_000 }, 96));
        assert_eq!(a.media[0].rtpmap(96).map(|r| r.clock), Some(16_000));
        // Stereo, 44.1 kHz (the static 10 and 11 too) and other rates are
        // not ours.
        for m in [
            "96\r\na=rtpmap:96 L16/8000/2",
            "96\r\na=rtpmap:96 L16/44100",
            "10 11",
            "96\r\na=rtpmap:96 L16/32000",
        ] {
            let o = sdp(&format!("{HEAD}m=audio 4000 RTP/AVP {m}\r\n"));
            assert_eq!(
                answer(&o, &ours).unwrap_err(),
                NegotiationError::NoCommonCodec,
                "{m}"
            );
        }
        // Offered by us with dynamic types; an answer choosing one is read.
        let off = offer(&ours);
        let m = &off.media[0];
        assert_eq!(
            m.rtpmap(119).map(|r| (r.encoding.as_str(), r.clock)),
            Some(("L16", 16_000))
        );
        assert_eq!(
            m.rtpmap(118).map(|r| (r.encoding.as_str(), r.clock)),
            Some(("L16", 8_000))
        );
    }

    #[test]
    fn our_offer_and_their_answer() {
        let o = offer(&local());
        let text = o.to_text();
        assert!(
            text.contains("m=audio 20000 RTP/AVP 0 8 111 101 102\r\n"),
            "{text}"
        );
        assert!(text.contains("a=rtpmap:111 opus/48000/2\r\n"));
        assert!(text.contains("a=fmtp:101 0-16\r\n"));
        let a = sdp(&format!(
            "{HEAD}m=audio 6000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        ));
        let n = read_answer(&local(), &a).unwrap();
        assert_eq!((n.codec, n.pt, n.dtmf_pt), (Codec::Pcma, 8, Some(101)));
        let bad = sdp(&format!(
            "{HEAD}m=audio 6000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
        ));
        assert_eq!(
            read_answer(&local(), &bad).err(),
            Some(NegotiationError::NoCommonCodec)
        );
        let rejected = sdp(&format!("{HEAD}m=audio 0 RTP/AVP 0\r\n"));
        assert_eq!(
            read_answer(&local(), &rejected).err(),
            Some(NegotiationError::NoAudio)
        );
    }
}
