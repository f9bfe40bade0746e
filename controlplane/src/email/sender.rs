//! The sender: a loop that claims due emails from the outbox and hands each
//! to the relay as its own task (at most `concurrency` at once), then
//! records what happened under the lease it claimed with.
//!
//! - Claims are leases in the database, so any number of control planes
//!   can run this against one PostgreSQL and each email goes out from one.
//! - After a 4xx or a connection failure the email waits for the next step
//!   of the retry schedule; past the last one, or after a 5xx answer to the
//!   message, it is `failed` with the reason. Transcripts are not touched.
//! - Time comes from the `Clock`, so a test steps through the schedule.
//! - Sent and failed emails are deleted `retention` after they finished.
//! - On shutdown it stops claiming and lets running attempts finish for a
//!   while; the leases of any it had to abandon run out and the next start
//!   sends them again (with the same Message-ID).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::message::{Outgoing, build_message};
use super::smtp::{Envelope, SmtpClient, SmtpError};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{ClaimedEmail, EmailStep, Store};

const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The `From` address (and `MAIL FROM`).
    pub from: String,
    /// The right side of Message-IDs.
    pub host: String,
    /// Waits before attempts 2, 3, …
    pub retry_delays: Vec<Duration>,
    /// Attempts running at once.
    pub concurrency: usize,
    /// How often the outbox is looked at when nothing is running.
    pub poll: Duration,
    /// How long a claim holds an email; longer than an attempt can take.
    pub lease: Duration,
    pub shutdown_grace: Duration,
    /// Sent and failed emails are deleted this long after they finished.
    pub retention: Duration,
}

impl SenderConfig {
    pub fn new(email: &crate::config::EmailConfig) -> SenderConfig {
        SenderConfig {
            from: email.from.clone(),
            host: email.host.clone(),
            retry_delays: email.retry_delays.clone(),
            concurrency: 8,
            poll: Duration::from_secs(1),
            // Connect, TLS and about ten answers, each within the timeout.
            lease: email.timeout * 12 + Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What follows attempt `attempt` (1-based) with `result`, at `now`, and
/// the error to record ('' on success).
pub fn decide(
    delays: &[Duration],
    attempt: i64,
    result: &Result<(), SmtpError>,
    now: codeb_types::UtcMillis,
) -> (EmailStep, String) {
    match result {
        Ok(()) => (EmailStep::Sent, String::new()),
        Err(SmtpError::Permanent(why)) => (EmailStep::Failed, why.clone()),
        Err(SmtpError::Transient(why)) => {
            let wait = usize::try_from(attempt.saturating_sub(1))
                .ok()
                .and_then(|i| delays.get(i));
            match wait {
                Some(w) => (
                    EmailStep::RetryAt(
                        now.plus_ms(i64::try_from(w.as_millis()).unwrap_or(i64::MAX)),
                    ),
                    why.clone(),
                ),
                None => (
                    EmailStep::Failed,
                    format!("gave up after {attempt} attempts; last: {why}"),
                ),
            }
        }
    }
}

struct Shared {
    store: Store,
    clock: Clock,
    client: SmtpClient,
    cfg: SenderConfig,
    metrics: Option<Arc<Metrics>>,
}

/// The running sender; `shutdown` stops it.
#[derive(Debug)]
pub struct SenderHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SenderHandle {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "email sender ended abnormally");
        }
    }
}

/// Starts the sender.
pub fn start(
    store: Store,
    clock: Clock,
    client: SmtpClient,
    cfg: SenderConfig,
    metrics: Option<Arc<Metrics>>,
) -> SenderHandle {
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        store,
        clock,
        client,
        cfg,
        metrics,
    });
    let task = tokio::spawn(run(shared, stop_rx));
    SenderHandle { stop, task }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn run(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    tracing::info!(from = %sh.cfg.from, "email sender started");
    let mut housekeeping_at = std::time::Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        if std::time::Instant::now() >= housekeeping_at {
            housekeeping_at = std::time::Instant::now() + HOUSEKEEPING_EVERY;
            let cutoff = sh.clock.now().plus_ms(-millis(sh.cfg.retention));
            match sh.store.purge_emails(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "finished emails purged from the outbox"),
                Err(e) => tracing::warn!(error = %e, "purging finished emails failed"),
            }
        }
        while tasks.try_join_next().is_some() {}
        let free = sh.cfg.concurrency.saturating_sub(tasks.len());
        let mut got = 0;
        if free > 0 {
            let claim = sh
                .store
                .claim_emails(
                    sh.clock.now(),
                    millis(sh.cfg.lease),
                    i64::try_from(free).unwrap_or(1),
                )
                .await;
            match claim {
                Ok(claimed) => {
                    got = claimed.len();
                    for e in claimed {
                        tasks.spawn(attempt(sh.clone(), e));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming emails failed; retrying"),
            }
        }
        if free > 0 && got == free {
            continue;
        }
        tokio::select! {
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = tokio::time::sleep(sh.cfg.poll) => {}
            r = stop.changed() => if r.is_err() { break },
        }
    }
    let drained = tokio::time::timeout(sh.cfg.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Their leases run out; the next start sends them again.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    tracing::info!("email sender stopped");
}

/// One attempt: build, send, decide, record.
async fn attempt(sh: Arc<Shared>, e: ClaimedEmail) {
    let message = build_message(
        &Outgoing {
            id: &e.id,
            from: &sh.cfg.from,
            to: &e.recipient,
            subject: &e.subject,
            body: &e.body,
            queued_at: e.created_at,
            call_id: &e.call_id,
        },
        &sh.cfg.host,
    );
    let sent = sh
        .client
        .send(&Envelope {
            from: &sh.cfg.from,
            to: &e.recipient,
            message: &message,
        })
        .await;
    let now = sh.clock.now();
    let (step, error) = decide(&sh.cfg.retry_delays, e.attempt, &sent, now);
    match &step {
        EmailStep::Sent => {
            tracing::info!(email = %e.id, call = %e.call_id, attempt = e.attempt, "email sent");
        }
        EmailStep::RetryAt(at) => {
            tracing::info!(email = %e.id, call = %e.call_id, attempt = e.attempt,
                error = %error, retry_at = %at.to_iso(), "email not sent; will retry");
        }
        EmailStep::Failed => {
            tracing::warn!(email = %e.id, call = %e.call_id, attempt = e.attempt,
                error = %error, "email failed for good");
        }
    }
    if let Some(m) = &sh.metrics {
        m.observe_email(match step {
            EmailStep::Sent => "sent",
            EmailStep::RetryAt(_) => "retry",
            EmailStep::Failed => "failed",
        });
    }
    for tries in 1..=5u32 {
        match sh.store.record_email_attempt(&e, &step, &error, now).await {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!(email = %e.id, "email lease lost before its result was recorded");
                return;
            }
            Err(err) => {
                tracing::warn!(email = %e.id, error = %err, "recording an email attempt failed");
                tokio::time::sleep(Duration::from_millis(200) * tries).await;
            }
        }
    }
    // The lease runs out and the email is sent again: a duplicate at
    // worst, never a loss.
    tracing::error!(email = %e.id, "giving up recording an email attempt; it will be retried");
}

#[cfg(test)]
mod tests {
    use super::*;
    use codeb_types::UtcMillis;

    #[test]
    fn retry_schedule_and_permanent_failures() {
        let delays = [Duration::from_secs(30), Duration::from_secs(120)];
        let now = UtcMillis(1_000_000);
        assert_eq!(
            decide(&delays, 1, &Ok(()), now),
            (EmailStep::Sent, String::new())
        );
        let t = Err(SmtpError::Transient("MAIL FROM: 451 later".into()));
        assert_eq!(
            decide(&delays, 1, &t, now),
            (
                EmailStep::RetryAt(now.plus_ms(30_000)),
                "MAIL FROM: 451 later".into()
            )
        );
        assert_eq!(
            decide(&delays, 2, &t, now).0,
            EmailStep::RetryAt(now.plus_ms(120_000))
        );
        let (step, why) = decide(&delays, 3, &t, now);
        assert_eq!(step, EmailStep::Failed);
        assert!(why.starts_with("gave up after 3 attempts"), "{why}");
        let p = Err(SmtpError::Permanent("RCPT TO: 550 no such user".into()));
        assert_eq!(
            decide(&delays, 1, &p, now),
            (EmailStep::Failed, "RCPT TO: 550 no such user".into())
        );
    }
}
