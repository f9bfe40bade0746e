//! Settings: every one is a command-line flag and an environment variable
//! (the flag wins), with the names from ARCHITECTURE.md §4. `Settings` is
//! what clap parses; `Config` is the resolved form the rest of the program
//! uses (defaults that depend on other settings filled in, URLs parsed).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::webhooks::IpNet;

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

    /// Comma-separated gRPC URLs of switch nodes: `https://host:port` for
    /// a node serving TLS (its CODEB_SWITCH_TLS_CERT), `http://host:port`
    /// for plaintext (none: calls cannot be placed).
    #[arg(long, env = "CODEB_SWITCH_URLS", value_delimiter = ',', global = true)]
    pub switch_urls: Vec<String>,

    /// Shared secret of the control link: sent as a bearer on every call
    /// to the switch nodes, which refuse calls without it when they have
    /// it too (16-256 visible ASCII characters). `codeb dev` passes it to
    /// its switch.
    #[arg(
        long,
        env = "CODEB_SWITCH_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub switch_token: Option<String>,

    /// PEM certificate(s) the `https://` switch nodes' certificates must
    /// chain to [default: the public web roots].
    #[arg(long, env = "CODEB_SWITCH_TLS_CA", global = true)]
    pub switch_tls_ca: Option<std::path::PathBuf>,

    /// PEM client certificate chain this control plane shows `https://`
    /// switch nodes that ask for one (their CODEB_SWITCH_TLS_CLIENT_CA).
    #[arg(long, env = "CODEB_SWITCH_CLIENT_CERT", global = true)]
    pub switch_client_cert: Option<std::path::PathBuf>,

    /// PEM private key of CODEB_SWITCH_CLIENT_CERT.
    #[arg(long, env = "CODEB_SWITCH_CLIENT_KEY", global = true)]
    pub switch_client_key: Option<std::path::PathBuf>,

    /// How long a switch node may stay unreachable before its calls are
    /// ended (`ended-failed-*`, errorDetail "switch node <url> lost") and
    /// retried per their settings (`ms`, `s`, `m`).
    #[arg(
        long,
        env = "CODEB_SWITCH_LOST_AFTER",
        default_value = "5s",
        global = true
    )]
    pub switch_lost_after: String,

    /// Length of one unit of a call's `retryDelayMinutes` (1s to 1m).
    /// Change only for tests: whole-system tests make a one-minute retry
    /// delay take a second.
    #[arg(
        long,
        env = "CODEB_CALL_RETRY_DELAY_UNIT",
        default_value = "1m",
        global = true
    )]
    pub call_retry_delay_unit: String,

    /// CIDR blocks webhook URLs may reach despite the SSRF guard
    /// (comma-separated, e.g. 127.0.0.0/8 for tests or 10.1.2.0/24 for an
    /// internal receiver). Everything else private, loopback, link-local,
    /// CGNAT, multicast, reserved or documentation is refused.
    #[arg(
        long,
        env = "CODEB_WEBHOOK_ALLOW",
        value_delimiter = ',',
        global = true
    )]
    pub webhook_allow: Vec<String>,

    /// Waits before webhook retries (attempts 2, 3, 4, …), comma-separated
    /// durations (`ms`, `s`, `m`). Change only for tests.
    #[arg(
        long,
        env = "CODEB_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,30s,120s",
        global = true
    )]
    pub webhook_retry_schedule: String,

    /// Time limit of one webhook attempt (connect and response). Change
    /// only for tests.
    #[arg(
        long,
        env = "CODEB_WEBHOOK_TIMEOUT",
        default_value = "10s",
        global = true
    )]
    pub webhook_timeout: String,

    /// SMTP relay for the transcript + outcome email of every outbound AI
    /// call: `smtp://host:port` (plain, e.g. a local relay on this machine
    /// or a private network) or `smtps://user:password@host:port`
    /// (implicit TLS; AUTH PLAIN or LOGIN). Unset: emails are queued, not
    /// sent, and go out once it is set.
    #[arg(long, env = "CODEB_SMTP_URL", global = true, hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Sender address of the emails [default: codeb@<host of CODEB_PUBLIC_BASE_URL>]
    #[arg(long, env = "CODEB_SMTP_FROM", global = true)]
    pub smtp_from: Option<String>,

    /// Waits before email retries (attempts 2, 3, …) after a 4xx answer or
    /// a connection failure, comma-separated durations (`ms`, `s`, `m`); a
    /// 5xx answer to the message fails it at once.
    #[arg(
        long,
        env = "CODEB_SMTP_RETRY_SCHEDULE",
        default_value = "30s,2m,10m,30m,60m,120m,240m,480m",
        global = true
    )]
    pub smtp_retry_schedule: String,

    /// Time limit of each SMTP step (connect, TLS handshake, each answer).
    #[arg(long, env = "CODEB_SMTP_TIMEOUT", default_value = "30s", global = true)]
    pub smtp_timeout: String,

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
    /// `CODEB_SWITCH_TOKEN`.
    pub switch_token: Option<String>,
    /// `CODEB_SWITCH_TLS_CA` and `CODEB_SWITCH_CLIENT_CERT` / `_KEY`: how
    /// `https://` nodes are reached.
    pub switch_tls: SwitchTls,
    /// `CODEB_SWITCH_LOST_AFTER`.
    pub switch_lost_after: Duration,
    /// `CODEB_CALL_RETRY_DELAY_UNIT`: what one `retryDelayMinutes` is.
    pub call_retry_delay_unit: Duration,
    pub webhooks: WebhookConfig,
    pub email: EmailConfig,
}

/// Transcript email settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConfig {
    /// `CODEB_SMTP_URL`; None: emails stay queued.
    pub smtp: Option<crate::email::SmtpUrl>,
    /// `CODEB_SMTP_FROM`.
    pub from: String,
    /// The name this control plane greets relays with (`EHLO`) and the
    /// right side of Message-IDs: the public host, an address literal for
    /// an IP.
    pub host: String,
    /// Waits before attempts 2, 3, …
    pub retry_delays: Vec<Duration>,
    /// Limit of each SMTP step.
    pub timeout: Duration,
}

impl EmailConfig {
    /// The defaults for a tenant host, without a relay.
    pub fn unsent(tenant: &str) -> EmailConfig {
        let host = match tenant.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => format!("[{ip}]"),
            Ok(std::net::IpAddr::V6(ip)) => format!("[IPv6:{ip}]"),
            Err(_) => tenant.to_owned(),
        };
        EmailConfig {
            smtp: None,
            from: format!("codeb@{host}"),
            host,
            retry_delays: [30, 120, 600, 1800, 3600, 7200, 14_400, 28_800]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Webhook delivery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `CODEB_WEBHOOK_ALLOW`.
    pub allow: Vec<IpNet>,
    /// Waits before attempts 2, 3, … (the v1 spec's 5 s, 30 s, 120 s).
    pub retry_delays: Vec<Duration>,
    /// Connect + response limit of one attempt.
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow: Vec::new(),
            retry_delays: vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
            timeout: Duration::from_secs(10),
        }
    }
}

/// `250ms`, `5s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (like 250ms, 5s or 2m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("'{s}' is not a duration (like 250ms, 5s or 2m)")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("CODEB_PUBLIC_BASE_URL must be an http(s) URL with a host, got {0}")]
    BadPublicUrl(String),
    #[error("CODEB_DATA_DIR is not valid UTF-8: {0:?}")]
    DataDirNotUtf8(PathBuf),
    #[error("CODEB_ADMIN_USER is not a valid user name: {0}")]
    BadAdminUser(String),
    #[error("CODEB_WEBHOOK_ALLOW: {0}")]
    BadWebhookAllow(String),
    #[error("CODEB_WEBHOOK_RETRY_SCHEDULE: {0}")]
    BadRetrySchedule(String),
    #[error("CODEB_WEBHOOK_TIMEOUT: {0}")]
    BadWebhookTimeout(String),
    #[error("CODEB_SWITCH_URLS: {0}")]
    BadSwitchUrl(String),
    #[error("CODEB_SWITCH_TOKEN: must be 16-256 visible ASCII characters")]
    BadSwitchToken,
    #[error("CODEB_SWITCH_TOKEN is set but empty: give it the link's secret, or unset it")]
    EmptySwitchToken,
    #[error("{0}")]
    BadSwitchTls(String),
    #[error("CODEB_SWITCH_LOST_AFTER: {0}")]
    BadSwitchLostAfter(String),
    #[error("CODEB_SMTP_URL: {0}")]
    BadSmtpUrl(String),
    #[error("CODEB_SMTP_FROM: {0}")]
    BadSmtpFrom(String),
    #[error("CODEB_SMTP_RETRY_SCHEDULE: {0}")]
    BadSmtpRetrySchedule(String),
    #[error("CODEB_SMTP_TIMEOUT: {0}")]
    BadSmtpTimeout(String),
    #[error("CODEB_CALL_RETRY_DELAY_UNIT: {0}")]
    BadRetryDelayUnit(String),
}

/// The PEM files of the control link's TLS, read at start.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SwitchTls {
    /// Trust anchors of the nodes' certificates (None: the web roots).
    pub ca: Option<Vec<u8>>,
    /// Client certificate chain and key, for nodes that require one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl SwitchTls {
    fn read(s: &Settings) -> Result<SwitchTls, ConfigError> {
        let read = |setting: &str, path: &std::path::Path| {
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError::BadSwitchTls(format!("{setting} {}: {e}", path.display()))
            })?;
            if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(ConfigError::BadSwitchTls(format!(
                    "{setting} {}: not a PEM file",
                    path.display()
                )));
            }
            Ok(pem)
        };
        let ca = match &s.switch_tls_ca {
            Some(p) => Some(read("CODEB_SWITCH_TLS_CA", p)?),
            None => None,
        };
        let client = match (&s.switch_client_cert, &s.switch_client_key) {
            (Some(c), Some(k)) => Some((
                read("CODEB_SWITCH_CLIENT_CERT", c)?,
                read("CODEB_SWITCH_CLIENT_KEY", k)?,
            )),
            (None, None) => None,
            _ => {
                return Err(ConfigError::BadSwitchTls(
                    "CODEB_SWITCH_CLIENT_CERT and CODEB_SWITCH_CLIENT_KEY go together".into(),
                ));
            }
        };
        Ok(SwitchTls { ca, client })
    }

    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }
}

/// The sizes only: the client key stays out of any log of the settings.
impl std::fmt::Debug for SwitchTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchTls")
            .field("ca_bytes", &self.ca.as_ref().map(Vec::len))
            .field(
                "client_cert_bytes",
                &self.client.as_ref().map(|c| c.0.len()),
            )
            .field("client_key", &self.client.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A switch node URL the link can use: `https://host:port` for a node
/// serving TLS, `http://host:port` for plaintext gRPC (keep that on a
/// private network).
fn switch_url(s: &str) -> Result<String, ConfigError> {
    let u = url::Url::parse(s).map_err(|e| ConfigError::BadSwitchUrl(format!("{s}: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(ConfigError::BadSwitchUrl(format!(
            "{s}: use http://host:port, or https://host:port for a node serving TLS"
        )));
    }
    if u.host_str().is_none_or(str::is_empty) || u.port_or_known_default().is_none() {
        return Err(ConfigError::BadSwitchUrl(format!("{s}: no host or port")));
    }
    if u.path() != "/" || u.query().is_some() || !u.username().is_empty() {
        return Err(ConfigError::BadSwitchUrl(format!(
            "{s}: only scheme, host and port are allowed"
        )));
    }
    Ok(s.trim_end_matches('/').to_owned())
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
        let allow = self
            .webhook_allow
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<IpNet>().map_err(ConfigError::BadWebhookAllow))
            .collect::<Result<Vec<_>, _>>()?;
        let retry_delays = self
            .webhook_retry_schedule
            .split(',')
            .map(parse_duration)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::BadRetrySchedule)?;
        if retry_delays.is_empty() || retry_delays.len() > 9 {
            return Err(ConfigError::BadRetrySchedule(
                "give 1 to 9 waits (attempts 2 to 10)".into(),
            ));
        }
        let timeout =
            parse_duration(&self.webhook_timeout).map_err(ConfigError::BadWebhookTimeout)?;
        if timeout.is_zero() {
            return Err(ConfigError::BadWebhookTimeout("must be more than 0".into()));
        }
        let switch_urls = self
            .switch_urls
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(switch_url)
            .collect::<Result<Vec<_>, _>>()?;
        let switch_token = match self.switch_token.as_deref().map(str::trim) {
            None => None,
            // An empty secret (a template whose secret did not arrive)
            // must not quietly send no token.
            Some("") => return Err(ConfigError::EmptySwitchToken),
            Some(t) if (16..=256).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(t.to_owned())
            }
            Some(_) => return Err(ConfigError::BadSwitchToken),
        };
        let switch_tls = SwitchTls::read(self)?;
        crate::switch_link::node::check_tls(&switch_tls).map_err(ConfigError::BadSwitchTls)?;
        if switch_tls.is_set()
            && let Some(plain) = switch_urls.iter().find(|u| u.starts_with("http://"))
        {
            return Err(ConfigError::BadSwitchTls(format!(
                "CODEB_SWITCH_URLS {plain}: plaintext although the link's TLS is set \
                 (CODEB_SWITCH_TLS_CA / CODEB_SWITCH_CLIENT_CERT); use https://"
            )));
        }
        let switch_lost_after =
            parse_duration(&self.switch_lost_after).map_err(ConfigError::BadSwitchLostAfter)?;
        if switch_lost_after < Duration::from_secs(1) {
            return Err(ConfigError::BadSwitchLostAfter(
                "must be at least 1s (probes run every second)".into(),
            ));
        }
        let call_retry_delay_unit =
            parse_duration(&self.call_retry_delay_unit).map_err(ConfigError::BadRetryDelayUnit)?;
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&call_retry_delay_unit) {
            return Err(ConfigError::BadRetryDelayUnit(
                "must be from 1s to 1m (a minute; shorter only for tests)".into(),
            ));
        }
        let email = self.email_config(&tenant)?;
        Ok(Config {
            http_addr: self.http_addr,
            data_dir: self.data_dir.clone(),
            database_url,
            public_base_url,
            tenant,
            issuer,
            admin_user: self.admin_user.clone(),
            admin_password: self.admin_password.clone(),
            switch_urls,
            switch_token,
            switch_tls,
            switch_lost_after,
            call_retry_delay_unit,
            webhooks: WebhookConfig {
                allow,
                retry_delays,
                timeout,
            },
            email,
        })
    }

    fn email_config(&self, tenant: &str) -> Result<EmailConfig, ConfigError> {
        let mut email = EmailConfig::unsent(tenant);
        email.smtp = match self.smtp_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) => Some(crate::email::SmtpUrl::parse(u).map_err(ConfigError::BadSmtpUrl)?),
        };
        if let Some(from) = self
            .smtp_from
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            let ok = from
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                && from.len() <= 254
                && !from
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ','));
            if !ok {
                return Err(ConfigError::BadSmtpFrom(format!(
                    "{from} is not an e-mail address"
                )));
            }
            email.from = from.to_owned();
        }
        email.retry_delays = self
            .smtp_retry_schedule
            .split(',')
            .map(parse_duration)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::BadSmtpRetrySchedule)?;
        if email.retry_delays.is_empty() || email.retry_delays.len() > 20 {
            return Err(ConfigError::BadSmtpRetrySchedule(
                "give 1 to 20 waits (attempts 2 to 21)".into(),
            ));
        }
        email.timeout = parse_duration(&self.smtp_timeout).map_err(ConfigError::BadSmtpTimeout)?;
        if email.timeout.is_zero() {
            return Err(ConfigError::BadSmtpTimeout("must be more than 0".into()));
        }
        Ok(email)
    }
}

/// Installs the global tracing subscriber. A filter that does not parse
/// is an error naming CODEB_LOG (it used to be ignored for `info`); colours
/// only on a terminal (not in a file or the journal).
pub fn init_logging(settings: &Settings) -> Result<(), String> {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .map_err(|e| format!("CODEB_LOG {:?}: {e}", settings.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| LogSink);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// The log's stderr. A line that cannot be written (the log collector
/// closed the pipe) is dropped: tracing reports a failed write with
/// `eprintln!`, which panics on a closed stderr and took the process down.
struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "5", "s", "5h", "-5s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    /// The configuration `codeb` resolves from these flags.
    fn resolve(args: &[&str]) -> Result<Config, ConfigError> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("codeb").chain(args.iter().copied()))
            .unwrap()
            .settings
            .resolve()
    }

    #[test]
    fn the_switch_token_is_long_and_printable() {
        assert_eq!(resolve(&[]).unwrap().switch_token, None);
        let ok = "0123456789abcdef";
        assert_eq!(
            resolve(&["--switch-token", ok])
                .unwrap()
                .switch_token
                .as_deref(),
            Some(ok)
        );
        for empty in ["", "  "] {
            assert!(
                matches!(
                    resolve(&["--switch-token", empty]),
                    Err(ConfigError::EmptySwitchToken)
                ),
                "{empty:?}"
            );
        }
        for bad in ["short", "0123456789 abcdef", &"x".repeat(257)] {
            assert!(
                matches!(
                    resolve(&["--switch-token", bad]),
                    Err(ConfigError::BadSwitchToken)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn smtp_settings() {
        // No relay: queued only; the sender address from the public host.
        let c = resolve(&["--public-base-url", "https://phone.example.com/"]).unwrap();
        assert_eq!(c.email.smtp, None);
        assert_eq!(c.email.from, "codeb@phone.example.com");
        assert_eq!(c.email.host, "phone.example.com");
        assert_eq!(c.email.retry_delays.len(), 8);
        assert_eq!(c.email.timeout, Duration::from_secs(30));
        // An IP host is an address literal.
        let c = resolve(&["--http-addr", "127.0.0.1:8080"]).unwrap();
        assert_eq!(c.email.from, "codeb@[127.0.0.1]");
        let c = resolve(&[
            "--smtp-url",
            "smtps://u:p@mail.example.com",
            "--smtp-from",
            "calls@example.com",
            "--smtp-retry-schedule",
            "1s,5s",
            "--smtp-timeout",
            "5s",
        ])
        .unwrap();
        let url = c.email.smtp.unwrap();
        assert_eq!((url.tls, url.port), (true, 465));
        assert_eq!(c.email.from, "calls@example.com");
        assert_eq!(
            c.email.retry_delays,
            [Duration::from_secs(1), Duration::from_secs(5)]
        );
        for (args, what) in [
            (&["--smtp-url", "smtp://u:p@relay"][..], "credentials"),
            (&["--smtp-url", "http://relay"][..], "scheme"),
            (&["--smtp-from", "not an address"][..], "e-mail"),
            (&["--smtp-retry-schedule", "5h"][..], "duration"),
            (&["--smtp-timeout", "0s"][..], "more than 0"),
        ] {
            let e = resolve(args).unwrap_err().to_string();
            assert!(
                e.contains(what) && e.starts_with("CODEB_SMTP_"),
                "{args:?}: {e}"
            );
        }
    }

    #[test]
    fn call_retry_delay_unit_is_a_minute_unless_shortened_for_tests() {
        assert_eq!(
            resolve(&[]).unwrap().call_retry_delay_unit,
            Duration::from_secs(60)
        );
        assert_eq!(
            resolve(&["--call-retry-delay-unit", "1s"])
                .unwrap()
                .call_retry_delay_unit,
            Duration::from_secs(1)
        );
        for bad in ["999ms", "2m", "x"] {
            assert!(
                matches!(
                    resolve(&["--call-retry-delay-unit", bad]),
                    Err(ConfigError::BadRetryDelayUnit(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn switch_urls() {
        assert_eq!(
            switch_url("http://10.0.0.5:50051/").unwrap(),
            "http://10.0.0.5:50051"
        );
        assert_eq!(
            switch_url("https://switch-1.example:50051").unwrap(),
            "https://switch-1.example:50051"
        );
        for bad in [
            "10.0.0.5:50051",
            "grpc://s:1",
            "http://:1",
            "http://s:1/x",
            "http://u:p@s:1",
        ] {
            assert!(switch_url(bad).is_err(), "{bad}");
        }
    }
}
