//! A small SMTP client (RFC 5321) for handing one message to a relay:
//! `smtp://host:port` (plain, as to a local relay) or
//! `smtps://user:pass@host:port` (implicit TLS, RFC 8314, with the Mozilla
//! roots; `AUTH PLAIN` or `LOGIN`, RFC 4954). One connection per message:
//! greeting, `EHLO` (`HELO` if refused), `AUTH`, `MAIL FROM`, `RCPT TO`,
//! `DATA`, the dot-stuffed message, `QUIT`.
//!
//! Every reply code is checked. Reply lines are read with a bound
//! (`MAX_LINE`), and a reply with too many lines is an error, so a peer
//! cannot make us buffer without end. Every step has the same time limit.
//!
//! Errors are sorted by what they mean for the message:
//! - `Permanent`: a 5xx answer to `MAIL FROM`, `RCPT TO` or `DATA` (the
//!   relay refuses this message; sending it again would not help), or an
//!   address the relay cannot take (non-ASCII without `SMTPUTF8`);
//! - `Transient`: everything else — 4xx anywhere, connection and TLS
//!   failures, timeouts, a malformed reply, and 5xx before the message
//!   (greeting, `EHLO`, `AUTH`: a relay or credential problem the operator
//!   fixes, after which queued mail still goes out).
//!
//! A connection lost after the final `.` and before its answer leaves the
//! outcome unknown; the message is sent again later with the same
//! `Message-ID`, so a receiver may see it twice but never loses it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;

/// Longest reply line accepted, CRLF included (RFC 5321 allows 512).
pub const MAX_LINE: usize = 2048;
/// Most lines in one (multi-line) reply.
pub const MAX_REPLY_LINES: usize = 128;

/// Where and how to reach the relay (`CODEB_SMTP_URL`).
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// (user, password) for `AUTH`; only with `smtps://`.
    pub auth: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl SmtpUrl {
    /// Parses `smtp://host[:port]` (port 25) or
    /// `smtps://[user:pass@]host[:port]` (port 465). Credentials are only
    /// accepted over TLS: a password is never sent in the clear.
    pub fn parse(s: &str) -> Result<SmtpUrl, String> {
        let u = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
        let tls = match u.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => return Err(format!("scheme {other}: use smtp:// or smtps://")),
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = u.port().unwrap_or(if tls { 465 } else { 25 });
        if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
            return Err("only user, password, host and port are allowed".into());
        }
        let auth = if u.username().is_empty() {
            None
        } else {
            if !tls {
                return Err(
                    "credentials need smtps:// (TLS); plain smtp:// is for a local relay".into(),
                );
            }
            Some((
                percent_decode(u.username())?,
                percent_decode(u.password().unwrap_or(""))?,
            ))
        };
        Ok(SmtpUrl {
            tls,
            host,
            port,
            auth,
        })
    }
}

/// `%XX` escapes of a URL's user or password, as UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the user or password")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "user or password is not UTF-8".to_owned())
}

/// What went wrong, by what it means for the message (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

/// One reply: its code and the text of its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// `451 4.3.0 try later` (lines joined), for logs and `last_error`.
    pub fn describe(&self) -> String {
        let text = self.lines.join(" / ");
        let text = crate::store::cut_text(&text, 300);
        if text.is_empty() {
            self.code.to_string()
        } else {
            format!("{} {text}", self.code)
        }
    }
}

/// One reply line (CRLF or LF already removed): its code, whether it is
/// the last line of the reply (`250 ok` rather than `250-ok`), its text.
pub fn parse_reply_line(line: &[u8]) -> Result<(u16, bool, String), String> {
    let code = line
        .get(..3)
        .filter(|c| c.iter().all(u8::is_ascii_digit))
        .ok_or_else(|| format!("malformed reply line {:?}", printable(line)))?;
    let code = u16::from(code[0] - b'0') * 100
        + u16::from(code[1] - b'0') * 10
        + u16::from(code[2] - b'0');
    if !(200..600).contains(&code) {
        return Err(format!("reply code {code} out of range"));
    }
    let last = match line.get(3) {
        None | Some(b' ') => true,
        Some(b'-') => false,
        Some(_) => {
            return Err(format!("malformed reply line {:?}", printable(line)));
        }
    };
    let text = line.get(4..).map(printable).unwrap_or_default();
    Ok((code, last, text))
}

fn printable(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Reads one reply from `r`: lines until a last one, all with one code,
/// each at most `MAX_LINE` bytes, at most `MAX_REPLY_LINES` of them.
pub async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Reply, String> {
    let mut lines = Vec::new();
    let mut code = None;
    loop {
        if lines.len() == MAX_REPLY_LINES {
            return Err(format!("reply longer than {MAX_REPLY_LINES} lines"));
        }
        let mut buf = Vec::new();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
        let n = (&mut *r)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| format!("reading a reply: {e}"))?;
        if n == 0 {
            return Err("the relay closed the connection".into());
        }
        if !buf.ends_with(b"\n") {
            return Err(format!("reply line longer than {MAX_LINE} bytes"));
        }
        buf.pop();
        if buf.ends_with(b"\r") {
            buf.pop();
        }
        let (c, last, text) = parse_reply_line(&buf)?;
        if code.is_some_and(|prev| prev != c) {
            return Err(format!("reply lines with different codes ({c})"));
        }
        code = Some(c);
        lines.push(text);
        if last {
            return Ok(Reply { code: c, lines });
        }
    }
}

/// What the relay said it can do in its `EHLO` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub auth_plain: bool,
    pub auth_login: bool,
    pub smtputf8: bool,
    /// `SIZE` limit, if announced (0: none).
    pub size: Option<u64>,
}

impl Capabilities {
    /// From the lines of a `250` answer to `EHLO` (the first is the
    /// greeting, the rest keywords).
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "AUTH" => {
                    for m in words {
                        match m.to_ascii_uppercase().as_str() {
                            "PLAIN" => caps.auth_plain = true,
                            "LOGIN" => caps.auth_login = true,
                            _ => {}
                        }
                    }
                }
                "SMTPUTF8" => caps.smtputf8 = true,
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()),
                _ => {}
            }
        }
        caps
    }
}

/// One message for one recipient.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub from: &'a str,
    pub to: &'a str,
    /// The message (CRLF line ends), before dot-stuffing.
    pub message: &'a str,
}

/// An address that can go between `<` and `>` in a command.
fn safe_address(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 254
        && !a
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>'))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The client: relay, the name it greets with, the time limit of each step.
#[derive(Clone)]
pub struct SmtpClient {
    url: SmtpUrl,
    helo: String,
    timeout: Duration,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpClient")
            .field("url", &self.url)
            .field("helo", &self.helo)
            .finish_non_exhaustive()
    }
}

impl SmtpClient {
    /// A client trusting the Mozilla root certificates.
    pub fn new(url: SmtpUrl, helo: &str, timeout: Duration) -> Result<SmtpClient, rustls::Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(url, helo, timeout, roots)
    }

    /// A client trusting `roots` (tests bring their own CA).
    pub fn with_roots(
        url: SmtpUrl,
        helo: &str,
        timeout: Duration,
        roots: rustls::RootCertStore,
    ) -> Result<SmtpClient, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(SmtpClient {
            url,
            helo: helo.to_owned(),
            timeout,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        })
    }

    /// Hands one message to the relay.
    pub async fn send(&self, env: &Envelope<'_>) -> Result<(), SmtpError> {
        if !safe_address(env.from) || !safe_address(env.to) {
            return Err(SmtpError::Permanent(format!(
                "unusable address in <{}> -> <{}>",
                env.from.escape_debug(),
                env.to.escape_debug()
            )));
        }
        let stream = self.connect().await?;
        let mut s = Session {
            io: BufReader::new(stream),
            timeout: self.timeout,
        };
        let result = self.converse(&mut s, env).await;
        // Polite either way; the answer does not matter.
        let _ = s.command("QUIT").await;
        result
    }

    async fn connect(&self) -> Result<Box<dyn Io>, SmtpError> {
        let t = |e: String| SmtpError::Transient(e);
        let addr = (self.url.host.as_str(), self.url.port);
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| t(format!("connecting to {}:{} timed out", addr.0, addr.1)))?
            .map_err(|e| t(format!("connecting to {}:{}: {e}", addr.0, addr.1)))?;
        let _ = tcp.set_nodelay(true);
        if !self.url.tls {
            return Ok(Box::new(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(self.url.host.clone())
            .map_err(|e| t(format!("TLS name {}: {e}", self.url.host)))?;
        let tls = tokio::time::timeout(self.timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| t("TLS handshake timed out".into()))?
            .map_err(|e| t(format!("TLS handshake: {e}")))?;
        Ok(Box::new(tls))
    }

    async fn converse(&self, s: &mut Session, env: &Envelope<'_>) -> Result<(), SmtpError> {
        use SmtpError::{Permanent, Transient};
        // Before the message: every refusal is the relay's (transient).
        let greeting = s.reply().await?;
        s.expect("greeting", &greeting, &[220], false)?;
        let ehlo = s.command(&format!("EHLO {}", self.helo)).await?;
        let caps = if ehlo.code == 250 {
            Capabilities::from_ehlo(&ehlo)
        } else {
            let helo = s.command(&format!("HELO {}", self.helo)).await?;
            s.expect("HELO", &helo, &[250], false)?;
            Capabilities::default()
        };
        if let Some((user, pass)) = &self.url.auth {
            self.authenticate(s, &caps, user, pass).await?;
        }
        let utf8 = !env.from.is_ascii() || !env.to.is_ascii();
        if utf8 && !caps.smtputf8 {
            return Err(Permanent(format!(
                "<{}> needs SMTPUTF8, which the relay does not offer",
                env.to
            )));
        }
        let body = super::message::dot_stuff(env.message);
        if let Some(max) = caps.size.filter(|m| *m > 0)
            && u64::try_from(body.len()).unwrap_or(u64::MAX) > max
        {
            return Err(Permanent(format!(
                "message of {} bytes is over the relay's SIZE {max}",
                body.len()
            )));
        }
        // The message itself: 5xx is final.
        let mut mail = format!("MAIL FROM:<{}>", env.from);
        if caps.size.is_some() {
            mail.push_str(&format!(" SIZE={}", body.len()));
        }
        if utf8 {
            mail.push_str(" SMTPUTF8");
        }
        let r = s.command(&mail).await?;
        s.expect("MAIL FROM", &r, &[250], true)?;
        let r = s.command(&format!("RCPT TO:<{}>", env.to)).await?;
        s.expect("RCPT TO", &r, &[250, 251], true)?;
        let r = s.command("DATA").await?;
        s.expect("DATA", &r, &[354], true)?;
        s.write(&body).await?;
        let r = s.reply().await.map_err(|e| match e {
            Transient(m) => Transient(format!(
                "after the message: {m} (it may have been accepted)"
            )),
            other => other,
        })?;
        s.expect("end of data", &r, &[250], true)
    }

    async fn authenticate(
        &self,
        s: &mut Session,
        caps: &Capabilities,
        user: &str,
        pass: &str,
    ) -> Result<(), SmtpError> {
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        if caps.auth_plain {
            let mut token = Vec::with_capacity(user.len() + pass.len() + 2);
            token.push(0);
            token.extend_from_slice(user.as_bytes());
            token.push(0);
            token.extend_from_slice(pass.as_bytes());
            let r = s.command(&format!("AUTH PLAIN {}", b64(&token))).await?;
            return s.expect("AUTH PLAIN", &r, &[235], false);
        }
        if caps.auth_login {
            let r = s.command("AUTH LOGIN").await?;
            s.expect("AUTH LOGIN", &r, &[334], false)?;
            let r = s.command(&b64(user.as_bytes())).await?;
            s.expect("AUTH LOGIN user", &r, &[334], false)?;
            let r = s.command(&b64(pass.as_bytes())).await?;
            return s.expect("AUTH LOGIN password", &r, &[235], false);
        }
        Err(SmtpError::Transient(
            "the relay offers neither AUTH PLAIN nor AUTH LOGIN (over TLS)".into(),
        ))
    }
}

struct Session {
    io: BufReader<Box<dyn Io>>,
    timeout: Duration,
}

impl Session {
    async fn reply(&mut self) -> Result<Reply, SmtpError> {
        tokio::time::timeout(self.timeout, read_reply(&mut self.io))
            .await
            .map_err(|_| SmtpError::Transient("the relay did not answer in time".into()))?
            .map_err(SmtpError::Transient)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), SmtpError> {
        let io = self.io.get_mut();
        let sent = async {
            io.write_all(bytes).await?;
            io.flush().await
        };
        tokio::time::timeout(self.timeout, sent)
            .await
            .map_err(|_| SmtpError::Transient("sending to the relay timed out".into()))?
            .map_err(|e| SmtpError::Transient(format!("sending to the relay: {e}")))
    }

    async fn command(&mut self, line: &str) -> Result<Reply, SmtpError> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// Checks a reply: one of `ok`; a 5xx is permanent only when
    /// `final_5xx` (the message's own commands).
    fn expect(&self, what: &str, r: &Reply, ok: &[u16], final_5xx: bool) -> Result<(), SmtpError> {
        if ok.contains(&r.code) {
            return Ok(());
        }
        let msg = format!("{what}: {}", r.describe());
        if final_5xx && (500..600).contains(&r.code) {
            Err(SmtpError::Permanent(msg))
        } else {
            Err(SmtpError::Transient(msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        assert_eq!(
            parse_reply_line(b"250-SIZE 1000").unwrap(),
            (250, false, "SIZE 1000".into())
        );
        assert_eq!(
            parse_reply_line(b"221").unwrap(),
            (221, true, String::new())
        );
        assert_eq!(
            parse_reply_line(b"451 4.3.0 later").unwrap(),
            (451, true, "4.3.0 later".into())
        );
        for bad in [
            &b""[..],
            b"25",
            b"abc ok",
            b"250x",
            b"150 ok",
            b"600 x",
            b"099 x",
        ] {
            assert!(parse_reply_line(bad).is_err(), "{bad:?}");
        }
        // Control characters never reach logs raw.
        assert_eq!(parse_reply_line(b"250 a\x1bb").unwrap().2, "a?b");
    }

    async fn read(bytes: &[u8]) -> Result<Reply, String> {
        let mut r = BufReader::new(bytes);
        read_reply(&mut r).await
    }

    #[tokio::test]
    async fn replies_are_bounded() {
        let r = read(b"250-relay.example\r\n250-AUTH LOGIN PLAIN\r\n250 SMTPUTF8\r\n")
            .await
            .unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, ["relay.example", "AUTH LOGIN PLAIN", "SMTPUTF8"]);
        let caps = Capabilities::from_ehlo(&r);
        assert!(caps.auth_login && caps.auth_plain && caps.smtputf8);
        assert_eq!(read(b"220 hi\n").await.unwrap().code, 220, "bare LF");
        // Too long a line, too many lines, mixed codes, a cut-off reply.
        let long = format!("250 {}\r\n", "x".repeat(MAX_LINE));
        assert!(
            read(long.as_bytes())
                .await
                .unwrap_err()
                .contains("longer than")
        );
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert!(read(many.as_bytes()).await.unwrap_err().contains("lines"));
        assert!(read(b"250-a\r\n251 b\r\n").await.is_err());
        assert!(read(b"250-a\r\n").await.unwrap_err().contains("closed"));
        assert!(read(b"250 no newline").await.is_err());
    }

    #[test]
    fn capabilities() {
        let r = Reply {
            code: 250,
            lines: vec![
                "mx.example greets you".into(),
                "size 35882577".into(),
                "8BITMIME".into(),
                "auth=login".into(),
            ],
        };
        let caps = Capabilities::from_ehlo(&r);
        assert_eq!(caps.size, Some(35_882_577));
        assert!(!caps.auth_login, "AUTH=LOGIN is the obsolete spelling");
        assert!(!caps.smtputf8);
    }

    #[test]
    fn urls() {
        let u = SmtpUrl::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 2525));
        assert_eq!(SmtpUrl::parse("smtp://relay").unwrap().port, 25);
        let u = SmtpUrl::parse("smtps://ops%40example.com:p%2Fss+w@mail.example.com").unwrap();
        assert_eq!(u.port, 465);
        assert_eq!(u.auth, Some(("ops@example.com".into(), "p/ss+w".into())));
        assert!(
            !format!("{u:?}").contains("p/ss"),
            "the password is not logged"
        );
        assert_eq!(SmtpUrl::parse("smtp://[::1]:25").unwrap().host, "::1");
        for bad in [
            "http://relay",
            "smtp://u:p@relay",
            "smtp://relay/path",
            "smtp://relay?x=1",
            "smtp://",
            "relay:25",
        ] {
            assert!(SmtpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        assert!(safe_address("ops@example.com"));
        assert!(safe_address("bücher@例え.jp"));
        for bad in ["", "a b@c", "a@b\r\nRCPT TO:<x@y>", "<a@b>"] {
            assert!(!safe_address(bad), "{bad:?}");
        }
    }
}
