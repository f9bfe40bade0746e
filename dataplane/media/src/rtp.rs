//! RTP packets (RFC 3550 §5): bounded zero-copy parsing and writing into
//! caller-provided buffers.
//!
//! [`RtpPacket::parse`] checks everything a later reader relies on: version
//! 2, the CSRC list and the header extension inside the datagram, and a
//! padding count that leaves the header intact. After that every accessor is
//! infallible and slices the original buffer. Writing never allocates: a
//! [`RtpHeader`] is printed into `&mut [u8]`, and [`rewrite_header`] patches
//! the fixed fields of a packet already in a buffer (the relay path).

use thiserror::Error;

/// Length of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;

/// Largest datagram the media path handles. An Opus frame tops out at 1,275
/// octets; anything bigger than an Ethernet MTU is not voice.
pub const MAX_PACKET_LEN: usize = 1500;

/// Comfort noise's static payload type (RFC 3389, RFC 3551 table 4).
pub const COMFORT_NOISE: u8 = 13;

/// Why a datagram is not an RTP packet we accept. The peer is at fault for
/// every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtpError {
    #[error("shorter than the fixed RTP header")]
    TooShort,
    #[error("longer than {MAX_PACKET_LEN} octets")]
    TooLong,
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    #[error("CSRC list runs past the end of the packet")]
    CsrcOverrun,
    #[error("header extension runs past the end of the packet")]
    ExtensionOverrun,
    #[error("padding count is zero or eats into the header")]
    BadPadding,
    #[error("payload type {0} is in the RTCP range (RFC 5761)")]
    RtcpPayloadType(u8),
}

/// Why a packet could not be written. The caller is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WriteError {
    #[error("output buffer too small")]
    BufferTooSmall,
    #[error("value out of range for its field")]
    OutOfRange,
}

/// True when a datagram on a multiplexed port is RTCP rather than RTP
/// (RFC 5761 §4: the second octet, marker bit included, is 192..=223).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 2 && (192..=223).contains(&datagram[1])
}

/// A validated RTP packet borrowing its datagram.
#[derive(Debug, Clone, Copy)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    header_len: usize,
    payload_end: usize,
}

impl<'a> RtpPacket<'a> {
    /// Validates `buf` as one RTP packet.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() < FIXED_HEADER_LEN {
            return Err(RtpError::TooShort);
        }
        if buf.len() > MAX_PACKET_LEN {
            return Err(RtpError::TooLong);
        }
        let version = buf[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        let pt = buf[1] & 0x7f;
        if (72..=76).contains(&pt) {
            return Err(RtpError::RtcpPayloadType(pt));
        }
        let csrc_count = usize::from(buf[0] & 0x0f);
        let mut header_len = FIXED_HEADER_LEN + 4 * csrc_count;
        if header_len > buf.len() {
            return Err(RtpError::CsrcOverrun);
        }
        if buf[0] & 0x10 != 0 {
            // 16-bit profile, 16-bit length in 32-bit words, then the words.
            if header_len + 4 > buf.len() {
                return Err(RtpError::ExtensionOverrun);
            }
            let words = usize::from(u16::from_be_bytes([
                buf[header_len + 2],
                buf[header_len + 3],
            ]));
            header_len += 4 + 4 * words;
            if header_len > buf.len() {
                return Err(RtpError::ExtensionOverrun);
            }
        }
        let mut payload_end = buf.len();
        if buf[0] & 0x20 != 0 {
            let pad = usize::from(buf[buf.len() - 1]);
            if pad == 0 || header_len + pad > buf.len() {
                return Err(RtpError::BadPadding);
            }
            payload_end -= pad;
        }
        Ok(RtpPacket {
            buf,
            header_len,
            payload_end,
        })
    }

    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }
    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7f
    }
    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]])
    }
    pub fn csrc_count(&self) -> usize {
        usize::from(self.buf[0] & 0x0f)
    }
    /// The contributing sources, in order.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let n = self.csrc_count();
        self.buf[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4 * n]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
    /// The header extension: profile-defined 16 bits and its data words.
    pub fn extension(&self) -> Option<(u16, &'a [u8])> {
        if self.buf[0] & 0x10 == 0 {
            return None;
        }
        let at = FIXED_HEADER_LEN + 4 * self.csrc_count();
        let profile = u16::from_be_bytes([self.buf[at], self.buf[at + 1]]);
        Some((profile, &self.buf[at + 4..self.header_len]))
    }
    /// Octets of padding at the end (0 without the P bit).
    pub fn padding_len(&self) -> usize {
        self.buf.len() - self.payload_end
    }
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..self.payload_end]
    }
    /// The whole datagram.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// The fields of a header we originate (no CSRCs, no extension, no padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl RtpHeader {
    /// Prints the 12-octet header into `out`, returning its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, WriteError> {
        if self.payload_type > 127 {
            return Err(WriteError::OutOfRange);
        }
        let out = out
            .get_mut(..FIXED_HEADER_LEN)
            .ok_or(WriteError::BufferTooSmall)?;
        out[0] = 0x80;
        out[1] = (u8::from(self.marker) << 7) | self.payload_type;
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        Ok(FIXED_HEADER_LEN)
    }

    /// Prints header and payload, returning the packet length.
    pub fn write_packet(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, WriteError> {
        let total = FIXED_HEADER_LEN + payload.len();
        if total > out.len() {
            return Err(WriteError::BufferTooSmall);
        }
        self.write(out)?;
        out[FIXED_HEADER_LEN..total].copy_from_slice(payload);
        Ok(total)
    }
}

/// Overwrites the fixed-header fields of a packet already in `buf` (which
/// must have passed [`RtpPacket::parse`]); CSRCs, extension, payload and
/// padding stay as they are.
pub fn rewrite_header(buf: &mut [u8], header: &RtpHeader) -> Result<(), WriteError> {
    if buf.len() < FIXED_HEADER_LEN {
        return Err(WriteError::BufferTooSmall);
    }
    if header.payload_type > 127 {
        return Err(WriteError::OutOfRange);
    }
    buf[1] = (u8::from(header.marker) << 7) | header.payload_type;
    buf[2..4].copy_from_slice(&header.sequence.to_be_bytes());
    buf[4..8].copy_from_slice(&header.timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&header.ssrc.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut p = vec![0u8; 12];
        RtpHeader {
            marker: true,
            payload_type: 0,
            sequence: 0xabcd,
            timestamp: 0x0102_0304,
            ssrc: 0xdead_beef,
        }
        .write(&mut p)
        .unwrap();
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    #[test]
    fn round_trip_fixed_header() {
        let p = sample();
        let r = RtpPacket::parse(&p).unwrap();
        assert!(r.marker());
        assert_eq!(r.payload_type(), 0);
        assert_eq!(r.sequence(), 0xabcd);
        assert_eq!(r.timestamp(), 0x0102_0304);
        assert_eq!(r.ssrc(), 0xdead_beef);
        assert_eq!(r.payload().len(), 160);
        assert_eq!(r.csrcs().count(), 0);
        assert!(r.extension().is_none());
        assert!(!is_rtcp(&p));
    }

    #[test]
    fn csrcs_extension_and_padding() {
        // V=2 P=1 X=1 CC=2
        let mut p = vec![0x80 | 0x20 | 0x10 | 2, 8, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 9]); // CSRCs 7, 9
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // one-word extension
        p.extend_from_slice(&[5, 6, 7]); // payload
        p.extend_from_slice(&[0, 0, 3]); // 3 octets padding
        let r = RtpPacket::parse(&p).unwrap();
        assert_eq!(r.csrcs().collect::<Vec<_>>(), vec![7, 9]);
        assert_eq!(r.extension(), Some((0xbede, &[1u8, 2, 3, 4][..])));
        assert_eq!(r.payload(), &[5, 6, 7]);
        assert_eq!(r.padding_len(), 3);
        assert_eq!(r.header_len(), 12 + 8 + 8);
    }

    #[test]
    fn rejects_malformed() {
        let p = sample();
        assert_eq!(RtpPacket::parse(&p[..11]).unwrap_err(), RtpError::TooShort);
        let mut v1 = p.clone();
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1).unwrap_err(), RtpError::BadVersion(1));
        // 15 CSRCs in a 20-octet packet.
        let mut cc = p[..20].to_vec();
        cc[0] = 0x8f;
        assert_eq!(RtpPacket::parse(&cc).unwrap_err(), RtpError::CsrcOverrun);
        // Extension header announcing 0xffff words.
        let mut x = p[..20].to_vec();
        x[0] = 0x90;
        x[14] = 0xff;
        x[15] = 0xff;
        assert_eq!(
            RtpPacket::parse(&x).unwrap_err(),
            RtpError::ExtensionOverrun
        );
        // Extension header itself truncated.
        let mut xt = p[..14].to_vec();
        xt[0] = 0x90;
        assert_eq!(
            RtpPacket::parse(&xt).unwrap_err(),
            RtpError::ExtensionOverrun
        );
        // Padding of zero, and padding longer than the payload.
        let mut pz = p.clone();
        pz[0] |= 0x20;
        *pz.last_mut().unwrap() = 0;
        assert_eq!(RtpPacket::parse(&pz).unwrap_err(), RtpError::BadPadding);
        let mut pl = p.clone();
        pl[0] |= 0x20;
        *pl.last_mut().unwrap() = 161;
        assert_eq!(RtpPacket::parse(&pl).unwrap_err(), RtpError::BadPadding);
        // Padding covering the whole payload is fine.
        *pl.last_mut().unwrap() = 160;
        assert_eq!(RtpPacket::parse(&pl).unwrap().payload().len(), 0);
        let big = vec![0x80; MAX_PACKET_LEN + 1];
        assert_eq!(RtpPacket::parse(&big).unwrap_err(), RtpError::TooLong);
        let mut rtcp = p.clone();
        rtcp[1] = 200;
        assert!(is_rtcp(&rtcp));
        assert_eq!(
            RtpPacket::parse(&rtcp).unwrap_err(),
            RtpError::RtcpPayloadType(72)
        );
    }

    #[test]
    fn parse_never_panics_on_any_short_input() {
        // Every 1..=3 octet prefix pattern over the interesting first octets.
        for first in 0..=255u8 {
            for len in 0..40 {
                let mut p = vec![0u8; len];
                if len > 0 {
                    p[0] = first;
                    let last = len - 1;
                    p[last] = (len as u8).wrapping_mul(37);
                }
                if len > 15 {
                    p[14] = first;
                    p[15] = first.rotate_left(3);
                }
                if let Ok(r) = RtpPacket::parse(&p) {
                    assert!(r.header_len() + r.payload().len() + r.padding_len() == len);
                    let _ = r.extension();
                    let _ = r.csrcs().count();
                }
            }
        }
    }

    #[test]
    fn write_and_rewrite() {
        let mut out = [0u8; 16];
        let h = RtpHeader {
            marker: false,
            payload_type: 8,
            sequence: 1,
            timestamp: 2,
            ssrc: 3,
        };
        assert_eq!(h.write_packet(&[9, 9, 9, 9], &mut out), Ok(16));
        assert_eq!(
            h.write_packet(&[0; 5], &mut out),
            Err(WriteError::BufferTooSmall)
        );
        assert_eq!(
            RtpHeader {
                payload_type: 128,
                ..h
            }
            .write(&mut out),
            Err(WriteError::OutOfRange)
        );
        let mut p = sample();
        let new = RtpHeader {
            marker: false,
            payload_type: 8,
            sequence: 7,
            timestamp: 99,
            ssrc: 42,
        };
        rewrite_header(&mut p, &new).unwrap();
        let r = RtpPacket::parse(&p).unwrap();
        assert_eq!(
            (
                r.marker(),
                r.payload_type(),
                r.sequence(),
                r.timestamp(),
                r.ssrc()
            ),
            (false, 8, 7, 99, 42)
        );
        assert_eq!(r.payload(), &[0xff; 160][..]);
    }
}
