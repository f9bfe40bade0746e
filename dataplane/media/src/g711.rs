//! G.711 µ-law (PCMU) and A-law (PCMA), table-driven.
//!
//! The tables are computed at compile time from the ITU-T G.711 segment
//! rules: µ-law works on 14-bit magnitudes with a bias of 33 and 8 segments,
//! A-law on 13-bit magnitudes with 8 segments (the first two linear), and
//! both invert bits on the wire (µ-law all bits, A-law the even bits). The
//! encoders index a table by the top 14 (µ-law) or 13 (A-law) bits of the
//! sample, so encoding and decoding are one load per sample.

const fn ulaw_encode_slow(pcm: i16) -> u8 {
    let mut x = (pcm as i32) >> 2;
    let mask: i32 = if x < 0 {
        x = -x;
        0x7f
    } else {
        0xff
    };
    if x > 8159 {
        x = 8159;
    }
    x += 33;
    // Segment: position of the highest bit above bit 5.
    let mut seg = 0;
    let mut limit = 0x3f;
    while seg < 8 && x > limit {
        seg += 1;
        limit = (limit << 1) | 1;
    }
    if seg >= 8 {
        return (0x7f ^ mask) as u8;
    }
    let code = (seg << 4) | ((x >> (seg + 1)) & 0x0f);
    (code ^ mask) as u8
}

const fn ulaw_decode_slow(code: u8) -> i16 {
    let u = !code as i32;
    let mut t = ((u & 0x0f) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    if u & 0x80 != 0 {
        (0x84 - t) as i16
    } else {
        (t - 0x84) as i16
    }
}

const fn alaw_encode_slow(pcm: i16) -> u8 {
    let mut x = (pcm as i32) >> 3;
    let mask: i32 = if x >= 0 {
        0xd5
    } else {
        x = -x - 1;
        0x55
    };
    let mut seg = 0;
    let mut limit = 0x1f;
    while seg < 8 && x > limit {
        seg += 1;
        limit = (limit << 1) | 1;
    }
    if seg >= 8 {
        return (0x7f ^ mask) as u8;
    }
    let mantissa = if seg < 2 {
        (x >> 1) & 0x0f
    } else {
        (x >> seg) & 0x0f
    };
    ((seg << 4 | mantissa) ^ mask) as u8
}

const fn alaw_decode_slow(code: u8) -> i16 {
    let a = (code ^ 0x55) as i32;
    let mut t = (a & 0x0f) << 4;
    let seg = (a & 0x70) >> 4;
    if seg == 0 {
        t += 8;
    } else {
        t += 0x108;
        t <<= seg - 1;
    }
    if a & 0x80 != 0 { t as i16 } else { -t as i16 }
}

const ULAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode_slow(i as u8);
        i += 1;
    }
    t
};

const ALAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode_slow(i as u8);
        i += 1;
    }
    t
};

/// Indexed by the sample's top 14 bits (as an unsigned offset).
static ULAW_ENCODE: [u8; 16384] = {
    let mut t = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        t[i] = ulaw_encode_slow(((i as i32 - 8192) << 2) as i16);
        i += 1;
    }
    t
};

/// Indexed by the sample's top 13 bits (as an unsigned offset).
static ALAW_ENCODE: [u8; 8192] = {
    let mut t = [0u8; 8192];
    let mut i = 0;
    while i < 8192 {
        t[i] = alaw_encode_slow(((i as i32 - 4096) << 3) as i16);
        i += 1;
    }
    t
};

#[inline]
pub fn ulaw_encode(pcm: i16) -> u8 {
    ULAW_ENCODE[((pcm >> 2) as i32 + 8192) as usize]
}

#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

#[inline]
pub fn alaw_encode(pcm: i16) -> u8 {
    ALAW_ENCODE[((pcm >> 3) as i32 + 4096) as usize]
}

#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

/// The two G.711 laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Ulaw,
    Alaw,
}

impl Law {
    /// The code of digital silence (µ-law 0xFF, A-law 0xD5).
    pub fn silence(self) -> u8 {
        match self {
            Law::Ulaw => 0xff,
            Law::Alaw => 0xd5,
        }
    }

    /// Encodes `pcm` into `out[..pcm.len()]`; returns the count, limited by
    /// the shorter of the two.
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) -> usize {
        let n = pcm.len().min(out.len());
        match self {
            Law::Ulaw => {
                for (o, &s) in out[..n].iter_mut().zip(pcm) {
                    *o = ulaw_encode(s);
                }
            }
            Law::Alaw => {
                for (o, &s) in out[..n].iter_mut().zip(pcm) {
                    *o = alaw_encode(s);
                }
            }
        }
        n
    }

    /// Decodes `codes` into `out[..codes.len()]`; returns the count.
    pub fn decode(self, codes: &[u8], out: &mut [i16]) -> usize {
        let n = codes.len().min(out.len());
        let table = match self {
            Law::Ulaw => &ULAW_DECODE,
            Law::Alaw => &ALAW_DECODE,
        };
        for (o, &c) in out[..n].iter_mut().zip(codes) {
            *o = table[usize::from(c)];
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // µ-law: the wire inverts all bits; 0xFF and 0x7F are the two zeros,
        // 0x80/0x00 the positive/negative peaks (G.711 Table 2a: 8031 in
        // 14-bit units, 32124 in 16-bit).
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_decode(0x7f), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0xfe), 8);
        assert_eq!(ulaw_decode(0xef), 132);
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        // A-law: even bits inverted; 0xD5/0x55 are the smallest ±steps.
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xaa), 32256);
        assert_eq!(alaw_decode(0x2a), -32256);
        assert_eq!(alaw_decode(0xd4), 24);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xaa);
        assert_eq!(alaw_encode(i16::MIN), 0x2a);
        assert_eq!(Law::Ulaw.silence(), ulaw_encode(0));
        assert_eq!(Law::Alaw.silence(), alaw_encode(0));
    }

    #[test]
    fn tables_match_the_reference_rules_for_every_sample() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(s), ulaw_encode_slow(s), "{s}");
            assert_eq!(alaw_encode(s), alaw_encode_slow(s), "{s}");
        }
    }

    #[test]
    fn code_round_trip() {
        for c in 0..=255u8 {
            // Every code decodes to a value that encodes back to it, except
            // µ-law's negative zero which encodes as positive zero.
            let back = ulaw_encode(ulaw_decode(c));
            if c == 0x7f {
                assert_eq!(back, 0xff);
            } else {
                assert_eq!(back, c, "µ-law {c:#x}");
            }
            assert_eq!(alaw_encode(alaw_decode(c)), c, "A-law {c:#x}");
        }
    }

    #[test]
    fn monotonic_and_bounded_error() {
        let mut prev_u = i16::MIN;
        let mut prev_a = i16::MIN;
        for s in i16::MIN..=i16::MAX {
            let u = ulaw_decode(ulaw_encode(s));
            let a = alaw_decode(alaw_encode(s));
            assert!(u >= prev_u && a >= prev_a, "monotonic at {s}");
            prev_u = u;
            prev_a = a;
            // Quantisation error within half the largest step (plus the
            // clipping at the ends: µ-law peaks at ±32124, A-law at ±32256).
            let s32 = i32::from(s).clamp(-32124, 32124);
            assert!((i32::from(u) - s32).abs() <= 1024, "µ-law error at {s}");
            let s32 = i32::from(s).clamp(-32256, 32256);
            assert!((i32::from(a) - s32).abs() <= 1024, "A-law error at {s}");
            // Small signals are fine-grained.
            if s.unsigned_abs() < 64 {
                assert!((i32::from(u) - i32::from(s)).abs() <= 8);
                assert!((i32::from(a) - i32::from(s)).abs() <= 8);
            }
        }
    }

    #[test]
    fn symmetric() {
        for c in 0..=127u8 {
            assert_eq!(ulaw_decode(c), -ulaw_decode(c | 0x80));
            assert_eq!(alaw_decode(c), -alaw_decode(c | 0x80));
        }
    }

    #[test]
    fn slices() {
        let pcm: Vec<i16> = (0..160).map(|i| (i * 200 - 16000) as i16).collect();
        let mut codes = [0u8; 160];
        let mut back = [0i16; 160];
        for law in [Law::Ulaw, Law::Alaw] {
            assert_eq!(law.encode(&pcm, &mut codes), 160);
            assert_eq!(law.decode(&codes, &mut back), 160);
            for (a, b) in pcm.iter().zip(back.iter()) {
                assert!((i32::from(*a) - i32::from(*b)).abs() <= 512);
            }
        }
        assert_eq!(Law::Ulaw.encode(&pcm, &mut codes[..10]), 10);
    }
}
