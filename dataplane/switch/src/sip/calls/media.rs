//! A call's media: ports for its SDP and, in the running switch, the media
//! engine that relays its RTP (see `crate::media`). The sans-IO tests run
//! on a bare port pool: the same SDP, no sockets.
//!
//! Relaying starts once both legs have negotiated, and follows every later
//! negotiation (re-INVITE, UPDATE, hold). Legs on the same codec are
//! relayed packet for packet; legs that settled on different codecs are
//! bridged through a transcoding pipeline on the call's worker (decode,
//! resample, encode), which a later negotiation onto one codec turns back
//! into the plain relay.

use std::net::Ipv4Addr;
use std::time::Instant;

use codeb_media::codec::{CodecKind, CodecSpec};
use codeb_media::pipeline::LegConfig;
use codeb_sip::sdp::{Codec, Direction, Negotiated};

use super::*;
use crate::media::{LegSide, MediaEngine, MediaEvent, MediaHandle, Remote};

/// Where a call's ports come from.
pub(crate) enum MediaPorts {
    Pool(PortPool),
    Engine(MediaEngine),
}

impl std::fmt::Debug for MediaPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaPorts::Pool(p) => f.debug_tuple("Pool").field(p).finish(),
            MediaPorts::Engine(e) => f.debug_tuple("Engine").field(e).finish(),
        }
    }
}

/// A call's media: the engine's handle (None on a bare pool) and the RTP
/// ports of its A and B legs (None: a leg it has no port for, the one an
/// AI call's engine takes until it is transferred to a person).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallMedia {
    pub handle: Option<MediaHandle>,
    pub ports: [Option<u16>; 2],
    /// Closed already: a call's media goes when it starts ending, not
    /// when its last BYE is answered (see `Core::ending`).
    pub released: bool,
}

/// Which of a call's legs get media ports when it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Legs {
    Both,
    /// A call whose other party is a voice-AI engine.
    Only(LegSide),
}

impl MediaPorts {
    /// RTP ports for `legs`, or None when none are left.
    pub(crate) fn open(&mut self, legs: Legs) -> Option<CallMedia> {
        let opened = |handle, ports| CallMedia {
            handle,
            ports,
            released: false,
        };
        match (self, legs) {
            (MediaPorts::Pool(p), Legs::Both) => {
                let a = p.allocate()?;
                match p.allocate() {
                    Some(b) => Some(opened(None, [Some(a), Some(b)])),
                    None => {
                        p.release(a);
                        None
                    }
                }
            }
            (MediaPorts::Pool(p), Legs::Only(side)) => {
                let mut ports = [None, None];
                ports[side as usize] = Some(p.allocate()?);
                Some(opened(None, ports))
            }
            (MediaPorts::Engine(e), Legs::Both) => match e.open() {
                Ok(o) => Some(opened(Some(o.handle), o.ports.map(Some))),
                Err(err) => {
                    tracing::warn!(error = %err, "no media for a call");
                    None
                }
            },
            (MediaPorts::Engine(e), Legs::Only(side)) => match e.open_leg(side) {
                Ok((handle, port)) => {
                    let mut ports = [None, None];
                    ports[side as usize] = Some(port);
                    Some(opened(Some(handle), ports))
                }
                Err(err) => {
                    tracing::warn!(error = %err, "no media for a call");
                    None
                }
            },
        }
    }

    /// The RTP port of `side`, opening it if the call has none yet (an
    /// AI call being transferred to a person); an error says why not.
    pub(crate) fn leg_port(
        &mut self,
        media: &mut CallMedia,
        side: LegSide,
    ) -> Result<u16, crate::media::MediaError> {
        use crate::media::MediaError;
        if let Some(port) = media.ports[side as usize] {
            return Ok(port);
        }
        if media.released {
            return Err(MediaError::Stopped);
        }
        let port = match (self, media.handle) {
            (MediaPorts::Pool(p), _) => p.allocate().ok_or(MediaError::NoPorts)?,
            (MediaPorts::Engine(e), Some(h)) => e.add_leg(h, side)?,
            (MediaPorts::Engine(_), None) => return Err(MediaError::Stopped),
        };
        media.ports[side as usize] = Some(port);
        Ok(port)
    }

    /// Gives back the port of `side`, whose sockets its worker could not
    /// take in; the call may get that leg again ([`Self::leg_port`]).
    pub(crate) fn release_leg(&mut self, media: &mut CallMedia, side: LegSide) {
        let Some(port) = media.ports[side as usize].take() else {
            return;
        };
        match (self, media.handle) {
            (MediaPorts::Pool(p), _) => p.release(port),
            (MediaPorts::Engine(e), _) => e.release_port(port),
        }
    }

    pub(crate) fn close(&mut self, media: CallMedia) {
        if media.released {
            return;
        }
        let ports = media.ports.into_iter().flatten();
        match (self, media.handle) {
            (MediaPorts::Pool(p), _) => {
                for port in ports {
                    p.release(port);
                }
            }
            (MediaPorts::Engine(e), Some(h)) => e.close(h, ports),
            (MediaPorts::Engine(_), None) => {}
        }
    }

    pub(crate) fn in_use(&self) -> usize {
        match self {
            MediaPorts::Pool(p) => p.in_use(),
            MediaPorts::Engine(e) => e.ports_in_use(),
        }
    }

    fn poll_event(&mut self) -> Option<MediaEvent> {
        match self {
            MediaPorts::Pool(_) => None,
            MediaPorts::Engine(e) => e.poll_event(),
        }
    }
}

/// A media pipeline's view of what a leg negotiated (None: no audio
/// codec). `ssrc` is our stream's towards it.
pub(super) fn leg_config(n: &Negotiated, ssrc: u32) -> Option<LegConfig> {
    let codec = match n.codec {
        Codec::Pcmu => CodecSpec {
            payload_type: n.pt,
            ..CodecSpec::pcmu()
        },
        Codec::Pcma => CodecSpec {
            payload_type: n.pt,
            ..CodecSpec::pcma()
        },
        Codec::Opus => CodecSpec::opus(n.pt, 48_000),
        Codec::L16 { rate } => CodecSpec::l16(n.pt, rate),
        Codec::TelephoneEvent { .. } => return None,
    };
    let mut leg = LegConfig::new(codec, ssrc);
    leg.telephone_event = n.dtmf_pt.filter(|pt| *pt != n.pt);
    leg.telephone_event_clock = n.dtmf_clock;
    leg.remote_rtp = n.remote;
    // Heard in the audio only where no telephone-event was agreed (the
    // pipeline also requires G.711).
    leg.inband_dtmf = true;
    Some(leg)
}

/// What an AI tap is built for: a negotiation that changes any of it needs
/// a new tap leg.
pub(super) fn tap_key(n: &Negotiated) -> (Codec, u8, Option<u8>) {
    (n.codec, n.pt, n.dtmf_pt)
}

/// The media engine's view of what a leg negotiated; `signalling` is the
/// IP its SIP comes from.
fn remote_of(n: &Negotiated, signalling: Option<IpAddr>) -> Option<Remote> {
    let codec = match n.codec {
        Codec::Pcmu => CodecKind::Pcmu,
        Codec::Pcma => CodecKind::Pcma,
        Codec::Opus => CodecKind::Opus,
        Codec::L16 { .. } => CodecKind::L16,
        // Negotiation never makes telephone-event a call's codec.
        Codec::TelephoneEvent { .. } => return None,
    };
    // No address is an RFC 2543 hold (`c=0.0.0.0`, RFC 3264 §8.4): the
    // engine keeps the far end's last address and sends it nothing, and
    // its silence is no timeout, as for `a=sendonly`.
    let held = n.remote.is_none();
    Some(Remote {
        addr: n
            .remote
            .unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)),
        payload_type: n.pt,
        codec,
        clock_rate: n.codec.clock(),
        dtmf_payload_type: n.dtmf_pt,
        dtmf_clock_rate: n.dtmf_clock,
        we_send: matches!(n.direction, Direction::SendRecv | Direction::SendOnly) && !held,
        times_out: n.direction == Direction::SendRecv && !held,
        signalling,
    })
}

impl Core {
    /// Runs the switch's calls on a media engine instead of a bare pool.
    pub fn set_media_engine(&mut self, engine: MediaEngine) {
        self.calls.media = MediaPorts::Engine(engine);
    }

    /// Tells the engine what both legs negotiated, once they agree on a
    /// codec (after every negotiation; repeating it changes nothing).
    pub(super) fn sync_media(&mut self, key: CallKey) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let MediaPorts::Engine(engine) = &mut self.calls.media else {
            return;
        };
        let Some(handle) = call.media.handle else {
            return;
        };
        // Where each leg's far end signals from (its dialog's peer).
        let dialogs = &self.calls.dialogs;
        let signalling = |leg: &Leg| {
            leg.dialog
                .as_ref()
                .and_then(|id| dialogs.get(id))
                .map(|d| d.remote().peer().ip())
        };
        // A call with an AI leg has one SIP leg; the tap learns its far
        // end (answer, re-INVITE) from here, not before the answer: a
        // virtual number's caller that rings gets nothing (a PRACK or an
        // UPDATE while it rings changes nothing until then).
        if let Some(o) = &call.origin
            && o.inbound
            && call.phase == Phase::Routing
        {
            return;
        }
        if let Some(o) = &call.origin
            && o.ai.is_some()
            && !call.transferred
        {
            let (side, n, from) = if o.inbound {
                (LegSide::A, &call.a.negotiated, signalling(&call.a))
            } else {
                (LegSide::B, &call.b.negotiated, signalling(&call.b))
            };
            if let Some(n) = n
                && call.tapped.is_some_and(|t| t != tap_key(n))
            {
                // A re-INVITE changed the codec under the AI: the tap
                // decodes and encodes the new one from now on.
                let ssrc = self.ids.next_u64() as u32;
                match leg_config(n, ssrc).map(|leg| engine.retap(handle, leg)) {
                    Some(Ok(())) => {
                        tracing::info!(call = key, codec = ?n.codec, "AI tap follows the new codec");
                        call.tapped = Some(tap_key(n));
                    }
                    Some(Err(e)) => tracing::warn!(call = key, error = %e, "AI tap not re-tapped"),
                    None => {}
                }
            }
            if let Some(r) = n.as_ref().and_then(|n| remote_of(n, from))
                && let Err(e) = engine.set_remote(handle, side, r)
            {
                tracing::warn!(call = key, ?side, error = %e, "media not updated");
            }
            return;
        }
        let (Some(a), Some(b)) = (&call.a.negotiated, &call.b.negotiated) else {
            return;
        };
        let codecs = (a.codec != b.codec).then_some((a.codec, b.codec));
        if codecs != call.bridged {
            // Codecs changed: a new bridge between them, or back to relay.
            let ssrcs = [self.ids.next_u64() as u32, self.ids.next_u64() as u32];
            let legs = match codecs {
                Some(_) => match (leg_config(a, ssrcs[0]), leg_config(b, ssrcs[1])) {
                    (Some(la), Some(lb)) => Some((la, lb)),
                    _ => return,
                },
                None => None,
            };
            // The pipeline's clock is the worker's (a monotonic Instant);
            // the sans-IO time passed around the core is not used there.
            match engine.set_bridge(Instant::now(), handle, legs) {
                Ok(()) => {
                    tracing::info!(call = key, a = ?a.codec, b = ?b.codec,
                        transcoding = codecs.is_some(), "call media bridged");
                    call.bridged = codecs;
                }
                Err(e) => tracing::warn!(call = key, error = %e, "media bridge not set up"),
            }
        }
        let from = [signalling(&call.a), signalling(&call.b)];
        for (side, n) in [(LegSide::A, a), (LegSide::B, b)] {
            if let Some(r) = remote_of(n, from[side as usize])
                && let Err(e) = engine.set_remote(handle, side, r)
            {
                tracing::warn!(call = key, ?side, error = %e, "media not updated");
            }
        }
    }

    /// Wakes the media workers that were given commands since the last
    /// call (the engine defers wake-ups when told to; see
    /// [`MediaEngine::set_deferred_wakes`]). The IO loop calls it once per
    /// turn.
    pub fn wake_media(&mut self) {
        if let MediaPorts::Engine(engine) = &mut self.calls.media {
            engine.wake_workers();
        }
    }

    /// Records every answered call (`CODEB_RECORD=all`), not only those
    /// whose PlaceCall asks.
    pub fn set_record_all(&mut self, all: bool) {
        self.calls.record_all = all;
    }

    /// Caller audio of AI calls in a long silence goes to the engine in
    /// batches of `ms` (`CODEB_AI_QUIET_BATCH_MS`; 20 or less, frame by
    /// frame).
    pub fn set_ai_quiet_batch(&mut self, ms: u32) {
        self.calls.ai_quiet_batch_ms = ms;
    }

    /// The AI engine's connect timeout: a virtual number's caller rings
    /// that long and 5 s more while its session starts (15 s in all by
    /// default), then is refused.
    pub fn set_ai_connect_timeout(&mut self, timeout: std::time::Duration) {
        self.calls.ai_ready_timeout = timeout + std::time::Duration::from_secs(5);
    }

    /// An answered call starts recording if the node records every call
    /// or the call asked (and the node records at all).
    pub(super) fn start_recording(&mut self, now: Instant, key: CallKey) {
        let at = self.wall_ms(now);
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let asked = call.origin.as_ref().is_some_and(|o| o.record);
        if !(self.calls.record_all || asked) {
            return;
        }
        let (MediaPorts::Engine(engine), Some(h)) = (&mut self.calls.media, call.media.handle)
        else {
            return;
        };
        // Placed and virtual-number ids are checked printable; routed
        // calls have none of ours.
        let name = match &call.origin {
            Some(o) => format!("{at}-{}", o.call_id),
            None => format!("{at}-call{key}"),
        };
        match engine.record(h, &name) {
            Ok(path) => tracing::info!(call = key, path = %path.display(), "recording"),
            Err(e) => tracing::warn!(call = key, error = %e, "call not recorded"),
        }
    }

    /// Events of the media engine: a call whose RTP stopped in both
    /// directions for the inactivity timeout is hung up.
    pub(crate) fn media_events(&mut self, now: Instant) {
        while let Some(ev) = self.calls.media.poll_event() {
            match ev {
                MediaEvent::Inactive { handle, stats } => {
                    let Some(&key) = self.calls.by_media.get(&handle) else {
                        continue;
                    };
                    tracing::info!(call = key, a = ?stats[0], b = ?stats[1],
                        "no RTP for the inactivity timeout; hanging up");
                    self.stats.rtp_timeouts += 1;
                    self.media_timeout(now, key);
                }
                MediaEvent::LegFailed { handle, leg } => {
                    let Some(&key) = self.calls.by_media.get(&handle) else {
                        continue;
                    };
                    tracing::error!(
                        call = key,
                        ?leg,
                        "the media worker could not take in a leg's sockets"
                    );
                    self.media_failed(now, key, leg);
                }
                MediaEvent::Closed { handle, stats } => {
                    // Each call's media quality and what its strict source
                    // turned away, for the operator (loss, jitter, drops).
                    let [a, b] = &stats;
                    tracing::info!(
                        ?handle,
                        a_rx = a.rx_packets,
                        a_lost = a.lost,
                        a_jitter_ms = a.jitter_ms,
                        a_dropped_source = a.dropped_source,
                        a_dropped_kernel = a.dropped_kernel,
                        a_dropped_invalid = a.dropped_invalid,
                        b_rx = b.rx_packets,
                        b_lost = b.lost,
                        b_jitter_ms = b.jitter_ms,
                        b_dropped_source = b.dropped_source,
                        b_dropped_kernel = b.dropped_kernel,
                        b_dropped_invalid = b.dropped_invalid,
                        "call media closed"
                    );
                }
                MediaEvent::Dtmf { handle, leg, digit } => {
                    let source = match digit.source {
                        codeb_media::dtmf::DtmfSource::TelephoneEvent => "telephone-event",
                        codeb_media::dtmf::DtmfSource::InBand => "inband",
                    };
                    *self.stats.dtmf_digits.entry(source).or_default() += 1;
                    // Debug, not info: keys are PINs and card numbers.
                    let key = self.calls.by_media.get(&handle).copied();
                    tracing::debug!(call = ?key, ?leg, key_pressed = ?digit.char(),
                        duration_ms = digit.duration.as_millis() as u64, source, "DTMF");
                }
            }
        }
    }
}

impl Core {
    /// A call one of whose legs has no sockets on its worker (see
    /// [`MediaEvent::LegFailed`]). The free side of an AI call not handed
    /// over (a leg added for a transfer, whose target has no dialog on it
    /// yet): its port goes back, so the next transfer opens it afresh, and
    /// a transfer still dialling fails (the AI keeps the call, and is
    /// told). A leg that carries a party: the call cannot carry audio
    /// there, and would never go quiet, so it ends now, in whatever phase
    /// it is.
    pub(super) fn media_failed(&mut self, now: Instant, key: CallKey, leg: LegSide) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if call.phase == Phase::Ending {
            return;
        }
        let side = match leg {
            LegSide::A => Side::A,
            LegSide::B => Side::B,
        };
        let free_side = call
            .origin
            .as_ref()
            .is_some_and(|o| o.ai.is_some() && side == o.ai_side())
            && !call.transferred
            && call.leg(side).dialog.is_none();
        if free_side {
            self.calls.media.release_leg(&mut call.media, leg);
            if let Some(t) = call.transfer.take_if(|t| t.side == side) {
                self.transfer_failed(
                    now,
                    key,
                    *t,
                    "the switch could not set up the media for the transfer".into(),
                    StatusCode::SERVICE_UNAVAILABLE,
                );
            }
            return;
        }
        let (placed, phase, answering) = (
            call.origin.is_some(),
            call.phase,
            call.a_invite_tx.is_some(),
        );
        if placed {
            return self.end_placed(
                now,
                key,
                "failed",
                "media: a leg's sockets could not be set up",
            );
        }
        match phase {
            Phase::Routing => self.fail_call(now, key, StatusCode::SERVICE_UNAVAILABLE),
            // B answered and our 2xx waits for A's PRACK: A gets a final
            // response and B a BYE.
            Phase::Answered if answering => {
                self.fail_call(now, key, StatusCode::SERVICE_UNAVAILABLE);
            }
            Phase::Answered | Phase::Confirmed => self.hang_up(now, key),
            Phase::Ending => {}
        }
    }

    /// Ends an answered call whose RTP stopped (a placed call reports it
    /// as a failure with its reason).
    fn media_timeout(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        if !matches!(call.phase, Phase::Answered | Phase::Confirmed) {
            return;
        }
        if call.origin.is_some() {
            self.end_placed(now, key, "failed", "no RTP for the inactivity timeout");
        } else {
            self.hang_up(now, key);
        }
    }
}

impl Core {
    /// Media counters for the metrics endpoint: packets relayed since
    /// start (0 without an engine) and RTP ports in use.
    /// The media workers' IO counters (None: no media engine).
    pub fn media_io(&self) -> Option<crate::media::MediaIo> {
        match &self.calls.media {
            MediaPorts::Engine(e) => Some(e.io()),
            MediaPorts::Pool(_) => None,
        }
    }

    pub fn media_stats(&self) -> (u64, usize) {
        let relayed = match &self.calls.media {
            MediaPorts::Engine(e) => e.relayed(),
            MediaPorts::Pool(_) => 0,
        };
        (relayed, self.calls.media.in_use())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_negotiated_codec_is_a_pipeline_leg_of_its_own_clock() {
        let n = |codec, pt| Negotiated {
            remote: Some("192.0.2.1:4000".parse().unwrap()),
            codec,
            pt,
            dtmf_pt: None,
            dtmf_clock: 8000,
            direction: Direction::SendRecv,
            ptime: 20,
        };
        for (codec, pt, clock) in [
            (Codec::Pcmu, 0, 8_000),
            (Codec::Pcma, 8, 8_000),
            (Codec::Opus, 111, 48_000),
            (Codec::L16 { rate: 16_000 }, 96, 16_000),
            (Codec::L16 { rate: 8_000 }, 97, 8_000),
        ] {
            let leg = leg_config(&n(codec, pt), 7).unwrap();
            assert_eq!(
                (leg.codec.payload_type, leg.codec.clock_rate),
                (pt, clock),
                "{codec:?}"
            );
            // The relay's view of the leg: the same codec and clock.
            let r = remote_of(&n(codec, pt), None).unwrap();
            assert_eq!(
                (r.codec, r.payload_type, r.clock_rate),
                (leg.codec.kind, pt, clock)
            );
            assert!(leg.inband_dtmf, "the pipeline listens where it can");
        }
        assert!(leg_config(&n(Codec::TelephoneEvent { rate: 8_000 }, 101), 7).is_none());
        assert!(remote_of(&n(Codec::TelephoneEvent { rate: 8_000 }, 101), None).is_none());
    }

    /// `c=0.0.0.0` (RFC 2543 hold) reaches the engine as a hold: before,
    /// the engine was not told and kept sending to the old address.
    #[test]
    fn an_sdp_without_an_address_is_a_hold_for_the_engine() {
        let n = |remote: Option<&str>, direction| Negotiated {
            remote: remote.map(|r| r.parse().unwrap()),
            codec: Codec::Pcmu,
            pt: 0,
            dtmf_pt: None,
            dtmf_clock: 8000,
            direction,
            ptime: 20,
        };
        let live = remote_of(&n(Some("192.0.2.1:4000"), Direction::SendRecv), None).unwrap();
        assert!(live.we_send && live.times_out);
        for direction in [Direction::SendRecv, Direction::SendOnly] {
            let held = remote_of(&n(None, direction), None).unwrap();
            assert!(!held.we_send && !held.times_out, "{direction:?}");
            assert!(held.addr.ip().is_unspecified());
        }
    }
}
