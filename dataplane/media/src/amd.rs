//! Answering-machine detection on the callee's audio of a placed call,
//! sans IO: fed linear PCM as it arrives, it says "machine" when it hears
//! a voicemail beep (a steady pure tone) or a greeting far longer than a
//! person's "hello" without a pause, and gives up (the callee is taken to
//! be a person) once its listening window is over.
//!
//! Time is the audio itself (samples pushed), so the same audio always
//! gives the same verdict. The AI greets first on our calls, so silence
//! from the callee says nothing either way and is not used.
//!
//! Known blind spots: a steady sung or hummed note in the beep range for
//! 160 ms reads as a beep; a machine with a short greeting and no beep
//! reads as a person.

use crate::goertzel::{coefficient, power_bank};

/// Candidate beep frequencies: 500–2050 Hz in 50 Hz steps (the bin width
/// of a 20 ms frame), above the 425 Hz of European dial and busy tones.
const BEEP_LOW: f32 = 500.0;
const BEEP_STEP: f32 = 50.0;
/// Candidate bins, in banks run side by side in one pass each: sixteen
/// recurrences at a time keep the vector units busy and their state in
/// registers (eight left them waiting on each step's latency; all 32 at
/// once spill on generic x86-64).
const BANK: usize = 16;
const BANKS: usize = 2;
/// Outside a run of tone frames, the bins are computed for one loud frame
/// in this many (the newest); only when it is a tone frame are the ones
/// before it computed too, in order. A beep is a run of at least
/// `beep_ms` of tone frames, so it cannot lie wholly among the frames
/// not yet computed, and the verdicts, and the frame each comes at, are
/// those of computing every frame. Speech, the loud audio a detector
/// mostly hears, is rarely a tone frame: about a quarter of the work.
const LAZY_FRAMES: usize = 4;

/// Why the detector says "machine".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineCue {
    /// A steady pure tone (the beep before the recording starts).
    Beep { hz: u32 },
    /// Speech without a pause longer than a person's greeting.
    LongGreeting { ms: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Machine(MachineCue),
    /// Nothing machine-like in the window: a person (or unknown).
    Human,
}

/// Thresholds, in milliseconds of audio unless named otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AmdConfig {
    /// How long to listen before deciding "human".
    pub window_ms: u32,
    /// A long greeting counts only if it starts this early in the call.
    pub greeting_start_ms: u32,
    /// Speech this long without a pause is a recorded greeting.
    pub greeting_ms: u32,
    /// Silence that ends a stretch of speech.
    pub pause_ms: u32,
    /// A pure tone this long is a beep.
    pub beep_ms: u32,
    /// RMS (i16 scale) from which a frame is sound.
    pub sound_rms: f32,
    /// Share of a frame's energy in one frequency bin from which it is a
    /// pure tone (1.0: a sine exactly on the bin).
    pub tone_share: f32,
}

impl Default for AmdConfig {
    fn default() -> Self {
        AmdConfig {
            window_ms: 30_000,
            greeting_start_ms: 10_000,
            greeting_ms: 4_000,
            pause_ms: 500,
            beep_ms: 160,
            sound_rms: 500.0,
            tone_share: 0.6,
        }
    }
}

/// The detector for one call.
#[derive(Debug)]
pub struct VoicemailDetector {
    cfg: AmdConfig,
    rate: u32,
    /// Loud frames whose bins are not computed yet, then the frame being
    /// filled (the last `frame.len() % frame_len` samples).
    frame: Vec<f32>,
    frame_len: usize,
    /// Frames held before the bins are computed (see [`LAZY_FRAMES`]);
    /// 1 computes every frame.
    lazy_frames: usize,
    coeffs: [[f32; BANK]; BANKS],
    /// Audio heard, ms (20 ms frames).
    at_ms: u32,
    /// The current stretch of speech: where it started and where its
    /// last sound was.
    speech: Option<(u32, u32)>,
    /// The current run of tone frames: its bin and length in frames.
    tone: Option<(usize, u32)>,
    verdict: Option<Verdict>,
    /// Fed faster than it listens: it keeps one input sample in `step`
    /// (see [`VoicemailDetector::narrowband`]) ...
    step: usize,
    /// ... and drops this many before the next one it keeps.
    skip: usize,
}

impl VoicemailDetector {
    /// A detector for PCM at `rate` Hz (8, 16, 24 or 48 kHz).
    pub fn new(rate: u32, cfg: AmdConfig) -> VoicemailDetector {
        let rate = rate.max(8_000);
        let mut coeffs = [[0f32; BANK]; BANKS];
        for (b, bank) in coeffs.iter_mut().enumerate() {
            for (k, c) in bank.iter_mut().enumerate() {
                let hz = BEEP_LOW + BEEP_STEP * (b * BANK + k) as f32;
                *c = coefficient(hz, rate as f32);
            }
        }
        let frame_len = (rate / 50) as usize;
        // A run of tone frames reaching `beep_ms` must be longer than the
        // frames held, and a frame with no energy must not be a tone
        // frame (a share of 0 is one when `tone_share` is 0 or less).
        let beep_frames = cfg.beep_ms.div_ceil(20).max(1) as usize;
        let lazy_frames = if cfg.tone_share > 0.0 {
            LAZY_FRAMES.min(beep_frames)
        } else {
            1
        };
        VoicemailDetector {
            cfg,
            rate,
            frame: Vec::with_capacity(frame_len * lazy_frames),
            frame_len,
            lazy_frames,
            coeffs,
            at_ms: 0,
            speech: None,
            tone: None,
            verdict: None,
            step: 1,
            skip: 0,
        }
    }

    /// A detector fed audio at `input_rate` Hz that carries nothing above
    /// 4 kHz (a G.711 caller's, resampled up for the engine): it keeps
    /// one sample in `input_rate / 8000` and listens at 8 kHz, for half
    /// the work at 16 kHz. Its beep bins (500–2,050 Hz) and thresholds
    /// are the same at any rate. A rate that is not a multiple of 8 kHz
    /// is listened to as it is. Audio with more in it than 4 kHz (an
    /// Opus caller's) must use [`VoicemailDetector::new`]: kept one in
    /// two, what lies above would fold into the beep range.
    pub fn narrowband(input_rate: u32, cfg: AmdConfig) -> VoicemailDetector {
        if input_rate <= 8_000 || !input_rate.is_multiple_of(8_000) {
            return VoicemailDetector::new(input_rate, cfg);
        }
        VoicemailDetector {
            step: (input_rate / 8_000) as usize,
            ..VoicemailDetector::new(8_000, cfg)
        }
    }

    /// The verdict, once there is one.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// Feeds audio; returns the verdict the moment it is reached (once).
    pub fn push(&mut self, pcm: &[i16]) -> Option<Verdict> {
        if self.verdict.is_some() {
            return None;
        }
        if self.step == 1 {
            return self.listen(pcm);
        }
        // The samples kept, a stack buffer at a time; which input sample
        // comes next carries over from one push to the next.
        let mut kept = [0i16; 256];
        let from = self.skip.min(pcm.len());
        let count = (pcm.len() - from).div_ceil(self.step);
        self.skip = from + count * self.step - pcm.len() + (self.skip - from);
        let mut samples = pcm[from..].iter().step_by(self.step);
        loop {
            let mut n = 0;
            for (k, &s) in kept.iter_mut().zip(samples.by_ref()) {
                *k = s;
                n += 1;
            }
            if n == 0 {
                return None;
            }
            if let Some(v) = self.listen(&kept[..n]) {
                return Some(v);
            }
        }
    }

    /// [`Self::push`] at the rate it listens at.
    fn listen(&mut self, pcm: &[i16]) -> Option<Verdict> {
        // A frame's worth at a time (not a sample at a time): this runs
        // on every caller frame of a placed AI call for its first 30 s.
        let mut rest = pcm;
        while !rest.is_empty() {
            let filling = self.frame.len() % self.frame_len;
            let take = (self.frame_len - filling).min(rest.len());
            let (now, later) = rest.split_at(take);
            self.frame.extend(now.iter().map(|&s| f32::from(s)));
            rest = later;
            if take == self.frame_len - filling {
                let v = self.analyse();
                if let Some(v) = v {
                    self.verdict = Some(v);
                    return Some(v);
                }
            }
        }
        None
    }

    /// The 20 ms frame just filled (the last `frame_len` samples of
    /// `frame`; any before it are loud frames held, see [`LAZY_FRAMES`]).
    fn analyse(&mut self) -> Option<Verdict> {
        self.at_ms += 20;
        let start = self.frame.len() - self.frame_len;
        let energy = energy(&self.frame[start..]);
        let rms = (energy / self.frame_len as f32).sqrt();
        let sound = rms >= self.cfg.sound_rms;
        let loud = rms >= self.cfg.sound_rms * 0.6;
        if self.lazy_frames == 1 || self.tone.is_some() {
            // Every frame computed: in a run of tone frames (or always).
            let tone = self.tone_bin(start, energy, loud);
            self.frame.clear();
            if let Some(v) = self.step_tone(tone) {
                return Some(v);
            }
        } else if !loud {
            // Not a tone frame, whatever the frames held were.
            self.frame.clear();
        } else if self.frame.len() == self.lazy_frames * self.frame_len {
            let newest = self.tone_bin(start, energy, true);
            if newest.is_some() {
                // The frames held, in order, then this one. A run among
                // the held frames alone is too short to be a beep.
                for k in 0..self.lazy_frames - 1 {
                    let at = k * self.frame_len;
                    let e = self::energy(&self.frame[at..at + self.frame_len]);
                    let tone = self.tone_bin(at, e, true);
                    let v = self.step_tone(tone);
                    debug_assert!(v.is_none(), "a beep among held frames: {v:?}");
                }
            }
            self.frame.clear();
            if let Some(v) = self.step_tone(newest) {
                return Some(v);
            }
        }
        match (self.speech, sound) {
            (None, true) => self.speech = Some((self.at_ms - 20, self.at_ms)),
            (Some((start, _)), true) => {
                self.speech = Some((start, self.at_ms));
                let ms = self.at_ms - start;
                if ms >= self.cfg.greeting_ms && start < self.cfg.greeting_start_ms {
                    return Some(Verdict::Machine(MachineCue::LongGreeting { ms }));
                }
            }
            (Some((_, last)), false) if self.at_ms - last >= self.cfg.pause_ms => {
                self.speech = None;
            }
            _ => {}
        }
        (self.at_ms >= self.cfg.window_ms).then_some(Verdict::Human)
    }

    /// The bin of the frame at `start` in `frame` if it is a tone frame:
    /// the strongest candidate bin holding `tone_share` of its energy.
    fn tone_bin(&self, start: usize, energy: f32, loud: bool) -> Option<usize> {
        let frame = &self.frame[start..start + self.frame_len];
        let n = self.frame_len as f32;
        let mut best = (0usize, 0f32);
        if loud {
            for (b, bank) in self.coeffs.iter().enumerate() {
                for (k, p) in power_bank(frame, bank).into_iter().enumerate() {
                    if p > best.1 {
                        best = (b * BANK + k, p);
                    }
                }
            }
        }
        let share = if energy > 0.0 {
            best.1 / (n * energy / 2.0)
        } else {
            0.0
        };
        (share >= self.cfg.tone_share).then_some(best.0)
    }

    /// The run of tone frames after one more frame; a beep once it is long
    /// enough.
    fn step_tone(&mut self, tone: Option<usize>) -> Option<Verdict> {
        let Some(bin) = tone else {
            self.tone = None;
            return None;
        };
        let run = match self.tone {
            Some((first, len)) if first.abs_diff(bin) <= 1 => (first, len + 1),
            _ => (bin, 1),
        };
        self.tone = Some(run);
        (run.1 * 20 >= self.cfg.beep_ms).then(|| {
            let hz = BEEP_LOW + BEEP_STEP * run.0 as f32;
            Verdict::Machine(MachineCue::Beep { hz: hz as u32 })
        })
    }

    /// The rate it listens at.
    pub fn rate(&self) -> u32 {
        self.rate
    }
}

/// Sum of squares, in eight running sums (so it vectorizes; a single
/// float sum must be added in order).
fn energy(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8_000;

    fn silence(ms: u32) -> Vec<i16> {
        vec![0; (RATE * ms / 1000) as usize]
    }

    fn tone(hz: f32, ms: u32, amp: f32) -> Vec<i16> {
        (0..RATE * ms / 1000)
            .map(|i| (amp * (std::f32::consts::TAU * hz * i as f32 / RATE as f32).sin()) as i16)
            .collect()
    }

    /// Speech-like: a voiced 140 Hz fundamental with harmonics, its
    /// loudness following 4 Hz syllables that never fall silent for long.
    fn speech(ms: u32) -> Vec<i16> {
        (0..RATE * ms / 1000)
            .map(|i| {
                let t = i as f32 / RATE as f32;
                let f0 = 140.0 + 20.0 * (std::f32::consts::TAU * 0.7 * t).sin();
                let tau = std::f32::consts::TAU;
                let voice = (tau * f0 * t).sin()
                    + 0.6 * (tau * 2.0 * f0 * t).sin()
                    + 0.4 * (tau * 3.3 * f0 * t).sin()
                    + 0.3 * (tau * 5.1 * f0 * t).sin();
                let env = 0.35 + 0.65 * (0.5 * (1.0 - (tau * 4.0 * t).cos()));
                (voice * env * 5000.0) as i16
            })
            .collect()
    }

    fn run(parts: &[Vec<i16>]) -> Option<Verdict> {
        let mut d = VoicemailDetector::new(RATE, AmdConfig::default());
        // Odd chunk sizes: frames are cut by the detector, not the caller.
        let all: Vec<i16> = parts.concat();
        for chunk in all.chunks(173) {
            if let Some(v) = d.push(chunk) {
                return Some(v);
            }
        }
        None
    }

    #[test]
    fn a_beep_after_a_greeting_is_a_machine() {
        let v = run(&[speech(2_500), silence(300), tone(1_000.0, 400, 8_000.0)]);
        assert_eq!(v, Some(Verdict::Machine(MachineCue::Beep { hz: 1_000 })));
        // Off the 50 Hz grid and quiet: still a beep.
        let v = run(&[silence(500), tone(1_410.0, 300, 1_500.0)]);
        assert!(
            matches!(v, Some(Verdict::Machine(MachineCue::Beep { .. }))),
            "{v:?}"
        );
    }

    #[test]
    fn short_tones_low_tones_and_dtmf_are_not_beeps() {
        assert_eq!(run(&[tone(1_000.0, 100, 8_000.0), silence(1_000)]), None);
        // A 425 Hz dial tone is below the beep range.
        assert_eq!(run(&[tone(425.0, 2_000, 8_000.0)]), None);
        // DTMF '5' (770 + 1336 Hz): two tones, no single one dominates.
        let mut dual = tone(770.0, 500, 5_000.0);
        for (d, s) in dual.iter_mut().zip(tone(1_336.0, 500, 5_000.0)) {
            *d = d.saturating_add(s);
        }
        assert_eq!(run(&[dual]), None);
    }

    #[test]
    fn a_long_greeting_is_a_machine_and_a_hello_is_not() {
        let v = run(&[silence(800), speech(4_500)]);
        assert_eq!(
            v,
            Some(Verdict::Machine(MachineCue::LongGreeting { ms: 4_000 }))
        );
        // "Hello?" then listening, then a reply with pauses: a person.
        let v = run(&[
            speech(700),
            silence(3_000),
            speech(2_000),
            silence(700),
            speech(2_500),
            silence(22_000),
        ]);
        assert_eq!(v, Some(Verdict::Human));
        // Long speech that starts late (mid-conversation) is not a greeting.
        let v = run(&[silence(11_000), speech(6_000)]);
        assert_eq!(v, None);
    }

    #[test]
    fn energy_is_the_sum_of_squares_at_any_length() {
        for n in [0usize, 1, 7, 8, 9, 160, 161, 320] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32) - 3.5).collect();
            let want: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let got = f64::from(energy(&x));
            assert!((got - want).abs() <= want * 1e-6, "{n}: {got} vs {want}");
        }
    }

    #[test]
    fn speech_is_not_mistaken_for_a_tone() {
        assert_eq!(run(&[speech(3_000)]), None);
    }

    #[test]
    fn narrowband_audio_at_16_khz_is_heard_at_8_khz_with_the_same_verdicts() {
        // The tests' signals at 16 kHz (all below 4 kHz, as a G.711
        // caller's resampled audio is), pushed in odd chunks so the kept
        // sample's phase carries across pushes.
        let at16 = |f: &dyn Fn(f32) -> f32, ms: u32| -> Vec<i16> {
            (0..16 * ms)
                .map(|i| f(i as f32 / 16_000.0) as i16)
                .collect()
        };
        let tau = std::f32::consts::TAU;
        let sil = |ms| at16(&|_| 0.0, ms);
        let beep = |hz: f32, ms| at16(&move |t| 8_000.0 * (tau * hz * t).sin(), ms);
        let talk = |ms| {
            at16(
                &|t| {
                    let f0 = 140.0 + 20.0 * (tau * 0.7 * t).sin();
                    let voice = (tau * f0 * t).sin()
                        + 0.6 * (tau * 2.0 * f0 * t).sin()
                        + 0.4 * (tau * 3.3 * f0 * t).sin()
                        + 0.3 * (tau * 5.1 * f0 * t).sin();
                    voice * (0.35 + 0.65 * (0.5 * (1.0 - (tau * 4.0 * t).cos()))) * 5000.0
                },
                ms,
            )
        };
        let hear = |mut d: VoicemailDetector, parts: &[Vec<i16>]| {
            let all: Vec<i16> = parts.concat();
            let v = all.chunks(173).find_map(|c| d.push(c));
            (v, d.rate())
        };
        let cases: [Vec<Vec<i16>>; 4] = [
            vec![talk(2_500), sil(300), beep(1_000.0, 400)],
            vec![sil(800), talk(4_500)],
            vec![
                talk(700),
                sil(3_000),
                talk(2_000),
                sil(700),
                talk(2_500),
                sil(22_000),
            ],
            vec![beep(1_000.0, 100), sil(1_000), beep(425.0, 2_000)],
        ];
        let want = [
            Some(Verdict::Machine(MachineCue::Beep { hz: 1_000 })),
            Some(Verdict::Machine(MachineCue::LongGreeting { ms: 4_000 })),
            Some(Verdict::Human),
            None,
        ];
        for (parts, want) in cases.iter().zip(want) {
            let wide = hear(VoicemailDetector::new(16_000, AmdConfig::default()), parts);
            let narrow = hear(
                VoicemailDetector::narrowband(16_000, AmdConfig::default()),
                parts,
            );
            assert_eq!((wide.0, narrow.0), (want, want));
            assert_eq!((wide.1, narrow.1), (16_000, 8_000));
        }
        // Rates it cannot thin evenly, or already narrow, are heard as
        // they are.
        for rate in [8_000, 11_025] {
            assert_eq!(
                VoicemailDetector::narrowband(rate, AmdConfig::default()).rate(),
                rate
            );
        }
        assert_eq!(
            VoicemailDetector::narrowband(48_000, AmdConfig::default()).rate(),
            8_000
        );
    }

    #[test]
    fn narrowband_keeps_every_other_sample_across_pushes_of_any_size() {
        let ramp: Vec<i16> = (0..300).collect();
        let mut whole = VoicemailDetector::narrowband(16_000, AmdConfig::default());
        let mut pieces = VoicemailDetector::narrowband(16_000, AmdConfig::default());
        assert!(whole.push(&ramp).is_none());
        let mut rest = &ramp[..];
        for size in (0..).map(|k| k % 4) {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(size.min(rest.len()));
            assert!(pieces.push(now).is_none());
            rest = later;
        }
        // 150 kept: one frame of 160 not yet full, so all still held.
        let want: Vec<f32> = (0..300).step_by(2).map(|v| v as f32).collect();
        assert_eq!(whole.frame, want);
        assert_eq!(pieces.frame, want);
    }

    /// A deterministic sequence for the test signals below.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, below: u32) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) % u64::from(below)) as u32
        }
    }

    /// Where a detector's verdict comes: the verdict and the audio heard
    /// by then (ms), or none and the audio heard.
    fn verdict_at(mut d: VoicemailDetector, audio: &[i16], chunk: usize) -> (Option<Verdict>, u32) {
        let v = audio.chunks(chunk).find_map(|c| d.push(c));
        (v, d.at_ms)
    }

    #[test]
    fn holding_frames_gives_the_verdicts_of_computing_every_frame_at_the_same_frame() {
        // Tone bursts of every length around the beep's 8 frames (on and
        // off the 50 Hz grid, loud and near the threshold, gliding across
        // neighbouring bins), among speech, silence, noise and two-tone
        // chords, at every rate a tap uses; the frame-by-frame detector
        // (`lazy_frames` 1, the algorithm before frames were held) is the
        // reference.
        let mut rng = Lcg(7);
        let mut verdicts = [0usize; 3];
        for case in 0..60 {
            let rate = [8_000, 16_000, 24_000][case % 3];
            let ms_samples = |ms: u32| (rate * ms / 1_000) as usize;
            let mut audio: Vec<i16> = Vec::new();
            let tau = std::f32::consts::TAU;
            while audio.len() < ms_samples(6_000) {
                let len = ms_samples(10 * (1 + rng.next(40)));
                let t0 = audio.len();
                match rng.next(6) {
                    0 => audio.extend(std::iter::repeat_n(0, len)),
                    1 | 2 => {
                        // A tone of 1–8 frames, maybe gliding.
                        let frames = 1 + rng.next(8);
                        let hz = 480.0 + rng.next(1_600) as f32;
                        let glide = [0.0, 0.0, 40.0, -60.0][rng.next(4) as usize];
                        let amp = [300.0, 700.0, 4_000.0, 12_000.0][rng.next(4) as usize];
                        let n = ms_samples(20 * frames);
                        audio.extend((0..n).map(|i| {
                            let t = i as f32 / rate as f32;
                            (amp * (tau * (hz + glide * t) * t).sin()) as i16
                        }));
                    }
                    3 => audio.extend((0..len).map(|i| {
                        let t = (t0 + i) as f32 / rate as f32;
                        let f0 = 120.0 + 40.0 * (tau * 0.5 * t).sin();
                        let v = (tau * f0 * t).sin() + 0.5 * (tau * 2.7 * f0 * t).sin();
                        (v * (0.4 + 0.6 * (tau * 3.0 * t).sin().abs()) * 6_000.0) as i16
                    })),
                    4 => audio.extend((0..len).map(|_| rng.next(4_000) as i16 - 2_000)),
                    _ => audio.extend((0..len).map(|i| {
                        let t = i as f32 / rate as f32;
                        (3_000.0 * ((tau * 700.0 * t).sin() + (tau * 1_300.0 * t).sin())) as i16
                    })),
                }
            }
            let cfg = AmdConfig {
                window_ms: 5_000,
                ..AmdConfig::default()
            };
            for chunk in [[7, 160][case % 2], 173, 480] {
                let mut eager = VoicemailDetector::new(rate, cfg);
                eager.lazy_frames = 1;
                let want = verdict_at(eager, &audio, chunk);
                let got = verdict_at(VoicemailDetector::new(rate, cfg), &audio, chunk);
                assert_eq!(got, want, "case {case}, rate {rate}, chunk {chunk}");
            }
            let want = verdict_at(VoicemailDetector::new(rate, cfg), &audio, 173).0;
            verdicts[match want {
                Some(Verdict::Machine(MachineCue::Beep { .. })) => 0,
                Some(Verdict::Machine(MachineCue::LongGreeting { .. })) => 1,
                _ => 2,
            }] += 1;
        }
        // The cases reach every kind of verdict, beeps most.
        assert!(verdicts.iter().all(|&n| n > 0), "{verdicts:?}");
        // A beep of exactly the beep's length, after loud non-tone
        // frames held, and one frame short of it.
        for (frames, beep) in [(8, true), (7, false)] {
            for lead in 0..6 {
                let mut audio = speech(20 * lead);
                audio.extend(tone(1_000.0, 20 * frames, 8_000.0));
                audio.extend(silence(200));
                let mut eager = VoicemailDetector::new(RATE, AmdConfig::default());
                eager.lazy_frames = 1;
                let want = verdict_at(eager, &audio, 160);
                let got = verdict_at(
                    VoicemailDetector::new(RATE, AmdConfig::default()),
                    &audio,
                    160,
                );
                assert_eq!(got, want, "lead {lead}, frames {frames}");
                assert_eq!(
                    matches!(got.0, Some(Verdict::Machine(MachineCue::Beep { .. }))),
                    beep
                );
            }
        }
        // Settings where holding frames cannot be exact hold none.
        let short = AmdConfig {
            beep_ms: 40,
            ..AmdConfig::default()
        };
        assert_eq!(VoicemailDetector::new(RATE, short).lazy_frames, 2);
        let any = AmdConfig {
            tone_share: 0.0,
            ..AmdConfig::default()
        };
        assert_eq!(VoicemailDetector::new(RATE, any).lazy_frames, 1);
        assert_eq!(
            VoicemailDetector::new(RATE, AmdConfig::default()).lazy_frames,
            LAZY_FRAMES
        );
    }

    #[test]
    fn the_verdict_comes_once() {
        let mut d = VoicemailDetector::new(16_000, AmdConfig::default());
        let beep: Vec<i16> = (0..16_000 / 2)
            .map(|i| {
                (8_000.0 * (std::f32::consts::TAU * 1_000.0 * i as f32 / 16_000.0).sin()) as i16
            })
            .collect();
        assert!(d.push(&beep).is_some());
        assert!(d.push(&beep).is_none());
        assert!(matches!(d.verdict(), Some(Verdict::Machine(_))));
    }
}
