//! DTMF as RFC 4733 telephone-events: payload parsing and writing, a
//! receiver that reports each digit once, and a sender that produces the
//! packet train of one digit.
//!
//! One event is identified by its RTP timestamp (the event's start) and its
//! event code. The sender's updates carry a growing duration, and the end
//! packet (E bit) is sent three times for robustness; the receiver reports
//! the digit on the first end packet it sees and ignores the
//! retransmissions. An event whose end packets were all lost is reported
//! when the next event starts or when [`DtmfReceiver::poll`] finds it silent
//! for longer than the configured timeout.

use std::time::{Duration, Instant};
use thiserror::Error;

/// Event codes 0..=15 map to these characters (RFC 4733 §3.2); 16 is flash.
const DIGITS: &[u8; 16] = b"0123456789*#ABCD";

/// The character of a DTMF event code.
pub fn event_char(event: u8) -> Option<char> {
    DIGITS.get(usize::from(event)).map(|&c| c as char)
}

/// The event code of a DTMF character.
pub fn char_event(c: char) -> Option<u8> {
    let c = c.to_ascii_uppercase();
    DIGITS.iter().position(|&d| d as char == c).map(|i| i as u8)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DtmfError {
    #[error("telephone-event payload shorter than 4 octets")]
    TooShort,
}

/// One telephone-event payload (the first, if the packet carries several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    /// Power level in -dBm0 (0..=63).
    pub volume: u8,
    /// In RTP timestamp units since the event's start.
    pub duration: u16,
}

impl TelephoneEvent {
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        let b = payload.get(..4).ok_or(DtmfError::TooShort)?;
        Ok(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// Puts the durations of a telephone-event payload (every 4-octet event
/// block of it) from a `from` Hz clock onto a `to` Hz one, in place: a
/// relayed event between legs that agreed events at different rates
/// (8 kHz beside Opus on one, 48 kHz on the other).
pub fn rescale_durations(payload: &mut [u8], from: u32, to: u32) {
    if from == to || from == 0 {
        return;
    }
    for block in payload.chunks_exact_mut(4) {
        let d = u64::from(u16::from_be_bytes([block[2], block[3]]));
        let scaled = (d * u64::from(to) / u64::from(from)).min(u64::from(u16::MAX)) as u16;
        block[2..4].copy_from_slice(&scaled.to_be_bytes());
    }
}

/// Where a digit was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSource {
    /// RFC 4733 telephone-event packets.
    TelephoneEvent,
    /// Tones in the audio (G.711 legs without telephone-event).
    InBand,
}

/// A digit, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    /// Event code (0..=15 are DTMF; see [`event_char`]).
    pub event: u8,
    pub duration: Duration,
    pub source: DtmfSource,
}

impl Digit {
    pub fn char(&self) -> Option<char> {
        event_char(self.event)
    }
}

#[derive(Debug, Clone, Copy)]
struct Current {
    /// The timestamp of the event's current segment.
    ts: u32,
    event: u8,
    duration: u16,
    /// Ticks of the segments before the current one (an event longer
    /// than the 16-bit duration field, RFC 4733 §2.5.1.3).
    before: u64,
    /// The previous segment's timestamp: its last packet, sent three
    /// times, may still arrive.
    previous: Option<u32>,
    last_seen: Instant,
}

/// Durations at least this long end a segment of a long event rather than
/// a digit: the sender is about to run out of the 16-bit field (some of
/// the segment's last updates may be lost).
const SEGMENT_FULL: u16 = 0xF000;

/// Turns received telephone-event packets into one report per digit.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    clock_rate: u32,
    timeout: Duration,
    current: Option<Current>,
    /// The last event reported (timestamp, code): its retransmitted end
    /// packets are ignored.
    done: Option<(u32, u8)>,
}

impl DtmfReceiver {
    /// `timeout`: how long an event may go without packets before it is
    /// reported as ended (its end packets were lost).
    pub fn new(clock_rate: u32, timeout: Duration) -> Self {
        DtmfReceiver {
            clock_rate: clock_rate.max(1),
            timeout,
            current: None,
            done: None,
        }
    }

    fn finish(&mut self, c: Current) -> Digit {
        self.done = Some((c.ts, c.event));
        self.current = None;
        Digit {
            event: c.event,
            duration: Duration::from_micros(
                (c.before + u64::from(c.duration)) * 1_000_000 / u64::from(self.clock_rate),
            ),
            source: DtmfSource::TelephoneEvent,
        }
    }

    /// Accounts one packet. Returns a digit when one is complete; `also`
    /// receives a second digit in the rare case a new event starts while an
    /// earlier one never saw its end (both are reported).
    pub fn on_packet(
        &mut self,
        now: Instant,
        rtp_ts: u32,
        ev: &TelephoneEvent,
        also: &mut Option<Digit>,
    ) -> Option<Digit> {
        if self.done == Some((rtp_ts, ev.event)) {
            return None; // retransmitted end, or a late update of it
        }
        if let Some(c) = &mut self.current
            && c.event == ev.event
        {
            if c.previous == Some(rtp_ts) {
                return None; // the previous segment's last packet, again
            }
            // The next segment of a long event starts where the last one
            // ended, its timestamp on by that segment's full duration
            // (0xFFFF): the same key still held, not a second press.
            let step = rtp_ts.wrapping_sub(c.ts);
            let slack = self.clock_rate / 20;
            if c.ts != rtp_ts
                && c.duration >= SEGMENT_FULL
                && step >= u32::from(c.duration)
                && step <= u32::from(u16::MAX).saturating_add(slack)
            {
                c.before += u64::from(step);
                c.previous = Some(c.ts);
                c.ts = rtp_ts;
                c.duration = 0;
            }
        }
        if let Some(c) = self.current
            && (c.ts != rtp_ts || c.event != ev.event)
        {
            *also = Some(self.finish(c));
        }
        let c = self.current.get_or_insert(Current {
            ts: rtp_ts,
            event: ev.event,
            duration: 0,
            before: 0,
            previous: None,
            last_seen: now,
        });
        c.duration = c.duration.max(ev.duration);
        c.last_seen = now;
        if ev.end {
            let c = *c;
            let d = self.finish(c);
            return match also.take() {
                Some(earlier) => {
                    *also = Some(d);
                    Some(earlier)
                }
                None => Some(d),
            };
        }
        also.take()
    }

    /// Reports an event whose end never came once it has been silent for
    /// the timeout.
    pub fn poll(&mut self, now: Instant) -> Option<Digit> {
        let c = self.current?;
        if now.saturating_duration_since(c.last_seen) >= self.timeout {
            return Some(self.finish(c));
        }
        None
    }

    /// When [`poll`](Self::poll) may have something to report.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.current.map(|c| c.last_seen + self.timeout)
    }
}

/// One packet of a digit being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    pub payload: [u8; 4],
    pub marker: bool,
    /// Offset of this packet's RTP timestamp from the event start: always 0
    /// (all packets of an event carry its start timestamp).
    pub timestamp: u32,
}

/// Produces the packet train of one digit, one packet per call of
/// [`DtmfSender::next_packet`] (the owner calls it once per ptime).
#[derive(Debug, Clone)]
pub struct DtmfSender {
    event: u8,
    volume: u8,
    start_ts: u32,
    total: u16,
    step: u16,
    sent: u16,
    started: bool,
    ends_sent: u8,
}

impl DtmfSender {
    /// A digit of `duration` at `clock_rate` sent in `ptime` steps, starting
    /// at RTP timestamp `start_ts`. Durations past the 16-bit field are cut.
    pub fn new(
        event: u8,
        volume: u8,
        duration: Duration,
        clock_rate: u32,
        ptime: Duration,
        start_ts: u32,
    ) -> Self {
        let ticks = |d: Duration| {
            (d.as_micros() * u128::from(clock_rate) / 1_000_000).clamp(1, u128::from(u16::MAX))
                as u16
        };
        DtmfSender {
            event,
            volume: volume.min(63),
            start_ts,
            total: ticks(duration),
            step: ticks(ptime),
            sent: 0,
            started: false,
            ends_sent: 0,
        }
    }

    /// The next packet, or `None` when the digit is complete.
    pub fn next_packet(&mut self) -> Option<EventPacket> {
        if self.ends_sent >= 3 {
            return None;
        }
        let marker = !self.started;
        self.started = true;
        self.sent = self.sent.saturating_add(self.step).min(self.total);
        let end = self.sent >= self.total;
        if end {
            self.ends_sent += 1;
        }
        Some(EventPacket {
            payload: TelephoneEvent {
                event: self.event,
                end,
                volume: self.volume,
                duration: self.sent,
            }
            .to_bytes(),
            marker,
            timestamp: self.start_ts,
        })
    }

    pub fn is_done(&self) -> bool {
        self.ends_sent >= 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1600,
        };
        let b = e.to_bytes();
        assert_eq!(b, [11, 0x8a, 0x06, 0x40]);
        assert_eq!(TelephoneEvent::parse(&b), Ok(e));
        assert_eq!(TelephoneEvent::parse(&b[..3]), Err(DtmfError::TooShort));
        // R bit ignored, volume masked.
        assert_eq!(TelephoneEvent::parse(&[5, 0x7f, 0, 0]).unwrap().volume, 63);
        assert_eq!(event_char(11), Some('#'));
        assert_eq!(event_char(16), None);
        assert_eq!(char_event('d'), Some(15));
        assert_eq!(char_event('x'), None);
    }

    /// Sends a digit through a sender and receiver, with optional losses.
    fn send(digit: char, lose: &[usize]) -> Vec<Digit> {
        let t0 = Instant::now();
        let mut tx = DtmfSender::new(
            char_event(digit).unwrap(),
            10,
            Duration::from_millis(100),
            8000,
            Duration::from_millis(20),
            4242,
        );
        let mut rx = DtmfReceiver::new(8000, Duration::from_millis(300));
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(p) = tx.next_packet() {
            if !lose.contains(&i) {
                let ev = TelephoneEvent::parse(&p.payload).unwrap();
                let mut also = None;
                out.extend(rx.on_packet(
                    t0 + Duration::from_millis(20 * i as u64),
                    p.timestamp,
                    &ev,
                    &mut also,
                ));
                out.extend(also);
            }
            i += 1;
        }
        out.extend(rx.poll(t0 + Duration::from_secs(5)));
        out
    }

    #[test]
    fn digit_reported_once_despite_retransmitted_ends() {
        let got = send('7', &[]);
        assert_eq!(
            got,
            vec![Digit {
                event: 7,
                duration: Duration::from_millis(100),
                source: DtmfSource::TelephoneEvent
            }]
        );
        // First end lost: the second one reports it.
        assert_eq!(send('*', &[4]).len(), 1);
    }

    #[test]
    fn all_ends_lost_reported_on_timeout() {
        let got = send('A', &[4, 5, 6]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].char(), Some('A'));
        assert_eq!(got[0].duration, Duration::from_millis(80));
    }

    #[test]
    fn sender_train_shape() {
        let mut tx = DtmfSender::new(
            1,
            7,
            Duration::from_millis(50),
            8000,
            Duration::from_millis(20),
            9,
        );
        let pkts: Vec<_> = std::iter::from_fn(|| tx.next_packet()).collect();
        let evs: Vec<_> = pkts
            .iter()
            .map(|p| TelephoneEvent::parse(&p.payload).unwrap())
            .collect();
        assert_eq!(
            evs.iter().map(|e| (e.duration, e.end)).collect::<Vec<_>>(),
            vec![
                (160, false),
                (320, false),
                (400, true),
                (400, true),
                (400, true)
            ]
        );
        assert!(pkts[0].marker && pkts[1..].iter().all(|p| !p.marker));
        assert!(pkts.iter().all(|p| p.timestamp == 9));
        assert!(tx.is_done());
    }

    #[test]
    fn back_to_back_digits_and_missing_end() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8000, Duration::from_millis(300));
        let ev = |event, end, duration| TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        };
        let mut also = None;
        assert_eq!(rx.on_packet(t0, 100, &ev(1, false, 160), &mut also), None);
        // Digit 2 starts (new timestamp) before 1 ended: 1 is reported.
        let r = rx.on_packet(t0, 1000, &ev(2, false, 160), &mut also);
        assert_eq!(r.map(|d| d.event), Some(1));
        assert_eq!(also, None);
        let r = rx.on_packet(t0, 1000, &ev(2, true, 800), &mut also);
        assert_eq!(r.map(|d| d.event), Some(2));
        assert_eq!(rx.on_packet(t0, 1000, &ev(2, true, 800), &mut also), None);
        assert_eq!(rx.next_timeout(), None);
        // Same digit again, new timestamp: a new report.
        let r = rx.on_packet(t0, 3000, &ev(2, true, 800), &mut also);
        assert_eq!(r.map(|d| d.event), Some(2));
    }

    /// A key held past the 16-bit duration field (1.37 s at 48 kHz) comes
    /// in segments, each after the first timestamped where the last ended,
    /// only the last with the end bit (RFC 4733 §2.5.1.3): one digit, as
    /// long as all of them. A second press of the same key whose first
    /// lost its ends is still a second digit.
    #[test]
    fn a_long_event_in_segments_is_one_digit() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(48_000, Duration::from_millis(300));
        let ev = |end, duration| TelephoneEvent {
            event: 11,
            end,
            volume: 10,
            duration,
        };
        let mut also = None;
        let mut got = Vec::new();
        let mut at = t0;
        for d in (960..=0xFFFF).step_by(960).chain([0xFFFF]) {
            got.extend(rx.on_packet(at, 5000, &ev(false, d as u16), &mut also));
            at += Duration::from_millis(20);
        }
        for d in [960u16, 1920, 2880, 2880, 2880] {
            got.extend(rx.on_packet(at, 5000 + 0xFFFF, &ev(d == 2880, d), &mut also));
            got.extend(also.take());
            if d == 960 {
                // A late copy of the first segment's last packet.
                got.extend(rx.on_packet(at, 5000, &ev(false, 0xFFFF), &mut also));
            }
            at += Duration::from_millis(20);
        }
        got.extend(rx.poll(at + Duration::from_secs(1)));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].char(), Some('#'));
        // 68,415 ticks at 48 kHz: 1.425 s.
        assert_eq!(got[0].duration, Duration::from_micros(1_425_312));
        // The first segment's last updates lost (last seen 0xF000): still
        // one key.
        let mut rx = DtmfReceiver::new(48_000, Duration::from_millis(300));
        let mut got = Vec::new();
        got.extend(rx.on_packet(t0, 7000, &ev(false, 0xF000), &mut also));
        got.extend(rx.on_packet(t0, 7000u32.wrapping_add(0xFFFF), &ev(true, 960), &mut also));
        got.extend(also.take());
        got.extend(rx.poll(t0 + Duration::from_secs(1)));
        assert_eq!(got.len(), 1, "{got:?}");
        // A short press whose end packets were lost, then the key again.
        let mut rx = DtmfReceiver::new(8000, Duration::from_millis(300));
        let mut also = None;
        assert_eq!(rx.on_packet(t0, 100, &ev(false, 800), &mut also), None);
        let first = rx.on_packet(t0, 100 + 800, &ev(false, 160), &mut also);
        assert_eq!(first.map(|d| d.duration), Some(Duration::from_millis(100)));
    }
}
