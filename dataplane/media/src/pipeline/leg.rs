//! One leg of a call's pipeline: what we know about the far end on that
//! leg (latched addresses, its stream's statistics, its DTMF) and the
//! stream we send it (rewriter, counters, encoder).

use super::{Event, Leg, LegConfig, LegStats, PipelineConfig};
use crate::codec::{AudioDecoder, AudioEncoder, CodecError};
use crate::dtmf::DtmfReceiver;
use crate::inband::{DetectorConfig, DtmfDetector};
use crate::jitter::{JitterBuffer, JitterConfig};
use crate::latch::SourceLatch;
use crate::rewrite::StreamRewriter;
use crate::stats::{ReceiveStats, SendStats};
use std::net::SocketAddr;
use std::time::Instant;

/// How a leg's incoming audio is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receive {
    /// Relayed as packets, not decoded.
    Relay,
    /// Decoded on the playout clock of an adaptive jitter buffer (the
    /// frames go out to a far end as a paced stream).
    Paced,
    /// Decoded as soon as each frame is here in order (the frames go to a
    /// consumer without a playout clock, such as a voice-AI engine).
    OnArrival,
}

/// Receive side of a decoded path: jitter buffer and decoder.
#[derive(Debug)]
pub(crate) struct DecodePath {
    pub jb: JitterBuffer,
    pub dec: AudioDecoder,
    /// Bumped when the buffer restarts (new talkspurt, resync): the stream
    /// fed from it then counts as a new source for the rewriter.
    pub talkspurt: u32,
    /// Decoded audio not yet sent: short of a whole 20 ms frame (the far
    /// end's packets are not 20 ms long), played with the next packet's,
    /// or whole frames the transmit queue had no room for.
    pub carry: [i16; super::MAX_FRAME + super::MAX_DECODE],
    pub carry_len: usize,
    /// Since when whole frames wait in `carry` for room in the queue.
    pub held: Option<Instant>,
}

/// Send side of a generated stream: encoder and our own counters (mapped
/// through the rewriter).
#[derive(Debug)]
pub(crate) struct EncodePath {
    pub enc: AudioEncoder,
    pub seq: u16,
    pub ts: u32,
    /// Telephone-event translation: (far-end event timestamp, our start
    /// timestamp for it).
    pub te_map: Option<(u32, u32)>,
}

#[derive(Debug)]
pub(crate) struct LegState {
    pub leg: Leg,
    pub cfg: LegConfig,
    pub latch: SourceLatch,
    pub rtcp_latch: SourceLatch,
    pub recv: ReceiveStats,
    pub remote_ssrc: Option<u32>,
    pub send: SendStats,
    pub rewriter: StreamRewriter,
    pub dtmf: DtmfReceiver,
    pub inband: Option<DtmfDetector>,
    pub last_rx: Instant,
    pub inactive_reported: bool,
    pub next_rtcp: Instant,
    pub stats: LegStats,
    pub rx: Option<Box<DecodePath>>,
    pub tx: Option<Box<EncodePath>>,
    /// The far end holds the call: it is sent no RTP, and nothing is
    /// encoded or numbered for it ([`Pipeline::hold`](super::Pipeline::hold)).
    pub held: bool,
}

impl LegState {
    pub fn new(
        now: Instant,
        leg: Leg,
        pcfg: &PipelineConfig,
        cfg: LegConfig,
        receive: Receive,
    ) -> Result<Self, CodecError> {
        let codec = cfg.codec;
        let inband = (cfg.inband_dtmf && cfg.telephone_event.is_none() && codec.law().is_some())
            .then(|| DtmfDetector::new(DetectorConfig::default()));
        let (rx, tx) = if receive != Receive::Relay {
            let jcfg = JitterConfig {
                min_delay: pcfg.jitter_min,
                max_delay: pcfg.jitter_max,
                on_arrival: receive == Receive::OnArrival,
                // RFC 3551 4.2: receivers should take packets of up to
                // 200 ms, which for G.711 is as much as a datagram holds.
                // An Opus packet is at most 1,275 bytes (RFC 6716): a
                // longer one is refused here and concealed as lost.
                max_payload: match codec.kind {
                    crate::codec::CodecKind::Opus => crate::opus::MAX_PACKET,
                    _ => crate::rtp::MAX_PACKET_LEN - crate::rtp::FIXED_HEADER_LEN,
                },
                ..JitterConfig::new(codec.clock_rate)
            };
            (
                Some(Box::new(DecodePath {
                    jb: JitterBuffer::new(now, jcfg),
                    dec: AudioDecoder::new(&codec)?,
                    talkspurt: 0,
                    carry: [0; super::MAX_FRAME + super::MAX_DECODE],
                    carry_len: 0,
                    held: None,
                })),
                Some(Box::new(EncodePath {
                    enc: AudioEncoder::new(&codec)?,
                    seq: 0,
                    ts: 0,
                    te_map: None,
                })),
            )
        } else {
            (None, None)
        };
        let rtcp_expected = cfg.remote_rtcp.or_else(|| {
            cfg.remote_rtp
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
        });
        Ok(LegState {
            leg,
            latch: SourceLatch::new(pcfg.latch, cfg.remote_rtp),
            rtcp_latch: SourceLatch::new(pcfg.latch, rtcp_expected),
            recv: ReceiveStats::new(codec.clock_rate),
            remote_ssrc: None,
            send: SendStats::default(),
            rewriter: StreamRewriter::new(
                cfg.ssrc,
                codec.clock_rate,
                codec.frame_ticks(),
                cfg.first_seq,
                cfg.first_ts,
            ),
            // On their own clock: the audio's, or 8 kHz beside Opus.
            dtmf: DtmfReceiver::new(cfg.telephone_event_clock, pcfg.dtmf_end_timeout),
            inband,
            last_rx: now,
            inactive_reported: false,
            next_rtcp: now + pcfg.rtcp_interval,
            stats: LegStats::default(),
            rx,
            tx,
            held: false,
            cfg,
        })
    }

    /// Where RTCP for this leg goes.
    pub fn rtcp_destination(&self) -> Option<SocketAddr> {
        if self.cfg.rtcp_mux {
            return self.latch.destination();
        }
        self.rtcp_latch.destination().or_else(|| {
            self.latch
                .destination()
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
        })
    }

    /// Accounts a valid packet from the far end: SSRC change, A.1 stats,
    /// activity.
    pub fn on_received(&mut self, now: Instant, ssrc: u32, seq: u16, ts: u32, len: usize) {
        if self.remote_ssrc != Some(ssrc) {
            // Another source: its own sequence, loss and jitter; what the
            // one before lost stays in the stream's total.
            if self.remote_ssrc.is_some() {
                self.recv.new_source();
            }
            self.remote_ssrc = Some(ssrc);
        }
        self.recv.update(now, seq, ts, len);
        self.last_rx = now;
        self.inactive_reported = false;
        self.stats.rtp_in += 1;
        self.stats.bytes_in += len as u64;
    }

    /// The inactivity deadline, if not yet reported.
    pub fn inactivity_deadline(&self, pcfg: &PipelineConfig) -> Option<Instant> {
        (!self.inactive_reported).then(|| self.last_rx + pcfg.inactivity_timeout)
    }

    pub fn check_inactivity(&mut self, now: Instant, pcfg: &PipelineConfig) -> Option<Event> {
        let deadline = self.inactivity_deadline(pcfg)?;
        if now >= deadline {
            self.inactive_reported = true;
            return Some(Event::Inactive {
                leg: self.leg,
                since: self.last_rx,
            });
        }
        None
    }
}
