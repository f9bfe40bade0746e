//! The Goertzel algorithm: the power of one frequency in a block of samples,
//! at the cost of one multiply-add per sample. Used by the in-band DTMF
//! detector and by tests that check a signal's frequency content.

/// Power of `freq` Hz in `samples` at `rate` Hz (non-integer bins allowed).
/// For a sine of amplitude `a` exactly on the frequency the result is about
/// `(a * n / 2)^2`.
pub fn power(samples: &[f32], freq: f32, rate: f32) -> f32 {
    let coeff = 2.0 * (2.0 * std::f32::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The Goertzel coefficient of `freq` at `rate`.
pub fn coefficient(freq: f32, rate: f32) -> f32 {
    2.0 * (2.0 * std::f32::consts::PI * freq / rate).cos()
}

/// Powers of eight frequencies (given by their [`coefficient`]s) in one
/// pass over the samples: the eight recurrences run side by side, which
/// the compiler turns into vector operations.
pub fn power_bank8(samples: &[f32], coeffs: &[f32; 8]) -> [f32; 8] {
    let mut s1 = [0f32; 8];
    let mut s2 = [0f32; 8];
    for &x in samples {
        for k in 0..8 {
            let s0 = x + coeffs[k] * s1[k] - s2[k];
            s2[k] = s1[k];
            s1[k] = s0;
        }
    }
    let mut out = [0f32; 8];
    for k in 0..8 {
        out[k] = s1[k] * s1[k] + s2[k] * s2[k] - coeffs[k] * s1[k] * s2[k];
    }
    out
}

/// Power of `freq` in 16-bit PCM.
pub fn power_i16(samples: &[i16], freq: f32, rate: f32) -> f32 {
    let coeff = 2.0 * (2.0 * std::f32::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &x in samples {
        let s0 = f32::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

#[cfg(test)]
pub(crate) fn sine(freq: f32, rate: u32, amplitude: f32, len: usize, phase0: usize) -> Vec<i16> {
    (0..len)
        .map(|i| {
            let t = (i + phase0) as f32 / rate as f32;
            (amplitude * (2.0 * std::f32::consts::PI * freq * t).sin()).round() as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_out_the_tone() {
        let x = sine(1000.0, 8000, 10_000.0, 400, 0);
        let on = power_i16(&x, 1000.0, 8000.0);
        let expected = (10_000.0 * 400.0 / 2.0f32).powi(2);
        assert!((on / expected - 1.0).abs() < 0.05, "{on} vs {expected}");
        for off in [500.0, 1200.0, 2000.0, 3000.0] {
            assert!(power_i16(&x, off, 8000.0) < on / 1000.0, "{off}");
        }
        let f: Vec<f32> = x.iter().map(|&s| f32::from(s)).collect();
        assert!((power(&f, 1000.0, 8000.0) / on - 1.0).abs() < 1e-3);
        let freqs = [500.0, 700.0, 1000.0, 1200.0, 1500.0, 2000.0, 3000.0, 3500.0];
        let coeffs = freqs.map(|f| coefficient(f, 8000.0));
        let bank = power_bank8(&f, &coeffs);
        for (p, fr) in bank.iter().zip(freqs) {
            let single = power(&f, fr, 8000.0);
            assert!((p - single).abs() <= single.abs() * 1e-4 + 1.0, "{fr}");
        }
    }
}
