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
//!
//! The client is a small HTTP/1.1 one written for this (`ResponseReader`),
//! because the generator shares two cores with the server it measures and
//! hyper's client cost ~70-100 us of CPU per request here: each connection
//! sends one request at a time (no pipelining), the same request bytes
//! built once, and reads the whole response (status, `Content-Length` or
//! chunked body to its last byte); anything not framed exactly is an error
//! and closes the connection. Connections run on `--threads`
//! single-threaded runtimes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use codeb::store::{NewCall, Store, TranscriptRecord, Turn};
use codeb_benches::latency::Samples;
use codeb_benches::proc_cpu::{cpu_seconds, load_average};
use codeb_types::{CallId, CallStatus, E164, UtcMillis};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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
        /// Threads the connections are spread over (each a single-threaded
        /// runtime).
        #[arg(long, default_value_t = 1)]
        threads: usize,
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

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Seed {
            database_url,
            data_dir,
            tenant,
            calls,
            transcripts,
        } => tokio::runtime::Runtime::new()?.block_on(seed(
            &database_url,
            &data_dir,
            &tenant,
            calls,
            transcripts,
        )),
        Cmd::Run {
            url,
            token,
            rate,
            connections,
            threads,
            seconds,
            warmup,
            pid,
        } => run(
            &url,
            &token,
            rate,
            connections,
            threads,
            seconds,
            warmup,
            pid,
        ),
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

/// What `run` sends: one request, the same bytes on every round trip.
struct Target {
    host: String,
    port: u16,
    request: Vec<u8>,
}

fn parse_target(url: &str, token: &str) -> anyhow::Result<Target> {
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = authority.rsplit_once(':').context("URL needs a port")?;
    anyhow::ensure!(
        !path.bytes().any(|b| b <= b' ' || b == 0x7f),
        "the URL's path must not hold spaces or control characters (percent-encode them)"
    );
    anyhow::ensure!(
        !token.is_empty() && token.bytes().all(|b| (0x21..0x7f).contains(&b)),
        "the token must be printable ASCII without spaces"
    );
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .into_bytes();
    Ok(Target {
        host: host.to_owned(),
        port: port.parse().context("the URL's port")?,
        request,
    })
}

/// A response head larger than this is an error.
const MAX_HEAD: usize = 16 * 1024;
/// A chunk-size or trailer line longer than this is an error.
const MAX_LINE: usize = 4096;
/// A response body larger than this is an error.
const MAX_BODY: u64 = 256 << 20;
/// Bytes read from the socket at most per `read` (a 50-row page is ~26 KB).
const READ_BUFFER: usize = 64 * 1024;

/// Where a response is in being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Head,
    /// This many bytes of a `Content-Length` body are still to come.
    Length(u64),
    ChunkSize,
    /// This many bytes of the current chunk are still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// The trailer section after the last chunk, up to its empty line.
    Trailer,
    Done,
}

/// Reads one HTTP/1.1 response from the bytes given to it, whole: the head
/// (status, framing), then every byte of the body, `Content-Length` or
/// chunked. Anything that does not frame a response exactly is an error,
/// so a connection can only be reused after a response read to its end.
#[derive(Debug)]
struct ResponseReader {
    part: Part,
    status: u16,
    /// The server said `Connection: close`.
    close: bool,
    body_bytes: u64,
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

fn parse_length(value: &[u8]) -> Result<u64, String> {
    let v = std::str::from_utf8(value)
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| format!("bad Content-Length {:?}", String::from_utf8_lossy(value)))?;
    if v > MAX_BODY {
        return Err(format!("Content-Length {v} over {MAX_BODY}"));
    }
    Ok(v)
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, String> {
    // Chunk extensions (`;name=value`) are allowed and ignored.
    let size = line.split(|&b| b == b';').next().unwrap_or(line);
    let size = std::str::from_utf8(size)
        .map(|s| s.trim_matches([' ', '\t']))
        .ok();
    size.filter(|s| !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| format!("bad chunk size line {:?}", String::from_utf8_lossy(line)))
}

impl ResponseReader {
    fn new() -> ResponseReader {
        ResponseReader {
            part: Part::Head,
            status: 0,
            close: false,
            body_bytes: 0,
        }
    }

    fn is_done(&self) -> bool {
        self.part == Part::Done
    }

    /// Consumes what it can of `input` and returns how many bytes it used;
    /// short of `Done`, what is left of `input` is an incomplete piece that
    /// needs more bytes after it.
    fn feed(&mut self, input: &[u8]) -> Result<usize, String> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.part {
                Part::Done => return Ok(used),
                Part::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut head = httparse::Response::new(&mut headers);
                    match head
                        .parse(rest)
                        .map_err(|e| format!("bad response head: {e}"))?
                    {
                        httparse::Status::Partial if rest.len() > MAX_HEAD => {
                            return Err(format!("response head over {MAX_HEAD} bytes"));
                        }
                        httparse::Status::Partial => return Ok(used),
                        httparse::Status::Complete(n) => {
                            self.part = self.head(&head)?;
                            used += n;
                        }
                    }
                }
                Part::Length(left) | Part::ChunkData(left) => {
                    if left == 0 {
                        self.part = match self.part {
                            Part::Length(_) => Part::Done,
                            _ => Part::ChunkEnd,
                        };
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let take = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    used += take;
                    self.body_bytes += take as u64;
                    let left = left - take as u64;
                    self.part = match self.part {
                        Part::Length(_) => Part::Length(left),
                        _ => Part::ChunkData(left),
                    };
                }
                Part::ChunkEnd => {
                    if rest.len() < 2 {
                        return Ok(used);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err("a chunk's data is not followed by CRLF".into());
                    }
                    used += 2;
                    self.part = Part::ChunkSize;
                }
                Part::ChunkSize | Part::Trailer => {
                    let Some(end) = find_crlf(rest) else {
                        if rest.len() > MAX_LINE {
                            return Err(format!(
                                "a chunk-size or trailer line over {MAX_LINE} bytes"
                            ));
                        }
                        return Ok(used);
                    };
                    let line = &rest[..end];
                    used += end + 2;
                    self.part = match self.part {
                        Part::ChunkSize => match parse_chunk_size(line)? {
                            0 => Part::Trailer,
                            n if self.body_bytes.saturating_add(n) > MAX_BODY => {
                                return Err(format!("chunked body over {MAX_BODY} bytes"));
                            }
                            n => Part::ChunkData(n),
                        },
                        _ if line.is_empty() => Part::Done,
                        _ => Part::Trailer,
                    };
                }
            }
        }
    }

    /// Takes a response head's status and framing; returns what follows it.
    fn head(&mut self, head: &httparse::Response<'_, '_>) -> Result<Part, String> {
        if head.version != Some(1) {
            return Err(format!(
                "not an HTTP/1.1 response: HTTP/1.{:?}",
                head.version
            ));
        }
        let status = head.code.ok_or("response without a status")?;
        if status == 101 {
            return Err("the server switched protocols".into());
        }
        let mut length = None;
        let mut chunked = false;
        self.close = false;
        for h in head.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = parse_length(h.value)?;
                if length.is_some_and(|l| l != n) {
                    return Err("two different Content-Length headers".into());
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(h.value);
                if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(format!(
                        "unsupported Transfer-Encoding {:?}",
                        String::from_utf8_lossy(h.value)
                    ));
                }
                chunked = true;
            } else if h.name.eq_ignore_ascii_case("connection") {
                self.close |= h
                    .value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
        }
        if (100..200).contains(&status) {
            // An interim response: the real one follows.
            return Ok(Part::Head);
        }
        self.status = status;
        if status == 204 || status == 304 {
            return Ok(Part::Done);
        }
        match (chunked, length) {
            (true, Some(_)) => Err("both Content-Length and chunked".into()),
            (true, None) => Ok(Part::ChunkSize),
            (false, Some(n)) => Ok(Part::Length(n)),
            (false, None) => Err("a body delimited by closing the connection".into()),
        }
    }
}

/// One keep-alive connection and the bytes read from it but not yet used.
struct Connection {
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// What one round trip answered.
struct Answer {
    status: u16,
    body_bytes: u64,
    close: bool,
}

impl Connection {
    async fn open(target: &Target) -> std::io::Result<Connection> {
        let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        })
    }

    /// Sends `request` and reads its whole response. One request at a time:
    /// bytes after the response are an error, not the next response.
    async fn round_trip(&mut self, request: &[u8]) -> Result<Answer, String> {
        self.stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut reader = ResponseReader::new();
        loop {
            let used = reader.feed(&self.buf[self.start..self.end])?;
            self.start += used;
            if reader.is_done() {
                break;
            }
            // What is left is an incomplete piece: keep it at the front.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                return Err("response piece larger than the read buffer".into());
            }
            let n = self
                .stream
                .read(&mut self.buf[self.end..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before the response ended".into());
            }
            self.end += n;
        }
        if self.start != self.end {
            return Err("bytes after the response (none were asked for)".into());
        }
        self.start = 0;
        self.end = 0;
        Ok(Answer {
            status: reader.status,
            body_bytes: reader.body_bytes,
            close: reader.close,
        })
    }
}

#[derive(Default)]
struct WorkerResult {
    samples: Samples,
    errors: u64,
    first_error: Option<String>,
    statuses: std::collections::BTreeMap<u16, u64>,
    body_bytes: u64,
}

impl WorkerResult {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, r: WorkerResult) {
        self.samples.merge(r.samples);
        self.errors += r.errors;
        if self.first_error.is_none() {
            self.first_error = r.first_error;
        }
        for (k, v) in r.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.body_bytes += r.body_bytes;
    }
}

/// When a run loads and measures; shared by every connection.
#[derive(Clone, Copy)]
struct Plan {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    /// Fixed rate: one request due every this many nanoseconds.
    interval_ns: Option<u64>,
}

#[allow(clippy::too_many_arguments)]
fn run(
    url: &str,
    token: &str,
    rate: u64,
    connections: usize,
    threads: usize,
    seconds: u64,
    warmup: u64,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    anyhow::ensure!(connections >= 1, "--connections must be at least 1");
    anyhow::ensure!(
        (1..=connections).contains(&threads),
        "--threads must be 1 to --connections"
    );
    anyhow::ensure!(rate <= 10_000_000, "--rate must be at most 10,000,000");
    let target = Arc::new(parse_target(url, token)?);
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs(warmup);
    let plan = Plan {
        start,
        measure_from,
        end: measure_from + Duration::from_secs(seconds),
        interval_ns: (rate > 0).then(|| 1_000_000_000 / rate),
    };
    let slot = Arc::new(AtomicU64::new(0));
    // Each thread runs its share of the connections on a single-threaded
    // runtime: no work stealing or cross-thread wake-ups per request.
    let mut handles = Vec::new();
    for t in 0..threads {
        let share = connections / threads + usize::from(t < connections % threads);
        let (target, slot) = (target.clone(), slot.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(std::thread::spawn(move || {
            rt.block_on(async move {
                let tasks: Vec<_> = (0..share)
                    .map(|_| tokio::spawn(worker(target.clone(), plan, slot.clone())))
                    .collect();
                let mut total = WorkerResult::default();
                for task in tasks {
                    match task.await {
                        Ok(r) => total.merge(r),
                        Err(e) => total.error(format!("a connection's task failed: {e}")),
                    }
                }
                total
            })
        }));
    }
    let me = std::process::id();
    sleep_until(plan.measure_from);
    let cpu_before = (pid.and_then(cpu_seconds), cpu_seconds(me));
    sleep_until(plan.end);
    let cpu_after = (pid.and_then(cpu_seconds), cpu_seconds(me));
    let mut total = WorkerResult::default();
    for h in handles {
        total.merge(
            h.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?,
        );
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
    println!("connections  {connections} on {threads} thread(s)");
    println!(
        "requests     {n} in {secs:.0} s = {:.0} req/s",
        n as f64 / secs
    );
    println!(
        "statuses     {:?}  transport errors {}",
        total.statuses, total.errors
    );
    if let Some(e) = &total.first_error {
        println!("first error  {e}");
    }
    if n > 0 {
        println!(
            "body bytes   {:.0} per response",
            total.body_bytes as f64 / n as f64
        );
    }
    println!(
        "latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        total.samples.percentile_ms(50.0),
        total.samples.percentile_ms(90.0),
        total.samples.percentile_ms(99.0),
        total.samples.percentile_ms(99.9),
        total.samples.max_ms()
    );
    if let (Some(a), Some(b)) = (cpu_before.0, cpu_after.0) {
        println!(
            "server CPU   {:.0}% of one core ({:.1} CPU-s)",
            (b - a) / secs * 100.0,
            b - a
        );
    }
    if let (Some(a), Some(b)) = (cpu_before.1, cpu_after.1) {
        println!(
            "cp-load CPU  {:.0}% of one core, {:.0} us per request (/proc, 10 ms ticks)",
            (b - a) / secs * 100.0,
            if n > 0 {
                (b - a) * 1e6 / n as f64
            } else {
                f64::NAN
            }
        );
    }
    println!(
        "load         {} (1-minute average at the end)",
        load_average()
    );
    Ok(())
}

fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

async fn worker(target: Arc<Target>, plan: Plan, slot: Arc<AtomicU64>) -> WorkerResult {
    let mut out = WorkerResult::default();
    let mut conn: Option<Connection> = None;
    loop {
        let due = match plan.interval_ns {
            Some(iv) => {
                let k = slot.fetch_add(1, Ordering::Relaxed);
                let due = plan.start + Duration::from_nanos(iv.saturating_mul(k));
                if due >= plan.end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => {
                let now = Instant::now();
                if now >= plan.end {
                    break;
                }
                now.max(plan.start)
            }
        };
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::open(&target).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    // The request that was due fails; wait a little so a
                    // refused connect does not spin.
                    out.error(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let result = c.round_trip(&target.request).await;
        let done = Instant::now();
        match result {
            Ok(answer) => {
                if due >= plan.measure_from && done <= plan.end {
                    out.samples.record(done - due);
                    *out.statuses.entry(answer.status).or_default() += 1;
                    out.body_bytes += answer.body_bytes;
                }
                if answer.close {
                    conn = None;
                }
            }
            Err(e) => {
                out.error(e);
                conn = None;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, as reads would deliver it,
    /// keeping what a piece leaves unused for the next, and returns the
    /// reader and how many bytes of `input` it used.
    fn read_in_pieces(input: &[u8], step: usize) -> Result<(ResponseReader, usize), String> {
        let mut r = ResponseReader::new();
        let (mut start, mut end) = (0, 0);
        while !r.is_done() {
            if end == input.len() {
                return Err("incomplete".into());
            }
            end = (end + step).min(input.len());
            start += r.feed(&input[start..end])?;
        }
        Ok((r, start))
    }

    fn read_whole(input: &[u8]) -> Result<(ResponseReader, usize), String> {
        let mut last: Option<Result<(ResponseReader, usize), String>> = None;
        for step in [1, 2, 3, 7, 64, input.len().max(1)] {
            let got = read_in_pieces(input, step);
            if let Some(prev) = &last {
                let same = match (&got, prev) {
                    (Ok((a, n)), Ok((b, m))) => {
                        (a.status, a.body_bytes, a.close, n) == (b.status, b.body_bytes, b.close, m)
                    }
                    (Err(a), Err(b)) => a == b,
                    _ => false,
                };
                assert!(same, "step {step} read it differently");
            }
            last = Some(got);
        }
        last.unwrap_or_else(|| Err("no pieces".into()))
    }

    #[test]
    fn content_length_body_is_read_to_its_end() {
        let resp = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"data\":[]}";
        let (r, used) = read_whole(resp).unwrap();
        assert_eq!(
            (r.status, r.body_bytes, r.close, used),
            (200, 11, false, resp.len())
        );
    }

    #[test]
    fn bytes_after_a_response_are_not_consumed() {
        let mut resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}".to_vec();
        let len = resp.len();
        resp.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let mut r = ResponseReader::new();
        assert_eq!(r.feed(&resp).unwrap(), len);
        assert!(r.is_done());
        assert_eq!(r.status, 404);
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
            5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (r, used) = read_whole(resp).unwrap();
        assert_eq!(
            (r.status, r.body_bytes, r.close, used),
            (200, 31, true, resp.len())
        );
    }

    #[test]
    fn interim_responses_are_skipped_and_204_has_no_body() {
        let resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let (r, used) = read_whole(resp).unwrap();
        assert_eq!((r.status, r.body_bytes, used), (204, 0, resp.len()));
    }

    #[test]
    fn truncated_responses_are_incomplete() {
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345";
        assert_eq!(read_whole(resp).err().as_deref(), Some("incomplete"));
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
        assert_eq!(read_whole(resp).err().as_deref(), Some("incomplete"));
    }

    #[test]
    fn badly_framed_responses_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                "not an HTTP/1.1",
            ),
            (b"HTTP/1.1 200 OK\r\n\r\nbody", "delimited by closing"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
                "over",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "two different",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "unsupported Transfer-Encoding",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                "both",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "bad chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
                "not followed by CRLF",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n",
                "chunked body over",
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "switched protocols",
            ),
            (b"garbage\r\n\r\n", "bad response head"),
        ];
        for (input, want) in cases {
            let got = read_whole(input).err().unwrap_or_default();
            assert!(
                got.contains(want),
                "{:?}: {got:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_head = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        let got = read_in_pieces(long_head.as_bytes(), 4096)
            .err()
            .unwrap_or_default();
        assert!(got.contains("response head over"), "{got}");
    }

    #[test]
    fn requests_are_built_once_and_checked() {
        let t = parse_target("http://127.0.0.1:8080/api.ashx/v1/calls?limit=50", "ak_x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8080));
        assert_eq!(
            t.request,
            b"GET /api.ashx/v1/calls?limit=50 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer ak_x\r\n\r\n"
        );
        assert!(parse_target("http://127.0.0.1:8080/a b", "k").is_err());
        assert!(parse_target("http://127.0.0.1:8080/", "k\r\nX: 1").is_err());
        assert!(parse_target("https://127.0.0.1:8080/", "k").is_err());
        assert!(parse_target("http://127.0.0.1/", "k").is_err());
    }
}
