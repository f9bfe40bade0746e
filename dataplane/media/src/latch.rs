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
//! are accepted; a packet from the address the SDP named, or from its IP
//! on another port (a NAT that keeps the address and maps the port), takes
//! over a candidate from another IP (a peer that is reachable where it
//! said wins over whoever came first); anything else is dropped. The
//! window closes after `learn_packets` packets from the candidate or
//! `learn_window` after the first one, whichever comes first.
//!
//! The SDP's IP keeps that right after the window has closed on a source
//! from another IP: a scanner that sprays the port range before the far
//! end's first packet (a caller whose phone starts sending late, or sends
//! nothing while on hold or silent) is latched first, and without this
//! would keep the call's audio. A source on the SDP's own IP is final
//! against other IPs. The
//! IP the far end's signalling comes from can be trusted the same way
//! ([`SourceLatch::trust`]): behind NAT a phone's SDP names a private
//! address, and its media comes from the public IP its SIP does.
//! [`SourceLatch::relearn`] reopens learning, and is meant for an explicit
//! policy event such as a re-INVITE that changed the far end's SDP.
//!
//! A NAT may rebind mid-call: its mapping for the far end expires or the
//! router restarts, and the same stream carries on from the same public IP
//! on a new port. Without a re-INVITE the call would go one-way for good.
//! So the latch moves to a new port of the latched source's own IP when
//! all of these hold: the latched source is not the SDP's exact address (a
//! far end that is where it said does not rebind); it has sent no RTP for
//! [`LatchConfig::move_after`]; and the packet is RTP that carries on the
//! latched stream: its SSRC, and a sequence number at most
//! [`MAX_REBIND_SEQ_GAP`] past the last one accepted. A stranger must then
//! share the far end's IP (a carrier-grade NAT), wait for a pause, and
//! know the SSRC and where the numbering is. RTCP never moves a latch this
//! way (it carries no sequence), nor does a stream that changes its SSRC
//! and its port at once, or moves to another IP: those still need the far
//! end's re-INVITE.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How far past the last accepted sequence number the first packet from
/// a rebound NAT's new port may be: a minute of 20 ms packets, for a
/// router that takes that long to come back (silence suppression does
/// not advance the numbering).
pub const MAX_REBIND_SEQ_GAP: u16 = 3000;

/// What a packet says about the stream it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// RTP: its SSRC and sequence number.
    Rtp { ssrc: u32, seq: u16 },
    /// RTCP, which carries no sequence: it never moves a latch to a new
    /// port, and is not the stream's last packet for one that does.
    Rtcp,
}

/// Learning-window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatchConfig {
    /// Packets from the candidate that close the window.
    pub learn_packets: u32,
    /// Time after the first accepted packet that closes the window.
    pub learn_window: Duration,
    /// How long the latched source must have sent no RTP before its
    /// stream may move it to another port of its IP (a NAT that rebound).
    pub move_after: Duration,
}

impl Default for LatchConfig {
    fn default() -> Self {
        LatchConfig {
            learn_packets: 5,
            learn_window: Duration::from_millis(500),
            move_after: Duration::from_millis(100),
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
    /// Another IP the far end is known by: where its signalling comes
    /// from ([`SourceLatch::trust`]).
    trusted: Option<IpAddr>,
    state: State,
    /// When the latched (or candidate) source's last RTP packet came, its
    /// SSRC and sequence number: what a NAT rebinding's first packet from
    /// a new port must carry on.
    last: Option<(Instant, u32, u16)>,
    dropped: u64,
}

impl SourceLatch {
    pub fn new(config: LatchConfig, expected: Option<SocketAddr>) -> Self {
        SourceLatch {
            config,
            expected,
            trusted: None,
            state: State::Learning { candidate: None },
            last: None,
            dropped: 0,
        }
    }

    /// Also trusts `ip` as the far end's, as its SDP's IP is: the IP its
    /// signalling comes from, which a far end behind NAT (whose SDP names
    /// a private address) usually sends its media from too. None: only
    /// the SDP's.
    pub fn trust(&mut self, ip: Option<IpAddr>) {
        self.trusted = ip;
    }

    /// Filters one valid packet from `src`.
    pub fn check(&mut self, now: Instant, src: SocketAddr, stream: Stream) -> LatchVerdict {
        let verdict = self.judge(now, src, stream);
        if verdict == LatchVerdict::Drop {
            self.dropped += 1;
        } else if let Stream::Rtp { ssrc, seq } = stream {
            self.last = Some((now, ssrc, seq));
        }
        verdict
    }

    fn judge(&mut self, now: Instant, src: SocketAddr, stream: Stream) -> LatchVerdict {
        let (expected, trusted) = (self.expected, self.trusted);
        let takes_over = |src: SocketAddr, current: SocketAddr| {
            let known = |ip: IpAddr| expected.is_some_and(|e| e.ip() == ip) || trusted == Some(ip);
            known(src.ip()) && !known(current.ip())
        };
        // The latched stream itself, after a pause, from a new port of
        // the same IP: a NAT that rebound.
        let last = self.last;
        let move_after = self.config.move_after;
        let rebound = |current: SocketAddr| {
            let Stream::Rtp { ssrc, seq } = stream else {
                return false;
            };
            src.ip() == current.ip()
                && Some(current) != expected
                && last.is_some_and(|(at, last_ssrc, last_seq)| {
                    last_ssrc == ssrc
                        && now.saturating_duration_since(at) >= move_after
                        && (1..=MAX_REBIND_SEQ_GAP).contains(&seq.wrapping_sub(last_seq))
                })
        };
        match &mut self.state {
            State::Locked(addr) => {
                if *addr == src {
                    LatchVerdict::Accept
                } else if Some(src) == expected || takes_over(src, *addr) || rebound(*addr) {
                    // The far end where its SDP said, after another IP
                    // (or another port of its own IP: a stale stream of
                    // the same host or gateway) got in first; or its
                    // stream on the port its NAT now maps it to.
                    *addr = src;
                    LatchVerdict::Learned(src)
                } else {
                    LatchVerdict::Drop
                }
            }
            State::Learning { candidate } => {
                // An expired window locks onto the candidate before judging.
                if let Some((addr, _, first)) = *candidate
                    && now.saturating_duration_since(first) >= self.config.learn_window
                {
                    self.state = State::Locked(addr);
                    return self.judge(now, src, stream);
                }
                let verdict = match candidate {
                    None => {
                        *candidate = Some((src, 0, now));
                        LatchVerdict::Learned(src)
                    }
                    Some((addr, _, _)) if *addr == src => LatchVerdict::Accept,
                    Some((addr, count, first))
                        if Some(src) == expected || takes_over(src, *addr) || rebound(*addr) =>
                    {
                        *candidate = Some((src, *count, *first));
                        LatchVerdict::Learned(src)
                    }
                    Some(_) => return LatchVerdict::Drop,
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

    /// `ip` is one this stream's far end is known by: where it is latched
    /// (or learning), its SDP's, or its signalling's. A leg's RTCP on a
    /// port of its own is taken only from such an IP, so a stranger
    /// cannot be the first to teach that port's latch.
    pub fn knows_ip(&self, ip: IpAddr) -> bool {
        self.destination().is_some_and(|a| a.ip() == ip)
            || self.expected.is_some_and(|a| a.ip() == ip)
            || self.trusted == Some(ip)
    }

    /// The IPs this stream's packets may come from once its window has
    /// closed: the latched source's, its SDP's and its signalling's (a
    /// packet from any other IP is dropped, whatever it carries, so the
    /// kernel may drop it first). None while learning: the far end may
    /// be anywhere.
    pub fn locked_ips(&self) -> Option<[Option<IpAddr>; 3]> {
        let State::Locked(addr) = self.state else {
            return None;
        };
        let latched = addr.ip();
        let expected = self.expected.map(|a| a.ip()).filter(|&ip| ip != latched);
        let trusted = self
            .trusted
            .filter(|&ip| ip != latched && Some(ip) != expected);
        Some([Some(latched), expected, trusted])
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
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Once locked, only the latched source's, the SDP's and the
    /// signalling's IPs can be accepted (the kernel filter's list); every
    /// other IP is dropped. None while learning, and again on relearn.
    #[test]
    fn a_locked_latch_names_the_only_ips_it_can_accept() {
        let sdp: SocketAddr = "192.0.2.10:4000".parse().unwrap();
        let nat: SocketAddr = "198.51.100.7:31000".parse().unwrap();
        let sig: IpAddr = "203.0.113.5".parse().unwrap();
        let t0 = Instant::now();
        let mut l = SourceLatch::new(LatchConfig::default(), Some(sdp));
        l.trust(Some(sig));
        assert_eq!(l.locked_ips(), None);
        for i in 0..5 {
            assert_ne!(l.check(t0, nat, rtp(i)), LatchVerdict::Drop);
        }
        assert!(l.is_locked());
        assert_eq!(
            l.locked_ips(),
            Some([Some(nat.ip()), Some(sdp.ip()), Some(sig)])
        );
        // What the list leaves out is dropped, from any port.
        let stranger: SocketAddr = "198.51.100.8:31000".parse().unwrap();
        assert_eq!(l.check(t0, stranger, rtp(6)), LatchVerdict::Drop);
        // Latched on the SDP's IP: listed once.
        let mut l = SourceLatch::new(LatchConfig::default(), Some(sdp));
        for i in 0..5 {
            l.check(t0, sdp, rtp(i));
        }
        assert_eq!(l.locked_ips(), Some([Some(sdp.ip()), None, None]));
        l.relearn(Some(sdp));
        assert_eq!(l.locked_ips(), None);
    }

    /// The far end's stream.
    const SSRC: u32 = 0x5eed;
    /// One of its packets (where the numbering is does not matter).
    const S: Stream = Stream::Rtp { ssrc: SSRC, seq: 0 };

    fn rtp(seq: u16) -> Stream {
        Stream::Rtp { ssrc: SSRC, seq }
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn learns_then_strict() {
        let t0 = Instant::now();
        let cfg = LatchConfig {
            learn_packets: 3,
            learn_window: Duration::from_secs(10),
            ..LatchConfig::default()
        };
        let mut l = SourceLatch::new(cfg, Some(a("192.0.2.1:4000")));
        assert_eq!(l.destination(), Some(a("192.0.2.1:4000")));
        let nat = a("198.51.100.7:31000");
        assert_eq!(l.check(t0, nat, S), LatchVerdict::Learned(nat));
        assert_eq!(l.destination(), Some(nat));
        // An attacker during learning is dropped.
        assert_eq!(l.check(t0, a("203.0.113.66:1"), S), LatchVerdict::Drop);
        assert_eq!(l.check(t0, nat, S), LatchVerdict::Accept);
        assert!(!l.is_locked());
        assert_eq!(l.check(t0, nat, S), LatchVerdict::Accept);
        assert!(l.is_locked());
        // Strict now for everyone else.
        assert_eq!(l.check(t0, a("203.0.113.66:1"), S), LatchVerdict::Drop);
        assert_eq!(l.check(t0, a("198.51.100.7:31001"), S), LatchVerdict::Drop);
        assert_eq!(l.dropped(), 3);
        assert_eq!(l.destination(), Some(nat));
    }

    #[test]
    fn a_scanner_that_came_first_loses_the_call_to_its_sdp_address() {
        // The scanner sprays the port before the far end sends (its phone
        // starts late, or is silent): the window closes on it.
        let t0 = Instant::now();
        let sdp = a("192.0.2.1:4000");
        let mut l = SourceLatch::new(LatchConfig::default(), Some(sdp));
        let scanner = a("203.0.113.66:1");
        assert_eq!(l.check(t0, scanner, S), LatchVerdict::Learned(scanner));
        for _ in 0..10 {
            l.check(t0, scanner, S);
        }
        assert!(l.is_locked());
        // The far end's first packet, from where its SDP said, takes the
        // call back; the scanner is dropped from then on.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(l.check(later, sdp, S), LatchVerdict::Learned(sdp));
        assert_eq!(l.destination(), Some(sdp));
        assert_eq!(l.check(later, scanner, S), LatchVerdict::Drop);
        // On its own IP the far end is final: another port of that IP,
        // or another scanner, cannot move it.
        assert_eq!(l.check(later, a("192.0.2.1:4002"), S), LatchVerdict::Drop);
        assert_eq!(l.check(later, a("203.0.113.67:9"), S), LatchVerdict::Drop);
        assert_eq!(l.destination(), Some(sdp));
    }

    #[test]
    fn the_sdp_ip_on_a_mapped_port_takes_over_from_another_ip() {
        // A NAT that keeps the far end's public address but maps its port.
        let t0 = Instant::now();
        let sdp = a("192.0.2.1:4000");
        let mut l = SourceLatch::new(LatchConfig::default(), Some(sdp));
        let scanner = a("203.0.113.66:1");
        assert_eq!(l.check(t0, scanner, S), LatchVerdict::Learned(scanner));
        let mapped = a("192.0.2.1:61000");
        assert_eq!(l.check(t0, mapped, S), LatchVerdict::Learned(mapped));
        // Then the exact SDP address still wins while learning, and the
        // scanner is out.
        assert_eq!(l.check(t0, scanner, S), LatchVerdict::Drop);
        assert_eq!(l.check(t0, sdp, S), LatchVerdict::Learned(sdp));
        assert_eq!(l.check(t0, mapped, S), LatchVerdict::Drop);
    }

    /// A stale stream from the far end's own IP on another port (a gateway
    /// or host that reused the port range) was locked first: the SDP's
    /// exact address still takes the call, and then keeps it.
    #[test]
    fn the_sdp_address_takes_over_from_another_port_of_its_ip() {
        let t0 = Instant::now();
        let sdp = a("198.51.100.7:46000");
        let mut l = SourceLatch::new(LatchConfig::default(), Some(sdp));
        let stale = a("198.51.100.7:46300");
        for _ in 0..10 {
            l.check(t0, stale, S);
        }
        assert!(l.is_locked());
        assert_eq!(l.destination(), Some(stale));
        assert_eq!(l.check(t0, sdp, S), LatchVerdict::Learned(sdp));
        assert_eq!(l.check(t0, stale, S), LatchVerdict::Drop);
        assert_eq!(l.check(t0, sdp, S), LatchVerdict::Accept);
        assert_eq!(l.destination(), Some(sdp));
    }

    #[test]
    fn behind_nat_the_signalling_ip_takes_the_call_back_from_a_scanner() {
        let t0 = Instant::now();
        let mut l = SourceLatch::new(LatchConfig::default(), Some(a("10.0.0.5:4000")));
        l.trust(Some("198.51.100.7".parse().unwrap()));
        let scanner = a("203.0.113.66:1");
        for _ in 0..10 {
            l.check(t0, scanner, S);
        }
        assert!(l.is_locked());
        // The phone's media, from the public IP its SIP comes from, on
        // the port its NAT picked.
        let public = a("198.51.100.7:31000");
        assert_eq!(l.check(t0, public, S), LatchVerdict::Learned(public));
        assert_eq!(l.check(t0, scanner, S), LatchVerdict::Drop);
        assert_eq!(l.check(t0, a("198.51.100.7:31002"), S), LatchVerdict::Drop);
        assert_eq!(l.destination(), Some(public));
    }

    #[test]
    fn a_nat_address_learned_first_yields_only_to_the_sdp_ip() {
        // The far end behind NAT: its SDP names a private address it
        // never sends from; its public one is learned and kept.
        let t0 = Instant::now();
        let mut l = SourceLatch::new(LatchConfig::default(), Some(a("10.0.0.5:4000")));
        let public = a("198.51.100.7:31000");
        assert_eq!(l.check(t0, public, S), LatchVerdict::Learned(public));
        for _ in 0..5 {
            assert_eq!(l.check(t0, public, S), LatchVerdict::Accept);
        }
        assert!(l.is_locked());
        assert_eq!(l.check(t0, a("203.0.113.66:1"), S), LatchVerdict::Drop);
        assert_eq!(l.destination(), Some(public));
    }

    #[test]
    fn sdp_address_takes_over_during_learning() {
        let t0 = Instant::now();
        let mut l = SourceLatch::new(LatchConfig::default(), Some(a("192.0.2.1:4000")));
        let first = a("203.0.113.66:1");
        assert_eq!(l.check(t0, first, S), LatchVerdict::Learned(first));
        let sdp = a("192.0.2.1:4000");
        assert_eq!(l.check(t0, sdp, S), LatchVerdict::Learned(sdp));
        assert_eq!(l.check(t0, first, S), LatchVerdict::Drop);
        assert_eq!(l.destination(), Some(sdp));
    }

    #[test]
    fn window_closes_on_time() {
        let t0 = Instant::now();
        let cfg = LatchConfig {
            learn_packets: 100,
            learn_window: Duration::from_millis(200),
            ..LatchConfig::default()
        };
        let mut l = SourceLatch::new(cfg, None);
        let src = a("198.51.100.7:31000");
        l.check(t0, src, S);
        assert!(!l.is_locked());
        let other = a("198.51.100.8:31000");
        assert_eq!(
            l.check(t0 + Duration::from_millis(199), other, S),
            LatchVerdict::Drop
        );
        assert_eq!(
            l.check(t0 + Duration::from_millis(200), src, S),
            LatchVerdict::Accept
        );
        assert!(l.is_locked());
    }

    /// A NAT that rebinds mid-call: the same stream, from the same public
    /// IP, on a new port once the old mapping has gone quiet. Only that
    /// moves a locked latch: not a new port while the old one still
    /// sends, not another stream (SSRC) on the IP, not a packet whose
    /// numbering does not carry on from the stream's, not RTCP, not the
    /// stream from another IP.
    #[test]
    fn a_nat_rebinding_moves_the_stream_to_its_new_port() {
        let t0 = Instant::now();
        let mut l = SourceLatch::new(LatchConfig::default(), Some(a("10.0.0.5:4000")));
        l.trust(Some("198.51.100.7".parse().unwrap()));
        let old = a("198.51.100.7:31000");
        for i in 0..10u16 {
            l.check(
                t0 + Duration::from_millis(20 * u64::from(i)),
                old,
                rtp(1000 + i),
            );
        }
        assert!(l.is_locked());
        let last = t0 + Duration::from_millis(180);
        let new = a("198.51.100.7:31002");
        // While the old mapping still sends (its last packet under
        // `move_after` ago), the new port is a stranger.
        let soon = last + Duration::from_millis(99);
        assert_eq!(l.check(soon, new, rtp(1010)), LatchVerdict::Drop);
        // Someone else on the IP (a carrier-grade NAT's other customer),
        // with a stream of its own, after the pause: dropped.
        let paused = last + Duration::from_millis(100);
        let other = Stream::Rtp {
            ssrc: 0xbad,
            seq: 1010,
        };
        assert_eq!(l.check(paused, new, other), LatchVerdict::Drop);
        // The SSRC, but numbering that does not carry on the stream's
        // (behind it, or too far ahead), or RTCP: dropped.
        for stream in [rtp(1009), rtp(1009 + MAX_REBIND_SEQ_GAP + 1), Stream::Rtcp] {
            assert_eq!(l.check(paused, new, stream), LatchVerdict::Drop);
        }
        // The stream itself from another IP: dropped.
        let elsewhere = a("203.0.113.66:31000");
        assert_eq!(l.check(paused, elsewhere, rtp(1010)), LatchVerdict::Drop);
        assert_eq!(l.destination(), Some(old));
        // The stream from its new port, a few packets lost on the way:
        // moved, and the old port is now the stranger.
        assert_eq!(l.check(paused, new, rtp(1013)), LatchVerdict::Learned(new));
        assert_eq!(l.destination(), Some(new));
        let next = paused + Duration::from_millis(20);
        assert_eq!(l.check(next, new, rtp(1014)), LatchVerdict::Accept);
        assert_eq!(l.check(next, old, rtp(1015)), LatchVerdict::Drop);
        assert_eq!(l.dropped(), 7);
    }

    /// A far end latched where its SDP said (not behind NAT) does not
    /// rebind: another port of its IP stays a stranger, however well it
    /// carries on the stream.
    #[test]
    fn a_far_end_at_its_sdp_address_does_not_move() {
        let t0 = Instant::now();
        let sdp = a("198.51.100.7:31000");
        let mut l = SourceLatch::new(LatchConfig::default(), Some(sdp));
        for i in 0..10u16 {
            l.check(t0, sdp, rtp(i));
        }
        assert!(l.is_locked());
        let later = t0 + Duration::from_secs(1);
        let other_port = a("198.51.100.7:31002");
        assert_eq!(l.check(later, other_port, rtp(10)), LatchVerdict::Drop);
        assert_eq!(l.destination(), Some(sdp));
    }

    /// RTCP on the latch (multiplexed) is not the stream's last packet:
    /// it neither resets the pause nor stands in for the numbering.
    #[test]
    fn rtcp_does_not_count_as_the_streams_last_packet() {
        let t0 = Instant::now();
        let mut l = SourceLatch::new(LatchConfig::default(), None);
        let old = a("198.51.100.7:31000");
        for i in 0..10u16 {
            l.check(t0, old, rtp(i));
        }
        // Its RTCP keeps coming from the old port after its RTP stopped.
        let t1 = t0 + Duration::from_millis(90);
        assert_eq!(l.check(t1, old, Stream::Rtcp), LatchVerdict::Accept);
        let new = a("198.51.100.7:40000");
        let t2 = t0 + Duration::from_millis(100);
        assert_eq!(l.check(t2, new, rtp(10)), LatchVerdict::Learned(new));
    }

    /// While learning too: a candidate's stream that moves port after a
    /// pause is followed, as a locked one is.
    #[test]
    fn a_rebinding_during_learning_moves_the_candidate() {
        let t0 = Instant::now();
        let cfg = LatchConfig {
            learn_packets: 100,
            learn_window: Duration::from_secs(10),
            ..LatchConfig::default()
        };
        let mut l = SourceLatch::new(cfg, None);
        let old = a("198.51.100.7:31000");
        l.check(t0, old, rtp(7));
        let new = a("198.51.100.7:40000");
        assert_eq!(l.check(t0, new, rtp(8)), LatchVerdict::Drop);
        let later = t0 + Duration::from_millis(150);
        assert_eq!(l.check(later, new, rtp(9)), LatchVerdict::Learned(new));
        assert!(!l.is_locked());
        assert_eq!(l.destination(), Some(new));
    }

    #[test]
    fn relearn_on_policy() {
        let t0 = Instant::now();
        let mut l = SourceLatch::new(
            LatchConfig {
                learn_packets: 1,
                learn_window: Duration::from_secs(1),
                ..LatchConfig::default()
            },
            None,
        );
        let old = a("198.51.100.7:31000");
        l.check(t0, old, S);
        assert!(l.is_locked());
        let new = a("198.51.100.9:5000");
        assert_eq!(l.check(t0, new, S), LatchVerdict::Drop);
        l.relearn(Some(new));
        assert_eq!(l.destination(), Some(new));
        assert_eq!(l.check(t0, new, S), LatchVerdict::Learned(new));
        assert!(l.is_locked());
        assert_eq!(l.check(t0, old, S), LatchVerdict::Drop);
    }
}
