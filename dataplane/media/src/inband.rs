//! In-band DTMF detection on 8 kHz audio (G.711 legs that did not negotiate
//! telephone-event).
//!
//! Windows of 204 samples (25.5 ms, 39 Hz resolution, enough to separate the
//! 73 Hz-spaced DTMF rows) taken every 102 samples; the eight DTMF
//! frequencies are measured with Goertzel. A window holds a digit when:
//!
//! * its energy is above `min_energy` (silence costs one pass, no Goertzel);
//! * the strongest row and column tones together carry at least
//!   `min_tone_fraction` of the window's energy (speech and noise spread
//!   theirs; this is the main talk-off guard);
//! * each of them beats the runner-up of its group by `min_peak_ratio`;
//! * the twist is within bounds: the column tone at most `max_normal_twist`
//!   dB below the row tone, at most `max_reverse_twist` dB above it.
//!
//! A digit starts after `confirm_windows` consecutive windows agree (with
//! the defaults a tone must last about 40 ms; ITU-T Q.24 asks that 40 ms be
//! accepted and under ~23 ms rejected) and ends after `release_windows`
//! without it; it is reported once, at its end, with its duration.

use crate::dtmf::{Digit, DtmfSource};
use crate::goertzel;
use std::time::Duration;

const RATE: f32 = 8_000.0;
const WINDOW: usize = 204;
const HOP: usize = 102;
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// Event codes by (row, column) (RFC 4733 numbering: '*'=10, '#'=11, A-D=12-15).
const KEYPAD: [[u8; 4]; 4] = [[1, 2, 3, 12], [4, 5, 6, 13], [7, 8, 9, 14], [10, 0, 11, 15]];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Mean square amplitude (16-bit units) below which a window is silence.
    /// 2.5e5 is an RMS of 500, about -36 dBm0.
    pub min_energy: f32,
    pub min_tone_fraction: f32,
    pub min_peak_ratio: f32,
    pub max_normal_twist_db: f32,
    pub max_reverse_twist_db: f32,
    pub confirm_windows: u32,
    pub release_windows: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            min_energy: 2.5e5,
            min_tone_fraction: 0.75,
            min_peak_ratio: 6.0,
            max_normal_twist_db: 8.0,
            max_reverse_twist_db: 4.0,
            confirm_windows: 2,
            release_windows: 2,
        }
    }
}

/// Streaming in-band DTMF detector for one 8 kHz stream.
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    cfg: DetectorConfig,
    /// Goertzel coefficients of the four rows, then the four columns.
    coeffs: [f32; 8],
    buf: [f32; WINDOW],
    filled: usize,
    candidate: Option<u8>,
    run: u32,
    active: Option<u8>,
    active_windows: u32,
    misses: u32,
}

impl DtmfDetector {
    pub fn new(cfg: DetectorConfig) -> Self {
        let mut coeffs = [0f32; 8];
        for (c, &f) in coeffs.iter_mut().zip(ROWS.iter().chain(&COLS)) {
            *c = goertzel::coefficient(f, RATE);
        }
        DtmfDetector {
            cfg,
            coeffs,
            buf: [0.0; WINDOW],
            filled: 0,
            candidate: None,
            run: 0,
            active: None,
            active_windows: 0,
            misses: 0,
        }
    }

    /// Feeds 8 kHz samples; returns a digit that ended within them (at most
    /// one per call can end when calls carry ≤ 20 ms).
    pub fn push(&mut self, samples: &[i16]) -> Option<Digit> {
        let mut out = None;
        for &s in samples {
            self.buf[self.filled] = f32::from(s);
            self.filled += 1;
            if self.filled == WINDOW {
                let hit = self.classify();
                if let Some(d) = self.track(hit) {
                    out = Some(d);
                }
                self.buf.copy_within(HOP.., 0);
                self.filled = WINDOW - HOP;
            }
        }
        out
    }

    /// The digit in the current window, if any.
    fn classify(&self) -> Option<u8> {
        let x = &self.buf[..];
        let energy: f32 = x.iter().map(|v| v * v).sum();
        if energy / (WINDOW as f32) < self.cfg.min_energy {
            return None;
        }
        let norm = 2.0 / (WINDOW as f32 * energy);
        let p = goertzel::power_bank8(x, &self.coeffs);
        let rows = [p[0] * norm, p[1] * norm, p[2] * norm, p[3] * norm];
        let cols = [p[4] * norm, p[5] * norm, p[6] * norm, p[7] * norm];
        let (r, rp, r2) = best(&rows);
        let (c, cp, c2) = best(&cols);
        if rp + cp < self.cfg.min_tone_fraction {
            return None;
        }
        if rp < r2 * self.cfg.min_peak_ratio || cp < c2 * self.cfg.min_peak_ratio {
            return None;
        }
        let twist_db = 10.0 * (cp / rp).log10();
        if twist_db < -self.cfg.max_normal_twist_db || twist_db > self.cfg.max_reverse_twist_db {
            return None;
        }
        Some(KEYPAD[r][c])
    }

    fn track(&mut self, hit: Option<u8>) -> Option<Digit> {
        let window_time = Duration::from_micros((HOP as u64) * 1_000_000 / 8_000);
        if let Some(active) = self.active {
            if hit == Some(active) {
                self.active_windows += 1;
                self.misses = 0;
                return None;
            }
            self.misses += 1;
            if self.misses < self.cfg.release_windows && hit.is_none() {
                return None;
            }
            // Ended (or replaced by another digit, which must confirm anew).
            self.active = None;
            self.candidate = hit;
            self.run = u32::from(hit.is_some());
            // A tone of n hop-spaced windows lasts about (n + 1) hops.
            let n = self.active_windows + 1;
            return Some(Digit {
                event: active,
                duration: window_time * n,
                source: DtmfSource::InBand,
            });
        }
        match hit {
            Some(d) if self.candidate == Some(d) => self.run += 1,
            Some(_) => self.run = 1,
            None => self.run = 0,
        }
        self.candidate = hit;
        if self.run >= self.cfg.confirm_windows
            && let Some(d) = hit
        {
            self.active = Some(d);
            self.active_windows = self.run;
            self.misses = 0;
        }
        None
    }
}

/// Index, value and runner-up value of the largest of four.
fn best(p: &[f32; 4]) -> (usize, f32, f32) {
    let mut i = 0;
    for j in 1..4 {
        if p[j] > p[i] {
            i = j;
        }
    }
    let second = p
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, &v)| v)
        .fold(0.0, f32::max);
    (i, p[i], second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::char_event;

    /// Deterministic noise (xorshift) in -1..1.
    struct Noise(u32);
    impl Noise {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            (self.0 as f32 / u32::MAX as f32) * 2.0 - 1.0
        }
    }

    fn tone(row: f32, col: f32, amp_row: f32, amp_col: f32, ms: usize) -> Vec<f32> {
        (0..ms * 8)
            .map(|i| {
                let t = i as f32 / RATE;
                amp_row * (2.0 * std::f32::consts::PI * row * t).sin()
                    + amp_col * (2.0 * std::f32::consts::PI * col * t).sin()
            })
            .collect()
    }

    fn silence(ms: usize) -> Vec<f32> {
        vec![0.0; ms * 8]
    }

    fn to_i16(x: &[f32]) -> Vec<i16> {
        x.iter()
            .map(|v| v.round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    /// Runs a signal through in 20 ms pushes (plus trailing silence) and
    /// collects the digits.
    fn detect(signal: &[f32]) -> Vec<Digit> {
        let mut d = DtmfDetector::new(DetectorConfig::default());
        let mut s = signal.to_vec();
        s.extend(silence(100));
        to_i16(&s).chunks(160).filter_map(|c| d.push(c)).collect()
    }

    fn keys(ds: &[Digit]) -> String {
        ds.iter().filter_map(|d| d.char()).collect()
    }

    #[test]
    fn every_key_is_detected_once() {
        let mut signal = silence(50);
        for (ri, &r) in ROWS.iter().enumerate() {
            for (ci, &c) in COLS.iter().enumerate() {
                let _ = (ri, ci);
                signal.extend(tone(r, c, 6000.0, 6000.0, 80));
                signal.extend(silence(60));
            }
        }
        let got = detect(&signal);
        assert_eq!(keys(&got), "123A456B789C*0#D");
        for d in &got {
            assert_eq!(d.source, DtmfSource::InBand);
            let ms = d.duration.as_millis();
            assert!((60..=110).contains(&ms), "{ms}");
        }
    }

    #[test]
    fn detected_through_g711_and_noise() {
        // '5' at about -10 dBm0 per tone, white noise ~18 dB below, through
        // µ-law encode/decode.
        let mut n = Noise(0x1234_5678);
        let mut s = tone(770.0, 1336.0, 4000.0, 4000.0, 100);
        for v in s.iter_mut() {
            *v += 500.0 * n.next();
        }
        let coded: Vec<f32> = to_i16(&s)
            .into_iter()
            .map(|x| f32::from(crate::g711::ulaw_decode(crate::g711::ulaw_encode(x))))
            .collect();
        assert_eq!(keys(&detect(&coded)), "5");
    }

    #[test]
    fn twist_limits() {
        // Column 6 dB below row: normal twist allowed (limit 8).
        assert_eq!(keys(&detect(&tone(852.0, 1477.0, 8000.0, 4000.0, 80))), "9");
        // Column 12 dB below row: rejected.
        assert_eq!(keys(&detect(&tone(852.0, 1477.0, 8000.0, 2000.0, 80))), "");
        // Column 6 dB above row: reverse twist over 4 dB, rejected.
        assert_eq!(keys(&detect(&tone(852.0, 1477.0, 4000.0, 8000.0, 80))), "");
    }

    #[test]
    fn duration_limits() {
        // 40 ms accepted, 20 ms rejected.
        assert_eq!(keys(&detect(&tone(941.0, 1336.0, 6000.0, 6000.0, 40))), "0");
        assert_eq!(keys(&detect(&tone(941.0, 1336.0, 6000.0, 6000.0, 20))), "");
        // Too quiet (about -50 dBm0).
        assert_eq!(keys(&detect(&tone(941.0, 1336.0, 100.0, 100.0, 200))), "");
    }

    #[test]
    fn talk_off_negatives() {
        // Single tones.
        assert_eq!(keys(&detect(&tone(697.0, 1209.0, 8000.0, 0.0, 300))), "");
        assert_eq!(keys(&detect(&tone(697.0, 1209.0, 0.0, 8000.0, 300))), "");
        // Loud white noise.
        let mut n = Noise(99);
        let noise: Vec<f32> = (0..8000).map(|_| 8000.0 * n.next()).collect();
        assert_eq!(keys(&detect(&noise)), "");
        // Voiced-speech-like signals: a pitch sweep with many harmonics
        // under a formant envelope, some harmonics landing on DTMF rows
        // and columns.
        for f0 in [100.0f32, 116.0, 139.0, 151.0, 174.0, 201.0, 233.0] {
            let sig: Vec<f32> = (0..8000)
                .map(|i| {
                    let t = i as f32 / RATE;
                    let mut v = 0.0;
                    for h in 1..30 {
                        let f = f0 * h as f32;
                        if f > 3600.0 {
                            break;
                        }
                        // Formants near 700 and 1200 Hz.
                        let g = (-((f - 700.0) / 250.0).powi(2)).exp()
                            + 0.8 * (-((f - 1250.0) / 300.0).powi(2)).exp()
                            + 0.1;
                        v += g * (2.0 * std::f32::consts::PI * f * t).sin();
                    }
                    3000.0 * v
                })
                .collect();
            assert_eq!(keys(&detect(&sig)), "", "f0 {f0}");
        }
        // A DTMF pair with a third strong tone (music chord): rejected.
        let mut chord = tone(770.0, 1209.0, 5000.0, 5000.0, 200);
        for (i, v) in chord.iter_mut().enumerate() {
            *v += 5000.0 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / RATE).sin();
        }
        assert_eq!(keys(&detect(&chord)), "");
    }

    #[test]
    fn repeated_digit_with_gaps() {
        let mut s = Vec::new();
        for _ in 0..3 {
            s.extend(tone(697.0, 1477.0, 6000.0, 6000.0, 60));
            s.extend(silence(60));
        }
        assert_eq!(keys(&detect(&s)), "333");
        assert_eq!(char_event('3'), Some(3));
    }
}
