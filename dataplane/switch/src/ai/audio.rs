//! Between the tap's linear PCM and the engines' wire formats.

use codeb_ai::{AudioFormat, Codec};
use codeb_media::g711::Law;

fn law(codec: Codec) -> Option<Law> {
    match codec {
        Codec::Pcmu => Some(Law::Ulaw),
        Codec::Pcma => Some(Law::Alaw),
        Codec::PcmS16le => None,
    }
}

/// Encodes caller PCM for the engine's input format into `out` (cleared
/// first).
pub fn encode(pcm: &[i16], format: AudioFormat, out: &mut Vec<u8>) {
    out.clear();
    match law(format.codec) {
        Some(law) => {
            out.resize(pcm.len(), 0);
            let n = law.encode(pcm, out);
            out.truncate(n);
        }
        None => {
            // Sized once and written in place (a per-sample
            // `extend_from_slice` was 1% of the switch on AI calls).
            out.resize(pcm.len() * 2, 0);
            for (b, s) in out.chunks_exact_mut(2).zip(pcm) {
                b.copy_from_slice(&s.to_le_bytes());
            }
        }
    }
}

/// Decodes engine audio into PCM, appended to `out`. A trailing odd byte
/// of 16-bit audio (never sent by a correct engine) is ignored.
pub fn decode(data: &[u8], format: AudioFormat, out: &mut Vec<i16>) {
    match law(format.codec) {
        Some(law) => {
            let start = out.len();
            out.resize(start + data.len(), 0);
            let n = law.decode(data, &mut out[start..]);
            out.truncate(start + n);
        }
        None => out.extend(
            data.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm16_round_trips_little_endian() {
        let pcm = [0i16, 1, -1, 12345, i16::MIN];
        let mut bytes = Vec::new();
        encode(&pcm, AudioFormat::PCM16_16K, &mut bytes);
        assert_eq!(&bytes[..6], &[0, 0, 1, 0, 0xff, 0xff]);
        let mut back = Vec::new();
        decode(&bytes, AudioFormat::PCM16_24K, &mut back);
        assert_eq!(back, pcm);
        // An odd trailing byte is dropped, not misread.
        decode(&[1, 0, 7], AudioFormat::PCM16_24K, &mut back);
        assert_eq!(back.last(), Some(&1));
        assert_eq!(back.len(), pcm.len() + 1);
    }

    #[test]
    fn g711_is_one_byte_per_sample() {
        let pcm: Vec<i16> = (0..160).map(|i| ((i * 200) % 8000) as i16).collect();
        for f in [AudioFormat::PCMU, AudioFormat::PCMA] {
            let mut bytes = Vec::new();
            encode(&pcm, f, &mut bytes);
            assert_eq!(bytes.len(), 160);
            let mut back = Vec::new();
            decode(&bytes, f, &mut back);
            assert_eq!(back.len(), 160);
            // G.711 is lossy but close.
            for (a, b) in pcm.iter().zip(&back) {
                assert!((i32::from(*a) - i32::from(*b)).abs() < 300, "{a} vs {b}");
            }
        }
    }
}
