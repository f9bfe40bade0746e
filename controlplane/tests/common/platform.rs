//! The whole system for end-to-end tests: the voice-AI simulator
//! (`codeb-ai-sim`), a `codeb-switch` node (killable and restartable on
//! its data directory and ports), `codeb serve` linked to it (killable and
//! restartable on its data directory and port), an HTTP receiver for the
//! webhooks, and SIPp callees, one of them with its media on a socket the
//! test owns so the test decides when the callee talks.
//!
//! `codeb-switch` and `codeb-ai-sim` are other packages' binaries: they are
//! found beside `codeb` in the target directory (the workspace test command
//! builds them). Where they have not been built, `Platform::start` says so
//! and returns None, unless the run requires every peer
//! (`CODEB_REQUIRE_PG=1`, set by `tests/run`), where that is a failure.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Server, curl};

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free for UDP and TCP on loopback now (SIP listens on both),
/// below the kernel's ephemeral range ([`super::free_port`]).
pub fn free_sip_port() -> u16 {
    loop {
        let port = super::free_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `f` until it gives a value; fails the test after `secs`.
pub fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_port(what: &str, port: u16) {
    wait(what, 20, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
}

fn sibling_binary(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_codeb")).with_file_name(name);
    p.exists().then_some(p)
}

/// A scenario file of `controlplane/tests/scenarios`.
pub fn scenario(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
        .display()
        .to_string()
}

/// The voice-AI simulators, accepting any key.
pub struct Sim {
    _child: Killed,
    pub gemini: u16,
    pub openai: u16,
}

impl Sim {
    fn start(bin: &Path) -> Sim {
        let (gemini, openai) = (free_sip_port(), free_sip_port());
        let child = Command::new(bin)
            .env("CODEB_SIM_GEMINI_ADDR", format!("127.0.0.1:{gemini}"))
            .env("CODEB_SIM_OPENAI_ADDR", format!("127.0.0.1:{openai}"))
            .env("CODEB_SIM_API_KEY", "")
            .stdout(Stdio::null())
            .spawn()
            .expect("start codeb-ai-sim");
        let sim = Sim {
            _child: Killed(child),
            gemini,
            openai,
        };
        wait_for_port("the simulator's port", gemini);
        sim
    }
}

/// A switch node configured only through the link. Its ports and data
/// directory (the event journal) stay the same across `restart`.
pub struct SwitchNode {
    bin: PathBuf,
    dir: PathBuf,
    pub sip: u16,
    pub grpc: u16,
    pub metrics: u16,
    rtp: u16,
    sim: (u16, u16),
    child: Option<Killed>,
}

impl SwitchNode {
    fn start(bin: &Path, dir: &Path, sim: &Sim) -> SwitchNode {
        std::fs::create_dir_all(dir).unwrap();
        let sip = free_sip_port();
        let mut node = SwitchNode {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            sip,
            grpc: free_sip_port(),
            metrics: free_sip_port(),
            rtp: 30_000 + (sip % 100) * 100,
            sim: (sim.gemini, sim.openai),
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .env("CODEB_SIP_ADDR", format!("127.0.0.1:{}", self.sip))
            .env("CODEB_SWITCH_GRPC_ADDR", format!("127.0.0.1:{}", self.grpc))
            .env("CODEB_RTP_PORTS", format!("{}-{}", self.rtp, self.rtp + 99))
            .env("CODEB_DATA_DIR", &self.dir)
            .env(
                "CODEB_SWITCH_METRICS_ADDR",
                format!("127.0.0.1:{}", self.metrics),
            )
            .env("CODEB_GEMINI_URL", format!("ws://127.0.0.1:{}", self.sim.0))
            .env("CODEB_OPENAI_URL", format!("ws://127.0.0.1:{}", self.sim.1))
            // For personas without a key of their own (virtual numbers).
            .env("CODEB_GEMINI_API_KEY", "node-key")
            .env("CODEB_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start codeb-switch");
        self.child = Some(Killed(child));
        wait_for_port("the switch's gRPC port", self.grpc);
    }

    /// SIGKILL: the node dies with its calls; its journal stays on disk.
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Starts the node again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// The configuration version the node runs (0 before the first).
    pub fn config_version(&self) -> u64 {
        let out = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{}/metrics", self.metrics)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("codeb_config_version "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    }
}

/// One webhook request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-CodeB-Event`.
    pub event: String,
    /// `X-CodeB-Delivery-Id`.
    pub id: String,
    /// `X-CodeB-Signature`.
    pub signature: String,
    pub body: Value,
    /// The body as it arrived (what the signature covers).
    pub raw: Vec<u8>,
}

/// An HTTP receiver answering 200 to every webhook and keeping them all.
pub struct Hooks {
    pub url: String,
    seen: Arc<Mutex<Vec<Delivery>>>,
    _rt: tokio::runtime::Runtime,
}

async fn receive(State(seen): State<Arc<Mutex<Vec<Delivery>>>>, req: Request) -> StatusCode {
    let (event, id, signature) = {
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        (
            header("x-codeb-event"),
            header("x-codeb-delivery-id"),
            header("x-codeb-signature"),
        )
    };
    let raw = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default()
        .to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    seen.lock().unwrap().push(Delivery {
        event,
        id,
        signature,
        body,
        raw,
    });
    StatusCode::OK
}

impl Hooks {
    pub fn start() -> Hooks {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::default();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&seen));
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hooks { url, seen, _rt: rt }
    }

    /// Every request so far, in arrival order.
    pub fn all(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests about one call, in arrival order.
    pub fn of_call(&self, call_id: &str) -> Vec<Delivery> {
        self.all()
            .into_iter()
            .filter(|d| d.body["data"]["callId"] == call_id)
            .collect()
    }

    /// The event names of one call's requests, in arrival order.
    pub fn names(&self, call_id: &str) -> Vec<String> {
        self.of_call(call_id).into_iter().map(|d| d.event).collect()
    }

    /// Waits for the first `event` about `call_id`.
    pub fn wait_for(&self, call_id: &str, event: &str, secs: u64) -> Delivery {
        wait(
            &format!("{event} of {call_id} at the receiver"),
            secs,
            || self.of_call(call_id).into_iter().find(|d| d.event == event),
        )
    }

    /// Waits until `n` requests of `event` about `call_id` arrived.
    pub fn wait_for_n(&self, call_id: &str, event: &str, n: usize, secs: u64) -> Vec<Delivery> {
        wait(&format!("{n} × {event} of {call_id}"), secs, || {
            let got: Vec<Delivery> = self
                .of_call(call_id)
                .into_iter()
                .filter(|d| d.event == event)
                .collect();
            (got.len() >= n).then_some(got)
        })
    }
}

/// The whole platform: simulator, one switch node, the control plane
/// linked to it, and the webhook receiver subscribed to every event.
pub struct Platform {
    pub sim: Sim,
    pub switch: SwitchNode,
    pub hooks: Hooks,
    server: Option<Server>,
    /// The control plane's environment (its port included), for restarts.
    server_env: Vec<(String, String)>,
    /// An API key (checked against the database, so it outlives restarts).
    key: String,
    /// The webhook subscription of `hooks`.
    pub sub: String,
    pub cp_dir: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Platform {
    /// Starts everything; `cp_env` is extra environment of the control
    /// plane. None when the peer binaries are not built (and not required).
    pub fn start(cp_env: &[(&str, &str)]) -> Option<Platform> {
        let (Some(switch_bin), Some(sim_bin)) = (
            sibling_binary("codeb-switch"),
            sibling_binary("codeb-ai-sim"),
        ) else {
            assert!(
                std::env::var("CODEB_REQUIRE_PG").as_deref() != Ok("1"),
                "codeb-switch or codeb-ai-sim is not built beside codeb: run \
                 `cargo build -p codeb-switch -p codeb-ai --bins` (the workspace test command builds them)"
            );
            eprintln!("codeb-switch or codeb-ai-sim is not built: skipping the whole-system test");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::start(&sim_bin);
        let switch = SwitchNode::start(&switch_bin, &dir.path().join("switch"), &sim);
        let hooks = Hooks::start();
        let cp_dir = dir.path().join("cp");
        let grpc_url = switch.grpc_url();
        let mut env = vec![
            ("CODEB_SWITCH_URLS", grpc_url.as_str()),
            ("CODEB_WEBHOOK_ALLOW", "127.0.0.0/8"),
        ];
        env.extend_from_slice(cp_env);
        let server = Server::start_with(&cp_dir, None, &env, Stdio::inherit());
        let key = super::api_key(&server);
        let mut platform = Platform {
            sim,
            switch,
            hooks,
            server_env: server.env.clone(),
            server: Some(server),
            key,
            sub: String::new(),
            cp_dir,
            dir,
        };
        let (code, sub, raw) = platform.post(
            "/api.ashx/v1/webhooks",
            &json!({"url": platform.hooks.url, "events": ["*"]}),
        );
        assert_eq!(code, 201, "{raw}");
        platform.sub = sub["id"].as_str().unwrap().to_owned();
        // The control plane has had the switch answer its Stats: a first
        // call right after the start does not race the node's first probe
        // (2 s at most) on a machine busy with other tests.
        wait("the control plane to see the switch up", 30, || {
            let (_, _, text) = curl(&[
                "-H",
                &format!("Authorization: Bearer {}", platform.key),
                &platform.server().url("/metrics"),
            ]);
            text.lines()
                .any(|l| l.starts_with("codeb_switch_node_up{") && l.ends_with(" 1"))
                .then_some(())
        });
        Some(platform)
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the control plane is running")
    }

    /// SIGKILL of the control plane: nothing flushed, a crash.
    pub fn kill_server(&mut self) {
        if let Some(s) = self.server.take() {
            s.kill();
        }
    }

    /// Starts the control plane again on its data directory and port.
    pub fn restart_server(&mut self) {
        self.kill_server();
        self.server = Some(Server::start_env(self.server_env.clone(), Stdio::inherit()));
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value, String) {
        super::post(self.server(), &self.key, path, body)
    }

    pub fn get(&self, path: &str) -> Value {
        let (code, v, raw) = curl(&[
            "-H",
            &format!("Authorization: Bearer {}", self.key),
            &self.server().url(path),
        ]);
        assert_eq!(code, 200, "{raw}");
        v
    }

    /// The call record of `id`.
    pub fn call(&self, id: &str) -> Value {
        self.get(&format!("/api.ashx/v1/calls/{id}"))
    }

    /// Polls the call record until `done` holds for it.
    pub fn wait_call(
        &self,
        id: &str,
        what: &str,
        secs: u64,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        wait(&format!("call {id}: {what}"), secs, || {
            let c = self.call(id);
            done(&c).then_some(c)
        })
    }

    /// The delivery log of the receiver's subscription, once every
    /// delivery in it is finished (none pending or in flight).
    pub fn settled_deliveries(&self, secs: u64) -> Vec<Value> {
        wait("every webhook delivery to finish", secs, || {
            let log = self.get(&format!(
                "/api.ashx/v1/webhooks/{}/deliveries?limit=500",
                self.sub
            ));
            let all = log["data"].as_array().cloned().unwrap_or_default();
            all.iter().all(|d| d["state"] == "succeeded").then_some(all)
        })
    }

    /// A default trunk to a callee on loopback `port`; its id.
    pub fn default_trunk(&self, port: u16) -> String {
        let (code, trunk, raw) = self.post(
            "/api.ashx/v1/trunks",
            &json!({"name": "carrier", "host": "127.0.0.1", "port": port,
                    "transport": "udp", "isDefault": true}),
        );
        assert_eq!(code, 201, "{raw}");
        trunk["id"].as_str().unwrap().to_owned()
    }

    /// `POST /calls` with the usual fields plus `extra` (which wins);
    /// (callId, response body).
    pub fn place(&self, prompt: &str, extra: &Value) -> (String, Value) {
        let mut body = json!({"phone": "+15551230000", "displayName": "Reminder",
            "email": "ops@example.com", "systemPrompt": prompt,
            "apiKey": "test-key", "maxSeconds": 60});
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let (code, placed, raw) = self.post("/api.ashx/v1/calls", &body);
        assert_eq!(code, 200, "{raw}");
        (placed["callId"].as_str().unwrap().to_owned(), placed)
    }
}

/// SIPp as the trunk's far end: `args` after the address options, run in
/// `dir` (SIPp writes its logs to the working directory).
pub fn sipp_callee(dir: &Path, port: u16, args: &[&str]) -> Killed {
    Killed(
        Command::new("sipp")
            .args(["-i", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(args)
            .args(["-nostdin", "-timeout", "90s", "-timeout_error"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp is installed (Debian sip-tester)"),
    )
}

/// G.711 µ-law of one linear sample.
fn ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    let mag = (s.abs().min(32_635) + BIAS) as u32;
    let exp = (31 - mag.leading_zeros()).saturating_sub(7).min(7);
    let mantissa = (mag >> (exp + 3)) & 0x0f;
    !((sign | (exp << 4) | mantissa) as u8)
}

/// The magnitude of one µ-law byte.
fn ulaw_level(b: u8) -> i32 {
    let b = !b;
    let exp = i32::from((b >> 4) & 7);
    (((i32::from(b & 0x0f) << 3) + 0x84) << exp) - 0x84
}

/// What a `Callee`'s media thread shares with the test.
#[derive(Default)]
struct CalleeState {
    stop: AtomicBool,
    /// Talk until this many ms after `Callee::epoch`.
    talk_until_ms: AtomicU64,
    /// When not 0: talk this many ms from the next speech heard.
    barge_in_ms: AtomicU64,
    /// `loud` when the last barge-in started.
    loud_at_barge_in: AtomicU64,
    packets: AtomicU64,
    /// Packets whose audio was speech, not silence.
    loud: AtomicU64,
    /// The tone it talks with, Hz (0: the 300 Hz "voice").
    tone_hz: AtomicU64,
}

/// A callee whose media is a socket of this test: it answers RTP (PCMU,
/// 20 ms) once the switch's first packet arrives, silence unless told to
/// `speak` (a 300 Hz tone the simulator hears as speech) or to
/// `barge_in`, and counts the speech it hears. The SIPp side is `uas_test_media.xml` with
/// `-key callee_rtp <port>`.
pub struct Callee {
    pub port: u16,
    epoch: Instant,
    state: Arc<CalleeState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Callee {
    pub fn start() -> Callee {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let state = Arc::new(CalleeState::default());
        let epoch = Instant::now();
        let shared = Arc::clone(&state);
        let thread = std::thread::spawn(move || media_loop(&sock, epoch, &shared));
        Callee {
            port,
            epoch,
            state,
            thread: Some(thread),
        }
    }

    /// A steady `hz` tone for `d` from now (an answering machine's beep),
    /// then its 300 Hz voice again when told to speak.
    pub fn beep(&self, hz: u64, d: Duration) {
        self.state.tone_hz.store(hz, Ordering::Relaxed);
        self.speak(d);
    }

    /// Talks for `d` from now.
    pub fn speak(&self, d: Duration) {
        let until = (self.epoch.elapsed() + d).as_millis();
        self.state
            .talk_until_ms
            .store(u64::try_from(until).unwrap(), Ordering::Relaxed);
    }

    /// Talks for `d` from the next packet of speech it hears (within a
    /// packet of it, whatever the test thread is doing).
    pub fn barge_in(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap().max(1);
        self.state.barge_in_ms.store(ms, Ordering::Relaxed);
    }

    /// Packets of speech heard since the last barge-in started.
    pub fn heard_since_barge_in(&self) -> u64 {
        self.heard().1 - self.state.loud_at_barge_in.load(Ordering::Relaxed)
    }

    /// Whether it is talking now.
    pub fn talking(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap();
        now < self.state.talk_until_ms.load(Ordering::Relaxed)
            || self.state.barge_in_ms.load(Ordering::Relaxed) != 0
    }

    /// RTP packets received, and those that carried speech.
    pub fn heard(&self) -> (u64, u64) {
        (
            self.state.packets.load(Ordering::Relaxed),
            self.state.loud.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Callee {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn media_loop(sock: &UdpSocket, epoch: Instant, st: &CalleeState) {
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut peer: Option<SocketAddr> = None;
    let mut next_send = Instant::now();
    let (mut seq, mut ts, mut phase) = (1u16, 0u32, 0f64);
    while !st.stop.load(Ordering::Relaxed) {
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            // RTP version 2, payload type 0 (PCMU).
            if n <= 12 || buf[0] >> 6 != 2 || buf[1] & 0x7f != 0 {
                continue;
            }
            peer.get_or_insert(from);
            st.packets.fetch_add(1, Ordering::Relaxed);
            let audio = &buf[12..n];
            let mean = audio.iter().map(|b| ulaw_level(*b)).sum::<i32>() / audio.len() as i32;
            if mean > 300 {
                let loud = st.loud.fetch_add(1, Ordering::Relaxed) + 1;
                let d = st.barge_in_ms.swap(0, Ordering::Relaxed);
                if d != 0 {
                    st.loud_at_barge_in.store(loud, Ordering::Relaxed);
                    let now = u64::try_from(epoch.elapsed().as_millis()).unwrap();
                    st.talk_until_ms.store(now + d, Ordering::Relaxed);
                }
            }
        }
        let Some(to) = peer else { continue };
        if Instant::now() < next_send {
            continue;
        }
        next_send += Duration::from_millis(20);
        let now_ms = u64::try_from(epoch.elapsed().as_millis()).unwrap();
        let talking = now_ms < st.talk_until_ms.load(Ordering::Relaxed);
        let hz = match st.tone_hz.load(Ordering::Relaxed) {
            0 => 300.0,
            hz => hz as f64,
        };
        let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0xca, 0x11, 0xee, 0x01];
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        pkt[4..8].copy_from_slice(&ts.to_be_bytes());
        pkt.extend((0..160).map(|_| {
            phase += std::f64::consts::TAU * hz / 8000.0;
            ulaw(if talking {
                (phase.sin() * 8000.0) as i16
            } else {
                0
            })
        }));
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
        let _ = sock.send_to(&pkt, to);
    }
}
