//! One switch node: its gRPC client and what the control plane knows of
//! its health. The channel connects lazily and reconnects by itself on the
//! next call after a failure; the prober (`probe_loop`) paces those calls
//! with capped exponential backoff, so a dead node costs one connect
//! attempt per backoff step, not one per request.

use std::sync::Mutex;
use std::time::Duration;

use codeb_proto::v1::StatsReply;
use codeb_proto::v1::switch_client::SwitchClient;
use codeb_types::UtcMillis;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::SwitchTls;

/// A node's gRPC client: every request carries the link's token
/// (`CODEB_SWITCH_TOKEN`) when one is set.
pub type Client = SwitchClient<InterceptedService<Channel, Token>>;

/// Adds `authorization: Bearer <CODEB_SWITCH_TOKEN>` to each request.
#[derive(Debug, Clone, Default)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl Token {
    /// The header for `token` (None: requests go without one). A token
    /// that is not a valid header value is refused by the settings first.
    pub fn new(token: Option<&str>) -> Token {
        Token(token.and_then(|t| format!("Bearer {t}").parse().ok()))
    }
}

impl Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The TLS an `https://` node is reached with: its certificate checked
/// against `CODEB_SWITCH_TLS_CA` (else the web roots) and the host of its
/// URL, and our client certificate shown if one is set.
pub fn client_tls(tls: &SwitchTls) -> ClientTlsConfig {
    let mut c = ClientTlsConfig::new().timeout(Duration::from_secs(10));
    c = match &tls.ca {
        Some(ca) => c.ca_certificate(Certificate::from_pem(ca)),
        None => c.with_webpki_roots(),
    };
    if let Some((cert, key)) = &tls.client {
        c = c.identity(Identity::from_pem(cert, key));
    }
    c
}

/// Whether the link's TLS files hold what they should (checked at start,
/// so a bad file stops the start instead of leaving every node
/// unreachable: the channel itself skips certificates it cannot parse).
pub fn check_tls(tls: &SwitchTls) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = |setting: &str, pem: &[u8]| -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{setting}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{setting}: no certificate in it"));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &tls.ca {
        for c in certs("CODEB_SWITCH_TLS_CA", ca)? {
            roots
                .add(c)
                .map_err(|e| format!("CODEB_SWITCH_TLS_CA: not a CA certificate: {e}"))?;
        }
    }
    if let Some((cert, key)) = &tls.client {
        let chain = certs("CODEB_SWITCH_CLIENT_CERT", cert)?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| format!("CODEB_SWITCH_CLIENT_KEY: {e}"))?;
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                format!("CODEB_SWITCH_CLIENT_CERT / _KEY: not a certificate and its key: {e}")
            })?;
    }
    Endpoint::from_static("https://switch.invalid:1")
        .tls_config(client_tls(tls))
        .map(drop)
        .map_err(|e| {
            use std::error::Error as _;
            match e.source() {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            }
        })
}

/// What the last probes of a node found.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// The last Stats call succeeded.
    pub healthy: bool,
    /// When a Stats call last succeeded.
    pub last_ok: Option<UtcMillis>,
    /// When an event last came on its stream.
    pub last_event: Option<UtcMillis>,
    /// When the current run of failures began (None while healthy).
    pub failing_since: Option<UtcMillis>,
    pub last_error: String,
    pub stats: Option<StatsReply>,
    /// The configuration version the node runs, as it last told us.
    pub running_version: u64,
    /// A version the node refused (INVALID_ARGUMENT): not pushed again.
    pub refused_version: Option<u64>,
    /// This control plane raised its database's configuration version
    /// past the node's once already (see `config::Pushed::Ahead`).
    pub raised_past: bool,
    /// The node ran a newer version again after that: someone else (another
    /// deployment's database) configures it, and this version is not
    /// pushed to it again.
    pub ahead_of: Option<u64>,
    /// The node's process as first seen answering (see [`Instance`]).
    pub instance: Option<Instance>,
}

/// One process of a node (`StatsReply.instance_id`), as this control
/// plane first saw it. Calls an earlier process carried are lost once
/// every event that process wrote has been applied: its journal up to
/// `last_seq`, as it stood when this instance was first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub journal_id: String,
    pub last_seq: u64,
    /// Its predecessors' calls have been ended.
    pub swept: bool,
    /// When this control plane last heard from the process before it
    /// (None: none known): the calls it carried end there.
    pub predecessor_seen: Option<UtcMillis>,
}

#[derive(Debug)]
pub struct Node {
    url: String,
    client: Option<Client>,
    health: Mutex<Health>,
    /// Whether calls ended as lost with the node may be waiting to be hung
    /// up there (`Store::lost_calls_to_hang_up`): set at the start (a
    /// restarted control plane does not know), when the node's calls are
    /// ended as lost, when it answers again, and when a lost call is
    /// cancelled; cleared once they are all hung up.
    lost_hangups_due: std::sync::atomic::AtomicBool,
    /// When they were last looked for (ms; `i64::MIN`: never). Another
    /// control plane sharing the database may have ended the node's
    /// calls as lost, which no flag here says: they are looked for again
    /// every [`LOST_HANGUPS_RECHECK_MS`] all the same.
    lost_hangups_looked: std::sync::atomic::AtomicI64,
}

/// How often calls ended as lost are looked for on a node that answers,
/// whatever this control plane saw.
pub const LOST_HANGUPS_RECHECK_MS: i64 = 30_000;

/// Transport settings of every node's channel.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSettings {
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval: a silently dead peer (no FIN, no RST) is
    /// noticed within interval + timeout even on an idle event stream.
    pub keepalive: Duration,
}

impl Node {
    /// A node for `url` (`http://host:port`, or `https://host:port` over
    /// `tls`). A URL the channel cannot use gives a node that is never
    /// healthy and says why.
    pub fn new(url: &str, settings: ChannelSettings, token: &Token, tls: &SwitchTls) -> Node {
        let client = Endpoint::from_shared(url.to_owned())
            .and_then(|e| {
                if url.starts_with("https://") {
                    e.tls_config(client_tls(tls))
                } else {
                    Ok(e)
                }
            })
            .map(|e| {
                let channel = e
                    .connect_timeout(settings.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(settings.keepalive)
                    .keep_alive_timeout(settings.keepalive)
                    .keep_alive_while_idle(true)
                    .connect_lazy();
                SwitchClient::with_interceptor(channel, token.clone())
            })
            .map_err(|e| tracing::error!(node = %url, "unusable switch URL: {e}"))
            .ok();
        let health = Health {
            last_error: if client.is_some() {
                "not probed yet".into()
            } else {
                "unusable URL".into()
            },
            ..Health::default()
        };
        Node {
            url: url.to_owned(),
            client,
            health: Mutex::new(health),
            lost_hangups_due: std::sync::atomic::AtomicBool::new(true),
            lost_hangups_looked: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    /// Calls ended as lost with this node may wait to be hung up there.
    pub fn want_lost_hangups(&self) {
        self.lost_hangups_due
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether calls ended as lost are to be looked for at `now`: asked
    /// for, or not looked for in [`LOST_HANGUPS_RECHECK_MS`]. Forgotten
    /// here (set again with [`Self::want_lost_hangups`] if some are left).
    pub fn take_lost_hangups_due(&self, now: UtcMillis) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let asked = self.lost_hangups_due.swap(false, Relaxed);
        let looked = self.lost_hangups_looked.load(Relaxed);
        if asked || now.0.saturating_sub(looked) >= LOST_HANGUPS_RECHECK_MS {
            self.lost_hangups_looked.store(now.0, Relaxed);
            return true;
        }
        false
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client for one call (clones share the channel).
    pub fn client(&self) -> Result<Client, String> {
        self.client
            .clone()
            .ok_or_else(|| format!("{}: unusable URL", self.url))
    }

    pub fn health(&self) -> Health {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        // A poisoned lock only means a panic elsewhere mid-update of plain
        // data; the data is still the best we know.
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a successful Stats answer.
    pub fn record_ok(&self, stats: StatsReply, now: UtcMillis) {
        let mut h = self.lock();
        if !h.healthy {
            tracing::info!(node = %self.url, node_id = %stats.node_id, journal = %stats.journal_id,
                config_version = stats.config_version, "switch node reachable");
        }
        let id = super::events::instance_id(&stats.instance_id);
        if !id.is_empty() && h.instance.as_ref().is_none_or(|i| i.id != id) {
            if let Some(was) = &h.instance {
                tracing::warn!(node = %self.url, was = %was.id, now = %id,
                    "switch node restarted: the calls it carried are ended once its journal is read");
            }
            let predecessor_seen = h.instance.as_ref().and(h.last_ok);
            // A new process: its configuration is news to this control
            // plane again.
            h.raised_past = false;
            h.ahead_of = None;
            h.instance = Some(Instance {
                id,
                journal_id: stats.journal_id.clone(),
                last_seq: stats.last_seq,
                swept: false,
                predecessor_seen,
            });
        }
        h.healthy = true;
        h.last_ok = Some(now);
        h.failing_since = None;
        h.last_error.clear();
        h.running_version = stats.config_version;
        h.stats = Some(stats);
    }

    /// An event came on the node's stream at `now`: it was alive then.
    pub fn record_event(&self, now: UtcMillis) {
        let mut h = self.lock();
        h.last_event = Some(h.last_event.map_or(now, |t| t.max(now)));
    }

    /// When the node was last heard from: its last successful Stats call
    /// or the last event on its stream.
    pub fn last_heard(&self) -> Option<UtcMillis> {
        let h = self.lock();
        match (h.last_ok, h.last_event) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The instance whose predecessors' calls have been ended (unless a
    /// newer one was seen meanwhile).
    pub fn record_swept(&self, instance: &str) {
        if let Some(i) = self.lock().instance.as_mut().filter(|i| i.id == instance) {
            i.swept = true;
        }
    }

    /// Records a failed Stats call.
    pub fn record_failure(&self, error: String, now: UtcMillis) {
        let mut h = self.lock();
        // Said when the node goes down, when it has not come up yet, and
        // whenever the reason changes (a certificate fixed on one side
        // only, a token that differs): the cause is in the log without
        // debug logging, once per change rather than once per probe.
        if h.healthy || error != h.last_error {
            tracing::warn!(node = %self.url, "switch node unreachable: {error}");
        }
        h.healthy = false;
        h.failing_since.get_or_insert(now);
        h.last_error = error;
    }

    /// The node answered ApplyConfig with the version it now runs.
    /// The node runs `version` after a push of ours: if it is ours, the
    /// node is configured from here again.
    pub fn record_running_version(&self, version: u64, ours: u64) {
        let mut h = self.lock();
        h.running_version = version;
        if version == ours {
            h.ahead_of = None;
        }
    }

    pub fn record_refused(&self, version: u64) {
        self.lock().refused_version = Some(version);
    }

    /// The node runs a version newer than `ours`: whether this control
    /// plane may raise its database's version past it (once per node
    /// process; a node that keeps getting ahead is configured by someone
    /// else, and raising again would take it back and forth between the
    /// two).
    pub fn may_raise_past(&self, ours: u64) -> bool {
        let mut h = self.lock();
        if h.raised_past {
            h.ahead_of = Some(ours);
            return false;
        }
        h.raised_past = true;
        true
    }

    /// Unreachable for at least `after` at `now`: its calls are lost.
    pub fn is_lost(&self, now: UtcMillis, after: Duration) -> bool {
        let h = self.lock();
        let after = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        h.failing_since
            .is_some_and(|since| now.0.saturating_sub(since.0) >= after)
    }

    /// How busy the node is, lower first: (share of its call capacity in
    /// use, media CPU load). None when it cannot take a call (unhealthy,
    /// draining, or full).
    pub fn load_key(&self) -> Option<(f64, f32)> {
        let h = self.lock();
        let s = h.stats.as_ref().filter(|_| h.healthy)?;
        if s.draining || (s.max_calls > 0 && s.active_calls >= s.max_calls) {
            return None;
        }
        // Configured from elsewhere: our calls would find neither our
        // trunks nor our whitelists there.
        if h.ahead_of.is_some() {
            return None;
        }
        let share = if s.max_calls > 0 {
            f64::from(s.active_calls) / f64::from(s.max_calls)
        } else {
            // No stated capacity: compare by calls alone.
            f64::from(s.active_calls)
        };
        let load = if s.load.is_finite() {
            s.load.clamp(0.0, 1.0)
        } else {
            1.0
        };
        Some((share, load))
    }

    /// Why the node cannot take a call, for error messages.
    pub fn why_unusable(&self) -> String {
        let h = self.lock();
        match &h.stats {
            Some(s) if h.healthy && s.draining => format!("{}: draining", self.url),
            Some(_) if h.healthy && h.ahead_of.is_some() => {
                format!("{}: runs another deployment's configuration", self.url)
            }
            Some(s) if h.healthy => format!(
                "{}: full ({} of {} calls)",
                self.url, s.active_calls, s.max_calls
            ),
            _ => format!("{}: {}", self.url, h.last_error),
        }
    }
}
