//! RTP through the switch: SIPp plays a recorded PCMA call (and an RFC 4733
//! digit) from the caller, the callee's SIPp echoes its media port, and
//! the switch's media workers relay both directions; with a callee that
//! speaks only PCMU, they transcode both directions; after a REFER, the
//! relay follows the transfer target. A callee whose media port is the
//! test's own socket checks what arrives: the relayed recording byte for
//! byte (audio and digit), the transcoded one by its decoded loudness.

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
    play_recorded_call(&sw);
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
    assert_eq!(value("codeb_media_source_filters_refused_total "), 0.0);
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

/// SIPp's `uac_pcap` calling the switch's user `uas`: it plays
/// `g711a.pcap` (PCMA) and then `dtmf_2833_1.pcap` (an RFC 4733 digit).
fn play_recorded_call(sw: &Switch) {
    play(sw, &shared("testdata/sip/sipp/builtin-3.6.1/uac_pcap.xml"));
}

/// One SIPp call playing `scenario_file` against the switch, with the
/// shared recordings at `pcap/` in its working directory.
fn play(sw: &Switch, scenario_file: &std::path::Path) {
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
            scenario_file.to_str().unwrap(),
            &sw.sip.to_string(),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run sipp");
    assert!(status.success(), "the call completed: {status}");
}

/// One RTP packet: payload type, sequence, timestamp, payload.
type Rtp = (u8, u16, u32, Vec<u8>);

/// The RTP packets of a pcap file (Ethernet, IPv4, UDP), in file order.
fn pcap_rtp(name: &str) -> Vec<Rtp> {
    let d = std::fs::read(shared("testdata/sip/sipp/pcap").join(name)).unwrap();
    assert_eq!(&d[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= d.len() {
        let len = u32::from_le_bytes(d[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &d[at + 16..at + 16 + len];
        at += 16 + len;
        let ip = &frame[14..];
        let udp = &ip[usize::from(ip[0] & 0x0f) * 4..];
        out.extend(rtp(&udp[8..]));
    }
    out
}

fn rtp(data: &[u8]) -> Option<Rtp> {
    let p = codeb_media::rtp::RtpPacket::parse(data).ok()?;
    Some((
        p.payload_type(),
        p.sequence(),
        p.timestamp(),
        p.payload().to_vec(),
    ))
}

/// Collects the RTP packets arriving at `media` on a thread until the
/// flag is set; the thread gives them back.
fn listen(
    media: std::net::UdpSocket,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<Vec<Rtp>>,
) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let listener = std::thread::spawn(move || {
        let mut heard = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = media.recv(&mut buf) {
                heard.extend(rtp(&buf[..n]));
            }
        }
        heard
    });
    (done, listener)
}

/// The recorded call through the switch to a callee that answers with
/// `scenario_file` (PCMA or PCMU) and whose media port is this test's
/// socket: every RTP packet the switch sent it, in sequence order.
fn what_the_callee_heard(scenario_file: &str) -> Vec<Rtp> {
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    media
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    let port = media.local_addr().unwrap().port().to_string();
    let uas = sipp_server(&[
        "-sf",
        scenario(scenario_file).to_str().unwrap(),
        "-set",
        "mport",
        &port,
        "-m",
        "1",
    ]);
    let sw = Switch::start(
        &loopback_config(&format!("sip:uas@127.0.0.1:{}", uas.port)),
        &[("CODEB_WORKERS", "2")],
    );
    let (done, listener) = listen(media);
    play_recorded_call(&sw);
    std::thread::sleep(std::time::Duration::from_millis(300));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut heard = listener.join().unwrap();
    // Sequence order (it counts on from a random start; 16 bits do not
    // wrap in a few hundred packets unless they start near the top).
    let first = heard.first().map_or(0, |p| p.1);
    heard.sort_by_key(|p| p.1.wrapping_sub(first));
    heard
}

#[test]
fn a_relayed_recording_reaches_the_callee_byte_for_byte() {
    let heard = what_the_callee_heard("uas_pcma_at.xml");
    let sent: Vec<Rtp> = pcap_rtp("g711a.pcap")
        .into_iter()
        .chain(pcap_rtp("dtmf_2833_1.pcap"))
        .collect();
    let audio = |v: &[Rtp], pt: u8| -> Vec<Vec<u8>> {
        v.iter()
            .filter(|p| p.0 == pt)
            .map(|p| p.3.clone())
            .collect()
    };
    // Every audio payload, in order, as recorded.
    let (got, want) = (audio(&heard, 8), audio(&sent, 8));
    assert_eq!(want.len(), 236);
    assert_eq!(got.len(), want.len(), "audio packets");
    assert!(got == want, "the audio payloads differ from the recording");
    // The digit under the callee's telephone-event type, its events intact.
    let te_sent: Vec<Vec<u8>> = sent
        .iter()
        .filter(|p| p.0 != 8)
        .map(|p| p.3.clone())
        .collect();
    assert!(!te_sent.is_empty());
    assert_eq!(audio(&heard, 101), te_sent, "telephone-events");
    // One stream: sequence numbers without a gap across the two sources;
    // repeats only where the recording repeats one (its digit's end, sent
    // three times under one number).
    let repeats = |v: &[Rtp]| v.windows(2).filter(|w| w[1].1 == w[0].1).count();
    assert_eq!(repeats(&sent), 2);
    assert_eq!(repeats(&heard), repeats(&sent));
    for w in heard.windows(2) {
        let step = w[1].1.wrapping_sub(w[0].1);
        assert!(step <= 1, "{} then {}", w[0].1, w[1].1);
    }
}

#[test]
fn a_transcoded_recording_reaches_the_callee_as_the_same_sound() {
    use codeb_media::g711::Law;
    let heard = what_the_callee_heard("uas_pcmu_at.xml");
    // The recording's timeline (silences it suppressed are quiet) and the
    // callee's, 20 ms frame by 20 ms frame: the loudness of each.
    let envelope = |packets: &[Rtp], pt: u8, law: Law| -> Vec<f64> {
        let packets: Vec<&Rtp> = packets.iter().filter(|p| p.0 == pt).collect();
        let Some(t0) = packets.first().map(|p| p.2) else {
            return Vec::new();
        };
        let mut pcm = vec![0i16; 0];
        for p in &packets {
            let at = p.2.wrapping_sub(t0) as usize;
            if at > 16_000 * 60 {
                continue;
            }
            let mut s = vec![0i16; p.3.len()];
            law.decode(&p.3, &mut s);
            if pcm.len() < at + s.len() {
                pcm.resize(at + s.len(), 0);
            }
            pcm[at..at + s.len()].copy_from_slice(&s);
        }
        pcm.chunks(160)
            .map(|f| (f.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / f.len() as f64).sqrt())
            .collect()
    };
    let want = envelope(&pcap_rtp("g711a.pcap"), 8, Law::Alaw);
    let got = envelope(&heard, 0, Law::Ulaw);
    assert!(
        got.len() + 10 >= want.len(),
        "{} frames heard of {}",
        got.len(),
        want.len()
    );
    // The same loudness, frame for frame, at the best small shift (the
    // bridge's jitter buffer may start a frame or two later).
    let score = |lag: usize| -> (f64, f64) {
        let n = want.len().min(got.len().saturating_sub(lag));
        let (a, b) = (&want[..n], &got[lag..lag + n]);
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        (dot / (na * nb).max(1.0), nb / na.max(1.0))
    };
    let (corr, ratio) = (0..10)
        .map(score)
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .unwrap();
    // On a quiet machine 0.99998 and 1.006; a loaded one makes the jitter
    // buffer conceal a few late packets (0.977 seen with three suites at
    // once). Silence, noise or the wrong law are far off either bound.
    assert!(corr > 0.9, "loudness envelopes correlate at {corr}");
    assert!((0.8..1.25).contains(&ratio), "loudness ratio {ratio}");
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
    play(&sw, &scenario("uac_pcma_after_transfer.xml"));
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

/// Early media (RFC 3960): a callee that plays an announcement in its
/// 183 and never answers is heard by the caller. It was dropped: the
/// switch answered A's offer in the 183 but gave the media engine no B
/// side until a 2xx.
#[test]
fn the_callers_hear_a_callees_early_media() {
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    media
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    let mport = media.local_addr().unwrap().port().to_string();
    // The callee plays its recording from a directory with pcap/ in it.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(shared("testdata/sip/sipp/pcap"), dir.path().join("pcap")).unwrap();
    let uas_port = free_port();
    let mut uas = Command::new("sipp")
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port.to_string(),
            "-mp",
            &free_port().to_string(),
            "-nostdin",
            "-timeout",
            "30s",
            "-m",
            "1",
            "-sf",
            scenario("uas_early_media_busy.xml").to_str().unwrap(),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp is installed");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sw = Switch::start(
        &loopback_config(&format!("sip:uas@127.0.0.1:{uas_port}")),
        &[],
    );
    let (done, listener) = listen(media);
    let (ok, failed) = common::scenario_client(
        sw.sip,
        "uac_early_media_busy.xml",
        &["-set", "mport", &mport, "-m", "1"],
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let heard = listener.join().unwrap();
    let _ = uas.wait();
    assert_eq!((ok, failed), (1, 0), "183, then 486: never answered");
    // 2.5 s of the recording at 50 packets a second, less scheduling.
    assert!(heard.len() >= 60, "{} packets of early media", heard.len());
    assert!(heard.iter().all(|p| p.0 == 8), "PCMA as agreed");
}
