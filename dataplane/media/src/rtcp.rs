//! RTCP (RFC 3550 §6): compound-packet validation and reading, and writing
//! of the SR/RR (+ SDES CNAME, + BYE) compounds a leg sends.
//!
//! [`Compound::parse`] walks the whole datagram once and checks the RFC 3550
//! A.2 rules that protect a reader: version 2 everywhere, every length inside
//! the datagram and summing to it exactly, padding only on the last packet,
//! the first packet an SR or RR, report-block counts that fit, SDES chunks
//! and items inside their packet. Iteration afterwards cannot fail. APP and
//! unknown packet types are returned as [`RtcpPacket::Other`] and otherwise
//! ignored.

use crate::rtp::WriteError;
use thiserror::Error;

pub const PT_SR: u8 = 200;
pub const PT_RR: u8 = 201;
pub const PT_SDES: u8 = 202;
pub const PT_BYE: u8 = 203;
pub const PT_APP: u8 = 204;

const REPORT_BLOCK_LEN: usize = 24;
const SENDER_INFO_LEN: usize = 20;

/// Why a datagram is not an RTCP compound packet we accept (peer's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtcpError {
    #[error("shorter than an RTCP header")]
    TooShort,
    #[error("RTCP version is not 2")]
    BadVersion,
    #[error("a packet length runs past the datagram")]
    LengthOverrun,
    #[error("padding on a packet that is not the last, or a bad padding count")]
    BadPadding,
    #[error("a compound packet must start with SR or RR")]
    FirstNotReport,
    #[error("report count does not fit the packet length")]
    BadReportCount,
    #[error("malformed SDES chunk")]
    BadSdes,
    #[error("malformed BYE")]
    BadBye,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed on the wire; clamped when written.
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn read(b: &[u8]) -> Self {
        let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let raw = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        // Sign-extend the 24-bit field.
        let cumulative_lost = ((raw << 8) as i32) >> 8;
        ReportBlock {
            ssrc: be32(0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_seq: be32(8),
            jitter: be32(12),
            last_sr: be32(16),
            delay_since_last_sr: be32(20),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        out[4] = self.fraction_lost;
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
        out[5..8].copy_from_slice(&lost.to_be_bytes()[1..]);
        out[8..12].copy_from_slice(&self.highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// Sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp (seconds since 1900 << 32 | fraction).
    pub ntp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// Report blocks of one SR/RR, read lazily from the validated buffer.
#[derive(Debug, Clone, Copy)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl<'a> ReportBlocks<'a> {
    pub fn len(&self) -> usize {
        self.0.len() / REPORT_BLOCK_LEN
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.0.chunks_exact(REPORT_BLOCK_LEN).map(ReportBlock::read)
    }
}

/// One packet of a validated compound.
#[derive(Debug, Clone, Copy)]
pub enum RtcpPacket<'a> {
    SenderReport {
        ssrc: u32,
        info: SenderInfo,
        reports: ReportBlocks<'a>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: ReportBlocks<'a>,
    },
    /// Source descriptions; [`sdes_cname`] reads the CNAME of a chunk list.
    Sdes {
        chunks: &'a [u8],
        count: u8,
    },
    Bye {
        ssrcs: &'a [u8],
    },
    /// APP and any other type: skipped.
    Other {
        packet_type: u8,
    },
}

/// A validated RTCP compound packet.
#[derive(Debug, Clone, Copy)]
pub struct Compound<'a> {
    buf: &'a [u8],
}

impl<'a> Compound<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtcpError> {
        if buf.len() < 4 {
            return Err(RtcpError::TooShort);
        }
        let mut at = 0;
        let mut first = true;
        while at < buf.len() {
            let rest = &buf[at..];
            if rest.len() < 4 {
                return Err(RtcpError::TooShort);
            }
            if rest[0] >> 6 != 2 {
                return Err(RtcpError::BadVersion);
            }
            let len = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
            if len > rest.len() {
                return Err(RtcpError::LengthOverrun);
            }
            let pt = rest[1];
            if first && pt != PT_SR && pt != PT_RR {
                return Err(RtcpError::FirstNotReport);
            }
            first = false;
            let mut body_end = len;
            if rest[0] & 0x20 != 0 {
                if at + len != buf.len() {
                    return Err(RtcpError::BadPadding);
                }
                let pad = usize::from(rest[len - 1]);
                if pad == 0 || pad > len - 4 {
                    return Err(RtcpError::BadPadding);
                }
                body_end -= pad;
            }
            check_packet(pt, rest[0] & 0x1f, &rest[..body_end])?;
            at += len;
        }
        Ok(Compound { buf })
    }

    pub fn packets(&self) -> impl Iterator<Item = RtcpPacket<'a>> + 'a {
        let buf = self.buf;
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= buf.len() {
                return None;
            }
            let p = &buf[at..];
            let len = 4 * (usize::from(u16::from_be_bytes([p[2], p[3]])) + 1);
            let mut end = len;
            if p[0] & 0x20 != 0 {
                end -= usize::from(p[len - 1]);
            }
            at += len;
            Some(read_packet(p[1], p[0] & 0x1f, &p[..end]))
        })
    }
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn check_packet(pt: u8, count: u8, p: &[u8]) -> Result<(), RtcpError> {
    let count = usize::from(count);
    match pt {
        PT_SR if p.len() < 8 + SENDER_INFO_LEN + count * REPORT_BLOCK_LEN => {
            return Err(RtcpError::BadReportCount);
        }
        PT_RR if p.len() < 8 + count * REPORT_BLOCK_LEN => {
            return Err(RtcpError::BadReportCount);
        }
        PT_SDES => check_sdes(count, &p[4..])?,
        PT_BYE => {
            if p.len() < 4 + 4 * count {
                return Err(RtcpError::BadBye);
            }
            let rest = &p[4 + 4 * count..];
            if let Some(&n) = rest.first()
                && 1 + usize::from(n) > rest.len()
            {
                return Err(RtcpError::BadBye);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Each chunk: SSRC, items (type, length, text) until a zero type, then
/// zero padding to a 32-bit boundary.
fn check_sdes(count: usize, mut b: &[u8]) -> Result<(), RtcpError> {
    for _ in 0..count {
        if b.len() < 4 {
            return Err(RtcpError::BadSdes);
        }
        let mut i = 4;
        loop {
            let Some(&kind) = b.get(i) else {
                return Err(RtcpError::BadSdes);
            };
            if kind == 0 {
                i += 1;
                break;
            }
            let len = usize::from(*b.get(i + 1).ok_or(RtcpError::BadSdes)?);
            i += 2 + len;
            if i > b.len() {
                return Err(RtcpError::BadSdes);
            }
        }
        let padded = i.div_ceil(4) * 4;
        if padded > b.len() {
            return Err(RtcpError::BadSdes);
        }
        b = &b[padded..];
    }
    Ok(())
}

fn read_packet(pt: u8, count: u8, p: &[u8]) -> RtcpPacket<'_> {
    let n = usize::from(count) * REPORT_BLOCK_LEN;
    match pt {
        PT_SR => RtcpPacket::SenderReport {
            ssrc: be32(p, 4),
            info: SenderInfo {
                ntp: (u64::from(be32(p, 8)) << 32) | u64::from(be32(p, 12)),
                rtp_timestamp: be32(p, 16),
                packet_count: be32(p, 20),
                octet_count: be32(p, 24),
            },
            reports: ReportBlocks(&p[28..28 + n]),
        },
        PT_RR => RtcpPacket::ReceiverReport {
            ssrc: be32(p, 4),
            reports: ReportBlocks(&p[8..8 + n]),
        },
        PT_SDES => RtcpPacket::Sdes {
            chunks: &p[4..],
            count,
        },
        PT_BYE => RtcpPacket::Bye {
            ssrcs: &p[4..4 + 4 * usize::from(count)],
        },
        other => RtcpPacket::Other { packet_type: other },
    }
}

/// The CNAME of the first chunk of a validated SDES packet, if it has one.
pub fn sdes_cname(chunks: &[u8]) -> Option<(u32, &[u8])> {
    let s = chunks.get(..4)?;
    let ssrc = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
    let mut i = 4;
    while let Some(&kind) = chunks.get(i) {
        if kind == 0 {
            return None;
        }
        let len = usize::from(*chunks.get(i + 1)?);
        let text = chunks.get(i + 2..i + 2 + len)?;
        if kind == 1 {
            return Some((ssrc, text));
        }
        i += 2 + len;
    }
    None
}

/// Writes RTCP packets one after the other into a caller buffer.
#[derive(Debug)]
pub struct CompoundWriter<'b> {
    out: &'b mut [u8],
    len: usize,
}

impl<'b> CompoundWriter<'b> {
    pub fn new(out: &'b mut [u8]) -> Self {
        CompoundWriter { out, len: 0 }
    }

    /// Length written so far.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn reserve(&mut self, n: usize) -> Result<&mut [u8], WriteError> {
        let end = self.len + n;
        if end > self.out.len() {
            return Err(WriteError::BufferTooSmall);
        }
        let s = &mut self.out[self.len..end];
        self.len = end;
        Ok(s)
    }

    fn header(b: &mut [u8], count: usize, pt: u8, total_len: usize) {
        b[0] = 0x80 | count as u8;
        b[1] = pt;
        b[2..4].copy_from_slice(&((total_len / 4 - 1) as u16).to_be_bytes());
    }

    /// A sender report with up to 31 report blocks.
    pub fn sender_report(
        &mut self,
        ssrc: u32,
        info: &SenderInfo,
        reports: &[ReportBlock],
    ) -> Result<(), WriteError> {
        if reports.len() > 31 {
            return Err(WriteError::OutOfRange);
        }
        let total = 8 + SENDER_INFO_LEN + reports.len() * REPORT_BLOCK_LEN;
        let b = self.reserve(total)?;
        Self::header(b, reports.len(), PT_SR, total);
        b[4..8].copy_from_slice(&ssrc.to_be_bytes());
        b[8..16].copy_from_slice(&info.ntp.to_be_bytes());
        b[16..20].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
        b[20..24].copy_from_slice(&info.packet_count.to_be_bytes());
        b[24..28].copy_from_slice(&info.octet_count.to_be_bytes());
        for (r, chunk) in reports
            .iter()
            .zip(b[28..].chunks_exact_mut(REPORT_BLOCK_LEN))
        {
            r.write(chunk);
        }
        Ok(())
    }

    /// A receiver report with up to 31 report blocks.
    pub fn receiver_report(
        &mut self,
        ssrc: u32,
        reports: &[ReportBlock],
    ) -> Result<(), WriteError> {
        if reports.len() > 31 {
            return Err(WriteError::OutOfRange);
        }
        let total = 8 + reports.len() * REPORT_BLOCK_LEN;
        let b = self.reserve(total)?;
        Self::header(b, reports.len(), PT_RR, total);
        b[4..8].copy_from_slice(&ssrc.to_be_bytes());
        for (r, chunk) in reports
            .iter()
            .zip(b[8..].chunks_exact_mut(REPORT_BLOCK_LEN))
        {
            r.write(chunk);
        }
        Ok(())
    }

    /// An SDES packet with one chunk carrying a CNAME (RFC 3550 requires one
    /// in every compound).
    pub fn sdes_cname(&mut self, ssrc: u32, cname: &[u8]) -> Result<(), WriteError> {
        if cname.len() > 255 {
            return Err(WriteError::OutOfRange);
        }
        // header + ssrc + type + len + text + at least one zero, padded.
        let chunk = (4 + 2 + cname.len() + 1).div_ceil(4) * 4;
        let total = 4 + chunk;
        let b = self.reserve(total)?;
        Self::header(b, 1, PT_SDES, total);
        b[4..8].copy_from_slice(&ssrc.to_be_bytes());
        b[8] = 1;
        b[9] = cname.len() as u8;
        b[10..10 + cname.len()].copy_from_slice(cname);
        b[10 + cname.len()..].fill(0);
        Ok(())
    }

    /// A BYE for one source, without a reason.
    pub fn bye(&mut self, ssrc: u32) -> Result<(), WriteError> {
        let b = self.reserve(8)?;
        Self::header(b, 1, PT_BYE, 8);
        b[4..8].copy_from_slice(&ssrc.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32, lost: i32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 12,
            cumulative_lost: lost,
            highest_seq: 0x0001_0005,
            jitter: 33,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65536,
        }
    }

    #[test]
    fn sr_sdes_bye_round_trip() {
        let mut buf = [0u8; 256];
        let mut w = CompoundWriter::new(&mut buf);
        let info = SenderInfo {
            ntp: 0xe000_0000_8000_0000,
            rtp_timestamp: 160,
            packet_count: 5,
            octet_count: 800,
        };
        w.sender_report(7, &info, &[block(9, -3), block(10, 0x7f_ffff + 5)])
            .unwrap();
        w.sdes_cname(7, b"codeb@switch").unwrap();
        w.bye(7).unwrap();
        let n = w.len();
        let c = Compound::parse(&buf[..n]).unwrap();
        let pkts: Vec<_> = c.packets().collect();
        assert_eq!(pkts.len(), 3);
        match pkts[0] {
            RtcpPacket::SenderReport {
                ssrc,
                info: i,
                reports,
            } => {
                assert_eq!(ssrc, 7);
                assert_eq!(i, info);
                let r: Vec<_> = reports.iter().collect();
                assert_eq!(r[0], block(9, -3));
                // Clamped to the 24-bit maximum.
                assert_eq!(r[1].cumulative_lost, 0x7f_ffff);
            }
            other => panic!("{other:?}"),
        }
        match pkts[1] {
            RtcpPacket::Sdes { chunks, count } => {
                assert_eq!(count, 1);
                assert_eq!(sdes_cname(chunks), Some((7, &b"codeb@switch"[..])));
            }
            other => panic!("{other:?}"),
        }
        match pkts[2] {
            RtcpPacket::Bye { ssrcs } => assert_eq!(ssrcs, &7u32.to_be_bytes()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rr_and_app_skipped() {
        let mut buf = [0u8; 128];
        let mut w = CompoundWriter::new(&mut buf);
        w.receiver_report(1, &[block(2, 4)]).unwrap();
        let n = w.len();
        // APP: header, ssrc, name, 4 octets of data.
        let app = [
            0x81, PT_APP, 0, 3, 0, 0, 0, 1, b'T', b'E', b'S', b'T', 1, 2, 3, 4,
        ];
        buf[n..n + 16].copy_from_slice(&app);
        let c = Compound::parse(&buf[..n + 16]).unwrap();
        let kinds: Vec<_> = c
            .packets()
            .map(|p| match p {
                RtcpPacket::ReceiverReport { reports, .. } => reports.len() as u8,
                RtcpPacket::Other { packet_type } => packet_type,
                _ => 0,
            })
            .collect();
        assert_eq!(kinds, vec![1, PT_APP]);
    }

    #[test]
    fn rejects_malformed() {
        let mut buf = [0u8; 64];
        let mut w = CompoundWriter::new(&mut buf);
        w.receiver_report(1, &[block(2, 0)]).unwrap();
        let n = w.len();
        let good = buf[..n].to_vec();
        assert!(Compound::parse(&good).is_ok());
        assert_eq!(
            Compound::parse(&good[..3]).unwrap_err(),
            RtcpError::TooShort
        );
        let mut v = good.clone();
        v[0] = 0x41;
        assert_eq!(Compound::parse(&v).unwrap_err(), RtcpError::BadVersion);
        // Length longer than the datagram.
        let mut l = good.clone();
        l[3] = 200;
        assert_eq!(Compound::parse(&l).unwrap_err(), RtcpError::LengthOverrun);
        // Report count larger than the packet holds.
        let mut rc = good.clone();
        rc[0] = 0x80 | 5;
        assert_eq!(Compound::parse(&rc).unwrap_err(), RtcpError::BadReportCount);
        // First packet not SR/RR.
        let bye = [0x81, PT_BYE, 0, 1, 0, 0, 0, 1];
        assert_eq!(
            Compound::parse(&bye).unwrap_err(),
            RtcpError::FirstNotReport
        );
        // Trailing garbage shorter than a header.
        let mut t = good.clone();
        t.extend_from_slice(&[0x80, 0]);
        assert_eq!(Compound::parse(&t).unwrap_err(), RtcpError::TooShort);
        // Padding on a non-final packet.
        let mut p = good.clone();
        p[0] |= 0x20;
        p.extend_from_slice(&good);
        assert_eq!(Compound::parse(&p).unwrap_err(), RtcpError::BadPadding);
        // SDES item running past its packet.
        let mut s = good.clone();
        s.extend_from_slice(&[0x81, PT_SDES, 0, 2, 0, 0, 0, 1, 1, 200, b'x', 0]);
        assert_eq!(Compound::parse(&s).unwrap_err(), RtcpError::BadSdes);
        // BYE reason longer than the packet.
        let mut b = good.clone();
        b.extend_from_slice(&[0x81, PT_BYE, 0, 2, 0, 0, 0, 1, 9, b'a', b'b', b'c']);
        assert_eq!(Compound::parse(&b).unwrap_err(), RtcpError::BadBye);
    }

    #[test]
    fn parse_never_panics_on_mutations() {
        let mut buf = [0u8; 128];
        let mut w = CompoundWriter::new(&mut buf);
        w.sender_report(1, &SenderInfo::default(), &[block(2, 1)])
            .unwrap();
        w.sdes_cname(1, b"abc").unwrap();
        let n = w.len();
        let base = buf[..n].to_vec();
        for i in 0..n {
            for v in [0u8, 1, 0x3f, 0x80, 0xa1, 0xbf, 0xff] {
                let mut m = base.clone();
                m[i] = v;
                for cut in [n, n - 1, n - 4, n / 2] {
                    if let Ok(c) = Compound::parse(&m[..cut]) {
                        for p in c.packets() {
                            if let RtcpPacket::Sdes { chunks, .. } = p {
                                let _ = sdes_cname(chunks);
                            }
                            if let RtcpPacket::SenderReport { reports, .. } = p {
                                let _ = reports.iter().count();
                            }
                        }
                    }
                }
            }
        }
    }
}
