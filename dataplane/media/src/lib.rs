//! Sans-IO media for the switch: RTP/RTCP, per-stream statistics,
//! symmetric-RTP source latching, stream rewriting and G.711.
//!
//! No sockets, no clock reads, no threads: the IO worker passes every
//! datagram in with the time it arrived (`Instant`), and sends what the
//! machines hand back.
//!
//! * [`rtp`]: bounded zero-copy RTP parsing, header writing and in-place
//!   rewriting.
//! * [`rtcp`]: compound validation and reading; SR/RR/SDES/BYE writing.
//! * [`stats`]: RFC 3550 receive statistics (A.1 sequence, A.3 loss, A.8
//!   jitter) and send counters.
//! * [`latch`]: learn the far end's address, then accept only it.
//! * [`rewrite`]: one continuous SSRC/sequence/timestamp stream per far end
//!   across source changes.
//! * [`g711`]: µ-law and A-law.
//! * [`resample`]: 20 ms frame conversion between 8/16/24/48 kHz (rubato FFT).
//! * [`opus`]: libopus encoder/decoder for 20 ms mono frames, PLC and FEC.
//! * [`jitter`]: adaptive jitter buffer for decoded paths.
//! * [`dtmf`]: RFC 4733 telephone-event parsing, reporting and sending;
//!   [`inband`]: Goertzel DTMF detection for G.711 legs.

pub mod dtmf;
pub mod g711;
pub mod goertzel;
pub mod inband;
pub mod jitter;
pub mod latch;
pub mod opus;
pub mod resample;
pub mod rewrite;
pub mod rtcp;
pub mod rtp;
pub mod stats;
