//! `codeb dev` as a newcomer runs it: the real `codeb` binary in an empty
//! directory starts the voice-AI simulator and the switch from the
//! executables beside it, links the control plane to that switch, prints
//! where everything is, carries a call (SIPp as the trunk's callee, the
//! simulator as its AI), and on SIGTERM stops all three processes.
//!
//! `codeb-switch` and `codeb-ai-sim` are other packages' binaries, so the
//! test finds them beside `codeb` in the target directory (the workspace
//! test command builds them) and fails, naming the build command, where
//! they have not been built.

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::curl;
use common::platform::{Killed, free_sip_port};
use common::post_url;
use serde_json::json;

fn wait<T>(what: &str, secs: u64, log: &Output, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; codeb dev wrote:\n{}",
            log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything a process wrote to stdout and stderr, also echoed.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<String>>);

impl Output {
    fn collect(&self, from: impl std::io::Read + Send + 'static) {
        let out = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { return };
                eprintln!("{line}");
                let line = strip_ansi(&line);
                let mut s = out.0.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    fn has(&self, needle: &str) -> bool {
        self.0.lock().unwrap().contains(needle)
    }
}

/// The text without terminal colour sequences (`ESC [ … letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    let _ = rustix::process::kill_process(pid, sig);
}

/// A `codeb dev` process; killed, with any children it reported, if the
/// test fails before stopping it.
struct Dev {
    child: Child,
    out: Output,
    children: Vec<u32>,
}

impl Dev {
    fn start(binary: &Path, workdir: &Path, env: &[(&str, String)]) -> Dev {
        let mut dev = Self::spawn(binary, workdir, env);
        dev.out.collect(dev.child.stdout.take().unwrap());
        dev.out.collect(dev.child.stderr.take().unwrap());
        dev
    }

    /// Started with its output piped, nothing reading it yet.
    fn spawn(binary: &Path, workdir: &Path, env: &[(&str, String)]) -> Dev {
        let mut cmd = Command::new(binary);
        cmd.arg("dev").current_dir(workdir);
        // Only what the test sets: nothing from the developer's shell.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CODEB_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start codeb dev");
        Dev {
            child,
            out: Output::default(),
            children: Vec::new(),
        }
    }

    /// SIGTERM, then the exit status (bounded).
    fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "codeb dev did not exit within 40 s of SIGTERM; it wrote:\n{}",
                self.out.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    /// On a failed test: SIGTERM so `codeb dev` stops its children, then
    /// SIGKILL for whatever is left, children included.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let mut pids: Vec<u32> = children_of(self.child.id())
                .into_iter()
                .map(|(pid, _)| pid)
                .collect();
            pids.extend(&self.children);
            signal(self.child.id(), rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            self.children = pids;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for &pid in &self.children {
            if running(pid) {
                signal(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// (pid, executable name) of the live children of `parent`, from /proc.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse().ok()));
        if ppid == Some(parent) && state != Some("Z") {
            found.push((pid, stat[open + 1..close].to_owned()));
        }
    }
    found
}

/// Whether `pid` is a process that has not ended (a zombie has).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

fn sibling(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_codeb")).with_file_name(name);
    assert!(
        p.is_file(),
        "{name} is not built beside codeb ({}): run `cargo build -p codeb-switch -p codeb-ai \
         --bins` first (the workspace test command builds it)",
        p.display()
    );
    p
}

/// Opens a WebSocket to the OpenAI Realtime simulator the way a client
/// does (any key: `codeb dev` accepts any locally) and returns what it
/// answered within a few seconds.
fn realtime_handshake(port: u16) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer any-local-key\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !contains(&got, b"session.created") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn codeb_dev_runs_the_whole_platform_and_stops_all_of_it() {
    sibling("codeb-switch");
    sibling("codeb-ai-sim");
    let dir = tempfile::tempdir().unwrap();
    let (http, grpc, metrics) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let (gemini, openai) = (common::free_port(), common::free_port());
    let sip = free_sip_port();
    let rtp = 40_000 + (sip % 100) * 100;
    let env = [
        ("CODEB_HTTP_ADDR", format!("127.0.0.1:{http}")),
        ("CODEB_SIP_ADDR", format!("127.0.0.1:{sip}")),
        ("CODEB_SWITCH_GRPC_ADDR", format!("127.0.0.1:{grpc}")),
        ("CODEB_RTP_PORTS", format!("{rtp}-{}", rtp + 99)),
        ("CODEB_SIM_GEMINI_ADDR", format!("127.0.0.1:{gemini}")),
        ("CODEB_SIM_OPENAI_ADDR", format!("127.0.0.1:{openai}")),
        // Passed through to the switch from the environment.
        ("CODEB_SWITCH_METRICS_ADDR", format!("127.0.0.1:{metrics}")),
        ("CODEB_WORKERS", "1".into()),
    ];
    let mut dev = Dev::start(Path::new(env!("CARGO_BIN_EXE_codeb")), dir.path(), &env);
    let out = dev.out.clone();
    let base = format!("http://127.0.0.1:{http}");

    // The banner: API URL, credentials, the switch, the simulator.
    let pw = wait("the start banner", 90, &out, || {
        let text = out.text();
        let line = text.lines().find(|l| l.contains("Admin user: admin"))?;
        Some(line.split("password: ").nth(1)?.trim().to_owned())
    });
    for needle in [
        format!("control plane at {base} (SQLite in ./data)"),
        format!("SIP 127.0.0.1:{sip} (UDP and TCP)"),
        "state in ./data/switch".to_owned(),
        format!("CODEB_GEMINI_URL=ws://127.0.0.1:{gemini}"),
        format!("CODEB_OPENAI_URL=ws://127.0.0.1:{openai}"),
        // The simulator's own output, passed on with its name.
        format!(
            "[codeb-ai-sim] Gemini Live simulator:     CODEB_GEMINI_URL=ws://127.0.0.1:{gemini}"
        ),
    ] {
        assert!(out.has(&needle), "no {needle:?} in:\n{}", out.text());
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/dev-admin-password"))
            .unwrap()
            .trim(),
        pw
    );

    // The control plane answers, and the printed credentials work.
    wait("the API", 30, &out, || {
        (curl(&["-s", &format!("{base}/healthz")]).0 == 200).then_some(())
    });
    let (code, tok, raw) = curl(&[
        "-X",
        "POST",
        &format!("{base}/oidc.ashx/token"),
        "-d",
        "grant_type=password",
        "-d",
        "client_id=codeb-admin",
        "-d",
        "username=admin",
        "-d",
        &format!("password={pw}"),
    ]);
    assert_eq!(code, 200, "{raw}");
    let token = tok["access_token"].as_str().unwrap().to_owned();

    // The control plane reached the switch over the link and pushed its
    // configuration: the switch runs a pushed version and kept it in its
    // data dir under ./data/switch.
    wait("the control plane to see the switch node", 60, &out, || {
        out.has(&format!(
            "switch node reachable node=http://127.0.0.1:{grpc}"
        ))
        .then_some(())
    });
    let version = wait("a pushed configuration on the switch", 60, &out, || {
        let (code, _, text) = curl(&["-s", &format!("http://127.0.0.1:{metrics}/metrics")]);
        (code == 200).then_some(())?;
        let v: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("codeb_config_version "))?
            .trim()
            .parse()
            .ok()?;
        (v >= 1).then_some(v)
    });
    assert!(version >= 1);
    // The switch applies a pushed configuration first and then keeps it
    // on disk (off its SIP thread), so the file may trail the metric.
    let kept = dir.path().join("data/switch/config.pb");
    wait("the pushed configuration kept on disk", 60, &out, || {
        kept.is_file().then_some(())
    });
    assert!(dir.path().join("data/codeb.db").is_file());

    // The simulator speaks its protocol.
    let answer = realtime_handshake(openai);
    assert!(
        answer.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        contains(&answer, b"session.created"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // A call through it all: the switch dials SIPp through the trunk, its
    // AI leg reaches the simulator (any key will do locally), which greets
    // and ends the call as the prompt says.
    let callee_port = free_sip_port();
    let _callee = Killed(
        Command::new("sipp")
            .args(["-sn", "uas", "-i", "127.0.0.1", "-p"])
            .arg(callee_port.to_string())
            .args(["-m", "1", "-nostdin", "-timeout", "60s"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp is installed (Debian sip-tester)"),
    );
    let (code, _, raw) = post_url(
        &base,
        &token,
        "/api.ashx/v1/trunks",
        &json!({"name": "carrier", "host": "127.0.0.1", "port": callee_port,
                "transport": "udp", "isDefault": true}),
    );
    assert_eq!(code, 201, "{raw}");
    let (code, placed, raw) = post_url(
        &base,
        &token,
        "/api.ashx/v1/calls",
        &json!({"phone": "+15551234567", "displayName": "Dev test",
                "email": "ops@example.com", "apiKey": "AIza-any-local-key",
                "systemPrompt": "Say: this is a test, goodbye. Then end the call.",
                "maxSeconds": 30}),
    );
    assert_eq!(code, 200, "{raw}");
    let call_url = format!(
        "{base}/api.ashx/v1/calls/{}",
        placed["callId"].as_str().unwrap()
    );
    let call = wait("the call to end", 60, &out, || {
        let (code, c, _) = curl(&["-H", &format!("Authorization: Bearer {token}"), &call_url]);
        (code == 200 && c["status"].as_str().is_some_and(|s| s.starts_with("ended"))).then_some(c)
    });
    assert_eq!(call["status"], "ended-success", "{call}\n{}", out.text());
    assert_eq!(call["endedReason"], "finished", "{call}");
    assert!(call["answeredAtUtc"].is_string(), "{call}");

    // Exactly the switch and the simulator run as its children.
    let mut kids = children_of(dev.child.id());
    kids.sort_by(|a, b| a.1.cmp(&b.1));
    let names: Vec<&str> = kids.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["codeb-ai-sim", "codeb-switch"], "{kids:?}");
    dev.children = kids.iter().map(|(p, _)| *p).collect();

    // SIGTERM stops all three, cleanly.
    let status = dev.terminate();
    assert!(status.success(), "{status}; it wrote:\n{}", out.text());
    for (pid, name) in &kids {
        wait(&format!("{name} (pid {pid}) to end"), 5, &out, || {
            (!running(*pid)).then_some(())
        });
    }
    assert!(!out.has("UNEXPECTEDLY"), "{}", out.text());
    assert!(
        !out.has("when told to stop") && !out.has("panicked"),
        "{}",
        out.text()
    );

    // A password changed since it was generated is not shown at the next
    // start (the banner said a password the issuer refused).
    let passwd = Command::new(env!("CARGO_BIN_EXE_codeb"))
        .args([
            "admin",
            "users",
            "passwd",
            "admin",
            "--password",
            "a-new-password-2026",
        ])
        .current_dir(dir.path())
        .env_remove("CODEB_DATABASE_URL")
        .env_remove("CODEB_DATA_DIR")
        .output()
        .unwrap();
    assert!(passwd.status.success(), "{passwd:?}");
    let mut again = Dev::start(Path::new(env!("CARGO_BIN_EXE_codeb")), dir.path(), &env);
    let out = again.out.clone();
    let line = wait("the banner of the second start", 90, &out, || {
        let text = out.text();
        text.lines()
            .find(|l| l.contains("Admin user: admin"))
            .map(str::to_owned)
    });
    assert!(
        line.contains("changed since it was generated") && !line.contains(&pw),
        "{line}"
    );
    // SIGKILL leaves nobody to stop the children: they go with it anyway
    // (they held the ports the next codeb dev needs).
    let kids = wait("the second start's children", 30, &out, || {
        let kids = children_of(again.child.id());
        (kids.len() == 2).then_some(kids)
    });
    signal(again.child.id(), rustix::process::Signal::KILL);
    let _ = again.child.wait();
    for (pid, name) in &kids {
        wait(
            &format!("{name} (pid {pid}) to end after a SIGKILL of codeb dev"),
            10,
            &out,
            || (!running(*pid)).then_some(()),
        );
    }
}

#[test]
fn without_its_siblings_codeb_dev_refuses_to_start_unless_switch_urls_are_given() {
    // `codeb` alone in a directory (a hard link, so it is the same file).
    let alone = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let binary = alone.path().join("codeb");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_codeb"), &binary).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_codeb"), &binary).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let http = common::free_port();

    let mut dev = Dev::start(
        &binary,
        work.path(),
        &[("CODEB_HTTP_ADDR", format!("127.0.0.1:{http}"))],
    );
    let out = dev.out.clone();
    let status = wait("codeb dev to give up", 30, &out, || {
        dev.child.try_wait().unwrap()
    });
    assert!(!status.success());
    let text = out.text();
    assert!(
        text.contains("codeb dev starts codeb-switch and codeb-ai-sim from beside codeb")
            && text.contains("`cargo build -p codeb -p codeb-switch -p codeb-ai --bins`"),
        "{text}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", http)).is_err(),
        "the control plane must not start"
    );

    // With a switch named, none is started and the control plane runs.
    let unused = common::free_port();
    let mut dev = Dev::start(
        &binary,
        work.path(),
        &[
            ("CODEB_HTTP_ADDR", format!("127.0.0.1:{http}")),
            ("CODEB_SWITCH_URLS", format!("http://127.0.0.1:{unused}")),
        ],
    );
    let out = dev.out.clone();
    wait("the API", 60, &out, || {
        (curl(&["-s", &format!("http://127.0.0.1:{http}/healthz")]).0 == 200).then_some(())
    });
    assert!(
        out.has(&format!(
            "Switch nodes (CODEB_SWITCH_URLS): http://127.0.0.1:{unused}; no local switch or \
             simulator started"
        )),
        "{}",
        out.text()
    );
    assert!(children_of(dev.child.id()).is_empty());
    let status = dev.terminate();
    assert!(status.success(), "{status}; it wrote:\n{}", out.text());
}

#[test]
fn a_log_filter_that_does_not_parse_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_codeb"))
        .arg("serve")
        .env("CODEB_DATA_DIR", dir.path())
        .env(
            "CODEB_HTTP_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env("CODEB_LOG", "x=notalevel")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("CODEB_LOG \"x=notalevel\""), "{err}");
}

/// `codeb dev` whose terminal is gone (stderr a closed pipe) still stops
/// cleanly: its own messages used to panic on the closed pipe, ending it
/// with a panic instead of stopping its children in order.
#[test]
fn codeb_dev_with_its_terminal_gone_stops_cleanly_on_sighup() {
    sibling("codeb-switch");
    sibling("codeb-ai-sim");
    let dir = tempfile::tempdir().unwrap();
    let http = common::free_port();
    let sip = free_sip_port();
    let rtp = 40_000 + (sip % 100) * 100;
    let env = [
        ("CODEB_HTTP_ADDR", format!("127.0.0.1:{http}")),
        ("CODEB_SIP_ADDR", format!("127.0.0.1:{sip}")),
        (
            "CODEB_SWITCH_GRPC_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        ),
        ("CODEB_RTP_PORTS", format!("{rtp}-{}", rtp + 99)),
        (
            "CODEB_SIM_GEMINI_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        ),
        (
            "CODEB_SIM_OPENAI_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        ),
        (
            "CODEB_SWITCH_METRICS_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        ),
        ("CODEB_WORKERS", "1".into()),
    ];
    // Its output goes into pipes whose reading ends are closed at once.
    let mut dev = Dev::spawn(Path::new(env!("CARGO_BIN_EXE_codeb")), dir.path(), &env);
    drop(dev.child.stdout.take());
    drop(dev.child.stderr.take());
    let out = dev.out.clone();
    wait("the control plane", 90, &out, || {
        (common::curl(&["-s", &format!("http://127.0.0.1:{http}/healthz")]).0 == 200).then_some(())
    });
    let kids = wait("the children", 30, &out, || {
        let kids = children_of(dev.child.id());
        (kids.len() == 2).then_some(kids)
    });
    signal(dev.child.id(), rustix::process::Signal::HUP);
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = dev.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "codeb dev did not stop on SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "codeb dev ended with {status}");
    for (pid, name) in &kids {
        wait(&format!("{name} (pid {pid}) to end"), 15, &out, || {
            (!running(*pid)).then_some(())
        });
    }
}
