//! Symmetric RTP with a short learning window, then strict source.
//!
//! A far end behind NAT sends from an address its SDP does not name, so the
//! switch learns the address from the first valid packets and sends back to
//! it (symmetric RTP). Once the learning window closes, only that address is
//! accepted: packets from anywhere else are dropped and counted, so a
//! scanner spraying the port range cannot inject audio or make us send a
//! call's audio to it (RTP bleed).
//!
//! Learning: the first valid packet names a candidate; more packets from it
//! are accepted; a packet from the address the SDP named takes over the
//! candidacy (a peer that is reachable where it said wins over whoever came
//! first); anything else is dropped. The window closes after
//! `learn_packets` packets from the candidate or `learn_window` after the
//! first one, whichever comes first. [`SourceLatch::relearn`] reopens it,
//! and is meant for an explicit policy event such as a re-INVITE that
//! changed the far end's SDP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Learning-window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatchConfig {
    /// Packets from the candidate that close the window.
    pub learn_packets: u32,
    /// Time after the first accepted packet that closes the window.
    pub learn_window: Duration,
}

impl Default for LatchConfig {
    fn default() -> Self {
        LatchConfig {
            learn_packets: 5,
            learn_window: Duration::from_millis(500),
        }
    }
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatchVerdict {
    /// From the (candidate or latched) source; process it.
    Accept,
    /// Accepted, and it just changed where we send (learned or took over
    /// from an earlier candidate).
    Learned(SocketAddr),
    /// From another address; dropped and counted.
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Learning {
        candidate: Option<(SocketAddr, u32, Instant)>,
    },
    Locked(SocketAddr),
}

/// The source filter of one receive stream.
#[derive(Debug, Clone)]
pub struct SourceLatch {
    config: LatchConfig,
    /// Address the far end's SDP named, if any.
    expected: Option<SocketAddr>,
    state: State,
    dropped: u64,
}

impl SourceLatch {
    pub fn new(config: LatchConfig, expected: Option<SocketAddr>) -> Self {
        SourceLatch {
            config,
            expected,
            state: State::Learning { candidate: None },
            dropped: 0,
        }
    }

    /// Filters one valid packet from `src`.
    pub fn check(&mut self, now: Instant, src: SocketAddr) -> LatchVerdict {
        match &mut self.state {
            State::Locked(addr) => {
                if *addr == src {
                    LatchVerdict::Accept
                } else {
                    self.dropped += 1;
                    LatchVerdict::Drop
                }
            }
            State::Learning { candidate } => {
                // An expired window locks onto the candidate before judging.
                if let Some((addr, _, first)) = *candidate
                    && now.saturating_duration_since(first) >= self.config.learn_window
                {
                    self.state = State::Locked(addr);
                    return self.check(now, src);
                }
                let verdict = match candidate {
                    None => {
                        *candidate = Some((src, 0, now));
                        LatchVerdict::Learned(src)
                    }
                    Some((addr, _, _)) if *addr == src => LatchVerdict::Accept,
                    Some((_, count, first)) if Some(src) == self.expected => {
                        *candidate = Some((src, *count, *first));
                        LatchVerdict::Learned(src)
                    }
                    Some(_) => {
                        self.dropped += 1;
                        return LatchVerdict::Drop;
                    }
                };
                if let Some((addr, count, _)) = candidate {
                    *count += 1;
                    if *count >= self.config.learn_packets {
                        self.state = State::Locked(*addr);
                    }
                }
                verdict
            }
        }
    }

    /// Where to send: the learned source, else the SDP address.
    pub fn destination(&self) -> Option<SocketAddr> {
        match self.state {
            State::Locked(a) => Some(a),
            State::Learning {
                candidate: Some((a, _, _)),
            } => Some(a),
            State::Learning { candidate: None } => self.expected,
        }
    }

    /// True once the window has closed.
    pub fn is_locked(&self) -> bool {
        matches!(self.state, State::Locked(_))
    }

    /// Packets dropped because they came from another address.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Reopens learning (explicit policy: the far end's SDP changed).
    pub fn relearn(&mut self, expected: Option<SocketAddr>) {
        self.expected = expected;
        self.state = State::Learning { candidate: None };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn learns_then_strict() {
        let t0 = Instant::now();
        let cfg = LatchConfig {
            learn_packets: 3,
            learn_window: Duration::from_secs(10),
        };
        let mut l = SourceLatch::new(cfg, Some(a("192.0.2.1:4000")));
        assert_eq!(l.destination(), Some(a("192.0.2.1:4000")));
        let nat = a("198.51.100.7:31000");
        assert_eq!(l.check(t0, nat), LatchVerdict::Learned(nat));
        assert_eq!(l.destination(), Some(nat));
        // An attacker during learning is dropped.
        assert_eq!(l.check(t0, a("203.0.113.66:1")), LatchVerdict::Drop);
        assert_eq!(l.check(t0, nat), LatchVerdict::Accept);
        assert!(!l.is_locked());
        assert_eq!(l.check(t0, nat), LatchVerdict::Accept);
        assert!(l.is_locked());
        // Strict now, even for the SDP address.
        assert_eq!(l.check(t0, a("192.0.2.1:4000")), LatchVerdict::Drop);
        assert_eq!(l.check(t0, a("203.0.113.66:1")), LatchVerdict::Drop);
        assert_eq!(l.dropped(), 3);
        assert_eq!(l.destination(), Some(nat));
    }

    #[test]
    fn sdp_address_takes_over_during_learning() {
        let t0 = Instant::now();
        let mut l = SourceLatch::new(LatchConfig::default(), Some(a("192.0.2.1:4000")));
        let first = a("203.0.113.66:1");
        assert_eq!(l.check(t0, first), LatchVerdict::Learned(first));
        let sdp = a("192.0.2.1:4000");
        assert_eq!(l.check(t0, sdp), LatchVerdict::Learned(sdp));
        assert_eq!(l.check(t0, first), LatchVerdict::Drop);
        assert_eq!(l.destination(), Some(sdp));
    }

    #[test]
    fn window_closes_on_time() {
        let t0 = Instant::now();
        let cfg = LatchConfig {
            learn_packets: 100,
            learn_window: Duration::from_millis(200),
        };
        let mut l = SourceLatch::new(cfg, None);
        let src = a("198.51.100.7:31000");
        l.check(t0, src);
        assert!(!l.is_locked());
        let other = a("198.51.100.8:31000");
        assert_eq!(
            l.check(t0 + Duration::from_millis(199), other),
            LatchVerdict::Drop
        );
        assert_eq!(
            l.check(t0 + Duration::from_millis(200), src),
            LatchVerdict::Accept
        );
        assert!(l.is_locked());
    }

    #[test]
    fn relearn_on_policy() {
        let t0 = Instant::now();
        let mut l = SourceLatch::new(
            LatchConfig {
                learn_packets: 1,
                learn_window: Duration::from_secs(1),
            },
            None,
        );
        let old = a("198.51.100.7:31000");
        l.check(t0, old);
        assert!(l.is_locked());
        let new = a("198.51.100.9:5000");
        assert_eq!(l.check(t0, new), LatchVerdict::Drop);
        l.relearn(Some(new));
        assert_eq!(l.destination(), Some(new));
        assert_eq!(l.check(t0, new), LatchVerdict::Learned(new));
        assert!(l.is_locked());
        assert_eq!(l.check(t0, old), LatchVerdict::Drop);
    }
}
