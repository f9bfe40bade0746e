//! The AI tap's worker side: pacing engine audio out one packet per ptime,
//! flushes (barge-in) and the played counter. The caller-to-engine
//! direction runs through the decoded path in `mod.rs`.

use super::leg::{LegState, Receive};
use super::txqueue::TxQueue;
use super::{
    ConfigError, Event, Leg, LegConfig, Mode, PTIME, Pipeline, Scratch, send_encoded, with_scratch,
};
use crate::resample::Resampler;
use crate::rewrite::Source;
use crate::tap::{EngineFrame, TapConfig, TapWorker};
use std::time::{Duration, Instant};

/// A playout tick this late means the worker stalled (compared as an
/// instant: one addition, where the time since the tick was a
/// subtraction with its sign checks, every tick of every tapped call).
const STALLED: Duration = PTIME.saturating_mul(3);

pub(super) struct Tap {
    pub(super) cfg: TapConfig,
    pub(super) worker: TapWorker,
    pub(super) to_engine: Resampler,
    pub(super) from_engine: Resampler,
    pub(super) next_tick: Instant,
    pub(super) partial_waiting: bool,
    /// Source id for the rewriter: bumped when playout resumes after not
    /// sending (so the timestamp jumps by the real gap).
    pub(super) source: u32,
    pub(super) sending: bool,
    /// The last tick sent engine audio (not silence, not nothing).
    pub(super) speaking: bool,
}

impl Tap {
    /// When the next playout tick may go: its slot on the grid, less the
    /// configured slack (at most a quarter of a ptime).
    pub(super) fn due(&self) -> Instant {
        let slack = self.cfg.pacing_slack.min(PTIME / 4);
        self.next_tick.checked_sub(slack).unwrap_or(self.next_tick)
    }
}

impl Pipeline {
    /// Explicit flush of the AI playout (when the barge-in decision is made
    /// on the worker's side); [`TapEngine::flush`](crate::tap::TapEngine::flush) does the same from the AI
    /// side.
    pub fn flush_playout(&mut self) {
        let Mode::Tap(tap) = &mut self.mode else {
            return;
        };
        let mut discarded = 0u64;
        let frame = crate::resample::frame_len(tap.cfg.from_engine_rate);
        with_scratch(|s| {
            while tap.worker.engine_available() > 0 {
                let (_, n) = tap.worker.pull_engine(&mut s.pcm[..frame], true);
                discarded += n as u64;
            }
        });
        tap.from_engine.reset();
        tap.partial_waiting = false;
        let rate = u64::from(tap.cfg.from_engine_rate);
        let played_ms = tap.worker.played() * 1000 / rate;
        self.emit(Event::PlayoutFlushed {
            played_ms,
            discarded_ms: discarded * 1000 / rate,
        });
    }

    /// The tapped leg renegotiated (a re-INVITE that changes codec): its
    /// receive and send paths are rebuilt for `caller`, and so are the
    /// resamplers between it and the engine; the engine's side (rings,
    /// flush and played counters) carries on untouched, so the AI session
    /// never notices. The leg's counters carry over. Its stream carries on
    /// too (SSRC, numbering, sender counts) while the RTP clock rate stays
    /// (PCMU ↔ PCMA); a new clock rate starts a new stream (the SSRC in
    /// `caller`), as RFC 7160 §4.1 wants of a sender. False when this is
    /// not a tap.
    pub fn retap(&mut self, now: Instant, caller: LegConfig) -> Result<bool, ConfigError> {
        let Mode::Tap(tap) = &mut self.mode else {
            return Ok(false);
        };
        super::check_leg(&caller)?;
        let to_engine = Resampler::new(caller.codec.pcm_rate, tap.cfg.to_engine_rate)?;
        let from_engine = Resampler::new(tap.cfg.from_engine_rate, caller.codec.pcm_rate)?;
        let mut leg = LegState::new(now, Leg::A, &self.cfg, caller, Receive::OnArrival)?;
        if let Some(old) = &self.legs[0] {
            leg.stats = old.stats;
            leg.held = old.held;
            if old.rewriter.clock_rate() == leg.rewriter.clock_rate() {
                leg.rewriter = old.rewriter.clone();
                leg.send = old.send;
                // Our own numbering goes on too, or the rewriter would
                // take the new encoder's first packets for old ones.
                if let (Some(new), Some(old)) = (&mut leg.tx, &old.tx) {
                    new.seq = old.seq;
                    new.ts = old.ts;
                }
            }
        }
        self.legs[0] = Some(leg);
        tap.to_engine = to_engine;
        tap.from_engine = from_engine;
        tap.partial_waiting = false;
        Ok(true)
    }

    /// Engine audio landed while the tap was quiet (see
    /// [`Kick`](crate::tap::Kick)): its first frame goes at once, and the
    /// pacing continues from there, instead of waiting up to a ptime for
    /// the next tick. While the engine speaks this does nothing.
    pub fn kick_playout(&mut self, now: Instant) {
        let Mode::Tap(tap) = &mut self.mode else {
            return;
        };
        if !tap.speaking
            && now < tap.next_tick
            && tap.worker.engine_available() >= tap.from_engine.input_len()
        {
            tap.next_tick = now;
        }
    }

    /// AI playout: one packet per ptime to the caller.
    pub(super) fn tap_ticks(&mut self, now: Instant) {
        loop {
            let Pipeline { mode, legs, tx, .. } = self;
            let Mode::Tap(tap) = mode else { return };
            if tap
                .next_tick
                .checked_add(STALLED)
                .is_some_and(|late| now > late)
            {
                // The worker stalled: do not burst to catch up.
                tap.next_tick = now;
            }
            if now < tap.due() {
                return;
            }
            tap.next_tick += PTIME;
            let rate = u64::from(tap.cfg.from_engine_rate);
            let flushed = tap.worker.apply_flush().map(|discarded| {
                tap.from_engine.reset();
                tap.partial_waiting = false;
                Event::PlayoutFlushed {
                    played_ms: tap.worker.played() * 1000 / rate,
                    discarded_ms: discarded * 1000 / rate,
                }
            });
            if let Some(caller) = &mut legs[0] {
                with_scratch(|scratch| tap_tick(now, tap, caller, tx, scratch));
            }
            if let Some(e) = flushed {
                self.emit(e);
            }
            self.caller_silence(now);
        }
    }

    /// On the tick's clock, a frame of silence for the engine while the
    /// caller sends nothing: a far end with silence suppression (G.711
    /// VAD, Opus DTX) or one whose media has not started yet. The engine's
    /// voice detection ends the caller's turn on silence it hears; with
    /// no audio at all it would wait for ever and never answer. Audio that
    /// does come (its jitter buffer active, concealing short gaps itself)
    /// stops the filling at once.
    fn caller_silence(&mut self, now: Instant) {
        let Some(l) = &self.legs[0] else { return };
        let Some(rx) = &l.rx else { return };
        if rx.jb.next_due().is_some() {
            return;
        }
        let (frame, talkspurt) = (l.cfg.codec.frame_samples().max(1), rx.talkspurt);
        with_scratch(|scratch| {
            scratch.pcm[..frame].fill(0);
            self.deliver_decoded(now, Leg::A, scratch, 0..frame, talkspurt);
        });
    }
}

/// One AI playout tick: a frame of engine audio (or silence) to the caller.
fn tap_tick(
    now: Instant,
    tap: &mut Tap,
    caller: &mut LegState,
    tx: &mut TxQueue,
    scratch: &mut Scratch,
) {
    // Nowhere to send yet (a caller that still rings: its address is set
    // on the answer): no silence goes out, and the engine's audio waits
    // in its ring, so the first words are heard once the call is up.
    if !caller.held && caller.latch.destination().is_none() {
        return;
    }
    let Scratch { pcm, pcm2, payload } = scratch;
    let in_n = tap.from_engine.input_len();
    let out_n = tap.from_engine.output_len();
    let (kind, got) = tap
        .worker
        .pull_engine(&mut pcm[..in_n], tap.partial_waiting);
    tap.speaking = kind == EngineFrame::Audio;
    match kind {
        EngineFrame::Audio => {
            // Played once taken: a frame that cannot go out (no address
            // for the caller yet, a full queue, a codec error) is a gap in
            // the caller's stream, not audio still to come, and the AI
            // side counts its turns' positions in these samples.
            tap.worker.mark_played(got);
            tap.partial_waiting = false;
            if tap
                .from_engine
                .process(&pcm[..in_n], &mut pcm2[..out_n])
                .is_err()
            {
                return;
            }
        }
        EngineFrame::Empty => {
            tap.partial_waiting = got > 0;
            if !tap.cfg.send_silence {
                tap.sending = false;
                return;
            }
            pcm2[..out_n].fill(0);
        }
    }
    if !tap.sending {
        tap.source = tap.source.wrapping_add(1);
        tap.sending = true;
    }
    send_encoded(
        now,
        caller,
        tx,
        &pcm2[..out_n],
        payload,
        Source::Local { id: tap.source },
    );
}
