//! TLS on the gRPC control link, with our own acceptor in front of tonic.
//!
//! tonic's own TLS reads the certificate once, so renewing it meant
//! restarting the switch, which drains its calls. Here the files
//! (`CODEB_SWITCH_TLS_CERT`, `_KEY`, `_CLIENT_CA`) are read again on
//! [`LinkTls::reload`] (SIGHUP): connections accepted from then on get the
//! new certificate, those already up keep theirs, and files that do not
//! make a working configuration leave the running one in place. A reload
//! cuts no connection: to shut out a control plane whose certificate is
//! no longer trusted, restart the switch. A failed handshake is logged at
//! warn (tonic logged it at debug), at most one line per
//! [`FAILURE_LOG_EVERY`] per source IP with the count of those left
//! unlogged, so a scanner can neither flood the log nor hide a control
//! plane's failures in it. Handshakes in progress are bounded per source
//! IP and in all, so idle connections from one host cannot shut the
//! control planes out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// A peer that connects and does not finish its handshake in this long is
/// dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once, in all and from one IP; a connection
/// past either is closed at once.
const MAX_HANDSHAKES: usize = 1024;
const MAX_HANDSHAKES_PER_IP: usize = 16;
/// At most one failed-handshake line per source IP per this long.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);
/// Source IPs whose failures are rate-limited each on its own; past this
/// many (a scan from everywhere at once) the rest share one limit.
const FAILURE_LOG_IPS: usize = 4096;

/// Where the link's certificate, key and client CA are read from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must show a certificate this CA signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// The link's TLS: the files, and the configuration last read from them.
pub struct LinkTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    failures: Mutex<FailureLogs>,
    handshakes: Arc<Handshakes>,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl LinkTls {
    /// Reads the files and checks them: an error names the setting, the
    /// file and why.
    pub fn load(files: TlsFiles) -> anyhow::Result<LinkTls> {
        let config = server_config(&files)?;
        Ok(LinkTls {
            files,
            current: RwLock::new(Arc::new(config)),
            failures: Mutex::new(FailureLogs::default()),
            handshakes: Arc::default(),
        })
    }

    /// Reads the files again. New connections get what they hold; on an
    /// error the configuration in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = Arc::new(server_config(&self.files)?);
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// Whether clients must show a certificate.
    pub fn client_certs(&self) -> bool {
        self.files.client_ca.is_some()
    }

    fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn handshake_failed(&self, peer: SocketAddr, why: &str) {
        let now = Instant::now();
        let unlogged = match self.failures.lock() {
            Ok(mut f) => f.failed(peer.ip(), now),
            Err(poisoned) => poisoned.into_inner().failed(peer.ip(), now),
        };
        if let Some(unlogged) = unlogged {
            tracing::warn!(%peer, error = why, unlogged,
                "gRPC control link: a TLS handshake failed (unlogged: this IP's failures since its last such line)");
        }
    }
}

/// Handshakes in progress, by source IP and in all.
#[derive(Debug, Default)]
struct Handshakes {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    by_ip: HashMap<IpAddr, usize>,
    total: usize,
}

impl Handshakes {
    /// A handshake from `ip` may start: the guard ends it. None: too many
    /// are in progress, from it or in all.
    fn start(self: &Arc<Self>, ip: IpAddr) -> Option<Pending> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.by_ip.get(&ip).copied().unwrap_or(0);
        if mine >= MAX_HANDSHAKES_PER_IP || c.total >= MAX_HANDSHAKES {
            return None;
        }
        c.by_ip.insert(ip, mine + 1);
        c.total += 1;
        Some(Pending {
            of: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn in_progress(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// A handshake in progress, counted until dropped.
struct Pending {
    of: Arc<Handshakes>,
    ip: IpAddr,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut c = self.of.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
            c.total -= 1;
        }
    }
}

/// Accepts TCP connections on `listener` and hands each one whose TLS
/// handshake succeeds to `tx`, until `tx` is closed (the server stopped).
pub async fn accept(
    listener: TcpListener,
    tls: Arc<LinkTls>,
    tx: mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = tx.closed() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, most likely: wait, do not spin.
                    tracing::warn!(error = %e, "gRPC control link: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(permit) = tls.handshakes.start(peer.ip()) else {
            tls.handshake_failed(peer, "too many handshakes in progress; closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
        let (tx, tls) = (tx.clone(), tls.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    drop(permit);
                    let _ = tx.send(Ok(stream)).await;
                }
                Ok(Err(e)) => tls.handshake_failed(peer, &e.to_string()),
                Err(_) => tls.handshake_failed(peer, "no handshake within 10 s"),
            }
        });
    }
}

/// The rustls configuration the files make (HTTP/2 only, as gRPC is).
fn server_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    const CERT: &str = "CODEB_SWITCH_TLS_CERT";
    const KEY: &str = "CODEB_SWITCH_TLS_KEY";
    const CA: &str = "CODEB_SWITCH_TLS_CLIENT_CA";
    let chain = certs(CERT, &files.cert, &read(CERT, &files.cert)?)?;
    if let Some(warning) = check_leaf(unix_now(), &files.cert, &chain[0])? {
        tracing::warn!("{warning}");
    }
    let key_pem = read(KEY, &files.key)?;
    if key_pem
        .windows(b"ENCRYPTED".len())
        .any(|w| w == b"ENCRYPTED")
    {
        anyhow::bail!(
            "{KEY} {}: the private key is encrypted; the switch needs it unencrypted (openssl pkey -in KEY -out PLAIN, kept readable by the switch alone)",
            files.key.display()
        );
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow::anyhow!(
            "{KEY} {}: no unencrypted PEM private key in it ({})",
            files.key.display(),
            pem_error(&e)
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(CA, ca, &read(CA, ca)?)? {
                roots.add(c).map_err(|e| {
                    anyhow::anyhow!("{CA} {}: not a CA certificate: {e}", ca.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| anyhow::anyhow!("{CA} {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, private).map_err(|e| {
        anyhow::anyhow!(
            "{CERT} {} / {KEY} {}: not a certificate and its key: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn read(setting: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{setting} {}", path.display()))
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Warn this long before the certificate expires.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// The server certificate (`leaf`, the chain's first), at `now`: an error
/// if no control plane would take it (expired, not yet valid, a CA's
/// certificate first in the chain); a warning if it expires soon.
fn check_leaf(now: i64, path: &Path, leaf: &[u8]) -> anyhow::Result<Option<String>> {
    use super::cert::{facts, utc};
    const CERT: &str = "CODEB_SWITCH_TLS_CERT";
    let Some(f) = facts(leaf) else {
        return Ok(None);
    };
    let path = path.display();
    anyhow::ensure!(
        !f.ca,
        "{CERT} {path}: its first certificate is a CA's (basicConstraints CA:TRUE); the server's own certificate must come first"
    );
    anyhow::ensure!(
        now <= f.not_after,
        "{CERT} {path}: the certificate expired on {}",
        utc(f.not_after)
    );
    anyhow::ensure!(
        now >= f.not_before,
        "{CERT} {path}: the certificate is not valid until {}",
        utc(f.not_before)
    );
    let days = (f.not_after - now) / 86_400;
    Ok((days < EXPIRY_WARNING_DAYS).then(|| {
        format!(
            "{CERT} {path}: the certificate expires on {} (in {days} days): renew it, then SIGHUP the switch",
            utc(f.not_after)
        )
    }))
}

/// A PEM parse error, readable (the library prints markers as byte lists).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "no \"{}\" line: the file is cut short?",
            String::from_utf8_lossy(end_marker).trim()
        ),
        Error::IllegalSectionStart { line } => format!(
            "a malformed BEGIN line: \"{}\"",
            String::from_utf8_lossy(line).trim()
        ),
        other => other.to_string(),
    }
}

fn certs(setting: &str, path: &Path, pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{setting} {}: {}", path.display(), pem_error(&e)))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{setting} {}: no PEM certificate in it",
        path.display()
    );
    Ok(certs)
}

/// When to log a failed handshake, per source IP.
#[derive(Debug, Default)]
struct FailureLogs {
    by_ip: HashMap<IpAddr, FailureLog>,
    /// IPs past [`FAILURE_LOG_IPS`].
    rest: FailureLog,
}

impl FailureLogs {
    fn failed(&mut self, ip: IpAddr, now: Instant) -> Option<u64> {
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= FAILURE_LOG_IPS {
            // Forget the IPs that have been quiet for an interval (their
            // next failure is logged at once anyway).
            self.by_ip.retain(|_, l| l.unlogged > 0 || !l.quiet(now));
        }
        if self.by_ip.len() >= FAILURE_LOG_IPS && !self.by_ip.contains_key(&ip) {
            return self.rest.failed(now);
        }
        self.by_ip.entry(ip).or_default().failed(now)
    }
}

/// When to log a failed handshake: the first, then at most one per
/// [`FAILURE_LOG_EVERY`].
#[derive(Debug, Default)]
struct FailureLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl FailureLog {
    /// A failure at `now`: Some(failures left unlogged since the last
    /// line) if this one is to be logged.
    /// No line in the last interval.
    fn quiet(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|t| now.saturating_duration_since(t) >= FAILURE_LOG_EVERY)
    }

    fn failed(&mut self, now: Instant) -> Option<u64> {
        if !self.quiet(now) {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_handshakes_are_logged_once_per_interval_with_the_rest_counted() {
        let mut log = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(log.failed(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(log.failed(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(log.failed(t0 + FAILURE_LOG_EVERY), Some(5));
        assert_eq!(log.failed(t0 + FAILURE_LOG_EVERY), None);
        assert_eq!(log.failed(t0 + FAILURE_LOG_EVERY * 3), Some(1));
    }

    /// A certificate no control plane would take is refused when read, and
    /// one that expires soon is warned of; rcgen makes them.
    #[test]
    fn the_server_certificate_is_checked_when_read() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, date_time_ymd};
        let key = KeyPair::generate().unwrap();
        let make = |from: (i32, u8, u8), to: (i32, u8, u8), ca: bool| {
            let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            p.not_before = date_time_ymd(from.0, from.1, from.2);
            p.not_after = date_time_ymd(to.0, to.1, to.2);
            if ca {
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            }
            p.self_signed(&key).unwrap().der().to_vec()
        };
        let day = 86_400;
        // 2026-12-01 00:00:00 UTC.
        let now = 20_788 * day;
        let path = Path::new("/etc/codeb/switch.crt");
        let good = make((2026, 1, 1), (2027, 6, 1), false);
        assert_eq!(check_leaf(now, path, &good).unwrap(), None);
        let soon = make((2026, 1, 1), (2026, 12, 11), false);
        let warning = check_leaf(now, path, &soon).unwrap().unwrap();
        assert!(
            warning.contains("expires on 2026-12-11T00:00:00.000Z (in 10 days)"),
            "{warning}"
        );
        let expired = make((2025, 1, 1), (2026, 11, 30), false);
        let err = check_leaf(now, path, &expired).unwrap_err().to_string();
        assert!(
            err.contains(
                "/etc/codeb/switch.crt: the certificate expired on 2026-11-30T00:00:00.000Z"
            ),
            "{err}"
        );
        let early = make((2026, 12, 2), (2027, 1, 1), false);
        let err = check_leaf(now, path, &early).unwrap_err().to_string();
        assert!(err.contains("not valid until 2026-12-02"), "{err}");
        let ca = make((2026, 1, 1), (2030, 1, 1), true);
        let err = check_leaf(now, path, &ca).unwrap_err().to_string();
        assert!(err.contains("basicConstraints CA:TRUE"), "{err}");
        // Past 2049 the dates are GeneralizedTime.
        let long = make((2026, 1, 1), (2051, 5, 6), false);
        let f = super::super::cert::facts(&long).unwrap();
        assert_eq!(
            super::super::cert::utc(f.not_after),
            "2051-05-06T00:00:00.000Z"
        );
        assert!(!f.ca);
    }

    /// Idle connections from one host hold at most its share of the
    /// handshakes in progress; others still get theirs, and a finished
    /// handshake frees its place.
    #[test]
    fn handshakes_are_bounded_per_ip_and_in_all() {
        let h = Arc::new(Handshakes::default());
        let flood: IpAddr = "203.0.113.9".parse().unwrap();
        let held: Vec<Pending> = (0..MAX_HANDSHAKES_PER_IP)
            .map(|_| h.start(flood).unwrap())
            .collect();
        assert!(h.start(flood).is_none());
        let cp: IpAddr = "10.0.0.2".parse().unwrap();
        let mine = h.start(cp).expect("another IP still gets in");
        drop(mine);
        drop(held);
        assert_eq!(h.in_progress(), 0);
        assert!(h.counts.lock().unwrap().by_ip.is_empty());
        // In all: many hosts at once fill the table, then no one gets in
        // until a place frees.
        let many: Vec<Pending> = (0..MAX_HANDSHAKES as u32)
            .map(|i| {
                h.start(IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + i)))
                    .unwrap()
            })
            .collect();
        assert!(h.start(cp).is_none());
        drop(many);
        assert!(h.start(cp).is_some());
    }

    /// A scanner's failures do not hide another IP's (a control plane
    /// whose certificate expired): each IP has its own limit.
    #[test]
    fn each_ip_has_its_own_failure_limit() {
        let mut logs = FailureLogs::default();
        let t0 = Instant::now();
        let (scanner, cp): (IpAddr, IpAddr) =
            ("203.0.113.9".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(logs.failed(scanner, t0), Some(0));
        assert_eq!(logs.failed(scanner, t0), None);
        assert_eq!(logs.failed(cp, t0), Some(0));
        // A scan from many IPs at once: past the table's size they share
        // one limit, and the known IPs keep theirs.
        for i in 0..(FAILURE_LOG_IPS as u32 + 10) {
            logs.failed(IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + i)), t0);
        }
        assert!(logs.by_ip.len() <= FAILURE_LOG_IPS);
        assert_eq!(logs.failed(cp, t0 + FAILURE_LOG_EVERY), Some(0));
    }
}
