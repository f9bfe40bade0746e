//! The switch's side of each trunk: where it is (resolved before the
//! configuration is applied, so no lookup blocks the SIP thread), whether it
//! answers (OPTIONS keep-alive every `options_interval`, up/down state with
//! a log line on every change), and, where configured, the registration
//! the carrier expects (REGISTER with digest, refreshed at 80% of the
//! granted time, retried a minute after a failure).
//!
//! Digest challenges are answered only for the trunk's own realm and only
//! once per request, so a wrong password fails instead of looping.
//!
//! A trunk configured with `transport = "tcp"` gets both over TCP, on the
//! connection its calls use (see `outbound.rs`): a connection that cannot
//! be made, whatever it was opened for (a keep-alive or a call), marks the
//! trunk down at once instead of after Timer F, so the calls placed next
//! are refused at once instead of each waiting for its own connection to
//! fail. With keep-alives the next OPTIONS brings it back up; without
//! them the switch tries again after a back-off (`RETRY_FIRST`, doubling
//! to `RETRY_MAX` while connections keep failing).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_sip::digest::{Answer, authorize, pick_challenge};
use codeb_sip::header::{KnownHeader, NameAddr};
use codeb_sip::transaction::TransactionId;
use codeb_sip::{Method, Request, RequestBuilder, Response, StatusCode, Uri};

use super::core::Core;
use super::flow::Flow;
use crate::config::{TrunkConfig, TrunkTransport};

const RETRY: Duration = Duration::from_secs(60);
/// A trunk without keep-alives, down after a failed TCP connection, is
/// tried again after this, then after twice as long each time it fails
/// again, up to `RETRY_MAX`.
pub(crate) const RETRY_FIRST: Duration = Duration::from_secs(5);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Options,
    Register,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Off,
    Due(Instant),
    Pending { authed: bool },
    Registered { refresh: Instant },
}

#[derive(Debug)]
struct Link {
    up: Option<bool>,
    /// Why it is down, for refusals.
    down_why: &'static str,
    /// Without keep-alives: when a trunk down after a failed connection
    /// is tried again, and the wait after that.
    retry_at: Option<Instant>,
    retry_wait: Duration,
    next_options: Option<Instant>,
    reg: Reg,
    reg_cseq: u32,
    reg_call_id: Bytes,
    reg_tag: Bytes,
}

/// Per-trunk runtime state.
#[derive(Debug, Default)]
pub struct TrunkLinks {
    links: HashMap<String, Link>,
    txs: HashMap<TransactionId, (String, Purpose)>,
}

/// What the metrics show of a trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkStatus {
    pub id: String,
    /// None until the first keep-alive has an outcome.
    pub up: Option<bool>,
    pub registered: Option<bool>,
}

impl TrunkLinks {
    pub fn owns(&self, tx: TransactionId) -> bool {
        self.txs.contains_key(&tx)
    }
}

/// The Request-URI of a trunk's OPTIONS and REGISTER (and the digest
/// `uri` of the latter): the trunk itself, naming TCP where it is used.
fn trunk_uri(t: &TrunkConfig) -> String {
    format!("sip:{}:{}{}", t.host, t.port(), t.transport.uri_param())
}

fn secs(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

impl Core {
    /// Brings the per-trunk state in line with the configuration, keeping
    /// the state of trunks that stay.
    pub(crate) fn sync_trunks(&mut self, now: Instant) {
        let ids: Vec<String> = self.config.trunks.iter().map(|t| t.id.clone()).collect();
        self.trunk_links.links.retain(|id, _| ids.contains(id));
        for t in self.config.trunks.clone() {
            let fresh_call_id = self.ids.call_id(Some(b"codeb"));
            let tag = self.ids.tag();
            let link = self.trunk_links.links.entry(t.id.clone()).or_insert(Link {
                up: None,
                down_why: "",
                retry_at: None,
                retry_wait: RETRY_FIRST,
                next_options: None,
                reg: Reg::Off,
                reg_cseq: 0,
                reg_call_id: fresh_call_id,
                reg_tag: tag,
            });
            link.next_options =
                (t.options_interval > 0).then_some(link.next_options.unwrap_or(now));
            link.reg = match (t.register, link.reg) {
                (false, _) => Reg::Off,
                (true, Reg::Off) => Reg::Due(now),
                (true, r) => r,
            };
        }
    }

    pub fn trunk_status(&self) -> Vec<TrunkStatus> {
        let mut out: Vec<TrunkStatus> = self
            .config
            .trunks
            .iter()
            .map(|t| {
                let link = self.trunk_links.links.get(&t.id);
                TrunkStatus {
                    id: t.id.clone(),
                    up: link.and_then(|l| l.up),
                    registered: t
                        .register
                        .then(|| link.is_some_and(|l| matches!(l.reg, Reg::Registered { .. }))),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Keep-alives and registrations that are due.
    pub(crate) fn trunks_tick(&mut self, now: Instant) {
        for t in self.config.trunks.clone() {
            let Some(addr) = self.trunk_addrs.get(&t.id).copied() else {
                continue;
            };
            let Some(link) = self.trunk_links.links.get_mut(&t.id) else {
                continue;
            };
            if t.options_interval == 0 && link.up == Some(false) {
                match link.retry_at {
                    None => {
                        link.retry_at = Some(now + link.retry_wait);
                        link.retry_wait = (link.retry_wait * 2).min(RETRY_MAX);
                    }
                    Some(at) if at <= now => {
                        tracing::info!(trunk = %t.id, "trying the trunk again");
                        link.retry_at = None;
                        link.up = None;
                    }
                    Some(_) => {}
                }
            }
            if link.next_options.is_some_and(|at| at <= now) {
                link.next_options = Some(now + secs(t.options_interval));
                if let Some(req) = self.trunk_request(&t, Method::Options, None) {
                    self.start_trunk_tx(now, &t, Purpose::Options, req, addr);
                }
            }
            let Some(link) = self.trunk_links.links.get_mut(&t.id) else {
                continue;
            };
            let due = match link.reg {
                Reg::Due(at) => at <= now,
                Reg::Registered { refresh } => refresh <= now,
                _ => false,
            };
            if due {
                link.reg = Reg::Pending { authed: false };
                if let Some(req) = self.trunk_request(&t, Method::Register, None) {
                    self.start_trunk_tx(now, &t, Purpose::Register, req, addr);
                }
            }
        }
    }

    fn start_trunk_tx(
        &mut self,
        now: Instant,
        t: &TrunkConfig,
        purpose: Purpose,
        req: Request,
        addr: SocketAddr,
    ) {
        let Some(flow) = self.trunk_flow(t, addr) else {
            return;
        };
        match self.layer.send_request(now, req, flow) {
            Ok(tx) => {
                self.trunk_links.txs.insert(tx, (t.id.clone(), purpose));
            }
            Err(e) => tracing::warn!(trunk = %t.id, error = %e, "could not send to trunk"),
        }
    }

    /// How the trunk at `addr` is reached: over TCP if configured so (the
    /// connection opened on demand), else from our UDP socket.
    fn trunk_flow(&self, t: &TrunkConfig, addr: SocketAddr) -> Option<Flow> {
        match t.transport {
            TrunkTransport::Tcp => Some(Flow::TcpTo { peer: addr }),
            TrunkTransport::Udp => self
                .udp_socket
                .map(|socket| Flow::Udp { socket, peer: addr }),
        }
    }

    /// OPTIONS or REGISTER towards a trunk, optionally with credentials.
    fn trunk_request(
        &mut self,
        t: &TrunkConfig,
        method: Method,
        auth: Option<(KnownHeader, String)>,
    ) -> Option<Request> {
        let uri = Uri::parse(Bytes::from(trunk_uri(t))).ok()?;
        let via = self.our_via(t.transport.via_name())?;
        let user = if t.username.is_empty() {
            "codeb"
        } else {
            t.username.as_str()
        };
        let aor = NameAddr::from_bytes(format!("<sip:{user}@{}>", t.host)).ok()?;
        let contact = NameAddr::from_bytes(format!(
            "<sip:{user}@{}{}>",
            self.our_host(),
            t.transport.uri_param()
        ))
        .ok()?;
        let (call_id, tag, cseq) = match method {
            Method::Register => {
                let link = self.trunk_links.links.get_mut(&t.id)?;
                link.reg_cseq = link.reg_cseq.saturating_add(1);
                (
                    link.reg_call_id.clone(),
                    link.reg_tag.clone(),
                    link.reg_cseq,
                )
            }
            _ => (self.ids.call_id(Some(b"codeb")), self.ids.tag(), 1),
        };
        let from = aor.with_tag(&tag).ok()?;
        let mut b = RequestBuilder::new(method.clone(), uri)
            .via(&via)
            .max_forwards(70)
            .from(&from)
            .to(&aor)
            .call_id(call_id)
            .cseq(cseq)
            .header(KnownHeader::UserAgent, "CodeB-Switch");
        if method == Method::Register {
            b = b
                .contact(&contact)
                .header(KnownHeader::Expires, t.register_expires.to_string());
        }
        if let Some((name, value)) = auth {
            b = b.header(name, value);
        }
        b.build().ok()
    }

    /// A response to a keep-alive or registration.
    pub(crate) fn on_trunk_response(&mut self, now: Instant, tx: TransactionId, resp: Response) {
        if !resp.status.is_final() {
            return;
        }
        let Some((id, purpose)) = self.trunk_links.txs.get(&tx).cloned() else {
            return;
        };
        let Some(t) = self.config.trunks.iter().find(|t| t.id == id).cloned() else {
            return;
        };
        match purpose {
            // Any final answer means the carrier is there.
            Purpose::Options => self.set_trunk_up(&id, true, ""),
            Purpose::Register => {
                let code = resp.status.as_u16();
                let authed = matches!(
                    self.trunk_links.links.get(&id).map(|l| l.reg),
                    Some(Reg::Pending { authed: true })
                );
                if resp.status.is_success() {
                    let granted = resp
                        .headers
                        .contacts()
                        .ok()
                        .and_then(|c| c.iter().find_map(|c| c.expires()))
                        .or_else(|| resp.headers.expires().ok().flatten())
                        .unwrap_or(t.register_expires)
                        .clamp(30, 86_400);
                    tracing::info!(trunk = %id, expires = granted, "registered with trunk");
                    if let Some(l) = self.trunk_links.links.get_mut(&id) {
                        l.reg = Reg::Registered {
                            refresh: now + secs(granted) * 4 / 5,
                        };
                    }
                } else if matches!(code, 401 | 407) && !authed {
                    if let Some(auth) =
                        self.answer_trunk_challenge(&t, &resp, "REGISTER", &trunk_uri(&t))
                        && let Some(addr) = self.trunk_addrs.get(&id).copied()
                        && let Some(req) = self.trunk_request(&t, Method::Register, Some(auth))
                    {
                        if let Some(l) = self.trunk_links.links.get_mut(&id) {
                            l.reg = Reg::Pending { authed: true };
                        }
                        self.start_trunk_tx(now, &t, Purpose::Register, req, addr);
                        return;
                    }
                    self.trunk_register_failed(now, &id, code);
                } else {
                    self.trunk_register_failed(now, &id, code);
                }
            }
        }
    }

    fn trunk_register_failed(&mut self, now: Instant, id: &str, code: u16) {
        tracing::warn!(
            trunk = id,
            status = code,
            "registration with trunk failed; retrying in 60 s"
        );
        if let Some(l) = self.trunk_links.links.get_mut(id) {
            l.reg = Reg::Due(now + RETRY);
        }
    }

    /// The (Proxy-)Authorization answering a trunk's challenge, if it is
    /// for the trunk's realm.
    pub(crate) fn answer_trunk_challenge(
        &mut self,
        t: &TrunkConfig,
        resp: &Response,
        method: &str,
        uri: &str,
    ) -> Option<(KnownHeader, String)> {
        let (challenges, header) = if resp.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            (
                resp.headers.proxy_authenticates().ok()?,
                KnownHeader::ProxyAuthorization,
            )
        } else {
            (
                resp.headers.www_authenticates().ok()?,
                KnownHeader::Authorization,
            )
        };
        let Some(ch) = pick_challenge(challenges.iter(), Some(t.realm())) else {
            tracing::warn!(trunk = %t.id, "challenge is not for the trunk's realm; not answered");
            return None;
        };
        let cnonce = format!("{:016x}", self.ids.next_u64());
        let answer = Answer {
            username: &t.username,
            password: &t.password,
            method,
            uri,
            cnonce: &cnonce,
            nc: 1,
        };
        authorize(&ch, &answer).ok().map(|v| (header, v))
    }

    pub(crate) fn on_trunk_timeout(&mut self, now: Instant, tx: TransactionId) {
        let Some((id, purpose)) = self.trunk_links.txs.get(&tx).cloned() else {
            return;
        };
        match purpose {
            Purpose::Options => self.set_trunk_up(&id, false, "no answer to OPTIONS"),
            Purpose::Register => self.trunk_register_failed(now, &id, 408),
        }
    }

    pub(crate) fn on_trunk_terminated(&mut self, tx: TransactionId) {
        self.trunk_links.txs.remove(&tx);
    }

    /// Records whether the trunk answers (`why` it is down, if not).
    fn set_trunk_up(&mut self, id: &str, up: bool, why: &'static str) {
        let Some(l) = self.trunk_links.links.get_mut(id) else {
            return;
        };
        if up {
            l.retry_wait = RETRY_FIRST;
            l.retry_at = None;
        }
        if l.up != Some(up) {
            if up {
                tracing::info!(trunk = id, "trunk is up");
            } else {
                tracing::warn!(trunk = id, "trunk is down ({why})");
            }
            l.up = Some(up);
            l.down_why = why;
        }
    }

    /// The TCP trunks at `peer`.
    fn tcp_trunks_at(&self, peer: SocketAddr) -> Vec<String> {
        self.config
            .trunks
            .iter()
            .filter(|t| {
                t.transport == TrunkTransport::Tcp && self.trunk_addrs.get(&t.id) == Some(&peer)
            })
            .map(|t| t.id.clone())
            .collect()
    }

    /// A TCP connection to `peer` failed before it was up: a trunk there
    /// is down (see the module doc).
    pub(crate) fn trunk_unreachable(&mut self, peer: SocketAddr) {
        for id in self.tcp_trunks_at(peer) {
            self.set_trunk_up(&id, false, "its TCP connection failed");
        }
    }

    /// A TCP connection to `peer` is up: a trunk there starts its next
    /// back-off afresh.
    pub(crate) fn trunk_reachable(&mut self, peer: SocketAddr) {
        for id in self.tcp_trunks_at(peer) {
            if let Some(l) = self.trunk_links.links.get_mut(&id) {
                l.retry_wait = RETRY_FIRST;
            }
        }
    }

    /// Why a trunk is down, if it is.
    pub(crate) fn trunk_down(&self, id: &str) -> Option<&'static str> {
        self.trunk_links
            .links
            .get(id)
            .filter(|l| l.up == Some(false))
            .map(|l| l.down_why)
    }

    pub(crate) fn trunk_owns(&self, tx: TransactionId) -> bool {
        self.trunk_links.owns(tx)
    }
}
