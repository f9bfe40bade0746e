//! Requests inside a dialog (§12.2.1.1): Request-URI and Route from the
//! route set and remote target, for loose (`;lr`) and strict routers;
//! From, To, Call-ID and the next local CSeq; a Via with a fresh branch;
//! Contact on target-refresh requests; session-timer headers on
//! refreshes. Also the ACK for a 2xx (§13.2.2.4): the INVITE's CSeq number,
//! a new branch, sent outside any transaction.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::session_timer::render;
use super::{Dialog, DialogError, DialogState, Side, Termination};
use crate::builder::RequestBuilder;
use crate::header::{KnownHeader, NameAddr, Refresher};
use crate::message::Request;
use crate::method::Method;
use crate::params::{ParamKind, Params};
use crate::transaction::{Address, wire_request};
use crate::uri::Uri;

/// `true` when a route entry is a loose router (`;lr`, RFC 3261 §16.12).
/// Non-SIP route URIs cannot be strict routers (they cannot sit in a
/// Request-URI we would send), so they count as loose.
fn is_loose(route: &NameAddr) -> bool {
    route.uri.as_sip().is_none_or(|u| u.params.contains("lr"))
}

/// A route URI made fit for the Request-URI: no `method` parameter and no
/// headers (§19.1.1, table 1), as §12.2.1.1 asks for strict routing.
fn as_request_uri(uri: &Uri) -> Uri {
    let Some(sip) = uri.as_sip() else {
        return uri.clone();
    };
    let mut raw = BytesMut::new();
    for p in sip
        .params
        .iter()
        .filter(|p| !p.name.eq_ignore_ascii_case(b"method"))
    {
        raw.put_u8(b';');
        raw.put_slice(p.name);
        if let Some(v) = p.value {
            raw.put_u8(b'=');
            raw.put_slice(v);
        }
    }
    let mut out = sip.clone();
    out.headers = None;
    if let Ok(params) = Params::parse(raw.freeze(), ParamKind::Uri, &crate::Limits::default()) {
        out.params = params;
    }
    Uri::Sip(out)
}

impl<A: Address> Dialog<A> {
    /// The Request-URI and Route values of the next request (§12.2.1.1):
    /// no route set → remote target, no Route; a loose first route →
    /// remote target, the route set as Route; a strict first route → that
    /// route as Request-URI, the rest plus the remote target as Route.
    pub fn request_target(&self) -> (Uri, Vec<NameAddr>) {
        match self.route_set.first() {
            None => (self.remote_target.clone(), Vec::new()),
            Some(first) if is_loose(first) => (self.remote_target.clone(), self.route_set.clone()),
            Some(first) => {
                let mut routes: Vec<NameAddr> = self.route_set.iter().skip(1).cloned().collect();
                routes.push(NameAddr::new(self.remote_target.clone()));
                (as_request_uri(&first.uri), routes)
            }
        }
    }

    /// Where the next request goes first (§8.1.2): the first route, loose
    /// (it is the top Route) or strict (it is the Request-URI), else the
    /// remote target. The TU resolves it to a transport address (RFC 3263).
    pub fn next_hop(&self) -> Uri {
        self.route_set
            .first()
            .map_or_else(|| self.remote_target.clone(), |r| r.uri.clone())
    }

    fn builder(&mut self, method: Method, seq: u32) -> Result<RequestBuilder, DialogError> {
        let via = self.local.via(&self.ids.branch())?;
        let (uri, routes) = self.request_target();
        let mut b = RequestBuilder::new(method, uri)
            .via(&via)
            .max_forwards(self.config.max_forwards)
            .from(&self.local_party)
            .to(&self.remote_party)
            .call_id(self.id.call_id.clone())
            .cseq(seq);
        for r in &routes {
            b = b.route(r);
        }
        Ok(b)
    }

    /// The request started with [`Self::request`], as built and sent: an
    /// UPDATE without a body is no offer, so the peer's offer meanwhile
    /// is no glare (RFC 3311 §5.2) and gets its answer, not a 491.
    pub fn request_sent(&mut self, request: &Request) {
        let Ok(cseq) = request.headers.cseq() else {
            return;
        };
        if request.method == Method::Update
            && request.body.is_empty()
            && self
                .ours_pending
                .as_ref()
                .is_some_and(|(s, _)| *s == cseq.seq)
        {
            self.ours_offers = false;
        }
    }

    /// Starts a request in the dialog: BYE, re-INVITE, UPDATE, INFO,
    /// OPTIONS, REFER, ... The TU adds a body or headers, builds it and
    /// sends it with the transaction layer (to [`Self::next_hop`]), then
    /// feeds the responses to [`Self::handle_response`].
    ///
    /// Taking the next CSeq happens here. A re-INVITE or UPDATE is pending
    /// from here until its final response; a BYE terminates the dialog at
    /// once (§15: the session ends when the BYE is sent).
    pub fn request(&mut self, method: Method) -> Result<RequestBuilder, DialogError> {
        if self.state == DialogState::Terminated {
            return Err(DialogError::Terminated);
        }
        match method {
            Method::Ack | Method::Cancel => return Err(DialogError::WrongMethod),
            // §14: re-INVITE only on confirmed dialogs, one at a time in
            // either direction.
            Method::Invite if self.state != DialogState::Confirmed => {
                return Err(DialogError::WrongState);
            }
            Method::Invite | Method::Update if self.mid_dialog_pending() => {
                return Err(DialogError::Pending);
            }
            Method::Invite if self.theirs_pending.is_some() => return Err(DialogError::Pending),
            // §15: the caller cancels early dialogs; the callee waits for
            // the ACK of its 2xx (or its timeout) before BYE.
            Method::Bye
                if self.state == DialogState::Early
                    || (self.side == Side::Uas && self.unacked.is_some()) =>
            {
                return Err(DialogError::WrongState);
            }
            _ => {}
        }
        let seq = match self.local_seq {
            None => 1,
            Some(s) => s.checked_add(1).ok_or(DialogError::SequenceExhausted)?,
        };
        let mut b = self.builder(method.clone(), seq)?;
        self.local_seq = Some(seq);
        if matches!(method, Method::Invite | Method::Update) {
            b = b.contact(&self.local.contact.clone());
            b = self.session_headers(b);
            self.ours_pending = Some((seq, method.clone()));
            self.ours_offers = true;
        }
        if method == Method::Bye {
            self.terminate(Termination::LocalBye);
        }
        Ok(b)
    }

    /// Session-timer headers of a re-INVITE or UPDATE (RFC 4028 §7.4): the
    /// running interval with the refresher role kept as it is (`uac` means
    /// us, the sender of this request), or our offer if none runs.
    fn session_headers(&self, b: RequestBuilder) -> RequestBuilder {
        let (interval, refresher) = match (self.session, self.config.session_timer) {
            (Some(s), _) => (
                s.interval.max(self.min_se),
                Some(if s.we_refresh {
                    Refresher::Uac
                } else {
                    Refresher::Uas
                }),
            ),
            (None, Some(c)) => {
                let c = c.sanitized();
                (
                    c.session_expires.max(self.min_se),
                    c.we_refresh.then_some(Refresher::Uac),
                )
            }
            (None, None) => return b,
        };
        let value = match refresher {
            Some(r) => render(interval, r),
            None => interval.to_string(),
        };
        b.header(KnownHeader::Supported, "timer")
            .header(KnownHeader::SessionExpires, value)
            .header(KnownHeader::MinSe, self.min_se.to_string())
    }

    /// The ACK for our INVITE `cseq` that got a 2xx, without body. Add an
    /// answer if the INVITE carried no offer, then [`Self::send_ack`].
    pub fn ack_builder(&mut self, cseq: u32) -> Result<RequestBuilder, DialogError> {
        if self.answered != Some(cseq) {
            return Err(DialogError::NothingToAck);
        }
        self.builder(Method::Ack, cseq)
    }

    /// Sends an ACK built from [`Self::ack_builder`] to the dialog's peer
    /// and keeps it for retransmitted 2xx.
    pub fn send_ack(&mut self, _now: Instant, ack: &Request) -> Result<(), DialogError> {
        let cseq = ack.headers.cseq()?.seq;
        if ack.method != Method::Ack || self.answered != Some(cseq) {
            return Err(DialogError::NothingToAck);
        }
        let wire: Bytes = wire_request(ack);
        self.last_ack = Some((cseq, wire.clone()));
        self.send(self.remote.clone(), wire);
        Ok(())
    }

    /// ACKs the 2xx to our INVITE `cseq` (empty body).
    pub fn ack(&mut self, now: Instant, cseq: u32) -> Result<(), DialogError> {
        let ack = self.ack_builder(cseq)?.build()?;
        self.send_ack(now, &ack)
    }
}
