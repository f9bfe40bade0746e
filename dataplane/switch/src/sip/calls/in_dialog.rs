//! Inside established dialogs: ACK and BYE, CANCEL from A, re-INVITE and
//! UPDATE answered locally, INFO relayed, and the 2xx retransmissions of
//! the A side until its ACK (RFC 3261 §13.3.1.4).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use codeb_sip::header::{KnownHeader, NameAddr};
use codeb_sip::sdp::{self, LocalMedia, Sdp, SdpLimits};
use codeb_sip::transaction::{CancelOutcome, TransactionId};
use codeb_sip::{Method, Request, RequestBuilder, StatusCode, Uri};

use super::*;

impl Core {
    pub(super) fn send_ack(&mut self, leg: &mut Leg, cseq: u32) {
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
    pub(super) fn in_dialog_request(
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

    pub(super) fn send_bye(&mut self, now: Instant, key: CallKey, leg: &mut Leg) {
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
    pub(super) fn answer_offer(
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

    pub(super) fn relay_info(&mut self, now: Instant, key: CallKey, to: Side, req: &Request) {
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

    /// Sends BYE on one side (if that dialog exists).
    pub(super) fn hang_up_side(&mut self, now: Instant, key: CallKey, side: Side) {
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
