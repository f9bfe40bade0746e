//! Settings: every one is a command-line flag and an environment variable
//! (the flag wins), with the names from ARCHITECTURE.md §4. `Settings` is
//! what clap parses; `Config` is the resolved form the rest of the program
//! uses (defaults that depend on other settings filled in, URLs parsed).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Settings shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Control plane HTTP listen address.
    #[arg(
        long,
        env = "CODEB_HTTP_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub http_addr: SocketAddr,

    /// Directory for the SQLite database, transcripts and the OIDC signing key.
    #[arg(long, env = "CODEB_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// Database URL: sqlite://… or postgres://… [default: sqlite://$CODEB_DATA_DIR/codeb.db]
    #[arg(
        long,
        env = "CODEB_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Public URL of this control plane; its host is the tenant name and it
    /// is the OIDC issuer. [default: http://$CODEB_HTTP_ADDR]
    #[arg(long, env = "CODEB_PUBLIC_BASE_URL", global = true)]
    pub public_base_url: Option<url::Url>,

    /// Bootstrap admin user, created on first start.
    #[arg(long, env = "CODEB_ADMIN_USER", default_value = "admin", global = true)]
    pub admin_user: String,

    /// Bootstrap admin password [default: generated and printed once on first start]
    #[arg(
        long,
        env = "CODEB_ADMIN_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub admin_password: Option<String>,

    /// Comma-separated gRPC URLs of switch nodes (none: calls cannot be placed).
    #[arg(long, env = "CODEB_SWITCH_URLS", value_delimiter = ',', global = true)]
    pub switch_urls: Vec<String>,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `codeb=debug,info`.
    #[arg(long, env = "CODEB_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log format: `text` or `json`.
    #[arg(long, env = "CODEB_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub public_base_url: url::Url,
    /// The tenant a bootstrap admin, and every row they create, belongs to.
    pub tenant: String,
    /// OIDC issuer (`iss`): the public base URL without a trailing slash.
    pub issuer: String,
    pub admin_user: String,
    pub admin_password: Option<String>,
    pub switch_urls: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("CODEB_PUBLIC_BASE_URL must be an http(s) URL with a host, got {0}")]
    BadPublicUrl(String),
    #[error("CODEB_DATA_DIR is not valid UTF-8: {0:?}")]
    DataDirNotUtf8(PathBuf),
    #[error("CODEB_ADMIN_USER is not a valid user name: {0}")]
    BadAdminUser(String),
}

impl Settings {
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let public_base_url = match &self.public_base_url {
            Some(u) => u.clone(),
            None => url::Url::parse(&format!("http://{}", self.http_addr))
                .map_err(|_| ConfigError::BadPublicUrl(self.http_addr.to_string()))?,
        };
        if !matches!(public_base_url.scheme(), "http" | "https") {
            return Err(ConfigError::BadPublicUrl(public_base_url.to_string()));
        }
        let tenant = public_base_url
            .host_str()
            .map(|h| {
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase()
            })
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ConfigError::BadPublicUrl(public_base_url.to_string()))?;
        let issuer = public_base_url.as_str().trim_end_matches('/').to_owned();
        let database_url = match &self.database_url {
            Some(u) => u.clone(),
            None => {
                let dir = self
                    .data_dir
                    .to_str()
                    .ok_or_else(|| ConfigError::DataDirNotUtf8(self.data_dir.clone()))?;
                format!("sqlite://{}/codeb.db?mode=rwc", dir.trim_end_matches('/'))
            }
        };
        if crate::auth::validate_username(&self.admin_user).is_err() {
            return Err(ConfigError::BadAdminUser(self.admin_user.clone()));
        }
        Ok(Config {
            http_addr: self.http_addr,
            data_dir: self.data_dir.clone(),
            database_url,
            public_base_url,
            tenant,
            issuer,
            admin_user: self.admin_user.clone(),
            admin_password: self.admin_password.clone(),
            switch_urls: self
                .switch_urls
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }
}

/// Installs the global tracing subscriber.
pub fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
