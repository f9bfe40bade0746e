//! WebSocket over TCP, with TLS for `wss://` (tokio-rustls on the
//! workspace's rustls + aws-lc-rs, webpki roots unless the session brings
//! its own client config).

use std::sync::Arc;
use std::task::{Context, Poll};

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

/// A byte stream a WebSocket can run on: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {
    /// Ready once the TCP socket under the stream has something to read
    /// (or an error or end to report), else `Pending` with `cx`
    /// registered. Asked only after a read found nothing: then neither
    /// the WebSocket nor the TLS layer holds a whole frame or record, so
    /// nothing can come out before the socket has more.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl Io for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl Io for tokio_rustls::client::TlsStream<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

impl Io for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// The next frame of `ws`, as `ws.next()` gives it, but without touching
/// the WebSocket while its socket has nothing new since a read found
/// nothing (`idle`): tungstenite zero-fills its read buffer before every
/// read attempt, and the session's task wakes for every caller frame it
/// sends, so an attempt per wake-up was a `memset` per 20 ms frame.
pub async fn next_frame(
    ws: &mut Ws,
    idle: &mut bool,
) -> Option<Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>>
{
    std::future::poll_fn(|cx| poll_next_frame(ws, idle, cx)).await
}

/// [`next_frame`] as a poll.
pub fn poll_next_frame(
    ws: &mut Ws,
    idle: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<
    Option<Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>>,
> {
    use futures_util::StreamExt;
    if *idle {
        if ws.get_ref().poll_read_ready(cx).is_pending() {
            return Poll::Pending;
        }
        // Data, an end or an error: the read says which.
        *idle = false;
    }
    let r = ws.poll_next_unpin(cx);
    *idle = r.is_pending();
    r
}

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
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    #[tokio::test]
    async fn frames_come_whole_and_none_is_left_behind_by_skipped_reads() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            // Two frames in one write (one segment on loopback); nothing
            // more until the client has both: the second is in its read
            // buffer with nothing new on the socket.
            ws.feed(Message::text("one")).await.unwrap();
            ws.feed(Message::binary(vec![2u8; 10])).await.unwrap();
            ws.flush().await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ack"));
            // Then one larger than a socket read.
            ws.send(Message::text("x".repeat(3 * READ_BUFFER_BYTES)))
                .await
                .unwrap();
            ws.close(None).await.unwrap();
        });
        let url = Url::parse(&format!("ws://{addr}/")).unwrap();
        let mut ws = connect(&url, &[], None).await.unwrap();
        let mut idle = false;
        let mut got = Vec::new();
        for _ in 0..2 {
            let m = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                next_frame(&mut ws, &mut idle),
            )
            .await
            .expect("a frame already read stays readable");
            got.push(m.unwrap().unwrap());
        }
        ws.send(Message::text("ack")).await.unwrap();
        while let Some(Ok(m)) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            next_frame(&mut ws, &mut idle),
        )
        .await
        .unwrap()
        {
            if m.is_close() {
                break;
            }
            got.push(m);
        }
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], Message::text("one"));
        assert_eq!(got[1], Message::binary(vec![2u8; 10]));
        assert_eq!(got[2].len(), 3 * READ_BUFFER_BYTES);
        server.await.unwrap();
    }

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
