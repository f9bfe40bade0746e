//! Outgoing stream rewriting: one continuous RTP stream per far end, whatever
//! feeds it.
//!
//! A leg's output can switch between relayed packets of the other leg (which
//! may change SSRC on a re-INVITE or transfer), locally generated audio (AI
//! playout, tones) and silence. The far end must see one SSRC with
//! sequence numbers that keep counting and timestamps that advance with
//! real time, or its jitter buffer resets and audio clicks or stalls.
//!
//! The rewriter keeps an offset pair per current source. Within a source the
//! mapping is a plain offset, so gaps and reordering of the source pass
//! through unchanged (the far end still measures loss correctly). When the
//! source changes, the new offsets put the first packet one sequence number
//! after the last one sent and its timestamp after the last one sent by the
//! wall time elapsed since (passed in), at least one frame on; that packet
//! carries the marker bit.

use std::time::Instant;

/// Identity of what feeds a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Packets relayed from a far end, by their SSRC.
    Relay { ssrc: u32 },
    /// Audio generated here (playout, silence, tones), by a caller-chosen id.
    Local { id: u32 },
}

/// The header fields to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub sequence: u16,
    pub timestamp: u32,
    /// Set on the first packet after a source change.
    pub marker: bool,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    source: Source,
    seq_offset: u16,
    ts_offset: u32,
}

/// Rewrites SSRC, sequence and timestamp of one outgoing stream.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    ssrc: u32,
    clock_rate: u32,
    /// Samples per packet at `clock_rate` (the minimum step on a switch).
    frame_ticks: u32,
    mapping: Option<Mapping>,
    /// Highest sequence number sent.
    last_seq: Option<u16>,
    /// Latest timestamp sent, and when. Not the highest-numbered packet's:
    /// a telephone-event packet carries its event's start (RFC 4733 §2.5),
    /// behind the audio sent meanwhile.
    last_ts: Option<(u32, Instant)>,
    first_seq: u16,
    first_ts: u32,
}

impl StreamRewriter {
    /// `ssrc`, `first_seq` and `first_ts` should be random (RFC 3550 §5.1);
    /// the caller picks them, this crate has no randomness source.
    pub fn new(
        ssrc: u32,
        clock_rate: u32,
        frame_ticks: u32,
        first_seq: u16,
        first_ts: u32,
    ) -> Self {
        StreamRewriter {
            ssrc,
            clock_rate: clock_rate.max(1),
            frame_ticks,
            mapping: None,
            last_seq: None,
            last_ts: None,
            first_seq,
            first_ts,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// The next packet starts a new run as if its source had changed: one
    /// sequence number after the last sent, its timestamp on by the wall
    /// time elapsed, with the marker. For a far end that was sent nothing
    /// for a while (it held the call) while its source went on counting:
    /// it sees no gap, which it would count as loss.
    pub fn rebase(&mut self) {
        self.mapping = None;
    }

    /// Maps a packet of `source` with its own `seq`/`ts` onto the stream.
    pub fn map(&mut self, now: Instant, source: Source, seq: u16, ts: u32) -> Rewritten {
        let switched = self.mapping.is_none_or(|m| m.source != source);
        if switched {
            let next_seq = self.last_seq.map_or(self.first_seq, |s| s.wrapping_add(1));
            let next_ts = match self.last_ts {
                Some((last_ts, at)) => {
                    let nanos = now.saturating_duration_since(at).as_nanos();
                    let elapsed = (nanos * u128::from(self.clock_rate) / 1_000_000_000) as u32;
                    last_ts.wrapping_add(elapsed.max(self.frame_ticks))
                }
                None => self.first_ts,
            };
            self.mapping = Some(Mapping {
                source,
                seq_offset: next_seq.wrapping_sub(seq),
                ts_offset: next_ts.wrapping_sub(ts),
            });
        }
        let m = self.mapping.unwrap_or(Mapping {
            source,
            seq_offset: 0,
            ts_offset: 0,
        });
        let out = Rewritten {
            sequence: seq.wrapping_add(m.seq_offset),
            timestamp: ts.wrapping_add(m.ts_offset),
            marker: switched,
        };
        // Track the newest sequence number and timestamp sent, each in
        // its own order (modulo wrap).
        let seq_newer = self.last_seq.is_none_or(|s| {
            let d = out.sequence.wrapping_sub(s);
            d != 0 && d < 0x8000
        });
        if seq_newer || switched {
            self.last_seq = Some(out.sequence);
        }
        let ts_newer = self
            .last_ts
            .is_none_or(|(t, _)| later_timestamp(out.timestamp, t, self.clock_rate));
        if ts_newer || switched {
            self.last_ts = Some((out.timestamp, now));
        }
        out
    }
}

/// Whether `ts` goes on from `last`: ahead of it (modulo wrap), or so far
/// behind that the stream's timestamps started again elsewhere (a source
/// that restarted its clock). A little behind is a telephone-event packet,
/// which carries its key's start (RFC 4733 §2.5): not later.
pub(crate) fn later_timestamp(ts: u32, last: u32, clock_rate: u32) -> bool {
    let ahead = ts.wrapping_sub(last);
    let behind = last.wrapping_sub(ts);
    (ahead != 0 && ahead < 0x8000_0000) || behind > clock_rate.saturating_mul(KEY_SPAN_SECS)
}

/// The longest a key's packets may lag the audio (a key held this long).
const KEY_SPAN_SECS: u32 = 30;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_rebase_goes_on_from_the_last_packet_mapped() {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(7, 8000, 160, 100, 5000);
        let src = Source::Relay { ssrc: 1 };
        for k in 0..3u16 {
            r.map(t0, src, k, u32::from(k) * 160);
        }
        // The source went on counting while nothing was mapped (the far
        // end held the call).
        r.rebase();
        let later = t0 + Duration::from_secs(1);
        let out = r.map(later, src, 50, 50 * 160);
        assert_eq!(out.sequence, 103, "one on from the last sent");
        assert!(out.marker);
        assert_eq!(
            out.timestamp,
            5000 + 2 * 160 + 8000,
            "on by the time elapsed"
        );
    }

    #[test]
    fn continuity_across_relay_local_relay() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = StreamRewriter::new(0xabc, 8000, 160, 1000, 50_000);
        // Relay SSRC 1: seq 7.., ts 9000..
        let a = r.map(ms(0), Source::Relay { ssrc: 1 }, 7, 9000);
        assert_eq!((a.sequence, a.timestamp, a.marker), (1000, 50_000, true));
        let b = r.map(ms(20), Source::Relay { ssrc: 1 }, 8, 9160);
        assert_eq!((b.sequence, b.timestamp, b.marker), (1001, 50_160, false));
        // Source gap inside one source passes through.
        let c = r.map(ms(60), Source::Relay { ssrc: 1 }, 10, 9480);
        assert_eq!((c.sequence, c.timestamp), (1003, 50_480));
        // Switch to local playout 100 ms later: seq +1, ts + 100 ms.
        let d = r.map(ms(160), Source::Local { id: 0 }, 0, 0);
        assert_eq!(
            (d.sequence, d.timestamp, d.marker),
            (1004, 50_480 + 800, true)
        );
        let e = r.map(ms(180), Source::Local { id: 0 }, 1, 160);
        assert_eq!((e.sequence, e.timestamp, e.marker), (1005, 51_440, false));
        // Back to relay with a new SSRC and wild numbers, immediately: at
        // least one frame on.
        let f = r.map(ms(180), Source::Relay { ssrc: 2 }, 60_000, 4_000_000_000);
        assert_eq!((f.sequence, f.timestamp, f.marker), (1006, 51_600, true));
        let g = r.map(ms(200), Source::Relay { ssrc: 2 }, 60_001, 4_000_000_160);
        assert_eq!((g.sequence, g.timestamp), (1007, 51_760));
        assert_eq!(r.ssrc(), 0xabc);
    }

    /// Telephone-event packets carry their event's start timestamp while
    /// their sequence numbers go on: the next source goes on from the
    /// audio's latest timestamp, not from the last event packet's.
    #[test]
    fn a_new_source_goes_on_from_the_latest_timestamp_not_the_last_packet() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = StreamRewriter::new(1, 8000, 160, 0, 0);
        let audio = Source::Local { id: 1 };
        for k in 0..=12u16 {
            r.map(ms(u64::from(k) * 20), audio, k, u32::from(k) * 160);
        }
        // A key pressed at ts 160: its packets go on after the audio.
        for k in 13..=20u16 {
            r.map(ms(240 + u64::from(k - 12) * 5), audio, k, 160);
        }
        let next = r.map(ms(300), Source::Local { id: 2 }, 0, 0);
        assert_eq!(next.sequence, 21);
        // The audio's ts 1920 was sent at 240 ms: 60 ms on is 480 ticks.
        assert_eq!(next.timestamp, 1920 + 480);
    }

    /// A relayed source that starts its timestamps again far behind (same
    /// SSRC, a restart) is followed there: the next source goes on from
    /// what was sent last, not from before the restart.
    #[test]
    fn a_source_restarting_its_clock_is_followed() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = StreamRewriter::new(1, 8000, 160, 0, 10_000_000);
        let src = Source::Relay { ssrc: 9 };
        r.map(ms(0), src, 0, 5_000_000);
        r.map(ms(20), src, 1, 5_000_160);
        // Restarted 600 s of clock back.
        let back = r.map(ms(40), src, 2, 200_000);
        let next = r.map(ms(60), Source::Local { id: 1 }, 0, 0);
        assert_eq!(next.timestamp, back.timestamp.wrapping_add(160));
    }

    #[test]
    fn wraps_and_reorder_within_source() {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(1, 8000, 160, 65_535, u32::MAX - 100);
        let a = r.map(t0, Source::Relay { ssrc: 5 }, 10, 0);
        assert_eq!((a.sequence, a.timestamp), (65_535, u32::MAX - 100));
        let b = r.map(t0, Source::Relay { ssrc: 5 }, 12, 320);
        assert_eq!((b.sequence, b.timestamp), (1, 219));
        // Late packet 11 maps between, and does not move "last".
        let c = r.map(t0, Source::Relay { ssrc: 5 }, 11, 160);
        assert_eq!((c.sequence, c.timestamp), (0, 59));
        let d = r.map(t0, Source::Local { id: 1 }, 0, 0);
        assert_eq!(d.sequence, 2);
    }
}
