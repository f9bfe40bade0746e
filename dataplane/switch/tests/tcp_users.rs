//! A SIP user whose contact says `transport=tcp`, with SIPp playing a
//! PBX that listens only on TCP (`-t t1`) behind the catch-all inbound
//! route: the switch opens a connection to it and the calls flow over it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: failing loudly is the point

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{Switch, loopback_config, sipp_client, sipp_server};

/// SIPp uac (UDP, via the inbound trunk) → switch → user `uas` at a fixed
/// `;transport=tcp` contact → SIPp uas on TCP: three calls, one connection,
/// nothing to the user's port over UDP.
fn calls_reach_a_tcp_user_contact(io: &str) {
    let mut pbx = sipp_server(&["-sn", "uas", "-t", "t1", "-m", "3"]);
    // SIPp in TCP mode leaves the UDP port free: anything sent there over
    // UDP is caught.
    let catcher = UdpSocket::bind(("127.0.0.1", pbx.port)).unwrap();
    catcher.set_nonblocking(true).unwrap();
    let contact = format!("sip:uas@127.0.0.1:{};transport=tcp", pbx.port);
    let sw = Switch::start(&loopback_config(&contact), &[("CODEB_IO", io)]);
    let (ok, failed) = sipp_client(sw.sip, &["-sn", "uac", "-m", "3", "-r", "3"]);
    assert_eq!((ok, failed), (3, 0), "{}", sw.metrics());
    let status = pbx.wait(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the TCP user completed its 3 calls: {status:?}"
    );
    let mut buf = [0u8; 2048];
    match catcher.recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the user got UDP: {other:?}"),
    }
    assert_eq!(sw.metric("codeb_sip_tcp_connects_total"), Some(1.0));
    assert_eq!(sw.metric("codeb_sip_tcp_connect_failures_total"), Some(0.0));
}

#[test]
fn calls_reach_a_tcp_user_contact_io_uring() {
    calls_reach_a_tcp_user_contact("auto");
}

#[test]
fn calls_reach_a_tcp_user_contact_epoll() {
    calls_reach_a_tcp_user_contact("epoll");
}
