//! Sample-rate conversion of 20 ms mono frames with a polyphase
//! windowed-sinc FIR.
//!
//! Both sides are fixed at one 20 ms frame (160 samples at 8 kHz, 320 at
//! 16 kHz, 480 at 24 kHz, 960 at 48 kHz), which the supported rate pairs
//! allow exactly: every pair is a ratio L/M of small integers, and a frame
//! is a whole number of the filter's phase cycles, so each output sample
//! of a frame uses the same phase and input offset in every frame. All of
//! that, the coefficients and the buffers are set up in [`Resampler::new`];
//! [`Resampler::process`] converts i16 to f32 behind the kept history,
//! filters and converts back, without allocating. Whole-number rises and
//! falls (8 to 16 kHz and 24 to 8 kHz on every AI call) compute
//! [`BLOCK`] outputs at a time, one coefficient times [`BLOCK`]
//! consecutive inputs per step, which the compiler turns into vector
//! multiply-adds with enough independent sums that the additions'
//! latency does not bound it (a fall first splits the input by phase so
//! its outputs' inputs are consecutive too); other ratios (16 to and from
//! 24 kHz) run one dot product per output.
//!
//! The filter: a sinc low-pass at the lower rate's Nyquist frequency
//! (4 kHz between 8 and 16 kHz), [`ZERO_CROSSINGS`] of its zero crossings
//! each side, under a Kaiser window (β = [`KAISER_BETA`], about 70 dB of
//! stopband): flat to about 3.5 kHz and stopped from about 4.5 kHz for
//! 8 kHz. Each phase's taps are scaled to sum to one (unity gain at DC on
//! every output sample), and only its nonzero taps are run: with the
//! cutoff at the Nyquist frequency, doubling the rate is a half-band
//! filter whose every other output is an input sample as it was, so
//! 8 to 16 kHz (every caller frame of an AI call) costs one dot product
//! per two outputs. The delay is [`ZERO_CROSSINGS`] periods of the lower
//! rate: 2 ms for 8 kHz, against the 10 ms of the FFT resampler (rubato,
//! one block per frame) this replaced.

use std::sync::OnceLock;
use thiserror::Error;

/// Sample rates the media path converts between.
pub const SUPPORTED_RATES: [u32; 4] = [8_000, 16_000, 24_000, 48_000];

/// Zero crossings of the filter's sinc on each side, in periods of the
/// lower rate: the filter's length and its delay.
pub const ZERO_CROSSINGS: usize = 16;
/// The Kaiser window's shape: about 70 dB between pass- and stopband.
const KAISER_BETA: f64 = 7.0;
/// Cutoff, as a share of the lower rate.
const CUTOFF: f64 = 0.5;
/// Taps smaller than this share of their phase's sum are zeros of the
/// sinc (not exactly zero in floating point) and are left out.
const NEGLIGIBLE: f64 = 1e-9;
/// Dot products run in this many lanes.
const LANES: usize = 8;
/// Outputs computed together, a coefficient at a time, in rises and
/// falls: enough independent sums (eight 4-wide vectors on generic
/// x86-64) that an addition's latency does not stall the next, few
/// enough that they stay in registers. Every frame length is a multiple.
const BLOCK: usize = 32;

/// Frame length in samples for 20 ms at `rate`.
pub const fn frame_len(rate: u32) -> usize {
    (rate / 50) as usize
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ResampleError {
    /// Our caller asked for a rate outside [`SUPPORTED_RATES`].
    #[error("unsupported sample rate {0}")]
    UnsupportedRate(u32),
    /// Our caller passed a frame of the wrong length.
    #[error("frame of {got} samples, expected {expected}")]
    FrameLength { got: usize, expected: usize },
    /// The filter could not be laid out (should not happen with the rates
    /// checked above).
    #[error("resampler failure")]
    Internal,
}

/// A 20 ms mono frame converter between two supported rates.
pub struct Resampler {
    in_rate: u32,
    out_rate: u32,
    /// Inline, not boxed: with hundreds of calls a separate allocation is
    /// one more cache miss per frame (the tables are shared, see
    /// [`Tables`]; the buffers are the resampler's own).
    inner: Option<Polyphase>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("in_rate", &self.in_rate)
            .field("out_rate", &self.out_rate)
            .finish()
    }
}

/// The filter of one rate pair and its state.
///
/// Sample `i` of the input sits at `i * up` on the grid of the common rate
/// (`in_rate * up`); output sample `n` is taken at `n * down - half` on it
/// (`half`: the filter's half length there, which is its delay), from the
/// inputs within `half` of that point.
struct Polyphase {
    /// The phases' nonzero coefficients back to back, scaled from i16 to
    /// [-1, 1).
    coefs: &'static [f32],
    /// Per output sample of a frame: where its taps start in `buf`, where
    /// its phase's coefficients start in `coefs`, and how many there are.
    plan: &'static [(usize, usize, usize)],
    /// The newest `history` input samples of earlier frames, oldest
    /// first, as they came. The filter reads them, the frame's and zeros
    /// for the last output's taps as f32 laid out in the thread's
    /// [`WORK`] (`len` of it), which stays in cache: a buffer of f32 per
    /// resampler (some 1–3 KB) was cold again at every frame once a
    /// worker carried hundreds of calls, and its writes were a third of a
    /// tapped call's cache misses. Conversions from i16 are exact, so the
    /// filter reads the same values.
    kept: Vec<i16>,
    len: usize,
    history: usize,
    frame_in: usize,
    /// The rate ratio out:in is up:down.
    up: usize,
    down: usize,
    /// Output samples by which the output lags the input.
    delay: usize,
    /// A whole-number fall (`up` = 1) with its outputs in blocks of
    /// [`BLOCK`]: its taps by stream, the input split by phase in
    /// [`WORK`] (see [`Fall`]).
    fall: Option<Fall>,
    /// Run the AVX2 build of the loops (the CPU has it).
    avx2: bool,
    /// Every input sample kept from earlier frames is zero (see
    /// [`Polyphase::process`]).
    quiet: bool,
    /// A frame replaces all of the kept history (it is at least as long),
    /// so a frame of zeros leaves it all zero.
    frame_covers_history: bool,
    /// Skip the filter on silence (always, but in the test that compares
    /// with the filter run).
    skip_silence: bool,
}

/// Whether the CPU running us has AVX2 (the filter's loops then run
/// eight lanes to a vector; the build targets generic x86-64, four).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A whole-number fall by `down`: output `b` is the sum over taps `k` of
/// `coef[k] * buf[start + k + down * b]`. Split `buf` into `down` streams
/// (stream `p` holds `buf[p]`, `buf[p + down]`, ...): the taps whose
/// input is in stream `p` then read it at consecutive places, and so do
/// consecutive outputs, so the outputs are computed [`BLOCK`] at a time as
/// in a rise, one stream's taps after another's.
struct Fall {
    /// Per stream: the inputs kept from earlier frames, and the frame's.
    history: usize,
    frame: usize,
    /// Per stream: where its first tap reads in the streams, and where its
    /// taps' coefficients start in `coefs` and how many there are.
    groups: &'static [(usize, usize, usize)],
    coefs: &'static [f32],
    /// Stream `p` at `p * stride` in [`WORK`].
    stride: usize,
}

/// f32 in the thread's [`WORK`]: more than any supported pair's filter
/// reads (48 to 8 kHz, the longest, about 1,200; [`Polyphase::new`]
/// refuses a pair that would not fit).
const WORK_LEN: usize = 2_048;

thread_local! {
    /// The input a resampler's filter reads, laid out for each frame:
    /// its kept history, the frame, zeros (split by phase for a fall).
    /// Nothing stays in it from one frame to the next, so one serves
    /// every resampler of the thread, and stays in cache. Laid out in
    /// place, never allocated.
    static WORK: std::cell::RefCell<[f32; WORK_LEN]> =
        const { std::cell::RefCell::new([0.0; WORK_LEN]) };
}

/// The tables of one rate pair, which never change: every resampler of
/// the pair reads the same ones (hundreds of calls' resamplers then share
/// a few cache lines of coefficients instead of each missing on its own
/// copy every frame).
struct Tables {
    coefs: Vec<f32>,
    plan: Vec<(usize, usize, usize)>,
    /// A fall's taps by stream, and their coefficients.
    groups: Vec<(usize, usize, usize)>,
    fall_coefs: Vec<f32>,
}

/// One per (input, output) pair of [`SUPPORTED_RATES`].
static TABLES: [OnceLock<Tables>; 16] = [const { OnceLock::new() }; 16];

/// The shared copy of `built` for the pair: the first one kept (every
/// build of a pair is the same).
fn shared(in_rate: u32, out_rate: u32, built: Tables) -> Result<&'static Tables, ResampleError> {
    let index = |r: u32| SUPPORTED_RATES.iter().position(|&s| s == r);
    let (i, o) = index(in_rate)
        .zip(index(out_rate))
        .ok_or(ResampleError::Internal)?;
    let cell = TABLES.get(i * 4 + o).ok_or(ResampleError::Internal)?;
    Ok(cell.get_or_init(|| built))
}

/// What [`Fall::layout`] works out for a rate pair.
struct FallLayout {
    history: usize,
    frame: usize,
    groups: Vec<(usize, usize, usize)>,
    coefs: Vec<f32>,
    stride: usize,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The modified Bessel function of the first kind, order zero (its series
/// converges fast for the window's arguments).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum
}

impl Polyphase {
    fn new(in_rate: u32, out_rate: u32) -> Result<Polyphase, ResampleError> {
        let (inr, outr) = (in_rate as usize, out_rate as usize);
        let g = gcd(inr, outr);
        let (up, down) = (outr / g, inr / g);
        let common = inr * up;
        let low = inr.min(outr);
        // Half length on the common grid: ZERO_CROSSINGS periods of the
        // lower rate.
        let half = ZERO_CROSSINGS * common / low;
        let (frame_in, frame_out) = (frame_len(in_rate), frame_len(out_rate));
        if frame_in * up != frame_out * down || half == 0 {
            return Err(ResampleError::Internal);
        }
        // Inputs within `half` of a point: at most 2 * half / up + 1.
        let taps = 2 * half / up + 1;
        let fc = CUTOFF * low as f64 / common as f64;
        let i0b = bessel_i0(KAISER_BETA);
        let h = |d: i64| -> f64 {
            let d = d as f64;
            let x = d / half as f64;
            if x.abs() > 1.0 {
                return 0.0;
            }
            let t = 2.0 * fc * d;
            let sinc = if t == 0.0 {
                1.0
            } else {
                (std::f64::consts::PI * t).sin() / (std::f64::consts::PI * t)
            };
            sinc * bessel_i0(KAISER_BETA * (1.0 - x * x).sqrt()) / i0b
        };
        // Phase `s`: the first input is `s` grid steps past the window's
        // start, so tap k is at distance half - s - k * up from the point.
        // Kept: its nonzero taps, as (first tap, offset in coefs, count).
        let mut coefs = Vec::new();
        let mut phases = Vec::with_capacity(up);
        for s in 0..up {
            let row: Vec<f64> = (0..taps)
                .map(|k| h(half as i64 - s as i64 - (k * up) as i64))
                .collect();
            let sum: f64 = row.iter().sum();
            if sum <= 0.0 {
                return Err(ResampleError::Internal);
            }
            let live = |v: &f64| v.abs() > sum * NEGLIGIBLE;
            let first = row.iter().position(live).ok_or(ResampleError::Internal)?;
            let last = row.iter().rposition(live).ok_or(ResampleError::Internal)?;
            phases.push((first, coefs.len(), last + 1 - first));
            coefs.extend(row[first..=last].iter().map(|v| (v / sum / 32768.0) as f32));
        }
        let history = 2 * half / up;
        let mut plan = Vec::with_capacity(frame_out);
        let mut end = 0;
        for b in 0..frame_out {
            // The window's start on the grid, relative to the frame's
            // first input: b * down - half - half.
            let lo = (b * down) as i64 - 2 * half as i64;
            let first = lo.div_euclid(up as i64) + i64::from(lo.rem_euclid(up as i64) != 0);
            let s = (first * up as i64 - lo) as usize;
            let start =
                usize::try_from(first + history as i64).map_err(|_| ResampleError::Internal)?;
            let &(skip, at, count) = phases.get(s).ok_or(ResampleError::Internal)?;
            end = end.max(start + skip + count);
            plan.push((start + skip, at, count));
        }
        let len = end.max(history + frame_in);
        let layout = Fall::layout(&plan, &coefs, up, down, len, history, frame_in);
        let (groups, fall_coefs) = layout
            .as_ref()
            .map(|l| (l.groups.clone(), l.coefs.clone()))
            .unwrap_or_default();
        let t = shared(
            in_rate,
            out_rate,
            Tables {
                coefs,
                plan,
                groups,
                fall_coefs,
            },
        )?;
        let frame_covers_history = match &layout {
            Some(l) => l.frame >= l.history,
            None => frame_in >= history,
        };
        let fall = layout.map(|l| Fall {
            history: l.history,
            frame: l.frame,
            groups: &t.groups,
            coefs: &t.fall_coefs,
            stride: l.stride,
        });
        let work = fall.as_ref().map_or(len, |f| f.stride * down);
        if work > WORK_LEN {
            return Err(ResampleError::Internal);
        }
        Ok(Polyphase {
            coefs: &t.coefs,
            plan: &t.plan,
            kept: vec![0; history],
            len,
            history,
            frame_in,
            up,
            down,
            delay: half / down,
            fall,
            avx2: has_avx2(),
            quiet: true,
            frame_covers_history,
            skip_silence: true,
        })
    }

    fn reset(&mut self) {
        self.kept.fill(0);
        self.quiet = true;
    }

    /// Converts a frame. Silence in, behind silence kept, is silence out
    /// without running the filter: every output is then a sum of
    /// coefficients times zeros, ±0, which rounds to 0 (and the kept
    /// history, all zeros, stays as it is). A caller's digital silence
    /// (G.711 0xFF, a muted or VAD-gated phone) between utterances is most
    /// of its frames on an AI call.
    fn process(&mut self, input: &[i16], output: &mut [i16]) {
        let zeros = self.skip_silence && is_zeros(input);
        if zeros && self.quiet {
            output.fill(0);
            return;
        }
        self.filter(input, output);
        self.quiet = zeros && self.frame_covers_history;
    }

    fn filter(&mut self, input: &[i16], output: &mut [i16]) {
        WORK.with_borrow_mut(|work| {
            #[cfg(target_arch = "x86_64")]
            if self.avx2 {
                // SAFETY: `avx2` is set only when the CPU running us was
                // found to have AVX2 (`has_avx2`), which is all
                // `process_avx2` needs.
                #[allow(unsafe_code)]
                unsafe {
                    self.process_avx2(work, input, output);
                }
                return;
            }
            self.process_any::<false>(work, input, output);
        });
        self.keep(input);
    }

    /// Keeps the newest `history` inputs for the next frame.
    fn keep(&mut self, input: &[i16]) {
        let (h, n) = (self.kept.len(), input.len());
        if n >= h {
            self.kept.copy_from_slice(&input[n - h..]);
        } else {
            self.kept.copy_within(n.., 0);
            self.kept[h - n..].copy_from_slice(input);
        }
    }

    /// [`filter`](Self::filter) compiled for AVX2: the same operations
    /// in the same order on each sample (no fused multiply-add, which
    /// would round differently), eight lanes to a vector instead of four.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn process_avx2(&self, work: &mut [f32; WORK_LEN], input: &[i16], output: &mut [i16]) {
        self.process_any::<true>(work, input, output);
    }

    /// The conversion, inlined into each of its instruction-set builds
    /// (`WIDE`: the AVX2 one, see [`to_i16_wide`]).
    #[inline(always)]
    fn process_any<const WIDE: bool>(
        &self,
        work: &mut [f32; WORK_LEN],
        input: &[i16],
        output: &mut [i16],
    ) {
        if let Some(fall) = &self.fall {
            // A fall reads its input split by phase only.
            let Some(streams) = work.get_mut(..fall.stride * self.down) else {
                return;
            };
            fall.downsample::<WIDE>(streams, &self.kept, input, output);
            return;
        }
        let (h, n) = (self.history, self.frame_in);
        let Some(buf) = work.get_mut(..self.len.max(h + n)) else {
            return;
        };
        let (kept, rest) = buf.split_at_mut(h);
        let (frame, zeros) = rest.split_at_mut(n);
        for (f, &s) in kept.iter_mut().zip(&self.kept) {
            *f = f32::from(s);
        }
        for (f, &s) in frame.iter_mut().zip(input) {
            *f = f32::from(s);
        }
        zeros.fill(0.0);
        if self.down == 1 && n.is_multiple_of(BLOCK) {
            self.upsample::<WIDE>(buf, output);
        } else {
            self.convert::<WIDE>(buf, output);
        }
    }

    /// Any ratio: one dot product per output.
    #[inline(always)]
    fn convert<const WIDE: bool>(&self, buf: &[f32], output: &mut [i16]) {
        for (o, &(start, c, count)) in output.iter_mut().zip(self.plan) {
            *o = match count {
                // The half-band phase: the input sample as it was.
                1 => to_i16_in::<WIDE>(buf[start] * self.coefs[c]),
                _ => to_i16_in::<WIDE>(dot(&buf[start..start + count], &self.coefs[c..c + count])),
            };
        }
    }

    /// A whole-number rise (`down` = 1): outputs `r`, `r + up`, `r + 2 up`
    /// ... share a phase, and their inputs start one apart, so [`BLOCK`]
    /// of them are computed together, a coefficient at a time, with no
    /// sum across lanes per output (frames are multiples of [`BLOCK`]).
    /// Each phase's block is converted to i16 on its own (contiguous, so
    /// in vectors), then the phases are interleaved into the output.
    #[inline(always)]
    fn upsample<const WIDE: bool>(&self, buf: &[f32], output: &mut [i16]) {
        match self.up {
            2 => self.rise::<2, WIDE>(buf, output),
            3 => self.rise::<3, WIDE>(buf, output),
            6 => self.rise::<6, WIDE>(buf, output),
            up => {
                for g in (0..self.frame_in).step_by(BLOCK) {
                    for (r, &(start, c, count)) in self.plan.iter().enumerate().take(up) {
                        let mut block = [0i16; BLOCK];
                        phase_block::<WIDE>(
                            &mut block,
                            &buf[start + g..],
                            &self.coefs[c..c + count],
                        );
                        for (o, b) in output[r + g * up..].iter_mut().step_by(up).zip(block) {
                            *o = b;
                        }
                    }
                }
            }
        }
    }

    /// [`upsample`](Self::upsample) by `UP`, known to the compiler (the
    /// interleaving then runs in vectors too).
    #[inline(always)]
    fn rise<const UP: usize, const WIDE: bool>(&self, buf: &[f32], output: &mut [i16]) {
        let Some(plan) = self.plan.get(..UP) else {
            return;
        };
        let groups = (0..self.frame_in).step_by(BLOCK);
        for (g, out) in groups.zip(output.chunks_exact_mut(BLOCK * UP)) {
            let mut blocks = [[0i16; BLOCK]; UP];
            for (block, &(start, c, count)) in blocks.iter_mut().zip(plan) {
                phase_block::<WIDE>(block, &buf[start + g..], &self.coefs[c..c + count]);
            }
            for (j, o) in out.chunks_exact_mut(UP).enumerate() {
                for (r, s) in o.iter_mut().enumerate() {
                    *s = blocks[r][j];
                }
            }
        }
    }
}

/// One phase of a rise for [`BLOCK`] consecutive outputs of it, whose
/// inputs start at `src[0]`, `src[1]`, ...: the half-band phase's single
/// tap is the input sample as it was (scaled), the others a block of
/// [`accumulate`].
#[inline(always)]
fn phase_block<const WIDE: bool>(block: &mut [i16; BLOCK], src: &[f32], coefs: &[f32]) {
    if let [only] = coefs {
        for (b, &x) in block.iter_mut().zip(src) {
            *b = to_i16_in::<WIDE>(x * only);
        }
        return;
    }
    let mut acc = [0f32; BLOCK];
    accumulate(&mut acc, src, coefs);
    for (b, a) in block.iter_mut().zip(acc) {
        *b = to_i16_in::<WIDE>(a);
    }
}

impl Fall {
    /// The fall's taps, when every output of the plan uses the same
    /// coefficients from `down` inputs further on than the one before and
    /// the outputs fill whole blocks; `None` otherwise (the generic path
    /// then runs).
    fn layout(
        plan: &[(usize, usize, usize)],
        coefs: &[f32],
        up: usize,
        down: usize,
        len: usize,
        history: usize,
        frame_in: usize,
    ) -> Option<FallLayout> {
        let &(start, c, count) = plan.first()?;
        let regular = plan
            .iter()
            .enumerate()
            .all(|(b, &(s, cb, nb))| s == start + b * down && cb == c && nb == count);
        let whole = history.is_multiple_of(down) && frame_in.is_multiple_of(down);
        if up != 1 || down < 2 || !plan.len().is_multiple_of(BLOCK) || !regular || !whole {
            return None;
        }
        let row = coefs.get(c..c + count)?;
        let stride = len.div_ceil(down);
        let mut groups = Vec::with_capacity(down);
        let mut by_stream = Vec::with_capacity(count);
        // Tap k reads stream (start + k) % down at (start + k) / down.
        for k0 in 0..down.min(count) {
            let at = start + k0;
            let taps = row.iter().skip(k0).step_by(down);
            groups.push((
                (at % down) * stride + at / down,
                by_stream.len(),
                taps.len(),
            ));
            by_stream.extend(taps);
        }
        Some(FallLayout {
            history: history / down,
            frame: frame_in / down,
            groups,
            coefs: by_stream,
            stride,
        })
    }

    /// Splits the kept history and a frame of input behind it by phase
    /// into `phases` (stream `p` at `p * stride`: history, frame, then
    /// zeros, which is all a fall reads), and computes the outputs
    /// [`BLOCK`] at a time.
    #[inline(always)]
    fn downsample<const WIDE: bool>(
        &self,
        phases: &mut [f32],
        kept: &[i16],
        input: &[i16],
        output: &mut [i16],
    ) {
        let (h, n, stride) = (self.history, self.frame, self.stride);
        match phases.len() / stride {
            2 => {
                deinterleave::<2>(phases, stride, 0, kept);
                deinterleave::<2>(phases, stride, h, input);
            }
            3 => {
                deinterleave::<3>(phases, stride, 0, kept);
                deinterleave::<3>(phases, stride, h, input);
            }
            6 => {
                deinterleave::<6>(phases, stride, 0, kept);
                deinterleave::<6>(phases, stride, h, input);
            }
            down => {
                for (p, phase) in phases.chunks_exact_mut(stride).enumerate() {
                    let kept = kept.iter().skip(p).step_by(down);
                    let inputs = input.iter().skip(p).step_by(down);
                    for (d, &x) in phase.iter_mut().zip(kept.chain(inputs)) {
                        *d = f32::from(x);
                    }
                }
            }
        }
        for phase in phases.chunks_exact_mut(stride) {
            if let Some(zeros) = phase.get_mut(h + n..) {
                zeros.fill(0.0);
            }
        }
        for (g, out) in output.chunks_exact_mut(BLOCK).enumerate() {
            let mut acc = [0f32; BLOCK];
            for &(at, c, count) in self.groups {
                accumulate(
                    &mut acc,
                    &phases[at + g * BLOCK..],
                    &self.coefs[c..c + count],
                );
            }
            for (o, a) in out.iter_mut().zip(acc) {
                *o = to_i16_in::<WIDE>(a);
            }
        }
    }
}

/// `input[m * D + p]` to `phases[p * stride + at + m]`, with the fall's
/// factor `D` known to the compiler (a loop per phase with a runtime
/// stride cost a third of a 24 to 8 kHz frame).
#[inline(always)]
fn deinterleave<const D: usize>(phases: &mut [f32], stride: usize, at: usize, input: &[i16]) {
    for (i, c) in input.chunks_exact(D).enumerate() {
        for (p, &x) in c.iter().enumerate() {
            phases[p * stride + at + i] = f32::from(x);
        }
    }
}

/// Adds `coefs[k] * src[k + l]` to lane `l` of `acc`, for each tap `k` in
/// order: [`BLOCK`] outputs whose inputs start one apart.
#[inline(always)]
fn accumulate(acc: &mut [f32; BLOCK], src: &[f32], coefs: &[f32]) {
    for (xs, &cv) in src.windows(BLOCK).zip(coefs) {
        for (a, &x) in acc.iter_mut().zip(xs) {
            *a += cv * x;
        }
    }
}

/// A dot product in [`LANES`] independent sums, which the compiler turns
/// into vector instructions, then the remainder.
#[inline(always)]
fn dot(x: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (xs, cs) = (x.chunks_exact(LANES), c.chunks_exact(LANES));
    let rest: f32 = xs
        .remainder()
        .iter()
        .zip(cs.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (xs, cs) in xs.zip(cs) {
        for l in 0..LANES {
            acc[l] += xs[l] * cs[l];
        }
    }
    acc.iter().sum::<f32>() + rest
}

impl Resampler {
    pub fn new(in_rate: u32, out_rate: u32) -> Result<Self, ResampleError> {
        for r in [in_rate, out_rate] {
            if !SUPPORTED_RATES.contains(&r) {
                return Err(ResampleError::UnsupportedRate(r));
            }
        }
        let inner = if in_rate == out_rate {
            None
        } else {
            Some(Polyphase::new(in_rate, out_rate)?)
        };
        Ok(Resampler {
            in_rate,
            out_rate,
            inner,
        })
    }

    pub fn input_len(&self) -> usize {
        frame_len(self.in_rate)
    }
    pub fn output_len(&self) -> usize {
        frame_len(self.out_rate)
    }
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }
    pub fn out_rate(&self) -> u32 {
        self.out_rate
    }

    /// Output samples by which the output lags the input.
    pub fn delay(&self) -> usize {
        self.inner.as_ref().map_or(0, |r| r.delay)
    }

    /// Forgets the history (after a flush or a source change).
    pub fn reset(&mut self) {
        if let Some(r) = &mut self.inner {
            r.reset();
        }
    }

    /// Converts one 20 ms frame.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> Result<(), ResampleError> {
        let (il, ol) = (self.input_len(), self.output_len());
        if input.len() != il {
            return Err(ResampleError::FrameLength {
                got: input.len(),
                expected: il,
            });
        }
        if output.len() != ol {
            return Err(ResampleError::FrameLength {
                got: output.len(),
                expected: ol,
            });
        }
        match &mut self.inner {
            None => output.copy_from_slice(input),
            Some(p) => p.process(input, output),
        }
        Ok(())
    }
}

/// Whether every sample is zero: an OR over the frame (no early exit,
/// which would keep it from running in vectors).
fn is_zeros(input: &[i16]) -> bool {
    input.iter().fold(0u16, |acc, &s| acc | s as u16) == 0
}

/// A sample in [-1, 1) to i16, rounded half away from zero and clamped.
/// Adding ±0.5 before the (truncating, saturating) cast rounds without
/// `f32::round`, which is a libm call on x86-64 without SSE4.1 (0.7% of
/// the switch's CPU on AI calls, two frames per call every 20 ms).
#[inline(always)]
fn to_i16(f: f32) -> i16 {
    let v = f * 32768.0;
    (v + 0.5f32.copysign(v)) as i16
}

/// [`to_i16`] (`WIDE` false) or [`to_i16_wide`].
#[inline(always)]
fn to_i16_in<const WIDE: bool>(f: f32) -> i16 {
    if WIDE { to_i16_wide(f) } else { to_i16(f) }
}

/// [`to_i16`]'s result, in operations that have vector forms with
/// SSE4.1 (in the AVX2 build): the saturating cast is one scalar
/// conversion per sample with its range and NaN checks, even in a loop.
/// Truncated and clamped, the value is a whole number within i16, which
/// 1.5 × 2^23 added puts in the low bits of the float's own bits (every
/// float from 2^23 to 2^24 is a whole number); NaN goes to 0 as the cast
/// sends it. Without SSE4.1 `trunc` is a libm call, hence two forms.
#[inline(always)]
fn to_i16_wide(f: f32) -> i16 {
    const MAGIC: f32 = 12_582_912.0;
    let v = f * 32768.0;
    let t = v + 0.5f32.copysign(v);
    let t = if t.is_nan() { 0.0 } else { t };
    let whole = t.trunc().clamp(-32768.0, 32767.0);
    ((whole + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goertzel::{power_i16, sine};

    /// Runs `frames` frames of a sine through and returns the output after
    /// the first frames (past the delay).
    fn run(in_rate: u32, out_rate: u32, freq: f32, frames: usize) -> Vec<i16> {
        let mut r = Resampler::new(in_rate, out_rate).unwrap();
        let x = sine(freq, in_rate, 12_000.0, frame_len(in_rate) * frames, 0);
        let mut out = vec![0i16; frame_len(out_rate) * frames];
        for (i, o) in x
            .chunks_exact(frame_len(in_rate))
            .zip(out.chunks_exact_mut(frame_len(out_rate)))
        {
            r.process(i, o).unwrap();
        }
        out.split_off(frame_len(out_rate) * 2)
    }

    #[test]
    fn dominant_frequency_survives_every_pair() {
        for &a in &SUPPORTED_RATES {
            for &b in &SUPPORTED_RATES {
                let tone = 1_000.0;
                let y = run(a, b, tone, 10);
                let on = power_i16(&y, tone, b as f32);
                // Amplitude preserved within ~1 dB: (a*n/2)^2.
                let ideal = (12_000.0 * y.len() as f32 / 2.0).powi(2);
                assert!(
                    on > ideal * 0.8 && on < ideal * 1.25,
                    "{a}->{b}: {on} vs {ideal}"
                );
                for off in [400.0, 700.0, 1_500.0, 2_500.0, 3_500.0] {
                    let p = power_i16(&y, off, b as f32);
                    assert!(p < on / 300.0, "{a}->{b}: {off} Hz has {p}, tone {on}");
                }
            }
        }
    }

    #[test]
    fn downsampling_removes_what_cannot_be_represented() {
        // 6 kHz at 48 kHz cannot exist at 8 kHz: it must be filtered out,
        // not folded to 2 kHz.
        let y = run(48_000, 8_000, 6_000.0, 10);
        let folded = power_i16(&y, 2_000.0, 8_000.0);
        let ideal = (12_000.0 * y.len() as f32 / 2.0).powi(2);
        assert!(folded < ideal / 1_000.0, "alias {folded}");
    }

    #[test]
    fn the_delay_is_where_an_impulse_comes_out_and_a_few_ms_at_most() {
        for (a, b) in [
            (8_000, 16_000),
            (24_000, 8_000),
            (16_000, 24_000),
            (48_000, 8_000),
        ] {
            let mut r = Resampler::new(a, b).unwrap();
            let (il, ol) = (r.input_len(), r.output_len());
            // An impulse on an output sample's instant (every input sample
            // at index 0 of a frame is one), three frames in.
            let mut out = Vec::new();
            for f in 0..5 {
                let mut x = vec![0i16; il];
                if f == 3 {
                    x[0] = 20_000;
                }
                let mut y = vec![0i16; ol];
                r.process(&x, &mut y).unwrap();
                out.extend(y);
            }
            let peak = (0..out.len())
                .max_by_key(|&i| out[i].unsigned_abs())
                .unwrap();
            assert_eq!(peak, 3 * ol + r.delay(), "{a}->{b}");
            assert!(
                r.delay() * 1000 / b as usize <= 3,
                "{a}->{b}: {}",
                r.delay()
            );
            // Forgotten after a reset.
            r.reset();
            let mut y = vec![0i16; ol];
            r.process(&vec![0; il], &mut y).unwrap();
            assert!(y.iter().all(|&s| s == 0));
        }
    }

    #[test]
    fn rises_computed_in_lanes_match_one_dot_product_per_output() {
        for (a, b) in [
            (8_000, 16_000),
            (8_000, 24_000),
            (16_000, 48_000),
            (8_000, 48_000),
        ] {
            let p = Polyphase::new(a, b).unwrap();
            let il = frame_len(a);
            let x: Vec<i16> = (0..il * 4)
                .map(|i| ((i * 7919) % 20_001) as i16 - 10_000)
                .collect();
            let mut buf = vec![0f32; p.len];
            for f in x.chunks_exact(il) {
                for (d, &s) in buf[p.history..p.history + il].iter_mut().zip(f) {
                    *d = f32::from(s);
                }
                let mut lanes = vec![0i16; frame_len(b)];
                let mut each = vec![0i16; frame_len(b)];
                p.upsample::<false>(&buf, &mut lanes);
                p.convert::<false>(&buf, &mut each);
                for (i, (l, e)) in lanes.iter().zip(&each).enumerate() {
                    assert!((l - e).abs() <= 1, "{a}->{b} sample {i}: {l} vs {e}");
                }
                buf.copy_within(il..il + p.history, 0);
            }
        }
    }

    #[test]
    fn the_vector_friendly_conversion_gives_the_casts_result() {
        let same = |f: f32| {
            assert_eq!(to_i16_wide(f), to_i16(f), "{f} ({:#x})", f.to_bits());
        };
        for f in [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
        ] {
            same(f);
        }
        // Every half-step tie and its neighbours over the whole range.
        for i in -70_000i32..70_000 {
            let f = i as f32 / 65_536.0;
            for g in [
                f,
                f32::from_bits(f.to_bits() + 1),
                f32::from_bits(f.to_bits().wrapping_sub(1)),
            ] {
                same(g);
            }
        }
        // Bit patterns across all of f32 (NaNs with payloads included).
        for bits in (0..=u32::MAX).step_by(4099) {
            same(f32::from_bits(bits));
        }
    }

    #[test]
    fn the_avx2_build_gives_the_generic_builds_samples() {
        if !has_avx2() {
            return;
        }
        for &a in &SUPPORTED_RATES {
            for &b in &SUPPORTED_RATES {
                if a == b {
                    continue;
                }
                let mut wide = Polyphase::new(a, b).unwrap();
                let mut narrow = Polyphase::new(a, b).unwrap();
                assert!(wide.avx2);
                narrow.avx2 = false;
                let il = frame_len(a);
                // Speech-like and full-scale noise, which clamps.
                let x: Vec<i16> = (0..il * 6)
                    .map(|i| {
                        let noise = ((i * 7919 + 13) % 65_536) as i32 - 32_768;
                        if (i / il).is_multiple_of(2) {
                            noise as i16
                        } else {
                            ((i as f32 * 0.37).sin() * 20_000.0) as i16
                        }
                    })
                    .collect();
                for f in x.chunks_exact(il) {
                    let mut w = vec![0i16; frame_len(b)];
                    let mut n = vec![0i16; frame_len(b)];
                    wide.process(f, &mut w);
                    narrow.process(f, &mut n);
                    assert_eq!(w, n, "{a}->{b}");
                }
            }
        }
    }

    #[test]
    fn silence_skipped_gives_the_filters_samples() {
        for &a in &SUPPORTED_RATES {
            for &b in &SUPPORTED_RATES {
                if a == b {
                    continue;
                }
                let mut skip = Polyphase::new(a, b).unwrap();
                let mut run = Polyphase::new(a, b).unwrap();
                run.skip_silence = false;
                assert!(skip.frame_covers_history, "{a}->{b}");
                let il = frame_len(a);
                let zeros = vec![0i16; il];
                let sound: Vec<i16> = (0..il)
                    .map(|i| ((i as f32 * 0.37).sin() * 20_000.0) as i16)
                    .collect();
                // One sample at the frame's end: the kept history is not
                // silent after it.
                let mut click = vec![0i16; il];
                click[il - 1] = -1;
                let mut skipped = 0;
                for (f, frame) in [
                    &zeros, &zeros, &sound, &zeros, &zeros, &click, &zeros, &zeros, &sound,
                ]
                .into_iter()
                .enumerate()
                {
                    if f == 8 {
                        // Sound then a reset: silence again at once.
                        skip.reset();
                        run.reset();
                        assert!(skip.quiet);
                    }
                    let mut s = vec![1i16; frame_len(b)];
                    let mut r = vec![1i16; frame_len(b)];
                    skipped += usize::from(skip.quiet && frame == &zeros);
                    skip.process(frame, &mut s);
                    run.process(frame, &mut r);
                    assert_eq!(s, r, "{a}->{b} frame {f}");
                }
                // Frames 0, 1, 4 and 7 (not 3 or 6, after sound).
                assert_eq!(skipped, 4, "{a}->{b}");
                assert!(!skip.quiet, "{a}->{b}: sound last");
            }
        }
    }

    #[test]
    fn falls_computed_in_blocks_match_one_dot_product_per_output() {
        for (a, b) in [
            (16_000, 8_000),
            (24_000, 8_000),
            (48_000, 8_000),
            (48_000, 16_000),
            (48_000, 24_000),
        ] {
            let p = Polyphase::new(a, b).unwrap();
            let fall = p.fall.as_ref().expect("a fall");
            let il = frame_len(a);
            let x: Vec<i16> = (0..il * 4)
                .map(|i| ((i * 7919) % 20_001) as i16 - 10_000)
                .collect();
            let mut differ = 0;
            let mut buf = vec![0f32; p.len];
            // Dirty, as another resampler of the thread leaves it.
            let mut streams = vec![f32::NAN; fall.stride * p.down];
            let mut kept = vec![0i16; p.history];
            for f in x.chunks_exact(il) {
                for (d, &s) in buf[p.history..p.history + il].iter_mut().zip(f) {
                    *d = f32::from(s);
                }
                let mut blocks = vec![0i16; frame_len(b)];
                let mut each = vec![0i16; frame_len(b)];
                fall.downsample::<false>(&mut streams, &kept, f, &mut blocks);
                p.convert::<false>(&buf, &mut each);
                kept.copy_from_slice(&f[il - p.history..]);
                for (i, (l, e)) in blocks.iter().zip(&each).enumerate() {
                    // The same products summed in another order: at most
                    // a rounding step apart.
                    assert!((l - e).abs() <= 1, "{a}->{b} sample {i}: {l} vs {e}");
                    differ += usize::from(l != e);
                }
                buf.copy_within(il..il + p.history, 0);
            }
            assert!(
                differ * 20 < x.len() / (a / b) as usize,
                "{a}->{b}: {differ}"
            );
        }
        // 16 <-> 24 kHz is neither a rise nor a fall.
        assert!(Polyphase::new(24_000, 16_000).unwrap().fall.is_none());
        assert!(Polyphase::new(16_000, 24_000).unwrap().fall.is_none());
    }

    #[test]
    fn doubling_the_rate_keeps_every_input_sample_as_it_was() {
        let mut r = Resampler::new(8_000, 16_000).unwrap();
        let x: Vec<i16> = (0..1600)
            .map(|i| ((i * 7919) % 20_001 - 10_000) as i16)
            .collect();
        let mut y = Vec::new();
        for f in x.chunks_exact(160) {
            let mut o = [0i16; 320];
            r.process(f, &mut o).unwrap();
            y.extend(o);
        }
        let d = r.delay();
        assert_eq!(d, 32, "2 ms at 16 kHz");
        for (i, &s) in x.iter().enumerate().take((y.len() - d) / 2) {
            assert_eq!(y[2 * i + d], s, "sample {i}");
        }
    }

    #[test]
    fn speech_band_passes_flat_and_the_band_edge_is_stopped() {
        // 3 kHz (inside the phone band) keeps its level 8k -> 16k -> 8k;
        // 4.5 kHz at 16 kHz cannot go to 8 kHz and is stopped, not folded
        // to 3.5 kHz.
        let ideal = |n: usize| (12_000.0 * n as f32 / 2.0).powi(2);
        let y = run(8_000, 16_000, 3_000.0, 10);
        let p = power_i16(&y, 3_000.0, 16_000.0);
        assert!(p > ideal(y.len()) * 0.8 && p < ideal(y.len()) * 1.25, "{p}");
        let y = run(16_000, 8_000, 4_500.0, 10);
        let folded = power_i16(&y, 3_500.0, 8_000.0);
        assert!(folded < ideal(y.len()) / 10_000.0, "alias {folded}");
    }

    #[test]
    fn samples_round_half_away_from_zero_and_clamp() {
        for (f, want) in [
            (0.0, 0),
            (0.4 / 32768.0, 0),
            (0.6 / 32768.0, 1),
            (-0.6 / 32768.0, -1),
            (1.5 / 32768.0, 2),
            (-1.5 / 32768.0, -2),
            (100.25 / 32768.0, 100),
            (1.0, 32767),
            (2.0, 32767),
            (-1.0, -32768),
            (-3.0, -32768),
            (f32::NAN, 0),
        ] {
            assert_eq!(to_i16(f), want, "{f}");
        }
        // Agrees with round-then-clamp over a sweep of the range.
        for i in -70_000..70_000 {
            let f = i as f32 / 65_536.0 + 1.0 / 262_144.0;
            let old = (f * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
            assert_eq!(to_i16(f), old, "{f}");
        }
    }

    #[test]
    fn frame_counts_and_errors() {
        let mut r = Resampler::new(8_000, 48_000).unwrap();
        assert_eq!((r.input_len(), r.output_len()), (160, 960));
        assert!(r.delay() > 0 && r.delay() <= 480, "{}", r.delay());
        let mut out = [0i16; 960];
        assert_eq!(
            r.process(&[0; 159], &mut out),
            Err(ResampleError::FrameLength {
                got: 159,
                expected: 160
            })
        );
        assert!(r.process(&[0; 160], &mut out[..959]).is_err());
        // 100 frames in, 100 frames out.
        let mut produced = 0;
        for _ in 0..100 {
            r.process(&[0; 160], &mut out).unwrap();
            produced += out.len();
        }
        assert_eq!(produced, 96_000);
        assert!(matches!(
            Resampler::new(44_100, 8_000),
            Err(ResampleError::UnsupportedRate(44_100))
        ));
        // Same rate is a copy.
        let mut same = Resampler::new(16_000, 16_000).unwrap();
        let x: Vec<i16> = (0..320).map(|i| i as i16).collect();
        let mut y = [0i16; 320];
        same.process(&x, &mut y).unwrap();
        assert_eq!(&y[..], &x[..]);
        assert_eq!(same.delay(), 0);
    }
    /// FNV-1a over samples.
    fn fnv(mut h: u64, s: &[i16]) -> u64 {
        for &x in s {
            for b in x.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        h
    }

    /// Frame `k` of a test signal at `rate`: silence, a click, speech-like
    /// tones and full-scale noise (which clamps), in turn.
    fn test_frame(rate: u32, k: usize) -> Vec<i16> {
        let n = frame_len(rate);
        (0..n)
            .map(|i| {
                let t = (k * n + i) as f32 / rate as f32;
                match k % 5 {
                    0 => 0,
                    1 => i16::from(i == n / 3) * 9_000,
                    2 | 3 => ((t * 2_199.0).sin() * 12_000.0 + (t * 900.0).sin() * 9_000.0) as i16,
                    _ => (((k * n + i) * 7919 + 13) % 65_536) as i32 as i16,
                }
            })
            .collect()
    }

    /// Every pair's output of 40 frames, hashed, with another resampler
    /// (of a longer filter) run between its frames on the same thread.
    fn pair_hashes() -> Vec<(u32, u32, u64)> {
        let mut out = Vec::new();
        for &a in &SUPPORTED_RATES {
            for &b in &SUPPORTED_RATES {
                if a == b {
                    continue;
                }
                let mut r = Resampler::new(a, b).unwrap();
                let mut other = if (a, b) == (48_000, 8_000) {
                    Resampler::new(8_000, 48_000).unwrap()
                } else {
                    Resampler::new(48_000, 8_000).unwrap()
                };
                let mut junk = vec![0i16; other.output_len()];
                let mut y = vec![0i16; r.output_len()];
                let mut h = 0xcbf2_9ce4_8422_2325u64;
                for k in 0..40 {
                    r.process(&test_frame(a, k), &mut y).unwrap();
                    h = fnv(h, &y);
                    other
                        .process(&test_frame(other.in_rate(), k + 3), &mut junk)
                        .unwrap();
                }
                out.push((a, b, h));
            }
        }
        out
    }

    #[test]
    fn every_pair_gives_the_samples_it_gave_with_buffers_of_its_own() {
        // Computed at 2db5c03, when each resampler filtered in f32
        // buffers of its own (not the thread's `WORK`) and silence went
        // through the filter.
        let before: [(u32, u32, u64); 12] = [
            (8000, 16000, 0xac3fc6bb884c1469),
            (8000, 24000, 0x59702d531efa4656),
            (8000, 48000, 0x6bb6c192b062c427),
            (16000, 8000, 0xf0b5cb76d0e7e4cf),
            (16000, 24000, 0xaa280c345918f8ba),
            (16000, 48000, 0x807397f4a6c98e04),
            (24000, 8000, 0xf6655d4f1378d24c),
            (24000, 16000, 0x3a315b1a2f3a3a40),
            (24000, 48000, 0xbffff55556655562),
            (48000, 8000, 0x6772301c88fa400f),
            (48000, 16000, 0xd3e20785cc0d6839),
            (48000, 24000, 0xe6c392c846703924),
        ];
        assert_eq!(pair_hashes(), before.to_vec());
    }
}
