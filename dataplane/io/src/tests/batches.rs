//! Datagram batches on both backends: backlogs larger than a receive
//! batch, oversize datagrams among them, queued sends on several sockets,
//! and sends the kernel refuses. (The epoll backend reads with `recvmmsg`
//! and sends with `sendmmsg`; these pin what that must not change.)

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::{Seen, pump, reactors};
use crate::Options;

/// Reads `n` datagrams from a plain socket (5 s at most for each).
fn recv_n(sock: &UdpSocket, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 65_536];
    (0..n)
        .map(|i| {
            let (len, from) = sock
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {i} of {n}: {e}"));
            (from, buf[..len].to_vec())
        })
        .collect()
}

/// A payload that says which datagram it is in both its bytes and its
/// length, so a datagram read from the wrong buffer or cut at the wrong
/// offset shows.
fn numbered(tag: u8, seq: u16) -> Vec<u8> {
    let mut p = vec![tag, (seq >> 8) as u8, seq as u8];
    p.extend((0..seq % 97).map(|i| (i as u8) ^ tag));
    p
}

/// A socket that takes a burst without the kernel dropping any of it.
fn roomy_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    crate::set_recv_buffer(&s, 1 << 20).unwrap();
    s
}

#[test]
fn a_backlog_arrives_whole_in_order_whatever_its_size() {
    for mut r in reactors(Options {
        buffer_len: 2048,
        ..Options::default()
    }) {
        let id = r.add_udp(roomy_socket()).unwrap();
        let addr = r.local_addr(id).unwrap();
        let (p, q) = (roomy_socket(), roomy_socket());
        // Around and across the epoll backend's batch of 32: one short
        // batch, exactly one, one and a bit, exact multiples (the last
        // full batch is followed by an empty read) and several.
        for count in [1u16, 31, 32, 33, 64, 100, 250] {
            let before = r.stats().datagrams_in;
            let mut want = Vec::new();
            for seq in 0..count {
                // Two senders interleaved: each datagram keeps its source.
                let from = if seq % 3 == 0 { &q } else { &p };
                from.send_to(&numbered(1, seq), addr).unwrap();
                want.push(Seen::Datagram(from.local_addr().unwrap(), numbered(1, seq)));
            }
            let mut seen = Vec::new();
            pump(&mut r, &mut seen, |s| s.len() >= want.len());
            assert_eq!(seen, want, "{}: {count} queued", r.backend());
            // Nothing more trickles in afterwards.
            r.poll(Some(Duration::from_millis(10)), &mut |ev| {
                panic!("{ev:?} after the backlog")
            })
            .unwrap();
            assert_eq!(
                r.stats().datagrams_in - before,
                u64::from(count),
                "{}",
                r.backend()
            );
        }
    }
}

#[test]
fn oversize_datagrams_are_counted_and_their_neighbours_delivered() {
    let buffer_len = 2048;
    for mut r in reactors(Options {
        buffer_len,
        ..Options::default()
    }) {
        let id = r.add_udp(roomy_socket()).unwrap();
        let addr = r.local_addr(id).unwrap();
        let peer = roomy_socket();
        let mut want = Vec::new();
        let mut oversize = 0;
        // Oversize ones first, last, at a batch's edges and in a run.
        for seq in 0..80u16 {
            if matches!(seq, 0 | 31 | 32 | 50 | 51 | 52 | 79) {
                peer.send_to(&vec![seq as u8; 3000 + usize::from(seq)], addr)
                    .unwrap();
                oversize += 1;
            } else {
                peer.send_to(&numbered(2, seq), addr).unwrap();
                want.push(Seen::Datagram(peer.local_addr().unwrap(), numbered(2, seq)));
            }
        }
        if r.backend() == "epoll" {
            // A datagram that fills the buffer exactly is whole. (io_uring's
            // buffers also hold the kernel's header and the source address.)
            let full = vec![9u8; buffer_len];
            peer.send_to(&full, addr).unwrap();
            want.push(Seen::Datagram(peer.local_addr().unwrap(), full));
        }
        let mut seen = Vec::new();
        pump(&mut r, &mut seen, |s| s.len() >= want.len());
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.stats().datagrams_truncated < oversize && Instant::now() < deadline {
            r.poll(Some(Duration::from_millis(10)), &mut |_| {})
                .unwrap();
        }
        assert_eq!(seen, want, "{}", r.backend());
        let stats = r.stats();
        assert_eq!(
            (stats.datagrams_truncated, stats.datagrams_in),
            (oversize, want.len() as u64),
            "{}",
            r.backend()
        );
    }
}

#[test]
fn sends_leave_in_order_per_socket_with_their_payloads() {
    for mut r in reactors(Options::default()) {
        let ids: Vec<_> = (0..3).map(|_| r.add_udp(roomy_socket()).unwrap()).collect();
        let peer = roomy_socket();
        let to = peer.local_addr().unwrap();
        // Interleaved across sockets, more than one batch per socket, and
        // a few large ones so the bytes queued pass any arena's size.
        let mut want = Vec::new();
        for seq in 0..300u16 {
            let k = usize::from(seq) % ids.len();
            let data = if seq % 97 == 1 {
                vec![k as u8; 40_000]
            } else {
                numbered(k as u8, seq)
            };
            r.send_to(ids[k], to, &data).unwrap();
            want.push((r.local_addr(ids[k]).unwrap(), data));
        }
        r.poll(Some(Duration::ZERO), &mut |_| {}).unwrap();
        let got = recv_n(&peer, want.len());
        for &id in &ids {
            let from = r.local_addr(id).unwrap();
            let mine = |v: &[(SocketAddr, Vec<u8>)]| {
                v.iter()
                    .filter(|(f, _)| *f == from)
                    .map(|(_, d)| d.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(mine(&got), mine(&want), "{}: from {from}", r.backend());
        }
        let stats = r.stats();
        assert_eq!(
            (stats.datagrams_out, stats.send_errors),
            (300, 0),
            "{}",
            r.backend()
        );
    }
}

#[test]
fn a_refused_send_is_counted_and_the_ones_after_it_still_leave() {
    for mut r in reactors(Options::default()) {
        let id = r.add_udp(roomy_socket()).unwrap();
        let from = r.local_addr(id).unwrap();
        let peer = roomy_socket();
        let to = peer.local_addr().unwrap();
        // Each refused at once by the kernel: port 0 (EINVAL), larger than
        // any IPv4 datagram (EMSGSIZE), an IPv6 address on an IPv4 socket
        // (EAFNOSUPPORT).
        let refused: [(SocketAddr, Vec<u8>); 3] = [
            ("127.0.0.1:0".parse().unwrap(), b"port 0".to_vec()),
            (to, vec![0; 70_000]),
            ("[::1]:9".parse().unwrap(), b"v6".to_vec()),
        ];
        let mut want = Vec::new();
        let (mut queued, mut bad) = (0, 0);
        // Refused first, in the middle, twice running and last.
        for (i, ok) in [false, true, true, false, true, false, false, true, false]
            .into_iter()
            .enumerate()
        {
            queued += 1;
            if ok {
                let data = numbered(3, i as u16);
                r.send_to(id, to, &data).unwrap();
                want.push((from, data));
            } else {
                let (dest, data) = &refused[bad % refused.len()];
                bad += 1;
                r.send_to(id, *dest, data).unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.stats().send_errors < 5 && Instant::now() < deadline {
            r.poll(Some(Duration::from_millis(10)), &mut |_| {})
                .unwrap();
        }
        assert_eq!(recv_n(&peer, want.len()), want, "{}", r.backend());
        let stats = r.stats();
        assert_eq!(
            (stats.datagrams_out, stats.send_errors),
            (queued, 5),
            "{}",
            r.backend()
        );
    }
}

#[test]
fn sends_queued_on_a_socket_leave_from_it_even_when_it_is_removed_at_once() {
    for mut r in reactors(Options::default()) {
        let peer = roomy_socket();
        let to = peer.local_addr().unwrap();
        let old = r.add_udp(roomy_socket()).unwrap();
        let old_addr = r.local_addr(old).unwrap();
        r.send_to(old, to, b"last words").unwrap();
        r.remove_udp(old).unwrap();
        // The next socket may be given the same id: it must not send the
        // old socket's datagrams.
        let new = r.add_udp(roomy_socket()).unwrap();
        let new_addr = r.local_addr(new).unwrap();
        r.send_to(new, to, b"hello").unwrap();
        r.poll(Some(Duration::from_millis(10)), &mut |_| {})
            .unwrap();
        let mut got = recv_n(&peer, 2);
        got.sort();
        let mut want = vec![
            (old_addr, b"last words".to_vec()),
            (new_addr, b"hello".to_vec()),
        ];
        want.sort();
        assert_eq!(got, want, "{}", r.backend());
    }
}

/// epoll only: the io_uring backend today serves a flooded socket's whole
/// backlog first (its multishot receive keeps the buffers it frees).
#[test]
fn a_flooded_epoll_socket_does_not_hold_back_another_for_its_whole_backlog() {
    let opts = Options {
        force_epoll: true,
        buffer_len: 2048,
        buffers: 16,
        ..Options::default()
    };
    for mut r in reactors(opts)
        .into_iter()
        .filter(|r| r.backend() == "epoll")
    {
        let busy = r.add_udp(roomy_socket()).unwrap();
        let quiet = r.add_udp(roomy_socket()).unwrap();
        let peer = roomy_socket();
        for seq in 0..200u16 {
            peer.send_to(&numbered(4, seq), r.local_addr(busy).unwrap())
                .unwrap();
        }
        peer.send_to(b"me too", r.local_addr(quiet).unwrap())
            .unwrap();
        let got = super::datagrams(&mut r, 201);
        let at = got.iter().position(|(s, _)| *s == quiet).unwrap();
        // 16 of the busy one's, then the quiet one's, in the first turn.
        assert!(at <= 16, "{}: at {at}", r.backend());
    }
}
