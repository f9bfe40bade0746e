//! The codecs a leg can negotiate, and one decoder/encoder interface over
//! them for the decoded paths (transcoding, AI tap).
//!
//! Every decoded path works in 20 ms frames of linear PCM at the codec's
//! PCM rate: 8 kHz for G.711, the configured rate (8/16/48 kHz) for Opus,
//! the stream's rate for L16. Packets carrying another duration are
//! refused on decoded paths (the relay path does not care).

use crate::g711::Law;
use crate::opus::{OpusDecoder, OpusEncoder, OpusError};
use crate::resample::frame_len;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecKind {
    Pcmu,
    Pcma,
    Opus,
    /// Linear 16-bit big-endian PCM (RFC 3551 L16), mono.
    L16,
}

/// One negotiated codec of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecSpec {
    pub kind: CodecKind,
    pub payload_type: u8,
    /// RTP clock rate (48 kHz for Opus whatever its PCM rate).
    pub clock_rate: u32,
    /// Rate of the PCM we decode to and encode from.
    pub pcm_rate: u32,
}

impl CodecSpec {
    pub const fn pcmu() -> Self {
        CodecSpec {
            kind: CodecKind::Pcmu,
            payload_type: 0,
            clock_rate: 8_000,
            pcm_rate: 8_000,
        }
    }
    pub const fn pcma() -> Self {
        CodecSpec {
            kind: CodecKind::Pcma,
            payload_type: 8,
            clock_rate: 8_000,
            pcm_rate: 8_000,
        }
    }
    /// Opus with a dynamic payload type, decoded at `pcm_rate` (8, 16 or
    /// 48 kHz: pick the rate the other side needs to save a resample).
    pub const fn opus(payload_type: u8, pcm_rate: u32) -> Self {
        CodecSpec {
            kind: CodecKind::Opus,
            payload_type,
            clock_rate: crate::opus::RTP_CLOCK_RATE,
            pcm_rate,
        }
    }
    pub const fn l16(payload_type: u8, rate: u32) -> Self {
        CodecSpec {
            kind: CodecKind::L16,
            payload_type,
            clock_rate: rate,
            pcm_rate: rate,
        }
    }

    /// RTP timestamp ticks of one 20 ms frame.
    pub fn frame_ticks(&self) -> u32 {
        self.clock_rate / 50
    }

    /// PCM samples of one 20 ms frame.
    pub fn frame_samples(&self) -> usize {
        frame_len(self.pcm_rate)
    }

    /// Same bitstream on both sides: relaying needs only a header rewrite.
    pub fn relay_compatible(&self, other: &CodecSpec) -> bool {
        self.kind == other.kind && self.clock_rate == other.clock_rate
    }

    /// The payload of silence for the G.711 laws (used when a leg must keep
    /// sending without audio).
    pub fn law(&self) -> Option<Law> {
        match self.kind {
            CodecKind::Pcmu => Some(Law::Ulaw),
            CodecKind::Pcma => Some(Law::Alaw),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CodecError {
    /// Peer: the payload is not one 20 ms frame of this codec.
    #[error("payload is not one 20 ms frame")]
    FrameSize,
    #[error(transparent)]
    Opus(#[from] OpusError),
    /// Caller: a rate the codec cannot run at.
    #[error("unsupported PCM rate {0} for this codec")]
    UnsupportedRate(u32),
}

/// Decoder of one leg's codec.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one decoder per leg, kept in place for the call; boxing G.711's concealment frame would cost an indirection per frame"
)]
pub enum AudioDecoder {
    G711(G711Decoder),
    Opus(Box<OpusDecoder>),
    L16 { samples: usize },
}

/// G.711 decoding, and concealment that repeats the last 20 ms heard.
#[derive(Debug)]
pub struct G711Decoder {
    law: Law,
    /// The last 20 ms heard, as it came (the payload bytes: half the
    /// lines a decoded copy would write on every packet, for a frame
    /// decoded again only on a loss); its last `heard` bytes are audio,
    /// any before them silence (A-law has no byte for 0).
    last: [u8; 160],
    heard: usize,
    losses: u32,
}

impl G711Decoder {
    fn decode_packet(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let n = payload.len();
        if n == 0 || n > out.len() {
            return Err(CodecError::FrameSize);
        }
        self.law.decode(payload, &mut out[..n]);
        let keep = n.min(self.last.len());
        self.last.copy_within(keep.., 0);
        let at = self.last.len() - keep;
        self.last[at..].copy_from_slice(&payload[n - keep..]);
        self.heard = (self.heard + keep).min(self.last.len());
        self.losses = 0;
        Ok(n)
    }

    /// Conceals one lost packet, of up to 200 ms (RFC 3551's longest).
    fn conceal(&mut self, out: &mut [i16]) -> Result<(), CodecError> {
        if out.is_empty() || out.len() > 10 * self.last.len() {
            return Err(CodecError::FrameSize);
        }
        self.losses += 1;
        let shift = self.losses.min(16);
        let mut frame = [0i16; 160];
        let at = self.last.len() - self.heard;
        self.law.decode(&self.last[at..], &mut frame[at..]);
        for (o, &l) in out.iter_mut().zip(frame.iter().cycle()) {
            *o = if self.losses > 3 { 0 } else { l >> shift };
        }
        Ok(())
    }
}

impl AudioDecoder {
    pub fn new(spec: &CodecSpec) -> Result<Self, CodecError> {
        Ok(match spec.kind {
            CodecKind::Pcmu | CodecKind::Pcma => {
                if spec.pcm_rate != 8_000 {
                    return Err(CodecError::UnsupportedRate(spec.pcm_rate));
                }
                AudioDecoder::G711(G711Decoder {
                    law: spec.law().unwrap_or(Law::Ulaw),
                    last: [0; 160],
                    heard: 0,
                    losses: 0,
                })
            }
            CodecKind::Opus => AudioDecoder::Opus(Box::new(OpusDecoder::new(spec.pcm_rate)?)),
            CodecKind::L16 => {
                if !crate::resample::SUPPORTED_RATES.contains(&spec.pcm_rate) {
                    return Err(CodecError::UnsupportedRate(spec.pcm_rate));
                }
                AudioDecoder::L16 {
                    samples: frame_len(spec.pcm_rate),
                }
            }
        })
    }

    /// Decodes one packet's payload into exactly one 20 ms frame (`out`).
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<(), CodecError> {
        if let AudioDecoder::Opus(d) = self {
            return Ok(d.decode(payload, out)?);
        }
        let want = out.len();
        if self.decode_packet(payload, out)? != want {
            return Err(CodecError::FrameSize);
        }
        Ok(())
    }

    /// Decodes one packet of whatever duration the far end chose (its
    /// ptime: 10, 20, 30, 60 ms…) into the front of `out`, which must have
    /// room for it (120 ms at the codec's rate serves every packet);
    /// returns the samples decoded.
    pub fn decode_packet(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        match self {
            AudioDecoder::G711(d) => d.decode_packet(payload, out),
            AudioDecoder::Opus(d) => Ok(d.decode_packet(payload, out)?),
            AudioDecoder::L16 { samples } => {
                let n = payload.len() / 2;
                if n == 0 || !payload.len().is_multiple_of(2) || n > out.len() || n > 6 * *samples {
                    return Err(CodecError::FrameSize);
                }
                for (o, b) in out.iter_mut().zip(payload.chunks_exact(2)) {
                    *o = i16::from_be_bytes([b[0], b[1]]);
                }
                Ok(n)
            }
        }
    }

    /// Fills `out` (the lost packet's duration) for a lost packet: Opus
    /// rebuilds it from `next`'s FEC or conceals; G.711 repeats the last
    /// 20 ms heard at half the level per consecutive loss (silence after
    /// the third); L16 is silence.
    pub fn conceal(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> Result<(), CodecError> {
        match self {
            AudioDecoder::Opus(d) => match next {
                Some(p) => Ok(d.decode_fec(p, out)?),
                None => Ok(d.conceal(out)?),
            },
            AudioDecoder::G711(d) => d.conceal(out),
            AudioDecoder::L16 { .. } => {
                out.fill(0);
                Ok(())
            }
        }
    }
}

/// Encoder of one leg's codec.
#[derive(Debug)]
pub enum AudioEncoder {
    G711(Law),
    Opus(Box<OpusEncoder>),
    L16,
}

impl AudioEncoder {
    pub fn new(spec: &CodecSpec) -> Result<Self, CodecError> {
        Ok(match spec.kind {
            CodecKind::Pcmu => AudioEncoder::G711(Law::Ulaw),
            CodecKind::Pcma => AudioEncoder::G711(Law::Alaw),
            CodecKind::Opus => AudioEncoder::Opus(Box::new(OpusEncoder::new(spec.pcm_rate, 5)?)),
            CodecKind::L16 => AudioEncoder::L16,
        })
    }

    /// Encodes one frame into `out`, returning the payload length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        match self {
            AudioEncoder::G711(law) => {
                if out.len() < pcm.len() {
                    return Err(CodecError::FrameSize);
                }
                Ok(law.encode(pcm, out))
            }
            AudioEncoder::Opus(e) => Ok(e.encode(pcm, out)?),
            AudioEncoder::L16 => {
                if out.len() < 2 * pcm.len() {
                    return Err(CodecError::FrameSize);
                }
                for (b, &s) in out.chunks_exact_mut(2).zip(pcm) {
                    b.copy_from_slice(&s.to_be_bytes());
                }
                Ok(2 * pcm.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l16_and_g711_round_trip() {
        let pcm: Vec<i16> = (0..320).map(|i| (i * 97 - 15_000) as i16).collect();
        let spec = CodecSpec::l16(96, 16_000);
        let mut enc = AudioEncoder::new(&spec).unwrap();
        let mut dec = AudioDecoder::new(&spec).unwrap();
        let mut buf = [0u8; 640];
        assert_eq!(enc.encode(&pcm, &mut buf).unwrap(), 640);
        assert_eq!(buf[0..2], pcm[0].to_be_bytes());
        let mut out = vec![0i16; 320];
        dec.decode(&buf, &mut out).unwrap();
        assert_eq!(out, pcm);
        assert_eq!(
            dec.decode(&buf[..600], &mut out),
            Err(CodecError::FrameSize)
        );

        let spec = CodecSpec::pcma();
        let mut enc = AudioEncoder::new(&spec).unwrap();
        let mut dec = AudioDecoder::new(&spec).unwrap();
        let mut out = [0i16; 160];
        let n = enc.encode(&pcm[..160], &mut buf).unwrap();
        dec.decode(&buf[..n], &mut out).unwrap();
        // Concealment fades the last frame out.
        let mut c = [0i16; 160];
        dec.conceal(None, &mut c).unwrap();
        assert_eq!(c[0], out[0] >> 1);
        for _ in 0..3 {
            dec.conceal(None, &mut c).unwrap();
        }
        assert!(c.iter().all(|&s| s == 0));
        assert_eq!(dec.decode(&buf[..80], &mut out), Err(CodecError::FrameSize));
    }

    #[test]
    fn concealment_repeats_the_last_20_ms_heard_decoded_and_silence_before_any() {
        // The last 20 ms heard, decoded, with silence before the first
        // packet: what concealment repeats, at half the level per loss.
        for spec in [CodecSpec::pcmu(), CodecSpec::pcma()] {
            let law = spec.law().unwrap();
            let mut dec = AudioDecoder::new(&spec).unwrap();
            let mut heard: Vec<i16> = vec![0; 160];
            let mut out = [0i16; 960];
            let mut c = [0i16; 160];
            let mut k = 0u32;
            // Before anything: silence.
            dec.conceal(None, &mut c).unwrap();
            assert!(c.iter().all(|&s| s == 0));
            // Packets of 10, 20, 30 and 60 ms, each followed by losses.
            for (i, bytes) in [80usize, 80, 160, 240, 80, 480, 160]
                .into_iter()
                .enumerate()
            {
                let payload: Vec<u8> = (0..bytes)
                    .map(|_| {
                        k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        (k >> 16) as u8
                    })
                    .collect();
                let n = dec.decode_packet(&payload, &mut out).unwrap();
                assert_eq!(n, bytes);
                let mut pcm = vec![0i16; bytes];
                law.decode(&payload, &mut pcm);
                assert_eq!(&out[..n], &pcm[..]);
                heard.extend_from_slice(&pcm);
                let last = &heard[heard.len() - 160..];
                for loss in 1..=(i % 3 + 1) as u32 {
                    // A 30 ms loss: the 20 ms repeated, cycled.
                    let mut c = [0i16; 240];
                    dec.conceal(None, &mut c).unwrap();
                    for (j, &s) in c.iter().enumerate() {
                        assert_eq!(s, last[j % 160] >> loss, "{spec:?} packet {i} loss {loss}");
                    }
                }
            }
        }
    }

    #[test]
    fn relay_compatibility_and_frames() {
        assert!(CodecSpec::pcmu().relay_compatible(&CodecSpec {
            payload_type: 100,
            ..CodecSpec::pcmu()
        }));
        assert!(!CodecSpec::pcmu().relay_compatible(&CodecSpec::pcma()));
        assert!(CodecSpec::opus(111, 16_000).relay_compatible(&CodecSpec::opus(96, 48_000)));
        assert_eq!(CodecSpec::opus(111, 16_000).frame_ticks(), 960);
        assert_eq!(CodecSpec::opus(111, 16_000).frame_samples(), 320);
        assert!(AudioDecoder::new(&CodecSpec::opus(111, 24_000)).is_err());
    }
}
