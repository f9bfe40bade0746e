//! A local SMTP sink for tests: a tokio TCP server speaking enough RFC 5321
//! (EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA with dot-unstuffing, RSET,
//! NOOP, QUIT) to take messages and record them. A script decides, per
//! recipient and per try, whether to accept or to answer with a code.
//! Shared by the library's sender tests and the whole-binary test.

#![allow(dead_code, clippy::unwrap_used)] // test support

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How the sink answers one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    /// This code to `RCPT TO`.
    AtRcpt(u16),
    /// This code after the message's final `.`.
    AtEnd(u16),
}

/// (recipient, how many times it was tried before) → answer.
pub type Script = Arc<dyn Fn(&str, usize) -> Answer + Send + Sync>;

/// One transaction the sink saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub from: String,
    pub to: String,
    /// The message, dot-stuffing undone, CRLF line ends.
    pub data: String,
    pub accepted: bool,
    /// The `AUTH PLAIN` user, if the client authenticated.
    pub user: Option<String>,
}

pub struct Sink {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    /// Listens on 127.0.0.1 (a free port) on the current runtime.
    pub async fn start(script: Script) -> Sink {
        Self::start_with(script, None).await
    }

    /// The same over implicit TLS (`smtps://`).
    pub async fn start_tls(script: Script, tls: Arc<rustls::ServerConfig>) -> Sink {
        Self::start_with(script, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_with(script: Script, tls: Option<tokio_rustls::TlsAcceptor>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let tries = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let g = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (g, script, tries) = (g.clone(), script.clone(), tries.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => {
                            let _ = session(sock, g, script, tries).await;
                        }
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(sock).await {
                                let _ = session(s, g, script, tries).await;
                            }
                        }
                    }
                });
            }
        });
        Sink { addr, got, task }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.accepted).collect()
    }
}

async fn session<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send>(
    sock: S,
    got: Arc<Mutex<Vec<Received>>>,
    script: Script,
    tries: Arc<Mutex<HashMap<String, usize>>>,
) -> std::io::Result<()> {
    let (r, mut w) = tokio::io::split(sock);
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let (mut from, mut to, mut user) = (String::new(), String::new(), None);
    let mut answer = Answer::Accept;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end_matches(['\r', '\n']).to_owned();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            w.write_all(
                b"250-sink.test\r\n250-SIZE 10485760\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
            )
            .await?;
        } else if upper.starts_with("HELO") || upper == "NOOP" || upper == "RSET" {
            w.write_all(b"250 ok\r\n").await?;
        } else if let Some(token) = upper.strip_prefix("AUTH PLAIN ").map(|_| &cmd[11..]) {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(token)
                .unwrap_or_default();
            let parts: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            user = parts
                .get(1)
                .map(|u| String::from_utf8_lossy(u).into_owned());
            w.write_all(b"235 2.7.0 ok\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = between(&cmd);
            w.write_all(b"250 2.1.0 ok\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to = between(&cmd);
            let n = {
                let mut t = tries.lock().unwrap();
                let n = t.entry(to.clone()).or_insert(0);
                *n += 1;
                *n - 1
            };
            answer = script(&to, n);
            match answer {
                Answer::AtRcpt(code) => {
                    got.lock().unwrap().push(Received {
                        from: from.clone(),
                        to: to.clone(),
                        data: String::new(),
                        accepted: false,
                        user: user.clone(),
                    });
                    w.write_all(format!("{code} refused by script\r\n").as_bytes())
                        .await?;
                }
                _ => w.write_all(b"250 2.1.5 ok\r\n").await?,
            }
        } else if upper == "DATA" {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).await? == 0 {
                    return Ok(());
                }
                if l == ".\r\n" {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
            }
            let accepted = answer == Answer::Accept;
            got.lock().unwrap().push(Received {
                from: from.clone(),
                to: to.clone(),
                data,
                accepted,
                user: user.clone(),
            });
            match answer {
                Answer::AtEnd(code) => {
                    w.write_all(format!("{code} 4.3.0 not now (script)\r\n").as_bytes())
                        .await?
                }
                _ => w.write_all(b"250 2.0.0 queued\r\n").await?,
            }
        } else if upper == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"500 5.5.1 unknown command\r\n").await?;
        }
    }
}

fn between(cmd: &str) -> String {
    match (cmd.find('<'), cmd.find('>')) {
        (Some(a), Some(b)) if a < b => cmd[a + 1..b].to_owned(),
        _ => String::new(),
    }
}

/// Decodes a quoted-printable body (RFC 2045) to text, for assertions.
pub fn qp_decode(s: &str) -> String {
    let mut out = Vec::new();
    let body = s.strip_suffix("\r\n").unwrap_or(s);
    for line in body.split("\r\n") {
        let (line, soft) = match line.strip_suffix('=') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let b = line.as_bytes();
        let mut j = 0;
        while j < b.len() {
            if b[j] == b'=' {
                let hex = std::str::from_utf8(&b[j + 1..j + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                j += 3;
            } else {
                out.push(b[j]);
                j += 1;
            }
        }
        if !soft {
            out.push(b'\n');
        }
    }
    String::from_utf8(out).unwrap()
}
