//! `codeb dev`: the whole platform on loopback in one command. The control
//! plane runs in this process; the switch (`codeb-switch`) and the local
//! voice-AI simulator (`codeb-ai-sim`) are child processes started from the
//! executables beside `codeb`, the simulator first (the switch's engines
//! point at it), then the switch, then the control plane linked to it.
//!
//! Children run in process groups of their own, so a terminal's Ctrl-C
//! reaches only `codeb`, which stops the control plane first and then each
//! child (SIGTERM, SIGKILL after [`STOP_GRACE`]). A child that exits on its
//! own ends `codeb dev` with an error: never half a platform. Their output
//! goes to this terminal, each line prefixed with the child's name.
//!
//! With `CODEB_SWITCH_URLS` given, no local switch or simulator is started:
//! the control plane links to those nodes.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;

/// The switch executable, beside `codeb`.
pub const SWITCH_BIN: &str = "codeb-switch";
/// The voice-AI simulator executable, beside `codeb`.
pub const SIM_BIN: &str = "codeb-ai-sim";

/// How long a child may take to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child (or the control plane) may take to stop once asked.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Longest child output line passed on; the rest of a longer one is cut.
const MAX_LINE: usize = 16 * 1024;

/// Where `codeb dev` puts the local switch and simulator. Every other switch
/// setting (`CODEB_WORKERS`, `CODEB_SWITCH_METRICS_ADDR`, `CODEB_IO`, …)
/// passes to the switch from the environment.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Local switch and simulator")]
pub struct DevSettings {
    /// SIP listen address of the local switch (UDP and TCP).
    #[arg(long, env = "CODEB_SIP_ADDR", default_value = "127.0.0.1:5060")]
    pub sip_addr: SocketAddr,

    /// gRPC control-link address of the local switch; the control plane
    /// links to it.
    #[arg(
        long,
        env = "CODEB_SWITCH_GRPC_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub switch_grpc_addr: SocketAddr,

    /// RTP port range of the local switch (even RTP, odd RTCP).
    #[arg(long, env = "CODEB_RTP_PORTS", default_value = "20000-20999")]
    pub rtp_ports: String,

    /// Gemini Live simulator listen address (the switch's CODEB_GEMINI_URL).
    #[arg(long, env = "CODEB_SIM_GEMINI_ADDR", default_value = "127.0.0.1:9310")]
    pub sim_gemini_addr: SocketAddr,

    /// OpenAI Realtime simulator listen address (the switch's CODEB_OPENAI_URL).
    #[arg(long, env = "CODEB_SIM_OPENAI_ADDR", default_value = "127.0.0.1:9311")]
    pub sim_openai_addr: SocketAddr,
}

/// The address to connect to for a listen address: loopback for an
/// unspecified (`0.0.0.0` / `::`) one.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// The build command that puts every executable `codeb dev` needs into
/// `dir` (a cargo target profile directory).
pub fn build_command(dir: &Path) -> String {
    let release = dir.file_name().is_some_and(|n| n == "release");
    format!(
        "cargo build{} -p codeb -p codeb-switch -p codeb-ai --bins",
        if release { " --release" } else { "" }
    )
}

/// The switch and simulator executables beside `codeb`; a clear error
/// naming the build command when one is missing.
fn locate() -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().context("finding the codeb executable")?;
    let dir = exe
        .parent()
        .context("the codeb executable has no directory")?;
    let (switch, sim) = (dir.join(SWITCH_BIN), dir.join(SIM_BIN));
    let missing: Vec<&str> = [(&switch, SWITCH_BIN), (&sim, SIM_BIN)]
        .into_iter()
        .filter(|(p, _)| !p.is_file())
        .map(|(_, name)| name)
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "codeb dev starts {} from beside codeb in {}, but it is not there: build all \
             three with `{}` (or set CODEB_SWITCH_URLS to use switch nodes already running)",
            missing.join(" and "),
            dir.display(),
            build_command(dir)
        );
    }
    Ok((switch, sim))
}

/// Refuses port 0 (the child would pick a port we cannot know).
fn fixed_port(addr: SocketAddr, var: &str) -> anyhow::Result<()> {
    if addr.port() == 0 {
        anyhow::bail!("{var} {addr}: codeb dev needs a fixed port, not 0");
    }
    Ok(())
}

/// Refuses an address something already answers on (we would take it for
/// our child, or fail only after starting the others).
async fn check_free(addr: SocketAddr, var: &str) -> anyhow::Result<()> {
    let probe = tokio::time::timeout(
        Duration::from_millis(500),
        TcpStream::connect(reachable(addr)),
    );
    if let Ok(Ok(_)) = probe.await {
        anyhow::bail!(
            "{var} {addr} already accepts connections (an earlier codeb dev still running?): \
             stop that process or choose another address with {var}"
        );
    }
    Ok(())
}

/// Passes `reader`'s lines to `out`, each prefixed `[name] `; lines longer
/// than `MAX_LINE` (16 KiB) are cut, invalid UTF-8 is replaced.
pub async fn forward<R, W>(name: &str, reader: R, mut out: W)
where
    R: AsyncRead + Unpin,
    W: Write,
{
    let mut r = BufReader::new(reader);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut cut = false;
    loop {
        let (used, ended) = match r.fill_buf().await {
            Ok([]) | Err(_) => {
                if !line.is_empty() || cut {
                    emit(&mut out, name, &line, cut);
                }
                return;
            }
            Ok(buf) => {
                let (used, ended) = match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (buf.len(), false),
                };
                let room = MAX_LINE.saturating_sub(line.len());
                let body = &buf[..used - usize::from(ended)];
                line.extend_from_slice(&body[..body.len().min(room)]);
                cut |= body.len() > room;
                (used, ended)
            }
        };
        r.consume(used);
        if ended {
            emit(&mut out, name, &line, cut);
            line.clear();
            cut = false;
        }
    }
}

fn emit(out: &mut impl Write, name: &str, line: &[u8], cut: bool) {
    let text = String::from_utf8_lossy(line);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    // One write per line, so lines of different children never interleave.
    let _ = writeln!(
        out,
        "[{name}] {text}{}",
        if cut { " [line cut]" } else { "" }
    );
}

/// Has the kernel send `cmd`'s process SIGTERM when this process dies,
/// however it dies: a `kill -9` of `codeb dev` left the switch and the
/// simulator running, holding the ports the next `codeb dev` needs. (The
/// signal follows the thread that forks: `codeb dev` spawns from its main
/// thread, inside `block_on`; a blocking-pool thread, which exits when
/// idle, would stop the children with it.)
#[allow(unsafe_code)]
fn die_with_us(cmd: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only prctl and getppid calls, which are async-signal-safe; it takes
    // no lock and allocates nothing (its errors are an errno and a bare
    // kind).
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            // Died between the fork and the prctl: nobody would signal.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            Ok(())
        });
    }
}

/// A started child and the tasks passing its output on.
struct Proc {
    name: &'static str,
    child: Child,
    output: Vec<JoinHandle<()>>,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> anyhow::Result<Proc> {
        die_with_us(cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches only
            // codeb, which stops the children in order.
            .process_group(0)
            // Last resort should this process end without `stop`.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut output = Vec::new();
        if let Some(o) = child.stdout.take() {
            output.push(tokio::spawn(forward(name, o, std::io::stderr())));
        }
        if let Some(e) = child.stderr.take() {
            output.push(tokio::spawn(forward(name, e, std::io::stderr())));
        }
        Ok(Proc {
            name,
            child,
            output,
        })
    }

    /// Waits until `addr` accepts connections; an error if the child exits
    /// first or [`START_TIMEOUT`] passes.
    async fn wait_listening(&mut self, addr: SocketAddr, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "{} exited ({status}) before its {what} {addr} accepted connections; \
                     its output is above, prefixed [{}]",
                    self.name,
                    self.name
                );
            }
            let probe = tokio::time::timeout(
                Duration::from_millis(500),
                TcpStream::connect(reachable(addr)),
            );
            if let Ok(Ok(_)) = probe.await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{}'s {what} {addr} did not accept connections within {}s",
                    self.name,
                    START_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`]; waits for the exit and
    /// the last of its output.
    async fn stop(mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = self
                .child
                .id()
                .and_then(|p| i32::try_from(p).ok())
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
                Ok(Ok(status)) if !stopped_cleanly(status) => say!(
                    "codeb dev: {} exited with {status} when told to stop (see its output above)",
                    self.name
                ),
                Ok(_) => {}
                Err(_) => {
                    say!(
                        "codeb dev: {} did not stop within {}s of SIGTERM; killing it",
                        self.name,
                        STOP_GRACE.as_secs()
                    );
                    let _ = self.child.kill().await;
                }
            }
        }
        for task in self.output {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
    }
}

/// A stopped child's exit is clean as systemd reads one: status 0, or
/// ended by the stop signal itself (a program that does not handle it).
fn stopped_cleanly(status: ExitStatus) -> bool {
    use rustix::process::Signal;
    use std::os::unix::process::ExitStatusExt as _;
    status.success()
        || status.signal().is_some_and(|s| {
            [Signal::HUP, Signal::INT, Signal::TERM, Signal::PIPE]
                .iter()
                .any(|c| c.as_raw() == s)
        })
}

/// SIGINT, SIGTERM and SIGHUP, listened to from the start so none of them
/// ends `codeb` before it has stopped its children.
struct StopSignals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// The children of a running `codeb dev`.
#[derive(Default)]
struct Children {
    sim: Option<Proc>,
    switch: Option<Proc>,
}

impl Children {
    /// Stops the switch, then the simulator it talks to.
    async fn stop(&mut self) {
        for p in [self.switch.take(), self.sim.take()].into_iter().flatten() {
            p.stop().await;
        }
    }
}

/// Starts the simulator and the switch; the summary lines for the banner.
async fn start(
    children: &mut Children,
    config: &Config,
    dev: &DevSettings,
    log: &str,
) -> anyhow::Result<String> {
    let (switch_bin, sim_bin) = locate()?;
    for (addr, var) in [
        (dev.sim_gemini_addr, "CODEB_SIM_GEMINI_ADDR"),
        (dev.sim_openai_addr, "CODEB_SIM_OPENAI_ADDR"),
        (dev.switch_grpc_addr, "CODEB_SWITCH_GRPC_ADDR"),
    ] {
        fixed_port(addr, var)?;
        check_free(addr, var).await?;
    }
    fixed_port(dev.sip_addr, "CODEB_SIP_ADDR")?;
    if config.http_addr.port() != 0 {
        check_free(config.http_addr, "CODEB_HTTP_ADDR").await?;
    }
    let switch_dir = config.data_dir.join("switch");
    std::fs::create_dir_all(&switch_dir)
        .with_context(|| format!("creating the switch's data dir {}", switch_dir.display()))?;

    let gemini_url = format!("ws://{}", reachable(dev.sim_gemini_addr));
    let openai_url = format!("ws://{}", reachable(dev.sim_openai_addr));
    let mut sim = Command::new(&sim_bin);
    sim.env("CODEB_SIM_GEMINI_ADDR", dev.sim_gemini_addr.to_string())
        .env("CODEB_SIM_OPENAI_ADDR", dev.sim_openai_addr.to_string());
    // Locally any key will do (the README's examples use placeholders),
    // unless one is chosen.
    if std::env::var_os("CODEB_SIM_API_KEY").is_none() {
        sim.env("CODEB_SIM_API_KEY", "");
    }
    let sim = children.sim.insert(Proc::spawn(SIM_BIN, &mut sim)?);
    sim.wait_listening(dev.sim_gemini_addr, "Gemini Live simulator")
        .await?;
    sim.wait_listening(dev.sim_openai_addr, "OpenAI Realtime simulator")
        .await?;

    let mut switch = Command::new(&switch_bin);
    switch
        .env("CODEB_DATA_DIR", &switch_dir)
        .env("CODEB_SIP_ADDR", dev.sip_addr.to_string())
        .env("CODEB_SWITCH_GRPC_ADDR", dev.switch_grpc_addr.to_string())
        .env("CODEB_RTP_PORTS", &dev.rtp_ports)
        .env("CODEB_GEMINI_URL", &gemini_url)
        .env("CODEB_OPENAI_URL", &openai_url)
        .env("CODEB_LOG", log)
        // Its link is the plaintext loopback one dev dials, whatever TLS
        // settings this shell carries for a real deployment.
        .env_remove("CODEB_SWITCH_TLS_CERT")
        .env_remove("CODEB_SWITCH_TLS_KEY")
        .env_remove("CODEB_SWITCH_TLS_CLIENT_CA")
        // Nor a deployment's public addresses: dev's switch is on loopback.
        .env_remove("CODEB_SIP_ADVERTISE")
        .env_remove("CODEB_MEDIA_ADDR");
    if let Some(token) = &config.switch_token {
        switch.env("CODEB_SWITCH_TOKEN", token);
    }
    // Personas without a key of their own (a virtual number made with no
    // geminiApiKey) use the node's; the simulator takes any key, or the
    // one chosen for it.
    let sim_key = std::env::var("CODEB_SIM_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "codeb-dev".into());
    for var in ["CODEB_GEMINI_API_KEY", "CODEB_OPENAI_API_KEY"] {
        if std::env::var_os(var).is_none() {
            switch.env(var, &sim_key);
        }
    }
    let switch = children
        .switch
        .insert(Proc::spawn(SWITCH_BIN, &mut switch)?);
    switch
        .wait_listening(dev.switch_grpc_addr, "gRPC control link")
        .await?;

    Ok(format!(
        "  Switch:    SIP {} (UDP and TCP), RTP ports {}, state in {}\n  \
         Simulator: CODEB_GEMINI_URL={gemini_url}  CODEB_OPENAI_URL={openai_url}\n  \
         Output of the switch and the simulator appears here prefixed [{SWITCH_BIN}] and \
         [{SIM_BIN}]; Ctrl-C stops all three.\n",
        dev.sip_addr,
        dev.rtp_ports,
        switch_dir.display(),
    ))
}

fn unexpected(name: &str, status: std::io::Result<ExitStatus>) -> anyhow::Error {
    let how = match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("could not wait for it: {e}"),
    };
    say!(
        "\n  codeb dev: {name} EXITED UNEXPECTEDLY ({how}); stopping the whole platform.\n  \
         Its last output is above, prefixed [{name}].\n"
    );
    anyhow::anyhow!("{name} exited unexpectedly ({how})")
}

/// `codeb dev`: the simulator, the switch and the control plane until a
/// stop signal, the control plane's end, or a child's unexpected exit.
pub async fn run(mut config: Config, dev: DevSettings, log: &str) -> anyhow::Result<()> {
    if !config.switch_urls.is_empty() {
        let summary = format!(
            "  Switch nodes (CODEB_SWITCH_URLS): {}; no local switch or simulator started.\n",
            config.switch_urls.join(", ")
        );
        return crate::cli::serve(config, Some(&summary)).await;
    }
    let mut signals = StopSignals::new().context("listening for stop signals")?;
    let mut children = Children::default();
    // The control link is authenticated here as in production: the token
    // given, or one made for this run.
    if config.switch_token.is_none() {
        config.switch_token = Some(hex::encode(crate::crypto::random_bytes::<16>()));
    }
    let started = tokio::select! {
        r = start(&mut children, &config, &dev, log) => Some(r),
        sig = signals.recv() => {
            say!("codeb dev: {sig} while starting; stopping");
            None
        }
    };
    let summary = match started {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            children.stop().await;
            return Err(e);
        }
        None => {
            children.stop().await;
            return Ok(());
        }
    };
    config.switch_urls = vec![format!("http://{}", reachable(dev.switch_grpc_addr))];
    let result = serve(config, &summary, &mut children, &mut signals).await;
    children.stop().await;
    result
}

async fn serve(
    config: Config,
    summary: &str,
    children: &mut Children,
    signals: &mut StopSignals,
) -> anyhow::Result<()> {
    let (Some(sim), Some(switch)) = (children.sim.as_mut(), children.switch.as_mut()) else {
        anyhow::bail!("codeb dev: the switch and the simulator are not running");
    };
    let control_plane = crate::cli::serve(config, Some(summary));
    tokio::pin!(control_plane);
    tokio::select! {
        r = &mut control_plane => r,
        s = switch.child.wait() => Err(unexpected(switch.name, s)),
        s = sim.child.wait() => Err(unexpected(sim.name, s)),
        sig = signals.recv() => {
            if sig == "SIGHUP" {
                say!("codeb dev: SIGHUP (terminal gone?); stopping");
                return Ok(());
            }
            // The control plane got the same signal and is finishing the
            // requests in flight.
            match tokio::time::timeout(STOP_GRACE, &mut control_plane).await {
                Ok(r) => r,
                Err(_) => {
                    say!(
                        "codeb dev: the control plane did not stop within {}s of {sig}",
                        STOP_GRACE.as_secs()
                    );
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn forwarded(input: &[u8]) -> String {
        let mut out = Vec::new();
        forward("x", input, &mut out).await;
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn output_lines_are_prefixed_bounded_and_never_lost() {
        assert_eq!(forwarded(b"").await, "");
        assert_eq!(
            forwarded(b"a\r\nb\n\nc").await,
            "[x] a\n[x] b\n[x] \n[x] c\n"
        );
        assert_eq!(forwarded(b"\xff ok\n").await, "[x] \u{fffd} ok\n");
        let long = vec![b'y'; MAX_LINE * 3 + 7];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        let out = forwarded(&input).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{}", &out[..80]);
        assert_eq!(lines[0], format!("[x] {} [line cut]", "y".repeat(MAX_LINE)));
        assert_eq!(lines[1], "[x] next");
    }

    #[test]
    fn listen_addresses_map_to_where_to_connect() {
        let v4: SocketAddr = "0.0.0.0:5".parse().unwrap();
        let v6: SocketAddr = "[::]:6".parse().unwrap();
        let lo: SocketAddr = "10.1.2.3:7".parse().unwrap();
        assert_eq!(reachable(v4).to_string(), "127.0.0.1:5");
        assert_eq!(reachable(v6).to_string(), "[::1]:6");
        assert_eq!(reachable(lo), lo);
    }

    #[test]
    fn the_build_hint_matches_the_profile() {
        assert_eq!(
            build_command(Path::new("/x/target/release")),
            "cargo build --release -p codeb -p codeb-switch -p codeb-ai --bins"
        );
        assert_eq!(
            build_command(Path::new("/x/target/debug")),
            "cargo build -p codeb -p codeb-switch -p codeb-ai --bins"
        );
    }
}
