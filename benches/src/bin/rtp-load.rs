//! rtp-load: N calls of paced G.711 (50 packets/s on each leg, both ways)
//! through a media relay, measuring what a carrier asks of one: relayed
//! packets per second, loss, one-way latency p50/p99, jitter, and the
//! relay's own CPU (from `/proc/PID/stat`) over the measured window.
//!
//! Each leg is its own UDP socket on loopback, paced on one of the
//! generator's threads (each with its own reactor: io_uring or epoll).
//! Every packet carries its send time, so latency is measured from the
//! moment it left the generator to the moment it came back from the relay.
//!
//! Relays:
//! * `rtpengine`: calls made with the ng protocol (`offer`/`answer`,
//!   bencode over UDP) at `--ng`.
//!
//! ```text
//! rtp-load --target rtpengine --ng 127.0.0.1:22222 --pid $(pidof rtpengine) \
//!          --calls 500,1000,1500 --seconds 10
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use codeb_benches::latency::Samples;
use codeb_benches::proc_cpu::cpu_seconds;
use codeb_io::{Event, Options, Reactor, SocketId};
use codeb_sip::sdp::{Sdp, SdpLimits};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PTIME: Duration = Duration::from_millis(20);
const PAYLOAD: usize = 160;
const WARMUP: Duration = Duration::from_secs(3);
const DRAIN: Duration = Duration::from_millis(500);

struct Args {
    target: String,
    ng: SocketAddr,
    pid: Option<u32>,
    calls: Vec<usize>,
    seconds: u64,
    threads: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        target: String::new(),
        ng: "127.0.0.1:22222".parse()?,
        pid: None,
        calls: vec![100],
        seconds: 10,
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => a.target = value()?,
            "--ng" => a.ng = value()?.parse()?,
            "--pid" => a.pid = Some(value()?.parse()?),
            "--calls" => {
                a.calls = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--seconds" => a.seconds = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.target != "rtpengine" {
        bail!("--target rtpengine is required (the relay to measure)");
    }
    if a.threads == 0 || a.calls.is_empty() {
        bail!("--threads and --calls must be positive");
    }
    Ok(a)
}

// ---- the ng protocol (bencode over UDP) ----

enum B {
    Str(Vec<u8>),
    List(Vec<B>),
    Dict(Vec<(Vec<u8>, B)>),
}

fn bencode(b: &B, out: &mut Vec<u8>) {
    match b {
        B::Str(s) => {
            out.extend_from_slice(s.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(s);
        }
        B::List(l) => {
            out.push(b'l');
            for x in l {
                bencode(x, out);
            }
            out.push(b'e');
        }
        B::Dict(d) => {
            out.push(b'd');
            let mut sorted: Vec<&(Vec<u8>, B)> = d.iter().collect();
            sorted.sort_by(|x, y| x.0.cmp(&y.0));
            for (k, v) in sorted {
                bencode(&B::Str(k.clone()), out);
                bencode(v, out);
            }
            out.push(b'e');
        }
    }
}

/// The string values of a bencoded reply's top-level dictionary (other
/// values are skipped, bounded by the datagram).
fn bdecode_strings(buf: &[u8]) -> anyhow::Result<BTreeMap<String, String>> {
    fn item(buf: &[u8], at: &mut usize, depth: u32) -> anyhow::Result<Option<Vec<u8>>> {
        if depth > 32 {
            bail!("bencode nested too deep");
        }
        match buf.get(*at) {
            Some(b'i') => {
                let end = buf[*at..]
                    .iter()
                    .position(|&c| c == b'e')
                    .context("bencode integer")?;
                *at += end + 1;
                Ok(None)
            }
            Some(b'l' | b'd') => {
                *at += 1;
                while buf.get(*at) != Some(&b'e') {
                    if *at >= buf.len() {
                        bail!("bencode list/dict not closed");
                    }
                    item(buf, at, depth + 1)?;
                }
                *at += 1;
                Ok(None)
            }
            Some(c) if c.is_ascii_digit() => {
                let colon = buf[*at..]
                    .iter()
                    .position(|&c| c == b':')
                    .context("bencode string")?;
                let len: usize = std::str::from_utf8(&buf[*at..*at + colon])?.parse()?;
                let start = *at + colon + 1;
                let end = start.checked_add(len).context("bencode length")?;
                let s = buf.get(start..end).context("bencode string past the end")?;
                *at = end;
                Ok(Some(s.to_vec()))
            }
            _ => bail!("bad bencode at {at}"),
        }
    }
    let mut out = BTreeMap::new();
    if buf.first() != Some(&b'd') {
        bail!("reply is not a dictionary");
    }
    let mut at = 1;
    while buf.get(at) != Some(&b'e') {
        let key = item(buf, &mut at, 1)?.context("dictionary key")?;
        let value_at = at;
        if let Some(v) = item(buf, &mut at, 1)?
            && value_at < buf.len()
        {
            out.insert(
                String::from_utf8_lossy(&key).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
        if at >= buf.len() {
            bail!("dictionary not closed");
        }
    }
    Ok(out)
}

struct Ng {
    sock: UdpSocket,
    to: SocketAddr,
    cookie: u64,
}

impl Ng {
    fn new(to: SocketAddr) -> anyhow::Result<Ng> {
        let sock = UdpSocket::bind((LO, 0))?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(Ng {
            sock,
            to,
            cookie: 0,
        })
    }

    fn command(&mut self, fields: Vec<(&str, B)>) -> anyhow::Result<BTreeMap<String, String>> {
        self.cookie += 1;
        let cookie = format!("c{}", self.cookie);
        let mut msg = format!("{cookie} ").into_bytes();
        let dict = B::Dict(
            fields
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        );
        bencode(&dict, &mut msg);
        let mut buf = vec![0u8; 65_536];
        for _ in 0..3 {
            self.sock.send_to(&msg, self.to)?;
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let reply = &buf[..n];
            let Some(body) = reply.strip_prefix(format!("{cookie} ").as_bytes()) else {
                continue;
            };
            let map = bdecode_strings(body)?;
            if map.get("result").map(String::as_str) != Some("ok") {
                bail!("ng error: {map:?}");
            }
            return Ok(map);
        }
        bail!("no answer from the ng socket at {}", self.to)
    }
}

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
}

/// The audio address of an SDP (the project's parser, bounded).
fn sdp_addr(sdp: &str) -> anyhow::Result<SocketAddr> {
    let parsed = Sdp::parse(sdp.as_bytes(), &SdpLimits::default())
        .map_err(|e| anyhow::anyhow!("SDP: {e}"))?;
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

/// One generator endpoint: its socket and where it sends.
struct Endpoint {
    sock: UdpSocket,
    to: SocketAddr,
}

/// Sets up `n` calls through rtpengine; two endpoints per call.
fn rtpengine_calls(
    ng: &mut Ng,
    n: usize,
    run: u64,
) -> anyhow::Result<Vec<(String, Endpoint, Endpoint)>> {
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        let a = UdpSocket::bind((LO, 0))?;
        let b = UdpSocket::bind((LO, 0))?;
        let id = format!("load-{run}-{i}");
        let offer = ng.command(vec![
            ("command", B::Str(b"offer".to_vec())),
            ("call-id", B::Str(id.clone().into_bytes())),
            ("from-tag", B::Str(b"a".to_vec())),
            ("sdp", B::Str(sdp(a.local_addr()?.port()).into_bytes())),
            (
                "replace",
                B::List(vec![
                    B::Str(b"origin".to_vec()),
                    B::Str(b"session-connection".to_vec()),
                ]),
            ),
        ])?;
        let to_b = sdp_addr(offer.get("sdp").context("offer without sdp")?)?;
        let answer = ng.command(vec![
            ("command", B::Str(b"answer".to_vec())),
            ("call-id", B::Str(id.clone().into_bytes())),
            ("from-tag", B::Str(b"a".to_vec())),
            ("to-tag", B::Str(b"b".to_vec())),
            ("sdp", B::Str(sdp(b.local_addr()?.port()).into_bytes())),
        ])?;
        let to_a = sdp_addr(answer.get("sdp").context("answer without sdp")?)?;
        // A sends to the port rtpengine gave A (the answer's); B to the
        // offer's.
        calls.push((
            id,
            Endpoint { sock: a, to: to_a },
            Endpoint { sock: b, to: to_b },
        ));
    }
    Ok(calls)
}

/// What one generator thread measured.
#[derive(Default)]
struct Tally {
    sent: u64,
    received: u64,
    latency: Samples,
    jitter_sum_us: f64,
    jitter_legs: u64,
    max_late: Duration,
}

struct LegState {
    id: SocketId,
    to: SocketAddr,
    seq: u16,
    ts: u32,
    ssrc: u32,
    /// RFC 3550 A.8 on (arrival - send), in µs.
    jitter_us: f64,
    last_transit_us: Option<f64>,
}

/// Paces `endpoints` (one packet per leg per 20 ms, spread evenly) and
/// counts what comes back, for packets sent in [measure_from, measure_to).
fn run_thread(
    endpoints: Vec<Endpoint>,
    start: Instant,
    measure_from: Instant,
    measure_to: Instant,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Tally> {
    let mut reactor = Reactor::new(&Options {
        ring_entries: 4096,
        buffers: 4096,
        buffer_len: 2048,
        max_connections: 0,
        ..Options::default()
    })?;
    let mut legs = Vec::with_capacity(endpoints.len());
    let mut by_socket: Vec<usize> = Vec::new();
    for (i, e) in endpoints.into_iter().enumerate() {
        let id = reactor.add_udp(e.sock)?;
        if by_socket.len() <= id.0 as usize {
            by_socket.resize(id.0 as usize + 1, usize::MAX);
        }
        by_socket[id.0 as usize] = i;
        legs.push(LegState {
            id,
            to: e.to,
            seq: (i as u16).wrapping_mul(7),
            ts: (i as u32).wrapping_mul(1000),
            ssrc: 0x1000_0000 + i as u32,
            jitter_us: 0.0,
            last_transit_us: None,
        });
    }
    let n = legs.len().max(1);
    let slot = PTIME / u32::try_from(n).unwrap_or(u32::MAX);
    let mut tally = Tally::default();
    let mut cycle = Instant::now();
    let mut cursor = 0usize;
    let mut pkt = [0u8; 12 + PAYLOAD];
    pkt[0] = 0x80;
    pkt[12..].fill(0xff);
    let measure_from_ns = measure_from.duration_since(start).as_nanos() as u64;
    let measure_to_ns = measure_to.duration_since(start).as_nanos() as u64;
    let mut received: Vec<(usize, u64, Instant)> = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Send everything due.
        loop {
            let due = cycle + slot * u32::try_from(cursor).unwrap_or(0);
            if due > now {
                break;
            }
            let late = now.saturating_duration_since(due);
            let sending = now < measure_to;
            if let Some(leg) = legs.get_mut(cursor)
                && sending
            {
                pkt[2..4].copy_from_slice(&leg.seq.to_be_bytes());
                pkt[4..8].copy_from_slice(&leg.ts.to_be_bytes());
                pkt[8..12].copy_from_slice(&leg.ssrc.to_be_bytes());
                let sent_ns = Instant::now().duration_since(start).as_nanos() as u64;
                pkt[12..20].copy_from_slice(&sent_ns.to_be_bytes());
                let _ = reactor.send_to(leg.id, leg.to, &pkt);
                leg.seq = leg.seq.wrapping_add(1);
                leg.ts = leg.ts.wrapping_add(160);
                if sent_ns >= measure_from_ns && sent_ns < measure_to_ns {
                    tally.sent += 1;
                    tally.max_late = tally.max_late.max(late);
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
                && data.len() >= 20
                && let Some(&leg) = by_socket.get(socket.0 as usize)
            {
                let mut ns = [0u8; 8];
                ns.copy_from_slice(&data[12..20]);
                received.push((leg, u64::from_be_bytes(ns), Instant::now()));
            }
        })?;
        for &(leg, sent_ns, at) in &received {
            if sent_ns < measure_from_ns || sent_ns >= measure_to_ns {
                continue;
            }
            let arrival_ns = at.duration_since(start).as_nanos() as u64;
            let transit = Duration::from_nanos(arrival_ns.saturating_sub(sent_ns));
            tally.received += 1;
            tally.latency.record(transit);
            if let Some(l) = legs.get_mut(leg) {
                let t = transit.as_secs_f64() * 1e6;
                if let Some(prev) = l.last_transit_us {
                    l.jitter_us += ((t - prev).abs() - l.jitter_us) / 16.0;
                }
                l.last_transit_us = Some(t);
            }
        }
    }
    for l in &legs {
        if l.last_transit_us.is_some() {
            tally.jitter_sum_us += l.jitter_us;
            tally.jitter_legs += 1;
        }
    }
    Ok(tally)
}

fn measure(
    endpoints: Vec<Endpoint>,
    threads: usize,
    seconds: u64,
    pid: Option<u32>,
) -> anyhow::Result<(Tally, Option<f64>, f64)> {
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let window = Duration::from_secs(seconds);
    let measure_to = measure_from + window;
    let stop = Arc::new(AtomicBool::new(false));
    let mut shares: Vec<Vec<Endpoint>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, e) in endpoints.into_iter().enumerate() {
        shares[i % threads].push(e);
    }
    let mut handles = Vec::new();
    for share in shares {
        let stop = Arc::clone(&stop);
        handles.push(std::thread::spawn(move || {
            run_thread(share, start, measure_from, measure_to, stop)
        }));
    }
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let cpu_before = pid.and_then(cpu_seconds);
    std::thread::sleep(measure_to.saturating_duration_since(Instant::now()));
    let cpu_after = pid.and_then(cpu_seconds);
    std::thread::sleep(DRAIN);
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for h in handles {
        let t = h
            .join()
            .map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
        total.sent += t.sent;
        total.received += t.received;
        total.latency.merge(t.latency);
        total.jitter_sum_us += t.jitter_sum_us;
        total.jitter_legs += t.jitter_legs;
        total.max_late = total.max_late.max(t.max_late);
    }
    let cpu = cpu_before
        .zip(cpu_after)
        .map(|(b, a)| (a - b) / window.as_secs_f64());
    Ok((total, cpu, window.as_secs_f64()))
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    println!(
        "target {}  threads {}  window {} s after {} s warm-up  (G.711 20 ms, both legs, 50 pps each)",
        a.target,
        a.threads,
        a.seconds,
        WARMUP.as_secs()
    );
    println!(
        "{:>6} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10} {:>11} {:>9}",
        "calls",
        "sent pps",
        "relay pps",
        "loss %",
        "p50 ms",
        "p99 ms",
        "jitter us",
        "relay CPU",
        "gen late"
    );
    let mut ng = Ng::new(a.ng)?;
    for (run, &n) in a.calls.iter().enumerate() {
        let calls = rtpengine_calls(&mut ng, n, run as u64)?;
        let mut endpoints = Vec::with_capacity(2 * n);
        let mut ids = Vec::with_capacity(n);
        for (id, ea, eb) in calls {
            ids.push(id);
            endpoints.push(ea);
            endpoints.push(eb);
        }
        let (mut t, cpu, secs) = measure(endpoints, a.threads, a.seconds, a.pid)?;
        t.latency.finish();
        let loss = if t.sent == 0 {
            0.0
        } else {
            100.0 * (t.sent.saturating_sub(t.received)) as f64 / t.sent as f64
        };
        println!(
            "{:>6} {:>10.0} {:>10.0} {:>8.3} {:>10.3} {:>10.3} {:>10.1} {:>10} {:>8.1}ms",
            n,
            t.sent as f64 / secs,
            t.received as f64 / secs,
            loss,
            t.latency.percentile_ms(50.0),
            t.latency.percentile_ms(99.0),
            if t.jitter_legs == 0 {
                0.0
            } else {
                t.jitter_sum_us / t.jitter_legs as f64
            },
            cpu.map_or("n/a".to_owned(), |c| format!("{:.0}%", c * 100.0)),
            t.max_late.as_secs_f64() * 1000.0,
        );
        for id in ids {
            let _ = ng.command(vec![
                ("command", B::Str(b"delete".to_vec())),
                ("call-id", B::Str(id.into_bytes())),
            ]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trip() {
        let mut out = Vec::new();
        bencode(
            &B::Dict(vec![
                (b"sdp".to_vec(), B::Str(b"v=0".to_vec())),
                (b"flags".to_vec(), B::List(vec![B::Str(b"x".to_vec())])),
            ]),
            &mut out,
        );
        assert_eq!(out, b"d5:flagsl1:xe3:sdp3:v=0e");
        let m = bdecode_strings(b"d6:result2:ok3:sdp3:v=04:warni3ee").unwrap();
        assert_eq!(m.get("result").map(String::as_str), Some("ok"));
        assert_eq!(m.get("sdp").map(String::as_str), Some("v=0"));
        assert!(bdecode_strings(b"d6:result99:ok").is_err());
        assert!(bdecode_strings(b"x").is_err());
    }

    #[test]
    fn sdp_address() {
        let s = sdp(30000);
        assert_eq!(sdp_addr(&s).unwrap(), "127.0.0.1:30000".parse().unwrap());
        assert!(sdp_addr("v=0\r\n").is_err());
    }
}
