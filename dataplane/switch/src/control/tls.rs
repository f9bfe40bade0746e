//! TLS on the gRPC control link, with our own acceptor in front of tonic.
//!
//! tonic's own TLS reads the certificate once, so renewing it meant
//! restarting the switch, which drains its calls. Here the files
//! (`CODEB_SWITCH_TLS_CERT`, `_KEY`, `_CLIENT_CA`) are read again on
//! [`LinkTls::reload`] (SIGHUP): connections accepted from then on get the
//! new certificate, those already up keep theirs, and files that do not
//! make a working configuration leave the running one in place. A failed
//! handshake is logged at warn (tonic logged it at debug), at most one
//! line per [`FAILURE_LOG_EVERY`] with the count of those left unlogged,
//! so a scanner cannot flood the log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

/// A peer that connects and does not finish its handshake in this long is
/// dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; a connection past them is closed at
/// once (a flood of idle connections cannot hold the link).
const MAX_HANDSHAKES: usize = 256;
/// At most one failed-handshake line per this long.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

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
    failures: Mutex<FailureLog>,
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
            failures: Mutex::new(FailureLog::default()),
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
        let unlogged = match self.failures.lock() {
            Ok(mut f) => f.failed(Instant::now()),
            Err(poisoned) => poisoned.into_inner().failed(Instant::now()),
        };
        if let Some(unlogged) = unlogged {
            tracing::warn!(%peer, error = why, unlogged,
                "gRPC control link: a TLS handshake failed (unlogged: failures since the last such line)");
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
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
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
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
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
    let private = PrivateKeyDer::from_pem_slice(&read(KEY, &files.key)?).map_err(|e| {
        anyhow::anyhow!(
            "{KEY} {}: no unencrypted PEM private key in it ({e})",
            files.key.display()
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

fn certs(setting: &str, path: &Path, pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{setting} {}: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{setting} {}: no PEM certificate in it",
        path.display()
    );
    Ok(certs)
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
    fn failed(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < FAILURE_LOG_EVERY)
        {
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
}
