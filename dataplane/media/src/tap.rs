//! The AI tap's thread crossing: two SPSC rings of linear PCM and a few
//! atomics, between a media worker (which owns the call's [`Pipeline`]) and
//! the AI side (which owns the [`TapEngine`] handle).
//!
//! * Caller audio: the worker pushes 20 ms frames at `to_engine_rate`
//!   (16 kHz by default); when the AI side falls behind, whole frames are
//!   dropped and counted, never blocking the worker.
//! * Engine audio: the AI side writes PCM at `from_engine_rate` (24 kHz by
//!   default) as fast as it arrives, up to the ring's capacity (it learns
//!   how much was taken and keeps the rest); the worker takes one 20 ms
//!   frame per ptime.
//! * Flush (barge-in): [`TapEngine::flush`] publishes how many samples it
//!   had written so far; at its next tick (within one ptime) the worker
//!   discards everything up to that mark and nothing after it, so audio of
//!   the next response written right after the flush survives.
//! * Played: the worker publishes how many engine samples it has sent to
//!   the caller, which [`TapEngine::played_ms`] reads (for truncating the
//!   engine's transcript to what was heard).
//! * Wake-ups both ways, so neither side polls on a clock: every caller
//!   frame (and the worker dropping its side) wakes the task reading
//!   [`TapCaller::poll_read`]; engine audio landing in an empty ring (a turn
//!   starting) calls the [`Kick`] the owner installed, so the worker can
//!   send its first frame at once instead of at its next tick.
//! * A media worker may hold its caller-audio wake-ups until its loop
//!   turn ends ([`defer_wakes`], [`wake_deferred`]): the AI side, on the
//!   same core, then neither preempts the worker in mid-turn nor wakes
//!   once per call, and finds every frame of the turn at once.
//! * Quiet batching (opt-in, [`TapConfig::quiet_batch_ms`]): once the
//!   caller has been silent for [`TapConfig::quiet_after_ms`], caller
//!   frames wait in the ring and wake the AI side a batch at a time, so
//!   it sends the engine one message per batch instead of one per 20 ms
//!   frame. The first frame with sound wakes it at once and goes with the
//!   silence held before it: speech reaches the engine as early as
//!   before, and so does the silence after speech for as long as the
//!   engine's voice detection decides the turn's end by it.
//!
//! [`Pipeline`]: crate::pipeline::Pipeline

use atomic_waker::AtomicWaker;
use rtrb::{Consumer, Producer, RingBuffer};
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

/// Tells the worker that engine audio landed in an empty ring.
pub type Kick = Box<dyn Fn() + Send + Sync>;

/// Rates and ring sizes of one tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapConfig {
    /// Rate of the caller audio handed to the engine.
    pub to_engine_rate: u32,
    /// Rate of the audio the engine produces.
    pub from_engine_rate: u32,
    /// Caller-audio ring, in milliseconds.
    pub to_engine_ms: u32,
    /// Engine-audio ring, in milliseconds (engines send faster than real
    /// time; the AI side holds back what does not fit).
    pub from_engine_ms: u32,
    /// Send silence frames to the caller while the engine is quiet (keeps
    /// NAT bindings and the far end's jitter buffer steady).
    pub send_silence: bool,
    /// How early a playout tick may go: the pipeline reports its tick
    /// this much before the 20 ms grid, so a worker serving many calls
    /// sends every tick falling due within this span on one wake-up
    /// instead of sleeping in between (a packet up to this much early,
    /// never late; the grid itself does not move).
    pub pacing_slack: std::time::Duration,
    /// In a long silence, wake the AI side once per this much caller
    /// audio instead of once per frame (at most the caller ring); 0 wakes
    /// per frame.
    pub quiet_batch_ms: u32,
    /// How long after the last frame with sound the caller counts as
    /// still in (or just after) speech, when every frame wakes the AI
    /// side.
    pub quiet_after_ms: u32,
}

impl Default for TapConfig {
    fn default() -> Self {
        TapConfig {
            to_engine_rate: 16_000,
            from_engine_rate: 24_000,
            to_engine_ms: 1_000,
            from_engine_ms: 5_000,
            send_silence: true,
            pacing_slack: std::time::Duration::ZERO,
            quiet_batch_ms: 0,
            quiet_after_ms: 1_000,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct TapShared {
    /// Engine samples written before the last flush request.
    pub flush_upto: AtomicU64,
    /// Engine samples sent to the caller.
    pub played: AtomicU64,
    /// Caller frames dropped because the ring was full.
    pub dropped_frames: AtomicU64,
    pub worker_gone: AtomicBool,
    /// The task reading the caller audio ([`TapCaller::poll_read`]).
    pub caller_waker: AtomicWaker,
}

/// The AI side's end of a tap.
pub struct TapEngine {
    /// Until [`TapEngine::split_caller`] hands it out.
    caller: Option<Consumer<i16>>,
    engine: Producer<i16>,
    shared: Arc<TapShared>,
    written: u64,
    from_engine_rate: u32,
    to_engine_rate: u32,
    kick: Option<Kick>,
}

impl std::fmt::Debug for TapEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapEngine")
            .field("written", &self.written)
            .field("from_engine_rate", &self.from_engine_rate)
            .field("to_engine_rate", &self.to_engine_rate)
            .finish_non_exhaustive()
    }
}

impl TapEngine {
    /// Installs what tells the worker that a turn's audio is waiting.
    pub fn set_kick(&mut self, kick: Kick) {
        self.kick = Some(kick);
    }

    /// Hands the caller-audio side to whoever sends it to the engine
    /// (once; after that this handle reads no caller audio).
    pub fn split_caller(&mut self) -> Option<TapCaller> {
        Some(TapCaller {
            caller: self.caller.take()?,
            shared: self.shared.clone(),
        })
    }

    /// Takes caller audio (at `to_engine_rate`) into `out`; returns how
    /// many samples were copied.
    pub fn read_caller(&mut self, out: &mut [i16]) -> usize {
        self.caller
            .as_mut()
            .map_or(0, |c| c.pop_partial_slice(out).0.len())
    }

    /// Caller samples waiting.
    pub fn caller_available(&self) -> usize {
        self.caller.as_ref().map_or(0, |c| c.slots())
    }

    /// Queues engine audio (at `from_engine_rate`); returns how many samples
    /// fit. The caller keeps the rest and retries later.
    pub fn write_engine(&mut self, pcm: &[i16]) -> usize {
        let was_empty = self.engine.slots() == self.engine.buffer().capacity();
        let (pushed, _) = self.engine.push_partial_slice(pcm);
        let n = pushed.len();
        self.written += n as u64;
        if was_empty
            && n > 0
            && let Some(kick) = &self.kick
        {
            kick();
        }
        n
    }

    /// Room left in the engine-audio ring, in samples.
    pub fn engine_space(&self) -> usize {
        self.engine.slots()
    }

    /// Barge-in: everything written so far is discarded by the worker
    /// within one ptime; audio written after this call plays.
    pub fn flush(&mut self) {
        self.shared
            .flush_upto
            .fetch_max(self.written, Ordering::Release);
    }

    /// Milliseconds of engine audio sent to the caller so far.
    pub fn played_ms(&self) -> u64 {
        self.played_samples() * 1000 / u64::from(self.from_engine_rate)
    }

    /// Engine samples (at the engine's rate) sent to the caller so far:
    /// exact, where [`Self::played_ms`] rounds down, so a position counted
    /// in samples is reached when its last sample is played.
    pub fn played_samples(&self) -> u64 {
        self.shared.played.load(Ordering::Acquire)
    }

    /// Caller frames lost because this side did not read in time.
    pub fn dropped_caller_frames(&self) -> u64 {
        self.shared.dropped_frames.load(Ordering::Relaxed)
    }

    pub fn to_engine_rate(&self) -> u32 {
        self.to_engine_rate
    }
    pub fn from_engine_rate(&self) -> u32 {
        self.from_engine_rate
    }

    /// True when the worker dropped its side (the call ended).
    pub fn is_closed(&self) -> bool {
        self.shared.worker_gone.load(Ordering::Acquire)
    }
}

/// The caller-audio side of a tap, split off the [`TapEngine`] so the
/// task that writes to the engine can read it where it waits for
/// everything else: no hop through another task per frame.
pub struct TapCaller {
    caller: Consumer<i16>,
    shared: Arc<TapShared>,
}

impl std::fmt::Debug for TapCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapCaller")
            .field("waiting", &self.caller.slots())
            .finish_non_exhaustive()
    }
}

impl TapCaller {
    /// Takes the caller audio waiting (at `to_engine_rate`) into `out`:
    /// `Ready(Some(n))` with `n` > 0 samples, `Ready(None)` once the
    /// worker dropped its side and nothing is left, else `Pending` (the
    /// next frame the worker pushes wakes `cx`). `out` must not be empty.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, out: &mut [i16]) -> Poll<Option<usize>> {
        if out.is_empty() {
            return Poll::Ready(Some(0));
        }
        let mut registered = false;
        loop {
            // Gone is read before the ring: a frame pushed before the
            // worker's side went is in the ring by then.
            let gone = self.shared.worker_gone.load(Ordering::Acquire);
            let n = self.caller.pop_partial_slice(out).0.len();
            if n > 0 {
                return Poll::Ready(Some(n));
            }
            if gone {
                return Poll::Ready(None);
            }
            if registered {
                return Poll::Pending;
            }
            self.shared.caller_waker.register(cx.waker());
            // A push between the read and the registration is seen on
            // the second pass.
            registered = true;
        }
    }
}

/// A caller frame whose mean magnitude is below this is silence to
/// [`TapConfig::quiet_batch_ms`]: about −50 dBFS RMS for noise (mean
/// magnitude 0.8 σ), line noise rather than speech. Magnitude, not
/// energy: it sums in 32 bits and vectorises, once per caller frame.
const QUIET_MEAN_MAGNITUDE: u32 = 83;

/// Whether `frame` carries sound (above [`QUIET_MEAN_MAGNITUDE`]).
fn has_sound(frame: &[i16]) -> bool {
    // Chunks keep the 32-bit sums from overflowing on any frame length.
    let mut total = 0u64;
    for chunk in frame.chunks(1 << 15) {
        let sum: u32 = chunk.iter().map(|&s| u32::from(s.unsigned_abs())).sum();
        total += u64::from(sum);
    }
    !frame.is_empty() && total >= u64::from(QUIET_MEAN_MAGNITUDE) * frame.len() as u64
}

/// When caller frames wake the AI side (see [`TapConfig::quiet_batch_ms`]).
#[derive(Debug)]
struct QuietBatch {
    /// Samples per batch in a long silence (0: off).
    batch: usize,
    /// Samples of silence after sound that still wake frame by frame.
    after: usize,
    /// Samples since the last frame with sound.
    quiet: usize,
    /// Samples pushed since the last wake-up.
    held: usize,
}

impl QuietBatch {
    fn new(cfg: &TapConfig, ring: usize) -> QuietBatch {
        let samples = |ms: u32| (u64::from(cfg.to_engine_rate) * u64::from(ms) / 1000) as usize;
        QuietBatch {
            batch: samples(cfg.quiet_batch_ms).min(ring),
            after: samples(cfg.quiet_after_ms),
            // A call starts as if after speech: its first second goes
            // frame by frame.
            quiet: 0,
            held: 0,
        }
    }

    /// Whether pushing `frame` should leave the AI side asleep: only in
    /// a long silence, until a batch has gathered.
    fn hold(&mut self, frame: &[i16]) -> bool {
        if self.batch == 0 {
            return false;
        }
        self.quiet = if has_sound(frame) {
            0
        } else {
            self.quiet.saturating_add(frame.len())
        };
        self.held += frame.len();
        if self.quiet <= self.after || self.held >= self.batch {
            self.held = 0;
            return false;
        }
        true
    }
}

thread_local! {
    /// Caller-audio wake-ups this thread holds until [`wake_deferred`]
    /// (`None`: it wakes at once).
    static DEFERRED: RefCell<Option<Vec<Waker>>> = const { RefCell::new(None) };
}

/// From now on, the caller-audio wake-ups of taps pushed on this thread
/// wait for [`wake_deferred`], which the thread's loop must call before
/// it sleeps (a media worker: once per loop turn).
pub fn defer_wakes() {
    DEFERRED.with(|d| {
        d.borrow_mut().get_or_insert_with(Vec::new);
    });
}

/// Wakes the AI sides whose caller audio this thread pushed since the
/// last call (see [`defer_wakes`]).
pub fn wake_deferred() {
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if let Some(list) = d.as_mut() {
            for w in list.drain(..) {
                w.wake();
            }
        }
    });
}

/// Wakes the task waiting for `shared`'s caller audio, now or at the
/// thread's [`wake_deferred`].
fn wake_caller(shared: &TapShared) {
    DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(list) => list.extend(shared.caller_waker.take()),
        None => shared.caller_waker.wake(),
    });
}

/// The worker's end of a tap.
#[derive(Debug)]
pub(crate) struct TapWorker {
    caller: Producer<i16>,
    engine: Consumer<i16>,
    pub shared: Arc<TapShared>,
    /// Engine samples taken from the ring (played or discarded).
    read: u64,
    played: u64,
    quiet: QuietBatch,
}

/// What the worker got for one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EngineFrame {
    /// A full frame, or the zero-padded tail of an utterance.
    Audio,
    /// Nothing to play.
    Empty,
}

impl TapWorker {
    pub fn new(cfg: &TapConfig) -> (TapWorker, TapEngine) {
        let ms = |rate: u32, ms: u32| (u64::from(rate) * u64::from(ms.max(20)) / 1000) as usize;
        let caller_ring = ms(cfg.to_engine_rate, cfg.to_engine_ms);
        let (cp, cc) = RingBuffer::new(caller_ring);
        let (ep, ec) = RingBuffer::new(ms(cfg.from_engine_rate, cfg.from_engine_ms));
        let shared = Arc::new(TapShared::default());
        (
            TapWorker {
                caller: cp,
                engine: ec,
                shared: shared.clone(),
                read: 0,
                played: 0,
                quiet: QuietBatch::new(cfg, caller_ring),
            },
            TapEngine {
                caller: Some(cc),
                engine: ep,
                shared,
                written: 0,
                from_engine_rate: cfg.from_engine_rate,
                to_engine_rate: cfg.to_engine_rate,
                kick: None,
            },
        )
    }

    /// Hands one caller frame to the engine, or drops it when the ring is
    /// full. Returns false when dropped.
    pub fn push_caller(&mut self, frame: &[i16]) -> bool {
        if self.caller.push_entire_slice(frame).is_err() {
            self.shared.dropped_frames.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if !self.quiet.hold(frame) {
            wake_caller(&self.shared);
        }
        true
    }

    /// Applies a pending flush; returns the samples discarded (if any flush
    /// was pending).
    pub fn apply_flush(&mut self) -> Option<u64> {
        let upto = self.shared.flush_upto.load(Ordering::Acquire);
        if upto <= self.read {
            return None;
        }
        let mut want = upto - self.read;
        let mut discarded = 0;
        while want > 0 {
            let n = (want as usize).min(self.engine.slots());
            if n == 0 {
                break;
            }
            if let Ok(chunk) = self.engine.read_chunk(n) {
                chunk.commit_all();
            }
            want -= n as u64;
            discarded += n as u64;
        }
        self.read += discarded;
        Some(discarded)
    }

    /// Takes one frame of engine audio into `out`. A partial frame is only
    /// taken (zero-padded) when `take_partial` says the tail has waited a
    /// tick already, so a stream arriving in small pieces is not chopped.
    pub fn pull_engine(&mut self, out: &mut [i16], take_partial: bool) -> (EngineFrame, usize) {
        let avail = self.engine.slots();
        if avail == 0 || (avail < out.len() && !take_partial) {
            return (EngineFrame::Empty, avail);
        }
        let n = avail.min(out.len());
        let (got, rest) = self.engine.pop_partial_slice(&mut out[..n]);
        let got = got.len();
        let _ = rest;
        out[got..].fill(0);
        self.read += got as u64;
        (EngineFrame::Audio, got)
    }

    /// Counts `samples` of engine audio as sent to the caller.
    pub fn mark_played(&mut self, samples: usize) {
        self.played += samples as u64;
        self.shared.played.store(self.played, Ordering::Release);
    }

    pub fn played(&self) -> u64 {
        self.played
    }

    /// Engine samples waiting.
    pub fn engine_available(&self) -> usize {
        self.engine.slots()
    }
}

impl Drop for TapWorker {
    fn drop(&mut self) {
        self.shared.worker_gone.store(true, Ordering::Release);
        self.shared.caller_waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_split_caller_side_reads_what_is_pushed_and_ends_with_the_worker() {
        let (mut w, mut e) = TapWorker::new(&TapConfig::default());
        let mut c = e.split_caller().unwrap();
        assert!(e.split_caller().is_none(), "handed out once");
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = [0i16; 1600];
        assert_eq!(c.poll_read(&mut cx, &mut out), Poll::Pending);
        assert!(w.push_caller(&[3; 320]));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the push woke the reader"
        );
        assert!(w.push_caller(&[4; 320]));
        assert_eq!(c.poll_read(&mut cx, &mut out), Poll::Ready(Some(640)));
        assert_eq!((out[0], out[319], out[320]), (3, 3, 4));
        assert_eq!(
            e.read_caller(&mut out),
            0,
            "the engine handle reads nothing now"
        );
        assert_eq!(c.poll_read(&mut cx, &mut out), Poll::Pending);
        // The last frame before the worker goes is still read, then the end.
        assert!(w.push_caller(&[5; 320]));
        drop(w);
        assert!(e.is_closed());
        assert_eq!(c.poll_read(&mut cx, &mut out), Poll::Ready(Some(320)));
        assert_eq!(c.poll_read(&mut cx, &mut out), Poll::Ready(None));
    }

    #[test]
    fn a_long_silence_wakes_the_ai_side_once_per_batch_and_sound_at_once() {
        let cfg = TapConfig {
            quiet_batch_ms: 100,
            quiet_after_ms: 60,
            ..TapConfig::default()
        };
        let (mut w, mut e) = TapWorker::new(&cfg);
        let mut c = e.split_caller().unwrap();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = [0i16; 1600];
        let wakes = |n: usize| assert_eq!(count.0.load(Ordering::SeqCst), n);
        // Speech (-20 dBFS) and line noise (-55 dBFS).
        let sound = [3_277i16; 320];
        let noise = [58i16; 320];
        // Everything waiting: (samples, first, last); the reader then waits.
        let mut read = |c: &mut TapCaller, cx: &mut Context<'_>| {
            let n = match c.poll_read(cx, &mut out) {
                Poll::Ready(Some(n)) => n,
                other => panic!("expected audio, got {other:?}"),
            };
            let got = (n, out[0], out[n - 1]);
            assert_eq!(c.poll_read(cx, &mut out), Poll::Pending);
            got
        };
        assert_eq!(c.poll_read(&mut cx, &mut [0i16; 320]), Poll::Pending);
        assert!(w.push_caller(&sound));
        wakes(1);
        assert_eq!(read(&mut c, &mut cx), (320, 3_277, 3_277));
        // The 60 ms after sound go frame by frame.
        for i in 0..3 {
            assert!(w.push_caller(&noise));
            wakes(2 + i);
            assert_eq!(read(&mut c, &mut cx).0, 320);
        }
        // Then a batch of 100 ms per wake-up.
        for _ in 0..4 {
            assert!(w.push_caller(&noise));
        }
        wakes(4);
        assert!(w.push_caller(&noise));
        wakes(5);
        assert_eq!(read(&mut c, &mut cx).0, 1_600);
        // Sound wakes at once, and the silence held before it goes along.
        assert!(w.push_caller(&noise));
        assert!(w.push_caller(&noise));
        wakes(5);
        assert!(w.push_caller(&sound));
        wakes(6);
        assert_eq!(read(&mut c, &mut cx), (960, 58, 3_277));
        for i in 0..3 {
            assert!(w.push_caller(&noise));
            wakes(7 + i);
            assert_eq!(read(&mut c, &mut cx).0, 320);
        }
        // Silence held when the worker goes is read then, before the end.
        assert!(w.push_caller(&noise));
        assert!(w.push_caller(&noise));
        wakes(9);
        drop(w);
        wakes(10);
        assert_eq!(
            c.poll_read(&mut cx, &mut [0i16; 1600]),
            Poll::Ready(Some(640))
        );
        assert_eq!(c.poll_read(&mut cx, &mut [0i16; 1600]), Poll::Ready(None));
    }

    #[test]
    fn sound_is_a_mean_magnitude_from_about_minus_50_dbfs() {
        let alternating = |m: i16| {
            (0..320)
                .map(|i| if i % 2 == 0 { m } else { -m })
                .collect::<Vec<_>>()
        };
        assert!(!has_sound(&alternating(82)));
        assert!(has_sound(&alternating(83)));
        assert!(!has_sound(&[0; 320]));
        assert!(has_sound(&[i16::MIN; 320]), "no overflow at full scale");
        assert!(has_sound(&vec![i16::MIN; 1 << 17]), "nor on a long frame");
        assert!(!has_sound(&[]), "nothing is silence");
    }

    #[test]
    fn deferred_wakes_wait_for_the_turn_to_end_and_the_worker_going_does_not() {
        // Its own thread: deferring is per thread.
        std::thread::spawn(|| {
            let (mut w, mut e) = TapWorker::new(&TapConfig::default());
            let mut c = e.split_caller().unwrap();
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = Waker::from(count.clone());
            let mut cx = Context::from_waker(&waker);
            let mut out = [0i16; 1600];
            let wakes = || count.0.load(Ordering::SeqCst);
            defer_wakes();
            assert_eq!(c.poll_read(&mut cx, &mut out), Poll::Pending);
            assert!(w.push_caller(&[1; 320]));
            assert!(w.push_caller(&[2; 320]));
            assert_eq!(wakes(), 0, "held until the turn ends");
            wake_deferred();
            assert_eq!(wakes(), 1, "one wake-up for the turn's frames");
            wake_deferred();
            assert_eq!(wakes(), 1);
            assert_eq!(c.poll_read(&mut cx, &mut out), Poll::Ready(Some(640)));
            assert_eq!(c.poll_read(&mut cx, &mut out), Poll::Pending);
            drop(w);
            assert_eq!(wakes(), 2, "the end wakes at once");
            assert_eq!(c.poll_read(&mut cx, &mut out), Poll::Ready(None));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn engine_audio_into_an_empty_ring_kicks_the_worker_once_per_turn() {
        let (mut w, mut e) = TapWorker::new(&TapConfig::default());
        let kicks = Arc::new(AtomicUsize::new(0));
        let k = kicks.clone();
        e.set_kick(Box::new(move || {
            k.fetch_add(1, Ordering::SeqCst);
        }));
        e.write_engine(&[1; 960]);
        e.write_engine(&[1; 960]);
        assert_eq!(kicks.load(Ordering::SeqCst), 1);
        let mut f = [0i16; 480];
        for _ in 0..4 {
            w.pull_engine(&mut f, false);
        }
        e.write_engine(&[]);
        assert_eq!(kicks.load(Ordering::SeqCst), 1, "nothing written");
        e.write_engine(&[1; 480]);
        assert_eq!(kicks.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn flush_discards_only_what_was_written_before() {
        let (mut w, mut e) = TapWorker::new(&TapConfig::default());
        assert_eq!(e.write_engine(&[1; 1000]), 1000);
        e.flush();
        assert_eq!(e.write_engine(&[2; 480]), 480);
        assert_eq!(w.apply_flush(), Some(1000));
        assert_eq!(w.apply_flush(), None);
        let mut f = [0i16; 480];
        assert_eq!(w.pull_engine(&mut f, false), (EngineFrame::Audio, 480));
        assert!(f.iter().all(|&s| s == 2));
        w.mark_played(480);
        assert_eq!(e.played_ms(), 20);
        w.mark_played(23);
        assert_eq!((e.played_ms(), e.played_samples()), (20, 503));
    }

    #[test]
    fn partial_frames_wait_one_tick() {
        let (mut w, mut e) = TapWorker::new(&TapConfig::default());
        e.write_engine(&[5; 100]);
        let mut f = [9i16; 480];
        assert_eq!(w.pull_engine(&mut f, false), (EngineFrame::Empty, 100));
        assert_eq!(w.pull_engine(&mut f, true), (EngineFrame::Audio, 100));
        assert!(f[..100].iter().all(|&s| s == 5) && f[100..].iter().all(|&s| s == 0));
    }

    #[test]
    fn bounded_rings() {
        let cfg = TapConfig {
            to_engine_ms: 40,
            from_engine_ms: 20,
            ..TapConfig::default()
        };
        let (mut w, mut e) = TapWorker::new(&cfg);
        // Engine ring holds 20 ms at 24 kHz.
        assert_eq!(e.write_engine(&[0; 1000]), 480);
        assert_eq!(e.engine_space(), 0);
        // Caller ring holds two 16 kHz frames; the third is dropped.
        assert!(w.push_caller(&[1; 320]));
        assert!(w.push_caller(&[2; 320]));
        assert!(!w.push_caller(&[3; 320]));
        assert_eq!(e.dropped_caller_frames(), 1);
        let mut out = [0i16; 700];
        assert_eq!(e.read_caller(&mut out), 640);
        assert_eq!(out[319], 1);
        assert_eq!(out[320], 2);
        drop(w);
        assert!(e.is_closed());
    }
}
