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
use codeb_sip::sdp::{Codec, Direction, LocalMedia, Negotiated};
use codeb_sip::transaction::TransactionId;
use codeb_sip::{Request, StatusCode, Uri};

use super::core::Core;
use super::flow::Flow;

mod answer;
mod dialog;
mod inbound;
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
    /// Set when the branch goes out through a trunk (whose digest
    /// challenges we answer, once).
    trunk: Option<String>,
    auth_tried: bool,
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
    /// Trunks this call counts against (inbound and, if forwarded, outbound).
    trunks: Vec<String>,
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

    pub(crate) fn our_host(&self) -> String {
        match self.settings.sip_addr {
            SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        }
    }

    pub(crate) fn our_contact(&self) -> Option<NameAddr> {
        NameAddr::from_bytes(format!("<sip:codeb@{}>", self.our_host())).ok()
    }

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
    pub(super) fn is_loop(&self, req: &Request) -> bool {
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

    pub(super) fn queue_raw(&mut self, flow: Flow, payload: Bytes) {
        self.raw_out.push((flow, payload));
    }

    pub(super) fn dialog_of(&self, req: &Request) -> Option<(CallKey, Side)> {
        let call_id = req.headers.call_id().ok()?;
        let to = req.headers.to().ok()?;
        let tag = Bytes::copy_from_slice(to.tag()?);
        self.calls.by_dialog.get(&(call_id, tag)).copied()
    }

    pub(super) fn store_leg(&mut self, key: CallKey, side: Side, leg: Leg) {
        if let Some(call) = self.calls.calls.get_mut(&key) {
            match side {
                Side::A => call.a = leg,
                Side::B => call.b = Some(leg),
            }
        }
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
