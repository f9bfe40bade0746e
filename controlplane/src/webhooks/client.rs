//! The HTTP client deliveries go out on: HTTP/1.1 over TCP or TLS (rustls
//! with aws-lc-rs and the Mozilla roots), kept-alive connections pooled per
//! receiver, no redirects followed, one time limit (connect, send, response
//! and its body) per attempt.
//!
//! Connections are made by `GuardedConnector`, which resolves the host
//! through the SSRF guard and connects only to the addresses the guard
//! vetted; TLS still verifies the certificate against the URL's host name.
//! A pooled connection stays bound to the address it was vetted for.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Uri;
use hyper::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::guard::{GuardError, UrlGuard};

/// Response bytes read (so the connection can be reused); more is dropped
/// with the connection.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Characters of a failed response's body kept for the delivery log.
const SNIPPET_CHARS: usize = 200;

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    /// The start of the body, printable, for the delivery log.
    pub snippet: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The SSRF guard refused the destination; nothing was sent.
    #[error("refused: {0}")]
    Refused(String),
    #[error("timed out after {0} ms")]
    Timeout(u128),
    #[error("{0}")]
    Transport(String),
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Refused(#[from] GuardError),
    #[error("connection failed: {0}")]
    Connect(io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
}

/// A TCP or TLS connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens connections only to addresses the guard vetted.
#[derive(Clone)]
struct GuardedConnector {
    guard: Arc<UrlGuard>,
    tls: tokio_rustls::TlsConnector,
}

impl GuardedConnector {
    async fn connect(self, uri: Uri) -> Result<TokioIo<Stream>, ConnectError> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(GuardError::BadUrl("must be an http or https URL").into()),
        };
        let host = uri
            .host()
            .ok_or(GuardError::BadUrl("must have a host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addrs = self.guard.resolve(&host, port).await?;
        let mut tcp = None;
        let mut last_err = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let tcp = match (tcp, last_err) {
            (Some(t), _) => t,
            (None, Some(e)) => return Err(ConnectError::Connect(e)),
            (None, None) => {
                return Err(ConnectError::Connect(io::Error::other(
                    "no address to connect to",
                )));
            }
        };
        // Small requests: send them now rather than wait for more bytes.
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(TokioIo::new(Stream::Plain(tcp)));
        }
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|e| ConnectError::Tls(io::Error::other(e.to_string())))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(ConnectError::Tls)?;
        Ok(TokioIo::new(Stream::Tls(Box::new(tls))))
    }
}

impl tower::Service<Uri> for GuardedConnector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// Sends delivery POSTs.
#[derive(Clone)]
pub struct WebhookClient {
    http: Client<GuardedConnector, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookClient {
    /// A client trusting the Mozilla root certificates.
    pub fn new(guard: Arc<UrlGuard>, timeout: Duration) -> Result<WebhookClient, rustls::Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(guard, timeout, roots)
    }

    /// A client trusting `roots` (tests add their own CA).
    pub fn with_roots(
        guard: Arc<UrlGuard>,
        timeout: Duration,
        roots: rustls::RootCertStore,
    ) -> Result<WebhookClient, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = GuardedConnector {
            guard,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        };
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(WebhookClient { http, timeout })
    }

    /// POSTs `body` as JSON with `headers`; the whole exchange must finish
    /// within the client's timeout.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Reply, SendError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| SendError::Refused(format!("bad URL ({e})")))?;
        let mut req = hyper::Request::post(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("CodeB-Webhooks/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| SendError::Transport(format!("could not build the request ({e})")))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| classify(&e))?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = resp.into_body();
            let mut head: Vec<u8> = Vec::new();
            let mut read = 0usize;
            while let Some(frame) = body.frame().await {
                let frame = frame
                    .map_err(|e| SendError::Transport(format!("reading the response: {e}")))?;
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                    let room = (SNIPPET_CHARS * 4).saturating_sub(head.len());
                    head.extend_from_slice(&data[..data.len().min(room)]);
                }
                if read > MAX_RESPONSE_BYTES {
                    break;
                }
            }
            Ok(Reply {
                status,
                retry_after,
                snippet: snippet(&head),
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout(self.timeout.as_millis())),
        }
    }
}

/// The first characters of a body, on one line, for the delivery log.
fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SNIPPET_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Sorts a client error: the guard's refusal, a connection failure, or
/// something during the exchange.
fn classify(e: &hyper_util::client::legacy::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut chain = Vec::new();
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return match c {
                ConnectError::Refused(g) => SendError::Refused(g.to_string()),
                other => SendError::Transport(other.to_string()),
            };
        }
        chain.push(s.to_string());
        source = s.source();
    }
    if chain.is_empty() {
        SendError::Transport(e.to_string())
    } else {
        SendError::Transport(format!("{e}: {}", chain.join(": ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_one_printable_line() {
        assert_eq!(snippet(b"  oops\r\nline two\t"), "oops  line two");
        assert_eq!(snippet(&[b'x'; 1000]).len(), SNIPPET_CHARS);
        assert_eq!(snippet(&[0xff, b'a']), "\u{fffd}a");
    }
}
