//! The steady state of every pipeline mode allocates nothing: a counting
//! global allocator watches the worker-side calls after a warm-up.
//!
//! One test in this binary, so no other test thread allocates meanwhile.

#![allow(unsafe_code)] // A GlobalAlloc impl is unsafe by definition; it only forwards to System.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use codeb_media::codec::CodecSpec;
use codeb_media::pipeline::{Leg, LegConfig, Pipeline, PipelineConfig};
use codeb_media::rtp::RtpHeader;
use codeb_media::tap::TapConfig;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn packet(pt: u8, seq: u16, ts: u32, payload: &[u8], out: &mut [u8]) -> usize {
    RtpHeader {
        marker: false,
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc: 99,
    }
    .write_packet(payload, out)
    .unwrap()
}

/// Runs `frames` 20 ms steps of traffic from both far ends (A only for the
/// tap), draining everything like a worker.
fn run(p: &mut Pipeline, t0: Instant, start: usize, frames: usize, media: &[(u8, u32, &[u8])]) {
    let far = [
        "198.51.100.1:4000".parse::<SocketAddr>().unwrap(),
        "198.51.100.2:4000".parse().unwrap(),
    ];
    let mut buf = [0u8; 1500];
    for i in start..start + frames {
        let now = t0 + Duration::from_millis(20 * i as u64);
        for (li, (pt, ticks, payload)) in media.iter().enumerate() {
            let n = packet(*pt, i as u16, ticks * i as u32, payload, &mut buf);
            let leg = if li == 0 { Leg::A } else { Leg::B };
            p.handle_rtp(now, leg, far[li], &buf[..n]);
            while p.poll_transmit().is_some() {}
        }
        while let Some(t) = p.poll_timeout() {
            if t > now {
                break;
            }
            p.handle_timeout(t);
            while p.poll_transmit().is_some() {}
        }
        while p.poll_event().is_some() {}
    }
}

#[test]
fn steady_state_allocates_nothing() {
    let t0 = Instant::now();
    let leg = |c: CodecSpec, ssrc| LegConfig {
        remote_rtp: Some("198.51.100.9:4000".parse().unwrap()),
        ..LegConfig::new(c, ssrc)
    };
    let g711 = [0xffu8; 160];
    let mut opus_pkt = [0u8; 400];
    let mut enc = codeb_media::opus::OpusEncoder::new(8_000, 10).unwrap();
    let n = enc.encode(&[0i16; 160], &mut opus_pkt).unwrap();
    let opus = &opus_pkt[..n];

    let mut relay = Pipeline::bridge(
        t0,
        PipelineConfig::default(),
        leg(CodecSpec::pcmu(), 1),
        leg(CodecSpec::pcmu(), 2),
    )
    .unwrap();
    let mut g711_transcode = Pipeline::bridge(
        t0,
        PipelineConfig::default(),
        leg(CodecSpec::pcmu(), 1),
        leg(CodecSpec::pcma(), 2),
    )
    .unwrap();
    let mut opus_transcode = Pipeline::bridge(
        t0,
        PipelineConfig::default(),
        leg(CodecSpec::opus(111, 8_000), 1),
        leg(CodecSpec::pcmu(), 2),
    )
    .unwrap();
    let (mut tap, mut engine) = Pipeline::ai_tap(
        t0,
        PipelineConfig::default(),
        leg(CodecSpec::pcmu(), 1),
        TapConfig::default(),
    )
    .unwrap();
    let engine_audio = vec![1000i16; 24_000 * 4];
    engine.write_engine(&engine_audio);
    let mut caller = vec![0i16; 16_000];

    // Warm-up: latching, first RTCP, lazily sized internals.
    run(&mut relay, t0, 0, 400, &[(0, 160, &g711), (0, 160, &g711)]);
    run(
        &mut g711_transcode,
        t0,
        0,
        400,
        &[(0, 160, &g711), (8, 160, &[0xd5; 160])],
    );
    run(
        &mut opus_transcode,
        t0,
        0,
        400,
        &[(111, 960, opus), (0, 160, &g711)],
    );
    run(&mut tap, t0, 0, 50, &[(0, 160, &g711)]);
    engine.read_caller(&mut caller);

    COUNTING.store(true, Ordering::SeqCst);
    run(
        &mut relay,
        t0,
        400,
        500,
        &[(0, 160, &g711), (0, 160, &g711)],
    );
    let relay_allocs = ALLOCS.swap(0, Ordering::SeqCst);
    run(
        &mut g711_transcode,
        t0,
        400,
        500,
        &[(0, 160, &g711), (8, 160, &[0xd5; 160])],
    );
    let g711_allocs = ALLOCS.swap(0, Ordering::SeqCst);
    run(
        &mut opus_transcode,
        t0,
        400,
        500,
        &[(111, 960, opus), (0, 160, &g711)],
    );
    let opus_allocs = ALLOCS.swap(0, Ordering::SeqCst);
    run(&mut tap, t0, 50, 100, &[(0, 160, &g711)]);
    engine.flush();
    run(&mut tap, t0, 150, 10, &[(0, 160, &g711)]);
    let tap_allocs = ALLOCS.swap(0, Ordering::SeqCst);
    COUNTING.store(false, Ordering::SeqCst);

    assert_eq!(
        (relay_allocs, g711_allocs, opus_allocs, tap_allocs),
        (0, 0, 0, 0),
        "allocations in the steady state (relay, G.711 transcode, Opus transcode, AI tap)"
    );
    // The traffic really flowed.
    assert!(relay.stats(Leg::B).unwrap().rtp_out >= 900);
    assert!(g711_transcode.stats(Leg::B).unwrap().rtp_out >= 890);
    assert!(opus_transcode.stats(Leg::B).unwrap().rtp_out >= 890);
    assert!(tap.stats(Leg::A).unwrap().rtp_out >= 150);
    assert!(engine.played_ms() > 0);
}
