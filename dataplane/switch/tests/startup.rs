//! What an operator meets starting the real binary: settings that cannot
//! work stop the start with a message naming them, a data directory in use
//! by another switch is refused, a metrics address in use fails the start
//! as the SIP and gRPC addresses do, and a log pipe that closes does not
//! stop a running switch.

#![allow(clippy::unwrap_used)] // a test: failing loudly is the point

mod common;

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Switch, free_port, options_ok};

/// The switch on `dir` and `sip`, fresh loopback ports for the rest, and
/// RTP ports `rtp`.
fn switch_on(dir: &std::path::Path, sip: &str, rtp: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_codeb-switch"));
    cmd.env("CODEB_DATA_DIR", dir)
        .env("CODEB_SIP_ADDR", sip)
        .env(
            "CODEB_SWITCH_GRPC_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "CODEB_SWITCH_METRICS_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("CODEB_RTP_PORTS", rtp)
        .stdin(Stdio::null());
    cmd
}

fn any_sip() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The switch run with `env` over a fresh data dir; what it printed by
/// the time it exited.
fn run_with(env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    switch_on(dir.path(), &any_sip(), "47000-47099")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn settings_that_cannot_work_stop_the_start_naming_them() {
    for (env, named) in [
        (
            &[("CODEB_SIP_ADDR", "0.0.0.0:5060")][..],
            "CODEB_SIP_ADDR 0.0.0.0:5060",
        ),
        (&[("CODEB_MEDIA_ADDR", "0.0.0.0")][..], "CODEB_MEDIA_ADDR"),
        (
            &[("CODEB_SIP_ADVERTISE", "0.0.0.0")][..],
            "CODEB_SIP_ADVERTISE 0.0.0.0",
        ),
        (
            &[("CODEB_SIP_ADVERTISE", "sbc.example.com")][..],
            "\"sbc.example.com\" is not an IP address or IP:port",
        ),
        (&[("CODEB_WORKERS", "0")][..], "CODEB_WORKERS 0"),
        (&[("CODEB_WORKERS", "10000")][..], "CODEB_WORKERS 10000"),
        (&[("CODEB_RING_TIMEOUT", "0")][..], "CODEB_RING_TIMEOUT 0"),
        (
            &[("CODEB_SIP_T1_MS", "500"), ("CODEB_SIP_T2_MS", "100")][..],
            "CODEB_SIP_T2_MS 100",
        ),
        (&[("CODEB_MAX_CALLS", "0")][..], "CODEB_MAX_CALLS"),
        (
            &[("CODEB_RTP_COALESCE_US", "99999999")][..],
            "CODEB_RTP_COALESCE_US",
        ),
        (&[("CODEB_NODE_ID", " ")][..], "CODEB_NODE_ID"),
        (
            &[("CODEB_AI_CONNECT_TIMEOUT", "56")][..],
            "CODEB_AI_CONNECT_TIMEOUT 56: must be 1-55 seconds",
        ),
        (
            &[("CODEB_SWITCH_TOKEN", "")][..],
            "CODEB_SWITCH_TOKEN is set but empty",
        ),
        (
            &[
                ("CODEB_SWITCH_TLS_CERT", "/nonexistent/cert.pem"),
                ("CODEB_SWITCH_TLS_KEY", "/nonexistent/key.pem"),
            ][..],
            "CODEB_SWITCH_TLS_CERT /nonexistent/cert.pem",
        ),
        (
            &[
                ("CODEB_SWITCH_TLS_CERT", "/dev/null"),
                ("CODEB_SWITCH_TLS_KEY", "/dev/null"),
            ][..],
            "CODEB_SWITCH_TLS_CERT /dev/null: no PEM certificate in it",
        ),
        (
            &[("CODEB_SWITCH_TLS_CERT", "/dev/null")][..],
            "CODEB_SWITCH_TLS_CERT and CODEB_SWITCH_TLS_KEY go together",
        ),
        (
            &[("CODEB_SWITCH_TLS_CLIENT_CA", "/dev/null")][..],
            "CODEB_SWITCH_TLS_CLIENT_CA needs CODEB_SWITCH_TLS_CERT",
        ),
        (
            &[("CODEB_SIP_ADVERTISE", "::1")][..],
            "CODEB_SIP_ADVERTISE ::1: not the address family of CODEB_SIP_ADDR",
        ),
        (
            &[("CODEB_MEDIA_ADDR", "::1")][..],
            "CODEB_MEDIA_ADDR ::1: not the address family",
        ),
        (
            &[("CODEB_SIP_ADVERTISE", "127.0.0.2:0")][..],
            "CODEB_SIP_ADVERTISE 127.0.0.2:0:",
        ),
        (
            &[("CODEB_LOG", "x=notalevel")][..],
            "CODEB_LOG \"x=notalevel\"",
        ),
    ] {
        let out = run_with(env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} started");
        assert!(err.contains(named), "{env:?}: {err}");
        assert!(!err.contains("panicked"), "{env:?}: {err}");
    }
}

#[test]
fn a_data_directory_in_use_by_another_switch_is_refused() {
    let first = Switch::start("", &[]);
    let started = Instant::now();
    let out = switch_on(first.dir.path(), &any_sip(), "47100-47199")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is in use by another codeb-switch"), "{err}");
    // It waited for a switch that might be exiting, then gave up.
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The first one is untouched.
    assert!(options_ok(first.sip));
}

#[test]
fn a_metrics_address_in_use_fails_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_with(&[("CODEB_SWITCH_METRICS_ADDR", addr.as_str())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("CODEB_SWITCH_METRICS_ADDR {addr}")),
        "{err}"
    );
}

#[test]
fn a_closed_log_pipe_does_not_stop_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let sip: std::net::SocketAddr = any_sip().parse().unwrap();
    let mut child = switch_on(dir.path(), &sip.to_string(), "47200-47299")
        .env("CODEB_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !options_ok(sip) {
        assert!(Instant::now() < deadline, "the switch did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The collector goes away; the switch logs on (a reload it refuses,
    // at error).
    drop(child.stderr.take());
    std::fs::write(dir.path().join("switch.toml"), "not [ toml").unwrap();
    for _ in 0..3 {
        let hup = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(child.try_wait().unwrap().is_none(), "it exited");
    assert!(options_ok(sip), "it still answers");
    let _ = child.kill();
    let _ = child.wait();
}
