//! Test harness: a real `codeb-switch` process on free ports with a given
//! configuration, SIPp processes as far ends, and raw UDP/TCP clients.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Switch {
    child: Child,
    pub sip: SocketAddr,
    pub metrics: SocketAddr,
    pub grpc: SocketAddr,
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on loopback right now.
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Switch {
    pub fn start(config: &str, env: &[(&str, &str)]) -> Switch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("switch.toml"), config).unwrap();
        let port = free_port();
        let mut s = Switch {
            child: Command::new("true").spawn().unwrap(),
            sip: format!("127.0.0.1:{port}").parse().unwrap(),
            metrics: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            grpc: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            dir,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let port = self.sip.port();
        let rtp = 20_000 + (port % 100) * 100;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_codeb-switch"));
        cmd.env("CODEB_SIP_ADDR", self.sip.to_string())
            .env("CODEB_SWITCH_GRPC_ADDR", self.grpc.to_string())
            .env("CODEB_RTP_PORTS", format!("{rtp}-{}", rtp + 99))
            .env("CODEB_DATA_DIR", self.dir.path())
            .env("CODEB_SWITCH_METRICS_ADDR", self.metrics.to_string())
            .env("CODEB_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null());
        // CODEB_TEST_SWITCH_LOG=<filter> shows the switch's log (debugging).
        match std::env::var("CODEB_TEST_SWITCH_LOG") {
            Ok(filter) => cmd.env("CODEB_LOG", filter).stderr(Stdio::inherit()),
            Err(_) => cmd.stderr(Stdio::piped()),
        };
        self.child = cmd.spawn().expect("start codeb-switch");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if options_ok(self.sip) {
                return;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("codeb-switch exited ({st}): {err}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("codeb-switch did not answer OPTIONS");
    }

    /// SIGKILL, then the same switch again on the same data dir (on new
    /// ports: another test may have taken the old ones meanwhile).
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.sip = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        self.metrics = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        self.grpc = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        self.spawn();
    }

    /// Sends SIGTERM (stop: end the calls, then exit).
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
    }

    /// Sends SIGHUP (reload the configuration file).
    pub fn sighup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    }

    /// The gRPC URL of the control link.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn metrics(&self) -> String {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The value of a metric line (exact name with labels).
    pub fn metric(&self, line_prefix: &str) -> Option<f64> {
        // The exposition is refreshed once a second.
        std::thread::sleep(Duration::from_millis(1100));
        self.metrics()
            .lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (at most `limit`) for the process to exit, and asserts it
    /// exited cleanly (status 0: no panic on the way out).
    pub fn exits_cleanly_within(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the switch exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the switch did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One OPTIONS over UDP; true on a 200.
pub fn options_ok(to: SocketAddr) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = s.local_addr().unwrap();
    let msg = format!(
        "OPTIONS sip:ping@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ping{}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=p1\r\nTo: <sip:ping@{to}>\r\nCall-ID: ping-{}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        rand_u32(),
        rand_u32()
    );
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    if s.send_to(msg.as_bytes(), to).is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    matches!(s.recv_from(&mut buf), Ok((n, _)) if buf[..n].starts_with(b"SIP/2.0 200"))
}

pub fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    u32::from_le_bytes(b)
}

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
}

pub fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel)
}

/// A SIPp process (killed on drop).
pub struct Sipp {
    child: Child,
    pub port: u16,
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sipp_cmd(args: &[&str], port: u16) -> Command {
    let mut c = Command::new("sipp");
    c.args([
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-nostdin",
        "-timeout",
        "30s",
        "-timeout_error",
    ])
    .args(args)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

impl Sipp {
    /// Waits for SIPp to exit; its status, or None if it is still running
    /// after `wait`.
    pub fn wait(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// Starts a SIPp server (uas side) in the background.
pub fn sipp_server(args: &[&str]) -> Sipp {
    let port = free_port();
    let child = sipp_cmd(args, port)
        .spawn()
        .expect("sipp is installed (Debian sip-tester)");
    std::thread::sleep(Duration::from_millis(300));
    Sipp { child, port }
}

/// A SIPp server playing the scenario file `name` (tests/scenarios), with
/// `args` besides.
pub fn scenario_server(name: &str, args: &[&str]) -> Sipp {
    let path = scenario(name);
    sipp_server(&[&["-sf", path.to_str().unwrap()], args].concat())
}

/// Runs a SIPp client playing the scenario file `name` against `target`,
/// with `args` besides; returns (successful, failed) calls.
pub fn scenario_client(target: SocketAddr, name: &str, args: &[&str]) -> (u64, u64) {
    let path = scenario(name);
    sipp_client(target, &[&["-sf", path.to_str().unwrap()], args].concat())
}

/// Runs a SIPp client to completion; returns (successful, failed) calls.
pub fn sipp_client(target: SocketAddr, args: &[&str]) -> (u64, u64) {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let stat = dir.path().join("stat.csv");
    let status = sipp_cmd(args, port)
        .arg(target.to_string())
        .args(["-trace_stat", "-stf", stat.to_str().unwrap(), "-fd", "1"])
        .current_dir(dir.path())
        .status()
        .expect("run sipp");
    let text = std::fs::read_to_string(&stat).unwrap_or_default();
    let mut lines = text.lines();
    let (Some(head), Some(last)) = (lines.next(), lines.last()) else {
        panic!("sipp wrote no statistics (exit {status})");
    };
    let cols: Vec<&str> = head.split(';').collect();
    let vals: Vec<&str> = last.split(';').collect();
    let get = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .and_then(|i| vals.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

/// Sends one datagram and returns the first reply within `wait`, if any.
pub fn udp_exchange(to: SocketAddr, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(msg, to).unwrap();
    let mut buf = vec![0u8; 65536];
    s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

/// The status code of a SIP response.
pub fn status_of(resp: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(resp.get(..12)?).ok()?;
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// A trunk on loopback: calls from 127.0.0.0/8 come in through it.
const LOOPBACK_TRUNK: &str = r#"
[[trunks]]
id = "tr_0000000000000001"
host = "127.0.0.1"
inbound = ["127.0.0.0/8"]
"#;

/// The loopback trunk and, for each `(name, did, port)`, a user whose
/// contact is the SIPp at `port` on loopback and whom `did` rings.
pub fn loopback_users_config(users: &[(&str, &str, u16)]) -> String {
    let mut config = LOOPBACK_TRUNK.to_owned();
    for (name, did, port) in users {
        config.push_str(&format!(
            "\n[[users]]\nname = \"{name}\"\ncontact = \"sip:{name}@127.0.0.1:{port}\"\n\n[[routes]]\ndid = \"{did}\"\nuser = \"{name}\"\n"
        ));
    }
    config
}

/// A trunk on loopback and one user reachable at `contact`, `*` routed to it.
pub fn loopback_config(user_contact: &str) -> String {
    format!(
        r#"{LOOPBACK_TRUNK}
[[users]]
name = "uas"
contact = "{user_contact}"

[[users]]
name = "alex"
password = "alex-secret"

[[routes]]
did = "1000"
user = "alex"

[[routes]]
did = "*"
user = "uas"
"#
    )
}
