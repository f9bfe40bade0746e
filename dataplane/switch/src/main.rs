//! `codeb-switch`: the data plane process: the SIP transport thread (the
//! SIP sockets on io_uring, parsing), the SIP core thread (transactions,
//! registrar, B2BUA), the media workers, and the gRPC control link
//! (a small tokio runtime of its own, plus the event journal's writer
//! thread). Configuration comes from the control plane (ApplyConfig; the
//! last pushed snapshot is kept in the data directory) or, standalone, from
//! a TOML file.

/// mimalloc: the SIP transport thread allocates every message the core
/// thread frees (and the other way round for what the core sends), and
/// glibc's malloc returns each such block to the arena it came from (its
/// lock, or atomics on its bins, on another core's cache lines). With it,
/// at 5,000 calls a second the two-thread SIP path used more CPU than one
/// thread and failed where one thread passed (benches/README.md, "A
/// transport thread beside the SIP core").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use codeb_io::{Options, Reactor};
use codeb_sip::dialog::SessionTimerConfig;
use codeb_sip::transaction::Timers;
use codeb_switch::ai::hub::{AiHub, AiSettings};
use codeb_switch::config::{SwitchConfig, resolve_trunks};
use codeb_switch::control;
use codeb_switch::control::tls::{LinkTls, TlsFiles};
use codeb_switch::metrics;
use codeb_switch::ports::PortRange;
use codeb_switch::protection;
use codeb_switch::rebind;
use codeb_switch::registrar::RegistrarLimits;
use codeb_switch::sip::transport::{FromWire, ToWire, Transport};
use codeb_switch::sip::{Core, CoreSettings};

#[derive(Parser, Debug)]
#[command(
    name = "codeb-switch",
    version,
    about = "CodeB switch: SIP B2BUA and media relay for the CodeB voice platform",
    after_help = "Every option can also be set by the environment variable shown next to it; a flag wins."
)]
struct Cli {
    /// SIP listen address (UDP and TCP).
    #[arg(long, env = "CODEB_SIP_ADDR", default_value = "127.0.0.1:5060")]
    sip_addr: SocketAddr,
    /// gRPC listen address of the control link (the `codeb.switch.v1.Switch`
    /// service the control plane calls).
    #[arg(
        long,
        env = "CODEB_SWITCH_GRPC_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    grpc_addr: SocketAddr,
    /// Shared secret of the control link: gRPC calls without
    /// `authorization: Bearer <it>` are refused (UNAUTHENTICATED); the
    /// control planes send it from their CODEB_SWITCH_TOKEN. 16-256
    /// visible ASCII characters. Unset: any caller is taken (a start on a
    /// non-loopback address says so).
    #[arg(long, env = "CODEB_SWITCH_TOKEN", hide_env_values = true)]
    switch_token: Option<String>,
    /// The address far ends reach SIP at, when it is not the listen
    /// address (behind a 1:1 NAT, as on a cloud VM: listen on the private
    /// IP, advertise the public one): `IP` or `IP:PORT` [default: the
    /// listen address; the port defaults to the listen port]. Goes into our
    /// Via, Contact and generated Call-IDs and From hosts.
    #[arg(long, env = "CODEB_SIP_ADVERTISE", value_parser = parse_advertise)]
    sip_advertise: Option<(IpAddr, Option<u16>)>,
    /// PEM certificate chain of the gRPC control link: with it (and
    /// CODEB_SWITCH_TLS_KEY) the link is served over TLS only, and the
    /// control planes reach it at an `https://` URL.
    #[arg(long, env = "CODEB_SWITCH_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of CODEB_SWITCH_TLS_CERT.
    #[arg(long, env = "CODEB_SWITCH_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// PEM certificate(s) of the CA that signs the control planes' client
    /// certificates: with it, a TLS client without such a certificate is
    /// refused in the handshake (mutual TLS).
    #[arg(long, env = "CODEB_SWITCH_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Address advertised in SDP [default: the IP of CODEB_SIP_ADVERTISE,
    /// else of CODEB_SIP_ADDR].
    #[arg(long, env = "CODEB_MEDIA_ADDR")]
    media_addr: Option<IpAddr>,
    /// RTP port range (even ports RTP, odd RTCP), split evenly among the
    /// media workers. Media sockets bind to the IP of CODEB_SIP_ADDR.
    #[arg(long, env = "CODEB_RTP_PORTS", default_value = "20000-29999")]
    rtp_ports: PortRange,
    /// Media worker threads, each with its own io_uring ring [default: one
    /// per core].
    #[arg(long, env = "CODEB_WORKERS")]
    workers: Option<usize>,
    /// Seconds without RTP or RTCP in either direction after which an
    /// answered call is hung up; 0 never.
    #[arg(long, env = "CODEB_RTP_TIMEOUT", default_value_t = 60)]
    rtp_timeout: u64,
    /// Microseconds a media worker that relays any call packet for packet
    /// may wait to gather arriving datagrams into one loop turn (fewer
    /// kernel crossings under load; at most this much added latency); 0
    /// turns at every arrival. A worker whose calls all run a decoded
    /// pipeline (AI tap, transcoding) waits up to 1 ms, or this if longer.
    #[arg(long, env = "CODEB_RTP_COALESCE_US", default_value_t = 0)]
    rtp_coalesce_us: u64,
    /// `on`: each media worker receives all its RTP/RTCP ports through one
    /// socket, steered by a small BPF socket-lookup program (Linux 5.9+,
    /// needs CAP_BPF and CAP_NET_ADMIN; without them the start log says
    /// why and each port receives on its own socket). Less CPU and
    /// latency on a core of its own; worse under a CPU quota (cgroup
    /// throttling), hence off by default (benches/README.md). `off`: one
    /// receive per port.
    #[arg(long, env = "CODEB_RTP_STEER", default_value = "off",
          value_parser = ["on", "off"])]
    rtp_steer: String,
    /// Datagrams a second on one media port past which the port is not
    /// read for 2 s (a flood: the kernel drops it at the socket's full
    /// receive buffer instead of the worker paying for each datagram).
    /// A 20-ms stream is 50 a second. 0: never.
    #[arg(long, env = "CODEB_RTP_FLOOD_PPS", default_value_t = codeb_switch::media::DEFAULT_FLOOD_PPS)]
    rtp_flood_pps: u32,
    /// Call recording (dual-channel WAV in $CODEB_DATA_DIR/recordings):
    /// `off`, `requested` (calls whose PlaceCall asks) or `all` (every
    /// answered call).
    #[arg(long, env = "CODEB_RECORD", default_value = "requested",
          value_parser = ["off", "requested", "all"])]
    record: String,
    /// Directory for the switch's state (and its default config file).
    #[arg(long, env = "CODEB_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Standalone configuration file [default: $CODEB_DATA_DIR/switch.toml
    /// if present]. Once the control plane has pushed a snapshot (kept as
    /// $CODEB_DATA_DIR/config.pb and loaded at start), the snapshot wins and
    /// SIGHUP no longer reloads the file; delete config.pb to go back to it.
    #[arg(long, env = "CODEB_SWITCH_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id in Stats [default: a random id kept in
    /// $CODEB_DATA_DIR/node_id].
    #[arg(long, env = "CODEB_NODE_ID")]
    node_id: Option<String>,
    /// Unacknowledged events the journal holds before it counts as full
    /// (new calls are then refused; calls in progress keep recording up to
    /// an eighth more).
    #[arg(long, env = "CODEB_JOURNAL_MAX_EVENTS", default_value_t = 1_000_000)]
    journal_max_events: u64,
    /// Bytes of unacknowledged events the journal holds before it counts
    /// as full (same rule as CODEB_JOURNAL_MAX_EVENTS).
    #[arg(long, env = "CODEB_JOURNAL_MAX_BYTES", default_value_t = 1 << 30)]
    journal_max_bytes: u64,
    /// Prometheus metrics listen address (serves GET /metrics).
    #[arg(
        long,
        env = "CODEB_SWITCH_METRICS_ADDR",
        default_value = "127.0.0.1:9091"
    )]
    metrics_addr: SocketAddr,
    /// IO backend: `auto` (io_uring when available) or `epoll`.
    #[arg(long, env = "CODEB_IO", default_value = "auto", value_parser = ["auto", "epoll"])]
    io: String,
    /// SIP timer T1 in milliseconds (RFC 3261 §17).
    #[arg(long, env = "CODEB_SIP_T1_MS", default_value_t = 500)]
    t1_ms: u64,
    /// SIP timer T2 in milliseconds.
    #[arg(long, env = "CODEB_SIP_T2_MS", default_value_t = 4000)]
    t2_ms: u64,
    /// SIP timer T4 in milliseconds.
    #[arg(long, env = "CODEB_SIP_T4_MS", default_value_t = 5000)]
    t4_ms: u64,
    /// Session interval in seconds offered to callees and granted to
    /// callers (RFC 4028 session timers; the switch refreshes where it
    /// may and hangs up both legs of a call whose session expires); 0 turns
    /// session timers off.
    #[arg(long, env = "CODEB_SESSION_EXPIRES", default_value_t = 1800)]
    session_expires: u32,
    /// Smallest session interval in seconds accepted from peers (Min-SE;
    /// shorter requests get 422). RFC 4028 forbids less than 90; lower
    /// values are for tests only and also lower that floor.
    #[arg(long, env = "CODEB_MIN_SE", default_value_t = 90)]
    min_se: u32,
    /// Receive buffer of the SIP UDP socket in bytes: what queues while
    /// the SIP thread is busy (a burst of calls) instead of being dropped
    /// by the kernel. Above `net.core.rmem_max` it takes CAP_NET_ADMIN;
    /// without it the switch logs what it got.
    #[arg(long, env = "CODEB_SIP_RECV_BUFFER", default_value_t = 16 << 20)]
    sip_recv_buffer: usize,
    /// Most concurrent calls.
    #[arg(long, env = "CODEB_MAX_CALLS", default_value_t = 20_000)]
    max_calls: usize,
    /// Seconds a routed call may ring unanswered before the switch
    /// cancels its branches and answers the caller 408 (RFC 3261 Timer C).
    #[arg(long, env = "CODEB_RING_TIMEOUT", default_value_t = 180)]
    ring_timeout: u64,
    /// Most live SIP transactions. Over UDP a call leaves about three
    /// behind for 32 s after it ends (RFC 3261 Timer J, RFC 6026 Timers L
    /// and M), so a sustained rate of R calls per second holds about
    /// R × 100 of them; new calls may use seven eighths of the table (the
    /// rest is kept for BYEs and other requests of calls in progress). A
    /// lingering transaction costs about 1 KiB; the table is not allocated
    /// ahead.
    #[arg(long, env = "CODEB_MAX_TRANSACTIONS", default_value_t = 1 << 20)]
    max_transactions: usize,
    /// Gemini Live WebSocket endpoint (a simulator in tests and `codeb dev`).
    #[arg(
        long,
        env = "CODEB_GEMINI_URL",
        default_value = "wss://generativelanguage.googleapis.com"
    )]
    gemini_url: String,
    /// OpenAI Realtime WebSocket endpoint.
    #[arg(long, env = "CODEB_OPENAI_URL", default_value = "wss://api.openai.com")]
    openai_url: String,
    /// The node's Gemini API key, for calls whose persona brings none.
    #[arg(
        long,
        env = "CODEB_GEMINI_API_KEY",
        default_value = "",
        hide_env_values = true
    )]
    gemini_api_key: String,
    /// The node's OpenAI API key, for calls whose persona brings none.
    #[arg(
        long,
        env = "CODEB_OPENAI_API_KEY",
        default_value = "",
        hide_env_values = true
    )]
    openai_api_key: String,
    /// Seconds a voice-AI session may take to connect and set up before
    /// the call fails.
    #[arg(long, env = "CODEB_AI_CONNECT_TIMEOUT", default_value_t = 10)]
    ai_connect_timeout: u64,
    /// A PEM file of CA certificates that `wss://` voice-AI endpoints are
    /// also trusted under, beside the built-in webpki (Mozilla) roots: for
    /// an engine behind a gateway or TLS proxy with a private CA.
    #[arg(long, env = "CODEB_AI_CA_FILE")]
    ai_ca_file: Option<std::path::PathBuf>,
    /// Threads of the voice-AI runtime (the sessions' WebSockets), 1-64.
    #[arg(long, env = "CODEB_AI_THREADS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    ai_threads: u16,
    /// Milliseconds of caller audio per engine message while the caller
    /// has been silent for 0.7 s (0-100; 20 or less: every 20 ms
    /// frame goes on its own). Speech and the 0.7 s after it always go
    /// frame by frame.
    #[arg(long, env = "CODEB_AI_QUIET_BATCH_MS", default_value_t = codeb_switch::ai::QUIET_BATCH_MS,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    ai_quiet_batch_ms: u32,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "CODEB_LOG", default_value = "info")]
    log: String,
}

static STOP: AtomicBool = AtomicBool::new(false);
/// How long a stopping switch waits for its calls' far ends to answer the
/// BYEs and CANCELs it sent (a second signal stops it at once).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the main loop stands with a stop (SIGINT/SIGTERM).
#[derive(Clone, Copy, Debug)]
enum Stopping {
    Running,
    /// The first signal came: the calls are being ended, until they have
    /// (or at this time, or at a second signal).
    Ending {
        until: Instant,
    },
    /// Every placed call's end is reported (calls whose far ends did not
    /// answer may still be ending): a connected control plane acknowledges
    /// the ends, at most until this time or a second signal, while SIP is
    /// still answered.
    Acks {
        until: Instant,
    },
}
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        RELOAD.store(true, Ordering::Relaxed);
    } else {
        STOP.store(true, Ordering::Relaxed);
    }
}

#[allow(unsafe_code)]
fn install_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to atomics, which is signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    use std::io::Read as _;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

fn config_path(cli: &Cli) -> Option<PathBuf> {
    config_file(cli.config.as_deref(), &cli.data_dir)
}

/// The configuration file: the one named, else `switch.toml` in the data
/// directory if there is one.
fn config_file(named: Option<&std::path::Path>, data_dir: &std::path::Path) -> Option<PathBuf> {
    named.map(ToOwned::to_owned).or_else(|| {
        let p = data_dir.join("switch.toml");
        p.exists().then_some(p)
    })
}

/// A SIGHUP reload's configuration file read and its trunks resolved, off
/// the SIP thread (a slow resolver would stall every call, and the node
/// would be taken as hung); the result comes back on `done`.
fn reload_in_background(
    named: Option<PathBuf>,
    data_dir: PathBuf,
    done: std::sync::mpsc::Sender<anyhow::Result<(SwitchConfig, HashMap<String, SocketAddr>)>>,
    waker: codeb_io::Waker,
) -> bool {
    let spawned = std::thread::Builder::new()
        .name("config-reload".into())
        .spawn(move || {
            let loaded = match config_file(named.as_deref(), &data_dir) {
                Some(p) => SwitchConfig::load(&p).map_err(anyhow::Error::from),
                None => {
                    tracing::info!(
                        "no configuration file: running with no trunks, users or routes"
                    );
                    Ok(SwitchConfig::default())
                }
            };
            let _ = done.send(loaded.map(|c| {
                let addrs = resolve_trunks(&c);
                (c, addrs)
            }));
            waker.wake();
        });
    if let Err(e) = &spawned {
        tracing::error!(error = %e, "configuration reload: no thread to read it on; keeping the running one");
    }
    spawned.is_ok()
}

/// The session-timer settings, checked: Min-SE at least one second, and an
/// interval (unless off) no shorter than Min-SE.
fn session_timer(cli: &Cli) -> anyhow::Result<Option<SessionTimerConfig>> {
    if cli.min_se == 0 {
        anyhow::bail!("CODEB_MIN_SE must be at least 1 second");
    }
    if cli.session_expires == 0 {
        return Ok(None);
    }
    if cli.session_expires < cli.min_se {
        anyhow::bail!(
            "CODEB_SESSION_EXPIRES ({}) must be 0 (off) or at least CODEB_MIN_SE ({})",
            cli.session_expires,
            cli.min_se
        );
    }
    // RFC 4028's floor, 90 s.
    let rfc_floor = SessionTimerConfig::default().floor;
    if cli.min_se < rfc_floor {
        tracing::warn!(
            min_se = cli.min_se,
            "session intervals below RFC 4028's 90 s: for tests only"
        );
    }
    Ok(Some(SessionTimerConfig {
        session_expires: cli.session_expires,
        min_se: cli.min_se,
        we_refresh: true,
        floor: cli.min_se.min(rfc_floor),
    }))
}

/// What the voice-AI sessions' `wss://` connections trust: the webpki
/// roots, and the operator's CA file beside them if one is given. A file
/// that cannot be used stops the start, rather than every AI call failing.
fn ai_tls(ca_file: Option<&std::path::Path>) -> anyhow::Result<codeb_ai::transport::ClientTls> {
    use std::io::Read as _;
    let Some(path) = ca_file else {
        return Ok(codeb_ai::transport::default_tls()?);
    };
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(codeb_ai::transport::MAX_CA_FILE_BYTES as u64 + 1)
                .read_to_end(&mut pem)
        })
        .with_context(|| format!("CODEB_AI_CA_FILE {}", path.display()))?;
    let tls = codeb_ai::transport::tls_also_trusting(&pem)
        .map_err(|e| anyhow::anyhow!("CODEB_AI_CA_FILE {}: {e}", path.display()))?;
    tracing::info!(ca_file = %path.display(), "voice-AI TLS trusts the webpki roots and this CA file");
    Ok(tls)
}

/// The configuration to start on: the last snapshot the control plane
/// pushed, if one was kept (with its version), else the file.
fn initial_config(cli: &Cli) -> anyhow::Result<(SwitchConfig, Option<u64>)> {
    match control::snapshot::load(&cli.data_dir) {
        Ok(Some(c)) => {
            tracing::info!(
                version = c.version,
                "starting on the last configuration the control plane pushed"
            );
            let v = c.version;
            return Ok((c, Some(v)));
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "the kept configuration snapshot is unusable; using the file")
        }
    }
    Ok((load_config(cli)?, None))
}

fn load_config(cli: &Cli) -> anyhow::Result<SwitchConfig> {
    match config_path(cli) {
        Some(p) => Ok(SwitchConfig::load(&p)?),
        None => {
            tracing::info!("no configuration file: starting with no trunks, users or routes");
            Ok(SwitchConfig::default())
        }
    }
}

fn main() -> std::process::ExitCode {
    use std::io::IsTerminal as _;
    let cli = Cli::parse();
    // Not eprintln!: it panics when stderr is a closed pipe.
    let say = |msg: String| {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "codeb-switch: {msg}");
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(f) => f,
        Err(e) => {
            say(format!("CODEB_LOG {:?}: {e}", cli.log));
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| LogSink)
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            say(format!("{e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The log's stderr. A line that cannot be written (the log collector
/// closed the pipe) is dropped: tracing reports a failed write with
/// `eprintln!`, which panics on a closed stderr, and a switch carrying
/// calls must not stop for its log.
struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Transport events the core handles before it looks at its timers and
/// commands again.
const TURN_EVENTS: usize = 1024;

/// The control link's TLS settings, read from their files and checked
/// now, before anything is bound: a file that cannot be read, holds no
/// certificate or key, or a key that is not the certificate's, stops the
/// start naming the setting, the file and why.
fn link_tls(cli: &Cli) -> anyhow::Result<Option<Arc<LinkTls>>> {
    let (cert, key) = match (&cli.tls_cert, &cli.tls_key, &cli.tls_client_ca) {
        (None, None, None) => return Ok(None),
        (Some(c), Some(k), _) => (c, k),
        (_, _, Some(_)) if cli.tls_cert.is_none() => anyhow::bail!(
            "CODEB_SWITCH_TLS_CLIENT_CA needs CODEB_SWITCH_TLS_CERT and CODEB_SWITCH_TLS_KEY"
        ),
        _ => anyhow::bail!("CODEB_SWITCH_TLS_CERT and CODEB_SWITCH_TLS_KEY go together"),
    };
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: cli.tls_client_ca.clone(),
    };
    Ok(Some(Arc::new(LinkTls::load(files)?)))
}

/// `CODEB_SIP_ADVERTISE`: an IP, or an IP and port (`[v6]:port` for IPv6).
fn parse_advertise(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok((a.ip(), Some(a.port())));
    }
    s.parse::<IpAddr>()
        .map(|ip| (ip, None))
        .map_err(|_| format!("{s:?} is not an IP address or IP:port"))
}

/// The address we appear at: the advertised one, on the listen port unless
/// it names its own.
fn advertised(bound: SocketAddr, advertise: Option<(IpAddr, Option<u16>)>) -> SocketAddr {
    match advertise {
        Some((ip, port)) => SocketAddr::new(ip, port.unwrap_or(bound.port())),
        None => bound,
    }
}

/// Settings that would start a switch that cannot work, or not as asked:
/// refused at start, naming the setting (nothing is clamped silently).
fn check_settings(cli: &Cli) -> anyhow::Result<()> {
    use anyhow::ensure;
    ensure!(
        !cli.sip_addr.ip().is_unspecified(),
        "CODEB_SIP_ADDR {}: give the one address the switch listens on and puts in Via, \
         Contact and (without CODEB_MEDIA_ADDR) SDP; 0.0.0.0 and [::] are not one",
        cli.sip_addr
    );
    if let Some((ip, port)) = cli.sip_advertise {
        let shown = port.map_or(ip.to_string(), |p| SocketAddr::new(ip, p).to_string());
        ensure!(
            !ip.is_unspecified() && port != Some(0),
            "CODEB_SIP_ADVERTISE {shown}: the address far ends reach SIP at; 0.0.0.0, :: and port 0 are not one"
        );
        ensure!(
            ip.is_ipv4() == cli.sip_addr.is_ipv4(),
            "CODEB_SIP_ADVERTISE {shown}: not the address family of CODEB_SIP_ADDR {}",
            cli.sip_addr
        );
    }
    if let Some(ip) = cli.media_addr {
        ensure!(
            !ip.is_unspecified(),
            "CODEB_MEDIA_ADDR {ip}: the address far ends send media to; 0.0.0.0 and :: are not one"
        );
        // Media sockets bind to CODEB_SIP_ADDR's IP: an SDP address of the
        // other family would send every far end where nothing listens.
        ensure!(
            ip.is_ipv4() == cli.sip_addr.is_ipv4(),
            "CODEB_MEDIA_ADDR {ip}: not the address family of CODEB_SIP_ADDR {} (the media sockets bind there)",
            cli.sip_addr
        );
    }
    if let Some(w) = cli.workers {
        ensure!((1..=256).contains(&w), "CODEB_WORKERS {w}: must be 1-256");
    }
    ensure!(
        (1..=86_400).contains(&cli.ring_timeout),
        "CODEB_RING_TIMEOUT {}: must be 1-86400 seconds",
        cli.ring_timeout
    );
    ensure!(
        cli.t1_ms >= 1 && cli.t4_ms >= 1,
        "CODEB_SIP_T1_MS and CODEB_SIP_T4_MS must be at least 1"
    );
    ensure!(
        cli.t2_ms >= cli.t1_ms,
        "CODEB_SIP_T2_MS {} must be at least CODEB_SIP_T1_MS {} (RFC 3261 §17.1.2.2)",
        cli.t2_ms,
        cli.t1_ms
    );
    ensure!(cli.max_calls >= 1, "CODEB_MAX_CALLS must be at least 1");
    ensure!(
        cli.max_transactions >= 64,
        "CODEB_MAX_TRANSACTIONS {}: must be at least 64",
        cli.max_transactions
    );
    ensure!(
        cli.rtp_coalesce_us <= 20_000,
        "CODEB_RTP_COALESCE_US {}: must be at most 20000 (one 20 ms packet time)",
        cli.rtp_coalesce_us
    );
    // A virtual number's caller rings while its session starts, for this
    // and 5 s more: at most a minute, so no provisional need be repeated
    // for a proxy's Timer C (RFC 3261 §13.3.1.1).
    ensure!(
        (1..=55).contains(&cli.ai_connect_timeout),
        "CODEB_AI_CONNECT_TIMEOUT {}: must be 1-55 seconds (a virtual number's caller rings for it and 5 s more, at most a minute)",
        cli.ai_connect_timeout
    );
    if let Some(id) = &cli.node_id {
        ensure!(!id.trim().is_empty(), "CODEB_NODE_ID is empty");
    }
    if let Some(t) = cli.switch_token.as_deref() {
        // An empty secret (a template whose secret did not arrive) must
        // not quietly open the link to any caller.
        ensure!(
            !t.trim().is_empty(),
            "CODEB_SWITCH_TOKEN is set but empty: give it the link's secret, or unset it"
        );
        ensure!(
            (16..=256).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic()),
            "CODEB_SWITCH_TOKEN: must be 16-256 visible ASCII characters"
        );
    }
    ensure!(
        cli.journal_max_events > 0 && cli.journal_max_bytes >= 4096,
        "CODEB_JOURNAL_MAX_EVENTS must be at least 1 and CODEB_JOURNAL_MAX_BYTES at least 4096"
    );
    Ok(())
}

/// Holds `dir/LOCK` for the life of the process: two switches on one data
/// directory would share its event journal and node id, and the control
/// plane would lose events of both. A switch replacing one that is still
/// exiting waits for it as for its addresses.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {} (in CODEB_DATA_DIR)", path.display()))?;
    let deadline = Instant::now() + rebind::WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "CODEB_DATA_DIR {} is in use by another codeb-switch (it holds {}): give each \
                 switch its own data directory",
                dir.display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    install_signals();
    check_settings(&cli)?;
    let link_tls = link_tls(&cli)?;
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating CODEB_DATA_DIR {}", cli.data_dir.display()))?;
    let _lock = lock_data_dir(&cli.data_dir)?;
    let rtp_ports = u64::from(cli.rtp_ports.last - cli.rtp_ports.first) + 1;
    match codeb_switch::fdlimit::ensure(cli.max_calls as u64, rtp_ports) {
        Ok(None) => {}
        Ok(Some(calls)) => tracing::warn!(
            max_calls = cli.max_calls,
            calls_the_limit_allows = calls,
            "the open-file limit is too low for CODEB_MAX_CALLS (up to 6 descriptors per call): raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) or lower CODEB_MAX_CALLS; calls past it fail for want of media ports"
        ),
        Err(e) => tracing::warn!(error = %e, "could not read or raise the open-file limit"),
    }
    // Before any socket: a CA file that cannot be used stops the start.
    let ai_tls = ai_tls(cli.ai_ca_file.as_deref())?;
    let (config, pushed_version) = initial_config(&cli)?;
    let udp = rebind::bind_retrying("SIP (UDP)", rebind::WAIT, || UdpSocket::bind(cli.sip_addr))
        .with_context(|| format!("binding UDP {}", cli.sip_addr))?;
    let sip_addr = udp.local_addr()?;
    match codeb_io::set_recv_buffer(&udp, cli.sip_recv_buffer) {
        Ok(got) if got < cli.sip_recv_buffer => tracing::info!(
            bytes = got,
            wanted = cli.sip_recv_buffer,
            "SIP receive buffer capped by net.core.rmem_max (raising it takes CAP_NET_ADMIN)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not size the SIP receive buffer"),
    }
    let tcp = rebind::bind_retrying("SIP (TCP)", rebind::WAIT, || TcpListener::bind(sip_addr))
        .with_context(|| format!("binding TCP {sip_addr}"))?;
    // The core's thread blocks here between turns; its sockets are the
    // transport thread's, so this reactor only waits for wake-ups.
    let mut waiter = Reactor::new(&Options {
        force_epoll: true,
        buffers: 1,
        buffer_len: 64,
        ..Options::default()
    })?;
    let now = Instant::now();
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    let wall = wall_ms / 1000;
    let advertised = advertised(sip_addr, cli.sip_advertise);
    let settings = CoreSettings {
        sip_addr: advertised,
        timers: Timers {
            t1: Duration::from_millis(cli.t1_ms.max(1)),
            t2: Duration::from_millis(cli.t2_ms.max(1)),
            t4: Duration::from_millis(cli.t4_ms.max(1)),
        },
        max_transactions: cli.max_transactions,
        nonce_key: random_bytes()?,
        id_seed: u64::from_le_bytes(random_bytes()?),
        tcp_idle: Duration::from_secs(600),
        protection: protection::Limits::default(),
        registrar: RegistrarLimits::default(),
        wall_base: (now, wall),
        wall_base_ms: (now, wall_ms),
        media_ip: cli.media_addr.unwrap_or(advertised.ip()),
        rtp_ports: cli.rtp_ports,
        max_calls: cli.max_calls,
        ring_timeout: Duration::from_secs(cli.ring_timeout.clamp(1, 86_400)),
        session_timer: session_timer(&cli)?,
    };
    let config_version = config.version;
    let addrs = resolve_trunks(&config);
    let mut core = Core::new(settings, config, addrs);
    let mut transport = Transport::start(
        &Options {
            force_epoll: cli.io == "epoll",
            ..Options::default()
        },
        udp,
        tcp,
        core.screener(),
        waiter.waker(),
    )
    .context("starting the SIP transport thread")?;
    core.set_udp_socket(transport.udp_socket());
    let workers = cli
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .min(256);
    let engine = codeb_switch::media::MediaEngine::start(
        &codeb_switch::media::MediaSettings {
            workers,
            bind_ip: sip_addr.ip(),
            ports: cli.rtp_ports,
            inactivity: match cli.rtp_timeout {
                0 => Duration::MAX,
                s => Duration::from_secs(s),
            },
            rtcp_interval: Duration::from_secs(5),
            force_epoll: cli.io == "epoll",
            coalesce: Duration::from_micros(cli.rtp_coalesce_us.min(10_000)),
            record_dir: (cli.record != "off").then(|| cli.data_dir.join("recordings")),
            steer: cli.rtp_steer == "on",
            flood_pps: cli.rtp_flood_pps,
        },
        Some(waiter.waker()),
    )
    .context("starting the media workers")?;
    // The workers are woken once per loop turn (below), not per command.
    let mut engine = engine;
    engine.set_deferred_wakes(true);
    core.set_media_engine(engine);
    core.set_record_all(cli.record == "all");
    core.set_ai_quiet_batch(cli.ai_quiet_batch_ms);
    core.set_ai_connect_timeout(Duration::from_secs(cli.ai_connect_timeout));
    let endpoints = codeb_ai::Endpoints::parse(&cli.gemini_url, &cli.openai_url)
        .map_err(|e| anyhow::anyhow!("CODEB_GEMINI_URL / CODEB_OPENAI_URL: {e}"))?;
    tracing::info!(gemini = %endpoints.gemini, openai = %endpoints.openai, "voice-AI endpoints");
    let mut ai = AiHub::start(
        AiSettings {
            endpoints,
            gemini_key: cli.gemini_api_key.clone(),
            openai_key: cli.openai_api_key.clone(),
            connect_timeout: Duration::from_secs(cli.ai_connect_timeout),
            tls: ai_tls,
            threads: usize::from(cli.ai_threads),
        },
        waiter.waker(),
    )
    .context("starting the voice-AI runtime")?;
    let mut link = control::start(
        control::Settings {
            grpc_addr: cli.grpc_addr,
            data_dir: cli.data_dir.clone(),
            node_id: cli.node_id.clone(),
            journal: control::journal::Limits {
                max_events: cli.journal_max_events,
                max_bytes: cli.journal_max_bytes,
            },
            max_calls: cli.max_calls,
            pushed_version,
            config_version,
            token: cli.switch_token.clone().filter(|t| !t.is_empty()),
            tls: link_tls.clone(),
        },
        waiter.waker(),
    )?;
    let exposition = metrics::Exposition::default();
    // As for SIP and gRPC: an address in use is waited for, then the start
    // fails (a switch nobody can watch is not started quietly).
    let addr = rebind::bind_retrying("metrics", rebind::WAIT, || {
        metrics::serve(cli.metrics_addr, exposition.clone())
    })
    .with_context(|| format!("binding CODEB_SWITCH_METRICS_ADDR {}", cli.metrics_addr))?;
    tracing::info!(%addr, "metrics at /metrics");
    tracing::info!(sip = %sip_addr, advertised = %advertised, backend = transport.backend(), grpc = %link.local_addr,
        "switch listening");
    let mut next_metrics = now;
    let (reloaded_tx, reloaded) = std::sync::mpsc::channel();
    // A reload under way, and another asked for meanwhile (the file may
    // have changed again after it was read).
    let (mut reloading, mut reload_again) = (false, false);
    let mut stopping = Stopping::Running;
    loop {
        if matches!(stopping, Stopping::Running) && STOP.swap(false, Ordering::Relaxed) {
            stopping = Stopping::Ending {
                until: Instant::now() + SHUTDOWN_GRACE,
            };
            link.sip.state().set_stopping();
        }
        // What the transport thread delivered; a bounded batch, so timers
        // and commands get their turn under a flood.
        let mut more = false;
        for n in 0.. {
            if n == TURN_EVENTS {
                more = true;
                break;
            }
            let Some(ev) = transport.next_event() else {
                break;
            };
            let now = Instant::now();
            match ev {
                FromWire::Datagram {
                    socket,
                    from,
                    verdict,
                } => core.handle_screened(now, socket, from, *verdict),
                FromWire::Connection { conn, peer } => core.handle_connection(now, conn, peer),
                FromWire::Data { conn, data } => core.handle_stream_data(now, conn, &data),
                FromWire::Closed { conn, why } => core.handle_stream_closed(now, conn, &why),
                FromWire::Connecting { peer, conn } => core.handle_connecting(now, peer, conn),
                FromWire::ConnectRefused { peer, error } => {
                    core.handle_connect_refused(now, peer, &error)
                }
            }
        }
        let now = Instant::now();
        core.handle_timeout(now);
        link.sip.run_commands(&mut core, now);
        while let Some((key, note)) = ai.poll_note() {
            core.ai_note(now, key, note);
        }
        while let Some(req) = core.poll_ai_request() {
            ai.handle(req);
        }
        link.sip.forward_events(&mut core);
        for c in core.take_closes() {
            transport.push(ToWire::Close(c));
        }
        while let Some(peer) = core.poll_connect() {
            transport.push(ToWire::Connect(peer));
        }
        core.wake_media();
        while let Some(out) = core.poll_transmit() {
            transport.push(ToWire::Send(out));
        }
        transport.flush();
        if RELOAD.swap(false, Ordering::Relaxed) {
            if let Some(tls) = &link_tls {
                match tls.reload() {
                    Ok(()) => tracing::info!(
                        "gRPC control link: TLS certificate, key and client CA read again; new connections use them"
                    ),
                    Err(e) => tracing::error!(error = %format!("{e:#}"),
                        "gRPC control link: TLS files refused; keeping the ones in use"),
                }
            }
            if link.sip.pushed() {
                tracing::warn!(
                    "SIGHUP: the configuration file is not read: the switch runs on the configuration the control plane pushed (delete config.pb in the data directory and restart to use the file)"
                );
            } else if reloading {
                reload_again = true;
            } else {
                reloading = reload_in_background(
                    cli.config.clone(),
                    cli.data_dir.clone(),
                    reloaded_tx.clone(),
                    waiter.waker(),
                );
            }
        }
        if let Ok(r) = reloaded.try_recv() {
            reloading = false;
            if std::mem::take(&mut reload_again) && !link.sip.pushed() {
                reloading = reload_in_background(
                    cli.config.clone(),
                    cli.data_dir.clone(),
                    reloaded_tx.clone(),
                    waiter.waker(),
                );
            }
            match r {
                // Pushed meanwhile: the control plane's configuration wins.
                Ok(_) if link.sip.pushed() => {}
                Ok((c, addrs)) => core.apply_config(c, addrs),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "configuration reload refused; keeping the running one")
                }
            }
        }
        if now >= next_metrics {
            link.sip.publish(&core, now);
            let wire = transport.stats();
            let mut text = metrics::render(&core, &wire, transport.backend());
            link.sip.state().render_metrics(&mut text);
            exposition.set(text);
            next_metrics = now + Duration::from_secs(1);
        }
        anyhow::ensure!(transport.alive(), "the SIP transport thread stopped");
        match stopping {
            Stopping::Running => {}
            Stopping::Ending { until } => {
                let busy = core.shut_down_calls(now);
                let second = STOP.load(Ordering::Relaxed);
                if busy && (now >= until || second) && core.active_calls() > 0 {
                    tracing::warn!(
                        calls = core.active_calls(),
                        "calls still ending at shutdown (their far ends did not answer in time); stopping"
                    );
                }
                if !busy || now >= until || second {
                    // Placed calls still ending, and ends held for AI
                    // sessions that did not close in time, report now, so
                    // the link journals them.
                    let unfinished = core.report_unfinished_ends(now);
                    if unfinished > 0 {
                        tracing::warn!(
                            calls = unfinished,
                            "placed calls still ending at shutdown; their ends are reported now"
                        );
                    }
                    let held = core.release_held_ends();
                    if held > 0 {
                        tracing::warn!(
                            calls = held,
                            "AI sessions still closing at shutdown; their calls' ends are reported without them"
                        );
                    }
                    link.sip.forward_events(&mut core);
                    stopping = Stopping::Acks {
                        until: now + control::ACK_WAIT,
                    };
                }
            }
            // The loop goes on turning while a connected control plane
            // acknowledges the ends: SIP is still read (503 to new calls,
            // BYE retransmissions for calls still ending).
            Stopping::Acks { until } => {
                if link.acknowledged(now, until, STOP.load(Ordering::Relaxed)) {
                    break;
                }
            }
        }
        if more {
            continue;
        }
        let now = Instant::now();
        // Transcript and usage notes do not wake this thread.
        let notes_due = if ai.active() > 0 {
            codeb_switch::ai::NOTE_LATENCY
        } else {
            Duration::from_secs(1)
        };
        let wait = core
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .min(notes_due)
            .min(if !matches!(stopping, Stopping::Running) {
                Duration::from_millis(50)
            } else {
                Duration::MAX
            });
        if transport.park() {
            let polled = waiter.poll(Some(wait), &mut |_| {});
            transport.unpark();
            polled?;
        }
    }
    ai.shutdown();
    link.shutdown(&mut core, STOP.load(Ordering::Relaxed));
    while let Some(out) = core.poll_transmit() {
        transport.push(ToWire::Send(out));
    }
    transport.shutdown();
    tracing::info!("switch stopped");
    Ok(())
}
