//! Paced G.711 streams on many UDP legs, the engine of the media load
//! generators (`rtp-load`, `ai-load`).
//!
//! Every leg is its own UDP socket on loopback that sends one 172-byte RTP
//! packet (PCMU, 20 ms) every 20 ms, the legs' send instants spread evenly
//! over the 20 ms; a [`Traffic`] decides what the payload carries and what
//! to make of what comes back. The legs are shared out over generator
//! threads, each with its own reactor (io_uring or epoll). [`measure`] runs
//! a warm-up, then a measured window over which it reads the relay's CPU
//! from `/proc`, then a short drain. `CODEB_BENCH_EPOLL=1` makes the
//! generator's reactors use epoll instead of io_uring (to tell the two
//! apart when a run looks wrong).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use codeb_io::{Event, Options, Reactor};
use codeb_sip::sdp::{Sdp, SdpLimits};

use crate::proc_cpu::cpu_seconds;

/// One packet per leg per ptime.
pub const PTIME: Duration = Duration::from_millis(20);
/// G.711 payload of one ptime.
pub const PAYLOAD: usize = 160;
/// RTP fixed header.
pub const HEADER: usize = 12;
/// Sent before the measured window starts (calls settle, relays latch).
pub const WARMUP: Duration = Duration::from_secs(3);
/// Listened to after the last packet is sent.
pub const DRAIN: Duration = Duration::from_millis(500);

/// Where the generator's RTP sockets live: even ports only, so that a
/// relay's RTCP to port + 1 finds no socket, and away from the relays'
/// ranges (`benches/relay_vs_rtpengine.sh` gives them ports below 40000).
pub const LEG_PORTS: (u16, u16) = (40_000, 59_998);

static NEXT_LEG_PORT: AtomicU16 = AtomicU16::new(LEG_PORTS.0);

/// A UDP socket on 127.0.0.1 for one leg, on the next free even port of
/// [`LEG_PORTS`] (round-robin, skipping ports in use).
pub fn leg_socket() -> std::io::Result<UdpSocket> {
    let pairs = (LEG_PORTS.1 - LEG_PORTS.0) / 2 + 1;
    for _ in 0..pairs {
        let port = NEXT_LEG_PORT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(if p >= LEG_PORTS.1 { LEG_PORTS.0 } else { p + 2 })
            })
            .unwrap_or(LEG_PORTS.0);
        match UdpSocket::bind(("127.0.0.1", port)) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free even port in {}-{}", LEG_PORTS.0, LEG_PORTS.1),
    ))
}

/// One generator leg: its socket and where it sends.
#[derive(Debug)]
pub struct Endpoint {
    pub sock: UdpSocket,
    pub to: SocketAddr,
}

/// A PCMU offer/answer with telephone-event for a leg at `port` on
/// 127.0.0.1 (what a deployment's phones and trunks offer).
pub fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The audio address of an SDP (the project's parser, bounded).
pub fn sdp_addr(sdp: &[u8]) -> anyhow::Result<SocketAddr> {
    let parsed = Sdp::parse(sdp, &SdpLimits::default()).map_err(|e| anyhow::anyhow!("SDP: {e}"))?;
    let audio = parsed
        .media
        .iter()
        .find(|m| m.kind == "audio")
        .context("SDP without m=audio")?;
    let ip = audio
        .connection
        .or(parsed.connection)
        .context("SDP without c=")?;
    Ok(SocketAddr::new(ip, audio.port))
}

/// When the run started and which send instants are measured, in
/// nanoseconds since `start` (the unit packets carry).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub from_ns: u64,
    pub to_ns: u64,
}

impl Window {
    /// Nanoseconds from the start to `at`.
    pub fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a packet sent at `ns` is in the measured window.
    pub fn measured(&self, ns: u64) -> bool {
        ns >= self.from_ns && ns < self.to_ns
    }
}

/// What a set of legs sends and makes of what it receives. `leg` is the
/// leg's index in the list given to [`measure`].
pub trait Traffic: Send + 'static {
    /// Fills the payload of `leg`'s next packet, sent at `sent_ns`.
    fn payload(&mut self, leg: usize, sent_ns: u64, out: &mut [u8; PAYLOAD]);
    /// A datagram arrived on `leg` at `at_ns`.
    fn received(&mut self, leg: usize, packet: &[u8], at_ns: u64);
}

/// What the pacing itself did on one thread (or all of them, merged).
#[derive(Debug, Default, Clone, Copy)]
pub struct Paced {
    /// Packets sent in the measured window.
    pub sent: u64,
    /// How late the latest send of the window was: the generator's own
    /// health (a late generator makes every other figure suspect).
    pub max_late: Duration,
}

impl Paced {
    fn merge(&mut self, o: Paced) {
        self.sent += o.sent;
        self.max_late = self.max_late.max(o.max_late);
    }
}

struct LegState {
    index: usize,
    id: codeb_io::SocketId,
    to: SocketAddr,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

/// Paces `legs` (one packet per leg per 20 ms, spread evenly) until
/// `stop`, sending only before the window's end.
fn run_thread<T: Traffic>(
    legs: Vec<(usize, Endpoint)>,
    mut traffic: T,
    window: Window,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Paced, T)> {
    let mut reactor = Reactor::new(&Options {
        force_epoll: std::env::var_os("CODEB_BENCH_EPOLL").is_some_and(|v| v == "1"),
        ring_entries: 4096,
        buffers: 4096,
        buffer_len: 2048,
        max_connections: 0,
    })?;
    let mut states = Vec::with_capacity(legs.len());
    let mut by_socket: Vec<usize> = Vec::new();
    for (i, (index, e)) in legs.into_iter().enumerate() {
        let id = reactor.add_udp(e.sock)?;
        if by_socket.len() <= id.0 as usize {
            by_socket.resize(id.0 as usize + 1, usize::MAX);
        }
        by_socket[id.0 as usize] = index;
        states.push(LegState {
            index,
            id,
            to: e.to,
            seq: (i as u16).wrapping_mul(7),
            ts: (i as u32).wrapping_mul(1000),
            ssrc: 0x1000_0000 + index as u32,
        });
    }
    let n = states.len().max(1);
    let slot = PTIME / u32::try_from(n).unwrap_or(u32::MAX);
    let mut paced = Paced::default();
    let mut cycle = Instant::now();
    let mut cursor = 0usize;
    let mut pkt = [0u8; HEADER + PAYLOAD];
    pkt[0] = 0x80;
    let mut payload = [0u8; PAYLOAD];
    let send_until = window.start + Duration::from_nanos(window.to_ns);
    let mut received: Vec<(usize, u64, usize, [u8; HEADER + PAYLOAD])> = Vec::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Send everything due.
        loop {
            let due = cycle + slot * u32::try_from(cursor).unwrap_or(0);
            if due > now {
                break;
            }
            let late = now.saturating_duration_since(due);
            if let Some(leg) = states.get_mut(cursor)
                && now < send_until
            {
                let sent_ns = window.ns(Instant::now());
                traffic.payload(leg.index, sent_ns, &mut payload);
                pkt[2..4].copy_from_slice(&leg.seq.to_be_bytes());
                pkt[4..8].copy_from_slice(&leg.ts.to_be_bytes());
                pkt[8..12].copy_from_slice(&leg.ssrc.to_be_bytes());
                pkt[HEADER..].copy_from_slice(&payload);
                let _ = reactor.send_to(leg.id, leg.to, &pkt);
                leg.seq = leg.seq.wrapping_add(1);
                leg.ts = leg.ts.wrapping_add(PAYLOAD as u32);
                if window.measured(sent_ns) {
                    paced.sent += 1;
                    paced.max_late = paced.max_late.max(late);
                }
            }
            cursor += 1;
            if cursor >= n {
                cursor = 0;
                cycle += PTIME;
            }
        }
        let due = cycle + slot * u32::try_from(cursor).unwrap_or(0);
        let wait = due.saturating_duration_since(Instant::now());
        received.clear();
        reactor.poll(Some(wait), &mut |ev| {
            if let Event::Datagram { socket, data, .. } = ev
                && let Some(&leg) = by_socket.get(socket.0 as usize)
                && leg != usize::MAX
                && !data.get(1).is_some_and(|pt| (200..=204).contains(pt))
            {
                // (RTCP, payload types 200-204, is skipped above: a relay
                // sends it to port + 1, which may be another leg's socket.)
                // Copied out: the reactor's buffer is lent only for the
                // callback, and the clock is read once per arrival.
                let mut copy = [0u8; HEADER + PAYLOAD];
                let len = data.len().min(copy.len());
                copy[..len].copy_from_slice(&data[..len]);
                received.push((leg, window.ns(Instant::now()), len, copy));
            }
        })?;
        for (leg, at_ns, len, data) in &received {
            traffic.received(*leg, &data[..*len], *at_ns);
        }
    }
    Ok((paced, traffic))
}

/// What [`measure`] found.
pub struct Run<T> {
    pub paced: Paced,
    /// One per generator thread.
    pub traffic: Vec<T>,
    /// The relay's CPU over the window, as a fraction of one core.
    pub cpu: Option<f64>,
    pub window: Duration,
}

/// Streams on `endpoints` (leg `i` is `endpoints[i]`) from `threads`
/// threads, each with its own [`Traffic`] from `traffic`: warm-up, a
/// window of `seconds` over which the CPU of `pid` is read, then a drain.
pub fn measure<T: Traffic>(
    endpoints: Vec<Endpoint>,
    threads: usize,
    seconds: u64,
    pid: Option<u32>,
    traffic: impl Fn(Window) -> T,
) -> anyhow::Result<Run<T>> {
    let start = Instant::now();
    let window = Window {
        start,
        from_ns: u64::try_from(WARMUP.as_nanos()).unwrap_or(u64::MAX),
        to_ns: u64::try_from((WARMUP + Duration::from_secs(seconds)).as_nanos())
            .unwrap_or(u64::MAX),
    };
    let measure_from = start + WARMUP;
    let measure_to = measure_from + Duration::from_secs(seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = threads.max(1);
    let mut shares: Vec<Vec<(usize, Endpoint)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, e) in endpoints.into_iter().enumerate() {
        shares[i % threads].push((i, e));
    }
    let mut handles = Vec::new();
    for share in shares {
        let stop = Arc::clone(&stop);
        let t = traffic(window);
        handles.push(std::thread::spawn(move || {
            run_thread(share, t, window, stop)
        }));
    }
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let cpu_before = pid.and_then(cpu_seconds);
    std::thread::sleep(measure_to.saturating_duration_since(Instant::now()));
    let cpu_after = pid.and_then(cpu_seconds);
    std::thread::sleep(DRAIN);
    stop.store(true, Ordering::Relaxed);
    let mut run = Run {
        paced: Paced::default(),
        traffic: Vec::with_capacity(threads),
        cpu: cpu_before
            .zip(cpu_after)
            .map(|(b, a)| (a - b) / seconds.max(1) as f64),
        window: Duration::from_secs(seconds),
    };
    for h in handles {
        let (p, t) = h
            .join()
            .map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
        run.paced.merge(p);
        run.traffic.push(t);
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_address() {
        let s = sdp(30000);
        assert_eq!(
            sdp_addr(s.as_bytes()).unwrap(),
            "127.0.0.1:30000".parse().unwrap()
        );
        assert!(sdp_addr(b"v=0\r\n").is_err());
    }

    #[test]
    fn leg_sockets_are_on_even_ports_in_range() {
        let a = leg_socket().unwrap().local_addr().unwrap().port();
        let b = leg_socket().unwrap().local_addr().unwrap().port();
        for p in [a, b] {
            assert!(
                p % 2 == 0 && (LEG_PORTS.0..=LEG_PORTS.1).contains(&p),
                "{p}"
            );
        }
        assert_ne!(a, b);
    }

    #[test]
    fn window_bounds() {
        let w = Window {
            start: Instant::now(),
            from_ns: 10,
            to_ns: 20,
        };
        assert!(!w.measured(9));
        assert!(w.measured(10));
        assert!(!w.measured(20));
    }
}
