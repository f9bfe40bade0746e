//! The B2BUA: a call is an A-leg (the dialog with whoever sent the INVITE)
//! and a B-leg (the dialog we open towards the routed user or trunk), each
//! a [`codeb_sip::Dialog`] of its own (A as UAS, B as UAC) in one
//! [`DialogTable`]. The dialog layer owns what RFC 3261 and RFC 4028 say
//! about a dialog: CSeq order (500), glare (491), 2xx retransmission until
//! the ACK and its timeout, the ACK for B's 2xx, in-dialog request
//! construction and session timers. This module owns what a call is.
//!
//! Topology hiding is structural: the B-leg INVITE is built from scratch
//! (our Via, our Contact, a new Call-ID; only the caller's number and
//! display name are carried over), so no A-leg header, internal or not, in
//! whatever spelling, reaches B. SDP is always answered and offered with
//! the switch's own media address and ports (RFC 3264), never passed
//! through.
//!
//! Incoming calls fork in parallel to every contact of the routed user;
//! the first 2xx wins, the other branches are cancelled, and a 2xx from a
//! losing fork is ACKed and hung up. The switch answers in-dialog
//! re-INVITE and UPDATE itself (its media address does not change), relays
//! INFO (DTMF) and BYE to the other leg, turns a CANCEL from A into
//! CANCELs towards B, and hangs up both legs when a session timer expires
//! or an ACK never comes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use codeb_io::ConnId;
use codeb_sip::dialog::{DialogConfig, DialogError, Local};
use codeb_sip::header::{KnownHeader, MediaType, NameAddr, Transport, Via};
use codeb_sip::sdp::{Codec, LocalMedia, Negotiated};
use codeb_sip::transaction::{TransactionError, TransactionId};
use codeb_sip::{DialogId, DialogTable, Host, Request, StatusCode, Uri, ValueError};

use super::core::Core;
use super::flow::Flow;

mod ai;
mod answer;
mod attended;
mod branches;
mod in_dialog;
mod inbound;
mod media;
mod originate;
mod redirect;
mod refer;
mod replacing;
mod session;
mod targets;
#[cfg(test)]
mod tests;
mod transfer;
mod vnum;

use crate::ports::PortPool;
pub use originate::{
    CallEvent, CallEventKind, DEFAULT_MAX_SECONDS, DEFAULT_RING_SECONDS, Originate, OriginateError,
    Placed, UnknownCall,
};
pub use transfer::{TRANSFER_RING, TRANSFERRED, TransferError, TransferTarget};

/// A call's handle in the table.
pub type CallKey = u64;

/// Which side of a call a dialog is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// The media engine's name for this side's leg.
    fn media(self) -> crate::media::LegSide {
        match self {
            Side::A => crate::media::LegSide::A,
            Side::B => crate::media::LegSide::B,
        }
    }
}

/// One side of a call: its dialog (state in the [`DialogTable`]) and our
/// media on it.
#[derive(Debug, Clone)]
pub struct Leg {
    /// A: from the INVITE on; B: once a branch answered. `None` once the
    /// dialog has ended.
    dialog: Option<DialogId>,
    /// Our media on this leg: port, codecs, and the o= line's session id
    /// and version.
    media: LocalMedia,
    /// The description we last sent on this leg; a refresh re-INVITE
    /// repeats it unchanged (same o= version, RFC 3264 §8).
    sdp: Bytes,
    negotiated: Option<Negotiated>,
    /// The peer lists UPDATE in its Allow: refreshes use it, without a body
    /// (RFC 4028 §9 recommends no offer in a refreshing UPDATE).
    update: bool,
    /// A: our provisional responses go reliably (RFC 3262): its INVITE
    /// requires `100rel`, or a virtual number needs the answer to its
    /// late offer before the 2xx.
    reliable: bool,
    /// A: its INVITE had no offer and ours went in a reliable provisional
    /// response, so A's PRACK carries the answer (RFC 3262 §5).
    offer_in_1xx: bool,
    /// The peer's last re-INVITE had no offer and our 2xx made one: its
    /// ACK carries the answer (RFC 3261 §14.2, RFC 3264 §8).
    offer_in_2xx: bool,
}

impl Leg {
    fn new(media: LocalMedia) -> Leg {
        Leg {
            dialog: None,
            media,
            sdp: Bytes::new(),
            negotiated: None,
            update: false,
            reliable: false,
            offer_in_1xx: false,
            offer_in_2xx: false,
        }
    }
}

/// A B-leg attempt towards one contact.
#[derive(Debug)]
struct Branch {
    tx: TransactionId,
    /// The INVITE as last sent (retries change CSeq, Via and headers).
    invite: Request,
    flow: Flow,
    failed: Option<StatusCode>,
    /// This branch's 2xx made the call's B-leg.
    won: bool,
    /// This branch's 2xx came after the call had another B-leg or had
    /// given up (a 2xx crossing our CANCEL): ACKed and hung up, it waits
    /// for nothing more than that BYE.
    dropped: bool,
    /// Set when the branch goes out through a trunk (whose digest
    /// challenges we answer, once).
    trunk: Option<String>,
    auth_tried: bool,
    /// A 422 was answered with the interval it asked for (once).
    interval_raised: bool,
}

/// The From of a B-leg INVITE.
#[derive(Debug, Clone)]
pub(super) struct Identity {
    user: String,
    host: String,
    display: Option<String>,
}

/// Where a B-leg attempt goes.
#[derive(Debug, Clone)]
struct Target {
    uri: Uri,
    addr: SocketAddr,
    /// Through this trunk (outbound) rather than to a user's contact.
    trunk: Option<String>,
    /// Over TCP (a trunk configured for it, or a contact with
    /// `transport=tcp`), else UDP.
    tcp: bool,
    /// The connection a TCP contact registered over (and its peer): used
    /// while it is open, before a new connection to `addr`.
    conn: Option<(ConnId, SocketAddr)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A's INVITE is pending; branches are ringing.
    Routing,
    /// B answered; A has our 2xx and we wait for A's ACK.
    Answered,
    Confirmed,
    /// BYEs (or CANCELs) are out; the call ends when they are answered or
    /// time out.
    Ending,
}

/// What a request we sent in one of a call's dialogs is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Bye,
    Info,
    /// A session refresh (RFC 4028): re-INVITE or UPDATE.
    Refresh,
    /// A NOTIFY of a REFER's implicit subscription (RFC 3515).
    Notify,
    /// The re-INVITE that joins this call's far party to the referrer's
    /// call (an attended transfer, see `attended.rs`).
    Join,
}

#[derive(Debug)]
pub struct Call {
    key: CallKey,
    phase: Phase,
    /// A's INVITE while it awaits our final response.
    a_invite_tx: Option<TransactionId>,
    /// A's INVITE transaction, for the call's life (`a_invite_tx` goes
    /// as our final response is sent; a transport error of that response
    /// still has to be known as A's). None for a call the switch placed.
    a_invite_id: Option<TransactionId>,
    /// A's INVITE; for a call the switch placed (no A side), our INVITE.
    a_invite: Request,
    a: Leg,
    b: Leg,
    branches: Vec<Branch>,
    /// Requests we sent in the call's dialogs, awaiting a final response.
    sent: Vec<(TransactionId, Side, Sent)>,
    /// The dialogs our BYEs among them ended: a BYE of the peer's in one
    /// crosses ours and is answered 200 (their owner entries stay until
    /// ours is answered).
    byes: Vec<(TransactionId, DialogId)>,
    /// A BYE for A that waits for A's ACK of our 2xx (§15: the callee
    /// may not send BYE before it).
    bye_a_when_acked: bool,
    /// An early-media provisional for A (its status) that waits for A's
    /// PRACK of the previous reliable one (RFC 3262 §3): sent once it
    /// comes, so A hears B's announcements. A ringing one is not held.
    a_held_1xx: Option<StatusCode>,
    /// Trunks this call counts against (inbound and, if forwarded, outbound).
    trunks: Vec<String>,
    started: Instant,
    answered_at: Option<Instant>,
    /// Set when the switch placed the call itself (PlaceCall).
    origin: Option<Box<originate::Origin>>,
    /// The call's RTP ports and its relay on the media engine.
    media: media::CallMedia,
    /// The legs' codecs (A, B) while they differ and are bridged through
    /// a transcoding pipeline.
    bridged: Option<(Codec, Codec)>,
    /// What the AI tap decodes and encodes (codec, payload type,
    /// telephone-event type), so a re-INVITE that changes it re-taps.
    tapped: Option<(Codec, u8, Option<u8>)>,
    /// A transfer of the AI's party, while its target rings.
    transfer: Option<Box<transfer::Transfer>>,
    /// The AI handed its party over: the call is a bridge of two SIP legs.
    transferred: bool,
    /// A REFER of one party, from its 202 until the referrer has its
    /// final NOTIFY (and, on success, our BYE).
    referral: Option<Box<refer::Referral>>,
    /// This call's far party is being re-invited into another call (an
    /// attended transfer whose Replaces named this call's other dialog).
    joining: Option<attended::Joining>,
}

impl Call {
    fn leg(&self, side: Side) -> &Leg {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    fn leg_mut(&mut self, side: Side) -> &mut Leg {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }
}

/// An INVITE's Call-ID, From tag and CSeq number.
type RequestKey = (Bytes, Bytes, u32);

fn request_key(req: &Request) -> Option<RequestKey> {
    let h = &req.headers;
    let from = h.from().ok()?;
    let tag = Bytes::copy_from_slice(from.tag()?);
    Some((h.call_id().ok()?, tag, h.cseq().ok()?.seq))
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
    /// Boxed: a call is about 1 KB, and the map moves its entries whenever
    /// it grows or rehashes away the tombstones of ended calls.
    calls: HashMap<CallKey, Box<Call>>,
    /// The switch is shutting down: no new calls, the ones up are ended.
    draining: bool,
    /// The event journal is full (the control plane has not acknowledged
    /// its events): calls that would journal events are refused.
    journal_full: bool,
    by_tx: HashMap<TransactionId, CallKey>,
    /// Every leg's dialog...
    dialogs: DialogTable<Flow>,
    /// ...and the call it belongs to (the table carries no user data).
    owners: HashMap<DialogId, (CallKey, Side)>,
    next_key: CallKey,
    media: media::MediaPorts,
    /// Calls by their media on the engine (for its events).
    by_media: HashMap<crate::media::MediaHandle, CallKey>,
    /// Calls in progress by their A-leg INVITE's Call-ID, From tag and
    /// CSeq: another INVITE with all three and a new branch is a fork of it
    /// merging back (RFC 3261 §8.2.2.2), refused with 482 rather than
    /// answered as a second call.
    by_a_request: HashMap<RequestKey, CallKey>,
    trunks: HashMap<String, TrunkLoad>,
    media_ip: IpAddr,
    max_calls: usize,
    placed: originate::Placements,
    /// Record every answered call (`CODEB_RECORD=all`).
    record_all: bool,
    /// An AI tap's caller audio in a long silence goes to the engine in
    /// batches of this many ms (`CODEB_AI_QUIET_BATCH_MS`).
    ai_quiet_batch_ms: u32,
    /// How long a virtual number's caller rings while its AI session
    /// starts (the engine's connect timeout and a margin).
    ai_ready_timeout: std::time::Duration,
    pub completed: u64,
    pub failed: u64,
}

impl Calls {
    pub fn new(ports: PortPool, media_ip: IpAddr, max_calls: usize) -> Calls {
        Calls {
            calls: HashMap::new(),
            draining: false,
            journal_full: false,
            by_tx: HashMap::new(),
            dialogs: DialogTable::new(dialog_capacity(max_calls)),
            owners: HashMap::new(),
            next_key: 1,
            media: media::MediaPorts::Pool(ports),
            by_media: HashMap::new(),
            by_a_request: HashMap::new(),
            trunks: HashMap::new(),
            media_ip,
            max_calls,
            placed: originate::Placements::default(),
            record_all: false,
            ai_quiet_batch_ms: crate::ai::QUIET_BATCH_MS,
            ai_ready_timeout: vnum::AI_READY_TIMEOUT,
            completed: 0,
            failed: 0,
        }
    }

    pub fn active(&self) -> usize {
        self.calls.len()
    }

    /// Calls in progress by phase, named as the metrics name them.
    pub fn by_phase(&self) -> [(&'static str, usize); 4] {
        let mut n = [0usize; 4];
        for call in self.calls.values() {
            n[call.phase as usize] += 1;
        }
        [
            ("routing", n[Phase::Routing as usize]),
            ("answered", n[Phase::Answered as usize]),
            ("confirmed", n[Phase::Confirmed as usize]),
            ("ending", n[Phase::Ending as usize]),
        ]
    }

    pub fn dialogs(&self) -> usize {
        self.dialogs.len()
    }

    pub(crate) fn dialog_table(&self) -> &DialogTable<Flow> {
        &self.dialogs
    }

    pub(crate) fn dialogs_mut(&mut self) -> &mut DialogTable<Flow> {
        &mut self.dialogs
    }

    pub fn max_calls(&self) -> usize {
        self.max_calls
    }

    fn dialog_capacity(&self) -> usize {
        dialog_capacity(self.max_calls)
    }

    pub fn ports_in_use(&self) -> usize {
        self.media.in_use()
    }
}

/// How many dialogs the calls may hold: two legs per call, and a third
/// while a REFER's target has answered and the referrer awaits our BYE (a
/// losing fork's dialog never enters).
fn dialog_capacity(max_calls: usize) -> usize {
    max_calls.saturating_mul(3).max(3)
}

/// Why a request could not be started in a leg's dialog.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LegError {
    /// The call, or the dialog on that side, does not exist (any more).
    #[error("no dialog on that side of the call")]
    NoDialog,
    /// The dialog refused (state, pending offer, ...).
    #[error(transparent)]
    Dialog(#[from] DialogError),
    #[error("request could not be built: {0}")]
    Build(#[from] ValueError),
    #[error(transparent)]
    Transaction(#[from] TransactionError),
}

fn sdp_type() -> MediaType {
    #[allow(clippy::expect_used)]
    MediaType::from_bytes(Bytes::from_static(b"application/sdp")).expect("a valid media type")
}

const CODECS: &[Codec] = &Codec::ALL;

/// Our codecs with `first` (the other leg's) in front, so that both legs
/// can agree and be relayed without transcoding.
fn preferring(first: Option<Codec>) -> Vec<Codec> {
    let mut codecs: Vec<Codec> = first.into_iter().collect();
    codecs.extend(CODECS.iter().copied().filter(|c| Some(*c) != first));
    codecs
}

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
        Host::V4(a) => IpAddr::V4(*a),
        Host::V6(a) => IpAddr::V6(*a),
        Host::Domain(_) => return None,
    };
    Some(SocketAddr::new(ip, sip.port.unwrap_or(5060)))
}

/// Which failure to relay when every fork failed (§16.7 step 6, simplified):
/// 6xx first, then busy, then the rest by code; one the caller would get
/// as it is before one it would not (a challenge or redirect meant for the
/// switch, which the caller hears as 480), so 401 + 404 is a 404.
fn failure_rank(s: StatusCode) -> u32 {
    let rank = match s.as_u16() {
        600..=699 => 0,
        486 => 1,
        c => 10 + u32::from(c),
    };
    if redirect::relayed_failure(s) == s {
        rank
    } else {
        rank + 1_000
    }
}

impl Core {
    pub fn dialogs(&self) -> usize {
        self.calls.dialogs()
    }

    /// Dialogs known as a call's (tests: none outlives its call).
    #[cfg(test)]
    pub(crate) fn dialog_owners(&self) -> usize {
        self.calls.owners.len()
    }

    pub fn active_calls(&self) -> usize {
        self.calls.active()
    }

    /// Calls in progress by phase: `routing` (the caller's INVITE is
    /// pending), `answered` (waiting for the caller's ACK of our 2xx),
    /// `confirmed`, `ending` (BYEs or CANCELs out, waiting for answers).
    pub fn calls_by_phase(&self) -> [(&'static str, usize); 4] {
        self.calls.by_phase()
    }

    pub(crate) fn our_host(&self) -> String {
        match self.settings.sip_addr {
            SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        }
    }

    /// Our Contact in what goes over `flow`: with `transport=tcp` over
    /// TCP, so the peer's requests come back over TCP (RFC 3261 §19.1.1).
    pub(crate) fn our_contact(&self, flow: &Flow) -> Option<NameAddr> {
        let transport = match flow {
            Flow::Udp { .. } => "",
            Flow::Tcp { .. } | Flow::TcpTo { .. } => ";transport=tcp",
        };
        NameAddr::from_bytes(format!("<sip:codeb@{}{transport}>", self.our_host())).ok()
    }

    /// The Via of a request that starts something (a B-leg INVITE, a
    /// trunk's OPTIONS or REGISTER): its branch carries our `cb` mark, which
    /// [`Self::is_loop`] looks for.
    pub(crate) fn our_via(&mut self, transport: &'static str) -> Option<Via> {
        let branch = format!("z9hG4bKcb{:016x}", self.ids.next_u64());
        Via::from_bytes(format!(
            "SIP/2.0/{transport} {};branch={branch};rport",
            self.our_host()
        ))
        .ok()
    }

    /// Our request loop check: a Via of ours (our host and branch prefix)
    /// in a request we receive means it came back to us (§16.3 step 4).
    /// Compares the parsed sent-by with our address, without rendering
    /// every Via of every INVITE to text.
    /// Whether `req` (a dialog-creating INVITE) is a merged copy of the
    /// A-leg INVITE of a call in progress: the same Call-ID, From tag and
    /// CSeq through another branch (a retransmission, on the same branch,
    /// never gets here: its transaction absorbs it).
    pub(super) fn is_merged(&self, req: &Request) -> bool {
        request_key(req).is_some_and(|k| self.calls.by_a_request.contains_key(&k))
    }

    /// An INVITE that already went through us (a Via of ours: our
    /// address and branch prefix). A B2BUA cannot tell a loop from a
    /// spiral (a carrier forwarding our call to another of our numbers)
    /// by comparing it with the INVITE just before, whose URI the carrier
    /// rewrote: both are refused (482).
    pub(super) fn is_loop(&self, req: &Request) -> bool {
        let ours = self.settings.sip_addr;
        let our_host = match ours.ip() {
            IpAddr::V4(a) => Host::V4(a),
            IpAddr::V6(a) => Host::V6(a),
        };
        req.headers.vias().unwrap_or_default().iter().any(|v| {
            v.port == Some(ours.port())
                && v.host == our_host
                && v.branch
                    .as_deref()
                    .is_some_and(|b| b.starts_with(b"z9hG4bKcb"))
        })
    }

    pub(super) fn reject(
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

    /// How we appear in a dialog reached over `flow`.
    pub(super) fn dialog_local(&self, flow: &Flow) -> Option<Local> {
        let addr = self.settings.sip_addr;
        Some(Local {
            transport: match flow {
                Flow::Udp { .. } => Transport::Udp,
                Flow::Tcp { .. } | Flow::TcpTo { .. } => Transport::Tcp,
            },
            host: match addr.ip() {
                IpAddr::V4(a) => Host::V4(a),
                IpAddr::V6(a) => Host::V6(a),
            },
            port: Some(addr.port()),
            contact: self.our_contact(flow)?,
        })
    }

    /// A leg's dialog settings. B-leg ACKs are ours to send: the first one
    /// carries the INVITE's credentials (see `answer.rs`).
    pub(super) fn dialog_config(&self, side: Side) -> DialogConfig {
        DialogConfig {
            timers: self.settings.timers,
            session_timer: self.settings.session_timer,
            auto_ack: side == Side::A,
            max_forwards: 70,
        }
    }

    /// Starts `method` in one leg's dialog, lets `edit` add to it, and sends
    /// it to the leg's peer. A request that cannot go out after the dialog
    /// counted it fails the dialog (its CSeq and pending state would lie).
    fn send_in_dialog(
        &mut self,
        now: Instant,
        key: CallKey,
        side: Side,
        method: codeb_sip::Method,
        kind: Sent,
        edit: impl FnOnce(codeb_sip::RequestBuilder) -> codeb_sip::RequestBuilder,
    ) -> Result<TransactionId, LegError> {
        let id = self
            .calls
            .calls
            .get(&key)
            .and_then(|c| c.leg(side).dialog.clone())
            .ok_or(LegError::NoDialog)?;
        self.send_in_dialog_id(now, key, side, &id, method, kind, edit)
    }

    /// A dialog whose peer we reached over a TCP connection that has
    /// closed since (not a trunk's: `send` reopens those): requests go
    /// over a new connection to the port its Contact names, at the address
    /// the old connection came from (RFC 3261 §18.1.1; the Contact's own
    /// host may be a private address behind NAT), and the dialog follows.
    fn reconnect_if_closed(&mut self, id: &DialogId) {
        let Some((Flow::Tcp { conn, peer }, port)) = self
            .calls
            .dialogs
            .get(id)
            .map(|d| (*d.remote(), d.remote_target().as_sip().and_then(|u| u.port)))
        else {
            return;
        };
        if self.stream_open(conn, peer) || self.is_tcp_trunk(peer) {
            return;
        }
        let to = Flow::TcpTo {
            peer: SocketAddr::new(peer.ip(), port.unwrap_or(5060)),
        };
        self.calls.dialogs.update(id, |d| d.set_remote(to));
    }

    /// Where a dialog's requests go over UDP, when not back along the flow
    /// its first message came by (RFC 3261 §12.2.1.1, §8.1.2): the first
    /// Record-Route, else the far end's Contact. Followed when a proxy
    /// record-routed the dialog, or the far end is a trunk (a carrier's
    /// gateway may answer from one address and want requests at another),
    /// and only within the same address scope as the flow: a phone or PBX
    /// behind NAT names a private address it cannot be reached at, so its
    /// requests keep going where its packets came from. A name that is not
    /// a trunk's host is not resolved here; the flow is kept.
    pub(super) fn dialog_next_hop(&self, d: &codeb_sip::Dialog<Flow>) -> Option<Flow> {
        let Flow::Udp { socket, peer } = *d.remote() else {
            return None;
        };
        let routed = !d.route_set().is_empty();
        if !routed && !self.is_trunk_peer(peer.ip()) {
            return None;
        }
        let hop = d.next_hop();
        let uri = hop.as_sip()?;
        if uri.scheme != codeb_sip::SipScheme::Sip
            || uri
                .params
                .value("transport")
                .is_some_and(|t| !t.eq_ignore_ascii_case(b"udp"))
        {
            return None;
        }
        let port = uri.port.unwrap_or(5060);
        let to = match &uri.host {
            Host::V4(ip) => SocketAddr::new(IpAddr::V4(*ip), port),
            Host::V6(ip) => SocketAddr::new(IpAddr::V6(*ip), port),
            Host::Domain(name) => {
                let t = self
                    .config
                    .trunks
                    .iter()
                    .find(|t| t.host.as_bytes().eq_ignore_ascii_case(name))?;
                let a = self.trunk_addrs.get(&t.id)?;
                SocketAddr::new(a.ip(), uri.port.unwrap_or(a.port()))
            }
        };
        (to != peer && address_scope(to.ip()) == address_scope(peer.ip()))
            .then_some(Flow::Udp { socket, peer: to })
    }

    /// `ip` is a trunk's signalling address (a trunk's inbound networks
    /// may hold phones too).
    fn is_trunk_peer(&self, ip: IpAddr) -> bool {
        self.trunk_addrs.values().any(|a| a.ip() == ip)
    }

    /// Whether calls from `peer` are taken: it is a trunk's, by the rules
    /// INVITEs are admitted by.
    pub(crate) fn is_caller_trunk(&self, peer: SocketAddr) -> bool {
        inbound::inbound_trunk(&self.config.trunks, &self.trunk_addrs, peer).is_some()
    }

    /// [`Self::send_in_dialog`] in a given dialog of the call's `side`
    /// (a referrer's, which is no longer the leg's once its transfer
    /// answered).
    #[allow(clippy::too_many_arguments)]
    fn send_in_dialog_id(
        &mut self,
        now: Instant,
        key: CallKey,
        side: Side,
        id: &DialogId,
        method: codeb_sip::Method,
        kind: Sent,
        edit: impl FnOnce(codeb_sip::RequestBuilder) -> codeb_sip::RequestBuilder,
    ) -> Result<TransactionId, LegError> {
        let id = id.clone();
        // Before the request: a BYE ends the dialog, which then leaves the
        // table.
        self.reconnect_if_closed(&id);
        let hop = self
            .calls
            .dialogs
            .get(&id)
            .and_then(|d| self.dialog_next_hop(d));
        let (builder, flow) = self
            .calls
            .dialogs
            .update(&id, |d| {
                d.request(method).map(|b| (b, hop.unwrap_or(*d.remote())))
            })
            .ok_or(LegError::NoDialog)??;
        let sent = edit(builder)
            .build()
            .map_err(LegError::from)
            .and_then(|req| {
                self.calls.dialogs.update(&id, |d| d.request_sent(&req));
                Ok(self.layer.send_request(now, req, flow)?)
            });
        match sent {
            Ok(tx) => {
                self.calls.by_tx.insert(tx, key);
                if let Some(call) = self.calls.calls.get_mut(&key) {
                    call.sent.push((tx, side, kind));
                    if kind == Sent::Bye {
                        call.byes.push((tx, id));
                    }
                }
                Ok(tx)
            }
            Err(e) => {
                self.calls.dialogs.update(&id, |d| d.request_failed(now));
                Err(e)
            }
        }
    }
}

/// Loopback, private (RFC 1918, CGNAT, link-local, unique local) or
/// public: a far end's Contact in another scope than the address its
/// packets come from is behind NAT, or not for us to reach.
fn address_scope(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => 0,
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let cgnat = a == 100 && (64..128).contains(&b);
            if v4.is_private() || v4.is_link_local() || cgnat {
                1
            } else {
                2
            }
        }
        IpAddr::V6(v6) if v6.is_loopback() => 0,
        IpAddr::V6(v6) => {
            if v6.is_unique_local() || v6.is_unicast_link_local() {
                1
            } else if let Some(v4) = v6.to_ipv4_mapped() {
                address_scope(IpAddr::V4(v4))
            } else {
                2
            }
        }
    }
}
