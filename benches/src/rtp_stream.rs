//! Paced G.711 streams on many UDP legs, the engine of the media load
//! generators (`rtp-load`, `ai-load`).
//!
//! Every leg has an address of its own on loopback (`127.x.y.z`, from
//! [`leg_addr`]) and sends one 172-byte RTP packet (PCMU, 20 ms) every
//! 20 ms, the legs' send instants spread evenly over the 20 ms; a
//! [`Traffic`] decides what the payload carries and what to make of what
//! comes back. The legs share a few sockets bound to `0.0.0.0` on even
//! ports of [`LEG_PORTS`] (`crate::udp_batch`): each datagram goes out with
//! its leg's source address (`IP_PKTINFO`) in `sendmmsg` batches, and comes
//! back through `recvmmsg` with the address it was sent to (which leg) and
//! the kernel's arrival time. So a relay sees thousands of distinct
//! sources, as it would see phones, while the generator makes one syscall
//! per batch, not per packet: one core can drive a relay at its limit.
//!
//! Pacing runs in ticks ([`tick`], 0.2 ms unless `CODEB_BENCH_TICK_US`
//! says otherwise): each tick sends every packet that has fallen due, so a
//! packet leaves up to a tick after its instant; its stamp is the clock
//! read just before its batch's `sendmmsg`. [`measure`] runs a warm-up,
//! then a measured window over which it reads the relay's CPU and the
//! generator's own from `/proc`, then a short drain.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use codeb_sip::sdp::{Sdp, SdpLimits};

use crate::proc_cpu::cpu_seconds;
use crate::udp_batch::{BATCH, RecvBatch, SendBatch, bind_any, drops, realtime_ns};

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

/// Where the generator's sockets live: even ports only, so that a relay's
/// RTCP to port + 1 finds no socket, and away from the relays' ranges
/// (`benches/relay_vs_rtpengine.sh` gives them ports below 40000).
pub const LEG_PORTS: (u16, u16) = (40_000, 59_998);
/// Sockets all legs share (a generator thread takes every
/// `threads`-th one, so this is also the most threads that get legs).
pub const SOCKETS: usize = 2;
/// Receive buffer asked for per socket: ~20k queued packets, so a
/// generator descheduled for tens of ms does not drop what the relay sent.
const RCVBUF: usize = 32 << 20;
/// Distinct leg addresses before they repeat: 127.1-254.0-249.1-250.
const ADDRESSES: u32 = 254 * 250 * 250;

/// The shared sockets and their ports.
struct Pool {
    socks: Vec<Arc<UdpSocket>>,
    ports: Vec<u16>,
}

static POOL: OnceLock<Pool> = OnceLock::new();
static NEXT_LEG: AtomicU32 = AtomicU32::new(0);

fn pool() -> std::io::Result<&'static Pool> {
    if let Some(p) = POOL.get() {
        return Ok(p);
    }
    let mut socks = Vec::with_capacity(SOCKETS);
    let mut ports = Vec::with_capacity(SOCKETS);
    let mut port = LEG_PORTS.0;
    while socks.len() < SOCKETS {
        match bind_any(port, RCVBUF) {
            Ok((s, _)) => {
                socks.push(Arc::new(s));
                ports.push(port);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
        if port >= LEG_PORTS.1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "no {SOCKETS} free even ports in {}-{}",
                    LEG_PORTS.0, LEG_PORTS.1
                ),
            ));
        }
        port += 2;
    }
    // A racing first caller may have set it: theirs stands, ours close.
    let _ = POOL.set(Pool { socks, ports });
    POOL.get()
        .ok_or_else(|| std::io::Error::other("socket pool not set"))
}

/// The next leg's address: its own IP in 127.1.0.1–127.254.249.250 on
/// one of the shared sockets' ports (the legs take the sockets in turn).
pub fn leg_addr() -> std::io::Result<SocketAddr> {
    let pool = pool()?;
    let c = NEXT_LEG.fetch_add(1, Ordering::Relaxed);
    let k = c as usize % SOCKETS;
    let j = (c / SOCKETS as u32) % ADDRESSES;
    let ip = Ipv4Addr::new(
        127,
        (1 + j / 62_500) as u8,
        ((j / 250) % 250) as u8,
        (1 + j % 250) as u8,
    );
    Ok(SocketAddr::new(IpAddr::V4(ip), pool.ports[k]))
}

/// One generator leg: its own address and where it sends.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub local: SocketAddr,
    pub to: SocketAddr,
}

/// A PCMU offer/answer with telephone-event for a leg at `addr` (what a
/// deployment's phones and trunks offer).
pub fn sdp(addr: SocketAddr) -> String {
    let (ip, port) = (addr.ip(), addr.port());
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
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

/// How long a pacing tick is: `CODEB_BENCH_TICK_US` (50–5000 µs) or
/// 200 µs.
pub fn tick() -> Duration {
    let us = std::env::var("CODEB_BENCH_TICK_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(200, |v| v.clamp(50, 5000));
    Duration::from_micros(us)
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
    /// A datagram arrived on `leg` at `at_ns` (when the kernel queued it
    /// on the generator's socket, on the [`Window`]'s clock).
    fn received(&mut self, leg: usize, packet: &[u8], at_ns: u64);
}

/// What the pacing itself did on one thread (or all of them, merged).
#[derive(Debug, Default, Clone, Copy)]
pub struct Paced {
    /// Packets sent in the measured window.
    pub sent: u64,
    /// Packets of the window the kernel refused to send.
    pub send_failed: u64,
    /// How late the latest send of the window was: the generator's own
    /// health (a late generator makes every other figure suspect). Up to
    /// one [`tick`] is by design.
    pub max_late: Duration,
    /// Datagrams that reached no leg of this run (a previous run's, or
    /// addressed to nothing the generator knows).
    pub stray: u64,
}

impl Paced {
    fn merge(&mut self, o: Paced) {
        self.sent += o.sent;
        self.send_failed += o.send_failed;
        self.max_late = self.max_late.max(o.max_late);
        self.stray += o.stray;
    }
}

/// A leg as a thread gets it: its index in [`measure`]'s list, the index
/// of its socket among the thread's, and its addresses.
type ThreadLeg = (usize, usize, Endpoint);

struct LegState {
    index: usize,
    /// Index into the thread's sockets.
    sock: usize,
    ip: Ipv4Addr,
    to: SocketAddrV4,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

/// Reads and discards what is queued on `socks` (a previous run's tail).
fn discard(socks: &[Arc<UdpSocket>], rb: &mut RecvBatch) -> anyhow::Result<()> {
    for s in socks {
        while rb.recv(s)? > 0 {}
    }
    Ok(())
}

/// Paces `legs` (one packet per leg per 20 ms, spread evenly) on `socks`
/// until `stop`, sending only before the window's end.
fn run_thread<T: Traffic>(
    socks: Vec<Arc<UdpSocket>>,
    mut legs: Vec<ThreadLeg>,
    mut traffic: T,
    window: Window,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Paced, T)> {
    // Consecutive send instants on one socket, so a tick's packets make
    // one or two batches.
    legs.sort_by_key(|(index, sock, _)| (*sock, *index));
    let mut states = Vec::with_capacity(legs.len());
    // Per socket: (leg IP, position in `states`), sorted for lookup.
    let mut by_ip: Vec<Vec<(u32, usize)>> = vec![Vec::new(); socks.len()];
    for (i, (index, sock, e)) in legs.into_iter().enumerate() {
        let (IpAddr::V4(ip), SocketAddr::V4(to)) = (e.local.ip(), e.to) else {
            bail!("IPv4 legs only: {} -> {}", e.local, e.to);
        };
        by_ip[sock].push((u32::from(ip), i));
        states.push(LegState {
            index,
            sock,
            ip,
            to,
            seq: (i as u16).wrapping_mul(7),
            ts: (i as u32).wrapping_mul(1000),
            ssrc: 0x1000_0000 + index as u32,
        });
    }
    for t in &mut by_ip {
        t.sort_unstable();
    }
    let mut sb = SendBatch::new();
    let mut rb = RecvBatch::new();
    discard(&socks, &mut rb)?;
    let tick = tick();
    let n = states.len().max(1);
    let slot = PTIME / u32::try_from(n).unwrap_or(u32::MAX);
    let mut paced = Paced::default();
    let mut cycle = Instant::now();
    let mut cursor = 0usize;
    let mut payload = [0u8; PAYLOAD];
    let send_until = window.start + Duration::from_nanos(window.to_ns);
    let due_at = |cycle: Instant, cursor: usize| cycle + slot * u32::try_from(cursor).unwrap_or(0);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Send everything due, a batch per run of legs on one socket.
        while !states.is_empty() && due_at(cycle, cursor) <= now {
            let first_due = due_at(cycle, cursor);
            let sock = states[cursor].sock;
            let stamp = Instant::now();
            let sent_ns = window.ns(stamp);
            let sending = stamp < send_until;
            loop {
                let leg = &mut states[cursor];
                if sending {
                    traffic.payload(leg.index, sent_ns, &mut payload);
                    let (seq, ts, ssrc) = (leg.seq, leg.ts, leg.ssrc);
                    sb.push(leg.ip, leg.to, |pkt| {
                        pkt[0] = 0x80;
                        pkt[1] = 0;
                        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                        pkt[4..8].copy_from_slice(&ts.to_be_bytes());
                        pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
                        pkt[HEADER..HEADER + PAYLOAD].copy_from_slice(&payload);
                        HEADER + PAYLOAD
                    });
                    leg.seq = leg.seq.wrapping_add(1);
                    leg.ts = leg.ts.wrapping_add(PAYLOAD as u32);
                }
                cursor += 1;
                if cursor >= n {
                    cursor = 0;
                    cycle += PTIME;
                    break;
                }
                if sb.is_full() || states[cursor].sock != sock || due_at(cycle, cursor) > now {
                    break;
                }
            }
            if !sb.is_empty() {
                let (ok, failed) = sb.send(&socks[sock]);
                if window.measured(sent_ns) {
                    paced.sent += ok as u64;
                    paced.send_failed += failed as u64;
                    paced.max_late = paced
                        .max_late
                        .max(stamp.saturating_duration_since(first_due));
                }
            }
        }
        // Read everything that came back.
        for (k, s) in socks.iter().enumerate() {
            loop {
                let got = rb.recv(s)?;
                if got == 0 {
                    break;
                }
                let (mono, rt) = (window.ns(Instant::now()), realtime_ns());
                for i in 0..got {
                    let Some(r) = rb.get(i) else { break };
                    // RTCP (payload types 200-204) is not media.
                    if r.truncated || r.data.get(1).is_some_and(|pt| (200..=204).contains(pt)) {
                        continue;
                    }
                    let leg = r.to.and_then(|ip| {
                        let t = &by_ip[k];
                        t.binary_search_by_key(&u32::from(ip), |e| e.0)
                            .ok()
                            .map(|at| t[at].1)
                    });
                    let Some(leg) = leg else {
                        paced.stray += 1;
                        continue;
                    };
                    let at_ns = match r.kernel_ns {
                        Some(k) => mono.saturating_sub(rt.saturating_sub(k)),
                        None => mono,
                    };
                    traffic.received(states[leg].index, r.data, at_ns);
                }
                if got < BATCH {
                    break;
                }
            }
        }
        // Sleep to the next instant due, but at least a tick.
        let next = due_at(cycle, cursor).max(now + tick);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
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
    /// The generator's own CPU over the window (all its threads).
    pub gen_cpu: Option<f64>,
    /// Datagrams the generator's sockets dropped for a full receive buffer
    /// from the window's start to the drain's end (its loss, not the
    /// relay's).
    pub gen_drops: Option<u64>,
    pub window: Duration,
}

/// Streams on `endpoints` (leg `i` is `endpoints[i]`, its local address
/// from [`leg_addr`]) from up to `threads` threads, each with its own
/// [`Traffic`] from `traffic`: warm-up, a window of `seconds` over which
/// the CPU of `pid` is read, then a drain.
pub fn measure<T: Traffic>(
    endpoints: Vec<Endpoint>,
    threads: usize,
    seconds: u64,
    pid: Option<u32>,
    traffic: impl Fn(Window) -> T,
) -> anyhow::Result<Run<T>> {
    let pool = pool()?;
    let threads = threads.clamp(1, SOCKETS);
    let mut shares: Vec<(Vec<Arc<UdpSocket>>, Vec<ThreadLeg>)> =
        (0..threads).map(|_| (Vec::new(), Vec::new())).collect();
    // Socket k goes to thread k % threads, as its index k / threads there.
    for (k, s) in pool.socks.iter().enumerate() {
        shares[k % threads].0.push(Arc::clone(s));
    }
    for (i, e) in endpoints.into_iter().enumerate() {
        let k = pool
            .ports
            .iter()
            .position(|&p| p == e.local.port())
            .with_context(|| format!("{} is not a generator leg address", e.local))?;
        shares[k % threads].1.push((i, k / threads, e));
    }
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
    let mut handles = Vec::new();
    for (socks, legs) in shares {
        let stop = Arc::clone(&stop);
        let t = traffic(window);
        handles.push(std::thread::spawn(move || {
            run_thread(socks, legs, t, window, stop)
        }));
    }
    let me = std::process::id();
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let drops_before = drops(&pool.ports);
    let cpu_before = pid.and_then(cpu_seconds);
    let gen_before = cpu_seconds(me);
    std::thread::sleep(measure_to.saturating_duration_since(Instant::now()));
    let cpu_after = pid.and_then(cpu_seconds);
    let gen_after = cpu_seconds(me);
    std::thread::sleep(DRAIN);
    stop.store(true, Ordering::Relaxed);
    let secs = seconds.max(1) as f64;
    let mut run = Run {
        paced: Paced::default(),
        traffic: Vec::with_capacity(threads),
        cpu: cpu_before.zip(cpu_after).map(|(b, a)| (a - b) / secs),
        gen_cpu: gen_before.zip(gen_after).map(|(b, a)| (a - b) / secs),
        gen_drops: None,
        window: Duration::from_secs(seconds),
    };
    for h in handles {
        let (p, t) = h
            .join()
            .map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
        run.paced.merge(p);
        run.traffic.push(t);
    }
    run.gen_drops = drops_before
        .zip(drops(&pool.ports))
        .map(|(b, a)| a.saturating_sub(b));
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_address() {
        let s = sdp("127.0.0.1:30000".parse().unwrap());
        assert_eq!(
            sdp_addr(s.as_bytes()).unwrap(),
            "127.0.0.1:30000".parse().unwrap()
        );
        assert!(sdp_addr(b"v=0\r\n").is_err());
    }

    #[test]
    fn leg_addresses_are_distinct_on_even_ports_in_range() {
        let addrs: Vec<SocketAddr> = (0..3 * SOCKETS).map(|_| leg_addr().unwrap()).collect();
        for a in &addrs {
            let p = a.port();
            assert!(
                p % 2 == 0 && (LEG_PORTS.0..=LEG_PORTS.1).contains(&p),
                "{a}"
            );
            assert!(a.ip().is_loopback() && a.ip() != Ipv4Addr::LOCALHOST, "{a}");
        }
        let mut unique = addrs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), addrs.len());
        let s = sdp(addrs[0]);
        assert_eq!(sdp_addr(s.as_bytes()).unwrap(), addrs[0]);
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
