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
    power_bank(samples, coeffs)
}

/// Powers of `N` frequencies in one pass, as [`power_bank8`], each
/// computed exactly as there. Each recurrence waits on its own previous
/// step (a multiply and two adds), so more of them side by side keep the
/// vector units busy where eight leave them waiting on that latency.
pub fn power_bank<const N: usize>(samples: &[f32], coeffs: &[f32; N]) -> [f32; N] {
    let mut s1 = [0f32; N];
    let mut s2 = [0f32; N];
    for &x in samples {
        for k in 0..N {
            let s0 = x + coeffs[k] * s1[k] - s2[k];
            s2[k] = s1[k];
            s1[k] = s0;
        }
    }
    let mut out = [0f32; N];
    for k in 0..N {
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

    #[test]
    fn wider_banks_give_each_frequency_the_power_of_eight_wide_ones() {
        let x: Vec<f32> = sine(1_210.0, 16_000, 9_000.0, 320, 3)
            .iter()
            .zip(sine(230.0, 16_000, 7_000.0, 320, 0))
            .map(|(&a, b)| f32::from(a) + f32::from(b))
            .collect();
        let coeffs: [f32; 32] =
            std::array::from_fn(|k| coefficient(500.0 + 50.0 * k as f32, 16_000.0));
        let mut eights = Vec::new();
        for c in coeffs.chunks_exact(8) {
            eights.extend(power_bank8(&x, c.try_into().unwrap()));
        }
        let mut sixteens = Vec::new();
        for c in coeffs.chunks_exact(16) {
            sixteens.extend(power_bank::<16>(&x, c.try_into().unwrap()));
        }
        // Bit for bit: the same operations per frequency, only more of
        // them side by side.
        assert_eq!(eights, sixteens);
        assert_eq!(eights, power_bank(&x, &coeffs).to_vec());
        let top = (0..32).max_by(|&a, &b| eights[a].total_cmp(&eights[b]));
        assert_eq!(top, Some(14), "1,200 Hz bin");
    }
}
