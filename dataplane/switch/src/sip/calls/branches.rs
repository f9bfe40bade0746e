//! How the B-leg attempts end: provisional responses relayed to A, the
//! first 2xx bridged, failures mapped to A's final response, and the
//! bookkeeping that frees a call.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use codeb_sip::header::KnownHeader;
use codeb_sip::sdp::{self, LocalMedia, Sdp, SdpLimits};
use codeb_sip::transaction::{Timer, TransactionId};
use codeb_sip::{Request, Response, StatusCode};

use super::*;

impl Core {
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

    pub(super) fn settle_pending(&mut self, key: CallKey, tx: TransactionId) {
        let Some(call) = self.calls.calls.get_mut(&key) else {
            return;
        };
        call.pending.retain(|t| *t != tx);
        let branches_done = call.b.is_some() || call.branches.iter().all(|b| b.failed.is_some());
        if call.phase == Phase::Ending && call.pending.is_empty() && branches_done {
            self.finish(key);
        }
    }

    pub(super) fn on_branch_response(
        &mut self,
        now: Instant,
        key: CallKey,
        bi: usize,
        resp: Response,
    ) {
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
        if matches!(status.as_u16(), 401 | 407) && self.retry_branch_with_auth(now, key, bi, &resp)
        {
            return;
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

    pub(super) fn on_branch_answered(
        &mut self,
        now: Instant,
        key: CallKey,
        bi: usize,
        resp: Response,
    ) {
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

    /// Ends a call that never got answered: A gets `status`.
    pub(super) fn fail_call(&mut self, now: Instant, key: CallKey, status: StatusCode) {
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
    pub(super) fn finish(&mut self, key: CallKey) {
        let Some(call) = self.calls.calls.remove(&key) else {
            return;
        };
        self.calls.ports.release(call.a_port);
        self.calls.ports.release(call.b_port);
        self.calls.by_dialog.retain(|_, (k, _)| *k != key);
        self.calls.by_tx.retain(|_, k| *k != key);
        for t in &call.trunks {
            if let Some(load) = self.calls.trunks.get_mut(t) {
                load.active = load.active.saturating_sub(1);
            }
        }
        let secs = call.answered_at.map(|a| a.elapsed().as_secs()).unwrap_or(0);
        tracing::info!(
            call = key,
            talk_secs = secs,
            total_ms = call.started.elapsed().as_millis() as u64,
            "call ended"
        );
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

    pub(super) fn synthetic_failure(
        &self,
        invite: &Request,
        status: StatusCode,
    ) -> Option<Response> {
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

    /// A trunk challenged a B-leg INVITE: send it again with credentials
    /// (same dialog identifiers, next CSeq, new branch). Only once, and
    /// only for the trunk's realm; true if the retry went out.
    pub(super) fn retry_branch_with_auth(
        &mut self,
        now: Instant,
        key: CallKey,
        bi: usize,
        resp: &Response,
    ) -> bool {
        let Some(call) = self.calls.calls.get(&key) else {
            return false;
        };
        let Some(branch) = call.branches.get(bi) else {
            return false;
        };
        if branch.auth_tried {
            return false;
        }
        let Some(t) = branch
            .trunk
            .as_ref()
            .and_then(|id| self.config.trunks.iter().find(|t| &t.id == id))
            .cloned()
        else {
            return false;
        };
        let (mut invite, flow) = (branch.invite.clone(), branch.flow);
        let mut uri = BytesMut::new();
        invite.uri.render(&mut uri);
        let uri = String::from_utf8_lossy(&uri).into_owned();
        let Some((header, value)) = self.answer_trunk_challenge(&t, resp, "INVITE", &uri) else {
            return false;
        };
        let Some(via) = self.our_via("UDP") else {
            return false;
        };
        let mut rendered = BytesMut::new();
        via.render(&mut rendered);
        invite.headers.remove(KnownHeader::Via);
        invite.headers.remove(KnownHeader::CSeq);
        let (Ok(v), Ok(c), Ok(a)) = (
            codeb_sip::Header::new(KnownHeader::Via, rendered.freeze()),
            codeb_sip::Header::new(KnownHeader::CSeq, "2 INVITE"),
            codeb_sip::Header::new(header, value),
        ) else {
            return false;
        };
        invite.headers.insert(0, v);
        invite.headers.push(c);
        invite.headers.push(a);
        match self.layer.send_request(now, invite.clone(), flow) {
            Ok(tx) => {
                self.calls.by_tx.insert(tx, key);
                if let Some(call) = self.calls.calls.get_mut(&key) {
                    call.b_invite_cseq = 2;
                    if let Some(b) = call.branches.get_mut(bi) {
                        b.tx = tx;
                        b.invite = invite;
                        b.auth_tried = true;
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not resend the INVITE with credentials");
                false
            }
        }
    }
}
