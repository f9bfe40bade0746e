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

/// Reads datagrams on `sock` until one starts with `prefix` (a request the
/// switch retransmits, or a provisional answer first, is skipped).
fn recv_starting(sock: &UdpSocket, prefix: &str) -> (String, std::net::SocketAddr) {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 8192];
    loop {
        let (n, from) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no {prefix:?}: {e}"));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with(prefix) {
            return (text, from);
        }
    }
}

/// A switch behind a 1:1 NAT listens on its private address and shows the
/// carrier its public one: in the Via, Contact, Call-ID and SDP of what it
/// sends. Its loop check knows that address as its own: the INVITE coming
/// back to it through the carrier is refused with 482.
#[test]
fn a_switch_behind_nat_shows_its_advertised_address() {
    let carrier = UdpSocket::bind("127.0.0.1:0").unwrap();
    let carrier_port = carrier.local_addr().unwrap().port();
    let sw = Switch::start(
        &carrier_config(carrier_port, false, 0),
        &[("CODEB_SIP_ADVERTISE", "198.51.100.7:5070")],
    );
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = caller.local_addr().unwrap();
    let to = sw.sip;
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let invite = format!(
        "INVITE sip:+15550003333@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-nat1\r\nMax-Forwards: 70\r\nFrom: <sip:+15550001111@{me}>;tag=n1\r\nTo: <sip:+15550003333@{to}>\r\nCall-ID: nat-1@test\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    caller.send_to(invite.as_bytes(), to).unwrap();

    let (out, _) = recv_starting(&carrier, "INVITE ");
    let head = out.split("\r\n\r\n").next().unwrap();
    assert!(
        head.contains("\r\nVia: SIP/2.0/UDP 198.51.100.7:5070;"),
        "{out}"
    );
    assert!(head.contains("@198.51.100.7:5070>"), "Contact: {out}");
    assert!(head.contains("@198.51.100.7:5070\r\n"), "Call-ID: {out}");
    assert!(out.contains("\r\nc=IN IP4 198.51.100.7\r\n"), "SDP: {out}");
    assert!(
        !head.contains(&sw.sip.to_string()),
        "the private address leaked: {out}"
    );

    // The carrier routes it back to the switch, its own Via on top.
    let looped = out.replacen(
        "\r\nVia: ",
        &format!("\r\nVia: SIP/2.0/UDP 127.0.0.1:{carrier_port};branch=z9hG4bK-back\r\nVia: "),
        1,
    );
    carrier.send_to(looped.as_bytes(), to).unwrap();
    let (answer, _) = recv_starting(&carrier, "SIP/2.0 482 ");
    assert!(answer.contains("branch=z9hG4bK-back"), "{answer}");
    assert!(!answer.contains("merged"), "refused as a loop: {answer}");
}
