//! Control-plane load tool.
//!
//! `cp-load seed`: fills a database with N calls and N transcripts for one
//! tenant (through the same `Store` the server uses).
//!
//! `cp-load run`: drives one URL over keep-alive HTTP/1.1 connections,
//! either as fast as the connections allow (`--rate 0`) or open-loop at a
//! fixed rate. In fixed-rate mode a request's latency counts from the moment
//! it was due, not from when a free connection sent it, so a stalled server
//! cannot hide its queueing (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use codeb::store::{NewCall, Store, TranscriptRecord, Turn};
use codeb_benches::latency::Samples;
use codeb_benches::proc_cpu::cpu_seconds;
use codeb_types::{CallId, CallStatus, E164, UtcMillis};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

#[derive(Parser)]
#[command(
    name = "cp-load",
    about = "Control-plane seeding and HTTP load generation"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Insert calls and transcripts for a tenant.
    Seed {
        #[arg(long)]
        database_url: String,
        #[arg(long)]
        data_dir: std::path::PathBuf,
        #[arg(long, default_value = "127.0.0.1")]
        tenant: String,
        #[arg(long, default_value_t = 100_000)]
        calls: usize,
        #[arg(long, default_value_t = 100_000)]
        transcripts: usize,
    },
    /// Load one URL and report throughput and latency.
    Run {
        /// Full URL, e.g. http://127.0.0.1:8080/api.ashx/v1/calls?limit=50
        #[arg(long)]
        url: String,
        /// Bearer token sent on every request.
        #[arg(long, env = "CP_LOAD_TOKEN", hide_env_values = true)]
        token: String,
        /// Requests per second; 0 = as fast as the connections go.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Seconds of load before measuring starts.
        #[arg(long, default_value_t = 3)]
        warmup: u64,
        /// PID of the server, to report its CPU use.
        #[arg(long)]
        pid: Option<u32>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Seed {
            database_url,
            data_dir,
            tenant,
            calls,
            transcripts,
        } => seed(&database_url, &data_dir, &tenant, calls, transcripts).await,
        Cmd::Run {
            url,
            token,
            rate,
            connections,
            seconds,
            warmup,
            pid,
        } => run(&url, &token, rate, connections, seconds, warmup, pid).await,
    }
}

/// Deterministic pseudo-random numbers (xorshift) so seeds are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const STATUSES: &[CallStatus] = &[
    CallStatus::EndedSuccess,
    CallStatus::EndedSuccess,
    CallStatus::EndedSuccess,
    CallStatus::EndedFailedFinal,
    CallStatus::Cancelled,
    CallStatus::Scheduled,
    CallStatus::InFlight,
    CallStatus::EndedFailedRetryPending,
];
const NAMES: &[&str] = &[
    "Reminder",
    "Follow-up",
    "Survey",
    "Renewal",
    "Delivery",
    "Booking",
];

async fn seed(
    url: &str,
    data_dir: &std::path::Path,
    tenant: &str,
    calls: usize,
    transcripts: usize,
) -> anyhow::Result<()> {
    let store = Store::open(url, data_dir).await.context("open store")?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let base =
        UtcMillis::parse_rfc3339("2026-01-01T00:00:00Z").map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..calls {
        let at = base.plus_ms(i64::try_from(i)? * 60_000);
        let phone = E164::parse(&format!("+1555{:07}", rng.next() % 10_000_000))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut id = [0u8; 6];
        id.copy_from_slice(&rng.next().to_be_bytes()[..6]);
        batch.push(NewCall {
            call_id: CallId::from_random(id),
            tenant: tenant.to_owned(),
            requested_by: "bench".into(),
            phone,
            display_name: NAMES[i % NAMES.len()].into(),
            email: "ops@example.com".into(),
            system_prompt: "You are calling to remind the customer about an appointment.".into(),
            ai_api_key: "bench-key".into(),
            model: "models/bench".into(),
            voice: "Aoede".into(),
            language: "en-US".into(),
            max_seconds: 300,
            retries: 1,
            retry_delay_minutes: 5,
            trunk_id: None,
            status: STATUSES[usize::try_from(rng.next() % STATUSES.len() as u64)?],
            created_at: at,
            scheduled_for: None,
            next_attempt_at: at,
        });
        if batch.len() == 1000 {
            store.seed_calls(&batch).await?;
            batch.clear();
        }
    }
    store.seed_calls(&batch).await?;
    eprintln!("{calls} calls in {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    for i in 0..transcripts {
        let at = base.plus_ms(i64::try_from(i)? * 60_000);
        let outbound = i % 3 != 0;
        let name = NAMES[i % NAMES.len()];
        let phone = format!("+1555{:07}", rng.next() % 10_000_000);
        let t = TranscriptRecord {
            call_id: if outbound {
                format!("oac-{:012x}", i)
            } else {
                format!("vnum{:012x}", i)
            },
            tenant: tenant.to_owned(),
            caller_source: if outbound { "outbound-ai" } else { "vnum" }.into(),
            started_at: at,
            answered_at: Some(at.plus_ms(4_000)),
            ended_at: Some(at.plus_ms(120_000)),
            mtime: at.plus_ms(121_000),
            duration_sec: 116,
            rule: if outbound {
                format!("outbound: {phone} ({name})")
            } else {
                format!("vnum:{name}")
            },
            caller: (!outbound).then(|| phone.clone()),
            phone: outbound.then(|| phone.clone()),
            number: (!outbound).then(|| format!("{}", 1000 + i % 50)),
            display_name: outbound.then(|| name.to_owned()),
            outcome: "finished".into(),
            tokens_total: 5000,
            input_turns: 3,
            output_turns: 3,
            turn_count: 6,
            size: 2048,
            file: format!("outbound-ai-bench-{i}.txt"),
            turns: vec![Turn {
                speaker: "AI".into(),
                text: "Hello, this is a reminder.".into(),
                ts: at,
            }],
            ..Default::default()
        };
        store.insert_transcript_row(&t).await?;
        if i % 10_000 == 9_999 {
            eprintln!("  {} transcripts", i + 1);
        }
    }
    eprintln!(
        "{transcripts} transcripts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store.close().await;
    Ok(())
}

struct Target {
    host: String,
    port: u16,
    path_and_query: String,
    authority: String,
}

fn parse_target(url: &str) -> anyhow::Result<Target> {
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = authority.rsplit_once(':').context("URL needs a port")?;
    Ok(Target {
        host: host.to_owned(),
        port: port.parse()?,
        path_and_query: path,
        authority: authority.to_owned(),
    })
}

#[derive(Default)]
struct WorkerResult {
    samples: Samples,
    errors: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
}

async fn run(
    url: &str,
    token: &str,
    rate: u64,
    connections: usize,
    seconds: u64,
    warmup: u64,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let target = Arc::new(parse_target(url)?);
    let auth = Arc::new(format!("Bearer {token}"));
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs(warmup);
    let end = measure_from + Duration::from_secs(seconds);
    let slot = Arc::new(AtomicU64::new(0));
    let interval = (rate > 0).then(|| Duration::from_nanos(1_000_000_000 / rate));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, auth, slot) = (target.clone(), auth.clone(), slot.clone());
        tasks.push(tokio::spawn(async move {
            worker(&target, &auth, start, measure_from, end, interval, &slot).await
        }));
    }
    tokio::time::sleep_until((measure_from).into()).await;
    let cpu_before = pid.and_then(cpu_seconds);
    tokio::time::sleep_until(end.into()).await;
    let cpu_after = pid.and_then(cpu_seconds);
    let mut total = WorkerResult::default();
    for t in tasks {
        let r = t.await??;
        total.samples.merge(r.samples);
        total.errors += r.errors;
        for (k, v) in r.statuses {
            *total.statuses.entry(k).or_default() += v;
        }
    }
    total.samples.finish();
    let n = total.samples.len();
    let secs = seconds as f64;
    println!("url          {url}");
    println!(
        "mode         {}",
        if rate > 0 {
            format!("fixed rate {rate}/s")
        } else {
            "max throughput".into()
        }
    );
    println!("connections  {connections}");
    println!(
        "requests     {n} in {secs:.0} s = {:.0} req/s",
        n as f64 / secs
    );
    println!(
        "statuses     {:?}  transport errors {}",
        total.statuses, total.errors
    );
    println!(
        "latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        total.samples.percentile_ms(50.0),
        total.samples.percentile_ms(90.0),
        total.samples.percentile_ms(99.0),
        total.samples.percentile_ms(99.9),
        total.samples.max_ms()
    );
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        println!(
            "server CPU   {:.0}% of one core ({:.1} CPU-s)",
            (b - a) / secs * 100.0,
            b - a
        );
    }
    Ok(())
}

async fn worker(
    target: &Target,
    auth: &str,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    interval: Option<Duration>,
    slot: &AtomicU64,
) -> anyhow::Result<WorkerResult> {
    let mut out = WorkerResult::default();
    let mut sender = None;
    loop {
        let due = match interval {
            Some(iv) => {
                let k = slot.fetch_add(1, Ordering::Relaxed);
                let due = start + iv * u32::try_from(k).unwrap_or(u32::MAX);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now.max(start)
            }
        };
        if sender.is_none() {
            let stream =
                tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
            stream.set_nodelay(true)?;
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender = Some(s);
        }
        let Some(s) = sender.as_mut() else { continue };
        let req = hyper::Request::get(target.path_and_query.as_str())
            .header(hyper::header::HOST, target.authority.as_str())
            .header(hyper::header::AUTHORIZATION, auth)
            .body(Empty::<Bytes>::new())?;
        let result = async {
            let resp = s.send_request(req).await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            anyhow::Ok(status)
        }
        .await;
        let done = Instant::now();
        match result {
            Ok(status) => {
                if due >= measure_from && done <= end {
                    out.samples.record(done - due);
                    *out.statuses.entry(status).or_default() += 1;
                }
            }
            Err(_) => {
                out.errors += 1;
                sender = None;
            }
        }
    }
    Ok(out)
}
