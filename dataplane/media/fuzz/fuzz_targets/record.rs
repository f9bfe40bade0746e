//! Call recording under arbitrary payloads, SSRCs, RTP timestamps and
//! arrival times as a far end's packets reach the recorder (the worker
//! copies every audio payload of a recorded call into the feed), with the
//! recorder pumping at arbitrary instants. Asserts: no panic, the WAV is
//! well formed, and the recording never runs further ahead of the newest
//! arrival than one timestamp jump (`MAX_JUMP`) and a packet: what a far
//! end's timestamps place beyond that would sit in memory until written.
#![no_main]

mod input;

use codeb_media::record::{MAX_JUMP, RATE, RecCodec, Recording, ring};
use input::Input;
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use std::time::{Duration, Instant};

fn samples(d: Duration) -> u64 {
    d.as_micros() as u64 * u64::from(RATE) / 1_000_000
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let t0 = Instant::now();
    let (mut feed, source) = ring(t0);
    let mut rec = Recording::start(source, Cursor::new(Vec::new())).expect("in memory");
    let mut at = t0;
    let mut latest = Duration::ZERO;
    let mut ts = [0u32; 2];
    while !inp.0.is_empty() {
        let op = inp.byte();
        match op % 4 {
            0..=2 => {
                let channel = (op >> 2) % 3;
                let codec = match (op >> 4) % 5 {
                    0 => RecCodec::Pcmu,
                    1 => RecCodec::Pcma,
                    2 => RecCodec::L16Narrow,
                    3 => RecCodec::L16Wide,
                    _ => RecCodec::Opus,
                };
                let ssrc = u32::from(op >> 6);
                let c = usize::from(channel % 2);
                let step = inp.byte();
                ts[c] = match step % 4 {
                    0 => inp.u32(),
                    1 => ts[c].wrapping_add(u32::from(step) << 12),
                    2 => ts[c].wrapping_sub(u32::from(step)),
                    _ => ts[c].wrapping_add(160),
                };
                at += Duration::from_millis(u64::from(inp.byte() % 64));
                let len = usize::from(inp.byte()) * 2;
                let payload = inp.bytes(len).to_vec();
                feed.push(channel, codec, ssrc, ts[c], at, &payload);
            }
            _ => {
                let now = at + Duration::from_millis(u64::from(inp.byte()) * 8);
                latest = latest.max(now - t0);
                rec.pump(now).expect("in memory");
            }
        }
    }
    latest = latest.max(at - t0);
    let wav = rec.finish().expect("in memory").into_inner();
    assert!(wav.len() >= 44);
    let data = u32::from_le_bytes([wav[40], wav[41], wav[42], wav[43]]) as usize;
    assert_eq!(data, wav.len() - 44, "data size in the header");
    // 120 ms: the longest packet (Opus) placed at the bound.
    let bound = samples(latest + MAX_JUMP) + samples(Duration::from_millis(120));
    let written = (data / 4) as u64;
    assert!(
        written <= bound,
        "{written} samples recorded by {latest:?} of arrivals"
    );
});
