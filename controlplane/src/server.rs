//! Starting the control plane: open and migrate the store, bootstrap the
//! admin user and the signing key on first start, then serve HTTP and
//! deliver webhooks (and emails, with a relay) until SIGINT/SIGTERM, finishing requests in flight and
//! recording (or handing back) webhook attempts in flight.

use std::path::Path;

use anyhow::Context as _;
use codeb_types::{UserId, UtcMillis};
use tokio::net::TcpListener;

use crate::auth::jwt::SigningKey;
use crate::auth::password;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto;
use crate::state::{AppState, CATCHALL_DEFAULT_USER};
use crate::store::{Role, Store, redact_url};

/// Where `codeb dev` keeps a generated admin password so it can show it on
/// every start (never used by `codeb serve`).
pub const DEV_PASSWORD_FILE: &str = "dev-admin-password";

/// What the bootstrap did about the admin user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Users already existed; nothing was created.
    Existing,
    /// The admin was created with the configured password.
    Created,
    /// The admin was created with this generated password.
    Generated(String),
}

/// Creates the bootstrap admin if the database has no users yet.
pub async fn bootstrap_admin(
    store: &Store,
    config: &Config,
    now: UtcMillis,
) -> anyhow::Result<Bootstrap> {
    if store.count_users().await? > 0 {
        return Ok(Bootstrap::Existing);
    }
    let (pw, generated) = match &config.admin_password {
        Some(p) if !p.is_empty() => (p.clone(), false),
        _ => (password::generate(), true),
    };
    if pw.len() < password::MIN_PASSWORD_LEN || pw.len() > password::MAX_PASSWORD_LEN {
        anyhow::bail!(
            "CODEB_ADMIN_PASSWORD must be {}-{} characters",
            password::MIN_PASSWORD_LEN,
            password::MAX_PASSWORD_LEN
        );
    }
    let pw_for_hash = pw.clone();
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw_for_hash)).await??;
    let id = UserId::from_random(crypto::random_bytes());
    store
        .create_user(
            &id,
            &config.tenant,
            &config.admin_user,
            &hash,
            Role::Admin,
            now,
        )
        .await?
        .context("could not create the bootstrap admin")?;
    Ok(if generated {
        Bootstrap::Generated(pw)
    } else {
        Bootstrap::Created
    })
}

/// Opens everything `serve` and `dev` need.
pub async fn prepare(config: &Config, clock: Clock) -> anyhow::Result<(AppState, Bootstrap)> {
    let store = Store::open(&config.database_url, &config.data_dir)
        .await
        .with_context(|| format!("opening the database {}", redact_url(&config.database_url)))?
        .with_retry_delay_unit(config.call_retry_delay_unit);
    let signing_key = SigningKey::load_or_create(&config.data_dir)?;
    let now = clock.now();
    let bootstrap = bootstrap_admin(&store, config, now).await?;
    store
        .ensure_catchall(&config.tenant, CATCHALL_DEFAULT_USER, now)
        .await?;
    if store.note_builtin_prompts().await? {
        tracing::info!("the built-in prompts changed: the switch configuration is pushed again");
    }
    let purged = store.purge_refresh_tokens(now).await?;
    if purged > 0 {
        tracing::info!(purged, "expired refresh tokens removed");
    }
    Ok((
        AppState::new(store, config.clone(), signing_key, clock),
        bootstrap,
    ))
}

/// Serves the API on `listener` until a shutdown signal.
pub async fn serve(state: AppState, listener: TcpListener) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tenant = %state.config.tenant, issuer = %state.config.issuer, "control plane listening");
    if state.switch.is_configured() {
        tracing::info!(nodes = ?state.switch.urls(), lost_after = ?state.switch.settings().lost_after,
            "switch link: dispatching calls to these nodes");
    } else {
        tracing::info!(
            "no switch configured (CODEB_SWITCH_URLS): immediate calls answer 503; \
             scheduled calls wait until a switch is configured"
        );
    }
    let store = state.store.clone();
    let delivery = crate::webhooks::start(&state).context("starting webhook delivery")?;
    let mail = crate::email::start(&state).context("starting the email sender")?;
    match (&state.config.email.smtp, &mail) {
        (Some(url), Some(_)) => {
            tracing::info!(relay = %format!("{}:{}", url.host, url.port), tls = url.tls,
                from = %state.config.email.from, "sending transcript emails")
        }
        _ => match state.store.email_backlog().await {
            Ok(n) => tracing::info!(
                queued = n,
                "no CODEB_SMTP_URL: transcript emails are queued, not sent"
            ),
            Err(e) => tracing::warn!(error = %e, "counting queued emails failed"),
        },
    }
    let link = state.switch.start(&store);
    let served = serve_http(
        listener,
        crate::app(state),
        shutdown_signal(),
        HttpTimeouts::default(),
    )
    .await;
    link.shutdown().await;
    delivery.shutdown().await;
    if let Some(mail) = mail {
        mail.shutdown().await;
    }
    served?;
    store.close().await;
    tracing::info!("control plane stopped");
    Ok(())
}

/// How long the HTTP server waits on clients.
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// A client has this long to send a request's head (line and
    /// headers), and an idle kept-alive connection this long to start the
    /// next: a client that sends a request a byte at a time, or opens
    /// connections and sends nothing (slowloris), loses them instead of
    /// holding them for good.
    pub header_read: std::time::Duration,
    /// After a shutdown signal, requests in flight get this long before
    /// their connections are closed under them.
    pub shutdown_grace: std::time::Duration,
    /// A request's body must have arrived this long after its head: a
    /// client that declares a length and sends less held the request (and
    /// its connection) for good.
    pub body_read: std::time::Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            header_read: std::time::Duration::from_secs(30),
            shutdown_grace: std::time::Duration::from_secs(8),
            body_read: std::time::Duration::from_secs(30),
        }
    }
}

/// Serves `app` over HTTP/1.1 on `listener` until `shutdown` completes,
/// then stops accepting, lets requests in flight finish (kept-alive
/// connections close after their current response) for at most the grace,
/// and returns. Each connection's requests see the peer's address
/// (`ConnectInfo`).
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
    timeouts: HttpTimeouts,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Every connection task holds a receiver; all dropped = all done.
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait, do not spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body_read = timeouts.body_read;
                    let mut req =
                        req.map(|b| axum::body::Body::new(BodyDeadline::new(b, body_read)));
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    app.clone().oneshot(req)
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header_read);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                }
                () = async { drop(stop.wait_for(|s| *s).await) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    if tokio::time::timeout(timeouts.shutdown_grace, done_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = done_tx.receiver_count(),
            "HTTP connections still open after the shutdown grace; closing them"
        );
    }
    Ok(())
}

/// A request body that fails once its deadline has passed before it ended
/// (the handler reading it answers 400 and the connection closes).
struct BodyDeadline<B> {
    inner: B,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    limit: std::time::Duration,
}

impl<B> BodyDeadline<B> {
    fn new(inner: B, limit: std::time::Duration) -> Self {
        BodyDeadline {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl<B> hyper::body::Body for BodyDeadline<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let limit = self.limit.as_secs_f64();
            return Poll::Ready(Some(Err(format!(
                "the request body did not arrive within {limit} s"
            )
            .into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}

/// Reads or writes the dev-mode password file.
pub fn dev_password(data_dir: &Path, generated: Option<&str>) -> std::io::Result<Option<String>> {
    let path = data_dir.join(DEV_PASSWORD_FILE);
    if let Some(pw) = generated {
        #[cfg(unix)]
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(pw.as_bytes())?;
        }
        #[cfg(not(unix))]
        std::fs::write(&path, pw)?;
        return Ok(Some(pw.to_owned()));
    }
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn short() -> HttpTimeouts {
        HttpTimeouts {
            header_read: Duration::from_millis(300),
            shutdown_grace: Duration::from_millis(300),
            body_read: Duration::from_millis(300),
        }
    }

    /// Serves a one-route app; the address, the shutdown trigger and the
    /// server's task.
    async fn server() -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app =
            axum::Router::new()
                .route(
                    "/peer",
                    axum::routing::get(
                        |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                            SocketAddr,
                        >| async move { peer.to_string() },
                    ),
                )
                .route(
                    "/echo",
                    axum::routing::post(|body: axum::body::Bytes| async move { body }),
                );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_http(
            listener,
            app,
            async {
                let _ = rx.await;
            },
            short(),
        ));
        (addr, tx, task)
    }

    /// A client that sends part of a request (slowloris) loses the
    /// connection after the header timeout; a whole request is answered
    /// with the peer's address; shutdown does not wait for a stalled
    /// client past the grace (it waited for as long as the client stayed).
    #[tokio::test]
    async fn slow_clients_are_cut_off_and_do_not_hold_up_shutdown() {
        let (addr, stop, task) = server().await;
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        let me = ok.local_addr().unwrap();
        ok.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        ok.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with(&me.to_string()), "{reply}");

        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /peer HTTP/1.1\r\nHost:")
            .await
            .unwrap();
        let t0 = Instant::now();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf))
            .await
            .expect("the server closes a stalled request");
        assert!(t0.elapsed() < Duration::from_secs(3));

        // A body shorter than its Content-Length is cut off too (it was
        // waited for forever); a whole one is echoed.
        let mut short_body = tokio::net::TcpStream::connect(addr).await.unwrap();
        short_body
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        let t0 = Instant::now();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), short_body.read_to_end(&mut reply))
            .await
            .expect("the server gives up on a body that does not come");
        assert!(t0.elapsed() < Duration::from_secs(3));
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
        let mut whole = tokio::net::TcpStream::connect(addr).await.unwrap();
        whole
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let mut reply = String::new();
        whole.read_to_string(&mut reply).await.unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with("hello"),
            "{reply}"
        );

        // Shutdown with a stalled client open still ends.
        let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
        stalled.write_all(b"GET /peer HTTP/1.1\r\n").await.unwrap();
        let _ = stop.send(());
        let served = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("shutdown does not wait for a stalled client");
        assert!(served.unwrap().is_ok());
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "no longer listening"
        );
    }
}
