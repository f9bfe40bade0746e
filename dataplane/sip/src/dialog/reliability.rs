//! The timers that make the end-to-end parts of INVITE reliable: the
//! UAS's 2xx retransmission until ACK (§13.3.1.4) and the back-off before
//! retrying a request refused with 491 (§14.1), plus the random
//! Retry-After of §14.2.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::transaction::{Backoff, IdGenerator, Timers, after};

/// A 2xx to an INVITE we sent and whose ACK has not arrived.
#[derive(Debug, Clone)]
pub(crate) struct Unacked<A> {
    pub(crate) cseq: u32,
    pub(crate) wire: Bytes,
    pub(crate) to: A,
    /// T1, doubling up to T2 (§13.3.1.4).
    pub(crate) retransmit: Backoff,
    /// 64·T1 after the first send: give up and report.
    pub(crate) give_up: Instant,
}

impl<A> Unacked<A> {
    pub(crate) fn new(now: Instant, cseq: u32, wire: Bytes, to: A, timers: &Timers) -> Self {
        let timers = timers.sanitized();
        Self {
            cseq,
            wire,
            to,
            retransmit: Backoff::start(now, timers.t1, Some(timers.t2)),
            give_up: after(now, timers.timeout()),
        }
    }

    /// The next deadline: a retransmission or the give-up.
    pub(crate) fn next(&self) -> Instant {
        self.retransmit.next.min(self.give_up)
    }
}

/// §14.1: how long to wait before retrying a request refused with 491.
/// The owner of the Call-ID (the side that sent the dialog-creating
/// INVITE) waits 2.1–4 s, the other side 0–2 s, in units of 10 ms, so the
/// two sides do not collide again.
pub(crate) fn glare_backoff(call_id_owner: bool, ids: &mut IdGenerator) -> Duration {
    let tens_of_ms = if call_id_owner {
        210 + ids.below(191)
    } else {
        ids.below(201)
    };
    Duration::from_millis(tens_of_ms * 10)
}

/// §14.2: a second INVITE before our final to the first gets 500 with a
/// Retry-After "randomly chosen value of between 0 and 10 seconds".
pub(crate) fn retry_after_secs(ids: &mut IdGenerator) -> u64 {
    ids.below(11)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glare_back_off_ranges_follow_14_1() {
        let mut ids = IdGenerator::new(3);
        for _ in 0..2_000 {
            let owner = glare_backoff(true, &mut ids);
            assert!(owner >= Duration::from_millis(2100) && owner <= Duration::from_secs(4));
            assert_eq!(owner.as_millis() % 10, 0);
            let other = glare_backoff(false, &mut ids);
            assert!(other <= Duration::from_secs(2));
            assert!(retry_after_secs(&mut ids) <= 10);
        }
    }

    #[test]
    fn the_2xx_schedule_starts_at_t1_and_gives_up_at_64_t1() {
        let t0 = Instant::now();
        let u = Unacked::new(t0, 1, Bytes::new(), (), &Timers::default());
        assert_eq!(u.next(), t0 + Duration::from_millis(500));
        assert_eq!(u.give_up, t0 + Duration::from_secs(32));
    }
}
