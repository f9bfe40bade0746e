//! One AI call: the session, the engine side of the tap, and the
//! conversation's bookkeeping (turns, barge-in, the end).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use codeb_ai::session::AudioInput;
use codeb_ai::{AudioFormat, EngineEvent, SessionConfig, Usage, played_text};
use codeb_media::amd::{AmdConfig, MachineCue, Verdict, VoicemailDetector};
use codeb_media::tap::{TapCaller, TapEngine};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::{AiNote, AiStart, Role, audio, user_name_ok};
use crate::sip::calls::CallKey;

/// Caller audio goes to the engine as each frame arrives, read by the
/// session's own task ([`CallerInput`]); this clock tops up long engine
/// turns, notices played-out turns and due ends. It runs only while one
/// of those waits (see `housekeeping`): a call whose caller has the
/// floor wakes nobody ten times a second.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Engine audio held beyond the tap's ring, at most (engines send replies
/// faster than real time).
const MAX_PENDING_SECONDS: usize = 120;
/// After `end_call`, the goodbye has this long to play out.
const END_GRACE: Duration = Duration::from_secs(20);
/// After `end_call`, how long the engine may stay quiet (no audio, no
/// turn ended) before its goodbye is taken as said: a response after the
/// tool's answer may say nothing at all.
const END_QUIET: Duration = Duration::from_millis(1500);
/// After a stop, the session has this long to say its last word (usage).
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// Longest transcript turn kept (the control plane cuts again).
const MAX_TURN_TEXT: usize = 16 * 1024;

/// What the core tells a running call's task; the channel closing means
/// stop.
#[derive(Debug)]
pub(super) enum Control {
    /// Answer a tool call the engine waits for.
    ToolResult {
        id: String,
        name: String,
        ok: bool,
        detail: String,
    },
}

/// Where notes go.
pub(super) struct Notes {
    pub key: CallKey,
    pub tx: mpsc::Sender<(CallKey, AiNote)>,
    pub waker: codeb_io::Waker,
}

impl Notes {
    async fn send(&self, note: AiNote) {
        let wake = note.wakes();
        // The hub outlives its tasks; a send fails only at shutdown.
        let _ = self.tx.send((self.key, note)).await;
        if wake {
            self.waker.wake();
        }
    }
}

fn push_text(buf: &mut String, text: &str) {
    let room = MAX_TURN_TEXT.saturating_sub(buf.len());
    let mut cut = text.len().min(room);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    buf.push_str(&text[..cut]);
}

/// The conversation as the task sees it, sans IO: it is fed events and
/// audio counts and says which turns are whole.
#[derive(Debug)]
pub(super) struct Conversation {
    answered_at: Instant,
    /// Engine sample rate.
    rate: u64,
    caller_text: String,
    /// The caller's final words, held with when they were said until the
    /// AI turn that answers them is reported (heard, or cut), or the AI
    /// acts on them (a tool), or the session is over (`finish`, where
    /// words still coming join them): pieces of the same
    /// utterance the engine finalises late (Gemini gives its transcript no
    /// ordering, OpenAI's may follow the answer) join them instead of
    /// making another turn, and they are reported just before that turn.
    held_caller: Option<(String, u32)>,
    ai_text: String,
    /// Stream position (in engine samples that reach the caller) where
    /// the current AI turn's audio starts.
    turn_start: Option<u64>,
    turn_samples: u64,
    /// Played samples of the current turn when the caller cut in.
    interrupted_at: Option<u64>,
    /// When the engine's current turn began (its first audio): the words
    /// it answers were said by then, however late their transcript comes.
    turn_began: Option<Instant>,
    /// Samples received from the engine, and the ones a flush threw away.
    received: u64,
    discarded: u64,
    /// `end_call` was called: its reason and how long playout may take.
    ending: Option<(String, Instant)>,
    end_reported: bool,
    /// Since `end_call`: a turn has ended (the goodbye is all generated),
    /// and when the engine last sent audio (or the call, if none since).
    end_turn_done: bool,
    end_quiet_from: Option<Instant>,
    /// An AI turn the engine has finished but the caller has not heard to
    /// the end yet: reported once played out, or cut by an interruption.
    playing: Option<Spoken>,
    /// Caller turns so far, AI turns the caller heard (some of), and
    /// whether one of those came after the caller had spoken (a real
    /// exchange).
    caller_turns: u32,
    ai_heard: u32,
    replied: bool,
}

/// A generated AI turn still being played.
#[derive(Debug)]
struct Spoken {
    /// The caller had spoken when the engine finished it (a reply).
    after_caller: bool,
    text: String,
    /// Stream position of its first sample, and its length.
    start: u64,
    samples: u64,
}

impl Conversation {
    pub(super) fn new(answered_at: Instant, rate: u32) -> Conversation {
        Conversation {
            answered_at,
            rate: u64::from(rate.max(1)),
            caller_text: String::new(),
            held_caller: None,
            ai_text: String::new(),
            turn_start: None,
            turn_samples: 0,
            interrupted_at: None,
            turn_began: None,
            received: 0,
            discarded: 0,
            ending: None,
            end_reported: false,
            end_turn_done: false,
            end_quiet_from: None,
            playing: None,
            caller_turns: 0,
            ai_heard: 0,
            replied: false,
        }
    }

    /// Counts an AI turn the caller heard some of: a reply if the caller
    /// had spoken before the engine finished it (`after_caller`).
    fn heard(&mut self, note: Option<AiNote>, after_caller: bool) -> Option<AiNote> {
        if let Some(AiNote::Turn {
            role: Role::Ai,
            text,
            ..
        }) = &note
            && !text.is_empty()
        {
            self.ai_heard += 1;
            self.replied |= after_caller;
        }
        note
    }

    /// Whether the caller has said anything: a whole turn, or words still
    /// gathering (a vendor's transcript may come after the AI's answer,
    /// as OpenAI's does).
    fn caller_spoke(&self) -> bool {
        self.caller_turns > 0 || !self.caller_text.trim().is_empty() || self.held_caller.is_some()
    }

    /// The engine is answering: its turn's audio or words have begun.
    fn answering(&self) -> bool {
        self.turn_start.is_some() || !self.ai_text.is_empty()
    }

    /// `note`, and before it, if it is an AI turn, the caller's held words
    /// it answered.
    pub(super) fn answered(&mut self, note: Option<AiNote>) -> [Option<AiNote>; 2] {
        let ai_turn = matches!(note, Some(AiNote::Turn { role: Role::Ai, .. }));
        let caller = if ai_turn { self.release_caller() } else { None };
        [caller, note]
    }

    /// The caller's held words, as their turn.
    pub(super) fn release_caller(&mut self) -> Option<AiNote> {
        let (text, at_ms) = self.held_caller.take()?;
        self.caller_turns += 1;
        Some(AiNote::Turn {
            role: Role::Caller,
            text,
            at_ms,
            interrupted: false,
        })
    }

    fn at_ms(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.answered_at).as_millis())
            .unwrap_or(u32::MAX)
    }

    /// Engine audio arrived (`samples` of it) at `now`.
    pub(super) fn ai_audio(&mut self, now: Instant, samples: u64) {
        if self.ending.is_some() {
            self.end_quiet_from = Some(now);
        }
        if self.turn_start.is_none() {
            self.turn_start = Some(self.received.saturating_sub(self.discarded));
            self.turn_began = Some(now);
        }
        self.turn_samples += samples;
        self.received += samples;
    }

    /// The caller cut in: everything not yet played is thrown away.
    /// `played` is the tap's count of engine samples sent to the caller.
    /// A finished turn still playing is reported now, cut to what was
    /// heard; the one being generated is cut when it completes.
    pub(super) fn interrupted(&mut self, now: Instant, played: u64) -> Option<AiNote> {
        let unplayed = self
            .received
            .saturating_sub(self.discarded)
            .saturating_sub(played);
        self.discarded += unplayed;
        if let Some(start) = self.turn_start {
            self.interrupted_at = Some(played.saturating_sub(start).min(self.turn_samples));
        }
        // Words that come from now on cut in: they were said now, not
        // before the cut turn began.
        self.turn_began = None;
        let p = self.playing.take()?;
        let heard = played.saturating_sub(p.start).min(p.samples);
        let text = played_text(&p.text, heard, p.samples.max(1)).to_owned();
        let note = Some(AiNote::Turn {
            role: Role::Ai,
            text,
            at_ms: self.at_ms(now),
            interrupted: true,
        });
        self.heard(note, p.after_caller)
    }

    /// Milliseconds the caller heard of the AI turn an interruption cuts
    /// (the one being generated, else the one still playing), or `None`
    /// when it cuts nothing: the caller speaking after the AI's audio has
    /// all been played leaves the engine's record of it whole (a truncate
    /// would make the engine forget what it said).
    pub(super) fn played_ms_of_turn(&self, played: u64) -> Option<u32> {
        let heard = match (self.interrupted_at, self.turn_start, &self.playing) {
            (Some(at), _, _) => at,
            (None, Some(start), _) => played.saturating_sub(start).min(self.turn_samples),
            (None, None, Some(p)) if played < p.start + p.samples => played.saturating_sub(p.start),
            _ => return None,
        };
        Some(u32::try_from(heard * 1000 / self.rate).unwrap_or(u32::MAX))
    }

    /// A finished turn whose audio has now all been played, reported.
    pub(super) fn played_out(&mut self, now: Instant, played: u64) -> Option<AiNote> {
        let p = self.playing.as_ref()?;
        if played < p.start + p.samples {
            return None;
        }
        let p = self.playing.take()?;
        let note = Some(AiNote::Turn {
            role: Role::Ai,
            text: p.text,
            at_ms: self.at_ms(now),
            interrupted: false,
        });
        self.heard(note, p.after_caller)
    }

    /// A piece of the caller's transcript: a final one is held (see
    /// `held_caller`), to go out with the AI turn that answers it.
    pub(super) fn caller_transcript(&mut self, now: Instant, text: &str, is_final: bool) {
        if is_final {
            self.caller_text.clear();
        }
        push_text(&mut self.caller_text, text);
        if is_final {
            self.hold_caller(now);
        }
    }

    /// The caller's words gathered so far join the held ones.
    fn hold_caller(&mut self, now: Instant) {
        let text = std::mem::take(&mut self.caller_text);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        match &mut self.held_caller {
            Some((held, _)) => {
                push_text(held, " ");
                push_text(held, text);
            }
            None => {
                // Dated when the answer began, if it has: the caller had
                // said it by then.
                let at = self.turn_began.filter(|t| *t < now).unwrap_or(now);
                let mut held = String::new();
                push_text(&mut held, text);
                self.held_caller = Some((held, self.at_ms(at)));
            }
        }
    }

    /// The engine's whole text of the turn it ended last (more of its
    /// transcript came after): the turn still playing takes it; one
    /// already reported keeps what it said.
    pub(super) fn ai_revised(&mut self, text: &str) {
        if self.answering() {
            return;
        }
        if let Some(p) = &mut self.playing {
            p.text.clear();
            push_text(&mut p.text, text.trim());
        }
    }

    pub(super) fn ai_transcript(&mut self, text: &str, is_final: bool) {
        if is_final {
            self.ai_text.clear();
        }
        push_text(&mut self.ai_text, text);
    }

    /// The engine finished the AI's turn: its transcript, cut to what was
    /// heard if the caller interrupted it. A turn whose audio is still
    /// playing (engines generate faster than real time) waits for
    /// [`Self::played_out`] or [`Self::interrupted`]: the caller may yet
    /// cut it.
    pub(super) fn turn_complete(&mut self, now: Instant, played: u64) -> Option<AiNote> {
        self.end_turn_done |= self.ending.is_some();
        let text = std::mem::take(&mut self.ai_text);
        let interrupted = self.interrupted_at.is_some();
        let (start, samples) = (
            {
                self.turn_began = None;
                self.turn_start.take()
            },
            std::mem::take(&mut self.turn_samples),
        );
        let heard = if let Some(at) = self.interrupted_at.take() {
            played_text(text.trim(), at, samples.max(1)).to_owned()
        } else {
            text.trim().to_owned()
        };
        if let Some(start) = start
            && !interrupted
            && played < start + samples
        {
            // Anything still playing from before is heard first.
            let earlier = self.played_out(now, u64::MAX);
            self.playing = Some(Spoken {
                after_caller: self.caller_spoke(),
                text: heard,
                start,
                samples,
            });
            return earlier;
        }
        let note = (!heard.is_empty() || interrupted).then(|| AiNote::Turn {
            role: Role::Ai,
            text: heard,
            at_ms: self.at_ms(now),
            interrupted,
        });
        let after_caller = self.caller_spoke();
        self.heard(note, after_caller)
    }

    pub(super) fn end_call(&mut self, now: Instant, reason: String) {
        if self.ending.is_none() {
            self.ending = Some((reason, now + END_GRACE));
            self.end_quiet_from = Some(now);
        }
    }

    /// Ends now, whatever is playing (an answering machine): the reason,
    /// unless the end was reported already.
    pub(super) fn end_now(&mut self, now: Instant, reason: String) -> Option<String> {
        self.end_call(now, reason);
        self.end_reported_once()
    }

    fn end_reported_once(&mut self) -> Option<String> {
        let (reason, _) = self.ending.as_ref()?;
        if std::mem::replace(&mut self.end_reported, true) {
            return None;
        }
        Some(reason.clone())
    }

    /// Once the goodbye has been said and played (`drained`), or its grace
    /// is over: the reason to end the call with, reported once. Said: a
    /// turn has ended since `end_call` with none under way (the model may
    /// call the tool before it speaks, or speak again after the tool's
    /// answer), or the engine has been quiet for [`END_QUIET`].
    pub(super) fn end_due(&mut self, now: Instant, drained: bool) -> Option<String> {
        let (_, by) = self.ending.as_ref()?;
        let said = !self.answering()
            && (self.end_turn_done || self.end_quiet_from.is_some_and(|at| now >= at + END_QUIET));
        if !((drained && said) || now >= *by) {
            return None;
        }
        self.end_reported_once()
    }

    /// When the goodbye's playout must be over, if `end_call` was called.
    pub(super) fn end_by(&self) -> Option<Instant> {
        self.ending.as_ref().map(|(_, by)| *by)
    }

    pub(super) fn ending(&self) -> bool {
        self.ending.is_some()
    }

    /// The outcome the conversation has reached if the far end hangs up
    /// now (`played`: the tap's count; see [`AiNote::Reached`]).
    pub(super) fn reached(&self, played: u64) -> Option<String> {
        if let Some((reason, _)) = &self.ending {
            return Some(crate::ai::end_outcome(reason).to_owned());
        }
        // A finished turn played to its end counts as heard, though the
        // playout clock has not reported it yet.
        let playing_done = self
            .playing
            .as_ref()
            .map(|p| (played >= p.start + p.samples, p.after_caller));
        let speaking = self.turn_start.is_some() || playing_done.is_some_and(|(done, _)| !done);
        (self.exchanged(played) && !speaking).then(|| "finished".to_owned())
    }

    /// The AI and the caller have had a real exchange: a reply heard
    /// after the caller spoke; or, with the caller's words still to come
    /// (an asynchronous transcript), a second AI turn: the AI does not
    /// speak twice without being spoken to.
    pub(super) fn exchanged(&self, played: u64) -> bool {
        let playing_done = self
            .playing
            .as_ref()
            .map(|p| (played >= p.start + p.samples, p.after_caller));
        let heard = self.ai_heard + u32::from(playing_done.is_some_and(|(done, _)| done));
        self.replied || playing_done == Some((true, true)) || (self.caller_spoke() && heard >= 2)
    }

    /// Whether the playout clock matters: a finished turn waits to be
    /// heard to its end ([`Self::played_out`]) or a goodbye to drain
    /// ([`Self::end_due`]).
    pub(super) fn awaits_playout(&self) -> bool {
        self.playing.is_some() || (self.ending.is_some() && !self.end_reported)
    }

    /// What is left unsaid when the session ends (`played`: the tap's
    /// count): a turn still playing counts as heard.
    pub(super) fn finish(&mut self, now: Instant, played: u64) -> Vec<AiNote> {
        let mut out = Vec::new();
        self.hold_caller(now);
        out.extend(self.release_caller());
        out.extend(self.heard_at_end(now, played));
        if !self.ai_text.trim().is_empty() {
            out.extend(self.turn_complete(now, played));
            out.extend(self.heard_at_end(now, played));
        }
        out
    }

    /// The turn playing when the call ended, as far as it was heard: a
    /// hang-up cuts it as a barge-in does (a turn within [`END_SLACK_MS`]
    /// of its end, which the playout clock may not have reported yet,
    /// counts as heard whole; one not heard at all is left out).
    fn heard_at_end(&mut self, now: Instant, played: u64) -> Option<AiNote> {
        let played = played.saturating_add(self.rate * END_SLACK_MS / 1000);
        if let Some(note) = self.played_out(now, played) {
            return Some(note);
        }
        self.playing.as_ref()?;
        match self.interrupted(now, played) {
            Some(AiNote::Turn { text, .. }) if text.is_empty() => None,
            note => note,
        }
    }
}

/// The usage not yet reported, as an increment: what the vendor reported
/// since `sent` (sent as it comes, so a node lost mid-call loses little),
/// or, at the `end` of a session whose vendor never reported, the
/// estimate from its audio. None when there is nothing to add.
///
/// The output side is all the vendor counted beyond the prompt: its total
/// includes tokens neither prompt nor response (Gemini's thoughts and
/// tool-use prompts), and `tokensTotal` is the prompt plus the output.
pub(super) fn usage_note(total: &Usage, sent: &Usage, end: bool) -> Option<AiNote> {
    let beyond_prompt = |u: &Usage| {
        u.total_tokens
            .saturating_sub(u.prompt_tokens)
            .max(u.response_tokens)
    };
    if total.reports > 0 {
        let input = total.prompt_tokens.saturating_sub(sent.prompt_tokens);
        let output = beyond_prompt(total).saturating_sub(beyond_prompt(sent));
        return (input > 0 || output > 0).then_some(AiNote::Usage {
            input,
            output,
            estimated: false,
        });
    }
    if !end {
        return None;
    }
    let per_s = codeb_ai::event::TOKENS_PER_AUDIO_SECOND;
    Some(AiNote::Usage {
        input: total.audio_in_us.saturating_mul(per_s) / 1_000_000,
        output: total.audio_out_us.saturating_mul(per_s) / 1_000_000,
        estimated: true,
    })
}

/// The caller's side of the tap as the session reads it: each frame the
/// worker pushes wakes the session's task, which encodes it and writes it
/// to the engine in the same turn. The answering-machine detector listens
/// here, to every frame, and tells the call's task once it hears a
/// machine.
struct CallerInput {
    tap: TapCaller,
    /// Samples read at once, at most: five frames (a batch of quiet, or a
    /// task that fell behind).
    max_read: usize,
    amd: Option<VoicemailDetector>,
    machine: Option<oneshot::Sender<MachineCue>>,
}

thread_local! {
    /// Where the AI thread reads a call's caller audio into, and decodes
    /// a call's engine audio into: one buffer per thread for every call,
    /// not two per call (used only within one synchronous step, never
    /// across an await; a thread serves one call at a time).
    static CALLER_PCM: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
    static ENGINE_PCM: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
}

impl AudioInput for CallerInput {
    fn poll_audio(
        &mut self,
        cx: &mut Context<'_>,
        format: AudioFormat,
        out: &mut Vec<u8>,
    ) -> Poll<bool> {
        CALLER_PCM.with_borrow_mut(|pcm| {
            if pcm.len() < self.max_read {
                pcm.resize(self.max_read, 0);
            }
            self.read(cx, format, &mut pcm[..self.max_read], out)
        })
    }
}

impl CallerInput {
    /// [`AudioInput::poll_audio`], reading into `pcm`.
    fn read(
        &mut self,
        cx: &mut Context<'_>,
        format: AudioFormat,
        pcm: &mut [i16],
        out: &mut Vec<u8>,
    ) -> Poll<bool> {
        let n = match self.tap.poll_read(cx, pcm) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(false),
            Poll::Ready(Some(n)) => n,
        };
        let pcm = &pcm[..n];
        if let Some(d) = &mut self.amd
            && let Some(v) = d.push(pcm)
        {
            self.amd = None;
            if let (Verdict::Machine(cue), Some(tx)) = (v, self.machine.take()) {
                let _ = tx.send(cue);
            }
            // A person: the sender goes, and the task stops listening.
            self.machine = None;
        }
        audio::encode(pcm, format, out);
        Poll::Ready(true)
    }
}

/// Engine audio on its way into the tap's ring.
struct Playout {
    tap: TapEngine,
    pending: VecDeque<i16>,
    max_pending: usize,
    ring: usize,
    rate: u32,
    wrong_format_logged: bool,
}

impl Playout {
    fn top_up(&mut self) {
        while !self.pending.is_empty() {
            let (a, _) = self.pending.as_slices();
            let want = a.len();
            let n = self.tap.write_engine(a);
            self.pending.drain(..n);
            if n < want || n == 0 {
                break;
            }
        }
    }

    fn push(&mut self, data: &[u8], format: AudioFormat) -> u64 {
        if format.rate_hz != self.rate {
            if !self.wrong_format_logged {
                self.wrong_format_logged = true;
                tracing::warn!(
                    got = format.rate_hz,
                    want = self.rate,
                    "engine audio at an unexpected rate; dropped"
                );
            }
            return 0;
        }
        ENGINE_PCM.with_borrow_mut(|pcm| {
            pcm.clear();
            audio::decode(data, format, pcm);
            self.queue(pcm)
        })
    }

    /// Queues decoded engine audio; returns how much was taken. With
    /// nothing held back (nearly always: the ring holds 5 s) it goes
    /// straight into the ring, and only what does not fit is held,
    /// instead of a copy of every message through `pending`.
    fn queue(&mut self, pcm: &[i16]) -> u64 {
        let direct = if self.pending.is_empty() {
            self.tap.write_engine(pcm)
        } else {
            0
        };
        let rest = &pcm[direct..];
        let room = self.max_pending.saturating_sub(self.pending.len());
        if rest.len() > room {
            tracing::warn!(
                dropped = rest.len() - room,
                "engine audio backlog full; newest audio dropped"
            );
        }
        self.pending.extend(rest.iter().take(room));
        self.top_up();
        (direct + rest.len().min(room)) as u64
    }

    /// Engine samples played to the caller (the turns' positions count
    /// in the same samples).
    fn played(&self) -> u64 {
        self.tap.played_samples()
    }

    fn drained(&self) -> bool {
        self.pending.is_empty() && self.tap.engine_space() >= self.ring
    }
}

/// How far a turn playing at the end may be from its end and still count
/// as heard whole: the playout clock reports a few frames late.
const END_SLACK_MS: u64 = 200;

/// Whether a machine cue ends the call. A long stretch of speech is a
/// greeting only before the caller and the AI have had an exchange: after
/// one, it is a person answering at length (a beep is a machine still).
fn heeds(cue: &MachineCue, exchanged: bool) -> bool {
    match cue {
        MachineCue::LongGreeting { .. } => !exchanged,
        MachineCue::Beep { .. } => true,
    }
}

/// Runs one AI call until the session ends or the core stops it.
pub(super) async fn run(
    mut start: AiStart,
    cfg: SessionConfig,
    notes: Notes,
    mut control: mpsc::Receiver<Control>,
) {
    let call_id = start.call_id.clone();
    let to_rate = start.tap.to_engine_rate() as usize;
    let (machine_tx, mut machine) = oneshot::channel();
    let mut machine_open = start.detect_voicemail;
    let input = start.tap.split_caller().map(|tap| CallerInput {
        tap,
        max_read: to_rate / 50 * 5,
        // A G.711 caller's audio, resampled up for the engine, is heard
        // at its own 8 kHz: half the detector's work at 16 kHz.
        amd: start.detect_voicemail.then(|| {
            if start.narrowband_caller {
                VoicemailDetector::narrowband(to_rate as u32, AmdConfig::default())
            } else {
                VoicemailDetector::new(to_rate as u32, AmdConfig::default())
            }
        }),
        machine: Some(machine_tx),
    });
    let Some(input) = input else {
        // Only a fresh tap reaches here; without its caller side there is
        // nothing to talk to.
        notes
            .send(AiNote::Failed {
                detail: "AI tap without its caller side".into(),
            })
            .await;
        notes.send(AiNote::Closed).await;
        return;
    };
    let connected = tokio::select! {
        r = codeb_ai::session::connect_with_input(cfg, Box::new(input)) => Some(r),
        // Nothing but the stop can come before the session exists.
        _ = control.recv() => None,
    };
    let (session, mut events) = match connected {
        None => {
            notes.send(AiNote::Closed).await;
            return;
        }
        Some(Err(e)) => {
            tracing::warn!(call_id = %call_id, error = %e, "AI session did not start");
            notes
                .send(AiNote::Failed {
                    detail: format!("AI engine: {e}"),
                })
                .await;
            notes.send(AiNote::Closed).await;
            return;
        }
        Some(Ok(s)) => s,
    };
    tracing::info!(call_id = %call_id, provider = ?session.provider(), "AI session started");
    notes.send(AiNote::Started).await;
    let rate = start.tap.from_engine_rate();
    let ring = start.tap.engine_space();
    let mut play = Playout {
        tap: start.tap,
        pending: VecDeque::new(),
        max_pending: rate as usize * MAX_PENDING_SECONDS,
        ring,
        rate,
        wrong_format_logged: false,
    };
    let mut conv = Conversation::new(start.answered_at.unwrap_or_else(Instant::now), rate);
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut usage = Usage::default();
    let mut usage_sent = Usage::default();
    let mut stop_by: Option<Instant> = None;
    // Tool calls the engine called off: an answer the core still sends for
    // one (its transfer failed just before) is not the engine's to get.
    let mut called_off: VecDeque<String> = VecDeque::new();
    let mut closed_ending = false;
    loop {
        // The housekeeping clock ticked.
        let mut serve = false;
        let housekeeping = !play.pending.is_empty() || conv.awaits_playout() || stop_by.is_some();
        tokio::select! {
            ctl = control.recv(), if stop_by.is_none() => match ctl {
                Some(Control::ToolResult { id, .. }) if called_off.contains(&id) => {
                    tracing::debug!(call_id = %call_id, %id, "answer to a tool call the engine called off; dropped");
                }
                Some(Control::ToolResult { id, name, ok, detail }) => {
                    let out = if ok {
                        json!({"ok": true})
                    } else {
                        json!({"ok": false, "error": detail})
                    };
                    let _ = session.tool_result(id, name, out).await;
                }
                None => {
                    stop_by = Some(Instant::now() + CLOSE_GRACE);
                    notes.send(AiNote::Reached { outcome: conv.reached(play.played()) }).await;
                    let _ = session.close().await;
                }
            },
            cue = &mut machine, if machine_open => {
                machine_open = false;
                // Err: the detector heard a person, or the caller's side
                // is gone.
                if let Ok(cue) = cue
                    && stop_by.is_none()
                    && !conv.ending()
                    && heeds(&cue, conv.exchanged(play.played()))
                {
                    let now = Instant::now();
                    tracing::info!(call_id = %call_id, ?cue, "answering machine detected; hanging up");
                    let _ = conv.end_now(now, "voicemail".into());
                    notes
                        .send(AiNote::EndCall {
                            reason: "voicemail".into(),
                        })
                        .await;
                }
            }
            _ = tick.tick(), if housekeeping => serve = true,
            ev = events.recv() => {
                let now = Instant::now();
                let Some(ev) = ev else {
                    if stop_by.is_none() {
                        notes.send(AiNote::Failed {
                            detail: "AI engine: the session ended without a close".into(),
                        }).await;
                    }
                    break;
                };
                match ev {
                    EngineEvent::Audio { data, format } => {
                        let n = play.push(&data, format);
                        conv.ai_audio(now, n);
                    }
                    // The AI has decided to end the call: its goodbye
                    // plays to the end though the caller talks over it
                    // (says goodbye too).
                    EngineEvent::Interrupted if conv.ending() => {}
                    EngineEvent::Interrupted => {
                        play.tap.flush();
                        play.pending.clear();
                        let played = play.played();
                        let heard = conv.played_ms_of_turn(played);
                        let cut = conv.interrupted(now, played);
                        for n in conv.answered(cut).into_iter().flatten() {
                            notes.send(n).await;
                        }
                        if let Some(heard) = heard {
                            let _ = session.truncate(heard).await;
                        }
                    }
                    EngineEvent::InputTranscript { text, is_final } => {
                        conv.caller_transcript(now, &text, is_final);
                    }
                    EngineEvent::OutputTranscript { text, is_final } => {
                        conv.ai_transcript(&text, is_final);
                    }
                    EngineEvent::OutputRevised { text } => conv.ai_revised(&text),
                    EngineEvent::TurnComplete => {
                        let done = conv.turn_complete(now, play.played());
                        for n in conv.answered(done).into_iter().flatten() {
                            notes.send(n).await;
                        }
                    }
                    EngineEvent::ToolCall { call_id: id, name, args } => {
                        // The AI acts on what the caller said: it is said.
                        if let Some(n) = conv.release_caller() {
                            notes.send(n).await;
                        }
                        let arg = |k: &str| args.get(k).and_then(|v| v.as_str()).unwrap_or_default();
                        let out = match name.as_str() {
                            codeb_ai::config::TOOL_END_CALL => {
                                conv.end_call(now, arg("reason").chars().take(200).collect());
                                json!({"ok": true})
                            }
                            codeb_ai::config::TOOL_TRANSFER_TO_USER
                                if !start.transfer_users.is_empty() && user_name_ok(arg("user")) =>
                            {
                                // Answered by the core: the session waits
                                // while the user's phone rings.
                                let user = arg("user").to_owned();
                                tracing::info!(call_id = %call_id, %user, "the AI transfers the caller");
                                notes.send(AiNote::Transfer { id, user }).await;
                                continue;
                            }
                            codeb_ai::config::TOOL_TRANSFER_TO_USER if !start.transfer_users.is_empty() => {
                                json!({"ok": false, "error": format!(
                                    "user must be one of: {}", start.transfer_users.join(", "))})
                            }
                            _ => {
                                tracing::info!(call_id = %call_id, tool = %name, "AI asked for a tool this node does not offer");
                                json!({"ok": false, "error": format!("{name} is not available on this call")})
                            }
                        };
                        let _ = session.tool_result(id, name, out).await;
                    }
                    EngineEvent::Usage(u) => {
                        usage = u;
                        if let Some(n) = usage_note(&usage, &usage_sent, false) {
                            usage_sent = usage;
                            notes.send(n).await;
                        }
                    }
                    EngineEvent::Closed { code, error, usage: u } => {
                        usage = u;
                        if stop_by.is_none() {
                            let detail = match error {
                                Some(e) => format!("AI engine: {e}"),
                                None if conv.ending() => String::new(),
                                None => format!(
                                    "AI engine closed the session{}",
                                    code.map(|c| format!(" (code {c})")).unwrap_or_default()
                                ),
                            };
                            if !detail.is_empty() {
                                notes.send(AiNote::Failed { detail }).await;
                            } else {
                                // Closed after end_call: its goodbye
                                // still plays out below.
                                closed_ending = conv.ending();
                            }
                        }
                        break;
                    }
                    EngineEvent::Error { code, message } => {
                        tracing::info!(call_id = %call_id, ?code, %message, "AI engine reported an error");
                    }
                    EngineEvent::ToolCallCancelled { ids } => {
                        tracing::info!(call_id = %call_id, ?ids, "the engine called tool calls off");
                        for id in ids.into_iter().take(16) {
                            if called_off.len() == 16 {
                                called_off.pop_front();
                            }
                            called_off.push_back(id.clone());
                            notes.send(AiNote::ToolCancelled { id }).await;
                        }
                    }
                    EngineEvent::Ready
                    | EngineEvent::GoAway { .. }
                    | EngineEvent::Resumed => {
                        tracing::debug!(call_id = %call_id, ?ev, "AI session event");
                    }
                }
            }
        }
        if !serve {
            continue;
        }
        let now = Instant::now();
        if stop_by.is_some_and(|by| now >= by) {
            tracing::info!(call_id = %call_id, "AI session did not close in time; dropped");
            break;
        }
        play.top_up();
        let heard = conv.played_out(now, play.played());
        for n in conv.answered(heard).into_iter().flatten() {
            notes.send(n).await;
        }
        if stop_by.is_none()
            && let Some(reason) = conv.end_due(now, play.drained())
        {
            tracing::info!(call_id = %call_id, %reason, "the AI ended the call");
            notes.send(AiNote::EndCall { reason }).await;
        }
    }
    if closed_ending {
        // The engine closed after end_call: the goodbye it sent plays to
        // its end (or its grace) before the call is hung up, unless the
        // call goes first.
        let by = conv.end_by().unwrap_or_else(Instant::now);
        while !play.drained() && Instant::now() < by {
            play.top_up();
            tokio::select! {
                ctl = control.recv() => if ctl.is_none() { break },
                () = tokio::time::sleep(HOUSEKEEPING / 5) => {}
            }
        }
        if let Some(reason) = conv.end_reported_once() {
            tracing::info!(call_id = %call_id, %reason, "the AI ended the call");
            notes.send(AiNote::EndCall { reason }).await;
        }
    }
    for n in conv.finish(Instant::now(), play.played()) {
        notes.send(n).await;
    }
    if let Some(n) = usage_note(&usage, &usage_sent, true) {
        notes.send(n).await;
    }
    notes.send(AiNote::Closed).await;
    let dropped = play.tap.dropped_caller_frames();
    if dropped > 0 {
        // The session fell behind the caller by more than the tap's ring.
        tracing::warn!(call_id = %call_id, dropped, "caller frames not sent to the AI engine");
    }
    tracing::info!(call_id = %call_id, tokens = usage.tokens_total(), "AI session closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_audio_fills_the_ring_then_waits_and_keeps_its_order() {
        use codeb_media::codec::CodecSpec;
        use codeb_media::pipeline::{LegConfig, Pipeline};
        use codeb_media::tap::TapConfig;
        let now = Instant::now();
        // A 20 ms ring at 8 kHz: 160 samples.
        let tap = TapConfig {
            to_engine_rate: 8_000,
            from_engine_rate: 8_000,
            from_engine_ms: 20,
            ..TapConfig::default()
        };
        let leg = LegConfig::new(CodecSpec::pcmu(), 7);
        let (_pipeline, tap) =
            Pipeline::ai_tap(now, crate::media::tap_pipeline_config(now), leg, tap).unwrap();
        let ring = tap.engine_space();
        assert_eq!(ring, 160);
        let mut play = Playout {
            tap,
            pending: VecDeque::new(),
            max_pending: 300,
            ring,
            rate: 8_000,
            wrong_format_logged: false,
        };
        let pcm16 = |from: i16, n: i16| -> Vec<u8> {
            (from..from + n).flat_map(i16::to_le_bytes).collect()
        };
        let f = AudioFormat {
            codec: codeb_ai::Codec::PcmS16le,
            rate_hz: 8_000,
        };
        // 100 fit the ring at once; nothing is held.
        assert_eq!(play.push(&pcm16(0, 100), f), 100);
        assert!(play.pending.is_empty());
        // 100 more: 60 fill the ring, 40 wait.
        assert_eq!(play.push(&pcm16(100, 100), f), 100);
        assert_eq!(play.pending.len(), 40);
        assert_eq!(play.tap.engine_space(), 0);
        // With audio waiting, new audio queues behind it (the ring is
        // full anyway), up to the backlog's bound: 260 of 300 taken.
        assert_eq!(play.push(&pcm16(200, 300), f), 260);
        assert_eq!(play.pending.len(), 300);
        let held: Vec<i16> = play.pending.iter().copied().collect();
        assert_eq!(held, (160..460).collect::<Vec<i16>>());
        assert!(!play.drained());
    }

    /// A turn whose length is no whole number of milliseconds is played
    /// to its last sample: the playout position is counted in samples,
    /// not rounded down to a millisecond, or the turn would never count as
    /// played out (its transcript late, the call's end taken for a hang-up
    /// in mid-sentence).
    #[test]
    fn a_turn_of_no_whole_millisecond_is_played_to_its_last_sample() {
        use codeb_media::codec::CodecSpec;
        use codeb_media::pipeline::{LegConfig, Pipeline};
        use codeb_media::tap::TapConfig;
        let t0 = Instant::now();
        let tap = TapConfig {
            to_engine_rate: 8_000,
            from_engine_rate: 8_000,
            from_engine_ms: 200,
            ..TapConfig::default()
        };
        let leg = LegConfig {
            remote_rtp: Some("127.0.0.1:4000".parse().unwrap()),
            ..LegConfig::new(CodecSpec::pcmu(), 7)
        };
        let (mut pipeline, tap) =
            Pipeline::ai_tap(t0, crate::media::tap_pipeline_config(t0), leg, tap).unwrap();
        let ring = tap.engine_space();
        let mut play = Playout {
            tap,
            pending: VecDeque::new(),
            max_pending: 8_000,
            ring,
            rate: 8_000,
            wrong_format_logged: false,
        };
        let f = AudioFormat {
            codec: codeb_ai::Codec::PcmS16le,
            rate_hz: 8_000,
        };
        let mut conv = Conversation::new(t0, 8_000);
        // 125.375 ms of speech.
        let pcm: Vec<u8> = (0..1003i16).flat_map(|i| (i * 20).to_le_bytes()).collect();
        let n = play.push(&pcm, f);
        assert_eq!(n, 1003);
        conv.ai_audio(t0, n);
        conv.ai_transcript("Goodbye.", true);
        assert_eq!(conv.turn_complete(t0, play.played()), None, "still to play");
        let mut now = t0;
        while now < t0 + Duration::from_millis(400) {
            if let Some(at) = pipeline.poll_timeout() {
                now = at.max(now);
            }
            now += Duration::from_millis(1);
            pipeline.handle_timeout(now);
            while pipeline.poll_transmit().is_some() {}
        }
        assert_eq!(play.played(), 1003);
        assert_eq!(
            turn(conv.played_out(now, play.played())),
            ("Goodbye.".into(), false)
        );
    }

    #[test]
    fn transcript_and_usage_notes_wait_for_the_sip_thread_and_the_rest_wake_it() {
        let mut sip = codeb_io::Reactor::new(&codeb_io::Options {
            force_epoll: true,
            buffers: 1,
            buffer_len: 64,
            ..codeb_io::Options::default()
        })
        .unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let notes = Notes {
            key: 7,
            tx,
            waker: sip.waker(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let woken = |sip: &mut codeb_io::Reactor| {
            let mut n = 0;
            sip.poll(Some(Duration::ZERO), &mut |ev| {
                n += usize::from(matches!(ev, codeb_io::Event::Woken));
            })
            .unwrap();
            n > 0
        };
        let lazy = [
            AiNote::Turn {
                role: Role::Caller,
                text: "hello".into(),
                at_ms: 10,
                interrupted: false,
            },
            AiNote::Usage {
                input: 1,
                output: 2,
                estimated: false,
            },
        ];
        for note in lazy.clone() {
            rt.block_on(notes.send(note));
            assert!(!woken(&mut sip));
        }
        let urgent = [
            AiNote::Started,
            AiNote::EndCall {
                reason: "done".into(),
            },
            AiNote::Transfer {
                id: "t".into(),
                user: "alice".into(),
            },
            AiNote::Failed {
                detail: "lost".into(),
            },
            AiNote::Closed,
        ];
        for note in urgent.clone() {
            rt.block_on(notes.send(note));
            assert!(woken(&mut sip));
        }
        // All of them there, in the order sent.
        let mut got = Vec::new();
        while let Ok((key, note)) = rx.try_recv() {
            assert_eq!(key, 7);
            got.push(note);
        }
        assert_eq!(got, [&lazy[..], &urgent[..]].concat());
    }

    fn turn(n: Option<AiNote>) -> (String, bool) {
        match n {
            Some(AiNote::Turn {
                text, interrupted, ..
            }) => (text, interrupted),
            other => panic!("not a turn: {other:?}"),
        }
    }

    /// The caller's transcript may come, in more than one final piece,
    /// after the engine's answer has begun (Gemini gives it no ordering),
    /// even after the answer's turn ended: the pieces are one caller turn,
    /// dated when the answer began and reported just before the answer's
    /// own turn. The engine's revision of a turn still playing is the
    /// turn's text; one already reported keeps what it said.
    #[test]
    fn late_caller_pieces_are_one_turn_before_the_answer() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = Conversation::new(t0, 24_000);
        c.ai_audio(t0 + ms(2_000), 24_000);
        c.caller_transcript(t0 + ms(2_100), "is the office", true);
        c.ai_transcript("Yes, ", false);
        // The turn ends before it has played; then come its last words and
        // the caller's.
        assert_eq!(c.turn_complete(t0 + ms(2_800), 0), None);
        c.ai_revised("Yes, until six.");
        c.caller_transcript(t0 + ms(2_900), "open today", true);
        assert!(c.caller_spoke());
        let heard = c.played_out(t0 + ms(3_100), 24_000);
        let [caller, ai] = c.answered(heard);
        assert_eq!(
            caller,
            Some(AiNote::Turn {
                role: Role::Caller,
                text: "is the office open today".into(),
                at_ms: 2_000,
                interrupted: false
            })
        );
        assert_eq!(turn(ai), ("Yes, until six.".into(), false));
        // Reported: a revision now changes nothing, and words now are the
        // next exchange's, dated when they come.
        c.ai_revised("Yes, until six. Bye.");
        assert!(!c.answering());
        c.caller_transcript(t0 + ms(5_000), "thanks", true);
        let later = c.release_caller();
        assert!(
            matches!(
                later,
                Some(AiNote::Turn {
                    role: Role::Caller,
                    at_ms: 5_000,
                    ..
                })
            ),
            "{later:?}"
        );
    }

    #[test]
    fn whole_turns_are_reported_once_final() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 24_000);
        c.caller_transcript(t0, "hel", false);
        c.caller_transcript(t0, "lo", false);
        assert!(c.held_caller.is_none(), "pieces are not held");
        c.caller_transcript(t0 + Duration::from_millis(1500), "hello there", true);
        assert!(c.held_caller.is_some(), "held until the answer to it");
        let n = c.release_caller();
        assert_eq!(
            n,
            Some(AiNote::Turn {
                role: Role::Caller,
                text: "hello there".into(),
                at_ms: 1500,
                interrupted: false
            })
        );
        c.ai_transcript("Hi, ", false);
        c.ai_transcript("how can I help?", false);
        c.ai_audio(t0, 24_000);
        // Nothing finished yet: the playout clock does not matter.
        assert!(!c.awaits_playout());
        // Generated faster than it plays: reported once heard to the end,
        // which the playout clock watches for until then.
        assert_eq!(c.turn_complete(t0, 12_000), None);
        assert!(c.awaits_playout());
        assert_eq!(c.played_out(t0, 23_999), None);
        assert!(c.awaits_playout());
        assert_eq!(
            turn(c.played_out(t0, 24_000)),
            ("Hi, how can I help?".into(), false)
        );
        assert!(!c.awaits_playout());
        // An empty turn says nothing.
        assert_eq!(c.turn_complete(t0, 24_000), None);
    }

    #[test]
    fn an_interrupted_turn_keeps_what_was_heard() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 24_000);
        // A first, fully played turn of one second.
        c.ai_audio(t0, 24_000);
        c.ai_transcript("First turn.", true);
        assert!(!turn(c.turn_complete(t0, 24_000)).1);
        // The second turn: 4 s of audio, interrupted after 1 s of it played
        // while it was still being generated.
        c.ai_audio(t0, 96_000);
        c.ai_transcript("one two three four five six seven eight", true);
        assert_eq!(c.played_ms_of_turn(24_000 + 24_000), Some(1000));
        assert_eq!(c.interrupted(t0, 24_000 + 24_000), None);
        let (text, interrupted) = turn(c.turn_complete(t0, 48_000));
        assert!(interrupted);
        assert_eq!(text, "one two");
        // The next turn starts where the caller's stream is, not after
        // the discarded audio.
        c.ai_audio(t0, 24_000);
        assert_eq!(c.played_ms_of_turn(48_000 + 12_000), Some(500));
    }

    /// The caller speaking once the AI's turn has all been played cuts
    /// nothing: the engine is not told to truncate what it said.
    #[test]
    fn speech_after_the_turn_played_out_cuts_nothing() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 24_000);
        assert_eq!(c.played_ms_of_turn(0), None, "nothing said yet");
        c.ai_audio(t0, 24_000);
        c.ai_transcript("Hello, this is the clinic.", true);
        assert_eq!(c.turn_complete(t0, 6_000), None, "held while it plays");
        assert_eq!(c.played_ms_of_turn(23_999), Some(999), "still playing");
        assert_eq!(c.played_ms_of_turn(24_000), None, "played to its end");
        assert!(turn(c.played_out(t0, 24_000)).0.starts_with("Hello"));
        assert_eq!(c.played_ms_of_turn(30_000), None);
        assert_eq!(c.interrupted(t0, 30_000), None);
    }

    #[test]
    fn a_generated_turn_cut_during_its_playout_keeps_what_was_heard() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 24_000);
        // 4 s of reply, generated at once; the caller cuts in after 1 s.
        c.ai_audio(t0, 96_000);
        c.ai_transcript("one two three four five six seven eight", true);
        assert_eq!(c.turn_complete(t0, 0), None, "held while it plays");
        assert_eq!(c.played_ms_of_turn(24_000), Some(1000));
        assert!(c.awaits_playout());
        let (text, interrupted) = turn(c.interrupted(t0, 24_000));
        assert!(interrupted);
        assert_eq!(text, "one two");
        assert!(!c.awaits_playout(), "cut: nothing left to watch");
        assert_eq!(c.played_out(t0, u64::MAX), None, "reported once");
        // The next turn starts where the caller's stream is.
        c.ai_audio(t0, 24_000);
        c.ai_transcript("Sorry, go on.", true);
        assert_eq!(c.turn_complete(t0, 24_000), None);
        // The call ends 0.65 s into its 1 s: what was heard is kept.
        let left = c.finish(t0, 40_000);
        assert_eq!(left.len(), 1);
        assert_eq!(turn(left.into_iter().next()), ("Sorry, go".into(), true));
    }

    /// A turn playing when the call ends is saved as far as it was heard:
    /// the whole text was saved though the callee hung up mid-sentence.
    #[test]
    fn a_turn_cut_by_the_end_of_the_call_keeps_what_was_heard() {
        let t0 = Instant::now();
        // Hung up 0.3 s into a 1 s greeting.
        let mut c = Conversation::new(t0, 24_000);
        c.ai_audio(t0, 24_000);
        c.ai_transcript("Hello there, this is the clinic calling.", true);
        assert_eq!(c.turn_complete(t0, 0), None);
        let left = c.finish(t0, 7_200);
        assert_eq!(
            turn(left.into_iter().next()),
            ("Hello there, this is".into(), true)
        );
        // Within the slack of its end: heard whole.
        let mut c = Conversation::new(t0, 24_000);
        c.ai_audio(t0, 24_000);
        c.ai_transcript("Goodbye.", true);
        assert_eq!(c.turn_complete(t0, 0), None);
        let left = c.finish(t0, 24_000 - 2_400);
        assert_eq!(turn(left.into_iter().next()), ("Goodbye.".into(), false));
        // Not heard at all (still being generated): left out.
        let mut c = Conversation::new(t0, 24_000);
        c.ai_audio(t0, 24_000);
        c.ai_transcript("Hello", false);
        assert!(c.finish(t0, 0).is_empty());
    }

    #[test]
    fn a_hang_up_reaches_finished_only_after_a_real_exchange_with_the_ai_silent() {
        let t0 = Instant::now();
        let mut c = Conversation::new(t0, 24_000);
        assert_eq!(c.reached(0), None, "nothing said yet");
        // The greeting, generated and played: no exchange yet.
        c.ai_audio(t0, 24_000);
        c.ai_transcript("Hello, this is Ada.", true);
        assert_eq!(c.turn_complete(t0, 0), None);
        assert_eq!(c.reached(12_000), None, "greeting still playing");
        assert!(c.played_out(t0, 24_000).is_some());
        assert_eq!(c.reached(24_000), None, "greeted, the caller said nothing");
        // The caller answers; the AI's reply is generated, then plays.
        c.caller_transcript(t0, "Hi, who is this?", true);
        assert!(c.release_caller().is_some());
        assert_eq!(c.reached(24_000), None, "the AI has not answered");
        c.ai_audio(t0, 24_000);
        assert_eq!(c.reached(24_000), None, "the AI is answering");
        c.ai_transcript("Your dentist's office.", true);
        assert_eq!(c.turn_complete(t0, 24_000), None);
        assert_eq!(c.reached(36_000), None, "its answer is still playing");
        assert_eq!(
            c.reached(48_000),
            Some("finished".into()),
            "heard, AI silent"
        );
        // An answer that the caller cut to nothing is no reply.
        let mut c = Conversation::new(t0, 24_000);
        c.caller_transcript(t0, "Hello?", true);
        assert!(c.release_caller().is_some());
        c.ai_audio(t0, 24_000);
        c.ai_transcript("Good morning", true);
        assert_eq!(c.interrupted(t0, 0), None);
        assert_eq!(turn(c.turn_complete(t0, 0)), (String::new(), true));
        assert_eq!(c.reached(0), None);
        // During the goodbye (end_call), the call has reached the reason's
        // outcome, whatever is still playing.
        c.ai_audio(t0, 24_000);
        c.end_call(t0, "not-now".into());
        assert_eq!(c.reached(0), Some("not-now".into()));
        let mut c = Conversation::new(t0, 8_000);
        c.end_call(t0, String::new());
        assert_eq!(c.reached(0), Some("finished".into()));
        // The caller talks over the greeting, which was generated before
        // and plays on: no reply to them yet.
        let mut c = Conversation::new(t0, 24_000);
        c.ai_audio(t0, 24_000);
        c.ai_transcript("Hello, this is Ada.", true);
        assert_eq!(c.turn_complete(t0, 0), None);
        c.caller_transcript(t0, "Hello?", true);
        assert!(c.release_caller().is_some());
        assert_eq!(c.reached(24_000), None, "greeting heard, no reply");
        assert!(c.played_out(t0, 24_000).is_some());
        assert_eq!(c.reached(24_000), None);
        // A vendor whose transcript of the caller comes after the AI's
        // answer (OpenAI's is asynchronous): greeting and answer heard,
        // then the caller's words.
        let mut c = Conversation::new(t0, 24_000);
        for (i, text) in ["Hello, this is Ada.", "Tomorrow at ten."]
            .into_iter()
            .enumerate()
        {
            c.ai_audio(t0, 24_000);
            c.ai_transcript(text, true);
            assert_eq!(c.turn_complete(t0, 0), None);
            assert!(c.played_out(t0, 24_000 * (i as u64 + 1)).is_some());
        }
        assert_eq!(c.reached(48_000), None, "the caller said nothing (yet)");
        c.caller_transcript(t0, "When is it?", true);
        assert!(c.release_caller().is_some());
        assert_eq!(c.reached(48_000), Some("finished".into()));
    }

    /// A person who answers the AI at length after an exchange is not a
    /// voicemail greeting (the call was hung up on as `voicemail`); before
    /// any exchange it is, and a beep always is.
    #[test]
    fn a_long_answer_after_an_exchange_is_no_greeting() {
        let t0 = Instant::now();
        let long = MachineCue::LongGreeting { ms: 4_000 };
        let beep = MachineCue::Beep { hz: 1_000 };
        let mut c = Conversation::new(t0, 24_000);
        assert!(!c.exchanged(0));
        assert!(heeds(&long, c.exchanged(0)) && heeds(&beep, c.exchanged(0)));
        // The callee says hello; the AI greets and is heard.
        c.caller_transcript(t0, "Hello?", true);
        assert!(c.release_caller().is_some());
        c.ai_audio(t0, 24_000);
        c.ai_transcript("Hi, this is the clinic.", true);
        let _ = c.turn_complete(t0, 0);
        let _ = c.played_out(t0, 24_000);
        assert!(c.exchanged(24_000));
        assert!(!heeds(&long, c.exchanged(24_000)));
        assert!(heeds(&beep, c.exchanged(24_000)));
    }

    #[test]
    fn end_call_waits_for_playout_or_its_grace() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = Conversation::new(t0, 8_000);
        assert_eq!(c.end_due(t0, true), None);
        assert!(!c.awaits_playout());
        // The goodbye is spoken, then end_call; its turn ends after the
        // tool's answer.
        c.ai_audio(t0, 8_000);
        c.ai_transcript("Thank you, goodbye.", true);
        c.end_call(ms(100), "finished".into());
        assert!(c.awaits_playout(), "the goodbye drains or its grace ends");
        assert_eq!(c.end_due(ms(200), true), None, "still being said");
        assert_eq!(c.turn_complete(ms(300), 2_400), None, "plays on");
        assert_eq!(c.end_due(ms(400), false), None, "still playing");
        assert_eq!(
            turn(c.played_out(ms(1_000), 8_000)).0,
            "Thank you, goodbye."
        );
        assert_eq!(c.end_due(ms(1_000), true), Some("finished".into()));
        assert!(!c.awaits_playout());
        assert_eq!(c.end_due(ms(1_000), true), None, "reported once");
        // end_call before a word is said: the goodbye after the tool's
        // answer is waited for, not hung up on at once.
        let mut c = Conversation::new(t0, 8_000);
        c.end_call(t0, "finished".into());
        assert_eq!(c.end_due(ms(100), true), None);
        c.ai_audio(ms(600), 8_000);
        c.ai_transcript("Goodbye!", true);
        assert_eq!(c.end_due(ms(700), true), None, "being said");
        assert_eq!(turn(c.turn_complete(ms(800), 8_000)).0, "Goodbye!");
        assert_eq!(c.end_due(ms(800), true), Some("finished".into()));
        // A turn ended after end_call, then the response to the tool's
        // answer speaks again: that is waited for too.
        let mut c = Conversation::new(t0, 8_000);
        c.end_call(t0, "finished".into());
        c.ai_audio(ms(100), 800);
        let _ = c.turn_complete(ms(200), 800);
        c.ai_audio(ms(300), 800);
        assert_eq!(c.end_due(ms(400), true), None, "speaking again");
        let _ = c.turn_complete(ms(500), 1_600);
        assert_eq!(c.end_due(ms(500), true), Some("finished".into()));
        // Nothing more said after the tool's answer: quiet for END_QUIET.
        let mut c = Conversation::new(t0, 8_000);
        c.end_call(t0, "finished".into());
        assert_eq!(
            c.end_due(t0 + END_QUIET - Duration::from_millis(1), true),
            None
        );
        assert_eq!(c.end_due(t0 + END_QUIET, true), Some("finished".into()));
        // Never drained: the grace.
        let mut c = Conversation::new(t0, 8_000);
        c.end_call(t0, String::new());
        assert_eq!(c.end_due(t0 + END_GRACE, false), Some(String::new()));
        // An answering machine: at once, once.
        let mut c = Conversation::new(t0, 8_000);
        c.ai_audio(t0, 8_000);
        assert_eq!(c.end_now(t0, "voicemail".into()), Some("voicemail".into()));
        assert_eq!(c.end_due(t0 + END_GRACE, true), None);
    }

    #[test]
    fn usage_is_reported_as_increments_or_estimated_at_the_end() {
        let none = Usage::default();
        let mut u = Usage {
            audio_in_us: 10_000_000,
            audio_out_us: 4_000_000,
            ..Usage::default()
        };
        assert_eq!(usage_note(&u, &none, false), None, "no estimate mid-call");
        assert_eq!(
            usage_note(&u, &none, true),
            Some(AiNote::Usage {
                input: 250,
                output: 100,
                estimated: true
            })
        );
        u.add_report(30, 70, 100);
        assert_eq!(
            usage_note(&u, &none, false),
            Some(AiNote::Usage {
                input: 30,
                output: 70,
                estimated: false
            })
        );
        let sent = u;
        assert_eq!(usage_note(&u, &sent, true), None, "nothing new at the end");
        u.add_report(5, 20, 25);
        assert_eq!(
            usage_note(&u, &sent, true),
            Some(AiNote::Usage {
                input: 5,
                output: 20,
                estimated: false
            })
        );
        // A total beyond prompt and response (thoughts, tool-use prompts)
        // is counted: the record's tokensTotal is the vendor's total.
        let sent = u;
        u.add_report(10, 5, 40);
        assert_eq!(
            usage_note(&u, &sent, false),
            Some(AiNote::Usage {
                input: 10,
                output: 30,
                estimated: false
            })
        );
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let mut s = String::new();
        push_text(&mut s, &"é".repeat(MAX_TURN_TEXT));
        assert!(s.len() <= MAX_TURN_TEXT);
        assert!(s.chars().all(|c| c == 'é'));
    }
}
