//! SDP (RFC 8866) as a far end sends it in an INVITE, a 183 or a 200, and
//! RFC 3264 offer/answer on it. Asserts: no panic; what parses is within
//! the limits and prints to a description that parses again to the same
//! value; answering it gives a codec of ours with the offerer's payload
//! type, in an answer that parses and that we read back to the same
//! choice; reading it as the answer to our offer gives a codec we offered.
#![no_main]

use codeb_sip::sdp::{Codec, Direction, LocalMedia, Sdp, SdpLimits, answer, read_answer};
use libfuzzer_sys::fuzz_target;

fn local() -> LocalMedia {
    LocalMedia {
        addr: "203.0.113.5".parse().expect("literal address"),
        port: 20000,
        codecs: Codec::ALL.to_vec(),
        ptime: 20,
        direction: Direction::SendRecv,
        session_id: 42,
        session_version: 1,
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = SdpLimits::default();
    let Ok(sdp) = Sdp::parse(data, &limits) else {
        return;
    };
    assert!(sdp.media.len() <= limits.max_media);
    for m in &sdp.media {
        assert!(!m.formats.is_empty() && m.formats.len() <= limits.max_formats);
        assert!(m.rtpmaps.len() + m.fmtps.len() + m.attributes.len() <= limits.max_attributes);
        assert!(m.payload_types().all(|pt| pt <= 127));
        assert!(m.rtpmaps.iter().all(|r| r.pt <= 127 && r.clock > 0));
        assert!(m.ptime.is_none_or(|p| (1..=1000).contains(&p)));
    }

    // The printed form drops what the parser does not keep (b=, i=, the
    // session's own attributes) and adds a t= line; an origin given as a
    // host name prints as 0.0.0.0. So it may be a line or a few bytes
    // longer than the input, never more.
    let printed = sdp.to_text();
    let roomier = SdpLimits {
        max_lines: limits.max_lines + 2,
        max_line_len: limits.max_line_len + 64,
        ..limits
    };
    let again = Sdp::parse(printed.as_bytes(), &roomier).expect("printed SDP parses");
    assert_eq!(again, sdp, "printed as\n{printed}");

    let ours = local();
    if let Ok((ans, negotiated)) = answer(&sdp, &ours) {
        assert!(negotiated.pt <= 127);
        assert!(!negotiated.codec.is_events());
        assert!(ours.codecs.contains(&negotiated.codec));
        assert_eq!(ans.media.len(), sdp.media.len());
        let text = ans.to_text();
        let ans = Sdp::parse(text.as_bytes(), &limits).expect("our answer parses");
        let read = read_answer(&ours, &ans).expect("our answer reads as an answer");
        assert_eq!(
            (read.codec, read.pt, read.dtmf_pt),
            (negotiated.codec, negotiated.pt, negotiated.dtmf_pt),
            "answer\n{text}"
        );
    }
    if let Ok(n) = read_answer(&ours, &sdp) {
        assert!(n.pt <= 127);
        assert!(!n.codec.is_events());
        assert!(ours.codecs.contains(&n.codec));
        assert!(
            n.remote
                .is_none_or(|r| r.port() != 0 && !r.ip().is_unspecified())
        );
    }
});
