//! The B2BUA in-process: a [`Core`] between scripted peers — A, a trunk
//! calling in from 192.0.2.10, and B, the routed user's phone at
//! 192.0.2.20 — with time stepped by hand, so half an hour of session
//! timer takes microseconds. The peers' own dialogs are `codeb_sip`
//! dialogs, so they build ACKs and in-dialog requests the standard way.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod attended;
mod forking;
mod originate;
mod prack;
mod redirect;
mod refer;
mod replacing;
mod rules;
mod tcp_trunk;
mod tcp_user;
mod timers;
mod transfer;
mod vnum;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_io::SocketId;
use codeb_sip::dialog::{DialogConfig, Local, SessionTimerConfig};
use codeb_sip::header::{KnownHeader, NameAddr, Transport, Via};
use codeb_sip::transaction::{IdGenerator, Peer, Timers};
use codeb_sip::{
    Dialog, Host, Limits, Message, Method, Request, RequestBuilder, Response, StatusCode, Uri,
    parse_datagram,
};

use crate::config::SwitchConfig;
use crate::ports::PortRange;
use crate::protection;
use crate::registrar::RegistrarLimits;
use crate::sip::{Core, CoreSettings, Flow};

pub(super) const SW: &str = "192.0.2.1:5060";
pub(super) const A: &str = "192.0.2.10:5060";
pub(super) const B: &str = "192.0.2.20:5060";
pub(super) const B2: &str = "192.0.2.21:5060";
pub(super) const CARRIER: &str = "192.0.2.30:5060";

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(super) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Trunk `tr_…01` brings calls from 192.0.2.0/24; DID 1000 rings user
/// `bob` at B (and `extra` may add more); DID 2000 goes out through the
/// carrier trunk, which wants digest credentials.
fn config(extra: &str) -> SwitchConfig {
    let text = format!(
        r#"
[[trunks]]
id = "tr_0000000000000001"
host = "192.0.2.10"
inbound = ["192.0.2.0/24"]
options_interval = 0

[[trunks]]
id = "tr_00000000000000ca"
host = "carrier.example"
username = "acct"
password = "s3cret"
realm = "carrier.example"
options_interval = 0

[[users]]
name = "bob"
contact = "sip:bob@{B}"
{extra}
[[routes]]
did = "1000"
user = "bob"

[[routes]]
did = "2000"
trunk = "tr_00000000000000ca"
"#
    );
    let c: SwitchConfig = toml::from_str(&text).unwrap();
    c.validate().unwrap();
    c
}

pub(super) struct Harness {
    pub core: Core,
    pub now: Instant,
    inbox: HashMap<SocketAddr, Vec<Message>>,
    /// The flow of everything sent, by peer (read by the TCP tests).
    pub flows: HashMap<SocketAddr, Vec<Flow>>,
    pub ids: IdGenerator,
}

impl Harness {
    pub fn new(session_timer: Option<SessionTimerConfig>) -> Harness {
        Harness::with_config(session_timer, "")
    }

    pub fn with_config(session_timer: Option<SessionTimerConfig>, extra: &str) -> Harness {
        let now = Instant::now();
        let settings = CoreSettings {
            sip_addr: addr(SW),
            timers: Timers::default(),
            max_transactions: 1024,
            nonce_key: [7; 32],
            id_seed: 42,
            tcp_idle: secs(600),
            protection: protection::Limits::default(),
            registrar: RegistrarLimits::default(),
            wall_base: (now, 1_700_000_000),
            wall_base_ms: (now, 1_700_000_000_000),
            media_ip: addr(SW).ip(),
            rtp_ports: "30000-30099".parse::<PortRange>().unwrap(),
            max_calls: 16,
            ring_timeout: Duration::from_secs(180),
            session_timer,
        };
        let trunks = HashMap::from([("tr_00000000000000ca".to_owned(), addr(CARRIER))]);
        let mut core = Core::new(settings, config(extra), trunks);
        core.set_udp_socket(SocketId(0));
        Harness {
            core,
            now,
            inbox: HashMap::new(),
            flows: HashMap::new(),
            ids: IdGenerator::new(9),
        }
    }

    /// A new INVITE to `did` at the switch from the phone at `at` as
    /// `from` (a name-addr, given a fresh tag), without a body yet.
    pub fn invite(&mut self, at: &str, from: &str, did: &str) -> RequestBuilder {
        self.out_of_dialog(Method::Invite, at, from, did)
    }

    /// A new request outside any dialog, as [`Harness::invite`] builds.
    pub fn out_of_dialog(
        &mut self,
        method: Method,
        at: &str,
        from: &str,
        did: &str,
    ) -> RequestBuilder {
        let ip = addr(at).ip().to_string();
        let via = Via::new(
            &Transport::Udp,
            &Host::from_bytes(ip.clone()).unwrap(),
            Some(addr(at).port()),
            &self.ids.branch(),
            true,
        )
        .unwrap();
        let from = NameAddr::from_bytes(from.to_owned())
            .unwrap()
            .with_tag(&self.ids.tag())
            .unwrap();
        RequestBuilder::new(method, Uri::parse(format!("sip:{did}@{SW}")).unwrap())
            .via(&via)
            .max_forwards(70)
            .from(&from)
            .to(&NameAddr::from_bytes(format!("<sip:{did}@{SW}>")).unwrap())
            .call_id(self.ids.call_id(Some(ip.as_bytes())))
            .cseq(1)
            .contact(&local(at).contact)
    }

    /// `from` sends `msg` to the switch.
    pub fn send(&mut self, from: &str, msg: impl Into<Message>) {
        let bytes = msg.into().to_bytes();
        self.core
            .handle_datagram(self.now, SocketId(0), addr(from), &bytes);
        self.collect();
    }

    /// Sends what a peer's dialog queued (ACKs).
    pub fn flush(&mut self, from: &str, d: &mut Dialog<Peer>) {
        while let Some(t) = d.poll_transmit() {
            self.core
                .handle_datagram(self.now, SocketId(0), addr(from), &t.payload);
        }
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(out) = self.core.poll_transmit() {
            self.flows
                .entry(out.flow.peer())
                .or_default()
                .push(out.flow);
            let msg = parse_datagram(out.payload, &Limits::default()).unwrap();
            self.inbox.entry(out.flow.peer()).or_default().push(msg);
        }
    }

    /// Everything the switch has sent to `to` since the last call, but
    /// 100 Trying.
    pub fn take(&mut self, to: &str) -> Vec<Message> {
        self.collect();
        let mut all = self.inbox.remove(&addr(to)).unwrap_or_default();
        all.retain(|m| {
            m.as_response()
                .is_none_or(|r| r.status != StatusCode::TRYING)
        });
        all
    }

    /// The first `method` request among everything the switch has sent
    /// to `to` since the last call (the rest is dropped).
    pub fn take_request(&mut self, to: &str, method: Method) -> Option<Request> {
        self.take(to)
            .into_iter()
            .filter_map(|m| m.as_request().cloned())
            .find(|r| r.method == method)
    }

    /// The one message the switch has sent to `to`.
    pub fn one(&mut self, to: &str) -> Message {
        let mut got = self.take(to);
        assert_eq!(got.len(), 1, "one message to {to}: {got:#?}");
        got.remove(0)
    }

    /// Lets protocol time pass, firing every timer that falls due.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.core.poll_timeout().filter(|at| *at <= until) {
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now);
            self.collect();
        }
        self.now = until;
    }

    pub fn invite_from_a(&mut self, did: &str, extra: &[(KnownHeader, &str)]) -> Request {
        let b = self.a_invite_builder(did, extra);
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\n";
        b.body(&super::sdp_type(), Bytes::from_static(sdp.as_bytes()))
            .build()
            .unwrap()
    }

    /// A's INVITE without a body (a late offer, RFC 3261 §13.2.1).
    pub fn offerless_invite_from_a(&mut self, did: &str, extra: &[(KnownHeader, &str)]) -> Request {
        let invite = self.a_invite_builder(did, extra).build().unwrap();
        assert!(invite.body.is_empty());
        invite
    }

    fn a_invite_builder(&mut self, did: &str, extra: &[(KnownHeader, &str)]) -> RequestBuilder {
        let mut b = self.invite(A, &format!("\"Carol\" <sip:+15550002222@{A}>"), did);
        for (name, value) in extra {
            b = b.header(*name, value.to_string());
        }
        b
    }
}

/// How a peer appears in its own dialog.
pub(super) fn local(at: &str) -> Local {
    let a = addr(at);
    Local {
        transport: Transport::Udp,
        host: Host::from_bytes(a.ip().to_string()).unwrap(),
        port: Some(a.port()),
        contact: NameAddr::from_bytes(format!("<sip:peer@{a}>")).unwrap(),
    }
}

/// A peer's dialog settings: no session timers of its own unless asked.
pub(super) fn peer_config(session_timer: Option<SessionTimerConfig>) -> DialogConfig {
    DialogConfig {
        session_timer,
        ..DialogConfig::default()
    }
}

pub(super) fn sdp_answer(ip: &str, port: u16) -> Bytes {
    Bytes::from(format!(
        "v=0\r\no=- 2 2 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    ))
}

pub(super) fn request(m: Message) -> Request {
    match m {
        Message::Request(r) => r,
        Message::Response(r) => panic!("expected a request, got {} {:?}", r.status, r.headers),
    }
}

pub(super) fn response(m: Message) -> Response {
    match m {
        Message::Response(r) => r,
        Message::Request(r) => panic!("expected a response, got {}", r.method),
    }
}

pub(super) fn header(m: &impl HasHeaders, name: KnownHeader) -> Option<String> {
    m.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

pub(super) trait HasHeaders {
    fn headers(&self) -> &codeb_sip::Headers;
}

impl HasHeaders for Request {
    fn headers(&self) -> &codeb_sip::Headers {
        &self.headers
    }
}

impl HasHeaders for Response {
    fn headers(&self) -> &codeb_sip::Headers {
        &self.headers
    }
}

/// How [`answered_call`] sets up its call.
#[derive(Default)]
pub(super) struct Setup<'a> {
    /// Extra headers of A's INVITE.
    pub a_extra: &'a [(KnownHeader, &'a str)],
    /// Extra headers of B's 200.
    pub b_extra: &'a [(KnownHeader, &'a str)],
    /// The peers' own session-timer settings (they answer refreshes with
    /// Session-Expires only when they have some).
    pub a_timer: Option<SessionTimerConfig>,
    pub b_timer: Option<SessionTimerConfig>,
    /// A withholds its ACK.
    pub no_ack: bool,
}

/// A call from A to DID 1000, answered by B; the peers' dialogs.
pub(super) struct Call {
    pub a: Dialog<Peer>,
    pub b: Dialog<Peer>,
    /// The switch's INVITE to B and its 2xx to A.
    pub to_b: Request,
    pub ok: Response,
}

/// The peer at `at` answers the switch's `invite` with 200 and PCMA at
/// `media` (its dialog tag `tag`), and takes the switch's ACK; its dialog.
pub(super) fn answer_invite(
    h: &mut Harness,
    at: &str,
    invite: &Request,
    tag: &[u8],
    media: (&str, u16),
) -> Dialog<Peer> {
    let mut d = Dialog::uas(
        invite,
        tag,
        local(at),
        Peer::udp(addr(SW)),
        peer_config(None),
        &mut h.ids,
    )
    .unwrap();
    answer_with_sdp(h, at, &mut d, invite, media);
    let ack = request(h.one(at));
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(
        d.handle_request(h.now, &ack),
        codeb_sip::dialog::Incoming::Ack
    );
    while d.poll_event().is_some() {}
    d
}

/// A's dialog from the switch's 2xx to its `invite`; with `auto_ack` its
/// ACK is sent at once (else the test sends its own).
pub(super) fn a_dialog(
    h: &mut Harness,
    invite: &Request,
    ok: &Response,
    auto_ack: bool,
    timer: Option<SessionTimerConfig>,
) -> Dialog<Peer> {
    caller_dialog(h, A, invite, ok, auto_ack, timer)
}

/// The dialog of the caller at `at` from the switch's 2xx `ok` to its
/// `invite`; with `auto_ack` its ACK is sent at once (else the test sends
/// its own).
pub(super) fn caller_dialog(
    h: &mut Harness,
    at: &str,
    invite: &Request,
    ok: &Response,
    auto_ack: bool,
    timer: Option<SessionTimerConfig>,
) -> Dialog<Peer> {
    let mut d = Dialog::uac(
        h.now,
        invite,
        ok,
        local(at),
        Peer::udp(addr(SW)),
        DialogConfig {
            auto_ack,
            ..peer_config(timer)
        },
        &mut h.ids,
    )
    .unwrap();
    h.flush(at, &mut d);
    while d.poll_event().is_some() {}
    d
}

/// The peer at `at` answers the one message the switch sent it, an
/// INVITE, with `status` and To tag `tag`, keeping no dialog of its own;
/// that answer (to send again if need be).
pub(super) fn reply_to_invite(
    h: &mut Harness,
    at: &str,
    status: StatusCode,
    tag: &[u8],
) -> Response {
    let invite = request(h.one(at));
    let r = invite.reply(status, Some(tag)).build().unwrap();
    h.send(at, r.clone());
    r
}

/// The peer at `at` answers the in-dialog `req` of the switch (a
/// re-INVITE it has already taken into `d`) with 200 and PCMA at `media`.
pub(super) fn answer_with_sdp(
    h: &mut Harness,
    at: &str,
    d: &mut Dialog<Peer>,
    req: &Request,
    media: (&str, u16),
) {
    let ok = d
        .reply(req, StatusCode::OK)
        .body(&super::sdp_type(), sdp_answer(media.0, media.1))
        .build()
        .unwrap();
    d.sent_response(h.now, &ok);
    h.send(at, ok);
}

/// The peer at `at` takes the switch's re-INVITE into its dialog `d` and
/// accepts it with 200 and PCMA at `media`.
pub(super) fn accept_reinvite(
    h: &mut Harness,
    at: &str,
    d: &mut Dialog<Peer>,
    reinvite: &Request,
    media: (&str, u16),
) {
    assert_eq!(
        d.handle_request(h.now, reinvite),
        codeb_sip::dialog::Incoming::Accept
    );
    answer_with_sdp(h, at, d, reinvite, media);
}

/// The peer at `at` answers a BYE of the switch in its dialog `d`.
pub(super) fn answer_bye(h: &mut Harness, at: &str, d: &mut Dialog<Peer>, bye: &Request) {
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(
        d.handle_request(h.now, bye),
        codeb_sip::dialog::Incoming::Accept
    );
    let ok = d.reply(bye, StatusCode::OK).build().unwrap();
    h.send(at, ok);
}

/// The peer at `at` gets the switch's BYE in its dialog `d` (the one
/// message sent to it) and answers it.
pub(super) fn hung_up(h: &mut Harness, at: &str, d: &mut Dialog<Peer>) {
    let bye = request(h.one(at));
    assert_eq!(bye.headers.call_id().unwrap(), d.id().call_id);
    answer_bye(h, at, d, &bye);
}

/// The peer at `at` hangs up its dialog `d`; the switch answers 200.
pub(super) fn hang_up(h: &mut Harness, at: &str, d: &mut Dialog<Peer>) {
    let bye = d.request(Method::Bye).unwrap().build().unwrap();
    h.send(at, bye);
    assert_eq!(response(h.one(at)).status, StatusCode::OK);
}

/// The peer at `at` sends INFO in its dialog `d`: the switch answers 200
/// and passes an INFO on to `to`; that INFO.
pub(super) fn info_reaches(h: &mut Harness, at: &str, d: &mut Dialog<Peer>, to: &str) -> Request {
    let info = d.request(Method::Info).unwrap().build().unwrap();
    h.send(at, info);
    assert_eq!(response(h.one(at)).status, StatusCode::OK);
    let passed = request(h.one(to));
    assert_eq!(passed.method, Method::Info);
    passed
}

/// No call and no dialog is left in the switch.
pub(super) fn assert_all_ended(h: &Harness) {
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.core.dialogs(), 0);
    assert_eq!(h.core.dialog_owners(), 0);
}

pub(super) fn answered_call(h: &mut Harness, s: Setup<'_>) -> Call {
    let invite = h.invite_from_a("1000", s.a_extra);
    h.send(A, invite.clone());
    let to_b = request(h.one(B));
    assert_eq!(to_b.method, Method::Invite);
    let mut b = Dialog::uas(
        &to_b,
        b"bobtag",
        local(B),
        Peer::udp(addr(SW)),
        peer_config(s.b_timer),
        &mut h.ids,
    )
    .unwrap();
    let mut rb = b.reply(&to_b, StatusCode::OK);
    for (name, value) in s.b_extra {
        rb = rb.header(*name, value.to_string());
    }
    let ok_b = rb
        .body(&super::sdp_type(), sdp_answer("192.0.2.20", 42000))
        .build()
        .unwrap();
    b.sent_response(h.now, &ok_b);
    h.send(B, ok_b);
    let ack_b = request(h.one(B));
    assert_eq!(ack_b.method, Method::Ack);
    assert_eq!(
        b.handle_request(h.now, &ack_b),
        codeb_sip::dialog::Incoming::Ack
    );
    let ok = response(h.one(A));
    assert_eq!(ok.status, StatusCode::OK);
    let a = a_dialog(h, &invite, &ok, !s.no_ack, s.a_timer);
    while b.poll_event().is_some() {}
    Call { a, b, to_b, ok }
}

/// A re-INVITE in `d` putting its party on hold (`a=sendonly`) at
/// `ip`:`port` with payload type `pt` (0 PCMU or 8 PCMA).
pub(super) fn hold_reinvite(d: &mut Dialog<Peer>, ip: &str, port: u16, pt: u8) -> Request {
    let name = if pt == 8 { "PCMA" } else { "PCMU" };
    let hold = format!(
        "v=0\r\no=- 1 2 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {name}/8000\r\na=sendonly\r\n"
    );
    d.request(Method::Invite)
        .unwrap()
        .body(&super::sdp_type(), Bytes::from(hold))
        .build()
        .unwrap()
}
