use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Instant;

use codeb_sip::Message;
use codeb_sip::Method;

use super::*;

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A transport on loopback and the core's side of it, driven as `main`
/// drives it.
struct Rig {
    transport: Transport,
    waiter: Reactor,
    /// The SIP address (UDP and TCP).
    local: SocketAddr,
}

/// A UDP socket and a TCP listener on one free port (an ephemeral UDP
/// port may be taken for TCP by another test's connection: try another).
fn sip_sockets() -> (UdpSocket, TcpListener) {
    for _ in 0..100 {
        let udp = UdpSocket::bind((LO, 0)).unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP");
}

fn rig(force_epoll: bool, queue: usize) -> Rig {
    let (udp, tcp) = sip_sockets();
    let local = udp.local_addr().unwrap();
    let waiter = Reactor::new(&Options {
        force_epoll: true,
        buffers: 1,
        buffer_len: 64,
        ..Options::default()
    })
    .unwrap();
    let transport = Transport::start_with(
        &Options {
            force_epoll,
            ..Options::default()
        },
        udp,
        tcp,
        Screener {
            limits: Limits::default(),
            policy: crate::sip::core::policy(7),
        },
        waiter.waker(),
        queue,
    )
    .unwrap();
    Rig {
        transport,
        waiter,
        local,
    }
}

impl Rig {
    /// The next event, parking and blocking as the core does.
    fn next(&mut self) -> FromWire {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(ev) = self.transport.next_event() {
                return ev;
            }
            assert!(Instant::now() < deadline, "no event from the transport");
            if self.transport.park() {
                self.waiter
                    .poll(Some(Duration::from_millis(100)), &mut |_| {})
                    .unwrap();
                self.transport.unpark();
            }
        }
    }

    fn send_to(&mut self, peer: SocketAddr, payload: &'static [u8]) {
        let socket = self.transport.udp_socket();
        self.transport.push(ToWire::Send(Outgoing {
            flow: Flow::Udp { socket, peer },
            payload: Bytes::from_static(payload),
        }));
    }
}

fn peer() -> UdpSocket {
    let s = UdpSocket::bind((LO, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn options(branch: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:switch@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:a@127.0.0.1>;tag=1\r\n\
         To: <sip:switch@127.0.0.1>\r\n\
         Call-ID: {branch}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn datagrams_arrive_parsed_and_what_the_core_sends_leaves_in_order() {
    for force_epoll in [false, true] {
        let mut r = rig(force_epoll, QUEUE);
        let phone = peer();
        phone.send_to(&options("one"), r.local).unwrap();
        phone.send_to(b"not SIP at all\r\n\r\n", r.local).unwrap();
        match r.next() {
            FromWire::Datagram { from, verdict, .. } => {
                assert_eq!(from, phone.local_addr().unwrap());
                match *verdict {
                    Verdict::Accept(Message::Request(req)) => {
                        assert_eq!(req.method, Method::Options)
                    }
                    other => panic!("OPTIONS screened as {other:?}"),
                }
            }
            other => panic!("expected the OPTIONS, got {other:?}"),
        }
        match r.next() {
            FromWire::Datagram { verdict, .. } => {
                assert!(matches!(*verdict, Verdict::Drop(_)), "{verdict:?}")
            }
            other => panic!("expected the garbage, got {other:?}"),
        }
        let to = phone.local_addr().unwrap();
        for p in [&b"first"[..], b"second", b"third"] {
            r.send_to(to, p);
        }
        r.transport.flush();
        let mut buf = [0u8; 64];
        for want in [&b"first"[..], b"second", b"third"] {
            let (n, from) = phone.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (want, r.local));
        }
        assert_eq!(r.transport.stats().queue_drops, 0);
    }
}

#[test]
fn a_parked_core_is_woken_by_an_arriving_datagram() {
    let mut r = rig(false, QUEUE);
    assert!(r.transport.park());
    let phone = peer();
    phone.send_to(&options("wake"), r.local).unwrap();
    let start = Instant::now();
    r.waiter
        .poll(Some(Duration::from_secs(30)), &mut |_| {})
        .unwrap();
    r.transport.unpark();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the core slept through the datagram"
    );
    assert!(matches!(
        r.transport.next_event(),
        Some(FromWire::Datagram { .. })
    ));
}

#[test]
fn a_core_that_is_not_parked_is_not_woken_and_park_refuses_with_work_waiting() {
    let mut r = rig(false, QUEUE);
    let phone = peer();
    phone.send_to(&options("busy"), r.local).unwrap();
    // Not parked: the event waits in the queue without a wake-up, and
    // parking then refuses to block and hands it out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.transport.stats().io.datagrams_in == 0 {
        assert!(Instant::now() < deadline);
        std::thread::yield_now();
    }
    let mut woken = false;
    r.waiter
        .poll(Some(Duration::ZERO), &mut |ev| {
            woken |= matches!(ev, Event::Woken)
        })
        .unwrap();
    assert!(!woken, "a running core was woken");
    assert!(!r.transport.park());
    assert!(matches!(
        r.transport.next_event(),
        Some(FromWire::Datagram { .. })
    ));
}

#[test]
fn a_full_queue_drops_datagrams_and_counts_them() {
    let mut r = rig(false, 4);
    let phone = peer();
    for i in 0..50 {
        phone.send_to(&options(&format!("f{i}")), r.local).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.transport.stats().queue_drops < 46 {
        assert!(Instant::now() < deadline, "{:?}", r.transport.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut held = 0;
    while r.transport.next_event().is_some() {
        held += 1;
    }
    assert_eq!((held, r.transport.stats().queue_drops), (4, 46));
    // The transport goes on once there is room again.
    phone.send_to(&options("after"), r.local).unwrap();
    assert!(matches!(r.next(), FromWire::Datagram { .. }));
}

#[test]
fn tcp_bytes_wait_for_room_instead_of_being_dropped() {
    for force_epoll in [false, true] {
        let mut r = rig(force_epoll, 2);
        let mut client = TcpStream::connect(r.local).unwrap();
        let sent: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            std::thread::spawn(move || {
                for chunk in sent.chunks(1000) {
                    client.write_all(chunk).unwrap();
                }
                client
            })
        };
        let conn = match r.next() {
            FromWire::Connection { conn, .. } => conn,
            other => panic!("expected the connection, got {other:?}"),
        };
        let mut got = Vec::new();
        while got.len() < sent.len() {
            match r.next() {
                FromWire::Data { conn: c, data } => {
                    assert_eq!(c, conn);
                    got.extend_from_slice(&data);
                }
                other => panic!("unexpected {other:?}"),
            }
            // A slow core: the queue of two fills while it works.
            if got.len() % 7 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert!(got == sent, "the stream arrived altered");
        assert_eq!(r.transport.stats().queue_drops, 0);
        drop(writer.join().unwrap());
    }
}

#[test]
fn connects_are_reported_as_started_then_up() {
    let mut r = rig(false, QUEUE);
    let far = TcpListener::bind((LO, 0)).unwrap();
    let far_addr = far.local_addr().unwrap();
    r.transport.push(ToWire::Connect(far_addr));
    r.transport.flush();
    let started = match r.next() {
        FromWire::Connecting { peer, conn } => {
            assert_eq!(peer, far_addr);
            conn
        }
        other => panic!("expected Connecting, got {other:?}"),
    };
    let (mut accepted, _) = far.accept().unwrap();
    match r.next() {
        FromWire::Connection { conn, peer } => assert_eq!((conn, peer), (started, far_addr)),
        other => panic!("expected the connection up, got {other:?}"),
    }
    r.transport.push(ToWire::Send(Outgoing {
        flow: Flow::Tcp {
            conn: started,
            peer: far_addr,
        },
        payload: Bytes::from_static(b"hello"),
    }));
    r.transport.flush();
    accepted
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut hello = [0u8; 5];
    accepted.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello");
    r.transport.push(ToWire::Close(started));
    r.transport.flush();
    let mut rest = Vec::new();
    accepted.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn shutdown_sends_what_the_core_queued() {
    let mut r = rig(false, QUEUE);
    let phone = peer();
    r.send_to(phone.local_addr().unwrap(), b"last words");
    r.transport.shutdown();
    let mut buf = [0u8; 64];
    let (n, _) = phone.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"last words");
    assert!(!r.transport.alive());
}
