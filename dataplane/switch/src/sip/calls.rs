//! The B2BUA: a call is an A-leg (the dialog with whoever sent the INVITE)
//! and a B-leg (the dialog we open towards the routed user), each a
//! separate SIP dialog with its own Call-ID, tags, CSeq and Via.
//!
//! Topology hiding is structural: the B-leg request is built from scratch
//! (our Via, our Contact, a new Call-ID; only the caller's number and
//! display name are carried over), so no A-leg header, internal or not, in
//! whatever spelling, reaches B. SDP is always answered and offered with
//! the switch's own media address and ports (RFC 3264), never passed
//! through.
//!
//! Incoming calls fork in parallel to every contact of the routed user;
//! the first 2xx wins and the other branches are cancelled. The switch
//! answers in-dialog re-INVITE and UPDATE itself (its media address does
//! not change), relays INFO (DTMF) and BYE to the other leg, and turns a
//! CANCEL from A into CANCELs towards B.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use codeb_sip::header::{KnownHeader, MediaType, NameAddr, Via};
use codeb_sip::sdp::{self, Codec, Direction, LocalMedia, Negotiated, Sdp, SdpLimits};
use codeb_sip::transaction::{CancelOutcome, Timer, TransactionId};
use codeb_sip::{Method, Request, RequestBuilder, Response, StatusCode, Uri};

use super::core::Core;
use super::flow::Flow;
use crate::ports::PortPool;
use crate::routing::{self, CallFacts};

/// A call's handle in the table.
pub type CallKey = u64;

/// Which side of a call a dialog is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    A,
    B,
}

/// One dialog of a call.
#[derive(Debug, Clone)]
pub struct Leg {
    pub call_id: Bytes,
    /// Our end (with our tag).
    pub local: NameAddr,
    /// Their end (with their tag once known).
    pub remote: NameAddr,
    pub remote_target: Uri,
    /// Route set, in the order requests carry it.
    pub route_set: Vec<NameAddr>,
    pub local_cseq: u32,
    pub flow: Flow,
}

/// A B-leg attempt towards one contact.
#[derive(Debug)]
struct Branch {
    tx: TransactionId,
    invite: Request,
    flow: Flow,
    failed: Option<StatusCode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A's INVITE is pending; branches are ringing.
    Routing,
    /// B answered; A has our 2xx and we wait for A's ACK.
    Answered,
    Confirmed,
    /// BYEs are out; the call ends when they are answered or time out.
    Ending,
}

/// The UAS side's 2xx, retransmitted until the ACK (§13.3.1.4).
#[derive(Debug)]
struct Retransmit {
    payload: Bytes,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

#[derive(Debug)]
pub struct Call {
    key: CallKey,
    phase: Phase,
    a_invite_tx: Option<TransactionId>,
    a_invite: Request,
    a: Leg,
    a_media: Negotiated,
    a_port: u16,
    b_port: u16,
    branches: Vec<Branch>,
    b: Option<Leg>,
    b_media: Option<Negotiated>,
    /// The B-leg INVITE's CSeq number (its ACK reuses it).
    b_invite_cseq: u32,
    retransmit: Option<Retransmit>,
    /// Requests we sent on a leg and are waiting for.
    pending: Vec<TransactionId>,
    trunk: Option<String>,
    started: Instant,
    answered_at: Option<Instant>,
}

/// Per-trunk call accounting for the concurrent-call and CPS limits.
#[derive(Debug, Default)]
struct TrunkLoad {
    active: u32,
    /// Start instants of recent calls (the last second).
    recent: std::collections::VecDeque<Instant>,
}

#[derive(Debug)]
pub struct Calls {
    calls: HashMap<CallKey, Call>,
    by_tx: HashMap<TransactionId, CallKey>,
    /// (Call-ID, our tag) of every dialog we are in.
    by_dialog: HashMap<(Bytes, Bytes), (CallKey, Side)>,
    next_key: CallKey,
    ports: PortPool,
    trunks: HashMap<String, TrunkLoad>,
    media_ip: IpAddr,
    max_calls: usize,
    /// Due 2xx retransmissions (or give-ups) towards A, earliest first.
    retransmits: std::collections::BTreeSet<(Instant, CallKey)>,
    pub completed: u64,
    pub failed: u64,
}

impl Calls {
    pub fn new(ports: PortPool, media_ip: IpAddr, max_calls: usize) -> Calls {
        Calls {
            calls: HashMap::new(),
            by_tx: HashMap::new(),
            by_dialog: HashMap::new(),
            next_key: 1,
            ports,
            trunks: HashMap::new(),
            media_ip,
            max_calls,
            retransmits: std::collections::BTreeSet::new(),
            completed: 0,
            failed: 0,
        }
    }

    pub fn active(&self) -> usize {
        self.calls.len()
    }

    pub fn dialogs(&self) -> usize {
        self.by_dialog.len()
    }

    pub fn ports_in_use(&self) -> usize {
        self.ports.in_use()
    }
}

fn sdp_type() -> MediaType {
    #[allow(clippy::expect_used)]
    MediaType::from_bytes(Bytes::from_static(b"application/sdp")).expect("a valid media type")
}

const CODECS: &[Codec] = &[Codec::Pcmu, Codec::Pcma, Codec::Opus, Codec::TelephoneEvent];

fn user_of(addr: &NameAddr) -> Option<String> {
    addr.uri
        .as_sip()
        .and_then(|u| u.user_unescaped())
        .map(|u| String::from_utf8_lossy(&u).into_owned())
}

/// Parses a contact URI we may send to: a SIP URI with an IP host.
fn contact_addr(uri: &Uri) -> Option<SocketAddr> {
    let sip = uri.as_sip()?;
    let ip: IpAddr = match &sip.host {
        codeb_sip::Host::V4(a) => IpAddr::V4(*a),
        codeb_sip::Host::V6(a) => IpAddr::V6(*a),
        codeb_sip::Host::Domain(_) => return None,
    };
    Some(SocketAddr::new(ip, sip.port.unwrap_or(5060)))
}

impl Core {
    pub fn dialogs(&self) -> usize {
        self.calls.dialogs()
    }

    pub fn active_calls(&self) -> usize {
        self.calls.active()
    }

    fn our_host(&self) -> String {
        match self.settings.sip_addr {
            SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        }
    }

    fn our_contact(&self) -> Option<NameAddr> {
        NameAddr::from_bytes(format!("<sip:codeb@{}>", self.our_host())).ok()
    }

    fn our_via(&mut self, transport: &'static str) -> Option<Via> {
        let branch = format!("z9hG4bKcb{:016x}", self.ids.next_u64());
        Via::from_bytes(format!(
            "SIP/2.0/{transport} {};branch={branch};rport",
            self.our_host()
        ))
        .ok()
    }

    /// Our request loop check: a Via of ours (our host and branch prefix)
    /// in a request we receive means it came back to us (§16.3 step 4).
    fn is_loop(&self, req: &Request) -> bool {
        let host = self.our_host();
        req.headers.vias().unwrap_or_default().iter().any(|v| {
            let mut sent_by = BytesMut::new();
            v.host.render(&mut sent_by);
            let sent_by = match v.port {
                Some(p) => format!("{}:{p}", String::from_utf8_lossy(&sent_by)),
                None => String::from_utf8_lossy(&sent_by).into_owned(),
            };
            sent_by == host
                && v.branch
                    .as_deref()
                    .is_some_and(|b| b.starts_with(b"z9hG4bKcb"))
        })
    }

    fn reject(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: &Request,
        status: StatusCode,
        warning: Option<&str>,
    ) {
        let mut b = self.reply(req, status);
        if let Some(w) = warning {
            b = b.header(KnownHeader::Warning, format!("399 codeb \"{w}\""));
        }
        if let Ok(r) = b.build() {
            self.respond(now, id, r);
        }
    }

    /// A new INVITE: check, route, and fork the B-leg.
    pub(crate) fn on_invite(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: Request,
        source: Flow,
    ) {
        let h = &req.headers;
        // An INVITE with a To-tag belongs to a dialog: a re-INVITE.
        if h.to().ok().is_some_and(|t| t.tag().is_some()) {
            return self.on_in_dialog(now, id, req, source);
        }
        if h.max_forwards().ok().flatten() == Some(0) {
            return self.reject(now, id, &req, StatusCode::TOO_MANY_HOPS, None);
        }
        if self.is_loop(&req) {
            return self.reject(now, id, &req, StatusCode::LOOP_DETECTED, None);
        }
        let trunk = self
            .config
            .trunks
            .iter()
            .find(|t| t.inbound.iter().any(|c| c.contains(source.peer().ip())))
            .cloned();
        let Some(trunk) = trunk else {
            tracing::info!(source = %source.peer(), "INVITE from an unknown source refused");
            return self.reject(
                now,
                id,
                &req,
                StatusCode::FORBIDDEN,
                Some("calls are accepted from configured trunks only"),
            );
        };
        if let Some(retry) = self.trunk_admit(
            &trunk.id,
            trunk.max_concurrent_calls,
            trunk.calls_per_second,
            now,
        ) {
            if let Ok(r) = self
                .reply(&req, StatusCode::SERVICE_UNAVAILABLE)
                .header(KnownHeader::RetryAfter, retry.to_string())
                .build()
            {
                self.respond(now, id, r);
            }
            return;
        }
        if self.calls.calls.len() >= self.calls.max_calls {
            return self.reject(
                now,
                id,
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("call table full"),
            );
        }
        let offer = match Sdp::parse(&req.body, &SdpLimits::default()) {
            Ok(o) if !req.body.is_empty() => o,
            _ => {
                return self.reject(
                    now,
                    id,
                    &req,
                    StatusCode::NOT_ACCEPTABLE_HERE,
                    Some("an SDP offer is required in the INVITE"),
                );
            }
        };
        let did = req
            .uri
            .as_sip()
            .and_then(|u| {
                u.user_unescaped()
                    .map(|u| String::from_utf8_lossy(&u).into_owned())
            })
            .or_else(|| h.to().ok().as_ref().and_then(user_of))
            .unwrap_or_default();
        let from_user = h.from().ok().as_ref().and_then(user_of);
        let from = from_user
            .as_deref()
            .filter(|u| !routing::is_anonymous(Some(u)));
        let Some(route) =
            routing::route(&self.config.routes, &CallFacts { did: &did, from }).cloned()
        else {
            tracing::info!(%did, "no inbound route");
            return self.reject(now, id, &req, StatusCode::NOT_FOUND, None);
        };
        let mut targets: Vec<(Uri, SocketAddr)> = self
            .registrar_targets(&route.user, now)
            .into_iter()
            .collect();
        if let Some(c) = self
            .config
            .users
            .iter()
            .find(|u| u.name == route.user)
            .and_then(|u| u.contact.clone())
            && let Ok(uri) = Uri::parse(Bytes::from(c))
            && let Some(addr) = contact_addr(&uri)
        {
            targets.push((uri, addr));
        }
        targets.retain(|(_, addr)| !super::flow::is_forbidden_destination(addr));
        if targets.is_empty() {
            tracing::info!(user = %route.user, %did, "routed user is offline");
            return self.reject(now, id, &req, StatusCode::TEMPORARILY_UNAVAILABLE, None);
        }
        let (Some(a_port), Some(b_port)) =
            (self.calls.ports.allocate(), self.calls.ports.allocate())
        else {
            return self.reject(
                now,
                id,
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("no media ports left"),
            );
        };
        let a_local = LocalMedia {
            addr: self.calls.media_ip,
            port: a_port,
            codecs: CODECS.to_vec(),
            ptime: 20,
            direction: Direction::SendRecv,
            session_id: self.ids.next_u64() >> 1,
            session_version: 1,
        };
        let (answer, a_media) = match sdp::answer(&offer, &a_local) {
            Ok(x) => x,
            Err(e) => {
                self.calls.ports.release(a_port);
                self.calls.ports.release(b_port);
                return self.reject(
                    now,
                    id,
                    &req,
                    StatusCode::NOT_ACCEPTABLE_HERE,
                    Some(&e.to_string()),
                );
            }
        };
        // A-leg dialog state (UAS side, §12.1.1).
        let (Ok(a_from), Ok(a_to), Ok(call_id), Some(contact)) = (
            h.from(),
            h.to(),
            h.call_id(),
            h.contacts()
                .ok()
                .and_then(|c| c.first().and_then(|c| c.addr().cloned())),
        ) else {
            self.calls.ports.release(a_port);
            self.calls.ports.release(b_port);
            return self.reject(
                now,
                id,
                &req,
                StatusCode::BAD_REQUEST,
                Some("missing Contact"),
            );
        };
        let a_tag = self.ids.tag();
        let Ok(a_local_addr) = a_to.with_tag(&a_tag) else {
            self.calls.ports.release(a_port);
            self.calls.ports.release(b_port);
            return self.reject(now, id, &req, StatusCode::BAD_REQUEST, None);
        };
        let a = Leg {
            call_id: call_id.clone(),
            local: a_local_addr,
            remote: a_from.clone(),
            remote_target: contact.uri.clone(),
            route_set: h.record_routes().unwrap_or_default(),
            local_cseq: 0,
            flow: source,
        };
        let key = self.calls.next_key;
        self.calls.next_key += 1;
        let mut call = Call {
            key,
            phase: Phase::Routing,
            a_invite_tx: Some(id),
            a_invite: req.clone(),
            a,
            a_media,
            a_port,
            b_port,
            branches: Vec::new(),
            b: None,
            b_media: None,
            b_invite_cseq: 1,
            retransmit: None,
            pending: Vec::new(),
            trunk: Some(trunk.id.clone()),
            started: now,
            answered_at: None,
        };
        // Keep the A-side answer for the 2xx.
        let a_answer = Bytes::from(answer.to_text());
        call.a_invite.body = a_answer;
        // Fork the B-leg to every contact.
        let hops = h
            .max_forwards()
            .ok()
            .flatten()
            .unwrap_or(70)
            .saturating_sub(1);
        let caller = a_from.clone();
        for (uri, addr) in targets {
            let Some(flow) = self.udp_flow(addr) else {
                continue;
            };
            let b_local = LocalMedia {
                port: b_port,
                direction: Direction::SendRecv,
                ..call_local_media(&call, self.calls.media_ip)
            };
            let offer = sdp::offer(&b_local);
            let tag = self.ids.tag();
            let Some(invite) = self.build_b_invite(
                &uri,
                &caller,
                &route.user,
                &tag,
                hops,
                Bytes::from(offer.to_text()),
            ) else {
                continue;
            };
            match self.layer.send_request(now, invite.clone(), flow) {
                Ok(tx) => {
                    self.calls.by_tx.insert(tx, key);
                    call.branches.push(Branch {
                        tx,
                        invite,
                        flow,
                        failed: None,
                    });
                }
                Err(e) => tracing::warn!(error = %e, "could not start a B-leg"),
            }
        }
        if call.branches.is_empty() {
            self.calls.ports.release(a_port);
            self.calls.ports.release(b_port);
            return self.reject(
                now,
                id,
                &req,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("no usable contact"),
            );
        }
        self.calls.by_tx.insert(id, key);
        self.calls
            .by_dialog
            .insert((call_id, a_tag), (key, Side::A));
        if let Some(t) = &call.trunk {
            self.calls.trunks.entry(t.clone()).or_default().active += 1;
        }
        tracing::info!(call = key, %did, user = %route.user, branches = call.branches.len(), "call routed");
        self.calls.calls.insert(key, call);
    }

    /// Applies a trunk's limits to a new call; `Some(seconds)` to refuse.
    fn trunk_admit(&mut self, trunk: &str, max_calls: u32, cps: u32, now: Instant) -> Option<u32> {
        let load = self.calls.trunks.entry(trunk.to_owned()).or_default();
        while load
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
        {
            load.recent.pop_front();
        }
        if max_calls > 0 && load.active >= max_calls {
            return Some(5);
        }
        if cps > 0 && load.recent.len() >= cps as usize {
            return Some(1);
        }
        load.recent.push_back(now);
        None
    }

    fn registrar_targets(&self, user: &str, now: Instant) -> Vec<(Uri, SocketAddr)> {
        self.registrar()
            .lookup(user, now)
            .into_iter()
            .filter_map(|b| {
                Uri::parse(Bytes::from(b.uri.clone()))
                    .ok()
                    .map(|u| (u, b.source))
            })
            .collect()
    }

    /// The flow for sending to `addr` over our UDP socket.
    fn udp_flow(&self, addr: SocketAddr) -> Option<Flow> {
        self.udp_socket
            .map(|socket| Flow::Udp { socket, peer: addr })
    }

    fn build_b_invite(
        &mut self,
        target: &Uri,
        caller: &NameAddr,
        user: &str,
        tag: &[u8],
        hops: u8,
        sdp_body: Bytes,
    ) -> Option<Request> {
        let via = self.our_via("UDP")?;
        let contact = self.our_contact()?;
        let host = self.our_host();
        // The caller's number and name cross; nothing else of A does.
        let caller_user = user_of(caller)
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "anonymous".into());
        let caller_user: String = caller_user
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "+-_.*#".contains(*c))
            .take(64)
            .collect();
        let display = caller
            .display_name
            .as_ref()
            .map(|d| {
                String::from_utf8_lossy(&d.text())
                    .chars()
                    .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
                    .take(64)
                    .collect::<String>()
            })
            .filter(|d| !d.is_empty());
        let from = match display {
            Some(d) => format!(
                "\"{d}\" <sip:{caller_user}@{host}>;tag={}",
                String::from_utf8_lossy(tag)
            ),
            None => format!(
                "<sip:{caller_user}@{host}>;tag={}",
                String::from_utf8_lossy(tag)
            ),
        };
        let from = NameAddr::from_bytes(from).ok()?;
        let mut to_uri = BytesMut::new();
        target.render(&mut to_uri);
        let _ = user;
        let to = NameAddr::from_bytes(format!("<{}>", String::from_utf8_lossy(&to_uri))).ok()?;
        let call_id = self.ids.call_id(Some(host.as_bytes()));
        RequestBuilder::new(Method::Invite, target.clone())
            .via(&via)
            .max_forwards(hops)
            .from(&from)
            .to(&to)
            .call_id(call_id)
            .cseq(1)
            .contact(&contact)
            .header(
                KnownHeader::Allow,
                "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE",
            )
            .header(KnownHeader::UserAgent, "CodeB-Switch")
            .body(&sdp_type(), sdp_body)
            .build()
            .ok()
    }

    /// A response to one of our client transactions.
    pub(crate) fn on_response(&mut self, now: Instant, tx: TransactionId, resp: Response) {
        let Some(key) = self.calls.by_tx.get(&tx).copied() else {
            return;
        };
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        if let Some(bi) = call.branches.iter().position(|b| b.tx == tx) {
            return self.on_branch_response(now, key, bi, resp);
        }
        // A final answer to a BYE we sent: once every BYE is answered the
        // call is over (whatever the status: the dialog ends either way,
        // §15.1.1).
        if resp.status.is_final() && call.pending.contains(&tx) {
            self.settle_pending(key, tx);
        }
    }

    fn settle_pending(&mut self, key: CallKey, tx: TransactionId) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        call.pending.retain(|t| *t != tx);
        let branches_done = call.b.is_some() || call.branches.iter().all(|b| b.failed.is_some());
        if call.phase == Phase::Ending && call.pending.is_empty() && branches_done {
            self.finish(key);
        }
    }

    fn on_branch_response(&mut self, now: Instant, key: CallKey, bi: usize, resp: Response) {
        let status = resp.status;
        if status.is_provisional() {
            if status == StatusCode::TRYING {
                return;
            }
            // Ringing (or early media) on the B side: tell A, once per kind.
            let Some(call) = self.calls.calls.get(&key) else {
                return;
            };
            let Some(a_tx) = call.a_invite_tx else { return };
            let a_req = call.a_invite.clone();
            let early = if status == StatusCode::SESSION_PROGRESS && !resp.body.is_empty() {
                Some(call.a_invite.body.clone())
            } else {
                None
            };
            let to_tag = call.a.local.tag().map(<[u8]>::to_vec);
            let contact = self.our_contact();
            let mut b = a_req
                .reply(
                    if early.is_some() {
                        StatusCode::SESSION_PROGRESS
                    } else {
                        StatusCode::RINGING
                    },
                    to_tag.as_deref(),
                )
                .header(KnownHeader::Server, "CodeB-Switch");
            if let Some(c) = &contact {
                b = b.contact(c);
            }
            if let Some(body) = early {
                b = b.body(&sdp_type(), body);
            }
            if let Ok(r) = b.build() {
                let _ = self.layer.respond(now, a_tx, r);
            }
            return;
        }
        if status.is_success() {
            return self.on_branch_answered(now, key, bi, resp);
        }
        // A branch failed; when all have, A gets the best failure.
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if let Some(b) = call.branches.get_mut(bi) {
            b.failed = Some(status);
        }
        let all_failed = call.branches.iter().all(|b| b.failed.is_some());
        if call.phase == Phase::Routing && all_failed {
            let best = call
                .branches
                .iter()
                .filter_map(|b| b.failed)
                .min_by_key(|s| failure_rank(*s))
                .unwrap_or(StatusCode::TEMPORARILY_UNAVAILABLE);
            let relay = match best.as_u16() {
                401 | 407 => StatusCode::TEMPORARILY_UNAVAILABLE,
                _ => best,
            };
            self.fail_call(now, key, relay);
        }
    }

    fn on_branch_answered(&mut self, now: Instant, key: CallKey, bi: usize, resp: Response) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let Some(branch) = call.branches.get(bi) else {
            return;
        };
        let flow = branch.flow;
        let h = &resp.headers;
        let (Ok(to), Ok(from)) = (h.to(), h.from()) else {
            return;
        };
        let remote_target = h
            .contacts()
            .ok()
            .and_then(|c| c.first().and_then(|c| c.addr().map(|a| a.uri.clone())));
        if call.phase != Phase::Routing || call.b.is_some() {
            // A retransmitted 2xx of the winner (ACK it again) or a 2xx of
            // another fork: ACK and BYE it (§13.2.2.4).
            let winner = call.b.as_ref().is_some_and(|b| to.tag() == b.remote.tag());
            let mut leg = Leg {
                call_id: h.call_id().unwrap_or_default(),
                local: from,
                remote: to,
                remote_target: remote_target.unwrap_or_else(|| branch.invite.uri.clone()),
                route_set: h
                    .record_routes()
                    .unwrap_or_default()
                    .into_iter()
                    .rev()
                    .collect(),
                local_cseq: 1,
                flow,
            };
            self.send_ack(&mut leg, 1);
            if !winner {
                self.send_bye(now, key, &mut leg);
            }
            return;
        }
        let Some(remote_target) = remote_target else {
            tracing::warn!(call = key, "2xx without Contact from B");
            return;
        };
        let b_local = LocalMedia {
            port: call.b_port,
            ..call_local_media(call, self.calls.media_ip)
        };
        let negotiated = Sdp::parse(&resp.body, &SdpLimits::default())
            .ok()
            .and_then(|a| sdp::read_answer(&b_local, &a).ok());
        let mut leg = Leg {
            call_id: h.call_id().unwrap_or_default(),
            local: from,
            remote: to,
            remote_target,
            route_set: h
                .record_routes()
                .unwrap_or_default()
                .into_iter()
                .rev()
                .collect(),
            local_cseq: call.b_invite_cseq,
            flow,
        };
        self.send_ack(&mut leg, 1);
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if negotiated.is_none() {
            // B answered without a usable SDP: hang B up, fail A.
            call.b = Some(leg.clone());
            self.send_bye(now, key, &mut leg);
            return self.fail_call(now, key, StatusCode::NOT_ACCEPTABLE_HERE);
        }
        call.b_media = negotiated;
        if let Some(tag) = leg.local.tag() {
            self.calls.by_dialog.insert(
                (leg.call_id.clone(), Bytes::copy_from_slice(tag)),
                (key, Side::B),
            );
        }
        call.b = Some(leg);
        call.phase = Phase::Answered;
        call.answered_at = Some(now);
        // Cancel the other forks.
        let others: Vec<TransactionId> = call
            .branches
            .iter()
            .enumerate()
            .filter(|(i, b)| *i != bi && b.failed.is_none())
            .map(|(_, b)| b.tx)
            .collect();
        for tx in others {
            let _ = self.layer.cancel(now, tx);
        }
        // Answer A with our SDP and start the 2xx retransmissions.
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let Some(a_tx) = call.a_invite_tx.take() else {
            return;
        };
        let to_tag = call.a.local.tag().map(<[u8]>::to_vec);
        let body = call.a_invite.body.clone();
        let mut b = call
            .a_invite
            .reply(StatusCode::OK, to_tag.as_deref())
            .header(KnownHeader::Server, "CodeB-Switch");
        if let Some(c) = self.our_contact() {
            b = b.contact(&c);
        }
        let Ok(ok) = b.body(&sdp_type(), body).build() else {
            return;
        };
        let mut wire = BytesMut::new();
        ok.write_to(&mut wire);
        let t1 = self.settings.timers.t1;
        if let Some(call) = self.calls.calls.get_mut(&key) {
            call.retransmit = Some(Retransmit {
                payload: wire.freeze(),
                next: now + t1,
                interval: t1,
                give_up: now + t1 * 64,
            });
            self.calls.retransmits.insert((now + t1, key));
        }
        self.respond(now, a_tx, ok);
        tracing::info!(call = key, "call answered");
    }

    fn send_ack(&mut self, leg: &mut Leg, cseq: u32) {
        let Some(req) = self.in_dialog_request(leg, Method::Ack, Some(cseq)) else {
            return;
        };
        let mut wire = BytesMut::new();
        req.write_to(&mut wire);
        self.queue_raw(leg.flow, wire.freeze());
    }

    /// Builds a request inside `leg` (§12.2.1.1): CSeq from the leg
    /// (or `cseq` for an ACK), Request-URI and Route from the target and
    /// route set (loose routing; a strict first hop is put last).
    fn in_dialog_request(
        &mut self,
        leg: &mut Leg,
        method: Method,
        cseq: Option<u32>,
    ) -> Option<Request> {
        let via = self.our_via(leg.flow.transport())?;
        let seq = match cseq {
            Some(s) => s,
            None => {
                leg.local_cseq = leg.local_cseq.saturating_add(1);
                leg.local_cseq
            }
        };
        let (uri, routes): (Uri, Vec<NameAddr>) = match leg.route_set.first() {
            Some(first) if first.uri.as_sip().is_some_and(|u| !u.params.contains("lr")) => {
                // Strict router: it becomes the Request-URI, the target goes last.
                let mut rest: Vec<NameAddr> = leg.route_set[1..].to_vec();
                rest.push(NameAddr::new(leg.remote_target.clone()));
                (first.uri.clone(), rest)
            }
            _ => (leg.remote_target.clone(), leg.route_set.clone()),
        };
        let mut b = RequestBuilder::new(method, uri).via(&via).max_forwards(70);
        for r in &routes {
            b = b.route(r);
        }
        b = b
            .from(&leg.local)
            .to(&leg.remote)
            .call_id(leg.call_id.clone())
            .cseq(seq);
        if let Some(c) = self.our_contact() {
            b = b.contact(&c);
        }
        b.build().ok()
    }

    fn send_bye(&mut self, now: Instant, key: CallKey, leg: &mut Leg) {
        let Some(req) = self.in_dialog_request(leg, Method::Bye, None) else {
            return;
        };
        match self.layer.send_request(now, req, leg.flow) {
            Ok(tx) => {
                self.calls.by_tx.insert(tx, key);
                if let Some(call) = self.calls.calls.get_mut(&key) {
                    call.pending.push(tx);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not send BYE"),
        }
    }

    fn queue_raw(&mut self, flow: Flow, payload: Bytes) {
        self.raw_out.push((flow, payload));
    }

    /// Ends a call that never got answered: A gets `status`.
    fn fail_call(&mut self, now: Instant, key: CallKey, status: StatusCode) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        if let Some(a_tx) = call.a_invite_tx.take() {
            let req = call.a_invite.clone();
            let to_tag = call.a.local.tag().map(<[u8]>::to_vec);
            if let Ok(r) = req
                .reply(status, to_tag.as_deref())
                .header(KnownHeader::Server, "CodeB-Switch")
                .build()
            {
                self.respond(now, a_tx, r);
            }
        }
        self.calls.failed += 1;
        self.finish(key);
    }

    /// Forgets a call and frees what it held.
    fn finish(&mut self, key: CallKey) {
        let Some(call) = self.calls.calls.remove(&key) else {
            return;
        };
        self.calls.ports.release(call.a_port);
        self.calls.ports.release(call.b_port);
        self.calls.by_dialog.retain(|_, (k, _)| *k != key);
        self.calls.by_tx.retain(|_, k| *k != key);
        if let Some(t) = &call.trunk
            && let Some(load) = self.calls.trunks.get_mut(t)
        {
            load.active = load.active.saturating_sub(1);
        }
        let secs = call.answered_at.map(|a| a.elapsed().as_secs()).unwrap_or(0);
        tracing::info!(
            call = key,
            talk_secs = secs,
            total_ms = call.started.elapsed().as_millis() as u64,
            "call ended"
        );
    }

    /// A CANCEL from A.
    pub(crate) fn on_cancel(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: &Request,
        invite: Option<TransactionId>,
    ) {
        let to_tag = invite
            .and_then(|i| self.calls.by_tx.get(&i))
            .and_then(|k| self.calls.calls.get(k))
            .and_then(|c| c.a.local.tag().map(<[u8]>::to_vec))
            .unwrap_or_else(|| self.ids.tag().to_vec());
        let _ = req;
        match self.layer.answer_cancel(now, id, &to_tag) {
            Ok(CancelOutcome::Cancelled { invite }) => {
                let Some(key) = self.calls.by_tx.get(&invite).copied() else {
                    return;
                };
                if let Some(call) = self.calls.calls.get_mut(&key) {
                    call.a_invite_tx = None;
                    let txs: Vec<TransactionId> = call
                        .branches
                        .iter()
                        .filter(|b| b.failed.is_none())
                        .map(|b| b.tx)
                        .collect();
                    for tx in txs {
                        let _ = self.layer.cancel(now, tx);
                    }
                }
                *self
                    .stats
                    .responses
                    .entry(("INVITE".into(), 487))
                    .or_default() += 1;
                self.calls.failed += 1;
                // The call is forgotten once every branch has ended (their
                // 487s or timeouts arrive through on_terminated).
                if let Some(call) = self.calls.calls.get_mut(&key) {
                    call.phase = Phase::Ending;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "CANCEL could not be answered"),
        }
    }

    /// The ACK for our 2xx on the A side.
    pub(crate) fn on_ack(&mut self, now: Instant, req: Request) {
        let Some((key, side)) = self.dialog_of(&req) else {
            return;
        };
        if side != Side::A {
            return;
        }
        if let Some(call) = self.calls.calls.get_mut(&key) {
            call.retransmit = None;
            if call.phase == Phase::Answered {
                call.phase = Phase::Confirmed;
            }
        }
        let _ = now;
    }

    fn dialog_of(&self, req: &Request) -> Option<(CallKey, Side)> {
        let call_id = req.headers.call_id().ok()?;
        let to = req.headers.to().ok()?;
        let tag = Bytes::copy_from_slice(to.tag()?);
        self.calls.by_dialog.get(&(call_id, tag)).copied()
    }

    /// BYE, INFO, UPDATE and re-INVITE inside a dialog.
    pub(crate) fn on_in_dialog(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: Request,
        _source: Flow,
    ) {
        let Some((key, side)) = self.dialog_of(&req) else {
            return self.simple(now, id, &req, StatusCode::CALL_DOES_NOT_EXIST);
        };
        match req.method {
            Method::Bye => {
                self.simple(now, id, &req, StatusCode::OK);
                let other = match side {
                    Side::A => Side::B,
                    Side::B => Side::A,
                };
                self.hang_up_side(now, key, other);
                self.calls.completed += 1;
                if let Some(call) = self.calls.calls.get_mut(&key) {
                    call.phase = Phase::Ending;
                    if call.pending.is_empty() {
                        self.finish(key);
                    }
                }
            }
            Method::Info => {
                // DTMF (application/dtmf-relay) and other INFO: relay it.
                let other = if side == Side::A { Side::B } else { Side::A };
                self.relay_info(now, key, other, &req);
                self.simple(now, id, &req, StatusCode::OK);
            }
            Method::Invite | Method::Update => self.answer_offer(now, id, key, side, &req),
            _ => self.simple(now, id, &req, StatusCode::METHOD_NOT_ALLOWED),
        }
    }

    /// A re-INVITE or UPDATE: answer it ourselves (hold, resume and codec
    /// changes stay on this leg; our media address does not change).
    fn answer_offer(
        &mut self,
        now: Instant,
        id: TransactionId,
        key: CallKey,
        side: Side,
        req: &Request,
    ) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let port = if side == Side::A {
            call.a_port
        } else {
            call.b_port
        };
        let local = LocalMedia {
            port,
            ..call_local_media(call, self.calls.media_ip)
        };
        let answer = if req.body.is_empty() {
            // An offerless re-INVITE asks us to offer.
            Some(Bytes::from(sdp::offer(&local).to_text()))
        } else {
            match Sdp::parse(&req.body, &SdpLimits::default())
                .ok()
                .and_then(|o| sdp::answer(&o, &local).ok())
            {
                Some((a, negotiated)) => {
                    if side == Side::A {
                        call.a_media = negotiated;
                    } else {
                        call.b_media = Some(negotiated);
                    }
                    Some(Bytes::from(a.to_text()))
                }
                None => None,
            }
        };
        let Some(body) = answer else {
            return self.reject(
                now,
                id,
                req,
                StatusCode::NOT_ACCEPTABLE_HERE,
                Some("no usable offer"),
            );
        };
        let mut b = self.reply(req, StatusCode::OK);
        if let Some(c) = self.our_contact() {
            b = b.contact(&c);
        }
        if let Ok(r) = b.body(&sdp_type(), body).build() {
            self.respond(now, id, r);
        }
    }

    fn relay_info(&mut self, now: Instant, key: CallKey, to: Side, req: &Request) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        let leg = match to {
            Side::A => Some(&mut call.a),
            Side::B => call.b.as_mut(),
        };
        let Some(mut leg) = leg.cloned() else { return };
        let Some(mut info) = self.in_dialog_request(&mut leg, Method::Info, None) else {
            return;
        };
        if let Some(ct) = req.headers.get(KnownHeader::ContentType).cloned()
            && let Ok(h) = codeb_sip::Header::new(KnownHeader::ContentType, ct)
        {
            info.headers.push(h);
            info.body = req.body.clone();
        }
        self.store_leg(key, to, leg.clone());
        if let Ok(tx) = self.layer.send_request(now, info, leg.flow) {
            self.calls.by_tx.insert(tx, key);
        }
    }

    fn store_leg(&mut self, key: CallKey, side: Side, leg: Leg) {
        if let Some(call) = self.calls.calls.get_mut(&key) {
            match side {
                Side::A => call.a = leg,
                Side::B => call.b = Some(leg),
            }
        }
    }

    /// Sends BYE on one side (if that dialog exists).
    fn hang_up_side(&mut self, now: Instant, key: CallKey, side: Side) {
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        let leg = match side {
            Side::A => (call.phase != Phase::Routing).then(|| call.a.clone()),
            Side::B => call.b.clone(),
        };
        if let Some(mut leg) = leg {
            self.send_bye(now, key, &mut leg);
            self.store_leg(key, side, leg);
        }
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, tx: TransactionId, timer: Timer) {
        let Some(key) = self.calls.by_tx.get(&tx).copied() else {
            return;
        };
        let Some(call) = self.calls.calls.get(&key) else {
            return;
        };
        if let Some(bi) = call.branches.iter().position(|b| b.tx == tx) {
            let status = StatusCode::REQUEST_TIMEOUT;
            tracing::info!(call = key, ?timer, "B-leg timed out");
            let fake = self.synthetic_failure(&call.branches[bi].invite, status);
            if let Some(resp) = fake {
                self.on_branch_response(now, key, bi, resp);
            }
        }
    }

    fn synthetic_failure(&self, invite: &Request, status: StatusCode) -> Option<Response> {
        invite.reply(status, Some(b"timeout")).build().ok()
    }

    pub(crate) fn on_transport_error(&mut self, now: Instant, tx: TransactionId) {
        self.on_timeout(now, tx, Timer::B);
    }

    pub(crate) fn on_terminated(&mut self, _now: Instant, tx: TransactionId) {
        let Some(key) = self.calls.by_tx.remove(&tx) else {
            return;
        };
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        // A branch that ended without a final answer counts as failed.
        if let Some(b) = call.branches.iter_mut().find(|b| b.tx == tx) {
            b.failed.get_or_insert(StatusCode::REQUEST_TERMINATED);
        }
        self.settle_pending(key, tx);
    }

    /// Due 2xx retransmissions towards A, and give-ups when no ACK came.
    pub(crate) fn retransmit_due(&mut self, now: Instant) {
        let t2 = self.settings.timers.t2;
        while let Some(&(at, key)) = self.calls.retransmits.first() {
            if at > now {
                break;
            }
            self.calls.retransmits.remove(&(at, key));
            let Some(call) = self.calls.calls.get_mut(&key) else {
                continue;
            };
            let Some(r) = &mut call.retransmit else {
                continue;
            };
            if now >= r.give_up {
                call.retransmit = None;
                call.phase = Phase::Ending;
                tracing::warn!(call = key, "no ACK for our 2xx; hanging up");
                self.hang_up_side(now, key, Side::A);
                self.hang_up_side(now, key, Side::B);
                continue;
            }
            let (flow, payload) = (call.a.flow, r.payload.clone());
            r.interval = (r.interval * 2).min(t2);
            r.next = (now + r.interval).min(r.give_up);
            let next = r.next;
            self.calls.retransmits.insert((next, key));
            self.queue_raw(flow, payload);
        }
    }

    /// The earliest 2xx retransmission due.
    pub(crate) fn calls_deadline(&self) -> Option<Instant> {
        self.calls.retransmits.first().map(|(at, _)| *at)
    }
}

fn call_local_media(call: &Call, ip: IpAddr) -> LocalMedia {
    // Prefer A's codec on B so the call can be relayed without transcoding.
    let mut codecs = vec![call.a_media.codec];
    codecs.extend(CODECS.iter().copied().filter(|c| *c != call.a_media.codec));
    LocalMedia {
        addr: ip,
        port: 0,
        codecs,
        ptime: 20,
        direction: Direction::SendRecv,
        session_id: call.key,
        session_version: 1,
    }
}

/// Which failure to relay when every fork failed (§16.7 step 6, simplified):
/// 6xx first, then busy, then the rest by code.
fn failure_rank(s: StatusCode) -> u32 {
    match s.as_u16() {
        600..=699 => 0,
        486 => 1,
        c => 10 + u32::from(c),
    }
}
