//! rtp-flood: a stranger spraying RTP-shaped datagrams at media ports, at a
//! fixed rate, for flood tests of a media relay (`benches/README.md`,
//! "Measured: a flood at one call's ports").
//!
//! ```text
//! rtp-flood --to 127.0.0.1:10000,127.0.0.1:10002 --pps 200000 --seconds 30 [--from 127.0.0.9]
//! ```
//!
//! The rate is split evenly over the addresses (IPv4, sent from `--from`,
//! 127.0.0.1 by default) and paced per millisecond, in `sendmmsg` batches;
//! each datagram is a 12-byte RTP header (its own SSRC, a running
//! sequence number) and 160 bytes of payload. At the end it prints what
//! it sent and the rate it reached.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use codeb_benches::udp_batch::{SendBatch, bind_any};

struct Args {
    to: Vec<SocketAddr>,
    /// The flood's source IP (another loopback address: a stranger the
    /// switch can tell from the calls' far ends by IP).
    from: Ipv4Addr,
    pps: u64,
    seconds: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        to: Vec::new(),
        from: Ipv4Addr::LOCALHOST,
        pps: 100_000,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--to" => {
                for addr in value.split(',') {
                    a.to.push(addr.parse().with_context(|| format!("--to {addr}"))?);
                }
            }
            "--from" => a.from = value.parse().context("--from")?,
            "--pps" => a.pps = value.parse().context("--pps")?,
            "--seconds" => a.seconds = value.parse().context("--seconds")?,
            _ => bail!("unknown flag {flag} (--to ADDR[,ADDR...] --pps N --seconds N --from IP)"),
        }
    }
    if a.to.is_empty() {
        bail!("--to is required");
    }
    if a.pps == 0 || a.pps > 10_000_000 {
        bail!("--pps must be 1 to 10,000,000");
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let (sock, _) = bind_any(0, 1 << 16).context("binding the flooder's socket")?;
    let to: Vec<SocketAddrV4> =
        a.to.iter()
            .map(|t| match t {
                SocketAddr::V4(v4) => Ok(*v4),
                SocketAddr::V6(_) => bail!("--to: IPv4 addresses only"),
            })
            .collect::<anyhow::Result<_>>()?;
    let mut batch = SendBatch::new();
    let start = Instant::now();
    let end = start + Duration::from_secs(a.seconds);
    let (mut sent, mut failed, mut seq) = (0u64, 0u64, 0u16);
    let mut tick = start;
    while tick < end {
        // Due by this millisecond: the total so far at the set rate.
        let ms = u64::try_from(tick.duration_since(start).as_millis()).unwrap_or(u64::MAX);
        let due = a.pps.saturating_mul(ms + 1) / 1000;
        let mut queued = sent + failed;
        while queued < due {
            let dst = to[(queued % to.len() as u64) as usize];
            seq = seq.wrapping_add(1);
            batch.push(a.from, dst, |buf| {
                let packet = &mut buf[..172];
                packet.fill(0);
                packet[0] = 0x80;
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                packet[8..12].copy_from_slice(&0x0bad_f00d_u32.to_be_bytes());
                packet.len()
            });
            queued += 1;
            if batch.is_full() || queued == due {
                let (ok, err) = batch.send(&sock);
                sent += ok as u64;
                failed += err as u64;
            }
        }
        tick += Duration::from_millis(1);
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "rtp-flood: {sent} datagrams sent ({failed} refused) in {secs:.1} s: {:.0} a second",
        sent as f64 / secs
    );
    Ok(())
}
