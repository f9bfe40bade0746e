//! Per-call recording: a dual-channel 8 kHz 16-bit WAV, written off the
//! packet path.
//!
//! The worker holds a [`RecordFeed`] per recorded call and copies each
//! audio payload it handles into a lock-free SPSC ring (no allocation, no
//! decoding, no syscall: a full ring drops the frame and counts it). A
//! recorder thread owns the [`Recording`] on the other end: it decodes
//! (G.711, Opus, L16), lays each channel out on the call's timeline, and writes
//! interleaved samples to any `Write + Seek`, holding back a short window
//! for late packets. [`Recording::finish`] writes what is left and the
//! RIFF sizes.
//!
//! Timeline: a stream (SSRC) is placed by its RTP timestamps, anchored
//! where its first packet arrived (or where the channel's audio ends, if
//! later); a new SSRC, a jump of more than [`MAX_JUMP`], or a stream whose
//! newest packet arrives after its place was written (its timestamps did
//! not count a pause, or its clock runs slow) anchors again.
//! So gaps (DTX, hold) become silence, reordering inside the hold-back
//! window is repaired, and a source change never overlaps earlier audio.

use std::io::{self, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtrb::{Consumer, Producer, PushError, RingBuffer};

use crate::codec::CodecKind;
use crate::g711::Law;
use crate::opus::OpusDecoder;

/// Output sample rate.
pub const RATE: u32 = 8000;
/// Largest payload a ring slot carries: 40 ms of G.711, 20 ms of L16 at
/// 8 kHz. A longer G.711 or L16 payload (RFC 3551 asks receivers to take
/// up to 200 ms) goes in as several slots; an Opus packet cannot be cut,
/// and one longer than this (beyond 128 kbit/s at 20 ms, far above
/// telephony rates) is dropped and counted.
pub const MAX_PAYLOAD: usize = 320;
/// Frames the ring holds: five seconds of two 20 ms streams.
pub const RING_FRAMES: usize = 512;
/// How long audio is held for late packets before it is written.
pub const HOLD_BACK: Duration = Duration::from_millis(300);
/// A timestamp jump past this re-anchors the stream.
pub const MAX_JUMP: Duration = Duration::from_secs(10);
/// Longest recording: the WAV sizes are 32-bit (37 hours at 32 kB/s).
const MAX_DATA_BYTES: u64 = u32::MAX as u64 - 64;

/// The codec of a recorded payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecCodec {
    Pcmu,
    Pcma,
    /// 20 ms frames, RTP clock 48 kHz.
    Opus,
    /// Linear 16-bit big-endian PCM (RFC 3551 L16), mono, at 8 kHz.
    L16Narrow,
    /// The same at 16 kHz (recorded at 8 kHz through a low-pass).
    L16Wide,
}

impl RecCodec {
    /// How a leg's negotiated codec is recorded: G.711, Opus (48 kHz
    /// clock), L16 at 8 or 16 kHz. Anything else is not recorded.
    pub fn of(codec: CodecKind, clock_rate: u32) -> Option<RecCodec> {
        match (codec, clock_rate) {
            (CodecKind::Pcmu, _) => Some(RecCodec::Pcmu),
            (CodecKind::Pcma, _) => Some(RecCodec::Pcma),
            (CodecKind::Opus, 48_000) => Some(RecCodec::Opus),
            (CodecKind::L16, 8_000) => Some(RecCodec::L16Narrow),
            (CodecKind::L16, 16_000) => Some(RecCodec::L16Wide),
            _ => None,
        }
    }

    fn clock(self) -> u32 {
        match self {
            RecCodec::Opus => 48_000,
            RecCodec::L16Wide => 16_000,
            RecCodec::Pcmu | RecCodec::Pcma | RecCodec::L16Narrow => 8000,
        }
    }

    /// Bytes per sample of a codec whose payload can be cut anywhere on
    /// a sample (None: Opus, whose packets cannot be cut).
    fn sample_bytes(self) -> Option<usize> {
        match self {
            RecCodec::Pcmu | RecCodec::Pcma => Some(1),
            RecCodec::L16Narrow | RecCodec::L16Wide => Some(2),
            RecCodec::Opus => None,
        }
    }
}

/// One payload in the ring.
#[derive(Clone, Copy)]
struct Frame {
    channel: u8,
    codec: RecCodec,
    ssrc: u32,
    timestamp: u32,
    at: Instant,
    len: u16,
    data: [u8; MAX_PAYLOAD],
}

/// The worker's end: copies payloads in.
pub struct RecordFeed {
    tx: Producer<Frame>,
    /// Payloads lost to a full ring or an oversized Opus packet; shared
    /// with the [`Recording`] (see [`Recording::dropped`]), touched only
    /// when one is lost.
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for RecordFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordFeed")
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl RecordFeed {
    /// Payloads lost so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn lose(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one payload on `channel` (0 left, 1 right).
    pub fn push(
        &mut self,
        channel: u8,
        codec: RecCodec,
        ssrc: u32,
        timestamp: u32,
        at: Instant,
        payload: &[u8],
    ) {
        let whole = codec
            .sample_bytes()
            .is_none_or(|b| payload.len().is_multiple_of(b));
        if payload.is_empty() || channel > 1 || !whole {
            self.lose();
            return;
        }
        if payload.len() > MAX_PAYLOAD {
            let Some(bytes) = codec.sample_bytes() else {
                self.lose();
                return;
            };
            // G.711 and L16 are whole samples of fixed size (a slot holds
            // a whole number of them): each piece is placed by its own
            // first sample's timestamp (the RTP clock counts samples).
            for (i, piece) in payload.chunks(MAX_PAYLOAD).enumerate() {
                let ts = timestamp.wrapping_add((i * MAX_PAYLOAD / bytes) as u32);
                self.push_slot(channel, codec, ssrc, ts, at, piece);
            }
            return;
        }
        self.push_slot(channel, codec, ssrc, timestamp, at, payload);
    }

    fn push_slot(
        &mut self,
        channel: u8,
        codec: RecCodec,
        ssrc: u32,
        timestamp: u32,
        at: Instant,
        payload: &[u8],
    ) {
        let mut frame = Frame {
            channel,
            codec,
            ssrc,
            timestamp,
            at,
            len: payload.len() as u16,
            data: [0; MAX_PAYLOAD],
        };
        frame.data[..payload.len()].copy_from_slice(payload);
        if let Err(PushError::Full(_)) = self.tx.push(frame) {
            self.lose();
        }
    }
}

/// Where one stream of a channel sits on the timeline.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: u32,
    timestamp: u32,
    /// Sample index of `timestamp`.
    at: u64,
    /// The stream's newest timestamp so far.
    newest: u32,
}

#[derive(Default)]
struct Channel {
    /// Samples from `written` on (index 0 is sample `written`).
    pending: Vec<i16>,
    /// One past the last sample placed.
    end: u64,
    anchor: Option<Anchor>,
    opus: Option<OpusDecoder>,
    /// Low-pass history of a 16 kHz L16 stream (its last input samples).
    wide: HalfBand,
}

/// The recorder thread's end: decodes and writes one call's WAV.
pub struct Recording<W: Write + Seek> {
    rx: Consumer<Frame>,
    out: W,
    started: Instant,
    channels: [Channel; 2],
    /// Samples (per channel) written so far.
    written: u64,
    scratch: Vec<i16>,
    /// A slot's 16 kHz L16 samples before the low-pass.
    wide_in: Vec<i16>,
    /// Payloads that could not be decoded.
    pub undecodable: u64,
    /// Packets that came after their place was written.
    pub late: u64,
    /// Packets whose place was more than [`MAX_JUMP`] ahead of their
    /// arrival (dropped: audio placed there waits in memory until
    /// written).
    pub early: u64,
    /// The feed's count of payloads it could not queue.
    feed_dropped: Arc<AtomicU64>,
}

impl<W: Write + Seek> std::fmt::Debug for Recording<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("written", &self.written)
            .field("undecodable", &self.undecodable)
            .field("late", &self.late)
            .finish_non_exhaustive()
    }
}

/// The recorder's end of the ring, until it has somewhere to write.
pub struct RecordSource {
    rx: Consumer<Frame>,
    started: Instant,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for RecordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSource").finish_non_exhaustive()
    }
}

/// A recording's ring: the worker's feed and the recorder's source.
/// Timeline positions count from `started`.
pub fn ring(started: Instant) -> (RecordFeed, RecordSource) {
    let (tx, rx) = RingBuffer::new(RING_FRAMES);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        RecordFeed {
            tx,
            dropped: Arc::clone(&dropped),
        },
        RecordSource {
            rx,
            started,
            dropped,
        },
    )
}

impl<W: Write + Seek> Recording<W> {
    /// Starts writing `source` to `out` (the WAV header goes out at once;
    /// its sizes are set by [`Recording::finish`]).
    pub fn start(source: RecordSource, mut out: W) -> io::Result<Recording<W>> {
        out.write_all(&wav_header(0))?;
        Ok(Recording {
            rx: source.rx,
            out,
            started: source.started,
            channels: [Channel::default(), Channel::default()],
            written: 0,
            scratch: vec![0; 960],
            wide_in: vec![0; MAX_PAYLOAD / 2],
            undecodable: 0,
            late: 0,
            early: 0,
            feed_dropped: source.dropped,
        })
    }
}

#[cfg(test)]
fn recording<W: Write + Seek>(started: Instant, out: W) -> io::Result<(RecordFeed, Recording<W>)> {
    let (feed, source) = ring(started);
    Ok((feed, Recording::start(source, out)?))
}

/// The 44-byte header of a 2-channel 8 kHz 16-bit PCM WAV with `data`
/// bytes of samples.
fn wav_header(data: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    let channels = 2u16;
    let block = channels * 2;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&RATE.to_le_bytes());
    h[28..32].copy_from_slice(&(RATE * u32::from(block)).to_le_bytes());
    h[32..34].copy_from_slice(&block.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

fn samples_in(d: Duration) -> u64 {
    (d.as_micros() as u64).saturating_mul(u64::from(RATE)) / 1_000_000
}

impl<W: Write + Seek> Recording<W> {
    /// Payloads the worker's feed could not queue (a full ring, an Opus
    /// packet over [`MAX_PAYLOAD`], an empty payload): left out.
    pub fn dropped(&self) -> u64 {
        self.feed_dropped.load(Ordering::Relaxed)
    }

    /// True once the feed is gone (the call's media closed).
    pub fn is_abandoned(&self) -> bool {
        self.rx.is_abandoned()
    }

    /// Takes what the feed queued and writes every sample older than the
    /// hold-back window at `now`.
    pub fn pump(&mut self, now: Instant) -> io::Result<()> {
        self.take();
        let due = samples_in(
            now.saturating_duration_since(self.started)
                .saturating_sub(HOLD_BACK),
        );
        self.write_until(due)
    }

    /// Writes everything placed (the call is over) and the final sizes;
    /// returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.take();
        let end = self.channels[0].end.max(self.channels[1].end);
        self.write_until(end)?;
        let bytes = self.written * 4;
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&wav_header(bytes as u32))?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn take(&mut self) {
        while let Ok(f) = self.rx.pop() {
            self.place(&f);
        }
    }

    fn place(&mut self, f: &Frame) {
        let written = self.written;
        let ch = &mut self.channels[usize::from(f.channel)];
        let payload = &f.data[..usize::from(f.len)];
        let n = match f.codec {
            RecCodec::Pcmu | RecCodec::Pcma => {
                let law = if f.codec == RecCodec::Pcmu {
                    Law::Ulaw
                } else {
                    Law::Alaw
                };
                law.decode(payload, &mut self.scratch)
            }
            RecCodec::L16Narrow => l16_decode(payload, &mut self.scratch),
            RecCodec::L16Wide => {
                let n = l16_decode(payload, &mut self.wide_in);
                ch.wide.decimate(&self.wide_in[..n], &mut self.scratch)
            }
            RecCodec::Opus => {
                if ch.opus.is_none() {
                    ch.opus = OpusDecoder::new(RATE).ok();
                }
                let Some(dec) = ch.opus.as_mut() else {
                    self.undecodable += 1;
                    return;
                };
                // Any packet duration (the scratch holds 120 ms).
                match dec.decode_packet(payload, &mut self.scratch) {
                    Ok(n) => n,
                    Err(_) => {
                        self.undecodable += 1;
                        return;
                    }
                }
            }
        };
        let arrival = samples_in(f.at.saturating_duration_since(self.started));
        let scale = |ticks: u32| u64::from(ticks) * u64::from(RATE) / u64::from(f.codec.clock());
        let max_jump = samples_in(MAX_JUMP);
        let pos = match &mut ch.anchor {
            Some(a) if a.ssrc == f.ssrc => {
                let ahead = f.timestamp.wrapping_sub(a.timestamp);
                // Behind the anchor reads as a huge wrap-around: a jump.
                let p = a.at + scale(ahead);
                let since_newest = f.timestamp.wrapping_sub(a.newest);
                let newer = since_newest != 0 && since_newest < 1 << 31;
                if newer {
                    a.newest = f.timestamp;
                }
                // The stream fell behind the clock: its newest packet, come
                // just now, has a place already written (a pause or a hold
                // its timestamps do not count, a sender's slow clock). It
                // is anchored again where it arrives, not dropped with all
                // that follows.
                let fell_behind = newer && p < written && arrival >= written;
                (p <= ch.end + max_jump && !fell_behind).then_some(p)
            }
            _ => None,
        };
        let pos = pos.unwrap_or_else(|| {
            // A new stream starts where it arrived, but never over audio
            // already placed or written.
            let at = arrival.max(ch.end).max(written);
            ch.anchor = Some(Anchor {
                ssrc: f.ssrc,
                timestamp: f.timestamp,
                at,
                newest: f.timestamp,
            });
            at
        });
        if pos < written {
            self.late += 1;
            return;
        }
        // Nothing lands further ahead of its arrival than a jump: the
        // audio waits in `pending` until written, so a far end's
        // timestamps (each jump measured from the channel's end) or a
        // flood of new streams must not run the channel ahead.
        if pos > arrival.max(written) + max_jump {
            self.early += 1;
            return;
        }
        let from = (pos - written) as usize;
        let to = from + n;
        if ch.pending.len() < to {
            ch.pending.resize(to, 0);
        }
        ch.pending[from..to].copy_from_slice(&self.scratch[..n]);
        ch.end = ch.end.max(pos + n as u64);
    }

    fn write_until(&mut self, until: u64) -> io::Result<()> {
        let until = until.min(MAX_DATA_BYTES / 4);
        if until <= self.written {
            return Ok(());
        }
        let count = (until - self.written) as usize;
        let mut buf = Vec::with_capacity(count * 4);
        for i in 0..count {
            for ch in &self.channels {
                let s = ch.pending.get(i).copied().unwrap_or(0);
                buf.extend_from_slice(&s.to_le_bytes());
            }
        }
        self.out.write_all(&buf)?;
        for ch in &mut self.channels {
            let n = count.min(ch.pending.len());
            ch.pending.drain(..n);
        }
        self.written = until;
        Ok(())
    }
}

/// Decodes big-endian 16-bit samples (the payload is whole samples and
/// at most `out.len()` of them); returns how many.
fn l16_decode(payload: &[u8], out: &mut [i16]) -> usize {
    let mut n = 0;
    for (o, b) in out.iter_mut().zip(payload.chunks_exact(2)) {
        *o = i16::from_be_bytes([b[0], b[1]]);
        n += 1;
    }
    n
}

/// Taps of the half-band low-pass before dropping every other sample of a
/// 16 kHz stream: a Blackman-windowed sinc, −6 dB at 4 kHz (within
/// 0.2 dB up to 3 kHz, −1 dB at 3.4 kHz; −36 dB at 5 kHz and −79 dB at
/// 6 kHz, so little folds back into the band). Every other tap of a
/// half-band filter is zero except the centre.
const HALF_BAND_TAPS: usize = 31;

/// 16 kHz → 8 kHz for the recording: low-pass, then every other sample.
/// It keeps its input's last samples, so a stream cut into slots is
/// filtered as one. Not the media engine's [`Resampler`]: that one takes
/// whole 20 ms frames, and a recording's slots are 10 ms pieces placed
/// each by its own timestamp.
///
/// [`Resampler`]: crate::resample::Resampler
#[derive(Clone)]
struct HalfBand {
    /// The last `HALF_BAND_TAPS - 1` input samples, oldest first.
    history: [f32; HALF_BAND_TAPS - 1],
    /// Whether the next input sample is one that is kept (a slot of an
    /// odd number of samples leaves the phase in the middle).
    phase: bool,
}

impl Default for HalfBand {
    fn default() -> HalfBand {
        HalfBand {
            history: [0.0; HALF_BAND_TAPS - 1],
            phase: true,
        }
    }
}

fn half_band_taps() -> &'static [f32; HALF_BAND_TAPS] {
    static TAPS: std::sync::OnceLock<[f32; HALF_BAND_TAPS]> = std::sync::OnceLock::new();
    TAPS.get_or_init(|| {
        let mid = (HALF_BAND_TAPS / 2) as f64;
        let mut taps = [0f32; HALF_BAND_TAPS];
        let mut sum = 0.0;
        let raw: Vec<f64> = (0..HALF_BAND_TAPS)
            .map(|i| {
                let x = i as f64 - mid;
                let sinc = if x == 0.0 {
                    1.0
                } else {
                    (std::f64::consts::PI * x / 2.0).sin() / (std::f64::consts::PI * x / 2.0)
                };
                // Blackman window.
                let w = i as f64 / (HALF_BAND_TAPS - 1) as f64;
                let window = 0.42 - 0.5 * (std::f64::consts::TAU * w).cos()
                    + 0.08 * (2.0 * std::f64::consts::TAU * w).cos();
                sinc * window
            })
            .collect();
        for r in &raw {
            sum += r;
        }
        for (t, r) in taps.iter_mut().zip(&raw) {
            *t = (r / sum) as f32;
        }
        taps
    })
}

impl HalfBand {
    /// Filters `input` (16 kHz, one slot: at most `MAX_PAYLOAD / 2`
    /// samples) into `out` (8 kHz); returns how many samples it wrote
    /// (half of `input`, give or take the phase).
    fn decimate(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        const H: usize = HALF_BAND_TAPS - 1;
        let taps = half_band_taps();
        let input = &input[..input.len().min(MAX_PAYLOAD / 2)];
        // The history, then this slot: each kept sample is the filter
        // over the window that ends on it.
        let mut buf = [0f32; H + MAX_PAYLOAD / 2];
        buf[..H].copy_from_slice(&self.history);
        for (b, s) in buf[H..].iter_mut().zip(input) {
            *b = f32::from(*s);
        }
        let mut n = 0;
        for i in 0..input.len() {
            let keep = self.phase;
            self.phase = !self.phase;
            if keep && n < out.len() {
                let acc: f32 = buf[i..=i + H].iter().zip(taps).map(|(x, t)| x * t).sum();
                out[n] = acc.round().clamp(-32768.0, 32767.0) as i16;
                n += 1;
            }
        }
        let end = H + input.len();
        self.history.copy_from_slice(&buf[end - H..end]);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::g711::{alaw_encode, ulaw_encode};
    use std::io::Cursor;

    fn tone(hz: f64, from: usize, n: usize) -> Vec<i16> {
        (from..from + n)
            .map(|i| ((i as f64 * std::f64::consts::TAU * hz / 8000.0).sin() * 8000.0) as i16)
            .collect()
    }

    /// (left, right) samples of a finished recording, checking the header.
    fn read(wav: &[u8]) -> (Vec<i16>, Vec<i16>) {
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        let data = u32::from_le_bytes(wav[40..44].try_into().unwrap()) as usize;
        assert_eq!(data, wav.len() - 44, "data size written at the end");
        assert_eq!(
            u32::from_le_bytes(wav[4..8].try_into().unwrap()) as usize,
            wav.len() - 8
        );
        let mut l = Vec::new();
        let mut r = Vec::new();
        for s in wav[44..].chunks_exact(4) {
            l.push(i16::from_le_bytes([s[0], s[1]]));
            r.push(i16::from_le_bytes([s[2], s[3]]));
        }
        (l, r)
    }

    fn energy(s: &[i16]) -> f64 {
        (s.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
    }

    #[test]
    fn two_streams_land_on_their_channels_in_time() {
        let t0 = Instant::now();
        let (mut feed, mut rec) = recording(t0, Cursor::new(Vec::new())).unwrap();
        // Left: 1 s of µ-law tone from the start; right: A-law tone that
        // starts 500 ms in, with one packet (20 ms) lost.
        for k in 0..50u32 {
            let pcm = tone(440.0, k as usize * 160, 160);
            let codes: Vec<u8> = pcm.iter().map(|s| ulaw_encode(*s)).collect();
            let at = t0 + Duration::from_millis(u64::from(k) * 20);
            feed.push(0, RecCodec::Pcmu, 1, 1000 + k * 160, at, &codes);
            if k >= 25 && k != 30 {
                let codes: Vec<u8> = pcm.iter().map(|s| alaw_encode(*s)).collect();
                feed.push(1, RecCodec::Pcma, 2, 7 + k * 160, at, &codes);
            }
            if k % 10 == 0 {
                rec.pump(at).unwrap();
            }
        }
        assert!(rec.written > 0, "written while the call runs");
        let wav = rec.finish().unwrap().into_inner();
        let (l, r) = read(&wav);
        assert_eq!(l.len(), 8000, "one second");
        assert!(energy(&l[..4000]) > 4000.0);
        assert!(energy(&r[..4000]) < 1.0, "right is quiet for 500 ms");
        assert!(energy(&r[4000..4800]) > 4000.0);
        assert!(
            energy(&r[4800..4960]) < 1.0,
            "the lost packet is silence, in its place"
        );
        assert!(energy(&r[4960..]) > 4000.0);
    }

    #[test]
    fn long_g711_packets_are_recorded_whole() {
        // 60 ms and 180 ms packets (RFC 3551 receivers take up to 200 ms)
        // are longer than a ring slot: every sample lands in its place.
        for ms in [60usize, 180] {
            let t0 = Instant::now();
            let (mut feed, mut rec) = recording(t0, Cursor::new(Vec::new())).unwrap();
            let n = ms * 8;
            let pcm = tone(440.0, 0, 1800 * 8);
            let mut k = 0;
            while (k + 1) * n <= pcm.len() {
                let codes: Vec<u8> = pcm[k * n..(k + 1) * n]
                    .iter()
                    .map(|s| ulaw_encode(*s))
                    .collect();
                let at = t0 + Duration::from_millis((k * ms) as u64);
                feed.push(0, RecCodec::Pcmu, 9, 5000 + (k * n) as u32, at, &codes);
                rec.pump(at).unwrap();
                k += 1;
            }
            assert_eq!(rec.dropped(), 0, "{ms} ms");
            let (l, _) = read(&rec.finish().unwrap().into_inner());
            assert_eq!(l.len(), k * n, "{ms} ms");
            for (i, (got, want)) in l.iter().zip(&pcm).enumerate() {
                let want = crate::g711::ulaw_decode(ulaw_encode(*want));
                assert_eq!(*got, want, "{ms} ms packets: sample {i}");
            }
        }
    }

    /// A phone that pauses (mute, hold) and resumes with its timestamps
    /// carried on from where it stopped: its audio after the pause is
    /// recorded after the silence, not dropped to the end of the call.
    #[test]
    fn a_stream_whose_timestamps_skip_a_pause_is_recorded_after_it() {
        let t0 = Instant::now();
        let (mut feed, mut rec) = recording(t0, Cursor::new(Vec::new())).unwrap();
        let loud = [0x80u8; 160];
        let mut ts = 1000u32;
        let mut send = |feed: &mut RecordFeed, rec: &mut Recording<_>, from_ms: u64, n: u64| {
            for k in 0..n {
                let at = t0 + Duration::from_millis(from_ms + 20 * k);
                feed.push(0, RecCodec::Pcmu, 7, ts, at, &loud);
                ts = ts.wrapping_add(160);
                rec.pump(at).unwrap();
            }
        };
        // 1 s of sound, 1 s of nothing, 1 s of sound on the same clock.
        send(&mut feed, &mut rec, 0, 50);
        send(&mut feed, &mut rec, 2000, 50);
        assert_eq!(rec.late, 0);
        let (l, _) = read(&rec.finish().unwrap().into_inner());
        let ms = |m: usize| m * 8;
        assert!(energy(&l[..ms(1000)]) > 4000.0);
        assert!(energy(&l[ms(1050)..ms(1950)]) < 1.0, "the pause is silence");
        assert!(
            energy(&l[ms(2050)..ms(2950)]) > 4000.0,
            "the audio after the pause is kept"
        );
    }

    #[test]
    fn a_new_source_never_overlaps_and_late_packets_are_dropped() {
        let t0 = Instant::now();
        let (mut feed, mut rec) = recording(t0, Cursor::new(Vec::new())).unwrap();
        let loud = [0x80u8; 160]; // µ-law near full scale
        feed.push(0, RecCodec::Pcmu, 1, 0, t0, &loud);
        feed.push(
            0,
            RecCodec::Pcmu,
            1,
            160,
            t0 + Duration::from_millis(20),
            &loud,
        );
        // Another SSRC arrives "early" (its arrival is before the end of
        // the first stream's audio): it goes after it.
        feed.push(
            0,
            RecCodec::Pcmu,
            9,
            5,
            t0 + Duration::from_millis(10),
            &loud,
        );
        rec.pump(t0 + Duration::from_secs(2)).unwrap();
        let written = rec.written;
        assert_eq!(written, samples_in(Duration::from_secs(2) - HOLD_BACK));
        // A packet of the current stream whose place was written: dropped.
        feed.push(0, RecCodec::Pcmu, 9, 5 + 160, t0, &[0xffu8; 160]);
        // The first source again: a new stream, placed after what is
        // written rather than lost.
        feed.push(0, RecCodec::Pcmu, 1, 320, t0, &loud);
        rec.pump(t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(rec.late, 1);
        let (l, _) = read(&rec.finish().unwrap().into_inner());
        assert!(energy(&l[..480]) > 4000.0, "three packets back to back");
        assert!(energy(&l[480..written as usize]) < 1.0);
        assert_eq!(l.len(), written as usize + 160);
        assert!(energy(&l[written as usize..]) > 4000.0);
    }

    #[test]
    fn timestamps_cannot_run_the_recording_ahead_of_its_arrivals() {
        // A far end whose timestamps step just under MAX_JUMP per 20 ms
        // packet: each was placed after the last (the jump was measured
        // from the channel's end), so 30 packets laid out five minutes of
        // audio, held in memory until written; a flood of them grew it
        // without bound. Nothing may land more than MAX_JUMP past its
        // arrival.
        let t0 = Instant::now();
        let (mut feed, mut rec) = recording(t0, Cursor::new(Vec::new())).unwrap();
        let step = (MAX_JUMP.as_millis() as u32 - 100) * 8;
        for k in 0..30u32 {
            let at = t0 + Duration::from_millis(u64::from(k) * 20);
            feed.push(0, RecCodec::Pcmu, 1, k * step, at, &[0x80u8; 160]);
            rec.pump(at).unwrap();
            let pending = rec.channels[0].pending.len() as u64;
            assert!(
                pending <= samples_in(MAX_JUMP + Duration::from_secs(1)),
                "{pending} samples pending after {k} packets"
            );
        }
        // The first two are placed (the second 9.9 s ahead of the first).
        // After that, every other packet is more than MAX_JUMP from the
        // channel's end and starts anew at that end (as any such jump
        // does); the ones between, 9.9 s on from those, would land that
        // far ahead of their arrival: dropped and counted.
        assert_eq!(rec.early, 14);
        let (l, _) = read(&rec.finish().unwrap().into_inner());
        assert_eq!(l.len() as u64, u64::from(step) + 160 + 14 * 160);
    }

    #[test]
    fn bad_input_is_counted_not_written() {
        let t0 = Instant::now();
        let (mut feed, mut rec) = recording(t0, Cursor::new(Vec::new())).unwrap();
        feed.push(0, RecCodec::Opus, 1, 0, t0, &[0u8; MAX_PAYLOAD + 1]);
        feed.push(2, RecCodec::Pcmu, 1, 0, t0, &[0u8; 160]);
        feed.push(0, RecCodec::Pcmu, 1, 0, t0, &[]);
        feed.push(1, RecCodec::Opus, 1, 0, t0, &[0xffu8; 3]);
        assert_eq!((feed.dropped(), rec.dropped()), (3, 3));
        rec.pump(t0).unwrap();
        assert_eq!(rec.undecodable, 1);
        drop(feed);
        assert!(rec.is_abandoned());
        let (l, r) = read(&rec.finish().unwrap().into_inner());
        assert!(l.is_empty() && r.is_empty());
    }

    #[test]
    fn negotiated_codecs_map_to_what_is_recorded() {
        assert_eq!(RecCodec::of(CodecKind::Pcmu, 8000), Some(RecCodec::Pcmu));
        assert_eq!(RecCodec::of(CodecKind::Pcma, 8000), Some(RecCodec::Pcma));
        assert_eq!(RecCodec::of(CodecKind::Opus, 48_000), Some(RecCodec::Opus));
        assert_eq!(
            RecCodec::of(CodecKind::L16, 8000),
            Some(RecCodec::L16Narrow)
        );
        assert_eq!(
            RecCodec::of(CodecKind::L16, 16_000),
            Some(RecCodec::L16Wide)
        );
        assert_eq!(RecCodec::of(CodecKind::L16, 44_100), None);
        assert_eq!(RecCodec::of(CodecKind::Opus, 16_000), None);
    }

    fn tone_at(hz: f64, rate: f64, from: usize, n: usize) -> Vec<i16> {
        (from..from + n)
            .map(|i| ((i as f64 * std::f64::consts::TAU * hz / rate).sin() * 8000.0) as i16)
            .collect()
    }

    fn l16(pcm: &[i16]) -> Vec<u8> {
        pcm.iter().flat_map(|s| s.to_be_bytes()).collect()
    }

    /// One second of `hz` as `codec` in packets of `ms` on the left
    /// channel; the recorded samples.
    fn record_l16(codec: RecCodec, hz: f64, ms: usize) -> (Vec<i16>, u64) {
        let rate = codec.clock() as usize;
        let t0 = Instant::now();
        let (mut feed, mut rec) = recording(t0, Cursor::new(Vec::new())).unwrap();
        let n = rate * ms / 1000;
        for k in 0..1000 / ms {
            let pcm = tone_at(hz, rate as f64, k * n, n);
            let at = t0 + Duration::from_millis((k * ms) as u64);
            feed.push(0, codec, 4, 300 + (k * n) as u32, at, &l16(&pcm));
            rec.pump(at).unwrap();
        }
        let dropped = rec.dropped();
        (read(&rec.finish().unwrap().into_inner()).0, dropped)
    }

    #[test]
    fn l16_is_recorded_at_8_khz_from_either_rate_and_any_packet_length() {
        // 8 kHz: the samples as sent (20 ms fills a slot; 40 and 100 ms are
        // cut).
        for ms in [20, 40, 100] {
            let (l, dropped) = record_l16(RecCodec::L16Narrow, 440.0, ms);
            assert_eq!((l.len(), dropped), (8000, 0), "{ms} ms");
            assert_eq!(l, tone_at(440.0, 8000.0, 0, 8000), "{ms} ms");
        }
        // 16 kHz, 20 ms packets (two slots each): a second at 8 kHz,
        // speech band kept, what cannot be held at 8 kHz filtered out
        // rather than folded back into the band.
        for (hz, lo, hi) in [(440.0, 5000.0, 6000.0), (3000.0, 5000.0, 6000.0)] {
            let (l, dropped) = record_l16(RecCodec::L16Wide, hz, 20);
            assert_eq!((l.len(), dropped), (8000, 0), "{hz} Hz");
            // After the filter's start; a sine of 8000 peaks has ~5657 RMS.
            let e = energy(&l[100..]);
            assert!((lo..hi).contains(&e), "{hz} Hz: RMS {e}");
            // The same tone at 8 kHz, late by the filter's delay (15
            // samples at 16 kHz, 7.5 at 8): the same shape.
            let want: Vec<f64> = (0..8000)
                .map(|i| (std::f64::consts::TAU * hz * (i as f64 - 7.5) / 8000.0).sin())
                .collect();
            let (got, want) = (&l[100..], &want[100..]);
            let dot: f64 = got.iter().zip(want).map(|(a, b)| f64::from(*a) * b).sum();
            let norm = want.iter().map(|b| b * b).sum::<f64>().sqrt()
                * got
                    .iter()
                    .map(|a| f64::from(*a).powi(2))
                    .sum::<f64>()
                    .sqrt();
            assert!(dot / norm > 0.999, "{hz} Hz: correlation {}", dot / norm);
        }
        let (l, _) = record_l16(RecCodec::L16Wide, 6000.0, 20);
        assert!(
            energy(&l[100..]) < 60.0,
            "6 kHz would fold to 2 kHz: RMS {}",
            energy(&l[100..])
        );
    }

    #[test]
    fn l16_of_a_broken_sample_is_counted_not_written() {
        let t0 = Instant::now();
        let (mut feed, rec) = recording(t0, Cursor::new(Vec::new())).unwrap();
        feed.push(0, RecCodec::L16Wide, 1, 0, t0, &[0u8; 641]);
        feed.push(1, RecCodec::L16Narrow, 1, 0, t0, &[0u8; 3]);
        assert_eq!(rec.dropped(), 2);
        let (l, r) = read(&rec.finish().unwrap().into_inner());
        assert!(l.is_empty() && r.is_empty());
    }
}
