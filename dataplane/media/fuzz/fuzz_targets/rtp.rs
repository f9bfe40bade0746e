//! RTP parsing on arbitrary bytes. Asserts: a packet that parses accounts
//! for every octet (header, CSRCs, extension, payload, padding) exactly as
//! its first octet says; rewriting its fixed header in place changes those
//! fields and nothing else; and a header we write around its payload
//! parses back to the same fields and payload.
#![no_main]

use codeb_media::rtp::{
    FIXED_HEADER_LEN, MAX_PACKET_LEN, RtpError, RtpHeader, RtpPacket, rewrite_header,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = RtpPacket::parse(data) else {
        return;
    };
    assert!((FIXED_HEADER_LEN..=MAX_PACKET_LEN).contains(&data.len()));
    assert_eq!(data[0] >> 6, 2);
    assert!(!(72..=76).contains(&p.payload_type()));

    // Every octet is header, payload or padding, in that order.
    assert_eq!(
        p.header_len() + p.payload().len() + p.padding_len(),
        data.len()
    );
    assert_eq!(p.as_bytes(), data);
    let csrcs: Vec<u32> = p.csrcs().collect();
    assert_eq!(csrcs.len(), usize::from(data[0] & 0x0f));
    assert_eq!(csrcs.len(), p.csrc_count());
    let mut fixed = FIXED_HEADER_LEN + 4 * csrcs.len();
    match p.extension() {
        Some((profile, words)) => {
            assert!(data[0] & 0x10 != 0);
            assert_eq!(profile, u16::from_be_bytes([data[fixed], data[fixed + 1]]));
            let announced = usize::from(u16::from_be_bytes([data[fixed + 2], data[fixed + 3]]));
            assert_eq!(words.len(), 4 * announced);
            fixed += 4 + words.len();
        }
        None => assert!(data[0] & 0x10 == 0),
    }
    assert_eq!(p.header_len(), fixed);
    if data[0] & 0x20 != 0 {
        let pad = usize::from(data[data.len() - 1]);
        assert!(pad > 0);
        assert_eq!(p.padding_len(), pad);
    } else {
        assert_eq!(p.padding_len(), 0);
    }
    assert_eq!(
        p.payload(),
        &data[p.header_len()..data.len() - p.padding_len()]
    );

    // Rewrite the fixed header in place (the relay path): the new fields
    // read back, everything after them is untouched.
    let new = RtpHeader {
        marker: !p.marker(),
        payload_type: p.payload_type() ^ 0x55,
        sequence: p.sequence().wrapping_add(0x1234),
        timestamp: p.timestamp().rotate_left(7) ^ 0xa5a5_5a5a,
        ssrc: !p.ssrc(),
    };
    let mut copy = data.to_vec();
    rewrite_header(&mut copy, &new).expect("a parsed packet takes any header");
    assert_eq!(copy[FIXED_HEADER_LEN..], data[FIXED_HEADER_LEN..]);
    assert_eq!(copy[0], data[0]);
    match RtpPacket::parse(&copy) {
        Ok(r) => {
            assert_eq!(
                (
                    r.marker(),
                    r.payload_type(),
                    r.sequence(),
                    r.timestamp(),
                    r.ssrc()
                ),
                (
                    new.marker,
                    new.payload_type,
                    new.sequence,
                    new.timestamp,
                    new.ssrc
                )
            );
            assert_eq!(r.csrcs().collect::<Vec<_>>(), csrcs);
            assert_eq!(r.extension(), p.extension());
            assert_eq!(r.payload(), p.payload());
            assert_eq!(r.padding_len(), p.padding_len());
        }
        // Only an RTCP-range payload type may make it unreadable as RTP.
        Err(e) => assert_eq!(e, RtpError::RtcpPayloadType(new.payload_type)),
    }

    // Our own header around its payload (the transcoding path).
    let ours = RtpHeader {
        payload_type: p.payload_type(),
        marker: p.marker(),
        sequence: p.sequence(),
        timestamp: p.timestamp(),
        ssrc: p.ssrc(),
    };
    let mut out = [0u8; MAX_PACKET_LEN];
    let n = ours
        .write_packet(p.payload(), &mut out)
        .expect("a parsed payload fits a packet");
    assert_eq!(n, FIXED_HEADER_LEN + p.payload().len());
    let w = RtpPacket::parse(&out[..n]).expect("what we write parses");
    assert_eq!(
        (
            w.marker(),
            w.payload_type(),
            w.sequence(),
            w.timestamp(),
            w.ssrc()
        ),
        (
            p.marker(),
            p.payload_type(),
            p.sequence(),
            p.timestamp(),
            p.ssrc()
        )
    );
    assert_eq!(w.payload(), p.payload());
    assert_eq!((w.csrc_count(), w.padding_len()), (0, 0));
    assert!(w.extension().is_none());
    // One octet short of room is refused, not truncated.
    assert!(ours.write_packet(p.payload(), &mut out[..n - 1]).is_err());
});
