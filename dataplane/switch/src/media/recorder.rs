//! The recorder thread: owns every running recording's file, opens it
//! (off the SIP thread), pumps the workers' rings into it every
//! [`TICK`], and finishes it (RIFF sizes) once the call's media is
//! closed. A recording that cannot be written is given up with a log
//! line; the call never notices.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use codeb_media::record::{RecordSource, Recording};

/// How often rings are emptied (a ring holds five seconds).
const TICK: Duration = Duration::from_millis(200);
/// New recordings queued towards the thread.
const QUEUE: usize = 1024;

type Wav = Recording<BufWriter<File>>;

/// The handle the engine keeps.
pub(super) struct Recorder {
    tx: Option<SyncSender<(RecordSource, PathBuf)>>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    pub(super) fn start() -> std::io::Result<Recorder> {
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || run(&rx))?;
        Ok(Recorder {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands a recording to the thread; false if it is not taking any.
    pub(super) fn add(&self, source: RecordSource, path: PathBuf) -> bool {
        match self.tx.as_ref().map(|tx| tx.try_send((source, path))) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => false,
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The thread finishes what it has once the sender is gone.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(source: RecordSource, path: PathBuf) -> Option<(Wav, PathBuf)> {
    let opened = File::create(&path)
        .and_then(|f| Recording::start(source, BufWriter::with_capacity(64 * 1024, f)));
    match opened {
        Ok(r) => Some((r, path)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "recording not started");
            None
        }
    }
}

fn finish(r: Wav, path: &std::path::Path) {
    // Packets left out: after their place was written, placed too far
    // ahead of their arrival (a far end's timestamps running away), not
    // decodable, or not queued by the worker (a full ring, an Opus packet
    // too long for a slot).
    let (late, early, undecodable, dropped) = (r.late, r.early, r.undecodable, r.dropped());
    match r.finish() {
        Ok(_) => {
            tracing::info!(path = %path.display(), late, early, undecodable, dropped, "recording written")
        }
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "recording not finished"),
    }
}

fn run(rx: &Receiver<(RecordSource, PathBuf)>) {
    let mut running: Vec<(Wav, PathBuf)> = Vec::new();
    let mut open_channel = true;
    while open_channel || !running.is_empty() {
        match rx.recv_timeout(TICK) {
            Ok((source, path)) => running.extend(open(source, path)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open_channel = false,
        }
        while let Ok((source, path)) = rx.try_recv() {
            running.extend(open(source, path));
        }
        let now = Instant::now();
        let mut i = 0;
        while i < running.len() {
            // Abandoned: the worker dropped the feed; what it queued is
            // still in the ring for `finish`. Shutdown finishes all.
            let done = running[i].0.is_abandoned() || !open_channel;
            let pumped = if done { Ok(()) } else { running[i].0.pump(now) };
            match pumped {
                Ok(()) if !done => i += 1,
                Ok(()) => {
                    let (r, path) = running.swap_remove(i);
                    finish(r, &path);
                }
                Err(e) => {
                    let (_, path) = running.swap_remove(i);
                    tracing::warn!(path = %path.display(), error = %e, "recording given up");
                }
            }
        }
    }
}
