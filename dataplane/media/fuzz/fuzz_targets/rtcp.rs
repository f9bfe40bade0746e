//! RTCP compound parsing on arbitrary bytes. Asserts: a compound that
//! parses can be read to the end without a panic (report blocks, SDES
//! CNAME, BYE list all inside the datagram), and what was read, written
//! back with [`CompoundWriter`], parses again and reads the same.
#![no_main]

use codeb_media::rtcp::{
    Compound, CompoundWriter, PT_BYE, PT_RR, PT_SDES, PT_SR, ReportBlock, RtcpPacket, SenderInfo,
    sdes_cname,
};
use libfuzzer_sys::fuzz_target;

/// What a reader takes from one packet (the parts we also write).
#[derive(Debug, PartialEq, Eq)]
enum Read {
    Sr(u32, SenderInfo, Vec<ReportBlock>),
    Rr(u32, Vec<ReportBlock>),
    Cname(u32, Vec<u8>),
    Bye(Vec<u32>),
}

fn read(c: &Compound<'_>) -> Vec<Read> {
    let mut out = Vec::new();
    for p in c.packets() {
        match p {
            RtcpPacket::SenderReport {
                ssrc,
                info,
                reports,
            } => {
                let blocks: Vec<ReportBlock> = reports.iter().collect();
                assert_eq!(blocks.len(), reports.len());
                assert_eq!(blocks.is_empty(), reports.is_empty());
                for b in &blocks {
                    assert!((-0x80_0000..=0x7f_ffff).contains(&b.cumulative_lost));
                }
                out.push(Read::Sr(ssrc, info, blocks));
            }
            RtcpPacket::ReceiverReport { ssrc, reports } => {
                let blocks: Vec<ReportBlock> = reports.iter().collect();
                assert_eq!(blocks.len(), reports.len());
                out.push(Read::Rr(ssrc, blocks));
            }
            RtcpPacket::Sdes { chunks, count } => {
                if count > 0
                    && let Some((ssrc, text)) = sdes_cname(chunks)
                {
                    assert!(text.len() <= 255);
                    out.push(Read::Cname(ssrc, text.to_vec()));
                }
            }
            RtcpPacket::Bye { ssrcs } => {
                assert_eq!(ssrcs.len() % 4, 0);
                let list = ssrcs
                    .chunks_exact(4)
                    .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
                    .collect();
                out.push(Read::Bye(list));
            }
            RtcpPacket::Other { packet_type } => {
                assert!(![PT_SR, PT_RR, PT_SDES, PT_BYE].contains(&packet_type));
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(c) = Compound::parse(data) else {
        return;
    };
    let got = read(&c);
    assert!(
        matches!(got.first(), Some(Read::Sr(..) | Read::Rr(..))),
        "a compound starts with a report"
    );

    // Write back what was read; a BYE of several sources as one BYE each.
    let mut buf = vec![0u8; 4 * data.len() + 64];
    let mut w = CompoundWriter::new(&mut buf);
    let mut expect = Vec::new();
    for r in got {
        match &r {
            Read::Sr(ssrc, info, blocks) => w.sender_report(*ssrc, info, blocks),
            Read::Rr(ssrc, blocks) => w.receiver_report(*ssrc, blocks),
            Read::Cname(ssrc, text) => w.sdes_cname(*ssrc, text),
            Read::Bye(list) => {
                for s in list {
                    w.bye(*s).expect("room for a BYE");
                    expect.push(Read::Bye(vec![*s]));
                }
                continue;
            }
        }
        .expect("room for what was read");
        expect.push(r);
    }
    let n = w.len();
    let again = Compound::parse(&buf[..n]).expect("what we write parses");
    assert_eq!(read(&again), expect);
});
