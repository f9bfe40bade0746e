//! The jitter buffer on its own under arbitrary inserts (sequence numbers,
//! timestamps and sizes as a far end could send them, including wraps,
//! duplicates, reordering and restarts) and time steps, with the playout
//! and on-arrival configurations the pipeline uses. Asserts: every frame
//! played is the payload stored under its sequence number (the FEC
//! neighbour of a loss too), draining at one instant ends within a bound
//! and leaves nothing due at that instant (a worker would spin on it), and
//! the learned packet duration stays within 2.5..=200 ms.
#![no_main]

use codeb_media::jitter::{Insert, JitterBuffer, JitterConfig, Playout};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::time::{Duration, Instant};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes([
            self.byte()?,
            self.byte()?,
            self.byte()?,
            self.byte()?,
        ]))
    }
}

const RATES: [u32; 4] = [8_000, 16_000, 48_000, 44_100];
const PTIMES_MS: [u64; 4] = [10, 20, 30, 60];

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let (Some(a), Some(b), Some(c)) = (inp.byte(), inp.byte(), inp.byte()) else {
        return;
    };
    let clock_rate = RATES[usize::from(a % 4)];
    let cfg = JitterConfig {
        ptime: Duration::from_millis(PTIMES_MS[usize::from((a >> 2) % 4)]),
        min_delay: Duration::from_millis(u64::from(b % 16) * 10),
        max_delay: Duration::from_millis(u64::from(b >> 4) * 40),
        capacity: usize::from(c % 64),
        on_arrival: a & 0x10 != 0,
        ..JitterConfig::new(clock_rate)
    };
    let start = Instant::now();
    let mut now = start;
    let mut jb = JitterBuffer::new(now, cfg);
    let capacity = cfg.capacity.clamp(2, 1024);
    let max_delay = cfg.max_delay.max(cfg.min_delay);
    let bound =
        capacity as u128 + max_delay.as_nanos() / Duration::from_micros(2_500).as_nanos() + 4;
    let mut stored: HashMap<u16, Vec<u8>> = HashMap::new();
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut fill = 0u8;

    while let Some(op) = inp.byte() {
        match op % 4 {
            0 | 1 => {
                let Some(shape) = inp.byte() else { break };
                match shape % 8 {
                    0 => seq = inp.u16().unwrap_or(seq),
                    1 => seq = seq.wrapping_add(u16::from(shape >> 3)),
                    2 => seq = seq.wrapping_sub(u16::from(shape >> 3)),
                    _ => seq = seq.wrapping_add(1),
                }
                match inp.byte().unwrap_or(0) % 4 {
                    0 => ts = inp.u32().unwrap_or(ts),
                    1 => ts = ts.wrapping_add(u32::from(inp.u16().unwrap_or(0))),
                    _ => ts = ts.wrapping_add(clock_rate / 50),
                }
                let len = match inp.byte().unwrap_or(0) {
                    n @ 0..=200 => usize::from(n),
                    n => usize::from(n) * 8,
                };
                fill = fill.wrapping_add(1);
                let payload: Vec<u8> = (0..len).map(|i| fill ^ i as u8).collect();
                match jb.insert(now, seq, ts, shape & 0x80 != 0, &payload) {
                    Insert::Stored | Insert::Resync => {
                        stored.insert(seq, payload);
                    }
                    Insert::TooLarge => assert!(len > cfg.max_payload),
                    Insert::Late | Insert::Duplicate => {}
                }
            }
            2 => {
                let step = inp.byte().unwrap_or(0);
                now += match step % 8 {
                    0 => Duration::ZERO,
                    7 => Duration::from_secs(u64::from(step >> 3)),
                    _ => Duration::from_millis(u64::from(step >> 2)),
                };
            }
            _ => {
                let mut pops = 0u128;
                while let Some(p) = jb.pop(now) {
                    pops += 1;
                    assert!(pops <= bound, "{pops} pops at one instant");
                    match p {
                        Playout::Frame { seq, payload, .. } => {
                            assert_eq!(Some(payload), stored.get(&seq).map(Vec::as_slice));
                        }
                        Playout::Lost { seq, next } => {
                            if let Some(next) = next {
                                let after = seq.wrapping_add(1);
                                assert_eq!(Some(next), stored.get(&after).map(Vec::as_slice));
                            }
                        }
                    }
                }
                if let Some(due) = jb.next_due() {
                    assert!(due > now, "due at the instant it was drained");
                }
            }
        }
        let p = jb.ptime();
        assert!(
            p == cfg.ptime
                || (Duration::from_micros(2_500)..=Duration::from_millis(200)).contains(&p),
            "ptime {p:?}"
        );
    }
});
