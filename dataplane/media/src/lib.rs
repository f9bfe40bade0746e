//! Sans-IO media for the switch: RTP/RTCP, codecs, jitter buffer, DTMF and
//! the per-call pipelines that a media worker drives.
//!
//! No sockets, no clock reads, no threads, no locks: the IO worker passes
//! every datagram in with the time it arrived (`Instant`), asks when to
//! come back, and sends what the machines hand back. After construction
//! nothing on the packet path allocates (`tests/no_alloc.rs` checks relay,
//! transcode and AI-tap steady states with a counting allocator).
//!
//! # Driving a call: [`pipeline::Pipeline`]
//!
//! ```
//! use codeb_media::codec::CodecSpec;
//! use codeb_media::pipeline::{Leg, LegConfig, Pipeline, PipelineConfig, Verdict};
//! use std::time::{Duration, Instant};
//!
//! let now = Instant::now();
//! let a = LegConfig { remote_rtp: Some("192.0.2.10:4000".parse().unwrap()),
//!                     ..LegConfig::new(CodecSpec::pcmu(), 0x1111_2222) };
//! let b = LegConfig { remote_rtp: Some("192.0.2.20:5000".parse().unwrap()),
//!                     ..LegConfig::new(CodecSpec::pcma(), 0x3333_4444) };
//! // Different codecs: decode -> resample -> encode.
//! let mut call = Pipeline::bridge(now, PipelineConfig::default(), a, b).unwrap();
//!
//! // The worker received a datagram on leg A's RTP socket ...
//! let mut pkt = [0xffu8; 172];
//! pkt[..2].copy_from_slice(&[0x80, 0]);
//! let v = call.handle_rtp(now, Leg::A, "192.0.2.10:4000".parse().unwrap(), &pkt);
//! assert_eq!(v, Verdict::Buffered);
//! // ... and runs the timers when due, then drains.
//! let due = call.poll_timeout().unwrap();
//! call.handle_timeout(due.max(now + Duration::from_millis(40)));
//! while let Some(t) = call.poll_transmit() {
//!     // send t.data to t.destination from leg t.leg's RTP or RTCP socket
//!     assert_eq!(t.leg, Leg::B);
//! }
//! while let Some(_event) = call.poll_event() { /* DTMF, inactivity, ... */ }
//! ```
//!
//! One worker thread owns many pipelines (a call is pinned to one worker),
//! routes each datagram by socket to its pipeline and leg, and keeps a
//! timer wheel keyed by [`pipeline::Pipeline::poll_timeout`]. The AI side of
//! a tapped call talks to the worker only through the lock-free
//! [`tap::TapEngine`] handle returned by [`pipeline::Pipeline::ai_tap`].
//!
//! # Building blocks
//!
//! * [`rtp`]: bounded zero-copy RTP parsing, header writing and in-place
//!   rewriting.
//! * [`rtcp`]: compound validation and reading; SR/RR/SDES/BYE writing.
//! * [`stats`]: RFC 3550 receive statistics (A.1 sequence, A.3 loss, A.8
//!   jitter) and send counters.
//! * [`latch`]: learn the far end's address, then accept only it.
//! * [`rewrite`]: one continuous SSRC/sequence/timestamp stream per far end
//!   across source changes.
//! * [`g711`]: µ-law and A-law; [`opus`]: libopus for 20 ms mono frames
//!   with PLC and FEC; [`codec`]: one decoder/encoder interface over them
//!   and L16.
//! * [`resample`]: 20 ms frame conversion between 8/16/24/48 kHz (polyphase FIR).
//! * [`jitter`]: adaptive jitter buffer for decoded paths.
//! * [`dtmf`]: RFC 4733 telephone-event parsing, reporting and sending;
//!   [`inband`]: Goertzel DTMF detection for G.711 legs.
//! * [`tap`]: the SPSC rings and counters between a worker and an AI engine.
//! * [`record`]: dual-channel WAV recording fed from the worker through an
//!   SPSC ring, decoded and written by a recorder thread.

pub mod amd;
pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod goertzel;
pub mod inband;
pub mod jitter;
pub mod latch;
pub mod opus;
pub mod pipeline;
pub mod record;
pub mod resample;
pub mod rewrite;
pub mod rtcp;
pub mod rtp;
pub mod stats;
pub mod tap;
