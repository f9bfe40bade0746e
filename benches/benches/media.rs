//! Per-packet and per-20 ms-frame CPU cost of the media engine's pieces and
//! of whole call pipelines (relay, transcode, AI tap), with time stepped
//! synthetically (no sleeping: each iteration is one 20 ms frame).
//!
//! cargo bench -p codeb-benches --bench media -- --warm-up-time 1 --measurement-time 3

#![allow(clippy::unwrap_used, clippy::expect_used)]

use codeb_media::amd::{AmdConfig, VoicemailDetector};
use codeb_media::codec::CodecSpec;
use codeb_media::g711::Law;
use codeb_media::opus::{OpusDecoder, OpusEncoder};
use codeb_media::pipeline::{Leg, LegConfig, Pipeline, PipelineConfig};
use codeb_media::resample::Resampler;
use codeb_media::rtp::{RtpHeader, RtpPacket, rewrite_header};
use codeb_media::tap::TapConfig;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// 8 kHz PCM as 20 ms µ-law payloads.
fn ulaw_frames(pcm8: &[i16]) -> Vec<Vec<u8>> {
    pcm8.chunks_exact(160)
        .map(|f| {
            let mut o = vec![0u8; 160];
            Law::Ulaw.encode(f, &mut o);
            o
        })
        .collect()
}

fn speech_like(rate: u32, len: usize) -> Vec<i16> {
    (0..len)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let v = 6000.0 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                + 3000.0 * (2.0 * std::f32::consts::PI * 660.0 * t).sin()
                + 1500.0 * (2.0 * std::f32::consts::PI * 1320.0 * t).sin();
            v as i16
        })
        .collect()
}

fn rtp(pt: u8, seq: u16, ts: u32, payload: &[u8], out: &mut [u8]) -> usize {
    RtpHeader {
        marker: false,
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc: 0x1234_5678,
    }
    .write_packet(payload, out)
    .unwrap()
}

fn bench_rtp(c: &mut Criterion) {
    let mut pkt = [0u8; 172];
    let n = rtp(0, 1, 160, &[0xff; 160], &mut pkt);
    c.bench_function("rtp parse (172 B)", |b| {
        b.iter(|| {
            let p = RtpPacket::parse(black_box(&pkt[..n])).unwrap();
            (p.sequence(), p.timestamp(), p.ssrc(), p.payload().len())
        })
    });
    let mut out = [0u8; 1500];
    let h = RtpHeader {
        marker: false,
        payload_type: 8,
        sequence: 7,
        timestamp: 99,
        ssrc: 42,
    };
    c.bench_function("rtp copy + header rewrite (172 B)", |b| {
        b.iter(|| {
            out[..n].copy_from_slice(black_box(&pkt[..n]));
            rewrite_header(&mut out[..n], black_box(&h)).unwrap();
            out[3]
        })
    });
}

fn bench_g711(c: &mut Criterion) {
    let pcm = speech_like(8000, 160);
    let mut codes = [0u8; 160];
    let mut back = [0i16; 160];
    for (name, law) in [("µ-law", Law::Ulaw), ("A-law", Law::Alaw)] {
        c.bench_function(&format!("g711 {name} encode 20 ms"), |b| {
            b.iter(|| law.encode(black_box(&pcm), &mut codes))
        });
        law.encode(&pcm, &mut codes);
        c.bench_function(&format!("g711 {name} decode 20 ms"), |b| {
            b.iter(|| law.decode(black_box(&codes), &mut back))
        });
    }
}

fn bench_opus(c: &mut Criterion) {
    for rate in [8_000u32, 16_000, 48_000] {
        let frame = (rate / 50) as usize;
        let pcm = speech_like(rate, frame * 50);
        let mut enc = OpusEncoder::new(rate, 10).unwrap();
        let mut out = [0u8; 1500];
        let mut i = 0;
        c.bench_function(&format!("opus encode 20 ms @{} kHz", rate / 1000), |b| {
            b.iter(|| {
                i = (i + 1) % 50;
                enc.encode(black_box(&pcm[i * frame..(i + 1) * frame]), &mut out)
                    .unwrap()
            })
        });
        let pkts: Vec<Vec<u8>> = pcm
            .chunks_exact(frame)
            .map(|f| {
                let n = enc.encode(f, &mut out).unwrap();
                out[..n].to_vec()
            })
            .collect();
        let mut dec = OpusDecoder::new(rate).unwrap();
        let mut y = vec![0i16; frame];
        let mut j = 0;
        c.bench_function(&format!("opus decode 20 ms @{} kHz", rate / 1000), |b| {
            b.iter(|| {
                j = (j + 1) % pkts.len();
                dec.decode(black_box(&pkts[j]), &mut y).unwrap()
            })
        });
    }
}

fn bench_resample(c: &mut Criterion) {
    for (from, to) in [
        (8_000u32, 16_000u32),
        (16_000, 8_000),
        (8_000, 48_000),
        (24_000, 8_000),
        (48_000, 8_000),
    ] {
        let mut r = Resampler::new(from, to).unwrap();
        let x = speech_like(from, r.input_len());
        let mut y = vec![0i16; r.output_len()];
        c.bench_function(
            &format!("resample 20 ms {}k->{}k", from / 1000, to / 1000),
            |b| b.iter(|| r.process(black_box(&x), &mut y).unwrap()),
        );
    }
    // A caller's digital silence between utterances (G.711 0xFF decodes
    // to zeros), behind silence.
    let mut r = Resampler::new(8_000, 16_000).unwrap();
    let x = vec![0i16; r.input_len()];
    let mut y = vec![0i16; r.output_len()];
    c.bench_function("resample 20 ms 8k->16k, digital silence", |b| {
        b.iter(|| r.process(black_box(&x), &mut y).unwrap())
    });
}

/// The voicemail detector on one 20 ms caller frame at 16 kHz (what the
/// AI thread feeds it for a placed call's first 30 s), with its window and
/// greeting limit out of reach so every iteration analyses a frame.
fn bench_amd(c: &mut Criterion) {
    let cfg = AmdConfig {
        window_ms: u32::MAX,
        greeting_ms: u32::MAX,
        ..AmdConfig::default()
    };
    let loud = speech_like(16_000, 320 * 50);
    let quiet: Vec<i16> = loud.iter().map(|&s| s / 40).collect();
    for (name, pcm) in [("sound", &loud), ("quiet", &quiet)] {
        let mut d = VoicemailDetector::new(16_000, cfg);
        let mut i = 0;
        c.bench_function(&format!("amd 20 ms @16 kHz, {name}"), |b| {
            b.iter(|| {
                i = (i + 1) % 50;
                d.push(black_box(&pcm[i * 320..(i + 1) * 320]))
            })
        });
        // As the switch runs it for a G.711 caller: the same 16 kHz
        // frames, heard at 8 kHz.
        let mut d = VoicemailDetector::narrowband(16_000, cfg);
        c.bench_function(&format!("amd 20 ms @16 kHz narrowband, {name}"), |b| {
            b.iter(|| {
                i = (i + 1) % 50;
                d.push(black_box(&pcm[i * 320..(i + 1) * 320]))
            })
        });
    }
}

fn leg(codec: CodecSpec, ssrc: u32, remote: &str) -> LegConfig {
    LegConfig {
        remote_rtp: Some(remote.parse().unwrap()),
        ..LegConfig::new(codec, ssrc)
    }
}

/// One 20 ms frame of a call: a packet from leg A's far end arrives, the
/// timers due by then run, and everything queued is drained.
struct Call {
    p: Pipeline,
    t0: Instant,
    i: u32,
    pt: u8,
    ticks: u32,
    payloads: Vec<Vec<u8>>,
    buf: [u8; 1500],
    from: SocketAddr,
}

impl Call {
    fn frame(&mut self) -> usize {
        self.i = self.i.wrapping_add(1);
        let now = self.t0 + Duration::from_millis(20 * u64::from(self.i));
        let payload = &self.payloads[self.i as usize % self.payloads.len()];
        let n = rtp(
            self.pt,
            self.i as u16,
            self.ticks.wrapping_mul(self.i),
            payload,
            &mut self.buf,
        );
        self.p.handle_rtp(now, Leg::A, self.from, &self.buf[..n]);
        let mut sent = 0;
        while let Some(t) = self.p.poll_transmit() {
            sent += t.data.len();
        }
        while let Some(due) = self.p.poll_timeout() {
            if due > now {
                break;
            }
            self.p.handle_timeout(due);
            while let Some(t) = self.p.poll_transmit() {
                sent += t.data.len();
            }
        }
        while self.p.poll_event().is_some() {}
        sent
    }
}

fn bench_pipelines(c: &mut Criterion) {
    let far_a = "198.51.100.10:40000";
    let far_b = "203.0.113.20:50000";
    let t0 = Instant::now();
    let pcm8 = speech_like(8_000, 160 * 50);
    let ulaw = ulaw_frames(&pcm8);
    let mut enc = OpusEncoder::new(8_000, 10).unwrap();
    let opus: Vec<Vec<u8>> = pcm8
        .chunks_exact(160)
        .map(|f| {
            let mut o = [0u8; 1500];
            let n = enc.encode(f, &mut o).unwrap();
            o[..n].to_vec()
        })
        .collect();
    let call = |p: Pipeline, pt: u8, ticks: u32, payloads: &Vec<Vec<u8>>| Call {
        p,
        t0,
        i: 0,
        pt,
        ticks,
        payloads: payloads.clone(),
        buf: [0; 1500],
        from: far_a.parse().unwrap(),
    };

    let relay = Pipeline::bridge(
        t0,
        PipelineConfig::default(),
        leg(CodecSpec::pcmu(), 1, far_a),
        leg(CodecSpec::pcmu(), 2, far_b),
    )
    .unwrap();
    let mut relay = call(relay, 0, 160, &ulaw);
    c.bench_function(
        "pipeline relay PCMU + in-band DTMF detection, per packet",
        |b| b.iter(|| relay.frame()),
    );

    let te = |codec, ssrc, remote| LegConfig {
        telephone_event: Some(101),
        ..leg(codec, ssrc, remote)
    };
    let relay_te = Pipeline::bridge(
        t0,
        PipelineConfig::default(),
        te(CodecSpec::pcmu(), 1, far_a),
        te(CodecSpec::pcmu(), 2, far_b),
    )
    .unwrap();
    let mut relay_te = call(relay_te, 0, 160, &ulaw);
    c.bench_function(
        "pipeline relay PCMU (telephone-event, no in-band), per packet",
        |b| b.iter(|| relay_te.frame()),
    );

    let pcmu_pcma = Pipeline::bridge(
        t0,
        PipelineConfig::default(),
        leg(CodecSpec::pcmu(), 1, far_a),
        leg(CodecSpec::pcma(), 2, far_b),
    )
    .unwrap();
    let mut pcmu_pcma = call(pcmu_pcma, 0, 160, &ulaw);
    c.bench_function("pipeline transcode PCMU->PCMA, per frame", |b| {
        b.iter(|| pcmu_pcma.frame())
    });

    let opus_pcmu = Pipeline::bridge(
        t0,
        PipelineConfig::default(),
        leg(CodecSpec::opus(111, 8_000), 1, far_a),
        leg(CodecSpec::pcmu(), 2, far_b),
    )
    .unwrap();
    let mut opus_pcmu = call(opus_pcmu, 111, 960, &opus);
    c.bench_function("pipeline transcode Opus@8k->PCMU, per frame", |b| {
        b.iter(|| opus_pcmu.frame())
    });

    let pcmu_opus = Pipeline::bridge(
        t0,
        PipelineConfig::default(),
        leg(CodecSpec::pcmu(), 1, far_a),
        leg(CodecSpec::opus(111, 8_000), 2, far_b),
    )
    .unwrap();
    let mut pcmu_opus = call(pcmu_opus, 0, 160, &ulaw);
    c.bench_function("pipeline transcode PCMU->Opus@8k, per frame", |b| {
        b.iter(|| pcmu_opus.frame())
    });

    // AI tap: per 20 ms, one caller packet decoded, resampled to 16 kHz and
    // handed to the engine ring, and one 24 kHz engine frame resampled,
    // encoded and paced out. The engine side's ring work (one 480-sample
    // write, one 320-sample read) is included.
    let (tap, mut engine) = Pipeline::ai_tap(
        t0,
        PipelineConfig::default(),
        leg(CodecSpec::pcmu(), 1, far_a),
        TapConfig::default(),
    )
    .unwrap();
    let mut tap = call(tap, 0, 160, &ulaw);
    let engine_frame = speech_like(24_000, 480);
    let mut caller = [0i16; 640];
    engine.write_engine(&engine_frame);
    engine.write_engine(&engine_frame);
    c.bench_function("pipeline AI tap PCMU <-> 16k/24k PCM, per frame", |b| {
        b.iter(|| {
            engine.write_engine(&engine_frame);
            let n = tap.frame();
            engine.read_caller(&mut caller);
            n
        })
    });

    // The same as the switch builds it: its legs never run in-band DTMF
    // detection (`inband_dtmf: false` in the switch's leg config).
    let (tap, mut engine) = Pipeline::ai_tap(
        t0,
        PipelineConfig::default(),
        LegConfig {
            inband_dtmf: false,
            ..leg(CodecSpec::pcmu(), 1, far_a)
        },
        TapConfig::default(),
    )
    .unwrap();
    let mut tap = call(tap, 0, 160, &ulaw);
    engine.write_engine(&engine_frame);
    engine.write_engine(&engine_frame);
    c.bench_function(
        "pipeline AI tap PCMU <-> 16k/24k PCM, no in-band DTMF (as the switch), per frame",
        |b| {
            b.iter(|| {
                engine.write_engine(&engine_frame);
                let n = tap.frame();
                engine.read_caller(&mut caller);
                n
            })
        },
    );
}

/// Many AI-tapped calls driven round-robin on one thread, as one media
/// worker carries them: each step is one call's 20 ms frame (a caller
/// packet in, the engine's side reading it; one engine frame paced out).
/// Each caller talks as ai-load's talkative one (`PERIOD_MS=2000`): 600 ms
/// of speech every 2 s, µ-law digital silence (0xFF) between; every
/// call's engine speaks a 1.2 s turn written at once 200 ms after its
/// caller's speech, held back as the AI side holds what does not fit and
/// topped up every 100 ms. The calls' state and rings do not stay in
/// cache as they do in the one-call rows; a row with smaller rings shows
/// what the rings' size costs in memory traffic (nothing measurable:
/// benches/README.md).
struct TappedCalls {
    calls: Vec<(
        Call,
        codeb_media::tap::TapEngine,
        std::collections::VecDeque<i16>,
    )>,
    next: usize,
    turn: Vec<i16>,
    caller: Vec<i16>,
}

impl TappedCalls {
    fn new(n: usize, cfg: TapConfig, t0: Instant, ulaw: &[Vec<u8>]) -> TappedCalls {
        let far = "198.51.100.10:40000";
        let calls = (0..n)
            .map(|k| {
                let (p, engine) = Pipeline::ai_tap(
                    t0,
                    PipelineConfig::default(),
                    LegConfig {
                        inband_dtmf: false,
                        ..leg(CodecSpec::pcmu(), k as u32 + 1, far)
                    },
                    TapConfig {
                        quiet_batch_ms: 100,
                        ..cfg
                    },
                )
                .unwrap();
                let call = Call {
                    p,
                    t0,
                    // Phases spread over the 2 s turn period.
                    i: (k * 37 % 100) as u32,
                    pt: 0,
                    ticks: 160,
                    payloads: ulaw.to_vec(),
                    buf: [0; 1500],
                    from: far.parse().unwrap(),
                };
                (call, engine, std::collections::VecDeque::new())
            })
            .collect();
        TappedCalls {
            calls,
            next: 0,
            turn: speech_like(24_000, 24_000 * 12 / 10),
            caller: vec![0; 1_600],
        }
    }

    fn step(&mut self) -> usize {
        let k = self.next;
        self.next = (k + 1) % self.calls.len();
        let (call, engine, pending) = &mut self.calls[k];
        let top_up = |engine: &mut codeb_media::tap::TapEngine,
                      pending: &mut std::collections::VecDeque<i16>| {
            while !pending.is_empty() {
                let (a, _) = pending.as_slices();
                let want = a.len();
                let n = engine.write_engine(a);
                pending.drain(..n);
                if n < want || n == 0 {
                    break;
                }
            }
        };
        if call.i % 100 == 40 {
            // A turn arrives in 40 ms messages, as fast as they come.
            for chunk in self.turn.chunks(960) {
                let direct = if pending.is_empty() {
                    engine.write_engine(chunk)
                } else {
                    0
                };
                pending.extend(&chunk[direct..]);
            }
        }
        if call.i % 5 == 0 {
            top_up(engine, pending);
        }
        let sent = call.frame();
        while engine.read_caller(&mut self.caller) > 0 {}
        sent
    }
}

fn bench_many_taps(c: &mut Criterion) {
    let t0 = Instant::now();
    let pcm8 = speech_like(8_000, 160 * 50);
    let ulaw = ulaw_frames(&pcm8);
    // 600 ms of speech, then 1.4 s of digital silence.
    let talk: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            ulaw.get(i)
                .filter(|_| i < 30)
                .cloned()
                .unwrap_or(vec![0xff; 160])
        })
        .collect();
    let default = TapConfig::default();
    let rings = [
        (
            "default rings",
            default.to_engine_ms,
            default.from_engine_ms,
        ),
        ("300 ms / 500 ms rings", 300, 500),
    ];
    for (name, to_ms, from_ms) in rings {
        let cfg = TapConfig {
            to_engine_ms: to_ms,
            from_engine_ms: from_ms,
            ..default
        };
        // Set up only when the row runs (not filtered out).
        let mut calls: Option<TappedCalls> = None;
        c.bench_function(
            &format!("pipeline AI tap, 300 calls round-robin, {name}, per frame"),
            |b| {
                let calls = calls.get_or_insert_with(|| {
                    let mut calls = TappedCalls::new(300, cfg, t0, &talk);
                    // Every call through a few turns first, so the rings
                    // have wrapped.
                    for _ in 0..300 * 500 {
                        calls.step();
                    }
                    calls
                });
                b.iter(|| calls.step())
            },
        );
    }
}

criterion_group!(
    benches,
    bench_rtp,
    bench_g711,
    bench_opus,
    bench_resample,
    bench_amd,
    bench_pipelines,
    bench_many_taps
);
criterion_main!(benches);
