//! Trunks as a carrier sees them, with SIPp playing the carrier: calls
//! forwarded out through a trunk that challenges them, registration with
//! digest, and the OPTIONS keep-alive's up/down state; the same over TCP
//! for a trunk configured with `transport = "tcp"` (SIPp `-t t1`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: failing loudly is the point

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{Switch, scenario, sipp_client, sipp_server};

fn carrier_config(carrier_port: u16, register: bool, options_interval: u32) -> String {
    carrier_config_over("udp", carrier_port, register, options_interval)
}

fn carrier_config_over(
    transport: &str,
    carrier_port: u16,
    register: bool,
    options_interval: u32,
) -> String {
    format!(
        r#"
[[trunks]]
id = "tr_0000000000000001"
host = "127.0.0.1"
inbound = ["127.0.0.0/8"]
options_interval = 0

[[trunks]]
id = "tr_00000000000000ca"
host = "127.0.0.1"
port = {carrier_port}
transport = "{transport}"
username = "acct"
password = "s3cret-pw"
realm = "carrier.example"
register = {register}
options_interval = {options_interval}

[[routes]]
did = "*"
trunk = "tr_00000000000000ca"
"#
    )
}

fn wait_for(sw: &Switch, line: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if sw.metrics().lines().any(|l| l == line) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn calls_forwarded_to_a_trunk_answer_its_digest_challenge() {
    let carrier = sipp_server(&["-sf", scenario("uas_trunk_auth.xml").to_str().unwrap()]);
    let sw = Switch::start(&carrier_config(carrier.port, false, 0), &[]);
    let (ok, failed) = sipp_client(sw.sip, &["-sn", "uac", "-m", "3", "-r", "3"]);
    assert_eq!(
        (ok, failed),
        (3, 0),
        "the carrier verified our credentials on every call"
    );
}

#[test]
fn registers_with_the_trunk() {
    let carrier = sipp_server(&["-sf", scenario("uas_trunk_register.xml").to_str().unwrap()]);
    let sw = Switch::start(&carrier_config(carrier.port, true, 0), &[]);
    assert!(
        wait_for(
            &sw,
            "codeb_trunk_registered{trunk=\"tr_00000000000000ca\"} 1"
        ),
        "{}",
        sw.metrics()
    );
}

#[test]
fn keepalive_marks_a_silent_trunk_down() {
    // Nothing listens on the carrier port: OPTIONS times out (Timer F with
    // T1 shortened to 20 ms, so in 1.3 s).
    let silent = common::free_port();
    let sw = Switch::start(
        &carrier_config(silent, false, 1),
        &[("CODEB_SIP_T1_MS", "20"), ("CODEB_SIP_T2_MS", "160")],
    );
    assert!(
        wait_for(&sw, "codeb_trunk_up{trunk=\"tr_00000000000000ca\"} 0"),
        "{}",
        sw.metrics()
    );
}

/// A UDP socket on the carrier's port, to catch anything the switch sends
/// it over UDP (SIPp in TCP mode does not bind it).
fn udp_catcher(port: u16) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

fn assert_nothing_over_udp(catcher: &UdpSocket) {
    let mut buf = [0u8; 2048];
    match catcher.recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the carrier got UDP: {other:?}"),
    }
}

/// SIPp uac (UDP) → switch → TCP trunk → SIPp uas on TCP: three calls
/// answered and hung up by the caller, all over one connection the switch
/// opened and kept.
fn calls_reach_a_tcp_trunk_over_tcp(io: &str) {
    let mut carrier = sipp_server(&["-sn", "uas", "-t", "t1", "-m", "3"]);
    let catcher = udp_catcher(carrier.port);
    let sw = Switch::start(
        &carrier_config_over("tcp", carrier.port, false, 0),
        &[("CODEB_IO", io)],
    );
    let (ok, failed) = sipp_client(sw.sip, &["-sn", "uac", "-m", "3", "-r", "3"]);
    assert_eq!((ok, failed), (3, 0), "{}", sw.metrics());
    let status = carrier.wait(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the TCP carrier completed its 3 calls: {status:?}"
    );
    assert_nothing_over_udp(&catcher);
    assert_eq!(sw.metric("codeb_sip_tcp_connects_total"), Some(1.0));
    assert_eq!(sw.metric("codeb_sip_tcp_connect_failures_total"), Some(0.0));
}

#[test]
fn calls_reach_a_tcp_trunk_over_tcp_io_uring() {
    calls_reach_a_tcp_trunk_over_tcp("auto");
}

#[test]
fn calls_reach_a_tcp_trunk_over_tcp_epoll() {
    calls_reach_a_tcp_trunk_over_tcp("epoll");
}

#[test]
fn registers_and_keeps_alive_over_tcp() {
    let carrier = sipp_server(&[
        "-sf",
        scenario("uas_trunk_register.xml").to_str().unwrap(),
        "-t",
        "t1",
    ]);
    let catcher = udp_catcher(carrier.port);
    let sw = Switch::start(&carrier_config_over("tcp", carrier.port, true, 0), &[]);
    assert!(
        wait_for(
            &sw,
            "codeb_trunk_registered{trunk=\"tr_00000000000000ca\"} 1"
        ),
        "{}",
        sw.metrics()
    );
    drop(carrier);
    let carrier = sipp_server(&[
        "-sf",
        scenario("uas_options.xml").to_str().unwrap(),
        "-t",
        "t1",
    ]);
    let catcher2 = udp_catcher(carrier.port);
    let sw2 = Switch::start(&carrier_config_over("tcp", carrier.port, false, 1), &[]);
    assert!(
        wait_for(&sw2, "codeb_trunk_up{trunk=\"tr_00000000000000ca\"} 1"),
        "{}",
        sw2.metrics()
    );
    assert_nothing_over_udp(&catcher);
    assert_nothing_over_udp(&catcher2);
}

#[test]
fn a_tcp_trunk_nobody_listens_on_is_down_without_waiting_for_timer_f() {
    // Default T1 (500 ms): Timer F would take 32 s; the refused connection
    // fails the OPTIONS at once.
    let silent = common::free_port();
    let sw = Switch::start(&carrier_config_over("tcp", silent, false, 1), &[]);
    let started = Instant::now();
    assert!(
        wait_for(&sw, "codeb_trunk_up{trunk=\"tr_00000000000000ca\"} 0"),
        "{}",
        sw.metrics()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        sw.metric("codeb_sip_tcp_connect_failures_total")
            .unwrap_or(0.0)
            >= 1.0
    );
}
