//! RTP through the switch: SIPp plays a recorded PCMA call (and an RFC 4733
//! digit) from the caller, the callee's SIPp echoes its media port, and
//! the switch's media workers relay both directions; with a callee that
//! speaks only PCMU, they transcode both directions; after a REFER, the
//! relay follows the transfer target.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: failing loudly is the point

mod common;

use std::process::{Command, Stdio};

use common::{Switch, free_port, loopback_config, scenario, shared, sipp_server};

#[test]
fn a_recorded_call_is_relayed_both_ways() {
    let relayed = recorded_call_through("uas_pcma_echo.xml");
    assert!(
        (480.0..=492.0).contains(&relayed),
        "packets relayed both ways through the switch: {relayed}"
    );
}

#[test]
fn a_recorded_pcma_call_to_a_pcmu_callee_is_transcoded_both_ways() {
    // The recording is 236 packets with contiguous sequence numbers over
    // 7.05 s of timestamps (the source suppressed its silences): relayed,
    // it is 236 packets each way; transcoded, the bridge sends a frame every
    // 20 ms of the stream's timeline, its silences filled (about 352 each
    // way), plus the digit's events and the legs' RTCP reports.
    let sent = recorded_call_through("uas_pcmu_echo.xml");
    assert!(
        (680.0..=800.0).contains(&sent),
        "packets sent both ways through the transcoding bridge: {sent}"
    );
}

/// Places the recorded call to a callee running `callee` with its media
/// echoed; returns the packets the switch's media workers sent.
fn recorded_call_through(callee: &str) -> f64 {
    let media_port = free_port();
    let uas = sipp_server(&[
        "-sf",
        scenario(callee).to_str().unwrap(),
        "-rtp_echo",
        "-mp",
        &media_port.to_string(),
    ]);
    let sw = Switch::start(
        &loopback_config(&format!("sip:uas@127.0.0.1:{}", uas.port)),
        &[("CODEB_WORKERS", "2")],
    );
    // The scenario names its recordings relative to its working directory.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(shared("testdata/sip/sipp/pcap"), dir.path().join("pcap")).unwrap();
    let status = Command::new("sipp")
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
            "-m",
            "1",
            "-sf",
            shared("testdata/sip/sipp/builtin-3.6.1/uac_pcap.xml")
                .to_str()
                .unwrap(),
            &sw.sip.to_string(),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run sipp");
    assert!(status.success(), "the call completed: {status}");
    // The caller plays g711a.pcap (236 RTP packets) and dtmf_2833_1.pcap
    // (10): 246 packets towards the callee, echoed back, 492 in all; on
    // loopback nothing should be lost.
    let relayed = sw
        .metric("codeb_media_relayed_packets_total")
        .expect("relay counter");
    assert_eq!(sw.metric("codeb_media_ports_in_use"), Some(0.0));
    assert_eq!(sw.metric("codeb_sip_dialogs "), Some(0.0));
    let text = sw.metrics();
    // The media workers' own IO counters: every packet relayed (or
    // transcoded) was sent, none refused; steering is off by default.
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    let (media_in, media_out) = (
        value("codeb_media_datagrams_in_total "),
        value("codeb_media_datagrams_out_total "),
    );
    assert!(
        media_in > 0.0 && media_out >= relayed,
        "in {media_in}, out {media_out}, relayed {relayed}"
    );
    assert_eq!(value("codeb_media_send_errors_total "), 0.0);
    assert_eq!(value("codeb_media_datagrams_truncated_total "), 0.0);
    assert_eq!(value("codeb_media_port_steering_workers "), 0.0);
    // The caller's RFC 4733 digit is reported on its leg, and again on the
    // callee's when the echo brings it back: the callee got it under the
    // telephone-event payload type it agreed, or its leg would not take
    // it as a key.
    assert_eq!(
        value("codeb_dtmf_digits_total{source=\"telephone-event\"} "),
        2.0,
        "{text}"
    );
    assert_eq!(value("codeb_dtmf_digits_total{source=\"inband\"} "), 0.0);
    for phase in ["routing", "answered", "confirmed", "ending"] {
        let line = format!("codeb_calls{{phase=\"{phase}\"}} 0");
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    relayed
}

/// The callee REFERs the caller at once to the SIP user `transfer`, whose
/// phone answers PCMA and echoes its media port. The caller's recording,
/// played once the transfer is done, comes back from the target: the
/// relay follows the new leg (were it still pointing at the old callee,
/// which echoes nothing, about half as many packets would pass).
#[test]
fn after_a_refer_the_relay_follows_the_transfer_target() {
    let uas = sipp_server(&[
        "-sf",
        scenario("uas_refer.xml").to_str().unwrap(),
        "-m",
        "1",
    ]);
    let media_port = free_port();
    let target = sipp_server(&[
        "-sf",
        scenario("uas_transfer_echo.xml").to_str().unwrap(),
        "-rtp_echo",
        "-mp",
        &media_port.to_string(),
        "-m",
        "1",
    ]);
    let config = format!(
        "{}\n[[users]]\nname = \"transfer\"\ncontact = \"sip:transfer@127.0.0.1:{}\"\n",
        loopback_config(&format!("sip:uas@127.0.0.1:{}", uas.port)),
        target.port
    );
    let sw = Switch::start(&config, &[("CODEB_WORKERS", "2")]);
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(shared("testdata/sip/sipp/pcap"), dir.path().join("pcap")).unwrap();
    let status = Command::new("sipp")
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
            "-m",
            "1",
            "-sf",
            scenario("uac_pcma_after_transfer.xml").to_str().unwrap(),
            &sw.sip.to_string(),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run sipp");
    assert!(status.success(), "the call completed: {status}");
    assert_eq!(
        sw.metric("codeb_sip_refer_transfers_total{result=\"transferred\"}"),
        Some(1.0)
    );
    // 236 packets towards the target, echoed back: 472.
    let relayed = sw
        .metric("codeb_media_relayed_packets_total")
        .expect("relay counter");
    assert!(
        (460.0..=480.0).contains(&relayed),
        "packets relayed both ways between the caller and the target: {relayed}"
    );
    assert_eq!(sw.metric("codeb_media_ports_in_use"), Some(0.0));
    assert_eq!(sw.metric("codeb_sip_dialogs "), Some(0.0));
}
