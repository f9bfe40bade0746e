//! A test "caller": streams audio into a session as fast as the socket
//! takes it (the simulators' clock is the audio itself, so no pacing or
//! sleeping is needed) and reads events with a bounded wait.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use codeb_ai::sim::g711::{alaw_encode, ulaw_encode};
use codeb_ai::sim::{SimConfig, SimServer, Vendor};
use codeb_ai::{AudioFormat, Codec, Endpoints, EngineEvent, ModelChoice, Session, SessionConfig};
use tokio::sync::mpsc::Receiver;

/// Upper bound for any single expected event.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn sim(vendor: Vendor, cfg: SimConfig) -> SimServer {
    SimServer::bind(vendor, "127.0.0.1:0", cfg).await.unwrap()
}

pub fn config(sim: &SimServer, model: &str, key: &str, prompt: &str) -> SessionConfig {
    let endpoints = Endpoints::parse(&sim.url(), &sim.url()).unwrap();
    let mut c = SessionConfig::new(ModelChoice::from_model(model).unwrap(), endpoints, key);
    c.instructions = prompt.to_owned();
    c.voice = Some(codeb_types::Vendor::of_model(model).default_voice().into());
    c.language = Some("en-US".into());
    c.vad_silence_ms = 300;
    c
}

pub struct Caller {
    pub session: Session,
    pub rx: Receiver<EngineEvent>,
    pub seen: Vec<EngineEvent>,
}

fn encode(format: AudioFormat, samples: &[i16]) -> Vec<u8> {
    match format.codec {
        Codec::PcmS16le => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
        Codec::Pcmu => samples.iter().map(|&s| ulaw_encode(s)).collect(),
        Codec::Pcma => samples.iter().map(|&s| alaw_encode(s)).collect(),
    }
}

impl Caller {
    pub async fn connect(cfg: SessionConfig) -> Self {
        let (session, rx) = codeb_ai::connect(cfg).await.unwrap();
        Self {
            session,
            rx,
            seen: Vec::new(),
        }
    }

    async fn stream(&self, ms: u32, loud: bool) {
        let f = self.session.input_format();
        let per_frame = (f.rate_hz / 50) as usize;
        for frame in 0..ms / 20 {
            let samples: Vec<i16> = (0..per_frame)
                .map(|i| {
                    if !loud {
                        return 0;
                    }
                    let t = (frame as usize * per_frame + i) as f64 / f64::from(f.rate_hz);
                    ((std::f64::consts::TAU * 300.0 * t).sin() * 6000.0) as i16
                })
                .collect();
            self.session
                .send_audio(Bytes::from(encode(f, &samples)))
                .await
                .unwrap();
        }
    }

    /// `ms` of caller speech (a 300 Hz tone well above the simulators' threshold).
    pub async fn speak(&self, ms: u32) {
        self.stream(ms, true).await;
    }

    /// `ms` of digital silence.
    pub async fn silence(&self, ms: u32) {
        self.stream(ms, false).await;
    }

    /// Events up to and including the first that matches `pred`.
    pub async fn until(
        &mut self,
        what: &str,
        pred: impl Fn(&EngineEvent) -> bool,
    ) -> Vec<EngineEvent> {
        let mut got = Vec::new();
        loop {
            let e = match tokio::time::timeout(WAIT, self.rx.recv()).await {
                Ok(Some(e)) => e,
                Ok(None) => panic!(
                    "session ended while waiting for {what}; got {}",
                    summary(&got)
                ),
                Err(_) => panic!("timed out waiting for {what}; got {}", summary(&got)),
            };
            self.seen.push(e.clone());
            let done = pred(&e);
            got.push(e);
            if done {
                return got;
            }
        }
    }

    /// The next final output transcript and the events before it.
    pub async fn ai_says(&mut self) -> (String, Vec<EngineEvent>) {
        let evs = self
            .until("final output transcript", |e| {
                matches!(e, EngineEvent::OutputTranscript { is_final: true, .. })
            })
            .await;
        let Some(EngineEvent::OutputTranscript { text, .. }) = evs.last() else {
            unreachable!()
        };
        (text.clone(), evs)
    }
}

/// Events without audio payloads, for failure messages.
pub fn summary(evs: &[EngineEvent]) -> String {
    let mut out = Vec::new();
    for e in evs {
        match e {
            EngineEvent::Audio { data, format } => {
                out.push(format!("Audio({}B@{})", data.len(), format.rate_hz))
            }
            other => out.push(format!("{other:?}")),
        }
    }
    out.join(", ")
}

pub fn audio_bytes(evs: &[EngineEvent], want: AudioFormat) -> usize {
    evs.iter()
        .map(|e| match e {
            EngineEvent::Audio { data, format } => {
                assert_eq!(*format, want);
                data.len()
            }
            _ => 0,
        })
        .sum()
}

/// The simulators' defaults (the client's `vad_silence_ms` sets the
/// end-of-utterance silence: 300 ms in these tests).
pub fn sim_cfg() -> SimConfig {
    SimConfig::default()
}
