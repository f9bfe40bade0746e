//! rtp-load: N calls of paced G.711 (50 packets/s on each leg, both ways)
//! through a media relay, measuring what a carrier asks of one: relayed
//! packets per second, loss, one-way latency p50/p99, jitter, and the
//! relay's own CPU (from `/proc/PID/stat`) over the measured window.
//!
//! Each leg has its own address on loopback (`127.x.y.z`) and is paced on
//! one of the generator's threads (`codeb_benches::rtp_stream`: a few
//! shared sockets, `sendmmsg`/`recvmmsg` batches, each datagram with its
//! leg's source address). Every packet carries its send time, so latency
//! is measured from the moment it left the generator to the moment the
//! kernel queued it, back from the relay, on the generator's socket.
//!
//! Relays:
//! * `switch`: real calls through a running `codeb-switch` over SIP, as a
//!   deployment makes them. The generator is the caller (INVITE with SDP
//!   to `--sip`, for `--did`) and the callee (the switch routes the DID to
//!   a user whose fixed contact is `--uas`, where the generator answers
//!   200 with SDP); BYE ends every call after each line.
//! * `rtpengine`: calls made with the ng protocol (`offer`/`answer`,
//!   bencode over UDP) at `--ng`.
//! * `both`: for each N, the switch and then rtpengine, and the ratio of
//!   their calls per core.
//!
//! ```text
//! rtp-load --target both --sip 127.0.0.1:5060 --uas 127.0.0.1:5090 \
//!          --ng 127.0.0.1:22222 --switch-pid $(pidof codeb-switch) \
//!          --rtpengine-pid $(pidof rtpengine) --calls 500,1000,1500 --seconds 10
//! ```
//! `benches/relay_vs_rtpengine.sh` starts both relays and runs that.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use codeb_benches::latency::Samples;
use codeb_benches::proc_cpu::load_average;
use codeb_benches::rtp_stream::{
    Endpoint, HEADER, PAYLOAD, Traffic, WARMUP, Window, leg_addr, measure, sdp, sdp_addr, tick,
};
use codeb_benches::sip_agent::Agent;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// INVITEs outstanding at once while calls are set up.
const SETUP_WINDOW: usize = 100;
/// How long setting up (or tearing down) one line's calls may take.
const SIGNALLING_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Switch,
    Rtpengine,
    Both,
}

struct Args {
    target: Target,
    ng: SocketAddr,
    sip: SocketAddr,
    uas: SocketAddr,
    did: String,
    switch_pid: Option<u32>,
    rtpengine_pid: Option<u32>,
    calls: Vec<usize>,
    seconds: u64,
    threads: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        target: Target::Switch,
        ng: "127.0.0.1:22222".parse()?,
        sip: "127.0.0.1:5060".parse()?,
        uas: "127.0.0.1:5090".parse()?,
        did: "5000".into(),
        switch_pid: None,
        rtpengine_pid: None,
        calls: vec![100],
        seconds: 10,
        threads: 1,
    };
    let mut target = None;
    let mut pid = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => {
                target = Some(match value()?.as_str() {
                    "switch" => Target::Switch,
                    "rtpengine" => Target::Rtpengine,
                    "both" => Target::Both,
                    other => bail!("--target {other}: switch, rtpengine or both"),
                });
            }
            "--ng" => a.ng = value()?.parse()?,
            "--sip" => a.sip = value()?.parse()?,
            "--uas" => a.uas = value()?.parse()?,
            "--did" => a.did = value()?,
            "--pid" => pid = Some(value()?.parse()?),
            "--switch-pid" => a.switch_pid = Some(value()?.parse()?),
            "--rtpengine-pid" => a.rtpengine_pid = Some(value()?.parse()?),
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
    a.target = target.context("--target switch|rtpengine|both is required")?;
    // `--pid` names the one relay measured.
    match (a.target, pid) {
        (Target::Switch, Some(p)) => a.switch_pid = Some(p),
        (Target::Rtpengine, Some(p)) => a.rtpengine_pid = Some(p),
        (Target::Both, Some(_)) => {
            bail!("with --target both, give --switch-pid and --rtpengine-pid")
        }
        (_, None) => {}
    }
    if a.threads == 0 || a.calls.is_empty() || a.calls.contains(&0) {
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

/// Sets up `n` calls through rtpengine: their Call-IDs and two legs each.
fn rtpengine_calls(
    ng: &mut Ng,
    n: usize,
    run: u64,
) -> anyhow::Result<(Vec<String>, Vec<Endpoint>)> {
    let mut ids = Vec::with_capacity(n);
    let mut legs = Vec::with_capacity(2 * n);
    for i in 0..n {
        let a = leg_addr()?;
        let b = leg_addr()?;
        let id = format!("load-{run}-{i}");
        let offer = ng.command(vec![
            ("command", B::Str(b"offer".to_vec())),
            ("call-id", B::Str(id.clone().into_bytes())),
            ("from-tag", B::Str(b"a".to_vec())),
            ("sdp", B::Str(sdp(a).into_bytes())),
            (
                "replace",
                B::List(vec![
                    B::Str(b"origin".to_vec()),
                    B::Str(b"session-connection".to_vec()),
                ]),
            ),
        ])?;
        let to_b = sdp_addr(offer.get("sdp").context("offer without sdp")?.as_bytes())?;
        let answer = ng.command(vec![
            ("command", B::Str(b"answer".to_vec())),
            ("call-id", B::Str(id.clone().into_bytes())),
            ("from-tag", B::Str(b"a".to_vec())),
            ("to-tag", B::Str(b"b".to_vec())),
            ("sdp", B::Str(sdp(b).into_bytes())),
        ])?;
        let to_a = sdp_addr(answer.get("sdp").context("answer without sdp")?.as_bytes())?;
        // A sends to the port rtpengine gave A (the answer's); B to the
        // offer's.
        ids.push(id);
        legs.push(Endpoint { local: a, to: to_a });
        legs.push(Endpoint { local: b, to: to_b });
    }
    Ok((ids, legs))
}

/// Sets up `n` calls through the switch: the caller's and the callee's leg
/// of each.
fn switch_calls(agent: &mut Agent, did: &str, n: usize) -> anyhow::Result<Vec<Endpoint>> {
    let mut legs = Vec::with_capacity(2 * n);
    let (mut placed, mut answered) = (0usize, 0usize);
    let deadline = Instant::now() + SIGNALLING_TIMEOUT;
    let base = agent.tally();
    loop {
        let t = agent.tally();
        let settled = (t.placed_up + t.placed_failed + t.placed_ended)
            - (base.placed_up + base.placed_failed + base.placed_ended);
        while placed < n && placed - settled < SETUP_WINDOW {
            agent.place(did)?;
            placed += 1;
        }
        for leg in agent.take_placed() {
            legs.push(leg.endpoint);
        }
        for leg in agent.take_answered() {
            answered += 1;
            legs.push(leg.endpoint);
        }
        if settled >= n && answered >= t.placed_up - base.placed_up {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "setting up {n} calls took over {SIGNALLING_TIMEOUT:?}: {placed} placed, {settled} settled, {answered} answered"
            );
        }
        agent.pump(Duration::from_millis(2))?;
    }
    let failed = agent.tally().placed_failed - base.placed_failed;
    if failed > 0 {
        bail!("{failed} of {n} calls failed: {:?}", agent.failures());
    }
    Ok(legs)
}

/// Hangs up every call that is up and waits for the BYEs to be answered.
fn switch_hang_up(agent: &mut Agent, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        agent.hang_up(id)?;
    }
    let deadline = Instant::now() + SIGNALLING_TIMEOUT;
    while agent.tally().placed_up > 0 && Instant::now() < deadline {
        agent.pump(Duration::from_millis(5))?;
    }
    // The switch's BYEs to the callee legs.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        agent.pump(Duration::from_millis(5))?;
    }
    Ok(())
}

/// The relay measurement: every packet carries its send time in its first
/// eight payload bytes (the rest is µ-law silence).
struct Relay {
    window: Window,
    received: u64,
    latency: Samples,
    /// Per leg: RFC 3550 A.8 jitter on (arrival - send), µs, and the last
    /// transit time.
    jitter: Vec<Option<(f64, f64)>>,
}

impl Traffic for Relay {
    fn payload(&mut self, _leg: usize, sent_ns: u64, out: &mut [u8; PAYLOAD]) {
        out.fill(0xff);
        out[..8].copy_from_slice(&sent_ns.to_be_bytes());
    }

    fn received(&mut self, leg: usize, packet: &[u8], at_ns: u64) {
        let Some(stamp) = packet.get(HEADER..HEADER + 8) else {
            return;
        };
        let mut ns = [0u8; 8];
        ns.copy_from_slice(stamp);
        let sent_ns = u64::from_be_bytes(ns);
        if !self.window.measured(sent_ns) {
            return;
        }
        let transit = Duration::from_nanos(at_ns.saturating_sub(sent_ns));
        self.received += 1;
        self.latency.record(transit);
        if self.jitter.len() <= leg {
            self.jitter.resize(leg + 1, None);
        }
        let t = transit.as_secs_f64() * 1e6;
        self.jitter[leg] = Some(match self.jitter[leg] {
            Some((j, prev)) => (j + ((t - prev).abs() - j) / 16.0, t),
            None => (0.0, t),
        });
    }
}

/// One measured line.
struct Line {
    calls: usize,
    relay_pps: f64,
    cpu: Option<f64>,
}

impl Line {
    /// Calls one fully busy core would carry at this load's cost.
    fn per_core(&self) -> Option<f64> {
        self.cpu.filter(|c| *c > 0.0).map(|c| self.calls as f64 / c)
    }
}

fn run_line(
    name: &str,
    legs: Vec<Endpoint>,
    calls: usize,
    a: &Args,
    pid: Option<u32>,
) -> anyhow::Result<Line> {
    let load = load_average();
    let run = measure(legs, a.threads, a.seconds, pid, |window| Relay {
        window,
        received: 0,
        latency: Samples::default(),
        jitter: Vec::new(),
    })?;
    let secs = run.window.as_secs_f64();
    let mut latency = Samples::default();
    let (mut received, mut jitter_sum, mut jitter_legs) = (0u64, 0f64, 0u64);
    for t in run.traffic {
        received += t.received;
        latency.merge(t.latency);
        for (j, _) in t.jitter.into_iter().flatten() {
            jitter_sum += j;
            jitter_legs += 1;
        }
    }
    latency.finish();
    let sent = run.paced.sent;
    let loss = if sent == 0 {
        0.0
    } else {
        100.0 * sent.saturating_sub(received) as f64 / sent as f64
    };
    let line = Line {
        calls,
        relay_pps: received as f64 / secs,
        cpu: run.cpu,
    };
    println!(
        "{:>9} {:>6} {:>10.0} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>9.1} {:>9} {:>10} {:>8.1}ms {:>7} {:>5}",
        name,
        calls,
        sent as f64 / secs,
        line.relay_pps,
        loss,
        latency.percentile_ms(50.0),
        latency.percentile_ms(99.0),
        if jitter_legs == 0 {
            0.0
        } else {
            jitter_sum / jitter_legs as f64
        },
        line.cpu
            .map_or("n/a".to_owned(), |c| format!("{:.0}%", c * 100.0)),
        line.per_core()
            .map_or("n/a".to_owned(), |c| format!("{c:.0}")),
        run.paced.max_late.as_secs_f64() * 1000.0,
        run.gen_cpu
            .map_or("n/a".to_owned(), |c| format!("{:.0}%", c * 100.0)),
        load,
    );
    // Under 99% of the packets due: the generator, not the relay, was the
    // limit, and every figure of the line says more about it.
    let due = calls as f64 * 2.0 * 50.0 * secs;
    if (sent as f64) < 0.99 * due {
        println!(
            "{:>9} {:>6} the generator sent {:.0}% of the packets due: not a measurement of the relay",
            "",
            calls,
            100.0 * sent as f64 / due
        );
    }
    // The generator's own losses are not the relay's: said, not hidden.
    let drops = run.gen_drops.unwrap_or(0);
    if drops > 0 || run.paced.send_failed > 0 {
        println!(
            "{:>9} {:>6} the generator's sockets dropped {drops} datagrams (receive buffer full) and failed {} sends: part of the loss above is the generator's",
            "", calls, run.paced.send_failed
        );
    }
    if run.paced.stray > 0 {
        println!(
            "{:>9} {:>6} {} datagrams reached no leg of this line",
            "", calls, run.paced.stray
        );
    }
    Ok(line)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    println!(
        "threads {}  tick {} us  window {} s after {} s warm-up  (G.711 20 ms, both legs, 50 pps each; relay CPU is the relay's, % of one core; gen CPU the generator's; load is the 1-minute load average at the line's start)",
        a.threads,
        tick().as_micros(),
        a.seconds,
        WARMUP.as_secs()
    );
    println!(
        "{:>9} {:>6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>10} {:>7} {:>5}",
        "relay",
        "calls",
        "sent pps",
        "relay pps",
        "loss %",
        "p50 ms",
        "p99 ms",
        "jitter us",
        "relay CPU",
        "calls/core",
        "gen late",
        "gen CPU",
        "load"
    );
    let switch = matches!(a.target, Target::Switch | Target::Both);
    let rtpengine = matches!(a.target, Target::Rtpengine | Target::Both);
    let mut agent = if switch {
        Some(Agent::new(a.sip, a.uas)?)
    } else {
        None
    };
    let mut ng = if rtpengine {
        Some(Ng::new(a.ng)?)
    } else {
        None
    };
    for (run, &n) in a.calls.iter().enumerate() {
        let mut sw_line = None;
        if let Some(agent) = &mut agent {
            let legs = switch_calls(agent, &a.did, n)?;
            let ids: Vec<String> = agent.up_calls();
            sw_line = Some(run_line("switch", legs, n, &a, a.switch_pid)?);
            switch_hang_up(agent, &ids)?;
        }
        let mut re_line = None;
        if let Some(ng) = &mut ng {
            let (ids, legs) = rtpengine_calls(ng, n, run as u64)?;
            re_line = Some(run_line("rtpengine", legs, n, &a, a.rtpengine_pid)?);
            for id in ids {
                let _ = ng.command(vec![
                    ("command", B::Str(b"delete".to_vec())),
                    ("call-id", B::Str(id.into_bytes())),
                ]);
            }
        }
        if let (Some(s), Some(r)) = (sw_line, re_line) {
            let ratio = s.per_core().zip(r.per_core()).map(|(s, r)| s / r);
            println!(
                "{:>9} {:>6} switch/rtpengine: relayed pps {:.3}x, calls per core {}",
                "ratio",
                n,
                s.relay_pps / r.relay_pps.max(1.0),
                ratio.map_or("n/a".to_owned(), |x| format!("{x:.2}x")),
            );
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
}
