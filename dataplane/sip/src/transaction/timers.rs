//! Timer values: T1, T2, T4 and the timers RFC 3261 §17 (table 4 in
//! Appendix A) and RFC 6026 derive from them, and the backoff that drives
//! retransmissions.
//!
//! Who doubles and who caps is easy to get wrong, so here it is once:
//! Timer A (INVITE request) starts at T1 and doubles with **no cap**
//! (§17.1.1.2), so an INVITE goes out at 0, T1, 3·T1, 7·T1, ... until Timer
//! B; Timer E (non-INVITE request) and Timer G (INVITE final response)
//! start at T1 and double up to **T2** (§17.1.2.2, §17.2.1); E in the
//! Proceeding state fires every T2.

use std::time::{Duration, Instant};

/// The three base values of §17 (Appendix A). Every other timer is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate; 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE
    /// responses; 4 s by default.
    pub t2: Duration,
    /// Maximum time a message stays in the network; 5 s by default.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self::RFC3261
    }
}

/// Bounds applied by [`Timers::sanitized`]: a zero T1 would retransmit in
/// a busy loop, and an hour-long one is a configuration error whose 64·T1
/// products would keep transactions for days.
const MIN_BASE: Duration = Duration::from_millis(1);
const MAX_BASE: Duration = Duration::from_secs(3600);

/// Timer D for unreliable transports: "at least 32 seconds" (§17.1.1.2).
const D_UNRELIABLE: Duration = Duration::from_secs(32);

/// §17.2.1: send 100 Trying if the TU has not answered within 200 ms.
pub(crate) const TRYING_DELAY: Duration = Duration::from_millis(200);

impl Timers {
    /// The RFC 3261 recommended values: T1 500 ms, T2 4 s, T4 5 s.
    pub const RFC3261: Self = Self {
        t1: Duration::from_millis(500),
        t2: Duration::from_secs(4),
        t4: Duration::from_secs(5),
    };

    /// The values clamped to 1 ms ..= 1 h, with T2 at least T1.
    pub fn sanitized(self) -> Self {
        let t1 = self.t1.clamp(MIN_BASE, MAX_BASE);
        Self {
            t1,
            t2: self.t2.clamp(t1, MAX_BASE),
            t4: self.t4.clamp(MIN_BASE, MAX_BASE),
        }
    }

    /// 64·T1: Timers B, F, H, L, M, and J on unreliable transports.
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D: at least 32 s (and at least 64·T1, so a large T1 still
    /// covers the server's retransmissions), zero on reliable transports.
    pub fn d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            D_UNRELIABLE.max(self.timeout())
        }
    }

    /// Timer I (ACK retransmissions) and Timer K (response
    /// retransmissions): T4, zero on reliable transports.
    pub fn i_k(&self, reliable: bool) -> Duration {
        if reliable { Duration::ZERO } else { self.t4 }
    }

    /// Timer J: 64·T1, zero on reliable transports.
    pub fn j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.timeout()
        }
    }
}

/// The timers, by their RFC names, for events and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmit (client, Calling, unreliable).
    A,
    /// INVITE transaction timeout (client, Calling).
    B,
    /// Wait for response retransmits (client INVITE, Completed).
    D,
    /// Non-INVITE request retransmit (client, unreliable).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE final response retransmit (server, Completed, unreliable).
    G,
    /// Wait for ACK (server INVITE, Completed).
    H,
    /// Wait for ACK retransmits (server INVITE, Confirmed).
    I,
    /// Wait for request retransmits (server non-INVITE, Completed).
    J,
    /// Wait for response retransmits (client non-INVITE, Completed).
    K,
    /// Wait for INVITE retransmits after a 2xx (server, Accepted; RFC 6026).
    L,
    /// Wait for 2xx retransmits (client INVITE, Accepted; RFC 6026).
    M,
    /// Send 100 Trying if the TU has been silent for 200 ms (§17.2.1).
    Trying,
    /// 64·T1 after a CANCEL without a final response to the INVITE (§9.1).
    Cancel,
    /// A non-INVITE request its TU did not answer within 64·T1.
    Unanswered,
}

/// `now + d`, saturating instead of panicking where the platform's
/// `Instant` cannot represent the sum (the timer then fires at once,
/// which is wrong but harmless, and unreachable with sanitized values).
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// A retransmission timer: fires at `next`, then waits twice as long (up
/// to `cap`, if any) before the following one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) next: Instant,
    interval: Duration,
    cap: Option<Duration>,
}

impl Backoff {
    pub(crate) fn start(now: Instant, first: Duration, cap: Option<Duration>) -> Self {
        let interval = first.max(MIN_BASE);
        Self {
            next: after(now, interval),
            interval,
            cap,
        }
    }

    /// The timer fired at `now`: doubles the interval (capped) and rearms.
    pub(crate) fn fire(&mut self, now: Instant) {
        let doubled = self.interval.saturating_mul(2);
        self.interval = self
            .cap
            .map_or(doubled, |cap| doubled.min(cap))
            .max(MIN_BASE);
        self.next = after(now, self.interval);
    }

    /// Rearms with a fixed interval from now on (Timer E in Proceeding).
    pub(crate) fn fix(&mut self, interval: Duration) {
        self.interval = interval.max(MIN_BASE);
        self.cap = Some(self.interval);
    }

    #[cfg(test)]
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_follow_the_transport() {
        let t = Timers::default();
        assert_eq!(t.timeout(), Duration::from_secs(32));
        assert_eq!(t.d(false), Duration::from_secs(32));
        assert_eq!(t.d(true), Duration::ZERO);
        assert_eq!(t.i_k(false), Duration::from_secs(5));
        assert_eq!(t.i_k(true), Duration::ZERO);
        assert_eq!(t.j(false), Duration::from_secs(32));
        assert_eq!(t.j(true), Duration::ZERO);
        let slow = Timers {
            t1: Duration::from_secs(1),
            ..t
        };
        assert_eq!(slow.d(false), Duration::from_secs(64));
    }

    #[test]
    fn sanitizing_prevents_busy_loops_and_inverted_caps() {
        let t = Timers {
            t1: Duration::ZERO,
            t2: Duration::ZERO,
            t4: Duration::MAX,
        }
        .sanitized();
        assert_eq!(t.t1, MIN_BASE);
        assert!(t.t2 >= t.t1);
        assert_eq!(t.t4, MAX_BASE);
    }

    #[test]
    fn backoff_doubles_with_and_without_cap() {
        let now = Instant::now();
        let t1 = Duration::from_millis(500);
        let mut uncapped = Backoff::start(now, t1, None);
        let mut capped = Backoff::start(now, t1, Some(Duration::from_secs(4)));
        let mut seen = Vec::new();
        for _ in 0..6 {
            uncapped.fire(now);
            capped.fire(now);
            seen.push((uncapped.interval(), capped.interval()));
        }
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(
            seen,
            vec![
                (ms(1000), ms(1000)),
                (ms(2000), ms(2000)),
                (ms(4000), ms(4000)),
                (ms(8000), ms(4000)),
                (ms(16000), ms(4000)),
                (ms(32000), ms(4000)),
            ]
        );
        assert_eq!(
            Backoff::start(now, Duration::ZERO, None).interval(),
            MIN_BASE
        );
    }
}
