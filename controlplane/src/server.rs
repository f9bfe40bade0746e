//! Starting the control plane: open and migrate the store, bootstrap the
//! admin user and the signing key on first start, then serve HTTP and
//! deliver webhooks (and emails, with a relay) until SIGINT/SIGTERM, finishing requests in flight and
//! recording (or handing back) webhook attempts in flight.

use std::net::SocketAddr;
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
    let app = crate::app(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
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
