//! Per-stream statistics as RFC 3550 defines them: sequence tracking with
//! wrap-around and probation (A.1), cumulative and interval loss (A.3) and
//! interarrival jitter (A.8), plus the sender side an SR reports.
//!
//! Arrival times come in as `Instant`s; the jitter is kept in RTP timestamp
//! units scaled by 16, the integer form of A.8.

use crate::rtcp::ReportBlock;
use std::time::{Duration, Instant};

const RTP_SEQ_MOD: u32 = 1 << 16;
/// A.1 defaults.
const MAX_DROPOUT: u32 = 3000;
const MAX_MISORDER: u32 = 100;
const MIN_SEQUENTIAL: u32 = 2;

/// What [`ReceiveStats::update`] made of a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// In sequence (or an acceptable reorder); counted.
    Valid,
    /// The source is still in probation (A.1: not yet `MIN_SEQUENTIAL`
    /// packets in a row).
    Probation,
    /// A large jump; the stream is re-synchronised if the next packet
    /// follows this one.
    BadSequence,
    /// The same sequence number as the highest seen, or an old packet
    /// outside the reorder window.
    Duplicate,
}

/// Receive-side statistics of one RTP source.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    clock_rate: u32,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    transit: Option<i32>,
    /// J scaled by 16: up to 2^35 (J tends to |D|, at most 2^31), so it
    /// takes 64 bits.
    jitter_q4: u64,
    epoch: Option<Instant>,
    started: bool,
    /// Payload octets of counted packets.
    pub octets: u64,
    /// Packets rejected as duplicates or far out of order.
    pub duplicates: u64,
    /// Last SR from this source: middle 32 bits of its NTP time and when it
    /// arrived (for LSR/DLSR in our report blocks).
    last_sr: Option<(u32, Instant)>,
    /// Packets lost by the sources before this one (for the stream's
    /// whole account; report blocks are this source's alone).
    lost_before: i64,
}

impl ReceiveStats {
    pub fn new(clock_rate: u32) -> Self {
        ReceiveStats {
            clock_rate: clock_rate.max(1),
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: RTP_SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
            epoch: None,
            started: false,
            octets: 0,
            duplicates: 0,
            last_sr: None,
            lost_before: 0,
        }
    }

    /// Another source (SSRC) took over the stream. Its sequence numbers,
    /// loss, jitter and sender reports are its own (RFC 3550 §6.4.1, A.1:
    /// per source, a new one on probation): numbers of its that happen to
    /// lie near the old source's would otherwise count as a gap or as
    /// reordering. What the earlier sources lost stays in
    /// [`Self::lost_total`].
    pub fn new_source(&mut self) {
        self.lost_before = self.lost_total();
        self.started = false;
        self.probation = MIN_SEQUENTIAL;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.transit = None;
        self.jitter_q4 = 0;
        self.last_sr = None;
    }

    /// The source's RTP clock changed (the far end's codec did): arrival
    /// times are measured on the new one, and jitter starts afresh.
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        let clock_rate = clock_rate.max(1);
        if clock_rate != self.clock_rate {
            self.clock_rate = clock_rate;
            self.transit = None;
            self.jitter_q4 = 0;
        }
    }

    /// Packets lost over the whole stream, every source's (unclamped; may
    /// be negative with duplicates).
    pub fn lost_total(&self) -> i64 {
        let lost = self.expected() as i64 - self.received as i64;
        self.lost_before.saturating_add(lost)
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    /// Accounts one packet (A.1 `update_seq`, then A.8 jitter for counted
    /// packets).
    pub fn update(
        &mut self,
        now: Instant,
        seq: u16,
        rtp_ts: u32,
        payload_len: usize,
    ) -> SeqVerdict {
        if !self.started {
            self.started = true;
            self.init_seq(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
        }
        let udelta = u32::from(seq.wrapping_sub(self.max_seq));
        let verdict = if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    SeqVerdict::Valid
                } else {
                    SeqVerdict::Probation
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
                SeqVerdict::Probation
            }
        } else if udelta < MAX_DROPOUT {
            if udelta == 0 {
                self.duplicates += 1;
                return SeqVerdict::Duplicate;
            }
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
            SeqVerdict::Valid
        } else if udelta <= RTP_SEQ_MOD - MAX_MISORDER {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a jump: the source restarted.
                self.init_seq(seq);
                SeqVerdict::Valid
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return SeqVerdict::BadSequence;
            }
        } else {
            // Duplicate or reordered within the misorder window: counted
            // as received (A.1), but it says nothing new about max_seq.
            SeqVerdict::Valid
        };
        if verdict == SeqVerdict::Valid {
            self.received += 1;
            self.octets += payload_len as u64;
            self.update_jitter(now, rtp_ts);
        }
        verdict
    }

    fn update_jitter(&mut self, now: Instant, rtp_ts: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let nanos = now.saturating_duration_since(epoch).as_nanos();
        let arrival = (nanos * u128::from(self.clock_rate) / 1_000_000_000) as u32;
        let transit = arrival.wrapping_sub(rtp_ts) as i32;
        if let Some(prev) = self.transit {
            let d = transit.wrapping_sub(prev).unsigned_abs();
            // J += (|D| - J) / 16, kept scaled by 16. (J + 8) / 16 <= J
            // for J >= 1, so this never goes below zero.
            self.jitter_q4 = self.jitter_q4 + u64::from(d) - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Highest sequence number with the wrap count (A.1 `cycles + max_seq`).
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets counted as received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected from the sequence numbers (A.3).
    pub fn expected(&self) -> u64 {
        if self.probation > 0 {
            return 0;
        }
        u64::from(self.extended_max().wrapping_sub(self.base_seq)) + 1
    }

    /// Cumulative loss, may be negative with duplicates (A.3), clamped to
    /// the 24-bit field of a report block.
    pub fn cumulative_lost(&self) -> i32 {
        let lost = self.expected() as i64 - self.received as i64;
        lost.clamp(-0x80_0000, 0x7f_ffff) as i32
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter_rtp(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// Interarrival jitter as a duration.
    pub fn jitter(&self) -> Duration {
        Duration::from_micros(u64::from(self.jitter_rtp()) * 1_000_000 / u64::from(self.clock_rate))
    }

    /// Fraction lost since the previous call, in 1/256 (A.3); advances the
    /// interval.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        }
    }

    /// Notes an SR from this source (for LSR/DLSR).
    pub fn on_sender_report(&mut self, now: Instant, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// A report block about this source; advances the loss interval.
    pub fn report_block(&mut self, now: Instant, ssrc: u32) -> ReportBlock {
        let (last_sr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                // Units of 1/65536 s.
                let dlsr = (d.as_nanos() * 65_536 / 1_000_000_000).min(u128::from(u32::MAX));
                (lsr, dlsr as u32)
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost: self.take_fraction_lost(),
            cumulative_lost: self.cumulative_lost(),
            highest_seq: self.extended_max(),
            jitter: self.jitter_rtp(),
            last_sr,
            delay_since_last_sr: dlsr,
        }
    }
}

/// Send-side counters of one stream we originate (the SR's sender info).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    pub packets: u64,
    /// Payload octets (RFC 3550 §6.4.1 sender's octet count).
    pub octets: u64,
    pub last_rtp_ts: u32,
    pub last_sent: Option<Instant>,
}

impl SendStats {
    /// Counts a packet sent on a `clock_rate` stream. Its timestamp
    /// becomes the SR's reference only if it goes on from the last one: a
    /// telephone-event packet carries its event's start (RFC 4733 §2.5),
    /// behind the audio already sent.
    pub fn on_sent(&mut self, now: Instant, rtp_ts: u32, payload_len: usize, clock_rate: u32) {
        self.packets += 1;
        self.octets += payload_len as u64;
        let later = self.last_sent.is_none()
            || crate::rewrite::later_timestamp(rtp_ts, self.last_rtp_ts, clock_rate);
        if later {
            self.last_rtp_ts = rtp_ts;
            self.last_sent = Some(now);
        }
    }

    /// The stream's timestamps start again on another base (its clock
    /// changed): the next packet sent is the SR's reference, whatever its
    /// timestamp. The counts go on.
    pub fn new_timeline(&mut self) {
        self.last_sent = None;
    }

    /// The RTP timestamp corresponding to `now` (the last one sent advanced
    /// by the time since), for the SR.
    pub fn rtp_ts_at(&self, now: Instant, clock_rate: u32) -> u32 {
        match self.last_sent {
            Some(at) => {
                let d = now.saturating_duration_since(at).as_nanos();
                let ticks = d * u128::from(clock_rate) / 1_000_000_000;
                self.last_rtp_ts.wrapping_add(ticks as u32)
            }
            None => self.last_rtp_ts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_reports_timestamp_follows_the_audio_not_a_keys_start() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = SendStats::default();
        s.on_sent(ms(0), 1000, 160, 8000);
        s.on_sent(ms(20), 1160, 160, 8000);
        // Telephone-event packets of a key pressed at ts 1000.
        s.on_sent(ms(40), 1000, 4, 8000);
        s.on_sent(ms(45), 1000, 4, 8000);
        assert_eq!((s.packets, s.octets), (4, 328));
        assert_eq!(s.rtp_ts_at(ms(60), 8000), 1160 + 320);
        // Across the 32-bit wrap, the later timestamp is still taken.
        let mut s = SendStats::default();
        s.on_sent(ms(0), u32::MAX - 100, 160, 8000);
        s.on_sent(ms(20), 59, 160, 8000);
        assert_eq!(s.rtp_ts_at(ms(20), 8000), 59);
        // A stream whose timestamps start again far behind (its source
        // restarted its clock) is followed there; and after a new
        // timeline (the clock changed), whatever comes next.
        s.on_sent(ms(40), 1_000_000_000, 160, 8000);
        s.on_sent(ms(60), 5_000, 160, 8000);
        assert_eq!(s.rtp_ts_at(ms(60), 8000), 5_000);
        s.new_timeline();
        s.on_sent(ms(80), 4_000, 160, 48_000);
        assert_eq!(s.rtp_ts_at(ms(80), 48_000), 4_000);
    }

    fn feed(s: &mut ReceiveStats, t0: Instant, seqs: &[u16]) -> Vec<SeqVerdict> {
        seqs.iter()
            .map(|&q| {
                let ts = u32::from(q) * 160;
                s.update(t0 + Duration::from_millis(20 * u64::from(q)), q, ts, 160)
            })
            .collect()
    }

    #[test]
    fn probation_then_valid() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        let v = feed(&mut s, t0, &[10, 11, 12]);
        assert_eq!(
            v,
            vec![SeqVerdict::Probation, SeqVerdict::Valid, SeqVerdict::Valid]
        );
        assert_eq!(s.received(), 2);
        assert_eq!(s.expected(), 2);
        assert_eq!(s.cumulative_lost(), 0);
    }

    #[test]
    fn wrap_around_and_loss() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        let mut seqs: Vec<u16> = (65530..=65535).collect();
        seqs.extend(0..10u16);
        // Lose two packets after the wrap.
        seqs.retain(|&q| q != 3 && q != 4);
        feed(&mut s, t0, &seqs);
        assert_eq!(s.extended_max(), 65536 + 9);
        // Base is 65531 (after probation): 65531..=65545 is 15 expected.
        assert_eq!(s.expected(), 15);
        assert_eq!(s.received(), 13);
        assert_eq!(s.cumulative_lost(), 2);
        let f = s.take_fraction_lost();
        assert_eq!(f, (2 * 256 / 15) as u8);
        // A clean interval after that reports no loss.
        feed(&mut s, t0, &[10, 11, 12]);
        assert_eq!(s.take_fraction_lost(), 0);
    }

    #[test]
    fn duplicates_reorder_and_restart() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        feed(&mut s, t0, &[100, 101, 102, 104]);
        assert_eq!(feed(&mut s, t0, &[104]), vec![SeqVerdict::Duplicate]);
        // A late packet within the misorder window still counts.
        assert_eq!(feed(&mut s, t0, &[103]), vec![SeqVerdict::Valid]);
        assert_eq!(s.cumulative_lost(), 0);
        // A jump of 20000: bad, then the next in order re-syncs.
        assert_eq!(feed(&mut s, t0, &[20000]), vec![SeqVerdict::BadSequence]);
        assert_eq!(feed(&mut s, t0, &[20001]), vec![SeqVerdict::Valid]);
        assert_eq!(s.extended_max(), 20001);
        assert_eq!(s.expected(), 1);
    }

    #[test]
    fn a_new_source_starts_its_own_jitter() {
        let t0 = Instant::now();
        let mut r = ReceiveStats::new(8000);
        for i in 0..10u16 {
            r.update(
                t0 + Duration::from_millis(20 * u64::from(i)),
                i,
                160 * u32::from(i),
                160,
            );
        }
        // A new source, paced as well, whose timestamps are elsewhere:
        // taken as one stream, its jump reads as huge jitter.
        r.new_source();
        for i in 10..20u16 {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            r.update(at, i, 9_000_000 + 160 * u32::from(i), 160);
        }
        assert_eq!(r.jitter_rtp(), 0);
    }

    /// A new source's sequence numbers are its own: ones that happen to
    /// lie just above (or below) the old source's are neither a gap nor
    /// reordering; the stream's total loss keeps what earlier sources lost.
    #[test]
    fn a_new_source_counts_its_own_sequence_and_loss() {
        let t0 = Instant::now();
        let at = |k: u64| t0 + Duration::from_millis(20 * k);
        let mut r = ReceiveStats::new(8000);
        for (k, seq) in (1000..=1100u16).filter(|s| *s != 1050).enumerate() {
            r.update(at(k as u64), seq, u32::from(seq) * 160, 160);
        }
        assert_eq!(r.cumulative_lost(), 1);
        for (start, k0) in [(2000u16, 200u64), (1900, 400)] {
            r.new_source();
            for k in 0..=100u16 {
                let seq = start + k;
                r.update(at(k0 + u64::from(k)), seq, u32::from(seq) * 160, 160);
            }
            let block = r.report_block(at(k0 + 101), 9);
            assert_eq!(
                (block.cumulative_lost, block.fraction_lost),
                (0, 0),
                "source from {start}"
            );
            assert_eq!(r.extended_max(), u32::from(start) + 100);
        }
        assert_eq!(r.lost_total(), 1);
    }

    /// A far end whose codec runs on another clock (Opus, 48 kHz): arrivals
    /// are measured on it, so a paced stream has no jitter.
    #[test]
    fn jitter_is_measured_on_the_sources_clock() {
        let t0 = Instant::now();
        let mut r = ReceiveStats::new(8000);
        r.set_clock_rate(48_000);
        for q in 0..50u16 {
            let at = t0 + Duration::from_millis(20 * u64::from(q));
            r.update(at, q, u32::from(q) * 960, 80);
        }
        assert_eq!(r.jitter_rtp(), 0);
        assert_eq!(r.jitter(), Duration::ZERO);
    }

    #[test]
    fn jitter_zero_for_perfect_pacing_and_grows_with_variation() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        feed(&mut s, t0, &(0..50).collect::<Vec<_>>());
        assert_eq!(s.jitter_rtp(), 0);
        // Alternate arrivals 10 ms early/late: |D| = 20 ms = 160 ticks
        // each time; J converges towards 160.
        let mut s = ReceiveStats::new(8000);
        for q in 0..400u16 {
            let skew = if q % 2 == 0 { 0 } else { 20 };
            let at = t0 + Duration::from_millis(20 * u64::from(q) + skew);
            s.update(at, q, u32::from(q) * 160, 160);
        }
        let j = s.jitter_rtp();
        assert!((150..=160).contains(&j), "jitter {j}");
        assert_eq!(s.jitter(), Duration::from_micros(u64::from(j) * 125));
    }

    #[test]
    fn jitter_of_wild_timestamps_neither_overflows_nor_wraps() {
        // A far end's timestamps jumping by up to 2^31 each packet (all
        // arriving at once): |D| is 2^31, so J tends to 2^31 ticks, 16
        // times that scaled. Kept in 32 bits, the scaled estimate wrapped
        // after two such jumps, and these four (chosen to leave it at
        // 2^32 - 4) made the next `jitter + 8` overflow: a panic in a
        // build with overflow checks, garbage in a report block without.
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        // Probation, then the timestamps that drive J to 2^32 - 4 (scaled).
        for (q, ts) in [0u32, 0, 0x8000_0000, 0, 394_264_572]
            .into_iter()
            .enumerate()
        {
            s.update(t0, q as u16, ts, 160);
        }
        let mut last = s.jitter_rtp();
        for q in 5..40u16 {
            let ts = if q % 2 == 0 { 0 } else { 0x8000_0000 };
            assert_ne!(s.update(t0, q, ts, 160), SeqVerdict::BadSequence);
            // Every |D| is at least J: the estimate only grows.
            assert!(s.jitter_rtp() >= last, "jitter fell to {}", s.jitter_rtp());
            last = s.jitter_rtp();
        }
        assert!(last > 1 << 30, "jitter {last}");
        assert!(last <= 1 << 31, "jitter {last}");
    }

    #[test]
    fn report_block_lsr_dlsr() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        feed(&mut s, t0, &[1, 2, 3]);
        s.on_sender_report(t0, 0x1122_3344_5566_7788);
        let rb = s.report_block(t0 + Duration::from_millis(500), 42);
        assert_eq!(rb.ssrc, 42);
        assert_eq!(rb.last_sr, 0x3344_5566);
        assert_eq!(rb.delay_since_last_sr, 32768);
        assert_eq!(rb.highest_seq, 3);
    }

    #[test]
    fn send_stats_extrapolate_timestamp() {
        let t0 = Instant::now();
        let mut s = SendStats::default();
        s.on_sent(t0, 1000, 160, 8000);
        s.on_sent(t0, 1160, 160, 8000);
        assert_eq!(s.packets, 2);
        assert_eq!(s.octets, 320);
        assert_eq!(s.rtp_ts_at(t0 + Duration::from_millis(10), 8000), 1240);
    }
}
