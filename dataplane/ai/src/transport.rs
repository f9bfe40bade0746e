//! WebSocket over TCP, with TLS for `wss://` (tokio-rustls on the
//! workspace's rustls + aws-lc-rs, webpki roots unless the session brings
//! its own client config).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use url::Url;

use crate::error::EngineError;

/// Largest WebSocket message we accept (a few seconds of base64 audio fit
/// many times over; a runaway peer does not).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Bytes read from the socket at a time. tungstenite zero-fills this
/// much before every read attempt, including the one on each wake-up
/// that finds nothing (the session's task wakes for every 20 ms frame it
/// sends): at 16 KiB that `memset` was 2% of the switch on AI calls. A
/// vendor's 40 ms audio message is under 3 KiB; a larger one takes
/// several reads.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// A byte stream a WebSocket can run on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connected WebSocket.
pub type Ws = WebSocketStream<Box<dyn Io>>;

/// A JSON text frame carrying base64 audio: `head`, the base64 of `audio`,
/// `tail`, written straight into one string sized up front. Sent every 20 ms
/// on every call, so it skips building a JSON value tree; the base64
/// alphabet needs no JSON escaping, and `head`/`tail` are our own constants.
pub fn audio_frame(head: &str, audio: &[u8], tail: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let len = base64::encoded_len(audio.len(), true).unwrap_or(0);
    let mut s = String::with_capacity(head.len() + len + tail.len());
    s.push_str(head);
    b64.encode_string(audio, &mut s);
    s.push_str(tail);
    s
}

/// Our WebSocket limits.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        // tungstenite zero-fills its read buffer up to this size before
        // every socket read, even one that finds nothing; at the default
        // 128 KiB that memset was the AI runtime's largest single cost.
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// The TLS client configuration with the webpki (Mozilla) roots.
pub fn default_tls() -> Result<Arc<rustls::ClientConfig>, EngineError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    tls_with_roots(roots)
}

/// A TLS client configuration trusting exactly `roots` (tests, private CAs).
pub fn tls_with_roots(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, EngineError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EngineError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Opens `url` (ws or wss) and performs the WebSocket handshake with the
/// extra `headers`. HTTP refusals come back as [`EngineError::Rejected`].
pub async fn connect(
    url: &Url,
    headers: &[(&'static str, String)],
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Ws, EngineError> {
    let host = url
        .host_str()
        .ok_or_else(|| EngineError::Config("endpoint has no host".into()))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .map_err(|e| EngineError::Transport(format!("connect {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if url.scheme() == "wss" {
        let cfg = match tls {
            Some(c) => Arc::clone(c),
            None => default_tls()?,
        };
        let name = rustls::pki_types::ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .map_err(|e| EngineError::Config(format!("TLS server name {host:?}: {e}")))?;
        let s = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| EngineError::Transport(format!("TLS with {host}: {e}")))?;
        Box::new(s)
    } else {
        Box::new(tcp)
    };
    let mut req: Request<()> = url
        .as_str()
        .into_client_request()
        .map_err(|e| EngineError::Config(format!("request: {e}")))?;
    for (name, value) in headers {
        let v = HeaderValue::from_str(value)
            .map_err(|_| EngineError::Config(format!("header {name} is not a valid value")))?;
        req.headers_mut().insert(*name, v);
    }
    match tokio_tungstenite::client_async_with_config(req, io, Some(ws_config())).await {
        Ok((ws, _resp)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(512)]).into_owned())
                .unwrap_or_default();
            Err(EngineError::Rejected {
                code: resp.status().as_u16(),
                kind: None,
                message: body,
            })
        }
        Err(e) => Err(EngineError::Transport(format!(
            "WebSocket handshake with {host}: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_frames_are_the_json_the_vendors_expect() {
        let pcm = [1u8, 0, 2, 0, 255, 127];
        let f = audio_frame(r#"{"a":{"data":""#, &pcm, r#""}}"#);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["a"]["data"], "AQACAP9/");
        assert_eq!(f.len(), f.capacity());
        let empty: serde_json::Value =
            serde_json::from_str(&audio_frame(r#"{"d":""#, &[], r#""}"#)).unwrap();
        assert_eq!(empty["d"], "");
    }
}
