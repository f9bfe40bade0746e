//! Capped exponential backoff with jitter, for reconnecting to a switch
//! node. Pure: the random draw is passed in, so tests pin it.

use std::time::Duration;

/// First wait after a failure.
pub const BASE: Duration = Duration::from_millis(200);
/// Longest wait between tries.
pub const CAP: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BASE, CAP)
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// A try succeeded: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait after one more failure: `min(cap, base·2ⁿ)`, of which the
    /// upper half is scaled by `unit` (a uniform draw in [0, 1]), so nodes
    /// that failed together do not all retry in the same instant, and the
    /// wait never drops below half the step.
    pub fn next_with(&mut self, unit: f64) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// `next_with` with a draw from the OS RNG.
    pub fn next_delay(&mut self) -> Duration {
        let bytes = crate::crypto::random_bytes::<4>();
        let unit = f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX);
        self.next_with(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        assert_eq!(b.next_with(1.0), Duration::from_millis(100));
        assert_eq!(b.next_with(1.0), Duration::from_millis(200));
        assert_eq!(b.next_with(0.0), Duration::from_millis(200));
        assert_eq!(b.next_with(0.5), Duration::from_millis(600));
        for _ in 0..100 {
            let d = b.next_with(1.0);
            assert_eq!(d, Duration::from_millis(1000), "capped");
        }
        assert_eq!(b.next_with(0.0), Duration::from_millis(500));
        b.reset();
        assert_eq!(b.next_with(1.0), Duration::from_millis(100));
        // Draws outside [0, 1] are clamped.
        assert_eq!(b.next_with(7.0), Duration::from_millis(200));
    }

    #[test]
    fn os_draws_stay_in_bounds() {
        let mut b = Backoff::default();
        for _ in 0..50 {
            let d = b.next_delay();
            assert!(d >= BASE / 2 && d <= CAP, "{d:?}");
        }
    }
}
