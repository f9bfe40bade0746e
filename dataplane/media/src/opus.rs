//! Opus (RFC 6716, RTP payload RFC 7587) through libopus: 20 ms mono frames
//! at 8, 16 or 48 kHz.
//!
//! The RTP clock of Opus is always 48 kHz whatever rate we decode at, so a
//! 20 ms packet advances the timestamp by 960. The encoder runs in VoIP mode
//! with in-band FEC on, so a decoder that lost a packet can rebuild a lower
//! quality copy of it from the next one ([`OpusDecoder::decode_fec`]); with
//! no next packet it conceals ([`OpusDecoder::conceal`], PLC). No call
//! allocates: input, output and packet buffers belong to the caller.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate};
use thiserror::Error;

/// RTP clock rate of Opus (RFC 7587 §4.1).
pub const RTP_CLOCK_RATE: u32 = 48_000;
/// Timestamp step of one 20 ms packet.
pub const TICKS_PER_FRAME: u32 = 960;
/// Largest packet we produce or accept (RFC 6716: 1275 for one frame).
pub const MAX_PACKET: usize = 1275;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OpusError {
    /// Our caller: a rate Opus cannot run at in this engine.
    #[error("unsupported Opus rate {0}")]
    UnsupportedRate(u32),
    /// Our caller: not one 20 ms frame.
    #[error("frame of {got} samples, expected {expected}")]
    FrameLength { got: usize, expected: usize },
    /// The peer: libopus rejected the packet (corrupt, or not 20 ms).
    #[error("undecodable Opus packet")]
    BadPacket,
    /// libopus failed to create or run a codec.
    #[error("libopus error: {0}")]
    Codec(&'static str),
}

fn rate(hz: u32) -> Result<SampleRate, OpusError> {
    match hz {
        8_000 => Ok(SampleRate::Hz8000),
        16_000 => Ok(SampleRate::Hz16000),
        48_000 => Ok(SampleRate::Hz48000),
        other => Err(OpusError::UnsupportedRate(other)),
    }
}

/// A mono VoIP encoder with in-band FEC.
pub struct OpusEncoder {
    inner: Encoder,
    frame: usize,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("frame", &self.frame)
            .finish()
    }
}

impl OpusEncoder {
    /// `expected_loss_percent` tunes how much FEC the encoder spends.
    pub fn new(hz: u32, expected_loss_percent: u8) -> Result<Self, OpusError> {
        let mut inner = Encoder::new(rate(hz)?, Channels::Mono, Application::Voip)
            .map_err(|_| OpusError::Codec("encoder create"))?;
        inner
            .set_inband_fec(true)
            .map_err(|_| OpusError::Codec("inband fec"))?;
        inner
            .set_packet_loss_perc(expected_loss_percent.min(100))
            .map_err(|_| OpusError::Codec("loss percent"))?;
        Ok(OpusEncoder {
            inner,
            frame: (hz / 50) as usize,
        })
    }

    pub fn frame_len(&self) -> usize {
        self.frame
    }

    /// Sets complexity 0..=10 (CPU against quality).
    pub fn set_complexity(&mut self, c: u8) -> Result<(), OpusError> {
        self.inner
            .set_complexity(c.min(10))
            .map_err(|_| OpusError::Codec("complexity"))
    }

    /// Encodes one frame into `out`, returning the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        if pcm.len() != self.frame {
            return Err(OpusError::FrameLength {
                got: pcm.len(),
                expected: self.frame,
            });
        }
        let n = out.len().min(MAX_PACKET);
        self.inner
            .encode(pcm, &mut out[..n])
            .map_err(|_| OpusError::Codec("encode"))
    }
}

/// A mono decoder producing 20 ms frames.
pub struct OpusDecoder {
    inner: Decoder,
    frame: usize,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("frame", &self.frame)
            .finish()
    }
}

impl OpusDecoder {
    pub fn new(hz: u32) -> Result<Self, OpusError> {
        let inner = Decoder::new(rate(hz)?, Channels::Mono)
            .map_err(|_| OpusError::Codec("decoder create"))?;
        Ok(OpusDecoder {
            inner,
            frame: (hz / 50) as usize,
        })
    }

    pub fn frame_len(&self) -> usize {
        self.frame
    }

    fn check_out(&self, out: &[i16]) -> Result<(), OpusError> {
        if out.len() != self.frame {
            return Err(OpusError::FrameLength {
                got: out.len(),
                expected: self.frame,
            });
        }
        Ok(())
    }

    /// A span of audio libopus can conceal or rebuild: a whole number of
    /// 2.5 ms steps, up to 120 ms.
    fn check_span(&self, out: &[i16]) -> Result<(), OpusError> {
        let step = self.frame / 8;
        if out.is_empty() || !out.len().is_multiple_of(step.max(1)) || out.len() > 6 * self.frame {
            return Err(OpusError::FrameLength {
                got: out.len(),
                expected: self.frame,
            });
        }
        Ok(())
    }

    /// Decodes a received packet into one 20 ms frame.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<(), OpusError> {
        self.check_out(out)?;
        if self.decode_packet(packet, out)? != self.frame {
            // A packet of another duration than our ptime: refuse it rather
            // than hand back a partial frame.
            return Err(OpusError::BadPacket);
        }
        Ok(())
    }

    /// Decodes a received packet of any duration libopus allows (2.5 to
    /// 120 ms) into `out` (room for 120 ms serves every packet); returns
    /// the samples decoded.
    pub fn decode_packet(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        if packet.is_empty() || packet.len() > MAX_PACKET {
            return Err(OpusError::BadPacket);
        }
        let room = out.len().min(6 * self.frame);
        self.inner
            .decode(Some(packet), &mut out[..room], false)
            .map_err(|_| OpusError::BadPacket)
    }

    /// Packet loss concealment for one missing packet (`out` is its
    /// duration: a whole number of 2.5 ms steps, up to 120 ms).
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<(), OpusError> {
        self.check_span(out)?;
        self.inner
            .decode(None::<&[u8]>, &mut out[..], false)
            .map_err(|_| OpusError::Codec("plc"))?;
        Ok(())
    }

    /// Rebuilds the missing frame before `next` from `next`'s in-band FEC
    /// (falls back to concealment inside libopus when `next` carries none).
    /// `next` itself must then be decoded normally.
    pub fn decode_fec(&mut self, next: &[u8], out: &mut [i16]) -> Result<(), OpusError> {
        self.check_span(out)?;
        if next.is_empty() || next.len() > MAX_PACKET {
            return Err(OpusError::BadPacket);
        }
        self.inner
            .decode(Some(next), &mut out[..], true)
            .map_err(|_| OpusError::BadPacket)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goertzel::{power_i16, sine};

    fn energy(x: &[i16]) -> f64 {
        x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len() as f64
    }

    #[test]
    fn round_trip_keeps_the_tone_at_each_rate() {
        for hz in [8_000u32, 16_000, 48_000] {
            let mut enc = OpusEncoder::new(hz, 10).unwrap();
            let mut dec = OpusDecoder::new(hz).unwrap();
            let n = enc.frame_len();
            let x = sine(440.0, hz, 8_000.0, n * 25, 0);
            let mut pkt = [0u8; MAX_PACKET];
            let mut y = vec![0i16; n];
            let mut out = Vec::new();
            for f in x.chunks_exact(n) {
                let len = enc.encode(f, &mut pkt).unwrap();
                assert!(len > 0 && len < 400, "{len}");
                dec.decode(&pkt[..len], &mut y).unwrap();
                out.extend_from_slice(&y);
            }
            // Past the codec delay, the 440 Hz tone dominates.
            let tail = &out[n * 5..];
            let on = power_i16(tail, 440.0, hz as f32);
            let off = power_i16(tail, 1_300.0, hz as f32);
            assert!(on > off * 100.0, "{hz}: {on} vs {off}");
        }
    }

    #[test]
    fn plc_and_fec_produce_audio_for_a_lost_packet() {
        let hz = 16_000;
        let mut enc = OpusEncoder::new(hz, 20).unwrap();
        let n = enc.frame_len();
        let x = sine(300.0, hz, 8_000.0, n * 30, 0);
        let pkts: Vec<Vec<u8>> = x
            .chunks_exact(n)
            .map(|f| {
                let mut p = [0u8; MAX_PACKET];
                let l = enc.encode(f, &mut p).unwrap();
                p[..l].to_vec()
            })
            .collect();
        let mut y = vec![0i16; n];

        // Decoder A: loses packet 20, conceals it.
        let mut a = OpusDecoder::new(hz).unwrap();
        for p in &pkts[..20] {
            a.decode(p, &mut y).unwrap();
        }
        a.conceal(&mut y).unwrap();
        assert!(energy(&y) > 1e5, "PLC output is silent: {}", energy(&y));

        // Decoder B: loses packet 20, rebuilds it from packet 21's FEC.
        let mut b = OpusDecoder::new(hz).unwrap();
        for p in &pkts[..20] {
            b.decode(p, &mut y).unwrap();
        }
        b.decode_fec(&pkts[21], &mut y).unwrap();
        let on = power_i16(&y, 300.0, hz as f32);
        assert!(on > power_i16(&y, 2_000.0, hz as f32) * 10.0);
        assert!(energy(&y) > 1e5, "FEC output is silent: {}", energy(&y));
        b.decode(&pkts[21], &mut y).unwrap();
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(
            OpusEncoder::new(44_100, 0).unwrap_err(),
            OpusError::UnsupportedRate(44_100)
        );
        let mut enc = OpusEncoder::new(8_000, 0).unwrap();
        let mut p = [0u8; 100];
        assert!(matches!(
            enc.encode(&[0; 100], &mut p),
            Err(OpusError::FrameLength { .. })
        ));
        let mut dec = OpusDecoder::new(8_000).unwrap();
        let mut y = [0i16; 160];
        assert_eq!(dec.decode(&[], &mut y), Err(OpusError::BadPacket));
        // A TOC byte announcing a code-3 packet with no frame count octet.
        assert_eq!(dec.decode(&[0x03], &mut y), Err(OpusError::BadPacket));
        // A 10 ms packet (from a 10 ms encoder) is refused, not half-used.
        let mut enc10 =
            audiopus::coder::Encoder::new(SampleRate::Hz8000, Channels::Mono, Application::Voip)
                .unwrap();
        let l = enc10.encode(&[0i16; 80], &mut p).unwrap();
        let _ = &mut enc10;
        assert_eq!(dec.decode(&p[..l], &mut y), Err(OpusError::BadPacket));
        // Garbage never panics.
        for seed in 0..200u32 {
            let g: Vec<u8> = (0..(seed % 60 + 1))
                .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 97) >> 7) as u8)
                .collect();
            let _ = dec.decode(&g, &mut y);
            let _ = dec.decode_fec(&g, &mut y);
        }
    }
}
