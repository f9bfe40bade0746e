//! The switch's SIP core: everything between received bytes and sent bytes
//! that is not a socket. Screening (RFC 4475 verdicts), abuse protection,
//! TCP framing (§18.3), the transaction layer, the registrar, OPTIONS, and
//! the hand-off of INVITE dialogs to the B2BUA (`calls`, which owns the
//! dialog table whose output is drained here with the transactions').
//!
//! Sans-IO like the layers under it: the IO loop feeds it bytes and `now`,
//! drains [`Core::poll_transmit`], and sleeps until [`Core::poll_timeout`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use codeb_io::{ConnId, SocketId};
use codeb_sip::dialog::SessionTimerConfig;
use codeb_sip::digest::{Algorithm, Check, NonceCounts, Verifier};
use codeb_sip::header::{HeaderName, KnownHeader};
use codeb_sip::multipart::{self, MultipartError};
use codeb_sip::transaction::{
    Config as LayerConfig, Event, IdGenerator, Timers, TransactionId, TransactionLayer,
    stamp_received,
};
use codeb_sip::validate::{Policy, Problem, Role, Verdict};
use codeb_sip::{
    Frame, Limits, Message, Method, MethodSet, Request, Response, StatusCode, ValueError,
    frame_stream,
};

use super::calls::Calls;
use super::flow::{Flow, is_forbidden_destination};
use super::outbound::{Outbound, OutboundStats};
use super::trunks::TrunkLinks;
use crate::config::SwitchConfig;
use crate::ports::{PortPool, PortRange};
use crate::protection::{self, Protection, is_scanner};
use crate::registrar::{RegisterError, Registrar, RegistrarLimits, Registration};

/// Methods the switch implements; others get 501 from screening.
pub(crate) const IMPLEMENTED: &[Method] = &[
    Method::Invite,
    Method::Ack,
    Method::Bye,
    Method::Cancel,
    Method::Options,
    Method::Register,
    Method::Info,
    Method::Update,
    Method::Refer,
    Method::Prack,
];
pub(crate) const ALLOW: &str =
    "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, UPDATE, REFER, PRACK";
/// `norefersub`: a REFER may ask for no NOTIFYs (RFC 4488); `100rel`:
/// reliable provisional responses to a caller that requires them (RFC
/// 3262; the switch never asks a callee for them).
const SUPPORTED: &[&str] = &["timer", "norefersub", "100rel", "replaces"];
/// Multipart bodies are read for their SDP (SIP-I/SIP-T, RFC 5621).
const ACCEPTED: &[&str] = &[
    "application/sdp",
    "multipart/mixed",
    "multipart/alternative",
    "application/dtmf-relay",
    "application/dtmf",
];
const SERVER: &str = "CodeB-Switch";
/// Nonces whose counts the registrar remembers (each for its 5 minutes):
/// enough for a REGISTER every 5 minutes from 200,000 phones.
const NONCE_COUNTS: usize = 200_000;
/// How often housekeeping runs (registrar expiry, idle TCP).
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// The address we appear at (Via, Contact, Call-ID and From hosts of
    /// what we send, and the Via our loop check looks for): the listening
    /// address, or the one advertised for it behind a NAT.
    pub sip_addr: SocketAddr,
    pub timers: Timers,
    pub max_transactions: usize,
    /// Secret of the registrar's nonces.
    pub nonce_key: [u8; 32],
    /// Seed of branch, tag and Call-ID generation.
    pub id_seed: u64,
    pub tcp_idle: Duration,
    pub protection: protection::Limits,
    pub registrar: RegistrarLimits,
    /// An instant and the Unix time at it: the wall clock, passed in (for
    /// nonce timestamps, which must survive restarts).
    pub wall_base: (Instant, u64),
    /// The same instant and the Unix time at it in milliseconds (event
    /// times).
    pub wall_base_ms: (Instant, u64),
    /// Address advertised in SDP.
    pub media_ip: std::net::IpAddr,
    pub rtp_ports: PortRange,
    pub max_calls: usize,
    /// How long a routed call may ring unanswered (RFC 3261 Timer C, more
    /// than 3 min): then every branch is cancelled and the caller gets
    /// 408. Without it a callee that only rings held the call, and its
    /// media ports, for good.
    pub ring_timeout: Duration,
    /// RFC 4028 session timers: offered on B-legs, honoured on A-legs;
    /// `None` turns them off (a peer's Session-Expires is still obeyed).
    pub session_timer: Option<SessionTimerConfig>,
}

/// Sources the per-source flood limits leave alone: the trunks' inbound
/// networks and each trunk's own address. The latter answers the calls we
/// send it, and a carrier answering a burst (a mass hangup's BYEs) at
/// more than the per-source rate would otherwise have its responses
/// dropped and then be banned, although no call of it is new.
fn trusted_sources(
    config: &SwitchConfig,
    trunk_addrs: &HashMap<String, SocketAddr>,
) -> Vec<crate::cidr::Cidr> {
    config
        .trunks
        .iter()
        .flat_map(|t| t.inbound.iter().copied())
        .chain(
            trunk_addrs
                .values()
                .map(|a| crate::cidr::Cidr::host(a.ip())),
        )
        .collect()
}

/// A message for the IO loop to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub flow: Flow,
    pub payload: Bytes,
}

/// Counters the metrics endpoint exports.
#[derive(Debug, Clone, Default)]
pub struct CoreStats {
    pub messages_in: u64,
    pub stateless_replies: u64,
    pub dropped_invalid: u64,
    pub dropped_scanner: u64,
    pub dropped_rate_limited: u64,
    pub dropped_forbidden_destination: u64,
    pub framing_errors: u64,
    /// CRLF keep-alive pongs sent on TCP connections (RFC 5626).
    pub keepalive_pongs: u64,
    /// Parse or screening problems by kind (their reason phrase).
    pub problems: HashMap<String, u64>,
    /// Final responses we sent, by method and status.
    pub responses: HashMap<(String, u16), u64>,
    /// Inbound calls answered by a virtual number's AI persona.
    pub virtual_number_calls: u64,
    /// REGISTERs whose digest credentials were a replay (a nonce count
    /// already used): challenged again instead of bound.
    pub digest_replays: u64,
    /// Inbound calls routed to a virtual number and refused before the
    /// answer (no codec in common, no media ports, a persona the node
    /// cannot run, a number it does not have, an AI session that failed
    /// or was not ready in time), or given up by the caller while ringing.
    pub virtual_number_refused: u64,
    /// Answered calls hung up because their RTP stopped.
    pub rtp_timeouts: u64,
    /// Keys pressed on calls' legs: `telephone-event` (RFC 4733) or
    /// `inband` (tones heard in G.711 audio).
    pub dtmf_digits: HashMap<&'static str, u64>,
    /// REFER transfers by result: `transferred`, `failed` (the target did
    /// not answer), `refused` (403: a target the switch would not route).
    pub refer_transfers: HashMap<&'static str, u64>,
    /// Callee redirects (3xx) followed to a user of the tenant, and
    /// refused (the caller gets 480).
    pub redirects_followed: u64,
    pub redirects_refused: u64,
    /// TCP connections we opened (to trunks).
    pub outbound: OutboundStats,
    /// Accepted TCP connections closed at once: their address already
    /// held [`MAX_CONNECTIONS_PER_ADDRESS`].
    pub tcp_refused_per_address: u64,
}

/// Most accepted TCP connections one (untrusted) address may hold at once:
/// a sixteenth of the IO layer's table (4,096), so one host cannot take
/// every connection while an office of phones behind one NAT address
/// still fits.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;

struct Stream {
    buf: BytesMut,
    peer: SocketAddr,
    last_active: Instant,
    /// CRLFs received since the last message: two make a keep-alive ping
    /// (RFC 5626 §3.5.1), which may arrive split across reads.
    crlfs: usize,
}

pub struct Core {
    pub(crate) settings: CoreSettings,
    pub(crate) config: SwitchConfig,
    pub(crate) layer: TransactionLayer<Flow>,
    pub(crate) ids: IdGenerator,
    pub(crate) limits: Limits,
    registrar: Registrar,
    verifier: Verifier,
    /// The nonce counts REGISTERs used: a replayed Authorization gets a
    /// fresh challenge, not a binding.
    nonce_counts: NonceCounts,
    protection: Protection,
    streams: HashMap<ConnId, Stream>,
    pub(crate) out: VecDeque<Outgoing>,
    pub(crate) outbound: Outbound,
    closes: Vec<ConnId>,
    next_tick: Option<Instant>,
    pub(crate) calls: Calls,
    /// The UDP socket outbound UDP requests leave from.
    pub(crate) udp_socket: Option<SocketId>,
    pub(crate) trunk_links: TrunkLinks,
    /// Resolved trunk addresses (by trunk id), from the configuration.
    pub(crate) trunk_addrs: HashMap<String, SocketAddr>,
    pub stats: CoreStats,
}

/// The sent-by port of a response's top Via (5060 if it names none), if
/// `payload` is a response: where §18.2.2 sends a response whose
/// connection has closed. Only read on that rare path.
fn response_sent_by_port(payload: &Bytes) -> Option<u16> {
    if !payload.starts_with(b"SIP/2.0 ") {
        return None;
    }
    match codeb_sip::parse_datagram(payload.clone(), &codeb_sip::Limits::default()) {
        Ok(codeb_sip::Message::Response(r)) => {
            r.headers.top_via().ok().map(|v| v.port.unwrap_or(5060))
        }
        _ => None,
    }
}

pub(crate) fn policy(tag_key: u64) -> Policy<'static> {
    let implemented: MethodSet = IMPLEMENTED.iter().cloned().collect();
    Policy {
        role: Role::Uas,
        implemented: Some(implemented),
        supported: SUPPORTED,
        accepted: Some(ACCEPTED),
        answer_type: Some("application/sdp"),
        accept_tel: false,
        tag_key,
    }
}

impl Core {
    pub fn new(
        settings: CoreSettings,
        config: SwitchConfig,
        trunk_addrs: HashMap<String, SocketAddr>,
    ) -> Core {
        let layer = TransactionLayer::new(LayerConfig {
            timers: settings.timers,
            max_transactions: settings.max_transactions,
            retry_after: 5,
            trying_immediately: true,
            tag_key: settings.id_seed,
        });
        let trusted = trusted_sources(&config, &trunk_addrs);
        let calls = Calls::new(
            PortPool::new(settings.rtp_ports),
            settings.media_ip,
            settings.max_calls,
        );
        Core {
            verifier: Verifier::new(settings.nonce_key, config.realm()),
            nonce_counts: NonceCounts::new(NONCE_COUNTS),
            protection: Protection::new(settings.protection.clone(), trusted),
            registrar: Registrar::new(settings.registrar.clone()),
            ids: IdGenerator::new(settings.id_seed),
            limits: Limits::default(),
            layer,
            config,
            settings,
            streams: HashMap::new(),
            out: VecDeque::new(),
            outbound: Outbound::default(),
            closes: Vec::new(),
            next_tick: None,
            calls,
            udp_socket: None,
            trunk_links: TrunkLinks::default(),
            trunk_addrs,
            stats: CoreStats::default(),
        }
    }

    /// Replaces the routing configuration (already validated) and the
    /// trunk addresses resolved for it.
    pub fn apply_config(&mut self, config: SwitchConfig, trunk_addrs: HashMap<String, SocketAddr>) {
        self.protection
            .set_trusted(trusted_sources(&config, &trunk_addrs));
        self.trunk_addrs = trunk_addrs;
        self.verifier = Verifier::new(self.settings.nonce_key, config.realm());
        tracing::info!(
            version = config.version,
            trunks = config.trunks.len(),
            users = config.users.len(),
            routes = config.routes.len(),
            "configuration applied"
        );
        self.config = config;
        self.next_tick = None;
    }

    /// The running configuration's version.
    pub fn config_version(&self) -> u64 {
        self.config.version
    }

    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// Bindings made directly, for tests of what a registered user's
    /// calls do (REGISTER itself is tested on the wire).
    #[cfg(test)]
    pub(crate) fn registrar_mut(&mut self) -> &mut Registrar {
        &mut self.registrar
    }

    pub fn protection(&self) -> &Protection {
        &self.protection
    }

    /// Tells the core which UDP socket its own requests leave from.
    pub fn set_udp_socket(&mut self, socket: SocketId) {
        self.udp_socket = Some(socket);
    }

    /// A datagram arrived.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketId,
        peer: SocketAddr,
        data: &[u8],
    ) {
        let verdict = self.screener().screen(data);
        self.handle_screened(now, socket, peer, verdict);
    }

    /// A datagram the transport thread has already parsed and screened
    /// (with [`Self::screener`]'s settings).
    pub fn handle_screened(
        &mut self,
        now: Instant,
        socket: SocketId,
        peer: SocketAddr,
        verdict: Verdict,
    ) {
        self.stats.messages_in += 1;
        if !self.admit(peer, now) {
            return;
        }
        self.screened(now, Flow::Udp { socket, peer }, verdict);
        self.drain(now);
    }

    /// What screening made of a message from `flow`: taken, answered
    /// statelessly, or dropped; counted either way.
    fn screened(&mut self, now: Instant, flow: Flow, verdict: Verdict) {
        match verdict {
            Verdict::Accept(msg) => self.accept(now, msg, flow),
            Verdict::Reply { response, problem } => {
                self.count_problem(&problem.to_string());
                self.stats.stateless_replies += 1;
                self.send_response(flow, &response);
            }
            Verdict::Drop(problem) => {
                self.count_problem(&problem.to_string());
                self.stats.dropped_invalid += 1;
            }
        }
    }

    /// What screening a datagram needs, for the transport thread.
    pub fn screener(&self) -> super::transport::Screener {
        super::transport::Screener {
            limits: self.limits,
            policy: policy(self.settings.id_seed),
        }
    }

    fn admit(&mut self, peer: SocketAddr, now: Instant) -> bool {
        match self.protection.check(peer.ip(), now) {
            protection::Verdict::Allow => true,
            _ => {
                self.stats.dropped_rate_limited += 1;
                false
            }
        }
    }

    fn count_problem(&mut self, what: &str) {
        // Reason phrases come from a closed set of problems; cap the map
        // anyway so no input can grow it without bound.
        if self.stats.problems.len() < 256 || self.stats.problems.contains_key(what) {
            *self.stats.problems.entry(what.to_owned()).or_default() += 1;
        }
    }

    /// A TCP connection was accepted or established (one we opened: what
    /// waited for it goes out).
    pub fn handle_connection(&mut self, now: Instant, conn: ConnId, peer: SocketAddr) {
        // One address may hold at most a share of the connection table
        // (an office's phones behind one NAT address each keep one);
        // trunks, and connections we opened, are not counted against it.
        let ours = self.outbound.owns(conn);
        if !ours && !self.protection.is_trusted(peer.ip()) {
            let held = self
                .streams
                .values()
                .filter(|s| s.peer.ip() == peer.ip())
                .count();
            if held >= MAX_CONNECTIONS_PER_ADDRESS {
                tracing::debug!(%peer, held, "TCP connection refused: too many from this address");
                self.stats.tcp_refused_per_address += 1;
                self.closes.push(conn);
                return;
            }
        }
        self.streams.insert(
            conn,
            Stream {
                buf: BytesMut::new(),
                peer,
                last_active: now,
                crlfs: 0,
            },
        );
        self.outbound_connected(conn);
    }

    /// Bytes arrived on a TCP connection: frame them (§18.3).
    pub fn handle_stream_data(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        let Some(s) = self.streams.get_mut(&conn) else {
            return;
        };
        s.last_active = now;
        let peer = s.peer;
        s.buf.extend_from_slice(data);
        // The size limit is one message's: a read may bring many whole
        // messages at once (a busy trunk's pipelined requests).
        loop {
            let Some(s) = self.streams.get_mut(&conn) else {
                return;
            };
            match frame_stream(&s.buf, &self.limits) {
                Ok(Frame::Complete { len }) => {
                    s.crlfs = 0;
                    let bytes = s.buf.split_to(len).freeze();
                    self.stats.messages_in += 1;
                    if !self.admit(peer, now) {
                        continue;
                    }
                    self.stream_message(now, conn, peer, bytes);
                }
                Ok(Frame::KeepAlive { len }) => {
                    let _ = s.buf.split_to(len);
                    s.crlfs += len / 2;
                }
                // What is left is one message still coming; `frame_stream`
                // refuses one past the limit (a header section that never
                // ends, a Content-Length too large), so the buffer holds at
                // most one message and one read.
                Ok(Frame::Incomplete { .. }) => break,
                Err(e) => {
                    // A framing error loses the message boundaries for
                    // good: the connection cannot be trusted any more.
                    self.count_problem(&e.to_string());
                    self.stats.framing_errors += 1;
                    self.close_stream(conn);
                    return;
                }
            }
        }
        self.answer_pings(conn);
        self.drain(now);
    }

    /// Answers the keep-alive pings a read completed with one pong, a
    /// single CRLF (RFC 5626 §4.4.1): however many pings came together,
    /// so a flood of CRLFs cannot make the switch send more than it reads.
    fn answer_pings(&mut self, conn: ConnId) {
        let Some(s) = self.streams.get_mut(&conn) else {
            return;
        };
        if s.crlfs < 2 {
            return;
        }
        s.crlfs %= 2;
        self.stats.keepalive_pongs += 1;
        let flow = Flow::Tcp { conn, peer: s.peer };
        self.out.push_back(Outgoing {
            flow,
            payload: Bytes::from_static(b"\r\n"),
        });
    }

    fn stream_message(&mut self, now: Instant, conn: ConnId, peer: SocketAddr, bytes: Bytes) {
        let policy = policy(self.settings.id_seed);
        let verdict = codeb_sip::screen_stream_message(bytes, &self.limits, &policy);
        self.screened(now, Flow::Tcp { conn, peer }, verdict);
    }

    /// A TCP connection ended (or one we were opening failed).
    pub fn handle_stream_closed(&mut self, now: Instant, conn: ConnId, why: &str) {
        self.streams.remove(&conn);
        self.outbound_closed(conn, why);
        self.drain(now);
    }

    /// `conn` is an open connection with `peer` (the peer is checked as
    /// well, in case the id now names another connection).
    pub(crate) fn stream_open(&self, conn: ConnId, peer: SocketAddr) -> bool {
        self.streams.get(&conn).is_some_and(|s| s.peer == peer)
    }

    fn close_stream(&mut self, conn: ConnId) {
        self.streams.remove(&conn);
        self.outbound_closed(conn, "closed by the switch");
        self.closes.push(conn);
    }

    /// Connections quiet for longer than the idle timeout that nothing
    /// needs: a connection a live registration came over, or one a dialog
    /// talks over, is how that phone is reached (behind NAT, the only
    /// way), so it stays open however long the phone stays silent.
    fn idle_streams(&self, now: Instant) -> Vec<ConnId> {
        let idle = self.settings.tcp_idle;
        let mut stale: Vec<ConnId> = self
            .streams
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_active) > idle)
            .map(|(c, _)| *c)
            .collect();
        if stale.is_empty() {
            return stale;
        }
        let mut needed: HashSet<ConnId> = self.registrar.connections(now).collect();
        needed.extend(
            self.calls
                .dialog_table()
                .iter()
                .filter_map(|d| match d.remote() {
                    Flow::Tcp { conn, .. } => Some(*conn),
                    Flow::Udp { .. } | Flow::TcpTo { .. } => None,
                }),
        );
        stale.retain(|c| !needed.contains(c));
        stale
    }

    /// Connections the IO loop should close.
    pub fn take_closes(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.closes)
    }

    fn accept(&mut self, now: Instant, mut msg: Message, flow: Flow) {
        if let Message::Request(req) = &mut msg {
            let ua = req
                .headers
                .get(KnownHeader::UserAgent)
                .cloned()
                .unwrap_or_default();
            if is_scanner(&ua) {
                self.stats.dropped_scanner += 1;
                return;
            }
            if stamp_received(&mut req.headers, flow.peer()).is_err() {
                self.stats.dropped_invalid += 1;
                return;
            }
        }
        // A SIP-I/SIP-T body (the SDP beside an ISUP message) is read down
        // to its SDP once, here; everything after sees `application/sdp`.
        let (headers, body) = match &mut msg {
            Message::Request(r) => (&mut r.headers, &mut r.body),
            Message::Response(r) => (&mut r.headers, &mut r.body),
        };
        if let Err(e) = multipart::unwrap_session(headers, body) {
            self.count_problem(&e.to_string());
            match &msg {
                // An ACK cannot be answered; its bad body then answers
                // nothing (the call ends as for any unusable answer).
                Message::Request(req) if req.method != Method::Ack => {
                    let problem = match e {
                        MultipartError::Required(_) => Problem::UnsupportedMediaType,
                        MultipartError::Malformed(_) => {
                            Problem::BadHeader(KnownHeader::ContentType, ValueError::Malformed)
                        }
                    };
                    let policy = policy(self.settings.id_seed);
                    if let Ok(resp) = codeb_sip::rejection(&req.headers, &problem, &policy) {
                        self.stats.stateless_replies += 1;
                        self.send_response(flow, &resp);
                    }
                    return;
                }
                _ => {}
            }
        }
        self.layer.handle_message(now, msg, flow);
    }

    /// Runs transaction and dialog output and events until every queue is
    /// empty (dialogs send ACKs and 2xx retransmissions outside any
    /// transaction).
    pub(crate) fn drain(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            for tx in self.outbound.take_failed() {
                progressed = true;
                self.layer.handle_transport_error(now, tx);
            }
            while let Some(t) = self.layer.poll_transmit() {
                progressed = true;
                self.send(t.destination, t.payload, t.transaction);
            }
            while let Some(ev) = self.layer.poll_event() {
                progressed = true;
                self.on_event(now, ev);
            }
            while let Some(t) = self.calls.dialogs_mut().poll_transmit() {
                progressed = true;
                self.queue(t.destination, t.payload);
            }
            while let Some((id, ev)) = self.calls.dialogs_mut().poll_event() {
                progressed = true;
                self.on_dialog_event(now, id, ev);
            }
            if !progressed {
                break;
            }
        }
    }

    pub(crate) fn queue(&mut self, flow: Flow, payload: Bytes) {
        self.send(flow, payload, None);
    }

    /// Queues `payload` for `flow`; `tx` is the transaction that sends it
    /// (told of a transport error if a TCP connection cannot be made).
    fn send(&mut self, flow: Flow, payload: Bytes, tx: Option<TransactionId>) {
        if is_forbidden_destination(&flow.peer()) {
            self.stats.dropped_forbidden_destination += 1;
            return;
        }
        match flow {
            Flow::TcpTo { peer } => self.send_tcp_to(peer, payload, tx),
            // A connection that has closed. To a TCP trunk's own address (a
            // response, or a request in a dialog the trunk opened over our
            // connection): a new one there. A response to a trunk (where
            // calls come from) on a connection it opened: a new one to the
            // port its Via's sent-by names, at the address the request
            // came from (RFC 3261 §18.2.2); if that fails, its transaction
            // hears of it. Anyone else's is not worth a connection.
            Flow::Tcp { conn, peer } if !self.streams.contains_key(&conn) => {
                if self.is_tcp_trunk(peer) {
                    self.send_tcp_to(peer, payload, tx);
                } else if let Some(port) =
                    response_sent_by_port(&payload).filter(|_| self.is_caller_trunk(peer))
                {
                    self.send_tcp_to(SocketAddr::new(peer.ip(), port), payload, tx);
                } else {
                    self.out.push_back(Outgoing { flow, payload });
                }
            }
            _ => self.out.push_back(Outgoing { flow, payload }),
        }
    }

    fn send_response(&mut self, flow: Flow, response: &Response) {
        let mut b = BytesMut::new();
        response.write_to(&mut b);
        self.queue(flow, b.freeze());
    }

    fn on_event(&mut self, now: Instant, ev: Event<Flow>) {
        match ev {
            Event::Request {
                id,
                request,
                source,
            } => self.on_request(now, id, request, source),
            Event::Cancel { id, invite, .. } => self.on_cancel(now, id, invite),
            Event::Ack { request, .. } => self.on_ack(now, request),
            Event::Response { id, response } if self.trunk_owns(id) => {
                self.on_trunk_response(now, id, response)
            }
            Event::Response { id, response } => self.on_response(now, id, response),
            Event::Timeout { id, .. } | Event::TransportError { id } if self.trunk_owns(id) => {
                self.on_trunk_timeout(now, id)
            }
            Event::Timeout { id, timer } => self.on_timeout(now, id, timer),
            Event::TransportError { id } => self.on_transport_error(now, id),
            Event::CancelSent { .. } => {}
            Event::Terminated { id } if self.trunk_owns(id) => self.on_trunk_terminated(id),
            Event::Terminated { id } => self.on_terminated(now, id),
        }
    }

    /// Answers a server transaction, counting the final status.
    pub(crate) fn respond(&mut self, now: Instant, id: TransactionId, response: Response) {
        if response.status.is_final() {
            let method = self
                .layer
                .request(id)
                .map(|r| r.method.to_string())
                .unwrap_or_default();
            *self
                .stats
                .responses
                .entry((method, response.status.as_u16()))
                .or_default() += 1;
        }
        if let Err(e) = self.layer.respond(now, id, response) {
            tracing::debug!(error = %e, "response for a transaction that is gone");
        }
    }

    /// A reply to `request` with our Server header, ready for extra headers.
    pub(crate) fn reply(
        &mut self,
        request: &Request,
        status: StatusCode,
    ) -> codeb_sip::ResponseBuilder {
        let tag = if request
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(<[u8]>::to_vec))
            .is_some()
        {
            None
        } else {
            Some(self.ids.tag())
        };
        request
            .reply(status, tag.as_deref())
            .header(KnownHeader::Server, SERVER)
    }

    pub(crate) fn simple(
        &mut self,
        now: Instant,
        id: TransactionId,
        request: &Request,
        status: StatusCode,
    ) {
        if let Ok(r) = self.reply(request, status).build() {
            self.respond(now, id, r);
        }
    }

    /// 200 to OPTIONS, with what the switch takes.
    pub(crate) fn capabilities(&mut self, now: Instant, id: TransactionId, request: &Request) {
        let r = self
            .reply(request, StatusCode::OK)
            .header(KnownHeader::Allow, ALLOW)
            .header(KnownHeader::Accept, "application/sdp")
            .header(KnownHeader::Supported, SUPPORTED.join(", "))
            .build();
        if let Ok(r) = r {
            self.respond(now, id, r);
        }
    }

    fn on_request(&mut self, now: Instant, id: TransactionId, request: Request, source: Flow) {
        match request.method {
            // An OPTIONS with a To-tag asks about a dialog (peers ping
            // their calls so; RFC 3261 §11): it goes through the dialog's
            // checks and a call that is gone answers 481.
            Method::Options if request.headers.to().ok().is_some_and(|t| t.tag().is_some()) => {
                self.on_in_dialog(now, id, request, source)
            }
            Method::Options => self.capabilities(now, id, &request),
            Method::Register => self.on_register(now, id, &request, source),
            Method::Invite => self.on_invite(now, id, request, source),
            Method::Bye | Method::Info | Method::Update | Method::Refer | Method::Prack => {
                self.on_in_dialog(now, id, request, source)
            }
            _ => {
                let r = self
                    .reply(&request, StatusCode::METHOD_NOT_ALLOWED)
                    .header(KnownHeader::Allow, ALLOW)
                    .build();
                if let Ok(r) = r {
                    self.respond(now, id, r);
                }
            }
        }
    }

    fn on_register(&mut self, now: Instant, id: TransactionId, request: &Request, source: Flow) {
        let h = &request.headers;
        let user = h.to().ok().and_then(|t| {
            t.uri.as_sip().and_then(|u| {
                u.user_unescaped()
                    .map(|u| String::from_utf8_lossy(&u).into_owned())
            })
        });
        let Some(user) = user else {
            return self.simple(now, id, request, StatusCode::BAD_REQUEST);
        };
        // A user we do not have (or who may not register) is challenged
        // and refused like a wrong password: 404 would tell a scanner
        // (SIPVicious `svwar`) which names exist.
        let password = self
            .config
            .users
            .iter()
            .find(|u| u.name == user)
            .and_then(|u| u.password.clone());
        let (base, base_secs) = self.settings.wall_base;
        let now_secs = base_secs + now.saturating_duration_since(base).as_secs();
        let creds = h
            .authorizations()
            .unwrap_or_default()
            .into_iter()
            .find(|a| {
                a.is_digest() && a.realm().as_deref() == Some(self.verifier.realm().as_bytes())
            });
        let stale = match &creds {
            None => false,
            Some(c) => {
                if c.username().as_deref() != Some(user.as_bytes()) {
                    return self.simple(now, id, request, StatusCode::FORBIDDEN);
                }
                // An unknown user's credentials are checked too (against
                // no password), so that a stale nonce is answered alike.
                let secret = password.as_deref().unwrap_or_default();
                match self.verifier.check(c, "REGISTER", secret, now_secs) {
                    Check::Ok if password.is_none() => {
                        return self.simple(now, id, request, StatusCode::FORBIDDEN);
                    }
                    Check::Ok if self.nonce_counts.fresh(c, &self.verifier, now_secs) => {
                        return self.finish_register(now, id, request, &user, source);
                    }
                    // The same credentials again (captured and replayed,
                    // or a client that did not count): a new nonce.
                    Check::Ok => {
                        self.stats.digest_replays += 1;
                        true
                    }
                    Check::Stale => true,
                    Check::Bad => return self.simple(now, id, request, StatusCode::FORBIDDEN),
                }
            }
        };
        let nonce = self
            .verifier
            .nonce(now_secs, self.ids.next_u64().to_be_bytes());
        let mut b = self.reply(request, StatusCode::UNAUTHORIZED);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            b = b.header(
                KnownHeader::WwwAuthenticate,
                self.verifier.challenge(&nonce, alg, stale),
            );
        }
        if let Ok(r) = b.build() {
            self.respond(now, id, r);
        }
    }

    fn finish_register(
        &mut self,
        now: Instant,
        id: TransactionId,
        request: &Request,
        user: &str,
        source: Flow,
    ) {
        let h = &request.headers;
        let (Ok(contacts), Ok(cseq), Ok(call_id)) = (h.contacts(), h.cseq(), h.call_id()) else {
            return self.simple(now, id, request, StatusCode::BAD_REQUEST);
        };
        if contacts.is_empty() {
            // A query: list the bindings.
            let bindings: Vec<_> = self
                .registrar
                .lookup(user, now)
                .into_iter()
                .cloned()
                .collect();
            return self.register_ok(now, id, request, &bindings);
        }
        let reg = Registration {
            user,
            contacts: &contacts,
            header_expires: h.expires().ok().flatten(),
            call_id: &call_id,
            cseq: cseq.seq,
            source: source.peer(),
            conn: match source {
                Flow::Tcp { conn, .. } => Some(conn),
                Flow::Udp { .. } | Flow::TcpTo { .. } => None,
            },
        };
        match self.registrar.register(&reg, now) {
            Ok(bindings) => {
                tracing::info!(user, contacts = bindings.len(), "registered");
                self.register_ok(now, id, request, &bindings);
            }
            Err(RegisterError::IntervalTooBrief { min }) => {
                if let Ok(r) = self
                    .reply(request, StatusCode::INTERVAL_TOO_BRIEF)
                    .header(KnownHeader::MinExpires, min.to_string())
                    .build()
                {
                    self.respond(now, id, r);
                }
            }
            Err(RegisterError::BadStar) => self.simple(now, id, request, StatusCode::BAD_REQUEST),
            Err(RegisterError::OutOfOrder) => {
                self.simple(now, id, request, StatusCode::SERVER_INTERNAL_ERROR)
            }
            Err(RegisterError::Full) => {
                if let Ok(r) = self
                    .reply(request, StatusCode::SERVICE_UNAVAILABLE)
                    .header(HeaderName::from(KnownHeader::RetryAfter), "30")
                    .build()
                {
                    self.respond(now, id, r);
                }
            }
        }
    }

    fn register_ok(
        &mut self,
        now: Instant,
        id: TransactionId,
        request: &Request,
        bindings: &[crate::registrar::Binding],
    ) {
        let mut b = self.reply(request, StatusCode::OK);
        for bind in bindings {
            let left = bind.expires_at.saturating_duration_since(now).as_secs();
            b = b.header(
                KnownHeader::Contact,
                format!("<{}>{};expires={left}", bind.uri, bind.params),
            );
        }
        if let Ok(r) = b.build() {
            self.respond(now, id, r);
        }
    }

    /// The next moment `handle_timeout` has work.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.layer.poll_timeout(),
            self.next_tick,
            self.calls.dialogs_mut().poll_timeout(),
            self.placed_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        self.calls.dialogs_mut().handle_timeout(now);
        self.media_events(now);
        self.placed_deadlines(now);
        if self.next_tick.is_none_or(|t| t <= now) {
            self.next_tick = Some(now + TICK);
            self.registrar.purge(now);
            self.sync_trunks(now);
            self.trunks_tick(now);
            for c in self.idle_streams(now) {
                self.close_stream(c);
            }
            for c in self.overdue_connects(now) {
                self.outbound_closed(c, "not connected within the connect timeout");
                self.closes.push(c);
            }
        }
        self.drain(now);
    }

    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    pub fn transactions(&self) -> usize {
        self.layer.len()
    }

    pub fn layer_stats(&self) -> codeb_sip::transaction::Stats {
        self.layer.stats()
    }
}
