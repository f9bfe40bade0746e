//! ai-load: N concurrent AI calls through one running `codeb-switch`, with
//! the Gemini Live simulator (`codeb_ai::sim`; `--vendor openai`: the
//! OpenAI Realtime one) in this process on its own thread, measuring the
//! switch's CPU per call and the latency it adds on the AI path in both
//! directions.
//!
//! Each call is placed as the control plane places one: `PlaceCall` over
//! the switch's gRPC link (`--grpc`) with an `AiSession` persona whose
//! prompt carries the call's number (`LOADCALL=<n>`). The switch dials the
//! phone through its default trunk, which points at this generator's
//! callee socket (`--uas`); the generator answers 200 with SDP, then its
//! leg streams paced G.711 (`codeb_benches::rtp_stream`) like a phone: µ-law
//! silence with a 600 ms voiced burst (140 Hz and two harmonics) every 4 s
//! (`--period-ms`), each call's bursts at its own phase. The simulator
//! hears the bursts (through the switch: jitter buffer, decode, 8→16 kHz,
//! the AI task, the WebSocket) and answers each with a spoken turn, which
//! the switch resamples to 8 kHz and paces back out as RTP. With OpenAI
//! the engine takes and gives G.711 µ-law at 8 kHz, as the switch asks it
//! to: no resampling either way.
//!
//! Latency, by onset timing on one clock (the simulator's observer and the
//! generator share this process's `Instant`):
//! * caller → engine: from the send of a burst's first packet to the
//!   simulator having read and parsed the first loud chunk of that call's
//!   audio (peak over 1000 after at least five quiet chunks);
//! * engine → caller: from the simulator starting a turn (just before its
//!   first audio chunk is sent) to the arrival of the first loud RTP packet
//!   of that call (peak over 64 after at least three quiet packets).
//!
//! Both include the loopback hops and the simulator's own WebSocket and
//! JSON work as well as the switch; see benches/README.md for what else.
//!
//! With `--tls-cert` and `--tls-key` (PEM files) the simulator serves
//! `wss://`, as the vendors do: the switch then pays for TLS on every
//! session, as it does in a deployment (it must trust the certificate:
//! `CODEB_AI_CA_FILE`).
//!
//! ```text
//! ai-load --grpc 127.0.0.1:15052 --sip 127.0.0.1:15061 --uas 127.0.0.1:15091 \
//!         --sim 127.0.0.1:19410 --pid $(pidof codeb-switch) --calls 100,500 --seconds 20
//! ```
//! `benches/ai_calls.sh` starts the switch for it and runs that.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use codeb_ai::sim::{ObservedConn, SimConfig, SimObserver, SimServer, Vendor};
use codeb_benches::latency::Samples;
use codeb_benches::proc_cpu::load_average;
use codeb_benches::rtp_stream::{Endpoint, HEADER, PAYLOAD, PTIME, Traffic, Window, measure};
use codeb_benches::sip_agent::{Agent, Leg};
use codeb_media::g711::{ulaw_decode, ulaw_encode};
use codeb_proto::v1;
use codeb_proto::v1::switch_client::SwitchClient;

/// A caller's utterance every PERIOD (by default; `--period-ms`), BURST
/// long.
const PERIOD: Duration = Duration::from_secs(4);
const BURST: Duration = Duration::from_millis(600);
/// Shortest period: the burst, the simulator's end-of-utterance silence
/// and a reply fit in it.
const MIN_PERIOD: Duration = Duration::from_millis(1_500);
/// Peak (linear, i16 scale) that makes engine-side audio loud / quiet.
const ENGINE_LOUD: i16 = 1000;
const ENGINE_QUIET: i16 = 100;
/// The same for the RTP the switch sends the caller: the simulator's turns
/// rise from silence (a 4 Hz syllable envelope), reaching a few hundred
/// within their first 20 ms.
const RTP_LOUD: i16 = 64;
/// Quiet chunks / packets before an onset counts (a new utterance or
/// turn, not a dip inside one).
const ENGINE_QUIET_RUN: u32 = 5;
const RTP_QUIET_RUN: u32 = 3;
/// The simulator's API key, given to the switch as CODEB_GEMINI_API_KEY
/// (CODEB_OPENAI_API_KEY).
const SIM_KEY: &str = "sim-key";

/// The engine the calls' personas ask for: (simulator, model, voice).
fn engine(vendor: Vendor) -> (&'static str, &'static str, &'static str) {
    match vendor {
        Vendor::Gemini => ("Gemini Live", "gemini-live-2.5-flash", "Aoede"),
        Vendor::OpenAi => ("OpenAI Realtime", "openai/gpt-realtime", "marin"),
    }
}

struct Args {
    grpc: SocketAddr,
    sip: SocketAddr,
    uas: SocketAddr,
    sim: SocketAddr,
    pid: Option<u32>,
    calls: Vec<usize>,
    seconds: u64,
    threads: usize,
    rate: u32,
    /// A caller speaks a burst once per this.
    period: Duration,
    /// The simulator's certificate chain and key (PEM): serve `wss://`.
    tls: Option<(String, String)>,
    vendor: Vendor,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        grpc: "127.0.0.1:15052".parse()?,
        sip: "127.0.0.1:15061".parse()?,
        uas: "127.0.0.1:15091".parse()?,
        sim: "127.0.0.1:19410".parse()?,
        pid: None,
        calls: vec![100],
        seconds: 20,
        threads: 1,
        rate: 100,
        period: PERIOD,
        tls: None,
        vendor: Vendor::Gemini,
    };
    let (mut cert, mut key) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--grpc" => a.grpc = value()?.parse()?,
            "--sip" => a.sip = value()?.parse()?,
            "--uas" => a.uas = value()?.parse()?,
            "--sim" => a.sim = value()?.parse()?,
            "--pid" => a.pid = Some(value()?.parse()?),
            "--calls" => {
                a.calls = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--seconds" => a.seconds = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--rate" => a.rate = value()?.parse()?,
            "--period-ms" => a.period = Duration::from_millis(value()?.parse()?),
            "--tls-cert" => cert = Some(value()?),
            "--tls-key" => key = Some(value()?),
            "--vendor" => {
                a.vendor = match value()?.as_str() {
                    "gemini" => Vendor::Gemini,
                    "openai" => Vendor::OpenAi,
                    other => bail!("--vendor {other}: gemini or openai"),
                }
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if a.threads == 0 || a.rate == 0 || a.calls.is_empty() || a.calls.contains(&0) {
        bail!("--threads, --rate and --calls must be positive");
    }
    if !(MIN_PERIOD..=Duration::from_secs(60)).contains(&a.period) {
        bail!("--period-ms must be 1500-60000");
    }
    a.tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    Ok(a)
}

// ---- the engine side: what the simulator heard and said, and when ----

#[derive(Debug, Default)]
struct EngineSide {
    /// Consecutive quiet chunks heard.
    quiet: u32,
    /// When the first loud chunk after a quiet run was read.
    onsets_heard: Vec<Instant>,
    /// When each AI turn started.
    turns: Vec<Instant>,
}

/// The simulator's observer: per call (by the `LOADCALL=` mark in the
/// persona's prompt), onsets heard and turns started.
#[derive(Debug, Default)]
struct Watch {
    calls: Mutex<HashMap<u64, EngineSide>>,
}

fn call_mark(instructions: &str) -> Option<u64> {
    let rest = &instructions[instructions.find("LOADCALL=")? + "LOADCALL=".len()..];
    let digits: String = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .take(12)
        .collect();
    digits.parse().ok()
}

impl SimObserver for Watch {
    fn heard(&self, conn: &ObservedConn, samples: &[i16], _rate_hz: u32, at: Instant) {
        let Some(call) = call_mark(&conn.instructions) else {
            return;
        };
        let peak = samples
            .iter()
            .map(|s| s.saturating_abs())
            .max()
            .unwrap_or(0);
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let side = calls.entry(call).or_default();
        if peak >= ENGINE_LOUD {
            if side.quiet >= ENGINE_QUIET_RUN {
                side.onsets_heard.push(at);
            }
            side.quiet = 0;
        } else if peak < ENGINE_QUIET {
            side.quiet = side.quiet.saturating_add(1);
        }
    }

    fn says(&self, conn: &ObservedConn, _turn: u32, at: Instant) {
        if let Some(call) = call_mark(&conn.instructions) {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            calls.entry(call).or_default().turns.push(at);
        }
    }
}

// ---- the caller side: the generator's legs ----

/// 600 ms of a voiced sound in µ-law, from its first sample at full level
/// (a sharp onset to time).
fn burst_audio() -> Vec<u8> {
    let n = (BURST.as_millis() as usize) * 8;
    (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let tau = std::f64::consts::TAU;
            let v = (tau * 140.0 * t).sin()
                + 0.5 * (tau * 280.0 * t).sin()
                + 0.25 * (tau * 420.0 * t).sin();
            ulaw_encode((v * 6000.0) as i16)
        })
        .collect()
}

struct CallerLeg {
    call: u64,
    /// Where this call's bursts start in the period, ns.
    phase_ns: u64,
    /// The burst whose first packet was sent last.
    last_burst: Option<u64>,
    /// Consecutive quiet packets received.
    quiet: u32,
}

/// One generator thread's legs and findings.
struct Caller {
    window: Window,
    period: Duration,
    burst: Arc<Vec<u8>>,
    legs: Arc<Vec<(u64, u64)>>,
    state: HashMap<usize, CallerLeg>,
    /// (call, ns) of each burst's first packet.
    onsets_sent: Vec<(u64, u64)>,
    /// (call, ns) of each loud RTP onset received in the window.
    onsets_received: Vec<(u64, u64)>,
    /// RTP packets received in the window.
    received: u64,
}

impl Caller {
    fn leg(&mut self, leg: usize) -> &mut CallerLeg {
        let legs = &self.legs;
        self.state.entry(leg).or_insert_with(|| {
            let (call, phase_ns) = legs.get(leg).copied().unwrap_or((u64::MAX, 0));
            CallerLeg {
                call,
                phase_ns,
                last_burst: None,
                quiet: 0,
            }
        })
    }
}

impl Traffic for Caller {
    fn payload(&mut self, leg: usize, sent_ns: u64, out: &mut [u8; PAYLOAD]) {
        let period = self.period.as_nanos() as u64;
        let burst = Arc::clone(&self.burst);
        let l = self.leg(leg);
        let t = sent_ns.saturating_sub(l.phase_ns);
        let (n, into) = (t / period, t % period);
        let packet = (into / PTIME.as_nanos() as u64) as usize;
        match burst.get(packet * PAYLOAD..(packet + 1) * PAYLOAD) {
            Some(audio) if sent_ns >= l.phase_ns => {
                out.copy_from_slice(audio);
                if l.last_burst != Some(n) {
                    // Kept from before the window too: an onset heard in
                    // the window may have been sent just before it.
                    l.last_burst = Some(n);
                    let call = l.call;
                    self.onsets_sent.push((call, sent_ns));
                }
            }
            _ => out.fill(0xff),
        }
    }

    fn received(&mut self, leg: usize, packet: &[u8], at_ns: u64) {
        if packet.len() <= HEADER || packet[1] & 0x7f != 0 {
            return;
        }
        let window = self.window;
        let measured = window.measured(at_ns);
        if measured {
            self.received += 1;
        }
        let peak = packet[HEADER..]
            .iter()
            .map(|&b| ulaw_decode(b).saturating_abs())
            .max()
            .unwrap_or(0);
        let l = self.leg(leg);
        if peak >= RTP_LOUD {
            let onset = l.quiet >= RTP_QUIET_RUN;
            l.quiet = 0;
            let call = l.call;
            if onset && measured {
                self.onsets_received.push((call, at_ns));
            }
        } else {
            l.quiet = l.quiet.saturating_add(1);
        }
    }
}

/// Latencies from each of `to` to the latest of `from` before it (both
/// per call, ns), kept when under `max`; and how many were not matched.
fn match_onsets(
    from: &HashMap<u64, Vec<u64>>,
    to: &[(u64, u64)],
    max: Duration,
) -> (Samples, usize) {
    let mut s = Samples::default();
    let mut unmatched = 0;
    for &(call, at) in to {
        let prior = from
            .get(&call)
            .and_then(|v| v.iter().copied().filter(|&t| t <= at).max());
        match prior {
            Some(t) if Duration::from_nanos(at - t) <= max => {
                s.record(Duration::from_nanos(at - t));
            }
            _ => unmatched += 1,
        }
    }
    s.finish();
    (s, unmatched)
}

/// The callee, on its own thread (the agent's reactor stays on the thread
/// that made it): answers what the switch dials, hands the legs out, and
/// answers the switch's BYEs, until `stop`. Returns once it is listening.
fn callee(
    sip: SocketAddr,
    uas: SocketAddr,
    legs: mpsc::Sender<Leg>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut agent = match Agent::new(sip, uas) {
            Ok(a) => {
                let _ = ready_tx.send(Ok(()));
                a
            }
            Err(e) => {
                let _ = ready_tx.send(Err(format!("{e:#}")));
                return Err(e);
            }
        };
        while !stop.load(Ordering::Relaxed) {
            agent.pump(Duration::from_millis(5))?;
            for leg in agent.take_answered() {
                if legs.send(leg).is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    });
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => bail!("callee: {e}"),
        Err(_) => bail!("callee thread ended before listening"),
    }
}

/// The simulator's TLS server configuration from PEM files.
fn server_tls(cert: &str, key: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("--tls-cert {cert}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-cert {cert}"))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("--tls-key {key}"))?;
    Ok(codeb_ai::sim::tls_config(chain, key)?)
}

fn phone(run: usize, i: usize) -> String {
    format!("+1555{:02}{:06}", run % 100, i)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    // The simulator (and the gRPC client) on a runtime of one thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let watch = Arc::new(Watch::default());
    let tls = a
        .tls
        .as_ref()
        .map(|(cert, key)| server_tls(cert, key))
        .transpose()?;
    let sim = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.sim).await?;
        let cfg = SimConfig {
            api_key: SIM_KEY.into(),
            observer: Some(watch.clone()),
            ..SimConfig::default()
        };
        SimServer::start(a.vendor, listener, cfg, tls)
    })?;
    let mut grpc = rt
        .block_on(SwitchClient::connect(format!("http://{}", a.grpc)))
        .context("connect to the switch's gRPC link")?;
    let stop = Arc::new(AtomicBool::new(false));
    let (legs_tx, legs_rx) = mpsc::channel();
    let callee = callee(a.sip, a.uas, legs_tx, Arc::clone(&stop))?;
    let (simulator, model, voice) = engine(a.vendor);
    println!(
        "{simulator} simulator at {} (the switch's CODEB_GEMINI_URL / CODEB_OPENAI_URL), model {model}; window {} s after {} s warm-up; caller: {} ms burst every {} ms, silence between",
        sim.url(),
        a.seconds,
        codeb_benches::rtp_stream::WARMUP.as_secs(),
        BURST.as_millis(),
        a.period.as_millis()
    );
    println!(
        "{:>6} {:>8} {:>9} {:>10} {:>10} {:>36} {:>36} {:>9} {:>5}",
        "calls",
        "rtp pps",
        "sw CPU",
        "CPU/call",
        "calls/core",
        "caller->engine min/p50/p99/max ms",
        "engine->caller min/p50/p99/max ms",
        "gen late",
        "load"
    );
    for (run, &n) in a.calls.iter().enumerate() {
        // Place the calls, paced.
        let tenant = "bench";
        let mut ids = Vec::with_capacity(n);
        let gap = Duration::from_secs(1) / a.rate;
        let mut due = Instant::now();
        for i in 0..n {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            due += gap;
            let call_id = format!("aiload{run:02}x{i:06}");
            let mark = run as u64 * 1_000_000 + i as u64;
            let req = v1::PlaceCallRequest {
                call_id: call_id.clone(),
                tenant: tenant.into(),
                phone: phone(run, i),
                display_name: "ai-load".into(),
                attempt: 1,
                ai: Some(v1::AiSession {
                    model: model.into(),
                    voice: voice.into(),
                    language: "en-US".into(),
                    system_prompt: format!("You answer a load test. LOADCALL={mark}"),
                    ..Default::default()
                }),
                ..Default::default()
            };
            rt.block_on(grpc.place_call(req))
                .with_context(|| format!("PlaceCall {call_id}"))?;
            ids.push(call_id);
        }
        // Their callee legs, as the switch dials them.
        let mut legs: Vec<(u64, u64)> = Vec::with_capacity(n);
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(30 + n as u64 / 20);
        let by_phone: HashMap<String, usize> = (0..n).map(|i| (phone(run, i), i)).collect();
        while endpoints.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("only {} of {n} calls reached the callee", endpoints.len());
            }
            let Ok(leg) = legs_rx.recv_timeout(left) else {
                continue;
            };
            let Some(&i) = by_phone.get(&leg.user) else {
                continue;
            };
            let mark = run as u64 * 1_000_000 + i as u64;
            // Spread over the period, one packet time apart.
            let slots = (a.period.as_nanos() / PTIME.as_nanos()) as u64;
            let phase = (i as u64 * 37 % slots) * PTIME.as_nanos() as u64;
            legs.push((mark, phase));
            endpoints.push(leg.endpoint);
        }
        let load = load_average();
        let legs = Arc::new(legs);
        let burst = Arc::new(burst_audio());
        let result = measure(endpoints, a.threads, a.seconds, a.pid, |window| Caller {
            window,
            period: a.period,
            burst: Arc::clone(&burst),
            legs: Arc::clone(&legs),
            state: HashMap::new(),
            onsets_sent: Vec::new(),
            onsets_received: Vec::new(),
            received: 0,
        })?;
        let window = result.traffic.first().map(|t| t.window);
        // Hang up (BYE to the callee leg, answered by the callee thread).
        for id in &ids {
            let _ = rt.block_on(grpc.hangup(v1::HangupRequest {
                call_id: id.clone(),
                ..Default::default()
            }));
        }
        let Some(window) = window else {
            bail!("no generator threads");
        };
        // Onsets, per direction, matched per call.
        let mut sent: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut said: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut heard: Vec<(u64, u64)> = Vec::new();
        {
            let calls = watch.calls.lock().unwrap_or_else(|e| e.into_inner());
            for &(mark, _) in legs.iter() {
                if let Some(side) = calls.get(&mark) {
                    said.entry(mark)
                        .or_default()
                        .extend(side.turns.iter().map(|t| window.ns(*t)));
                    heard.extend(
                        side.onsets_heard
                            .iter()
                            .map(|t| (mark, window.ns(*t)))
                            .filter(|(_, ns)| window.measured(*ns)),
                    );
                }
            }
        }
        let mut received: Vec<(u64, u64)> = Vec::new();
        let mut rtp = 0u64;
        for t in result.traffic {
            for (call, ns) in t.onsets_sent {
                sent.entry(call).or_default().push(ns);
            }
            received.extend(t.onsets_received);
            rtp += t.received;
        }
        let (up, up_unmatched) = match_onsets(&sent, &heard, BURST);
        let (down, down_unmatched) = match_onsets(&said, &received, BURST);
        let bursts = sent
            .values()
            .flatten()
            .filter(|ns| window.measured(**ns))
            .count();
        let secs = result.window.as_secs_f64();
        let per_call = result.cpu.map(|c| c / n as f64);
        let lat = |s: &Samples| {
            format!(
                "{:.1}/{:.1}/{:.1}/{:.1} (n={})",
                s.percentile_ms(0.0),
                s.percentile_ms(50.0),
                s.percentile_ms(99.0),
                s.max_ms(),
                s.len()
            )
        };
        println!(
            "{:>6} {:>8.0} {:>9} {:>10} {:>10} {:>36} {:>36} {:>7.1}ms {:>5}",
            n,
            rtp as f64 / secs,
            result
                .cpu
                .map_or("n/a".into(), |c| format!("{:.1}%", c * 100.0)),
            per_call.map_or("n/a".into(), |c| format!("{:.0}us/s", c * 1e6)),
            per_call
                .filter(|c| *c > 0.0)
                .map_or("n/a".into(), |c| format!("{:.0}", 1.0 / c)),
            lat(&up),
            lat(&down),
            result.paced.max_late.as_secs_f64() * 1000.0,
            load,
        );
        println!(
            "{:>6} bursts sent {bursts}, onsets heard by the engine {} ({up_unmatched} unmatched); AI turns started {}, onsets at the caller {} ({down_unmatched} unmatched); RTP from the switch {:.1} pps per call (50 expected)",
            "",
            heard.len(),
            said.values()
                .flatten()
                .filter(|ns| window.measured(**ns))
                .count(),
            received.len(),
            rtp as f64 / secs / n as f64,
        );
        // Let the BYEs settle before the next line.
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    callee
        .join()
        .map_err(|_| anyhow::anyhow!("callee thread panicked"))??;
    drop(sim);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_matching() {
        assert_eq!(call_mark("You answer. LOADCALL=1000007"), Some(1_000_007));
        assert_eq!(call_mark("no mark"), None);
        let from = HashMap::from([(1, vec![100, 1_000])]);
        let (s, unmatched) = match_onsets(
            &from,
            &[(1, 1_500), (1, 50), (2, 10)],
            Duration::from_micros(1),
        );
        assert_eq!((s.len(), unmatched), (1, 2));
        assert_eq!(phone(1, 42), "+155501000042");
    }

    #[test]
    fn the_burst_starts_loud() {
        let b = burst_audio();
        assert_eq!(b.len(), 600 * 8);
        let first: i16 = b[..PAYLOAD]
            .iter()
            .map(|&x| ulaw_decode(x).saturating_abs())
            .max()
            .unwrap();
        assert!(first > 3000, "{first}");
    }
}
