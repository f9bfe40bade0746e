//! The `codeb` command line: `serve`, `dev`, `migrate` and `admin …`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use codeb_types::{ApiKeyId, UserId};
use tokio::net::TcpListener;

use crate::auth::{password, validate_username};
use crate::clock::Clock;
use crate::config::{Config, Settings};
use crate::crypto;
use crate::server::{self, Bootstrap};
use crate::store::{Role, Store, redact_url};

#[derive(Parser, Debug)]
#[command(
    name = "codeb",
    version,
    about = "CodeB control plane: REST API, OIDC issuer, storage and scheduling for the CodeB voice platform",
    after_help = "Every option can also be set by the environment variable shown next to it; \
                  a flag wins over the variable."
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the control plane (HTTP API).
    Serve,
    /// Local development: the whole platform (control plane, switch and
    /// voice-AI simulator) on loopback, in one command.
    ///
    /// The control plane runs on SQLite in ./data and prints the admin
    /// credentials at start; the switch (state in ./data/switch) and the
    /// simulator it talks to are started from the `codeb-switch` and
    /// `codeb-ai-sim` executables beside `codeb`, their output shown here
    /// with their names in front. Ctrl-C or SIGTERM stops all three; if the
    /// switch or the simulator exits on its own, so does `codeb dev`, with
    /// an error. With CODEB_SWITCH_URLS given, neither is started and those
    /// nodes are used.
    Dev(crate::dev::DevSettings),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users and API keys directly in the database.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Platform users (who may sign in).
    Users {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API keys (`ak_…`).
    Keys {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user. The password comes from --password, or from
    /// CODEB_USER_PASSWORD, or is generated and printed.
    Add {
        username: String,
        #[arg(long, default_value = "admin", value_parser = ["admin", "viewer"])]
        role: String,
        #[arg(long, env = "CODEB_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Tenant of the user [default: the host of CODEB_PUBLIC_BASE_URL]
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Set a user's password (and optionally role); signs them out everywhere.
    Passwd {
        username: String,
        #[arg(long, env = "CODEB_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: Option<String>,
    },
    /// Change a user's role only (their password stays; they are signed
    /// out everywhere, as their tokens carry the old role).
    Role {
        username: String,
        #[arg(value_parser = ["admin", "viewer"])]
        role: String,
        /// Even if this is the tenant's last admin.
        #[arg(long)]
        force: bool,
    },
    /// List users.
    List,
    /// Remove a user. The last admin of a tenant is kept unless --force:
    /// without one nobody can sign in to manage it (CODEB_ADMIN_PASSWORD
    /// only bootstraps an empty database).
    Remove {
        username: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List live API keys of every tenant (never the keys themselves).
    List,
    /// Revoke an API key by id (`key_…`).
    Revoke { id: String },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.settings.resolve()?;
    match cli.command {
        Command::Serve => serve(config, None).await,
        Command::Dev(dev) => crate::dev::run(config, dev, &cli.settings.log).await,
        Command::Migrate => {
            let store = Store::connect(&config.database_url, &config.data_dir).await?;
            store.migrate().await?;
            out!("migrations applied to {}", redact_url(&config.database_url));
            Ok(())
        }
        Command::Admin { command } => admin(config, command).await,
    }
}

/// Runs the control plane until a stop signal. `dev`: the lines about the
/// rest of the platform for `codeb dev`'s start banner.
pub(crate) async fn serve(config: Config, dev: Option<&str>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding CODEB_HTTP_ADDR {}", config.http_addr))?;
    let (state, bootstrap) = server::prepare(&config, Clock::system()).await?;
    let dev_pw = if dev.is_some() {
        let generated = match &bootstrap {
            Bootstrap::Generated(pw) => Some(pw.as_str()),
            _ => None,
        };
        match server::dev_password(&config.data_dir, generated)? {
            // The file keeps the generated password; once it is changed
            // (`codeb admin users passwd`) the banner must not show it.
            Some(pw) if !admin_password_is(&state, &config.admin_user, &pw).await? => Some(
                "(changed since it was generated; use the one you set, or reset it with: \
                 codeb admin users passwd)"
                    .to_owned(),
            ),
            pw => pw,
        }
    } else {
        None
    };
    match &bootstrap {
        Bootstrap::Generated(pw) if dev.is_none() => {
            // Printed once, on the first start only; it is not stored.
            say!(
                "\n  Created admin user '{}' with generated password:\n\n      {pw}\n\n  \
                 It is shown only now. Change it with: codeb admin users passwd {}\n",
                config.admin_user,
                config.admin_user
            );
        }
        Bootstrap::Created => {
            tracing::info!(user = %config.admin_user, "bootstrap admin created");
        }
        _ => {}
    }
    if let Some(platform) = dev {
        let url = format!("http://{}", config.http_addr);
        let pw = match (&config.admin_password, dev_pw) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => p,
            (None, None) => {
                "(set before this data dir was created; reset with: codeb admin users passwd)"
                    .into()
            }
        };
        say!(
            "\n  CodeB dev: control plane at {url} (SQLite in {})\n  \
             Admin user: {}   password: {pw}\n  \
             Admin pages: {url}/api-keys-admin.html  {url}/webhooks-admin.html  \
             {url}/outbound-ai-monitor.html\n{platform}",
            config.data_dir.display(),
            config.admin_user,
        );
    }
    server::serve(state, listener).await
}

/// Whether `username` may stop being an admin: `force`, or not an admin,
/// or another admin of the same tenant remains.
async fn force_ok(store: &Store, username: &str, force: bool) -> anyhow::Result<bool> {
    if force {
        return Ok(true);
    }
    let users = store.list_users().await?;
    let Some(user) = users.iter().find(|u| u.username == username) else {
        return Ok(true); // "no such user" is said by the change itself
    };
    Ok(user.role != Role::Admin
        || users
            .iter()
            .any(|u| u.username != username && u.tenant == user.tenant && u.role == Role::Admin))
}

fn last_admin(username: &str) -> String {
    format!(
        "'{username}' is the last admin of their tenant: nobody could sign in to manage it \
         (CODEB_ADMIN_PASSWORD only bootstraps an empty database). Add another admin first \
         (codeb admin users add NAME), or pass --force"
    )
}

/// Whether `password` is `user`'s password now.
async fn admin_password_is(
    state: &crate::state::AppState,
    user: &str,
    password: &str,
) -> anyhow::Result<bool> {
    let Some(stored) = state.store.user_by_username(user).await? else {
        return Ok(false);
    };
    let password = password.to_owned();
    Ok(
        tokio::task::spawn_blocking(move || password::verify(&password, &stored.password_hash))
            .await
            .unwrap_or(false),
    )
}

fn read_password(given: Option<String>) -> anyhow::Result<(String, bool)> {
    match given {
        Some(p) => {
            if p.len() < password::MIN_PASSWORD_LEN || p.len() > password::MAX_PASSWORD_LEN {
                anyhow::bail!(
                    "the password must be {}-{} characters",
                    password::MIN_PASSWORD_LEN,
                    password::MAX_PASSWORD_LEN
                );
            }
            Ok((p, false))
        }
        None => Ok((password::generate(), true)),
    }
}

async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    // A mistyped data directory must not become a new, empty database
    // that the command then reports on (or adds a user to) as if it were
    // the platform's.
    if let Some(file) = config
        .database_url
        .strip_prefix("sqlite://")
        .and_then(|rest| rest.split('?').next())
        .map(std::path::Path::new)
        && !file.exists()
    {
        anyhow::bail!(
            "no database at {}: is CODEB_DATA_DIR (--data-dir) right? `codeb serve` or `codeb migrate` creates it",
            file.display()
        );
    }
    let store = Store::open(&config.database_url, &config.data_dir).await?;
    let now = Clock::system().now();
    match command {
        AdminCommand::Users { command } => match command {
            UserCommand::Add {
                username,
                role,
                password: pw,
                tenant,
            } => {
                validate_username(&username).map_err(|e| anyhow::anyhow!("user name {e}"))?;
                let role = Role::parse(&role).context("role must be admin or viewer")?;
                let tenant = tenant
                    .unwrap_or_else(|| config.tenant.clone())
                    .to_ascii_lowercase();
                let (pw, generated) = read_password(pw)?;
                let pw2 = pw.clone();
                let hash = tokio::task::spawn_blocking(move || password::hash(&pw2)).await??;
                let id = UserId::from_random(crypto::random_bytes());
                if store
                    .create_user(&id, &tenant, &username, &hash, role, now)
                    .await?
                    .is_none()
                {
                    anyhow::bail!("user '{username}' already exists");
                }
                store
                    .ensure_catchall(&tenant, crate::state::CATCHALL_DEFAULT_USER, now)
                    .await?;
                out!("added {} '{username}' in tenant {tenant}", role.as_str());
                if generated {
                    out!("password: {pw}");
                }
            }
            UserCommand::Passwd {
                username,
                password: pw,
                role,
            } => {
                let role = role
                    .as_deref()
                    .map(|r| Role::parse(r).context("role must be admin or viewer"))
                    .transpose()?;
                if role.is_some_and(|r| r != Role::Admin)
                    && !force_ok(&store, &username, false).await?
                {
                    anyhow::bail!(last_admin(&username));
                }
                let (pw, generated) = read_password(pw)?;
                let pw2 = pw.clone();
                let hash = tokio::task::spawn_blocking(move || password::hash(&pw2)).await??;
                if !store.update_user(&username, Some(&hash), role, now).await? {
                    anyhow::bail!("no user '{username}'");
                }
                out!("password of '{username}' changed; their sessions are signed out");
                if generated {
                    out!("password: {pw}");
                }
            }
            UserCommand::List => {
                let users = store.list_users().await?;
                out!("{:<24} {:<8} {:<28} CREATED", "USER", "ROLE", "TENANT");
                for u in users {
                    out!(
                        "{:<24} {:<8} {:<28} {}",
                        u.username,
                        u.role.as_str(),
                        u.tenant,
                        u.created_at.to_iso()
                    );
                }
            }
            UserCommand::Role {
                username,
                role,
                force,
            } => {
                let role = Role::parse(&role).context("role must be admin or viewer")?;
                if role != Role::Admin && !force_ok(&store, &username, force).await? {
                    anyhow::bail!(last_admin(&username));
                }
                if !store.update_user(&username, None, Some(role), now).await? {
                    anyhow::bail!("no user '{username}'");
                }
                out!(
                    "'{username}' is now {}; their sessions are signed out",
                    role.as_str()
                );
            }
            UserCommand::Remove { username, force } => {
                if !force_ok(&store, &username, force).await? {
                    anyhow::bail!(last_admin(&username));
                }
                if !store.remove_user(&username).await? {
                    anyhow::bail!("no user '{username}'");
                }
                out!("removed '{username}'");
                // Their API keys are the tenant's and stay valid: say so,
                // so that whoever removes a departed admin can revoke them.
                let keys = store.list_api_keys(None, i64::MAX, 0).await?;
                for k in keys.items.iter().filter(|k| k.created_by == username) {
                    out!(
                        "API key {} ({:?}, tenant {}) that '{username}' minted stays valid: `codeb admin keys revoke {}` ends it",
                        k.id,
                        k.name,
                        k.tenant,
                        k.id
                    );
                }
            }
        },
        AdminCommand::Keys { command } => match command {
            KeyCommand::List => {
                let page = store.list_api_keys(None, i64::MAX, 0).await?;
                out!(
                    "{:<22} {:<24} {:<20} {:<24} LAST USED",
                    "ID",
                    "NAME",
                    "TENANT",
                    "CREATED"
                );
                for k in page.items {
                    out!(
                        "{:<22} {:<24} {:<20} {:<24} {}",
                        k.id,
                        k.name,
                        k.tenant,
                        k.created_at.to_iso(),
                        k.last_used_at
                            .map(|t| t.to_iso())
                            .unwrap_or_else(|| "never".into())
                    );
                }
            }
            KeyCommand::Revoke { id } => {
                let id = ApiKeyId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
                if !store.revoke_api_key(None, &id, now).await? {
                    anyhow::bail!("no live API key {id}");
                }
                out!("revoked {id}");
            }
        },
    }
    store.close().await;
    Ok(())
}
