//! G.711 for the OpenAI simulator only: decode what the client sends, encode
//! what the simulator "says". The switch's real codecs live in the media
//! crate; this crate does not transcode anything on the call path.

/// μ-law byte → linear i16 (ITU-T G.711).
pub fn ulaw_decode(b: u8) -> i16 {
    let b = !b;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = i32::from(b & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Linear i16 → μ-law byte.
pub fn ulaw_encode(s: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut v = i32::from(s);
    let sign = if v < 0 {
        v = -v;
        0x80
    } else {
        0
    };
    v = v.min(CLIP) + BIAS;
    let exponent = (7 - (v.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (v >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// A-law byte → linear i16.
pub fn alaw_decode(b: u8) -> i16 {
    let b = b ^ 0x55;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if sign != 0 { magnitude } else { -magnitude }) as i16
}

/// Linear i16 → A-law byte.
pub fn alaw_encode(s: i16) -> u8 {
    let (sign, mut v) = if s >= 0 {
        (0x80u8, i32::from(s))
    } else {
        (0u8, -i32::from(s) - 1)
    };
    v = v.min(32_767);
    let byte = if v < 256 {
        (v >> 4) as u8
    } else {
        let exponent = (31 - v.leading_zeros() as i32 - 7).clamp(1, 7);
        let mantissa = (v >> (exponent + 3)) & 0x0f;
        ((exponent << 4) as u8) | mantissa as u8
    };
    (sign | byte) ^ 0x55
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_stay_within_a_quantisation_step() {
        for s in (-32_000i32..32_000).step_by(97) {
            let s = s as i16;
            let u = ulaw_decode(ulaw_encode(s));
            let a = alaw_decode(alaw_encode(s));
            let tol = (i32::from(s).abs() / 16).max(16);
            assert!(
                (i32::from(u) - i32::from(s)).abs() <= tol,
                "ulaw {s} -> {u}"
            );
            assert!(
                (i32::from(a) - i32::from(s)).abs() <= tol,
                "alaw {s} -> {a}"
            );
        }
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(alaw_encode(0), 0xd5);
    }
}
