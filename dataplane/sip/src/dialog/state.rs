//! The dialog state of §12 and its two constructors (UAC §12.1.2, UAS
//! §12.1.1), the accessors, and the timers (2xx retransmission, glare
//! back-off, session timer) behind `poll_timeout` / `handle_timeout`.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::prack::{Reliable1xx, first_rseq};
use super::reliability::Unacked;
use super::session_timer::{SessionTimer, SessionTimerConfig};
use super::{DialogError, DialogEvent, DialogId, DialogState, Side, Termination};
use crate::error::ValueError;
use crate::header::{Headers, NameAddr, Transport, Via};
use crate::message::{Request, Response};
use crate::method::Method;
use crate::transaction::{Address, IdGenerator, Timers, Transmit};
use crate::uri::{Host, Uri};

/// How we appear in a dialog: the sent-by of our Vias and our Contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub transport: Transport,
    pub host: Host,
    pub port: Option<u16>,
    pub contact: NameAddr,
}

impl Local {
    /// A Via with `branch`, asking for `rport` (RFC 3581).
    pub(crate) fn via(&self, branch: &[u8]) -> Result<Via, ValueError> {
        Via::new(&self.transport, &self.host, self.port, branch, true)
    }
}

/// Per-dialog settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialogConfig {
    /// T1 and T2 pace 2xx retransmissions; 64·T1 bounds them.
    pub timers: Timers,
    /// `None`: no session timers offered or started by us (a peer's
    /// Session-Expires in a 2xx is still honoured).
    pub session_timer: Option<SessionTimerConfig>,
    /// ACK a 2xx as soon as it arrives (empty body). Turn off when the ACK
    /// must carry an answer, and call [`Dialog::ack`] on
    /// [`DialogEvent::AckDue`].
    pub auto_ack: bool,
    pub max_forwards: u8,
}

impl Default for DialogConfig {
    fn default() -> Self {
        Self {
            timers: Timers::default(),
            session_timer: Some(SessionTimerConfig::default()),
            auto_ack: true,
            max_forwards: 70,
        }
    }
}

/// One INVITE dialog. See the module docs for the life cycle and the
/// drain contract.
#[derive(Debug)]
pub struct Dialog<A> {
    pub(super) id: DialogId,
    pub(super) side: Side,
    pub(super) state: DialogState,
    /// Our From (as UAC) or To (as UAS), with our tag.
    pub(super) local_party: NameAddr,
    /// Their address with their tag (if they sent one).
    pub(super) remote_party: NameAddr,
    pub(super) local_seq: Option<u32>,
    pub(super) remote_seq: Option<u32>,
    pub(super) remote_target: Uri,
    pub(super) route_set: Vec<NameAddr>,
    pub(super) local: Local,
    /// The peer this leg talks to: where ACKs go and, through
    /// [`Address::respond_to`], 2xx retransmissions.
    pub(super) remote: A,
    pub(super) config: DialogConfig,
    /// The CSeq of the dialog-creating INVITE.
    pub(super) invite_cseq: u32,
    pub(super) ids: IdGenerator,
    /// Our INVITE or UPDATE awaiting its final response (§14.1).
    pub(super) ours_pending: Option<(u32, Method)>,
    /// Whether that request of ours carries an offer: an UPDATE sent
    /// without a body (a session refresh) does not, and collides with no
    /// offer of the peer's (RFC 3311 §5.2; see [`Dialog::request_sent`]).
    pub(super) ours_offers: bool,
    /// Their INVITE awaiting our final response (§14.2).
    pub(super) theirs_pending: Option<u32>,
    /// The offer in their dialog-creating INVITE is not answered yet: no
    /// reliable provisional with SDP and no final response has gone out.
    /// An UPDATE offer meanwhile gets 500 (RFC 3311 §5.2).
    pub(super) their_offer_open: bool,
    /// Their dialog-creating INVITE had no offer (RFC 3261 §13.2.1).
    pub(super) invite_offerless: bool,
    /// Our offer went in a reliable provisional response to their
    /// offerless INVITE (RFC 3262 §5); `our_offer_open` until the PRACK
    /// that answers it. An UPDATE offer meanwhile gets 491 (RFC 3311 §5.2).
    pub(super) offered_in_1xx: bool,
    pub(super) our_offer_open: bool,
    /// A target refresh received, applied when we answer it with 2xx.
    pub(super) pending_target: Option<(u32, Uri)>,
    /// The CSeq of the last INVITE of ours that got a 2xx.
    pub(super) answered: Option<u32>,
    /// The ACK we sent for it, for its retransmissions.
    pub(super) last_ack: Option<(u32, Bytes)>,
    pub(super) unacked: Option<Unacked<A>>,
    /// Our reliable provisional response awaiting PRACK (RFC 3262).
    pub(super) reliable_1xx: Option<Reliable1xx<A>>,
    /// The RSeq of one still unacknowledged when our 2xx went: no longer
    /// sent again, but its PRACK, crossing the 2xx, still gets 200 (a
    /// 481 would end the dialog at the caller, RFC 3261 §12.2.1.2).
    pub(super) late_rseq: Option<u32>,
    /// The RSeq of our next reliable provisional response.
    pub(super) next_rseq: u32,
    /// §14.1 back-off after a 491.
    pub(super) retry_at: Option<Instant>,
    pub(super) session: Option<SessionTimer>,
    /// Our Min-SE, raised by 422s.
    pub(super) min_se: u32,
    /// Why the dialog ended, once it has.
    pub(super) ended: Option<Termination>,
    pub(super) transmits: VecDeque<Transmit<A>>,
    pub(super) events: VecDeque<DialogEvent>,
}

fn tag_of(addr: &NameAddr) -> Option<Bytes> {
    addr.params.value_bytes("tag")
}

pub(super) fn contact_uri(h: &Headers) -> Option<Uri> {
    h.contacts()
        .ok()?
        .into_iter()
        .find_map(|c| c.addr().map(|a| a.uri.clone()))
}

impl<A: Address> Dialog<A> {
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per side, all parts needed"
    )]
    fn new(
        id: DialogId,
        side: Side,
        parties: (NameAddr, NameAddr),
        seqs: (Option<u32>, Option<u32>),
        target: (Uri, Vec<NameAddr>),
        invite_cseq: u32,
        local: Local,
        remote: A,
        config: DialogConfig,
        ids: &mut IdGenerator,
    ) -> Self {
        let min_se = config
            .session_timer
            .map_or(super::session_timer::MIN_INTERVAL, |c| c.sanitized().min_se);
        let next_rseq = first_rseq(ids.next_u64());
        Self {
            id,
            side,
            state: DialogState::Early,
            local_party: parties.0,
            remote_party: parties.1,
            local_seq: seqs.0,
            remote_seq: seqs.1,
            remote_target: target.0,
            route_set: target.1,
            local,
            remote,
            config,
            invite_cseq,
            ids: IdGenerator::new(ids.next_u64()),
            ours_pending: None,
            ours_offers: true,
            theirs_pending: None,
            their_offer_open: false,
            invite_offerless: false,
            offered_in_1xx: false,
            our_offer_open: false,
            pending_target: None,
            answered: None,
            last_ack: None,
            unacked: None,
            reliable_1xx: None,
            late_rseq: None,
            next_rseq,
            retry_at: None,
            session: None,
            min_se,
            ended: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The UAC side (§12.1.2): from the INVITE we sent to `remote` and a
    /// response to it with a To tag — a 1xx (not 100) makes an early
    /// dialog, a 2xx a confirmed one (and is handled as by
    /// [`Self::handle_response`]: ACK, session timer). `ids` seeds the
    /// dialog's own generator (branches, back-offs).
    pub fn uac(
        now: Instant,
        invite: &Request,
        response: &Response,
        local: Local,
        remote: A,
        config: DialogConfig,
        ids: &mut IdGenerator,
    ) -> Result<Self, DialogError> {
        let code = response.status.as_u16();
        if invite.method != Method::Invite || !(101..300).contains(&code) {
            return Err(DialogError::NotDialogCreating);
        }
        let remote_party = response.headers.to()?;
        let remote_tag = tag_of(&remote_party).ok_or(DialogError::NoRemoteTag)?;
        let local_party = invite.headers.from()?;
        let local_tag = tag_of(&local_party).ok_or(ValueError::Missing)?;
        let cseq = invite.headers.cseq()?.seq;
        let mut route_set = response.headers.record_routes()?;
        route_set.reverse();
        let target = contact_uri(&response.headers).unwrap_or_else(|| invite.uri.clone());
        let id = DialogId {
            call_id: invite.headers.call_id()?,
            local_tag,
            remote_tag,
        };
        let mut d = Self::new(
            id,
            Side::Uac,
            (local_party, remote_party),
            (Some(cseq), None),
            (target, route_set),
            cseq,
            local,
            remote,
            config,
            ids,
        );
        d.ours_pending = Some((cseq, Method::Invite));
        d.handle_response(now, response);
        Ok(d)
    }

    /// The UAS side (§12.1.1): from a received INVITE (no To tag yet) that
    /// we are about to answer with a 1xx or 2xx carrying `local_tag`;
    /// `remote` is where it came from. Build the responses with
    /// [`Self::reply`] and report each with [`Self::sent_response`].
    pub fn uas(
        invite: &Request,
        local_tag: &[u8],
        local: Local,
        remote: A,
        config: DialogConfig,
        ids: &mut IdGenerator,
    ) -> Result<Self, DialogError> {
        let h = &invite.headers;
        let to = h.to()?;
        if invite.method != Method::Invite || tag_of(&to).is_some() {
            return Err(DialogError::NotDialogCreating);
        }
        let remote_party = h.from()?;
        let local_party = to.with_tag(local_tag)?;
        let cseq = h.cseq()?.seq;
        let target = contact_uri(h).ok_or(DialogError::NoContact)?;
        let id = DialogId {
            call_id: h.call_id()?,
            local_tag: bytes::Bytes::copy_from_slice(local_tag),
            remote_tag: tag_of(&remote_party).unwrap_or_default(),
        };
        let mut d = Self::new(
            id,
            Side::Uas,
            (local_party, remote_party),
            (None, Some(cseq)),
            (target, h.record_routes()?),
            cseq,
            local,
            remote,
            config,
            ids,
        );
        d.theirs_pending = Some(cseq);
        d.their_offer_open = !invite.body.is_empty();
        d.invite_offerless = invite.body.is_empty();
        Ok(d)
    }

    pub fn id(&self) -> &DialogId {
        &self.id
    }

    pub fn side(&self) -> Side {
        self.side
    }

    pub fn state(&self) -> DialogState {
        self.state
    }

    /// Where in-dialog requests are addressed (from the peer's Contact).
    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }

    /// The route set, in the order requests carry it.
    pub fn route_set(&self) -> &[NameAddr] {
        &self.route_set
    }

    pub fn local_seq(&self) -> Option<u32> {
        self.local_seq
    }

    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    /// The peer this leg talks to (ACKs, 2xx retransmissions).
    pub fn remote(&self) -> &A {
        &self.remote
    }

    /// Points the leg at another peer address (e.g. after re-resolving
    /// the next hop).
    pub fn set_remote(&mut self, remote: A) {
        self.remote = remote;
    }

    /// The negotiated session interval and whether we refresh it.
    pub fn session_timer(&self) -> Option<(u32, bool)> {
        self.session.map(|s| (s.interval, s.we_refresh))
    }

    /// Whether our INVITE or UPDATE, or their INVITE, is still pending.
    pub fn is_pending(&self) -> bool {
        self.ours_pending.is_some() || self.theirs_pending.is_some()
    }

    /// Whether an offer of ours (re-INVITE or UPDATE) awaits its final
    /// response. The dialog-creating INVITE does not count: RFC 3311 lets
    /// UPDATE run in the early dialog it created, and only the TU knows
    /// whether that INVITE's offer has been answered.
    pub(super) fn offer_pending(&self) -> bool {
        self.ours_offers && self.mid_dialog_pending()
    }

    /// Whether a re-INVITE or UPDATE of ours awaits its final response
    /// (offer or not): another waits for it.
    pub(super) fn mid_dialog_pending(&self) -> bool {
        self.ours_pending.as_ref().is_some_and(|(seq, method)| {
            !(self.side == Side::Uac && *method == Method::Invite && *seq == self.invite_cseq)
        })
    }

    /// Ends the dialog without signalling, e.g. an early dialog whose
    /// INVITE got a final response from another fork, or one the TU gives
    /// up on. No-op when already terminated.
    pub fn terminate(&mut self, why: Termination) {
        if self.state != DialogState::Terminated {
            self.state = DialogState::Terminated;
            self.ended = Some(why);
            self.unacked = None;
            self.reliable_1xx = None;
            self.late_rseq = None;
            self.retry_at = None;
            self.session = None;
            self.ours_pending = None;
            self.theirs_pending = None;
            self.events.push_back(DialogEvent::Terminated(why));
        }
    }

    pub(super) fn send(&mut self, to: A, payload: Bytes) {
        self.transmits.push_back(Transmit {
            destination: to,
            payload,
            transaction: None,
        });
    }

    /// The earliest armed timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.unacked.as_ref().map(Unacked::next),
            self.reliable_1xx.as_ref().map(Reliable1xx::next),
            self.retry_at,
            self.session.and_then(|s| s.refresh_at),
            self.session.map(|s| s.expire_at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires every timer that has expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(u) = &mut self.unacked {
            if u.give_up <= now {
                let cseq = u.cseq;
                self.unacked = None;
                self.events.push_back(DialogEvent::AckTimeout { cseq });
            } else if u.retransmit.next <= now {
                u.retransmit.fire(now);
                let (to, wire) = (u.to.clone(), u.wire.clone());
                self.send(to, wire);
            }
        }
        self.reliable_timeout(now);
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.events.push_back(DialogEvent::RetryRequest);
        }
        if let Some(s) = &mut self.session {
            if s.refresh_at.is_some_and(|at| at <= now) {
                s.refresh_at = None;
                self.events.push_back(DialogEvent::RefreshDue);
            }
            if s.expire_at <= now {
                self.session = None;
                self.events.push_back(DialogEvent::SessionExpired);
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DialogEvent> {
        self.events.pop_front()
    }
}
