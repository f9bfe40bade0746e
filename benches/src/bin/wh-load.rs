//! Webhook delivery load tool.
//!
//! `wh-load throughput`: records a backlog of events for many
//! subscriptions (1,000 by default) straight into the outbox through the
//! same `Store` the server uses, then starts `codeb serve` and measures how
//! fast it drains the backlog into a local receiver: deliveries per second
//! between the first and the last delivery received, the server's CPU, and
//! that no delivery id arrived twice.
//!
//! `wh-load latency`: with `codeb serve` running and one subscription,
//! records events at a fixed rate (open loop: each event has a due time
//! and its latency counts from then, so falling behind shows) and measures
//! event → receiver latency. Events are recorded by this process, so the
//! server learns of them through PostgreSQL `NOTIFY`, as it would of
//! another replica's events.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use codeb::store::{Store, SubscriptionRecord};
use codeb_benches::latency::Samples;
use codeb_benches::proc_cpu::cpu_seconds;
use codeb_benches::receiver::{self, Received};
use codeb_types::{EventName, SubscriptionId, UtcMillis};
use serde_json::json;

#[derive(Parser)]
#[command(name = "wh-load", about = "Webhook delivery throughput and latency")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Database the server uses (fresh: subscriptions are added to it).
    #[arg(long)]
    database_url: String,
    #[arg(long)]
    data_dir: PathBuf,
    /// The `codeb` binary to start.
    #[arg(long, default_value = "target/release/codeb")]
    codeb: PathBuf,
    /// The server's HTTP port.
    #[arg(long, default_value_t = 18090)]
    port: u16,
}

#[derive(Subcommand)]
enum Cmd {
    /// Deliveries per second draining a backlog.
    Throughput {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        subscriptions: usize,
        /// Events, each delivered to every subscription.
        #[arg(long, default_value_t = 100)]
        events: usize,
    },
    /// Event → receiver latency at a fixed event rate.
    Latency {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
        /// Concurrent event producers (each records one event at a time).
        #[arg(long, default_value_t = 16)]
        producers: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Throughput {
            common,
            subscriptions,
            events,
        } => throughput(&common, subscriptions, events).await,
        Cmd::Latency {
            common,
            rate,
            seconds,
            warmup,
            producers,
        } => latency(&common, rate, seconds, warmup, producers).await,
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn now_ms() -> UtcMillis {
    UtcMillis(i64::try_from(unix_micros() / 1000).unwrap_or(i64::MAX))
}

/// A killed-on-drop `codeb serve`.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_server(c: &Common) -> anyhow::Result<Server> {
    let child = Command::new(&c.codeb)
        .arg("serve")
        .env("CODEB_HTTP_ADDR", format!("127.0.0.1:{}", c.port))
        .env("CODEB_DATA_DIR", &c.data_dir)
        .env("CODEB_DATABASE_URL", &c.database_url)
        .env("CODEB_ADMIN_USER", "bench")
        .env("CODEB_ADMIN_PASSWORD", "bench-password")
        .env("CODEB_WEBHOOK_ALLOW", "127.0.0.0/8")
        .env("CODEB_LOG", "warn")
        .env_remove("CODEB_PUBLIC_BASE_URL")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", c.codeb.display()))?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", c.port))
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "codeb serve did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(server)
}

async fn subscribe(store: &Store, tenant: &str, url: String) -> anyhow::Result<()> {
    let id = SubscriptionId::from_random(codeb::crypto::random_bytes());
    store
        .create_subscription(&SubscriptionRecord {
            id,
            tenant: tenant.into(),
            url,
            events: vec!["*".into()],
            secret: codeb::webhooks::sign::generate_secret(),
            active: true,
            created_at: now_ms(),
            created_by: "bench".into(),
            last_fired_at: None,
            failures: 0,
            paused_reason: String::new(),
            paused_at: None,
            prev_secret: String::new(),
            prev_secret_until: None,
        })
        .await?;
    Ok(())
}

#[derive(Default)]
struct Drain {
    n: AtomicU64,
    window: Mutex<Option<(Instant, Instant)>>,
    ids: Mutex<HashSet<String>>,
}

async fn throughput(c: &Common, subscriptions: usize, events: usize) -> anyhow::Result<()> {
    let store = Store::open(&c.database_url, &c.data_dir)
        .await
        .context("open store")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let drain = Arc::new(Drain::default());
    let d = drain.clone();
    tokio::spawn(receiver::serve(
        listener,
        Arc::new(move |r: Received| {
            let now = Instant::now();
            d.n.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut w) = d.window.lock() {
                *w = Some(w.map_or((now, now), |(first, _)| (first, now)));
            }
            if let Ok(mut ids) = d.ids.lock() {
                ids.insert(r.delivery_id);
            }
        }),
    ));
    let tenant = "bench-throughput";
    for i in 0..subscriptions {
        subscribe(&store, tenant, format!("http://{addr}/s{i}")).await?;
    }
    let total = u64::try_from(subscriptions * events)?;
    let seeded = Instant::now();
    for e in 0..events {
        let call = format!("oac-{e:012x}");
        store
            .record_event(
                tenant,
                EventName::CallEnded,
                json!({"callId": call, "n": e, "outcome": "finished", "durationSec": 39}),
                Some(&call),
                now_ms(),
            )
            .await?;
    }
    let secs = seeded.elapsed().as_secs_f64();
    println!(
        "queued       {events} events x {subscriptions} subscriptions = {total} deliveries in {secs:.1} s ({:.0} deliveries/s recorded)",
        total as f64 / secs
    );
    let server = start_server(c).await?;
    let pid = server.0.id();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut cpu_at_first = None;
    while drain.n.load(Ordering::Relaxed) < total {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {total} deliveries arrived",
            drain.n.load(Ordering::Relaxed)
        );
        if cpu_at_first.is_none() && drain.n.load(Ordering::Relaxed) > 0 {
            cpu_at_first = cpu_seconds(pid);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu_at_last = cpu_seconds(pid);
    let (first, last) = drain
        .window
        .lock()
        .ok()
        .and_then(|w| *w)
        .context("no delivery arrived")?;
    let span = (last - first).as_secs_f64();
    let recorded_from = Instant::now();
    while store.delivery_backlog().await? > 0 {
        anyhow::ensure!(Instant::now() < deadline, "results were never all recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let distinct = drain.ids.lock().map(|i| i.len()).unwrap_or(0);
    println!(
        "delivered    {total} in {span:.2} s = {:.0} deliveries/s (first to last arrival)",
        (total - 1) as f64 / span
    );
    println!(
        "recorded     every result {:.2} s after the last arrival",
        recorded_from.elapsed().as_secs_f64()
    );
    println!(
        "distinct ids {distinct} (duplicates: {})",
        drain
            .n
            .load(Ordering::Relaxed)
            .saturating_sub(distinct as u64)
    );
    if let (Some(a), Some(b)) = (cpu_at_first, cpu_at_last) {
        println!(
            "server CPU   {:.0}% of one core ({:.1} CPU-s, {:.0} µs per delivery)",
            (b - a) / span * 100.0,
            b - a,
            (b - a) / total as f64 * 1e6
        );
    }
    drop(server);
    store.close().await;
    Ok(())
}

async fn latency(
    c: &Common,
    rate: u64,
    seconds: u64,
    warmup: u64,
    producers: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(rate > 0, "--rate must be positive");
    let store = Store::open(&c.database_url, &c.data_dir)
        .await
        .context("open store")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let samples = Arc::new(Mutex::new(Samples::default()));
    let received = Arc::new(AtomicU64::new(0));
    let measure_from_us = Arc::new(AtomicU64::new(u64::MAX));
    let (s, n, m) = (samples.clone(), received.clone(), measure_from_us.clone());
    tokio::spawn(receiver::serve(
        listener,
        Arc::new(move |r: Received| {
            let now = unix_micros();
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
                return;
            };
            let Some(due) = v["data"]["dueUs"].as_u64() else {
                return;
            };
            if due >= m.load(Ordering::Relaxed) {
                n.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut s) = s.lock() {
                    s.record(Duration::from_micros(now.saturating_sub(due)));
                }
            }
        }),
    ));
    let tenant = "bench-latency";
    subscribe(&store, tenant, format!("http://{addr}/latency")).await?;
    let server = start_server(c).await?;
    let pid = server.0.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let start_us = unix_micros() + 100_000;
    let measure_from = start + Duration::from_secs(warmup);
    measure_from_us.store(start_us + warmup * 1_000_000, Ordering::Relaxed);
    let end = measure_from + Duration::from_secs(seconds);
    let slot = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (store, slot, sent) = (store.clone(), slot.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let k = slot.fetch_add(1, Ordering::Relaxed);
                let offset = interval * u32::try_from(k).unwrap_or(u32::MAX);
                let due = start + offset;
                if due >= end {
                    return anyhow::Ok(());
                }
                tokio::time::sleep_until(due.into()).await;
                let due_us = start_us + u64::try_from(offset.as_micros()).unwrap_or(u64::MAX);
                store
                    .record_event(
                        tenant,
                        EventName::CallEnded,
                        json!({"dueUs": due_us, "n": k}),
                        None,
                        now_ms(),
                    )
                    .await?;
                if due >= measure_from {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep_until(end.into()).await;
    let cpu_after = cpu_seconds(pid);
    for t in tasks {
        t.await??;
    }
    // Let the last events arrive.
    let wanted = sent.load(Ordering::Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < wanted && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut samples = samples
        .lock()
        .map(|s| s.clone())
        .map_err(|_| anyhow::anyhow!("samples lock poisoned"))?;
    samples.finish();
    println!(
        "mode         {rate} events/s for {seconds} s (after {warmup} s warm-up), 1 subscription"
    );
    println!(
        "events       {wanted} recorded, {} received",
        received.load(Ordering::Relaxed)
    );
    println!(
        "latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        samples.percentile_ms(50.0),
        samples.percentile_ms(90.0),
        samples.percentile_ms(99.0),
        samples.percentile_ms(99.9),
        samples.max_ms()
    );
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        println!(
            "server CPU   {:.0}% of one core",
            (b - a) / seconds as f64 * 100.0
        );
    }
    drop(server);
    store.close().await;
    Ok(())
}
