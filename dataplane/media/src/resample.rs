//! Sample-rate conversion of 20 ms mono frames with rubato's FFT resampler.
//!
//! Both sides are fixed at one 20 ms frame (160 samples at 8 kHz, 320 at
//! 16 kHz, 480 at 24 kHz, 960 at 48 kHz), which the supported rate pairs
//! allow exactly. All buffers are allocated in [`Resampler::new`]; a call to
//! [`Resampler::process`] converts i16 to f32 in place, runs one FFT block
//! and converts back, without allocating. The FFT block is the whole frame,
//! so the delay is half a frame (10 ms) of output.

use rubato::audioadapter::{Adapter, AdapterMut};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};
use thiserror::Error;

/// Sample rates the media path converts between.
pub const SUPPORTED_RATES: [u32; 4] = [8_000, 16_000, 24_000, 48_000];

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
    /// rubato refused (should not happen with the sizes checked above).
    #[error("resampler failure")]
    Internal,
}

/// A 20 ms mono frame converter between two supported rates.
pub struct Resampler {
    in_rate: u32,
    out_rate: u32,
    inner: Option<Box<Fft<f32>>>,
    in_buf: Vec<f32>,
    out_buf: Vec<f32>,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("in_rate", &self.in_rate)
            .field("out_rate", &self.out_rate)
            .finish()
    }
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
            let fft = Fft::<f32>::new(
                in_rate as usize,
                out_rate as usize,
                frame_len(in_rate),
                1,
                FixedSync::Both,
            )
            .map_err(|_| ResampleError::Internal)?;
            if fft.input_frames_next() != frame_len(in_rate)
                || fft.output_frames_next() != frame_len(out_rate)
            {
                return Err(ResampleError::Internal);
            }
            Some(Box::new(fft))
        };
        Ok(Resampler {
            in_rate,
            out_rate,
            inner,
            in_buf: vec![0.0; frame_len(in_rate)],
            out_buf: vec![0.0; frame_len(out_rate)],
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
        self.inner.as_ref().map_or(0, |r| r.output_delay())
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
        let Some(fft) = &mut self.inner else {
            output.copy_from_slice(input);
            return Ok(());
        };
        for (f, &s) in self.in_buf.iter_mut().zip(input) {
            *f = f32::from(s) * (1.0 / 32768.0);
        }
        let inp =
            InterleavedSlice::new(&self.in_buf[..], 1, il).map_err(|_| ResampleError::Internal)?;
        let mut out = InterleavedSlice::new_mut(&mut self.out_buf[..], 1, ol)
            .map_err(|_| ResampleError::Internal)?;
        let (_, written) = fft
            .process_into_buffer(
                &inp as &dyn Adapter<f32>,
                &mut out as &mut dyn AdapterMut<f32>,
                None,
            )
            .map_err(|_| ResampleError::Internal)?;
        if written != ol {
            return Err(ResampleError::Internal);
        }
        for (s, &f) in output.iter_mut().zip(&self.out_buf) {
            *s = to_i16(f);
        }
        Ok(())
    }
}

/// A sample in [-1, 1) to i16, rounded half away from zero and clamped.
/// Adding ±0.5 before the (truncating, saturating) cast rounds without
/// `f32::round`, which is a libm call on x86-64 without SSE4.1 (0.7% of
/// the switch's CPU on AI calls, two frames per call every 20 ms).
#[inline]
fn to_i16(f: f32) -> i16 {
    let v = f * 32768.0;
    (v + 0.5f32.copysign(v)) as i16
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
}
