//! An adaptive jitter buffer for decoded paths (transcoding, AI tap).
//!
//! Packets go in as they arrive ([`JitterBuffer::insert`]) and come out one
//! per ptime in sequence order when the owner asks at their due time
//! ([`JitterBuffer::pop`]; [`JitterBuffer::next_due`] says when). Storage is
//! a fixed ring of `capacity` slots allocated once, indexed by sequence
//! number, so it reorders up to `capacity` packets and never allocates.
//!
//! * A packet older than the one due next is late and dropped; a second copy
//!   of a stored packet is a duplicate and dropped.
//! * When the packet due is missing but later ones are here, the buffer
//!   reports [`Playout::Lost`] with the next packet (an Opus decoder rebuilds
//!   the lost frame from its FEC; others conceal) and moves on.
//! * When nothing is here at all (underrun) it reports `Lost` without
//!   moving on, which stretches the delay by one ptime; after `max_delay` of
//!   silence the stream is considered paused and the buffer goes idle until
//!   the next packet.
//! * The target delay follows the measured interarrival jitter (RFC 3550
//!   A.8 estimator): `ptime + 3 × jitter`, clamped to `min_delay..=max_delay`.
//!   When more than target + 2 ptime is buffered, one frame is dropped to
//!   catch up.
//! * A packet `capacity` or more ahead of the playout point re-synchronises
//!   the buffer on it (the far end restarted its sequence).
//! * The packet duration (`ptime`) is learned from the timestamps of
//!   consecutive packets (two agreeing steps of 2.5–200 ms in a row), so a
//!   far end that sends 10, 30 or 60 ms packets is played at its own pace;
//!   [`JitterBuffer::ptime`] says what it is.
//! * With [`JitterConfig::on_arrival`] (a consumer with no playout clock of
//!   its own, such as a voice-AI engine fed over a socket), the frame at the
//!   playout point is released as soon as it is here rather than at its due
//!   time; only a missing frame is waited for, until one ptime plus the
//!   target delay after the previous release, and then reported lost as
//!   above. Reordering within that wait is still put right, but nothing is
//!   delayed that arrives in order.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    pub ptime: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Slots (packets held at most). Bounds the reorder window.
    pub capacity: usize,
    /// Largest payload stored; larger ones are refused.
    pub max_payload: usize,
    /// RTP clock rate of the stream (for the jitter estimate).
    pub clock_rate: u32,
    /// Release frames as they arrive in order instead of on the playout
    /// clock (see the module docs).
    pub on_arrival: bool,
}

impl JitterConfig {
    pub fn new(clock_rate: u32) -> Self {
        JitterConfig {
            ptime: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            capacity: 16,
            max_payload: crate::opus::MAX_PACKET,
            clock_rate,
            on_arrival: false,
        }
    }
}

/// What happened to an inserted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Stored,
    /// Its turn has passed.
    Late,
    Duplicate,
    TooLarge,
    /// Far ahead of the playout point: the buffer restarted on it.
    Resync,
}

/// One ptime of output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    Frame {
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &'a [u8],
    },
    /// The frame due is missing: conceal it, or rebuild it from `next`'s FEC.
    Lost { seq: u16, next: Option<&'a [u8]> },
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub stored: u64,
    pub played: u64,
    pub late: u64,
    pub duplicates: u64,
    pub too_large: u64,
    pub resyncs: u64,
    pub lost: u64,
    pub underruns: u64,
    pub catchup_drops: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    occupied: bool,
    seq: u16,
    ts: u32,
    marker: bool,
    len: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// Waiting for the first playout time.
    Buffering,
    Playing,
}

#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Box<[Slot]>,
    data: Box<[u8]>,
    state: State,
    play_seq: u16,
    high_seq: u16,
    next_due: Instant,
    target: Duration,
    /// Interarrival jitter estimate in microseconds, scaled by 16.
    jitter_q4: u64,
    last_arrival: Option<(Instant, u32)>,
    /// The last packet inserted (sequence, timestamp) and the timestamp
    /// step before it, for learning the packet duration.
    last_inserted: Option<(u16, u32)>,
    last_step: u32,
    silent_ticks: u32,
    pub stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(now: Instant, mut cfg: JitterConfig) -> Self {
        cfg.capacity = cfg.capacity.clamp(2, 1024);
        cfg.max_payload = cfg.max_payload.clamp(1, usize::from(u16::MAX));
        cfg.clock_rate = cfg.clock_rate.max(1);
        if cfg.ptime.is_zero() {
            cfg.ptime = Duration::from_millis(20);
        }
        cfg.max_delay = cfg.max_delay.max(cfg.min_delay);
        JitterBuffer {
            slots: vec![Slot::default(); cfg.capacity].into_boxed_slice(),
            data: vec![0; cfg.capacity * cfg.max_payload].into_boxed_slice(),
            state: State::Idle,
            play_seq: 0,
            high_seq: 0,
            next_due: now,
            target: (cfg.min_delay + cfg.ptime).min(cfg.max_delay),
            jitter_q4: 0,
            last_arrival: None,
            last_inserted: None,
            last_step: 0,
            silent_ticks: 0,
            stats: JitterStats::default(),
            cfg,
        }
    }

    /// The far end's packet duration (learned; 20 ms until then).
    pub fn ptime(&self) -> Duration {
        self.cfg.ptime
    }

    /// Learns the packet duration from consecutive packets' timestamps. A
    /// marked packet (the first of a talkspurt after silence) says nothing.
    fn learn_ptime(&mut self, seq: u16, ts: u32, marker: bool) {
        if let Some((prev_seq, prev_ts)) = self.last_inserted
            && seq == prev_seq.wrapping_add(1)
            && !marker
        {
            let step = ts.wrapping_sub(prev_ts);
            let rate = self.cfg.clock_rate;
            if step == self.last_step && (rate / 400..=rate / 1000 * 200).contains(&step) {
                self.cfg.ptime =
                    Duration::from_micros(u64::from(step) * 1_000_000 / u64::from(rate));
            }
            self.last_step = step;
        }
        self.last_inserted = Some((seq, ts));
    }

    /// Current target delay.
    pub fn target_delay(&self) -> Duration {
        self.target
    }

    /// Interarrival jitter estimate.
    pub fn jitter(&self) -> Duration {
        Duration::from_micros(self.jitter_q4 >> 4)
    }

    /// When [`pop`](Self::pop) next has something to say (None while idle).
    pub fn next_due(&self) -> Option<Instant> {
        (self.state != State::Idle).then_some(self.next_due)
    }

    fn index(&self, seq: u16) -> usize {
        usize::from(seq) % self.cfg.capacity
    }

    fn clear(&mut self) {
        for s in self.slots.iter_mut() {
            s.occupied = false;
        }
    }

    fn estimate_jitter(&mut self, now: Instant, ts: u32) {
        if let Some((prev_at, prev_ts)) = self.last_arrival {
            // Signed, from one subtraction in the usual order.
            let arrival_us = match now.checked_duration_since(prev_at) {
                Some(d) => d.as_micros() as i64,
                None => -(prev_at.saturating_duration_since(now).as_micros() as i64),
            };
            let ts_us = i64::from(ts.wrapping_sub(prev_ts) as i32) * 1_000_000
                / i64::from(self.cfg.clock_rate);
            let d = (arrival_us - ts_us).unsigned_abs().min(10_000_000);
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_arrival = Some((now, ts));
        let wanted = self.cfg.ptime + 3 * self.jitter();
        self.target = wanted.clamp(self.cfg.min_delay, self.cfg.max_delay);
    }

    fn store(&mut self, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Insert {
        let i = self.index(seq);
        let slot = &mut self.slots[i];
        if slot.occupied && slot.seq == seq {
            self.stats.duplicates += 1;
            return Insert::Duplicate;
        }
        *slot = Slot {
            occupied: true,
            seq,
            ts,
            marker,
            len: payload.len() as u16,
        };
        let at = i * self.cfg.max_payload;
        self.data[at..at + payload.len()].copy_from_slice(payload);
        if (seq.wrapping_sub(self.high_seq) as i16) > 0 {
            self.high_seq = seq;
        }
        self.stats.stored += 1;
        Insert::Stored
    }

    fn restart(&mut self, now: Instant, seq: u16) {
        self.clear();
        self.state = State::Buffering;
        self.play_seq = seq;
        self.high_seq = seq;
        self.next_due = now + self.target;
        self.silent_ticks = 0;
    }

    /// The longest payload [`insert`](Self::insert) stores.
    pub fn max_payload(&self) -> usize {
        self.cfg.max_payload
    }

    pub fn insert(
        &mut self,
        now: Instant,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> Insert {
        if payload.len() > self.cfg.max_payload {
            self.stats.too_large += 1;
            return Insert::TooLarge;
        }
        self.learn_ptime(seq, ts, marker);
        self.estimate_jitter(now, ts);
        let cap = self.cfg.capacity as i32;
        let ahead = i32::from(seq.wrapping_sub(self.play_seq) as i16);
        match self.state {
            State::Idle => {
                self.restart(now, seq);
                self.store(seq, ts, marker, payload)
            }
            State::Buffering if ahead < 0 => {
                // Reordered before playout started: start earlier if the
                // window still holds the newest packet.
                let span = i32::from(self.high_seq.wrapping_sub(seq) as i16);
                if span < cap {
                    self.play_seq = seq;
                    self.store(seq, ts, marker, payload)
                } else {
                    self.stats.late += 1;
                    Insert::Late
                }
            }
            State::Playing if ahead < 0 => {
                self.stats.late += 1;
                Insert::Late
            }
            _ if ahead >= cap => {
                self.stats.resyncs += 1;
                self.restart(now, seq);
                self.store(seq, ts, marker, payload);
                Insert::Resync
            }
            _ => {
                self.silent_ticks = 0;
                self.store(seq, ts, marker, payload)
            }
        }
    }

    fn occupied(&self, seq: u16) -> bool {
        let s = &self.slots[self.index(seq)];
        s.occupied && s.seq == seq
    }

    fn payload(&self, seq: u16) -> &[u8] {
        let i = self.index(seq);
        let at = i * self.cfg.max_payload;
        &self.data[at..at + usize::from(self.slots[i].len)]
    }

    /// Plays the stored frame `seq` (the playout point).
    fn take(&mut self, seq: u16) -> Playout<'_> {
        let i = self.index(seq);
        self.slots[i].occupied = false;
        self.play_seq = seq.wrapping_add(1);
        self.silent_ticks = 0;
        self.stats.played += 1;
        let s = self.slots[i];
        Playout::Frame {
            seq,
            timestamp: s.ts,
            marker: s.marker,
            payload: self.payload(seq),
        }
    }

    /// Frames buffered from the playout point to the newest packet.
    fn span(&self) -> u32 {
        let d = self.high_seq.wrapping_sub(self.play_seq) as i16;
        if d < 0 { 0 } else { d as u32 + 1 }
    }

    /// The frame due at `now`, if one is (with `on_arrival`, also the next
    /// frame in order as soon as it is here). Call again until `None`.
    pub fn pop(&mut self, now: Instant) -> Option<Playout<'_>> {
        if self.state == State::Idle {
            return None;
        }
        if self.cfg.on_arrival && self.occupied(self.play_seq) {
            // Wait for the next frame until one ptime plus the target delay
            // from now; declare it lost after that.
            self.next_due = now + self.cfg.ptime + self.target;
            self.state = State::Playing;
            return Some(self.take(self.play_seq));
        }
        if now < self.next_due {
            return None;
        }
        self.state = State::Playing;
        // A driver that stalled does not get a burst: realign.
        if now.saturating_duration_since(self.next_due) > self.cfg.max_delay {
            self.next_due = now;
        }
        self.next_due += self.cfg.ptime;
        let ptime_ns = self.cfg.ptime.as_nanos().max(1);
        // Catch up when well over target.
        let excess = self.target + 2 * self.cfg.ptime;
        if u128::from(self.span()) * ptime_ns > excess.as_nanos() && self.span() > 1 {
            let i = self.index(self.play_seq);
            self.slots[i].occupied = false;
            self.play_seq = self.play_seq.wrapping_add(1);
            self.stats.catchup_drops += 1;
        }
        let seq = self.play_seq;
        if self.occupied(seq) {
            return Some(self.take(seq));
        }
        if self.span() > 0 {
            // Later packets are here: this one is lost.
            self.play_seq = seq.wrapping_add(1);
            self.stats.lost += 1;
            let next = seq.wrapping_add(1);
            let next = self.occupied(next).then(|| self.payload(next));
            return Some(Playout::Lost { seq, next });
        }
        // Nothing buffered: underrun. Hold the playout point (stretching the
        // delay) until the stream looks paused.
        self.stats.underruns += 1;
        self.silent_ticks += 1;
        let paused = u128::from(self.silent_ticks) * ptime_ns >= self.cfg.max_delay.as_nanos();
        if paused {
            self.state = State::Idle;
            self.clear();
            return None;
        }
        Some(Playout::Lost { seq, next: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_millis(20);

    fn cfg() -> JitterConfig {
        JitterConfig {
            min_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(200),
            ..JitterConfig::new(8000)
        }
    }

    fn pl(seq: u16) -> [u8; 4] {
        [seq as u8, (seq >> 8) as u8, 0xaa, 0xbb]
    }

    /// Drains what is due at `now` into (seq, kind) pairs.
    fn drain(jb: &mut JitterBuffer, now: Instant) -> Vec<(u16, char)> {
        let mut out = Vec::new();
        while let Some(p) = jb.pop(now) {
            out.push(match p {
                Playout::Frame { seq, payload, .. } => {
                    assert_eq!(payload, &pl(seq)[..]);
                    (seq, 'F')
                }
                Playout::Lost { seq, next: Some(_) } => (seq, 'N'),
                Playout::Lost { seq, next: None } => (seq, 'L'),
            });
        }
        out
    }

    #[test]
    fn reorders_and_plays_in_sequence() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0, cfg());
        // Perfectly paced arrivals but 2 and 3 swapped.
        let order = [0u16, 1, 3, 2, 4, 5, 6, 7, 8, 9];
        let mut played = Vec::new();
        for (i, &s) in order.iter().enumerate() {
            let now = t0 + P * i as u32;
            assert_eq!(
                jb.insert(now, s, u32::from(s) * 160, false, &pl(s)),
                Insert::Stored
            );
            played.extend(drain(&mut jb, now));
        }
        let seqs: Vec<u16> = played.iter().map(|p| p.0).collect();
        assert_eq!(seqs, (0..seqs.len() as u16).collect::<Vec<_>>());
        assert!(played.iter().all(|p| p.1 == 'F'));
        // Little jitter: the target stays at the floor.
        assert_eq!(jb.target_delay(), Duration::from_millis(40));
    }

    #[test]
    fn on_arrival_releases_in_order_frames_at_once_and_waits_only_for_gaps() {
        let t0 = Instant::now();
        let on_arrival = JitterConfig {
            on_arrival: true,
            ..cfg()
        };
        let mut jb = JitterBuffer::new(t0, on_arrival);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let put = |jb: &mut JitterBuffer, ms: u64, s: u16| {
            jb.insert(at(ms), s, u32::from(s) * 160, false, &pl(s));
            drain(jb, at(ms))
        };
        // In order: each frame out the moment it arrives, the first too.
        assert_eq!(put(&mut jb, 0, 0), vec![(0, 'F')]);
        assert_eq!(put(&mut jb, 20, 1), vec![(1, 'F')]);
        assert_eq!(put(&mut jb, 43, 2), vec![(2, 'F')]);
        // 3 and 4 swapped: 4 waits for 3, then both go.
        assert_eq!(put(&mut jb, 61, 4), vec![]);
        assert_eq!(put(&mut jb, 64, 3), vec![(3, 'F'), (4, 'F')]);
        // 5 never comes: it is waited for one ptime plus the target (40 ms)
        // after 4 went out, then reported lost with 6's payload as the FEC
        // hint, and 6 follows at once.
        assert_eq!(put(&mut jb, 100, 6), vec![]);
        assert_eq!(jb.next_due(), Some(at(64 + 20 + 40)));
        assert_eq!(drain(&mut jb, at(123)), vec![]);
        assert_eq!(drain(&mut jb, at(124)), vec![(5, 'N'), (6, 'F')]);
        assert_eq!(put(&mut jb, 125, 5), vec![]);
        assert_eq!(jb.stats.late, 1);
        assert_eq!(jb.stats.lost, 1);
        assert_eq!(jb.stats.played, 6);
        // The caller stops sending: concealment every ptime from the wait's
        // end until the stream counts as paused, then nothing.
        let mut concealed = Vec::new();
        for ms in (140..600).step_by(20) {
            concealed.extend(drain(&mut jb, at(ms)));
        }
        assert!(concealed.iter().all(|&(s, k)| s == 7 && k == 'L'));
        assert!(!concealed.is_empty() && concealed.len() <= 10);
        assert_eq!(jb.next_due(), None);
        // A new talkspurt starts at once.
        assert_eq!(put(&mut jb, 700, 50), vec![(50, 'F')]);
    }

    #[test]
    fn learns_the_far_ends_packet_duration_from_timestamps() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0, cfg());
        assert_eq!(jb.ptime(), P);
        // 30 ms packets: two agreeing steps of 240 ticks.
        jb.insert(t0, 0, 0, true, &pl(0));
        jb.insert(t0, 1, 240, false, &pl(1));
        assert_eq!(jb.ptime(), P);
        jb.insert(t0, 2, 480, false, &pl(2));
        assert_eq!(jb.ptime(), Duration::from_millis(30));
        // A talkspurt after silence (marker, timestamp jump) changes nothing,
        // nor does a step out of range (an Opus DTX gap of 400 ms).
        jb.insert(t0, 3, 8480, true, &pl(3));
        jb.insert(t0, 4, 8720, false, &pl(4));
        assert_eq!(jb.ptime(), Duration::from_millis(30));
        jb.insert(t0, 5, 11_920, false, &pl(5));
        jb.insert(t0, 6, 15_120, false, &pl(6));
        assert_eq!(jb.ptime(), Duration::from_millis(30));
        // Paced at the learned duration.
        let first = jb.next_due().unwrap();
        drain(&mut jb, first);
        assert_eq!(jb.next_due(), Some(first + Duration::from_millis(30)));
    }

    #[test]
    fn late_duplicate_and_loss_with_fec_hint() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0, cfg());
        for s in [0u16, 1] {
            jb.insert(t0, s, u32::from(s) * 160, false, &pl(s));
        }
        assert_eq!(jb.insert(t0, 1, 160, false, &pl(1)), Insert::Duplicate);
        // 2 never comes, 3 does.
        jb.insert(t0, 3, 480, false, &pl(3));
        // Due at 40, 60, 80 and 100 ms.
        let now = t0 + Duration::from_millis(110);
        assert_eq!(
            drain(&mut jb, now),
            vec![(0, 'F'), (1, 'F'), (2, 'N'), (3, 'F')]
        );
        assert_eq!(jb.insert(now, 2, 320, false, &pl(2)), Insert::Late);
        assert_eq!(jb.stats.late, 1);
        assert_eq!(jb.stats.lost, 1);
        assert_eq!(jb.stats.duplicates, 1);
    }

    #[test]
    fn underrun_stretches_then_goes_idle() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0, cfg());
        jb.insert(t0, 10, 0, false, &pl(10));
        let first_due = jb.next_due().unwrap();
        assert_eq!(first_due, t0 + Duration::from_millis(40));
        assert_eq!(drain(&mut jb, first_due), vec![(10, 'F')]);
        // Packet 11 is 30 ms late: one concealed frame, then it plays (the
        // playout point waited for it).
        let t = first_due + P;
        assert_eq!(drain(&mut jb, t), vec![(11, 'L')]);
        jb.insert(t + Duration::from_millis(10), 11, 160, false, &pl(11));
        assert_eq!(drain(&mut jb, t + P), vec![(11, 'F')]);
        // Then silence: concealment for max_delay, then idle.
        let mut t = t + P;
        let mut concealed = 0;
        for _ in 0..20 {
            t += P;
            concealed += drain(&mut jb, t).len();
        }
        assert_eq!(concealed, 9);
        assert_eq!(jb.next_due(), None);
        // A new talkspurt restarts buffering.
        assert_eq!(jb.insert(t, 40, 4800, true, &pl(40)), Insert::Stored);
        assert!(jb.next_due().is_some());
    }

    #[test]
    fn target_adapts_to_jitter_within_bounds() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0, cfg());
        let mut t = t0;
        // 0 or 80 ms of extra delay, alternating: |D| = 80 ms.
        for s in 0..200u16 {
            let arrival = t0 + P * u32::from(s) + Duration::from_millis(80 * u64::from(s % 2));
            t = t.max(arrival);
            jb.insert(arrival, s, u32::from(s) * 160, false, &pl(s));
            drain(&mut jb, arrival);
        }
        assert!(jb.jitter() > Duration::from_millis(60), "{:?}", jb.jitter());
        assert_eq!(jb.target_delay(), Duration::from_millis(200));
        // Smooth arrivals bring it back down to the floor.
        for s in 200..600u16 {
            let arrival = t0 + P * u32::from(s) + Duration::from_millis(60);
            jb.insert(arrival, s, u32::from(s) * 160, false, &pl(s));
            drain(&mut jb, arrival);
        }
        assert!(jb.jitter() < Duration::from_millis(1));
        assert_eq!(jb.target_delay(), Duration::from_millis(40));
        let _ = t;
    }

    #[test]
    fn catches_up_when_overfull_and_resyncs_on_jump() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0, cfg());
        // A burst of 12 packets at once (after a network stall).
        for s in 0..12u16 {
            jb.insert(t0, s, u32::from(s) * 160, false, &pl(s));
        }
        let due = jb.next_due().unwrap();
        drain(&mut jb, due);
        let mut t = due;
        for _ in 0..12 {
            t += P;
            drain(&mut jb, t);
        }
        assert!(jb.stats.catchup_drops >= 4, "{:?}", jb.stats);
        // Far ahead: resync.
        assert_eq!(jb.insert(t, 5_000, 0, false, &pl(5_000)), Insert::Resync);
        let due = jb.next_due().unwrap();
        assert_eq!(drain(&mut jb, due), vec![(5_000, 'F')]);
        assert_eq!(jb.insert(t, 1, 0, false, &[0u8; 2000]), Insert::TooLarge);
    }

    #[test]
    fn capacity_bounds_reorder_window_across_wrap() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(t0, cfg());
        jb.insert(t0, 65_534, 0, false, &pl(65_534));
        jb.insert(t0, 65_535, 160, false, &pl(65_535));
        jb.insert(t0, 0, 320, false, &pl(0));
        // Reordered before playout started, still inside the window.
        jb.insert(t0, 65_533, 0, false, &pl(65_533));
        let due = jb.next_due().unwrap();
        let got = drain(&mut jb, due + P * 3);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![65_533, 65_534, 65_535, 0]
        );
    }
}
