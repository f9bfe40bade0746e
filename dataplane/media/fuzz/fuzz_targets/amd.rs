//! The voicemail detector on a callee's audio (decoded from what the far
//! end sends): tones, speech-like bursts, silence and raw samples at every
//! rate the AI side feeds it, pushed in arbitrary chunk sizes. Asserts: no
//! panic; the verdict comes once and stays; and it does not depend on how
//! the audio was chunked (one push of all of it gives the same verdict),
//! which is what "time is the audio itself" promises, including the
//! narrowband detector's sample skipping across pushes.
#![no_main]

mod input;

use codeb_media::amd::{AmdConfig, VoicemailDetector};
use input::Input;
use libfuzzer_sys::fuzz_target;

const RATES: [u32; 5] = [8_000, 16_000, 24_000, 48_000, 44_100];
/// Audio generated per input is capped (the detector listens for 30 s).
const MAX_SAMPLES: usize = 48_000 * 40;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let setup = inp.byte();
    let rate = RATES[usize::from(setup % 5)];
    let narrow = setup & 0x08 != 0;
    let detector = || {
        if narrow {
            VoicemailDetector::narrowband(rate, AmdConfig::default())
        } else {
            VoicemailDetector::new(rate, AmdConfig::default())
        }
    };
    let (mut chunked, mut whole) = (detector(), detector());
    let mut audio: Vec<i16> = Vec::new();
    let mut chunks: Vec<usize> = Vec::new();
    let tau = std::f32::consts::TAU;
    while !inp.0.is_empty() && audio.len() < MAX_SAMPLES {
        let op = inp.byte();
        let ms = usize::from(inp.byte()) * 20;
        let n = ms * rate as usize / 1000;
        let from = audio.len();
        match op % 4 {
            0 => {
                // A tone, on a 50 Hz bin or off it.
                let hz = 400.0 + f32::from(inp.byte()) * 10.0;
                let amp = f32::from(inp.byte()) * 120.0;
                audio.extend((0..n).map(|i| {
                    let t = (from + i) as f32 / rate as f32;
                    (amp * (tau * hz * t).sin()) as i16
                }));
            }
            1 => {
                // Speech-like: a pitch with harmonics under an envelope.
                let f0 = 100.0 + f32::from(inp.byte());
                audio.extend((0..n).map(|i| {
                    let t = (from + i) as f32 / rate as f32;
                    let v = (tau * f0 * t).sin() + 0.5 * (tau * 2.7 * f0 * t).sin();
                    (v * (0.4 + 0.6 * (tau * 3.0 * t).sin().abs()) * 6_000.0) as i16
                }));
            }
            2 => audio.extend(std::iter::repeat_n(0, n)),
            _ => {
                let raw = inp.0.len().min(2 * n);
                for pair in inp.0[..raw].chunks(2) {
                    let lo = pair.get(1).copied().unwrap_or(0);
                    audio.push(i16::from_le_bytes([pair[0], lo]));
                }
                inp.0 = &inp.0[raw..];
            }
        }
        chunks.push(usize::from(inp.byte()) * 7 + 1);
    }

    let mut said = None;
    let mut at = 0;
    let mut k = 0;
    while at < audio.len() {
        let n = chunks.get(k).copied().unwrap_or(160).min(audio.len() - at);
        k += 1;
        if let Some(v) = chunked.push(&audio[at..at + n]) {
            assert!(said.is_none(), "a second verdict {v:?} after {said:?}");
            said = Some(v);
        }
        assert_eq!(chunked.verdict(), said);
        at += n;
    }
    assert_eq!(
        whole.push(&audio),
        said,
        "the verdict depends on the chunking"
    );
    assert_eq!(whole.verdict(), said);
    if said.is_some() {
        assert_eq!(
            whole.push(&audio[..audio.len().min(960)]),
            None,
            "said once"
        );
        assert_eq!(whole.verdict(), said);
    }
});
