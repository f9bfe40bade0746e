//! The pipeline's vocabulary: legs, configuration, events, verdicts and
//! counters.

use crate::codec::{CodecError, CodecSpec};
use crate::dtmf::Digit;
use crate::latch::LatchConfig;
use crate::resample::ResampleError;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

/// A side of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    A,
    B,
}

impl Leg {
    pub(super) fn index(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
        }
    }
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Rtp,
    Rtcp,
}

/// A datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub leg: Leg,
    /// Which of the leg's sockets sends it (with rtcp-mux, both are the RTP
    /// socket).
    pub kind: PacketKind,
    pub destination: SocketAddr,
    pub data: &'a [u8],
}

/// What a leg negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegConfig {
    pub codec: CodecSpec,
    /// RFC 4733 payload type.
    pub telephone_event: Option<u8>,
    /// The clock its telephone-events run on: the audio's by default (as
    /// RFC 4733 recommends); negotiation may say 8 kHz beside Opus.
    pub telephone_event_clock: u32,
    /// Where the far end's SDP says to send (before latching).
    pub remote_rtp: Option<SocketAddr>,
    pub remote_rtcp: Option<SocketAddr>,
    pub rtcp_mux: bool,
    /// Our stream's SSRC and starting numbers; pick them at random
    /// (RFC 3550 §5.1).
    pub ssrc: u32,
    pub first_seq: u16,
    pub first_ts: u32,
    /// Detect DTMF tones in the audio (G.711 legs without telephone-event).
    pub inband_dtmf: bool,
}

impl LegConfig {
    pub fn new(codec: CodecSpec, ssrc: u32) -> Self {
        LegConfig {
            codec,
            telephone_event: None,
            telephone_event_clock: codec.clock_rate,
            remote_rtp: None,
            remote_rtcp: None,
            rtcp_mux: false,
            ssrc,
            first_seq: (ssrc >> 16) as u16,
            first_ts: ssrc.rotate_left(7),
            inband_dtmf: true,
        }
    }
}

/// Settings shared by the legs of a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub latch: LatchConfig,
    /// No RTP received on a leg for this long: [`Event::Inactive`].
    pub inactivity_timeout: Duration,
    pub rtcp_interval: Duration,
    pub jitter_min: Duration,
    pub jitter_max: Duration,
    /// A telephone-event without packets this long is reported as ended.
    pub dtmf_end_timeout: Duration,
    /// RTCP SDES CNAME of our streams.
    pub cname: [u8; 16],
    /// A wall-clock reading and the `Instant` it was taken at, for the NTP
    /// timestamps of sender reports (zero when absent, as RFC 3550 allows).
    pub wallclock: Option<(Instant, SystemTime)>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            latch: LatchConfig::default(),
            inactivity_timeout: Duration::from_secs(60),
            rtcp_interval: Duration::from_secs(5),
            jitter_min: Duration::from_millis(20),
            jitter_max: Duration::from_millis(200),
            dtmf_end_timeout: Duration::from_millis(300),
            cname: *b"codeb-switch\0\0\0\0",
            wallclock: None,
        }
    }
}

/// Something the owner should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Dtmf {
        leg: Leg,
        digit: Digit,
    },
    /// No RTP from the leg since `since` (reported once until it resumes).
    Inactive {
        leg: Leg,
        since: Instant,
    },
    /// The leg's far end was learned (or moved during learning).
    Latched {
        leg: Leg,
        address: SocketAddr,
    },
    /// A flush emptied the AI playout queue.
    PlayoutFlushed {
        played_ms: u64,
        discarded_ms: u64,
    },
}

/// Why a received packet went no further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Malformed,
    /// Not from the latched (or learning-candidate) address.
    WrongSource,
    UnknownPayloadType,
    /// Its turn in the jitter buffer had passed, or a duplicate.
    Late,
    /// The other side has no address yet.
    NoDestination,
    QueueFull,
    /// No such leg in this pipeline.
    NoLeg,
}

/// What became of a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Sent on to the other leg.
    Forwarded,
    /// Held for playout (decoded paths).
    Buffered,
    /// Used here (RTCP, DTMF without a telephone-event on the other side).
    Consumed,
    Dropped(DropReason),
}

/// Counters of one leg (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegStats {
    pub rtp_in: u64,
    pub bytes_in: u64,
    pub rtcp_in: u64,
    pub malformed: u64,
    pub wrong_source: u64,
    pub unknown_payload_type: u64,
    pub late: u64,
    pub codec_errors: u64,
    /// Packets sent to this leg.
    pub rtp_out: u64,
    pub rtcp_out: u64,
    pub no_destination: u64,
    pub queue_full: u64,
    /// Loss and jitter the far end reports about our stream.
    pub far_fraction_lost: u8,
    pub far_cumulative_lost: i32,
    pub far_jitter: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Resample(#[from] ResampleError),
    #[error("payload type {0} is not 0..=127 or collides with RTCP")]
    PayloadType(u8),
}
