//! The engine on loopback with real sockets: two phones exchange RTP
//! through a call's two legs.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use codeb_media::rtp::{RtpHeader, RtpPacket};

use super::*;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn engines(ports: &str) -> Vec<MediaEngine> {
    engines_reporting(ports, Duration::from_secs(5))
}

/// Both IO backends, with RTCP reports every `rtcp_interval`.
fn engines_reporting(ports: &str, rtcp_interval: Duration) -> Vec<MediaEngine> {
    [true, false]
        .into_iter()
        .map(|force_epoll| {
            MediaEngine::start(
                &MediaSettings {
                    workers: 2,
                    bind_ip: LO,
                    ports: ports.parse().unwrap(),
                    inactivity: Duration::from_secs(1),
                    rtcp_interval,
                    force_epoll,
                    coalesce: Duration::from_micros(100),
                    record_dir: None,
                    steer: true,
                    flood_pps: super::DEFAULT_FLOOD_PPS,
                },
                None,
            )
            .unwrap()
        })
        .collect()
}

/// One io_uring worker on `ports`, reports every 5 s, no recording.
fn one_worker(ports: &str, inactivity: Duration) -> MediaSettings {
    MediaSettings {
        workers: 1,
        bind_ip: LO,
        ports: ports.parse().unwrap(),
        inactivity,
        rtcp_interval: Duration::from_secs(5),
        force_epoll: false,
        coalesce: Duration::from_micros(100),
        record_dir: None,
        steer: true,
        flood_pps: super::DEFAULT_FLOOD_PPS,
    }
}

fn phone() -> UdpSocket {
    let s = UdpSocket::bind((LO, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

fn remote(s: &UdpSocket, pt: u8) -> Remote {
    Remote {
        addr: s.local_addr().unwrap(),
        payload_type: pt,
        codec: match pt {
            0 => CodecKind::Pcmu,
            8 => CodecKind::Pcma,
            _ => CodecKind::Opus,
        },
        clock_rate: 8000,
        dtmf_payload_type: Some(101),
        dtmf_clock_rate: 8000,
        we_send: true,
        times_out: true,
        signalling: None,
    }
}

fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 12 + payload.len()];
    RtpHeader {
        marker: false,
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc,
    }
    .write_packet(payload, &mut out)
    .unwrap();
    out
}

fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    let (n, from) = s.recv_from(&mut buf).ok()?;
    Some((buf[..n].to_vec(), from))
}

/// A call with both remotes set: A speaks PCMU as 0, B gets it as 0.
/// A call with both remotes set and its media up (see [`media_up`]).
#[allow(clippy::type_complexity)]
fn call(
    engine: &mut MediaEngine,
) -> (
    OpenedMedia,
    UdpSocket,
    UdpSocket,
    [SocketAddr; 2],
    (u64, u64),
) {
    let opened = engine.open().unwrap();
    let (a, b) = (phone(), phone());
    engine
        .set_remote(opened.handle, LegSide::A, remote(&a, 0))
        .unwrap();
    engine
        .set_remote(opened.handle, LegSide::B, remote(&b, 0))
        .unwrap();
    let ours = [
        SocketAddr::new(LO, opened.ports[0]),
        SocketAddr::new(LO, opened.ports[1]),
    ];
    let probes = media_up(&a, &b, ours[0], 0);
    (opened, a, b, ours, probes)
}

/// The worker applies remotes on its next turn, and a packet that beats
/// them is dropped (as one arriving before the answer would be): probes
/// from `a` (payload type `pt`) until one reaches `b`, then drains the
/// rest. Returns (probes sent, probes relayed), which the leg counters
/// include.
fn media_up(a: &UdpSocket, b: &UdpSocket, to: SocketAddr, pt: u8) -> (u64, u64) {
    b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut sent, mut relayed) = (0u64, 0u64);
    loop {
        a.send_to(&packet(pt, 60_000, 0, 0x7777, &[0; 20]), to)
            .unwrap();
        sent += 1;
        if recv(b).is_some() {
            relayed += 1;
            break;
        }
        assert!(Instant::now() < deadline, "the call's media never came up");
    }
    b.set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    while recv(b).is_some() {
        relayed += 1;
    }
    b.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    (sent, relayed)
}

#[test]
fn relays_both_ways_as_one_continuous_stream_per_leg() {
    for mut engine in engines("31000-31099") {
        let (opened, a, b, ours, (probes, probes_relayed)) = call(&mut engine);
        assert_ne!(opened.ports[0], opened.ports[1]);
        assert!(opened.ports.iter().all(|p| p % 2 == 0), "even RTP ports");
        let mut last: Option<(u16, u32, u32)> = None;
        for i in 0..20u16 {
            // A's source changes mid-call (a new SSRC and numbering, as
            // when its own media server switches): B must not notice.
            let (ssrc, base) = if i < 10 { (0x1111, 0) } else { (0x2222, 5000) };
            let p = packet(0, base + i, u32::from(base + i) * 160, ssrc, &[0x55; 160]);
            a.send_to(&p, ours[0]).unwrap();
            let (got, from) = recv(&b).expect("relayed to B");
            assert_eq!(from, ours[1], "B hears us from B's leg port");
            let pkt = RtpPacket::parse(&got).unwrap();
            assert_eq!(pkt.payload(), &[0x55; 160]);
            assert_eq!(pkt.payload_type(), 0);
            if let Some((seq, ts, ssrc)) = last {
                assert_eq!(pkt.ssrc(), ssrc, "one SSRC towards B");
                assert_eq!(pkt.sequence(), seq.wrapping_add(1), "packet {i}");
                assert!(pkt.timestamp().wrapping_sub(ts) >= 160, "packet {i}");
            }
            last = Some((pkt.sequence(), pkt.timestamp(), pkt.ssrc()));
            std::thread::sleep(Duration::from_millis(2));
        }
        b.send_to(&packet(0, 7, 1120, 0x3333, &[0xAA; 160]), ours[1])
            .unwrap();
        let (got, from) = recv(&a).expect("relayed to A");
        assert_eq!(from, ours[0]);
        assert_eq!(RtpPacket::parse(&got).unwrap().payload(), &[0xAA; 160]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while engine.relayed() < 21 {
            assert!(Instant::now() < deadline, "relayed {}", engine.relayed());
            std::thread::sleep(Duration::from_millis(1));
        }
        // The workers' IO counters (metrics) saw every datagram both ways,
        // and nothing failed.
        let want_in = 21 + probes;
        let want_out = 21 + probes_relayed;
        // Published with the worker's housekeeping, about once a second.
        let deadline = Instant::now() + Duration::from_secs(5);
        while engine.io().datagrams_in < want_in || engine.io().datagrams_out < want_out {
            assert!(Instant::now() < deadline, "{:?}", engine.io());
            std::thread::sleep(Duration::from_millis(1));
        }
        let io = engine.io();
        assert_eq!((io.truncated, io.send_errors, io.steered_strays), (0, 0, 0));
        assert!(io.steering_workers <= engine.workers());
        engine.close(opened.handle, opened.ports);
        let closed = wait_event(&mut engine);
        let MediaEvent::Closed { stats, .. } = closed else {
            panic!("{closed:?}")
        };
        assert_eq!(stats[0].rx_packets, 20 + probes);
        assert_eq!(stats[1].tx_packets, 20 + probes_relayed);
        assert_eq!(stats[1].rx_packets, 1);
    }
}

/// A flood at one leg's port (a stranger's datagrams, past
/// `flood_pps` a second) pauses that port: the worker stops reading it,
/// another call on the same worker flows on, and after the pause the
/// flooded leg is read again (what queued meanwhile is dropped, not
/// relayed seconds late). Both IO backends.
#[test]
fn a_flooded_port_is_paused_while_other_calls_flow_then_read_again() {
    for (force_epoll, ports) in [(true, "31900-31949"), (false, "31950-31999")] {
        let mut engine = MediaEngine::start(
            &MediaSettings {
                force_epoll,
                flood_pps: 300,
                ..one_worker(ports, Duration::from_secs(60))
            },
            None,
        )
        .unwrap();
        let (one, a1, b1, ours1, _) = call(&mut engine);
        let (two, a2, b2, ours2, _) = call(&mut engine);
        let attacker = phone();
        for i in 0..2_000u16 {
            let _ = attacker.send_to(&packet(0, i, 0, 0xbad, &[9; 160]), ours1[0]);
        }
        // Published with the worker's housekeeping (about once a second):
        // seen up to a second after the pause began.
        let deadline = Instant::now() + Duration::from_secs(5);
        let io = loop {
            let io = engine.io();
            if io.flood_pauses > 0 {
                break io;
            }
            assert!(Instant::now() < deadline, "never paused: {io:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        let paused_at = Instant::now();
        assert_eq!((io.flood_pauses, io.flooded_ports), (1, 1));
        // The other call flows on.
        a2.send_to(&packet(0, 1, 160, 0x22, &[0x22; 160]), ours2[0])
            .unwrap();
        let (got, _) = recv(&b2).expect("the other call is relayed");
        assert_eq!(RtpPacket::parse(&got).unwrap().payload(), &[0x22; 160]);
        // The flooded leg is not read meanwhile: its caller's audio waits
        // and is dropped with the flood.
        a1.send_to(&packet(0, 1, 160, 0x7777, &[0x11; 160]), ours1[0])
            .unwrap();
        b1.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while let Some((got, _)) = recv(&b1) {
            let pkt = RtpPacket::parse(&got).unwrap();
            assert_ne!(pkt.payload(), &[0x11; 160], "read while paused");
        }
        // Read again after the pause.
        std::thread::sleep(
            (paused_at + Duration::from_millis(2_300)).saturating_duration_since(Instant::now()),
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut seq = 2u16;
        loop {
            a1.send_to(
                &packet(0, seq, u32::from(seq) * 160, 0x7777, &[0x33; 160]),
                ours1[0],
            )
            .unwrap();
            seq += 1;
            let relayed = recv(&b1)
                .and_then(|(got, _)| RtpPacket::parse(&got).ok().map(|p| p.payload().to_vec()));
            match relayed {
                Some(p) if p == [0x33; 160] => break,
                Some(p) => assert_ne!(p, [0x11; 160], "audio from the pause relayed late"),
                None => {}
            }
            assert!(
                Instant::now() < deadline,
                "the flooded leg was not read again"
            );
        }
        assert_eq!(engine.io().flood_pauses, 1);
        engine.close(one.handle, one.ports);
        engine.close(two.handle, two.ports);
    }
}

/// A socket on loopback address `ip` (127.0.0.x: a far end or a stranger
/// the switch tells apart by IP), reading with a 500 ms timeout.
fn on_ip(ip: [u8; 4]) -> UdpSocket {
    let s = UdpSocket::bind((Ipv4Addr::from(ip), 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// One worker on `ports`, each port on its own socket (no steering: a
/// steered port cannot take a source filter).
fn unsteered(force_epoll: bool, ports: &str) -> MediaEngine {
    MediaEngine::start(
        &MediaSettings {
            force_epoll,
            steer: false,
            ..one_worker(ports, Duration::from_secs(60))
        },
        None,
    )
    .unwrap()
}

/// A stranger on another IP sends `ours` one datagram, which the worker
/// turns away (and so filters the port), then `flood` more at once.
fn flood_from_a_stranger(ours: SocketAddr, flood: u16) {
    let stranger = on_ip([127, 0, 0, 3]);
    stranger
        .send_to(&packet(0, 0, 0, 0xbad, &[9; 160]), ours)
        .unwrap();
    // The worker's turn with it, and the filter set after it, are done
    // long before this.
    std::thread::sleep(Duration::from_millis(100));
    for i in 1..=flood {
        let _ = stranger.send_to(&packet(0, i, 0, 0xbad, &[9; 160]), ours);
    }
}

/// A leg that [`flood_from_a_stranger`] flooded: the worker turned away
/// the first datagram (a few more only on a host too loaded to run its
/// turn in 100 ms), the kernel the flood.
fn kernel_took_the_flood(leg: &LegStats, flood: u16, force_epoll: bool) {
    assert!(
        (1..=16).contains(&leg.dropped_source),
        "force_epoll {force_epoll}: {leg:?}"
    );
    assert!(
        leg.dropped_kernel + leg.dropped_source > u64::from(flood),
        "force_epoll {force_epoll}: {leg:?}"
    );
}

/// Once a stranger's datagram has been turned away from a leg whose
/// source is locked, the kernel drops what other IPs send to its ports: a
/// flood from another address costs the worker a datagram or two, does
/// not pause the port, and the far end's audio flows on through it; the
/// kernel's count comes with the call's. Where the leg learns a new far
/// end, the filter goes before its first packet. Both IO backends, each
/// port on its own socket (a steered port cannot filter).
#[test]
fn a_locked_legs_port_takes_nothing_from_other_ips() {
    const FLOOD: u16 = 5_000;
    for (force_epoll, ports) in [(true, "32100-32149"), (false, "32150-32199")] {
        let mut engine = unsteered(force_epoll, ports);
        let opened = engine.open().unwrap();
        let (a, b) = (on_ip([127, 0, 0, 2]), phone());
        engine
            .set_remote(opened.handle, LegSide::A, remote(&a, 0))
            .unwrap();
        engine
            .set_remote(opened.handle, LegSide::B, remote(&b, 0))
            .unwrap();
        let ours = [
            SocketAddr::new(LO, opened.ports[0]),
            SocketAddr::new(LO, opened.ports[1]),
        ];
        // The far ends are known to the worker before A speaks.
        std::thread::sleep(Duration::from_millis(50));
        // A's source locks (five packets).
        let mut seq = 0u16;
        let mut speak = |payload: u8| {
            a.send_to(
                &packet(0, seq, u32::from(seq) * 160, 0xa, &[payload; 160]),
                ours[0],
            )
            .unwrap();
            seq += 1;
        };
        for _ in 0..6 {
            speak(1);
            recv(&b).expect("relayed");
        }
        flood_from_a_stranger(ours[0], FLOOD);
        speak(2);
        let (got, _) = recv(&b).expect("A's audio through the flood");
        assert_eq!(RtpPacket::parse(&got).unwrap().payload(), &[2; 160]);
        // Over a second: a pause would have been published.
        std::thread::sleep(Duration::from_millis(1_300));
        assert_eq!(engine.io().flood_pauses, 0, "force_epoll {force_epoll}");
        assert_eq!(
            engine.io().filters_refused,
            0,
            "the kernel took the filter: force_epoll {force_epoll}"
        );
        // A new far end for A: learned again, from anywhere, at once.
        let moved = on_ip([127, 0, 0, 4]);
        engine
            .set_remote(opened.handle, LegSide::A, remote(&moved, 0))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        moved
            .send_to(&packet(0, 500, 80_000, 0xb, &[3; 160]), ours[0])
            .unwrap();
        let (got, _) = recv(&b).expect("the moved far end's first packet");
        assert_eq!(RtpPacket::parse(&got).unwrap().payload(), &[3; 160]);
        engine.close(opened.handle, opened.ports);
        let MediaEvent::Closed { stats, .. } = wait_event(&mut engine) else {
            panic!()
        };
        kernel_took_the_flood(&stats[0], FLOOD, force_epoll);
        assert_eq!(stats[0].rx_packets, 7 + 1, "{:?}", stats[0]);
    }
}

fn wait_event(engine: &mut MediaEngine) -> MediaEvent {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(e) = engine.poll_event() {
            return e;
        }
        assert!(Instant::now() < deadline, "no media event");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_stranger_cannot_inject_once_the_source_is_learned() {
    for mut engine in engines("31100-31199") {
        let (opened, a, b, ours, (probes, _)) = call(&mut engine);
        for i in 0..6u16 {
            a.send_to(&packet(0, i, u32::from(i) * 160, 9, &[1; 160]), ours[0])
                .unwrap();
            recv(&b).expect("relayed");
        }
        let stranger = phone();
        stranger
            .send_to(&packet(0, 100, 16_000, 9, &[2; 160]), ours[0])
            .unwrap();
        b.set_read_timeout(Some(Duration::from_millis(150)))
            .unwrap();
        assert!(recv(&b).is_none(), "injected audio reached B");
        // Garbage is counted, never relayed, never fatal.
        for junk in [&b"\x00\x01"[..], &[0xff; 40][..], &[0x80; 3][..]] {
            a.send_to(junk, ours[0]).unwrap();
        }
        assert!(recv(&b).is_none());
        engine.close(opened.handle, opened.ports);
        let MediaEvent::Closed { stats, .. } = wait_event(&mut engine) else {
            panic!()
        };
        assert_eq!(stats[0].dropped_source, 1);
        assert!(stats[0].dropped_invalid >= 2, "{:?}", stats[0]);
        assert_eq!(stats[0].rx_packets, 6 + probes);
    }
}

#[test]
fn payload_types_are_mapped_per_leg() {
    for mut engine in engines("31200-31299") {
        let opened = engine.open().unwrap();
        let (a, b) = (phone(), phone());
        let ours = SocketAddr::new(LO, opened.ports[0]);
        // Same codec, different dynamic numbers (opus 111 on A, 96 on B),
        // and telephone-event 101 on A, 97 on B; comfort noise passes, a
        // static codec neither agreed to (G.729, PCMU) does not.
        let ra = Remote {
            dtmf_payload_type: Some(101),
            dtmf_clock_rate: 8000,
            ..remote(&a, 111)
        };
        let rb = Remote {
            dtmf_payload_type: Some(97),
            dtmf_clock_rate: 8000,
            ..remote(&b, 96)
        };
        engine.set_remote(opened.handle, LegSide::A, ra).unwrap();
        engine.set_remote(opened.handle, LegSide::B, rb).unwrap();
        media_up(&a, &b, ours, 111);
        for (i, (pt, want)) in [
            (111, Some(96)),
            (101, Some(97)),
            (13, Some(13)),
            (18, None),
            (0, None),
            (120, None),
        ]
        .into_iter()
        .enumerate()
        {
            let seq = u16::try_from(i).unwrap();
            a.send_to(&packet(pt, seq, u32::from(seq) * 960, 5, &[3; 20]), ours)
                .unwrap();
            b.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let got = recv(&b).map(|(p, _)| RtpPacket::parse(&p).unwrap().payload_type());
            assert_eq!(got, want, "PT {pt}");
        }
        engine.close(opened.handle, opened.ports);
    }
}

#[test]
fn a_quiet_call_is_reported_and_ports_are_reused() {
    // Two pairs per call, one worker's shard of four pairs... two calls.
    let mut engine =
        MediaEngine::start(&one_worker("31300-31307", Duration::from_millis(300)), None).unwrap();
    let first = engine.open().unwrap();
    let second = engine.open().unwrap();
    assert!(matches!(engine.open(), Err(MediaError::NoPorts)));
    // Only a routed call (both far ends known) can go quiet: the second,
    // still "ringing", is never reported.
    let (a, b) = (phone(), phone());
    engine
        .set_remote(first.handle, LegSide::A, remote(&a, 0))
        .unwrap();
    engine
        .set_remote(first.handle, LegSide::B, remote(&b, 0))
        .unwrap();
    let MediaEvent::Inactive { handle, .. } = wait_event(&mut engine) else {
        panic!()
    };
    assert_eq!(handle, first.handle);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        engine.poll_event().is_none(),
        "reported once, the other never"
    );
    engine.close(first.handle, first.ports);
    // The freed ports come back (once the worker has closed them).
    let deadline = Instant::now() + Duration::from_secs(5);
    let third = loop {
        match engine.open() {
            Ok(o) => break o,
            Err(MediaError::NoPorts) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(engine.calls(), 2);
    assert_eq!(engine.ports_in_use(), 4);
    engine.close(second.handle, second.ports);
    engine.close(third.handle, third.ports);
}

/// A call opened with one leg (an AI call: the engine is the other
/// party) holds one pair. The leg it gets later (a transfer to a person)
/// relays both ways like any other, and its port goes back with the
/// call's. A pair bound here (a shard too small to bind ahead) and one
/// the worker bound ahead.
#[test]
fn a_leg_added_later_relays_and_its_port_goes_back_with_the_call() {
    for (ports, ahead) in [("36000-36007", false), ("36100-37999", true)] {
        let mut engine =
            MediaEngine::start(&one_worker(ports, Duration::from_secs(60)), None).unwrap();
        let (handle, b_port) = engine.open_leg(LegSide::B).unwrap();
        assert_eq!(engine.ports_in_use(), 1, "{ports}");
        let (a, b) = (phone(), phone());
        engine
            .set_remote(handle, LegSide::B, remote(&b, 0))
            .unwrap();
        let ready = if ahead {
            // Some of the batch may be busy (another test's socket on an
            // ephemeral port in the range): one bound ahead is enough.
            let deadline = Instant::now() + Duration::from_secs(5);
            while engine.ready_ports().is_empty() {
                assert!(Instant::now() < deadline, "the worker never bound ahead");
                std::thread::sleep(Duration::from_millis(5));
            }
            engine.ready_ports()
        } else {
            Vec::new()
        };
        let a_port = engine.add_leg(handle, LegSide::A).unwrap();
        if ahead {
            assert_eq!(a_port, ready[0], "the oldest pair bound ahead");
        }
        assert_ne!(a_port, b_port);
        assert_eq!(engine.ports_in_use(), 2, "{ports}");
        engine
            .set_remote(handle, LegSide::A, remote(&a, 0))
            .unwrap();
        let ours = [SocketAddr::new(LO, a_port), SocketAddr::new(LO, b_port)];
        media_up(&a, &b, ours[0], 0);
        b.send_to(&packet(0, 7, 1120, 0x3333, &[0xAA; 160]), ours[1])
            .unwrap();
        let (got, from) = recv(&a).expect("relayed to the added leg");
        assert_eq!(
            (from, RtpPacket::parse(&got).unwrap().payload()),
            (ours[0], &[0xAA; 160][..])
        );
        engine.close(handle, [a_port, b_port]);
        let MediaEvent::Closed { stats, .. } = wait_event(&mut engine) else {
            panic!()
        };
        assert!(
            stats[0].tx_packets >= 1 && stats[1].tx_packets >= 1,
            "{stats:?}"
        );
        assert_eq!(engine.ports_in_use(), 0, "{ports}");
    }
}

/// With no port free on any shard the call keeps its one leg (and the
/// caller is told), and it gets one once a port comes back.
#[test]
fn a_leg_with_no_port_left_is_refused_until_one_is_free() {
    // Two pairs: two one-leg calls take them.
    let mut engine =
        MediaEngine::start(&one_worker("38000-38003", Duration::from_secs(60)), None).unwrap();
    let (first, first_port) = engine.open_leg(LegSide::A).unwrap();
    let (second, second_port) = engine.open_leg(LegSide::A).unwrap();
    assert!(matches!(
        engine.add_leg(first, LegSide::B),
        Err(MediaError::NoPorts)
    ));
    assert_eq!(engine.ports_in_use(), 2);
    engine.close(second, [second_port]);
    // The freed port comes back once the worker has closed its sockets.
    let deadline = Instant::now() + Duration::from_secs(5);
    let b_port = loop {
        match engine.add_leg(first, LegSide::B) {
            Ok(p) => break p,
            Err(MediaError::NoPorts) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(b_port, second_port);
    let (a, b) = (phone(), phone());
    engine.set_remote(first, LegSide::A, remote(&a, 0)).unwrap();
    engine.set_remote(first, LegSide::B, remote(&b, 0)).unwrap();
    media_up(&a, &b, SocketAddr::new(LO, first_port), 0);
    engine.close(first, [first_port, b_port]);
    assert_eq!(engine.ports_in_use(), 0);
}

/// A leg is added from the call's own worker's shard when it can be;
/// when that shard is full it comes from another worker's, relays like any
/// other, and its port goes back to that shard.
#[test]
fn a_leg_comes_from_another_shard_when_its_workers_is_full() {
    // Two workers, two pairs each: worker 0 has 38100 and 38102, worker 1
    // 38104 and 38106.
    let settings = MediaSettings {
        workers: 2,
        ..one_worker("38100-38107", Duration::from_secs(60))
    };
    let mut engine = MediaEngine::start(&settings, None).unwrap();
    // Calls go to the least-loaded worker: 0, 1, 0.
    let (first, first_port) = engine.open_leg(LegSide::A).unwrap();
    let (second, second_port) = engine.open_leg(LegSide::A).unwrap();
    let (third, third_port) = engine.open_leg(LegSide::A).unwrap();
    assert_eq!(
        (first.worker, second.worker, third.worker),
        (0, 1, 0),
        "{first_port} {second_port} {third_port}"
    );
    let b_port = engine.add_leg(first, LegSide::B).unwrap();
    assert_eq!(b_port, 38106, "worker 1's free pair");
    assert_eq!(engine.ports_in_use(), 4);
    assert!(
        matches!(engine.add_leg(second, LegSide::B), Err(MediaError::NoPorts)),
        "no shard has a pair left"
    );
    // The borrowed pair carries the call's B leg, both ways.
    let (a, b) = (phone(), phone());
    engine.set_remote(first, LegSide::A, remote(&a, 0)).unwrap();
    engine.set_remote(first, LegSide::B, remote(&b, 0)).unwrap();
    media_up(&a, &b, SocketAddr::new(LO, first_port), 0);
    media_up(&b, &a, SocketAddr::new(LO, b_port), 0);
    // Closed, its pair is worker 1's again: worker 1's next leg takes it
    // once the worker has closed the sockets.
    engine.close(first, [first_port, b_port]);
    assert_eq!(engine.ports_in_use(), 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        match engine.add_leg(second, LegSide::B) {
            Ok(p) => break p,
            Err(MediaError::NoPorts) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(again, 38106, "back in worker 1's shard");
    engine.close(second, [second_port, again]);
    engine.close(third, [third_port]);
    assert_eq!(engine.ports_in_use(), 0);
}

#[test]
fn calls_take_pairs_the_worker_bound_ahead() {
    // One worker with 1,000 pairs: room to bind ahead.
    let mut engine =
        MediaEngine::start(&one_worker("32000-33999", Duration::from_secs(60)), None).unwrap();
    assert!(
        engine.ready_ports().is_empty(),
        "nothing is bound before a call"
    );
    let first = engine.open().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.ready_ports().len() < PREBIND_BATCH {
        assert!(Instant::now() < deadline, "the worker never bound ahead");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready = engine.ready_ports();
    assert!(!ready.contains(&first.ports[0]) && !ready.contains(&first.ports[1]));
    let (second, a, b, ours, _) = call(&mut engine);
    assert_eq!(
        second.ports[..],
        ready[..2],
        "the second call took the oldest pairs bound ahead"
    );
    for port in second.ports {
        for p in [port, port + 1] {
            let taken = UdpSocket::bind(SocketAddr::new(LO, p)).unwrap_err();
            assert_eq!(taken.kind(), io::ErrorKind::AddrInUse, "port {p} is ours");
        }
    }
    // The prebound pairs relay like any others, both ways.
    a.send_to(&packet(0, 1, 160, 0x1111, &[0x55; 160]), ours[0])
        .unwrap();
    let (got, from) = recv(&b).expect("relayed to B");
    assert_eq!(
        (from, RtpPacket::parse(&got).unwrap().payload()),
        (ours[1], &[0x55; 160][..])
    );
    b.send_to(&packet(0, 7, 1120, 0x3333, &[0xAA; 160]), ours[1])
        .unwrap();
    let (got, from) = recv(&a).expect("relayed to A");
    assert_eq!(
        (from, RtpPacket::parse(&got).unwrap().payload()),
        (ours[0], &[0xAA; 160][..])
    );
    // Only the calls' ports count as in use, not those bound ahead.
    assert_eq!(engine.ports_in_use(), 4);
    engine.close(first.handle, first.ports);
    engine.close(second.handle, second.ports);
    assert_eq!(engine.ports_in_use(), 0);
}

#[test]
fn deferred_wakes_lose_no_command() {
    for mut engine in engines("31400-31499") {
        engine.set_deferred_wakes(true);
        let opened = engine.open().unwrap();
        let (a, b) = (phone(), phone());
        engine
            .set_remote(opened.handle, LegSide::A, remote(&a, 0))
            .unwrap();
        engine
            .set_remote(opened.handle, LegSide::B, remote(&b, 0))
            .unwrap();
        engine.wake_workers();
        media_up(&a, &b, SocketAddr::new(LO, opened.ports[0]), 0);
        engine.close(opened.handle, opened.ports);
        engine.wake_workers();
        let closed = wait_event(&mut engine);
        assert!(matches!(closed, MediaEvent::Closed { handle, .. } if handle == opened.handle));
    }
}

#[test]
fn port_ranges_shard_into_whole_pairs() {
    let s = shards("20000-20099".parse().unwrap(), 3);
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].first, 20000);
    assert!(s.iter().all(|r| r.first % 2 == 0));
    assert_eq!(s[2].last, 20099);
    for w in s.windows(2) {
        assert_eq!(w[0].last + 1, w[1].first);
    }
    // More workers than pairs: one shard per pair.
    assert_eq!(shards("20000-20003".parse().unwrap(), 8).len(), 2);
}

/// A call whose leg A (the far end `a`) speaks PCMU and leg B (`b`)
/// PCMA, bridged by a transcoding pipeline; its ports, as addresses.
fn transcoded(
    engine: &mut MediaEngine,
    a: &UdpSocket,
    b: &UdpSocket,
) -> (OpenedMedia, [SocketAddr; 2]) {
    use codeb_media::codec::CodecSpec;
    use codeb_media::pipeline::LegConfig;
    let opened = engine.open().unwrap();
    let ours = [
        SocketAddr::new(LO, opened.ports[0]),
        SocketAddr::new(LO, opened.ports[1]),
    ];
    let mut la = LegConfig::new(CodecSpec::pcmu(), 0xA);
    la.remote_rtp = Some(a.local_addr().unwrap());
    let mut lb = LegConfig::new(CodecSpec::pcma(), 0xB);
    lb.remote_rtp = Some(b.local_addr().unwrap());
    engine
        .set_remote(opened.handle, LegSide::A, remote(a, 0))
        .unwrap();
    engine
        .set_remote(opened.handle, LegSide::B, remote(b, 8))
        .unwrap();
    engine
        .set_bridge(Instant::now(), opened.handle, Some((la, lb)))
        .unwrap();
    (opened, ours)
}

#[test]
fn legs_on_different_codecs_are_transcoded_and_back_to_relay_when_they_agree() {
    use codeb_media::g711::Law;
    for mut engine in engines("31500-31599") {
        let (a, b) = (phone(), phone());
        let (opened, ours) = transcoded(&mut engine, &a, &b);
        // A talks PCMU (a 400 Hz tone), paced; B must hear PCMA carrying
        // the same audio.
        let tone: Vec<i16> = (0..160)
            .map(|i| ((i as f64 * std::f64::consts::TAU * 400.0 / 8000.0).sin() * 8000.0) as i16)
            .collect();
        let mut ulaw = vec![0u8; 160];
        Law::Ulaw.encode(&tone, &mut ulaw);
        let mut heard = Vec::new();
        for i in 0..25u16 {
            let p = packet(0, 100 + i, u32::from(i) * 160, 0x5151, &ulaw);
            a.send_to(&p, ours[0]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            b.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = b.recv_from(&mut buf) {
                assert_eq!(from, ours[1]);
                if let Ok(pkt) = RtpPacket::parse(&buf[..n]) {
                    heard.push((pkt.payload_type(), pkt.payload().to_vec()));
                }
            }
        }
        let rtp: Vec<_> = heard.iter().filter(|(pt, _)| *pt == 8).collect();
        assert!(rtp.len() >= 15, "PCMA frames at B: {}", rtp.len());
        let loud = rtp
            .iter()
            .filter(|(_, payload)| {
                let mut pcm = vec![0i16; payload.len()];
                Law::Alaw.decode(payload, &mut pcm);
                let rms = (pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>()
                    / pcm.len().max(1) as f64)
                    .sqrt();
                rms > 3000.0
            })
            .count();
        assert!(loud >= 10, "the tone came through: {loud} of {}", rtp.len());
        // Both legs renegotiate onto PCMU: plain relay again, bytes intact.
        engine
            .set_bridge(Instant::now(), opened.handle, None)
            .unwrap();
        engine
            .set_remote(opened.handle, LegSide::B, remote(&b, 0))
            .unwrap();
        b.set_nonblocking(false).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        while recv_now(&b).is_some() {}
        a.send_to(&packet(0, 200, 40_000, 0x5151, &[0x42; 160]), ours[0])
            .unwrap();
        let (got, _) = recv(&b).expect("relayed");
        let pkt = RtpPacket::parse(&got).unwrap();
        assert_eq!((pkt.payload_type(), pkt.payload()), (0, &[0x42u8; 160][..]));
        engine.close(opened.handle, opened.ports);
    }
}

/// The kernel source filter follows the latch that judges a leg: a
/// stranger at a transcoded leg (the pipeline's latch, locked) has the
/// rest of its flood dropped by the kernel; back on the plain relay,
/// whose latch learns the leg afresh, the filter goes (a far end from
/// another IP is heard again). Both IO backends, per-port sockets.
#[test]
fn a_transcoded_legs_filter_follows_its_pipeline() {
    const FLOOD: u16 = 5_000;
    for (force_epoll, ports) in [(true, "32200-32249"), (false, "32250-32299")] {
        let mut engine = unsteered(force_epoll, ports);
        let (a, b) = (on_ip([127, 0, 0, 2]), phone());
        let (opened, ours) = transcoded(&mut engine, &a, &b);
        std::thread::sleep(Duration::from_millis(50));
        // A's source locks in the pipeline (paced, so it is heard).
        for i in 0..8u16 {
            a.send_to(
                &packet(0, i, u32::from(i) * 160, 0xa, &[0x55; 160]),
                ours[0],
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        flood_from_a_stranger(ours[0], FLOOD);
        std::thread::sleep(Duration::from_millis(100));
        // Back on the relay: its latch learns A's leg afresh, so the
        // filter goes, and a far end from another IP is heard.
        engine
            .set_bridge(Instant::now(), opened.handle, None)
            .unwrap();
        engine
            .set_remote(opened.handle, LegSide::B, remote(&b, 0))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        b.set_nonblocking(true).unwrap();
        while recv_now(&b).is_some() {}
        b.set_nonblocking(false).unwrap();
        let elsewhere = on_ip([127, 0, 0, 4]);
        elsewhere
            .send_to(&packet(0, 300, 48_000, 0xc, &[0x42; 160]), ours[0])
            .unwrap();
        let (got, _) = recv(&b).expect("relayed from another IP once the filter went");
        assert_eq!(RtpPacket::parse(&got).unwrap().payload(), &[0x42; 160]);
        engine.close(opened.handle, opened.ports);
        let MediaEvent::Closed { stats, .. } = wait_event(&mut engine) else {
            panic!()
        };
        kernel_took_the_flood(&stats[0], FLOOD, force_epoll);
    }
}

fn recv_now(s: &UdpSocket) -> Option<Vec<u8>> {
    s.set_nonblocking(true).ok()?;
    let mut buf = [0u8; 2048];
    let r = s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec());
    let _ = s.set_nonblocking(false);
    r
}

/// An RTP socket and the RTCP socket on the port above it.
fn phone_pair() -> (UdpSocket, UdpSocket) {
    loop {
        let rtp = phone();
        let port = rtp.local_addr().unwrap().port();
        if port.is_multiple_of(2)
            && let Ok(rtcp) = UdpSocket::bind((LO, port + 1))
        {
            rtcp.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            return (rtp, rtcp);
        }
    }
}

#[test]
fn each_relayed_leg_gets_its_own_rtcp_reports() {
    use codeb_media::rtcp::{Compound, RtcpPacket};
    for mut engine in engines_reporting("31600-31699", Duration::from_millis(300)) {
        let opened = engine.open().unwrap();
        let ((a, a_rtcp), (b, b_rtcp)) = (phone_pair(), phone_pair());
        let ours = SocketAddr::new(LO, opened.ports[0]);
        engine
            .set_remote(opened.handle, LegSide::A, remote(&a, 0))
            .unwrap();
        engine
            .set_remote(opened.handle, LegSide::B, remote(&b, 0))
            .unwrap();
        let (probes, _) = media_up(&a, &b, ours, 0);
        for i in 0..10u16 {
            a.send_to(
                &packet(0, 100 + i, u32::from(i) * 160, 0xA0A0, &[7; 160]),
                ours,
            )
            .unwrap();
            recv(&b).expect("relayed");
        }
        // Within two report intervals (300 ms here) each side hears from
        // its own leg: B an SR (we sent to it), A an RR on A's stream.
        let deadline = Instant::now() + Duration::from_secs(3);
        let (mut sr_to_b, mut rr_to_a) = (None, None);
        while (sr_to_b.is_none() || rr_to_a.is_none()) && Instant::now() < deadline {
            let mut buf = [0u8; 1500];
            if let Ok((n, from)) = b_rtcp.recv_from(&mut buf) {
                assert_eq!(from.port(), opened.ports[1] + 1, "from B's RTCP port");
                let c = Compound::parse(&buf[..n]).unwrap();
                for p in c.packets() {
                    if let RtcpPacket::SenderReport { info, .. } = p {
                        sr_to_b = Some(info.packet_count);
                    }
                }
            }
            if let Ok((n, from)) = a_rtcp.recv_from(&mut buf) {
                assert_eq!(from.port(), opened.ports[0] + 1, "from A's RTCP port");
                let c = Compound::parse(&buf[..n]).unwrap();
                for p in c.packets() {
                    if let RtcpPacket::ReceiverReport { reports, .. } = p {
                        rr_to_a = reports
                            .iter()
                            .find(|r| r.ssrc == 0xA0A0)
                            .map(|r| r.cumulative_lost);
                    }
                }
            }
        }
        let relayed_probes = u32::try_from(probes).unwrap();
        let sent = sr_to_b.expect("an SR towards B");
        assert!(
            sent >= 10 && sent <= 10 + relayed_probes,
            "SR packet count {sent}"
        );
        assert_eq!(rr_to_a, Some(0), "an RR on A's stream, nothing lost");
        engine.close(opened.handle, opened.ports);
    }
}

/// A relayed call on `ports` whose legs negotiated `codec` at `rate` on
/// payload type `pt`, recorded: A talks for 0.6 s (a loud ~430 Hz tone),
/// then B answers for 0.4 s, paced like phones (20 ms packets, each
/// `encode`d from its samples). The recording's (left, right) samples.
fn recorded_call(
    ports: &str,
    pt: u8,
    codec: CodecKind,
    rate: u32,
    encode: fn(&[i16]) -> Vec<u8>,
) -> Vec<(i16, i16)> {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = MediaEngine::start(
        &MediaSettings {
            record_dir: Some(dir.path().to_path_buf()),
            ..one_worker(ports, Duration::from_secs(5))
        },
        None,
    )
    .unwrap();
    let opened = engine.open().unwrap();
    let (a, b) = (phone(), phone());
    for (side, phone) in [(LegSide::A, &a), (LegSide::B, &b)] {
        let far = Remote {
            codec,
            clock_rate: rate,
            ..remote(phone, pt)
        };
        engine.set_remote(opened.handle, side, far).unwrap();
    }
    let ours = opened.ports.map(|p| SocketAddr::new(LO, p));
    media_up(&a, &b, ours[0], pt);
    let path = engine.record(opened.handle, "rec-test").unwrap();
    assert_eq!(path, dir.path().join("rec-test.wav"));
    // Let the worker take the command before the talking starts.
    std::thread::sleep(Duration::from_millis(100));
    let n = rate as usize / 50;
    let step = 0.34 * 8000.0 / f64::from(rate);
    let loud = encode(
        &(0..n)
            .map(|i| ((i as f64 * step).sin() * 12_000.0) as i16)
            .collect::<Vec<_>>(),
    );
    let quiet = encode(&vec![0; n]);
    let start = Instant::now();
    for k in 0..50u16 {
        let (a_says, b_says) = if k < 30 {
            (&loud[..], &quiet[..])
        } else {
            (&quiet[..], &loud[..])
        };
        let ts = u32::from(k) * n as u32;
        a.send_to(&packet(pt, k, ts, 0xa, a_says), ours[0]).unwrap();
        b.send_to(&packet(pt, k, ts, 0xb, b_says), ours[1]).unwrap();
        let next = start + Duration::from_millis(20 * u64::from(k + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    engine.close(opened.handle, opened.ports);
    // Dropping the engine finishes every recording.
    drop(engine);
    let wav = std::fs::read(&path).unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 2, "two channels");
    assert_eq!(
        u32::from_le_bytes(wav[24..28].try_into().unwrap()),
        8000,
        "8 kHz"
    );
    let data = u32::from_le_bytes(wav[40..44].try_into().unwrap()) as usize;
    assert_eq!(data, wav.len() - 44);
    wav[44..]
        .chunks_exact(4)
        .map(|s| {
            (
                i16::from_le_bytes([s[0], s[1]]),
                i16::from_le_bytes([s[2], s[3]]),
            )
        })
        .collect()
}

/// A's 0.6 s of talk is on the left, then B's 0.4 s on the right, on one
/// timeline (each stream placed by its RTP timestamps from where its
/// first packet arrived, so the two may differ by the workers' scheduling
/// of those first packets: 25 ms allowed).
fn assert_a_then_b(frames: &[(i16, i16)], what: &str) {
    let loud = |right: bool| -> Vec<usize> {
        frames
            .iter()
            .enumerate()
            .filter(|(_, (l, r))| {
                if right {
                    r.abs() > 3000
                } else {
                    l.abs() > 3000
                }
            })
            .map(|(i, _)| i)
            .collect()
    };
    let (left, right) = (loud(false), loud(true));
    assert!(!left.is_empty() && !right.is_empty(), "{what}: both heard");
    let a0 = left[0];
    assert!(
        *left.last().unwrap() < a0 + 4800,
        "{what}: A talks for 0.6 s"
    );
    assert!(
        right[0] >= a0 + 4600,
        "{what}: B starts as A stops: {}",
        right[0] - a0
    );
    assert!(*right.last().unwrap() < a0 + 8200, "{what}");
    assert!(
        left.len() > 3000 && right.len() > 2000,
        "{what}: mostly loud samples"
    );
    assert!(
        frames.len() >= a0 + 7900,
        "{what}: the whole second is written"
    );
}

#[test]
fn a_recorded_call_is_written_as_a_two_channel_wav() {
    use codeb_media::g711::ulaw_encode;
    let frames = recorded_call("31820-31839", 0, CodecKind::Pcmu, 8000, |pcm| {
        pcm.iter().map(|s| ulaw_encode(*s)).collect()
    });
    assert_a_then_b(&frames, "PCMU");
}

#[test]
fn a_recorded_l16_call_is_written_at_8_khz() {
    // L16 at 16 kHz: 640-byte packets, recorded through the low-pass.
    let frames = recorded_call("31800-31819", 119, CodecKind::L16, 16_000, |pcm| {
        pcm.iter().flat_map(|s| s.to_be_bytes()).collect()
    });
    assert_a_then_b(&frames, "L16/16000");
}

#[test]
fn an_ai_tap_hears_the_caller_at_once_and_follows_a_codec_change() {
    use codeb_media::codec::CodecSpec;
    use codeb_media::g711::Law;
    use codeb_media::pipeline::LegConfig;
    use codeb_media::tap::TapConfig;
    let tone: Vec<i16> = (0..160)
        .map(|i| ((i as f64 * std::f64::consts::TAU * 400.0 / 8000.0).sin() * 8000.0) as i16)
        .collect();
    let loud = |pcm: &[i16]| {
        (pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
            > 2000.0
    };
    for mut engine in engines("31700-31799") {
        let opened = engine.open().unwrap();
        let a = phone();
        let ours = SocketAddr::new(LO, opened.ports[0]);
        engine
            .set_remote(opened.handle, LegSide::A, remote(&a, 0))
            .unwrap();
        let mut leg = LegConfig::new(CodecSpec::pcmu(), 0xA1);
        leg.remote_rtp = Some(a.local_addr().unwrap());
        let mut tap = engine
            .start_tap(
                Instant::now(),
                opened.handle,
                LegSide::A,
                leg,
                TapConfig::default(),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // Before the caller's first packet the engine hears silence, 20 ms
        // every 20 ms.
        let mut pcm16 = vec![0i16; 16_000];
        let n = tap.read_caller(&mut pcm16);
        assert!(n % 320 == 0 && pcm16[..n].iter().all(|s| *s == 0), "{n}");
        // Caller audio: each frame is in the engine's ring almost at once
        // (no jitter-buffer hold on the way to the engine).
        let mut ulaw = vec![0u8; 160];
        Law::Ulaw.encode(&tone, &mut ulaw);
        for i in 0..5u16 {
            a.send_to(&packet(0, i, u32::from(i) * 160, 0x5151, &ulaw), ours)
                .unwrap();
            // Its frame, loud (silence the tap's clock sent meanwhile may
            // come first).
            let sent = Instant::now();
            let mut heard = false;
            while !heard && sent.elapsed() < Duration::from_secs(1) {
                let got = tap.read_caller(&mut pcm16);
                heard = pcm16[..got].chunks(320).any(&loud);
                std::thread::yield_now();
            }
            // (That it goes at once, with no jitter-buffer hold, the
            // pipeline's own test shows with time passed in.)
            assert!(heard, "caller frame {i} at the engine");
        }
        // The stream the caller hears (the tap's paced silence so far).
        let (p, _) = recv(&a).expect("the tap's stream to the caller");
        let ssrc = RtpPacket::parse(&p).unwrap().ssrc();
        // A re-INVITE moved the caller to PCMA: the tap follows, on the
        // same stream (the clock rate stays; the SSRC offered is not
        // taken).
        let mut leg = LegConfig::new(CodecSpec::pcma(), 0xA2);
        leg.remote_rtp = Some(a.local_addr().unwrap());
        engine.retap(opened.handle, leg).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut alaw = vec![0u8; 160];
        Law::Alaw.encode(&tone, &mut alaw);
        let mut heard = Vec::new();
        for i in 0..10u16 {
            a.send_to(&packet(8, 500 + i, u32::from(i) * 160, 0x6161, &alaw), ours)
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let n = tap.read_caller(&mut pcm16);
            heard.extend_from_slice(&pcm16[..n]);
        }
        assert!(heard.len() >= 8 * 320, "{} samples", heard.len());
        assert!(
            loud(&heard[heard.len() - 320..]),
            "the PCMA tone reached the engine"
        );
        // The engine speaks: the caller hears it as PCMA, on its stream.
        while recv_now(&a).is_some() {}
        let speech: Vec<i16> = (0..24_000)
            .map(|i| ((i as f64 * std::f64::consts::TAU * 300.0 / 24_000.0).sin() * 8000.0) as i16)
            .collect();
        tap.write_engine(&speech[..9_600]);
        let mut loud_pcma = 0;
        let until = Instant::now() + Duration::from_millis(400);
        while Instant::now() < until {
            let Some((p, _)) = recv(&a) else { break };
            let pkt = RtpPacket::parse(&p).unwrap();
            if pkt.payload_type() == 8 && pkt.ssrc() == ssrc {
                let mut pcm = vec![0i16; pkt.payload().len()];
                Law::Alaw.decode(pkt.payload(), &mut pcm);
                loud_pcma += usize::from(loud(&pcm));
            }
        }
        assert!(
            loud_pcma >= 5,
            "engine audio as PCMA: {loud_pcma} loud frames"
        );
        engine.close(opened.handle, opened.ports);
    }
}
