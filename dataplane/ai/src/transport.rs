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
/// much before every read attempt; since [`poll_next_frame`] reads only
/// once the socket has something, that is one read per burst that finds
/// nothing, not one per caller frame sent (when it was, 16 KiB of
/// `memset` was 2% of the switch on AI calls). A vendor sends a turn in
/// bursts of 40 ms audio messages (under 3 KiB each) and transcripts: at
/// 4 KiB a read, a burst took a syscall per message or so.
const READ_BUFFER_BYTES: usize = 16 * 1024;

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

/// The session's frames for the vendor, in wire form: each a final text
/// frame, masked with a fresh random key as RFC 6455 (5.3) asks of a
/// client, built straight into one buffer that is reused for the
/// connection's life. The caller-audio frames (every 20–100 ms on every
/// call) are written in place — JSON prefix, base64, suffix, then the
/// mask — instead of a `String` per message that tungstenite copied
/// again into its own write buffer; the bytes on the wire are the ones
/// tungstenite's framing gives for the same payload and key.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Frames in `wire[..end]`; the bytes past `end` are left from
    /// earlier frames, overwritten by the next ones (the buffer is zeroed
    /// only where it grows, not for every frame).
    wire: Vec<u8>,
    end: usize,
    /// Bytes of `wire` already written to the socket.
    written: usize,
    /// Frames in `wire[..end]`.
    frames: usize,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames queued (not yet all written).
    pub fn len(&self) -> usize {
        self.frames
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Part of a frame was written and the rest was not (the write
    /// failed): anything else sent on this connection would be read as
    /// that frame's remainder.
    pub fn torn(&self) -> bool {
        self.written > 0 && self.written < self.end
    }

    /// Queues a ping (a control frame: at most 125 bytes of `payload`).
    pub fn ping(&mut self, payload: &[u8]) {
        let payload = &payload[..payload.len().min(125)];
        let (start, key) = self.header_op(0x89, payload.len());
        self.put(payload);
        mask(&mut self.wire[start..self.end], key);
    }

    /// Queues a text frame.
    pub fn text(&mut self, text: &str) {
        let (start, key) = self.header(text.len());
        self.put(text.as_bytes());
        mask(&mut self.wire[start..self.end], key);
    }

    /// Queues `v` as a JSON text frame.
    pub fn json(&mut self, v: &serde_json::Value) {
        self.text(&v.to_string());
    }

    /// Queues a JSON text frame carrying base64 audio: `head`, the base64
    /// of `audio`, `tail`. The base64 alphabet needs no JSON escaping, and
    /// `head`/`tail` are the engines' own constants.
    pub fn audio_json(&mut self, head: &str, audio: &[u8], tail: &str) {
        let b64 = audio.len().div_ceil(3) * 4;
        let (start, key) = self.header(head.len() + b64 + tail.len());
        self.put(head.as_bytes());
        encode_base64(audio, self.room(b64));
        self.put(tail.as_bytes());
        mask(&mut self.wire[start..self.end], key);
    }

    /// The next `n` bytes of the frame being built, to be written.
    fn room(&mut self, n: usize) -> &mut [u8] {
        let (from, to) = (self.end, self.end + n);
        if self.wire.len() < to {
            self.wire.resize(to, 0);
        }
        self.end = to;
        &mut self.wire[from..to]
    }

    fn put(&mut self, bytes: &[u8]) {
        self.room(bytes.len()).copy_from_slice(bytes);
    }

    /// Starts a frame of `len` payload bytes: FIN and the text opcode,
    /// the length in the shortest form (as tungstenite writes it), a
    /// fresh mask key. Returns where the payload starts, and the key.
    fn header(&mut self, len: usize) -> (usize, [u8; 4]) {
        self.header_op(0x81, len)
    }

    /// [`Self::header`] with the first byte (FIN and opcode) given.
    fn header_op(&mut self, first: u8, len: usize) -> (usize, [u8; 4]) {
        self.frames += 1;
        match u16::try_from(len) {
            Ok(l) if l <= 125 => self.put(&[first, 0x80 | l as u8]),
            Ok(l) => {
                let [a, b] = l.to_be_bytes();
                self.put(&[first, 0x80 | 126, a, b]);
            }
            Err(_) => {
                self.put(&[first, 0x80 | 127]);
                self.put(&(len as u64).to_be_bytes());
            }
        }
        let key: [u8; 4] = rand::random();
        self.put(&key);
        (self.end, key)
    }

    /// Writes what is queued to `io` and flushes it (a TLS stream sends
    /// its last record); the outbox is empty once this is `Ready(Ok)`. A
    /// write that has to wait keeps its place: polled again, it goes on
    /// where it stopped.
    pub fn poll_write(
        &mut self,
        io: &mut Box<dyn Io>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        use std::pin::Pin;
        while self.written < self.end {
            let n = std::task::ready!(
                Pin::new(&mut *io).poll_write(cx, &self.wire[self.written..self.end])
            )?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        std::task::ready!(Pin::new(&mut *io).poll_flush(cx))?;
        self.end = 0;
        self.written = 0;
        self.frames = 0;
        Poll::Ready(Ok(()))
    }

    /// The payloads queued, unmasked (what the vendor reads).
    #[cfg(test)]
    pub(crate) fn texts(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = &self.wire[..self.end];
        while rest.len() >= 2 {
            let (len, at) = match rest[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&rest[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                l => (usize::from(l), 2),
            };
            let key = [rest[at], rest[at + 1], rest[at + 2], rest[at + 3]];
            let mut payload = rest[at + 4..at + 4 + len].to_vec();
            mask(&mut payload, key);
            out.push(String::from_utf8_lossy(&payload).into_owned());
            rest = &rest[at + 4 + len..];
        }
        out
    }
}

/// The standard base64 alphabet.
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Every 12-bit value as its two base64 characters (first in the low
/// byte): three bytes of input are two lookups.
static BASE64_PAIRS: [u16; 4096] = {
    let mut t = [0u16; 4096];
    let mut i = 0;
    while i < 4096 {
        t[i] = u16::from_le_bytes([BASE64[i >> 6], BASE64[i & 63]]);
        i += 1;
    }
    t
};

/// Writes the standard base64 of `input`, with padding, into `out`
/// (`input.len().div_ceil(3) * 4` bytes): the text `base64`'s `STANDARD`
/// engine gives, six bytes to eight characters at a time from one load,
/// a lookup per twelve bits (it was the AI runtime's largest user-space
/// cost per caller frame).
fn encode_base64(input: &[u8], out: &mut [u8]) {
    let pair = |n: u64| u64::from(BASE64_PAIRS[(n & 0xfff) as usize]);
    // Where eight bytes can be loaded: six of them encoded.
    let mut done = 0;
    for (i, o) in input.windows(8).step_by(6).zip(out.chunks_exact_mut(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(i);
        let w = u64::from_be_bytes(b);
        let v = pair(w >> 52) | pair(w >> 40) << 16 | pair(w >> 28) << 32 | pair(w >> 16) << 48;
        o.copy_from_slice(&v.to_le_bytes());
        done += 6;
    }
    let (input, out) = (
        &input[done..],
        out.get_mut(done / 6 * 8..).unwrap_or_default(),
    );
    let whole = input.len() / 3 * 3;
    for (i, o) in input[..whole].chunks_exact(3).zip(out.chunks_exact_mut(4)) {
        let n = u64::from(i[0]) << 16 | u64::from(i[1]) << 8 | u64::from(i[2]);
        o.copy_from_slice(&((pair(n >> 12) | pair(n) << 16) as u32).to_le_bytes());
    }
    let c = |v: u8| BASE64[usize::from(v & 63)];
    let tail = match input[whole..] {
        [a] => [c(a >> 2), c(a << 4), b'=', b'='],
        [a, b] => [c(a >> 2), c(a << 4 | b >> 4), c(b << 2), b'='],
        _ => return,
    };
    let rest = out.get_mut(whole / 3 * 4..).unwrap_or_default();
    for (o, t) in rest.iter_mut().zip(tail) {
        *o = t;
    }
}

/// XORs `buf` with the repeated mask `key` (payload offset 0 at `buf[0]`).
fn mask(buf: &mut [u8], key: [u8; 4]) {
    let k = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        w.copy_from_slice(&(u64::from_ne_bytes(b) ^ k).to_ne_bytes());
    }
    // The rest starts at a multiple of 8: key byte 0 again.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// The session's side of a connection: tungstenite reads the vendor's
/// frames (and answers its pings); the session's own frames go from an
/// [`Outbox`] straight to the socket.
pub struct Client {
    ws: Ws,
    /// The last read found nothing (see [`poll_next_frame`]).
    idle: bool,
    /// tungstenite may hold a reply of its own (a pong, a close) not yet
    /// all written: it goes out before the session's next frames.
    owes_flush: bool,
    out: Outbox,
}

impl Client {
    /// Takes over a connected WebSocket.
    pub fn new(ws: Ws) -> Self {
        Self {
            ws,
            idle: false,
            owes_flush: false,
            out: Outbox::new(),
        }
    }

    /// Where the session's frames are queued; [`Client::poll_send`]
    /// writes them.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// The next frame from the vendor ([`poll_next_frame`]).
    pub fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        Option<
            Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
        >,
    > {
        use tokio_tungstenite::tungstenite::Message;
        let r = poll_next_frame(&mut self.ws, &mut self.idle, cx);
        if let Poll::Ready(Some(Ok(Message::Ping(_) | Message::Close(_)))) = &r {
            self.owes_flush = true;
        }
        r
    }

    /// [`Client::poll_next`] as a future.
    pub async fn next(
        &mut self,
    ) -> Option<
        Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
    > {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Writes the queued frames (after any reply tungstenite owes).
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), EngineError>> {
        use futures_util::SinkExt;
        if self.owes_flush {
            std::task::ready!(self.ws.poll_flush_unpin(cx)).map_err(EngineError::transport)?;
            self.owes_flush = false;
        }
        self.out
            .poll_write(self.ws.get_mut(), cx)
            .map_err(EngineError::transport)
    }

    /// Sends a close frame, bounded like any write; nothing if a frame
    /// of ours was left half written (the close would be read as its
    /// rest). The socket is dropped after.
    pub async fn close(
        &mut self,
        frame: tokio_tungstenite::tungstenite::protocol::CloseFrame,
        within: std::time::Duration,
    ) {
        if self.out.torn() {
            return;
        }
        let _ = tokio::time::timeout(within, self.ws.close(Some(frame))).await;
    }
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

/// A TLS client configuration, shared by every connection made with it.
pub type ClientTls = Arc<rustls::ClientConfig>;

/// The TLS client configuration with the webpki (Mozilla) roots.
pub fn default_tls() -> Result<Arc<rustls::ClientConfig>, EngineError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    tls_with_roots(roots)
}

/// Most a CA file may hold (a bundle of a few hundred certificates is
/// well under this).
pub const MAX_CA_FILE_BYTES: usize = 4 << 20;

/// A TLS client configuration trusting the webpki (Mozilla) roots and also
/// the CA certificates in `pem` (PEM text, certificates only): for an
/// engine behind an operator's own gateway or TLS proxy with a private CA.
/// A file with no certificate, a malformed one or one that is not a usable
/// trust anchor is refused, so a mistake shows at start, not as failing
/// calls.
pub fn tls_also_trusting(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, EngineError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    if pem.len() > MAX_CA_FILE_BYTES {
        return Err(EngineError::Config(format!(
            "CA file: larger than {MAX_CA_FILE_BYTES} bytes"
        )));
    }
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut added = 0usize;
    for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let cert =
            cert.map_err(|e| EngineError::Config(format!("CA file: certificate {}: {e}", i + 1)))?;
        roots.add(cert).map_err(|e| {
            EngineError::Config(format!(
                "CA file: certificate {} is not a usable trust anchor: {e}",
                i + 1
            ))
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(EngineError::Config(
            "CA file: no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
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

    /// Splits `wire` into its frames: (mask key, whole frame bytes).
    fn split(mut wire: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        let mut frames = Vec::new();
        while !wire.is_empty() {
            let (len, at) = match wire[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
                127 => (
                    u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                l => (usize::from(l), 2),
            };
            let key = wire[at..at + 4].try_into().unwrap();
            frames.push((key, wire[..at + 4 + len].to_vec()));
            wire = &wire[at + 4 + len..];
        }
        frames
    }

    /// What tungstenite writes for `payload` as a client text frame
    /// masked with `key`.
    fn tungstenite_frame(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let mut f = Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true);
        f.header_mut().mask = Some(key);
        let mut out = Vec::new();
        f.format(&mut out).unwrap();
        out
    }

    #[test]
    fn frames_are_the_bytes_tungstenite_writes() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = Outbox::new();
        let mut want: Vec<Vec<u8>> = Vec::new();
        // Every length form (7-bit, 16-bit, 64-bit) and the edges between.
        for len in [0, 1, 7, 8, 9, 125, 126, 127, 1000, 65_535, 65_536, 70_001] {
            let text: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            out.text(&text);
            want.push(text.into_bytes());
        }
        // Audio frames: 20 ms and 100 ms at 16 kHz, odd and empty sizes.
        let (head, tail) = (r#"{"realtimeInput":{"audio":{"data":""#, r#""}}}"#);
        for n in [640usize, 3200, 1, 2, 0, 160, 50_000] {
            let pcm: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            out.audio_json(head, &pcm, tail);
            want.push(format!("{head}{}{tail}", b64.encode(&pcm)).into_bytes());
        }
        out.json(&serde_json::json!({"type": "response.create", "é": "\u{1f600}"}));
        want.push(
            serde_json::json!({"type": "response.create", "é": "\u{1f600}"})
                .to_string()
                .into_bytes(),
        );
        assert_eq!(out.len(), want.len());
        let frames = split(&out.wire[..out.end]);
        assert_eq!(frames.len(), want.len());
        let mut keys = std::collections::HashSet::new();
        for ((key, bytes), payload) in frames.iter().zip(&want) {
            assert_eq!(
                *bytes,
                tungstenite_frame(payload, *key),
                "{} bytes",
                payload.len()
            );
            keys.insert(*key);
        }
        assert!(keys.len() > want.len() / 2, "a fresh key per frame");
        let texts = out.texts();
        let v: serde_json::Value = serde_json::from_str(&texts[12]).unwrap();
        assert_eq!(
            v["realtimeInput"]["audio"]["data"],
            b64.encode(
                (0..640usize)
                    .map(|i| (i * 7 % 251) as u8)
                    .collect::<Vec<u8>>()
            )
        );
    }

    #[test]
    fn base64_is_the_standard_engine_text() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        // Every value of every byte position, and every tail length.
        let bytes: Vec<u8> = (0..=255u8)
            .flat_map(|a| [a, a.wrapping_mul(97), !a, a.rotate_left(3)])
            .collect();
        for len in (0..40).chain([640, 3200, 1023, 1024, 1025]) {
            for off in 0..3 {
                let input = &bytes.repeat(4)[off..off + len];
                let mut out = vec![b'x'; len.div_ceil(3) * 4 + 1];
                encode_base64(input, &mut out[..len.div_ceil(3) * 4]);
                assert_eq!(
                    out[..len.div_ceil(3) * 4],
                    *b64.encode(input).as_bytes(),
                    "{len} bytes"
                );
                assert_eq!(out.last(), Some(&b'x'));
            }
        }
    }

    #[tokio::test]
    async fn own_frames_follow_the_pong_tungstenite_owes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            ws.send(Message::Ping(vec![9u8, 8].into())).await.unwrap();
            let mut got = Vec::new();
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    break;
                }
                got.push(m);
            }
            got
        });
        let url = Url::parse(&format!("ws://{addr}/")).unwrap();
        let mut link = Client::new(connect(&url, &[], None).await.unwrap());
        let ping = link.next().await.unwrap().unwrap();
        assert_eq!(ping, Message::Ping(vec![9u8, 8].into()));
        link.outbox().text("one");
        link.outbox()
            .audio_json(r#"{"d":""#, &[1, 0, 2, 0], r#""}"#);
        std::future::poll_fn(|cx| link.poll_send(cx)).await.unwrap();
        assert!(link.outbox().is_empty() && !link.outbox().torn());
        // A large frame, beyond one socket write on loopback.
        let big = "z".repeat(3 << 20);
        link.outbox().text(&big);
        std::future::poll_fn(|cx| link.poll_send(cx)).await.unwrap();
        link.close(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "done".into(),
            },
            std::time::Duration::from_secs(5),
        )
        .await;
        let got = server.await.unwrap();
        assert_eq!(
            got.len(),
            4,
            "{:?}",
            got.iter().map(Message::len).collect::<Vec<_>>()
        );
        assert_eq!(got[0], Message::Pong(vec![9u8, 8].into()));
        assert_eq!(got[1], Message::text("one"));
        assert_eq!(got[2], Message::text(r#"{"d":"AQACAA=="}"#));
        assert_eq!(got[3].len(), big.len());
    }
}
