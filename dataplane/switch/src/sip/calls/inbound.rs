//! New calls: the checks on an incoming INVITE (hops, loops, trusted
//! source, RFC 4028 Min-SE, trunk limits, an SDP offer), routing, then the
//! A-leg dialog, media ports, our SDP answer, and the B-leg forked to every
//! target.

use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_sip::header::KnownHeader;
use codeb_sip::sdp::{self, Direction, LocalMedia, Sdp, SdpLimits};
use codeb_sip::transaction::TransactionId;
use codeb_sip::{Dialog, Method, Request, StatusCode};

use super::*;
use crate::config::{RouteTarget, TrunkConfig};
use crate::routing::{self, CallFacts};

/// A new call's A leg, ready (see [`Core::open_a_leg`]).
pub(super) struct OpenedA {
    /// Its dialog, our answer and what it negotiated.
    pub a: Leg,
    /// The call's media: A's port, and B's if it was asked for.
    pub call_media: media::CallMedia,
}

/// Seconds a stopping switch asks for in its 503s' Retry-After: its stop
/// (calls ending, acknowledgement) and a restart take about that long.
const DRAINING_RETRY_AFTER: u32 = 10;

impl Core {
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
        if self.calls.draining {
            // Retry-After (RFC 3261 §21.5.4): an upstream proxy then sends
            // this node nothing new for a while (its other nodes take the
            // calls) instead of trying it again at once.
            if let Ok(r) = self
                .reply(&req, StatusCode::SERVICE_UNAVAILABLE)
                .header(KnownHeader::RetryAfter, DRAINING_RETRY_AFTER.to_string())
                .header(
                    KnownHeader::Warning,
                    "399 codeb \"the switch is shutting down\"",
                )
                .build()
            {
                self.respond(now, id, r);
            }
            return;
        }
        if self.is_loop(&req) {
            return self.reject(now, id, &req, StatusCode::LOOP_DETECTED, None);
        }
        if self.is_merged(&req) {
            return self.reject(
                now,
                id,
                &req,
                StatusCode::LOOP_DETECTED,
                Some("a copy of an INVITE already in progress (merged request)"),
            );
        }
        let trunk = inbound_trunk(&self.config.trunks, &self.trunk_addrs, source.peer()).cloned();
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
        // A session interval below our Min-SE is refused before the call
        // costs anything (RFC 4028 §9); the caller retries with ours.
        if let Some(timer) = self.settings.session_timer
            && let Some(r) = timer.check(&req, &self.ids.tag())
        {
            return self.respond(now, id, r);
        }
        // A phone taking over one of our legs (RFC 3891), not a new call.
        if req.headers.get(KnownHeader::Replaces).is_some() {
            return self.on_replacing_invite(now, id, &req, source, &trunk);
        }
        if let Some(retry) = self.trunk_admit(
            &trunk.id,
            trunk.max_concurrent_calls,
            trunk.calls_per_second,
            now,
        ) {
            return self.busy(now, id, &req, retry);
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
        // A body in a content coding we do not decode (gzip, say) is
        // refused with the one we take (RFC 3261 §8.2.3), not read as SDP.
        if codeb_sip::multipart::content_coded(&req.headers) && !req.body.is_empty() {
            let r = self
                .reply(&req, StatusCode::UNSUPPORTED_MEDIA_TYPE)
                .header(KnownHeader::AcceptEncoding, "identity")
                .build();
            match r {
                Ok(r) => return self.respond(now, id, r),
                Err(e) => {
                    tracing::warn!(error = %e, "415 not built");
                    return self.reject(now, id, &req, StatusCode::UNSUPPORTED_MEDIA_TYPE, None);
                }
            }
        }
        // No body: a late offer (RFC 3261 §13.2.1). Our 2xx carries the
        // offer and A's ACK the answer.
        let offer = if req.body.is_empty() {
            None
        } else {
            match Sdp::parse(&req.body, &SdpLimits::default()) {
                Ok(o) => Some(o),
                Err(e) => {
                    let warning = format!("the SDP offer is not usable: {e}");
                    return self.reject(
                        now,
                        id,
                        &req,
                        StatusCode::NOT_ACCEPTABLE_HERE,
                        Some(&warning),
                    );
                }
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
        let Some(route) = routing::route(
            &self.config.routes,
            &CallFacts {
                tenant: &trunk.tenant,
                did: &did,
                from,
            },
        )
        .cloned() else {
            tracing::info!(%did, "no inbound route");
            return self.reject(now, id, &req, StatusCode::NOT_FOUND, None);
        };
        let mut trunks = vec![trunk.id.clone()];
        let targets = match route.target() {
            // A tenant's route rings only that tenant's users (user names
            // are one namespace across tenants; a route naming another
            // tenant's user reaches no one).
            Some(RouteTarget::User(user)) if self.user_of(&route.tenant, user) => {
                self.user_targets(user, now)
            }
            Some(RouteTarget::User(user)) => {
                tracing::warn!(%did, %user, tenant = %route.tenant,
                    "inbound route names a user of another tenant; not rung");
                Vec::new()
            }
            Some(RouteTarget::Trunk(out)) => {
                let Some(out) = self.config.trunks.iter().find(|t| t.id == out).cloned() else {
                    return self.reject(
                        now,
                        id,
                        &req,
                        StatusCode::SERVICE_UNAVAILABLE,
                        Some("route names no trunk"),
                    );
                };
                // Known down (no answer to OPTIONS, or its TCP connection
                // failed): refused at once rather than dialled into the
                // void; the trunk's name stays ours.
                if self.trunk_down(&out.id).is_some() {
                    return self.reject(
                        now,
                        id,
                        &req,
                        StatusCode::SERVICE_UNAVAILABLE,
                        Some("the outbound trunk is down"),
                    );
                }
                if let Some(retry) =
                    self.trunk_admit(&out.id, out.max_concurrent_calls, out.calls_per_second, now)
                {
                    return self.busy(now, id, &req, retry);
                }
                trunks.push(out.id.clone());
                self.trunk_target(&out, &did).into_iter().collect()
            }
            Some(RouteTarget::VirtualNumber(number)) => {
                let (number, from) = (number.to_owned(), from.unwrap_or_default().to_owned());
                return self.answer_virtual_number(
                    now,
                    id,
                    req,
                    source,
                    offer.as_ref(),
                    super::vnum::VnumCall {
                        trunk: &trunk,
                        did: &did,
                        from: &from,
                        number: &number,
                    },
                );
            }
            None => Vec::new(),
        };
        if targets.is_empty() {
            tracing::info!(%did, "routed target is unreachable (user offline or trunk unresolved)");
            return self.reject(now, id, &req, StatusCode::TEMPORARILY_UNAVAILABLE, None);
        }
        tracing::info!(%did, target = ?route.target(), "routing call");
        self.start_call(now, id, req, source, offer.as_ref(), targets, trunks);
    }

    /// 503 with Retry-After: a trunk is at its call or CPS limit.
    fn busy(&mut self, now: Instant, id: TransactionId, req: &Request, retry: u32) {
        if let Ok(r) = self
            .reply(req, StatusCode::SERVICE_UNAVAILABLE)
            .header(KnownHeader::RetryAfter, retry.to_string())
            .build()
        {
            self.respond(now, id, r);
        }
    }

    /// A routed INVITE becomes a call: the A-leg dialog, two media ports,
    /// our answer to A's offer, and one B-leg INVITE per target.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; the routing results it needs"
    )]
    fn start_call(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: Request,
        source: Flow,
        offer: Option<&Sdp>,
        targets: Vec<Target>,
        trunks: Vec<String>,
    ) {
        let Ok(opened) = self.open_a_leg(now, id, &req, source, offer, true) else {
            return;
        };
        let OpenedA { a, call_media } = opened;
        let key = self.calls.next_key;
        // Both are there: the dialog is in the table, B's port was asked.
        let (Some(a_id), Some(b_port)) = (a.dialog.clone(), call_media.ports[1]) else {
            return;
        };
        // Prefer A's codec on B so the call can be relayed without
        // transcoding.
        let b_media = LocalMedia {
            port: b_port,
            codecs: preferring(a.negotiated.as_ref().map(|n| n.codec)),
            session_id: self.ids.next_u64() >> 1,
            ..a.media.clone()
        };
        let mut b = Leg::new(b_media);
        b.sdp = Bytes::from(sdp::offer(&b.media).to_text());
        let mut call = Call {
            key,
            phase: Phase::Routing,
            a_invite_tx: Some(id),
            a_invite_id: Some(id),
            a_invite: req,
            a,
            b,
            branches: Vec::new(),
            sent: Vec::new(),
            byes: Vec::new(),
            bye_a_when_acked: false,
            a_held_1xx: None,
            trunks,
            started: now,
            answered_at: None,
            origin: None,
            media: call_media,
            bridged: None,
            tapped: None,
            transfer: None,
            transferred: false,
            referral: None,
            joining: None,
        };
        let caller = call.a_invite.headers.from().ok();
        self.fork(now, &mut call, targets, Side::B, caller.as_ref());
        if call.branches.is_empty() {
            self.calls.dialogs.remove(&a_id);
            self.calls.media.close(call_media);
            return self.reject(
                now,
                id,
                &call.a_invite,
                StatusCode::SERVICE_UNAVAILABLE,
                Some("no usable contact"),
            );
        }
        self.calls.next_key += 1;
        self.calls.by_tx.insert(id, key);
        self.calls.owners.insert(a_id, (key, Side::A));
        for t in &call.trunks {
            self.calls.trunks.entry(t.clone()).or_default().active += 1;
        }
        tracing::info!(call = key, branches = call.branches.len(), "call routed");
        if let Some(h) = call.media.handle {
            self.calls.by_media.insert(h, key);
        }
        if let Some(k) = request_key(&call.a_invite) {
            self.calls.by_a_request.insert(k, key);
        }
        self.calls.calls.insert(key, Box::new(call));
        self.calls.placed.deadlines.insert((
            now + self.settings.ring_timeout,
            key,
            super::originate::Deadline::RouteRing,
        ));
    }

    /// The A leg of a new call: its UAS dialog (in the table), the call's
    /// media ports (A's, and B's `with_b`: a call to a voice-AI engine has
    /// no B side until it is transferred) and our SDP answer to A's offer
    /// (or, for a late offer, our offer, which A answers in its ACK). An
    /// error when the call was refused: the response (its status and
    /// reason) is sent and nothing is held.
    pub(super) fn open_a_leg(
        &mut self,
        now: Instant,
        id: TransactionId,
        req: &Request,
        source: Flow,
        offer: Option<&Sdp>,
        with_b: bool,
    ) -> Result<OpenedA, (StatusCode, String)> {
        let a_tag = self.ids.tag();
        let Some(local) = self.dialog_local(&source) else {
            self.reject(now, id, req, StatusCode::SERVER_INTERNAL_ERROR, None);
            return Err((
                StatusCode::SERVER_INTERNAL_ERROR,
                "no local address for the dialog".into(),
            ));
        };
        let config = self.dialog_config(Side::A);
        let a_dialog = match Dialog::uas(req, &a_tag, local, source, config, &mut self.ids) {
            Ok(d) => d,
            Err(e) => {
                let warning = e.to_string();
                self.reject(now, id, req, StatusCode::BAD_REQUEST, Some(&warning));
                return Err((StatusCode::BAD_REQUEST, warning));
            }
        };
        let legs = if with_b {
            media::Legs::Both
        } else {
            media::Legs::Only(crate::media::LegSide::A)
        };
        // A's port is there whenever the call opened (it was asked for).
        let Some((call_media, a_port)) = self
            .calls
            .media
            .open(legs)
            .and_then(|m| Some((m, m.ports[0]?)))
        else {
            let why = "no media ports left";
            self.reject(now, id, req, StatusCode::SERVICE_UNAVAILABLE, Some(why));
            return Err((StatusCode::SERVICE_UNAVAILABLE, why.into()));
        };
        let a_media = LocalMedia {
            addr: self.calls.media_ip,
            port: a_port,
            codecs: CODECS.to_vec(),
            ptime: 20,
            direction: Direction::SendRecv,
            session_id: self.ids.next_u64() >> 1,
            session_version: 1,
        };
        let described = match offer {
            Some(offer) => sdp::answer(offer, &a_media).map(|(a, n)| (a, Some(n))),
            None => Ok((sdp::offer(&a_media), None)),
        };
        let refused = match described {
            Ok((ours, negotiated)) => match self.calls.dialogs.insert(a_dialog) {
                Ok(a_id) => {
                    let mut a = Leg::new(a_media);
                    a.dialog = Some(a_id);
                    a.sdp = Bytes::from(ours.to_text());
                    a.negotiated = negotiated;
                    a.update = req
                        .headers
                        .allow()
                        .is_ok_and(|m| m.contains(&Method::Update));
                    a.reliable = branches::requires_100rel(req);
                    return Ok(OpenedA { a, call_media });
                }
                Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            },
            Err(e) => (StatusCode::NOT_ACCEPTABLE_HERE, e.to_string()),
        };
        self.calls.media.close(call_media);
        self.reject(now, id, req, refused.0, Some(&refused.1));
        Err(refused)
    }

    /// Sends an INVITE to every target (parallel forking) for the call's
    /// `side` (B for a routed call; the free side for a transfer), with
    /// that side's offer and `caller` shown as who calls.
    pub(super) fn fork(
        &mut self,
        now: Instant,
        call: &mut Call,
        targets: Vec<Target>,
        side: Side,
        caller: Option<&NameAddr>,
    ) {
        let hops = call
            .a_invite
            .headers
            .max_forwards()
            .ok()
            .flatten()
            .unwrap_or(70)
            .saturating_sub(1);
        for target in targets {
            let Some(flow) = self.target_flow(&target) else {
                continue;
            };
            let tag = self.ids.tag();
            let identity = match caller {
                Some(c) => self.caller_identity(c, target.trunk.as_deref()),
                None => continue,
            };
            let offer = call.leg(side).sdp.clone();
            let Some(mut invite) =
                self.build_b_invite(&flow, &target.uri, &identity, &tag, hops, offer)
            else {
                continue;
            };
            // A REFER's target learns who referred (RFC 3892), as rebuilt
            // by `refer.rs` (the referrer's user and name at our host).
            if let Some(by) = call.referral.as_ref().and_then(|r| r.referred_by())
                && let Ok(h) = codeb_sip::Header::new(KnownHeader::ReferredBy, by.to_owned())
            {
                invite.headers.push(h);
            }
            match self.layer.send_request(now, invite.clone(), flow) {
                Ok(tx) => {
                    self.calls.by_tx.insert(tx, call.key);
                    call.branches.push(Branch {
                        tx,
                        invite,
                        flow,
                        failed: None,
                        won: false,
                        dropped: false,
                        trunk: target.trunk,
                        auth_tried: false,
                        interval_raised: false,
                    });
                }
                Err(e) => tracing::warn!(error = %e, "could not start a B-leg"),
            }
        }
    }

    /// A trunk's limits applied to a call the switch places itself: why
    /// it is refused, if it is.
    pub(super) fn trunk_refusal(
        &mut self,
        trunk: &crate::config::TrunkConfig,
        now: Instant,
    ) -> Option<String> {
        self.trunk_admit(
            &trunk.id,
            trunk.max_concurrent_calls,
            trunk.calls_per_second,
            now,
        )
        .map(|retry| {
            format!(
                "trunk {} is at its call or CPS limit; retry in {retry} s",
                trunk.id
            )
        })
    }

    /// Applies a trunk's limits to a new call; `Some(seconds)` to refuse.
    pub(super) fn trunk_admit(
        &mut self,
        trunk: &str,
        max_calls: u32,
        cps: u32,
        now: Instant,
    ) -> Option<u32> {
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
}

/// The trunk a call from `peer` comes in on. A trunk's calls come from its
/// inbound networks, or, when it names none, from its own signalling
/// address's IP. Several trunks may share an IP (a carrier's trunks on
/// one gateway, told apart by port): the one whose signalling address is
/// `peer` exactly wins, then the first that takes the IP.
pub(super) fn inbound_trunk<'a>(
    trunks: &'a [TrunkConfig],
    addrs: &HashMap<String, SocketAddr>,
    peer: SocketAddr,
) -> Option<&'a TrunkConfig> {
    let takes = |t: &TrunkConfig| {
        if t.inbound.is_empty() {
            addrs.get(&t.id).is_some_and(|a| a.ip() == peer.ip())
        } else {
            t.inbound.iter().any(|c| c.contains(peer.ip()))
        }
    };
    trunks
        .iter()
        .filter(|t| takes(t))
        .find(|t| addrs.get(&t.id) == Some(&peer))
        .or_else(|| trunks.iter().find(|t| takes(t)))
}

#[cfg(test)]
mod trunk_tests {
    use super::*;

    #[test]
    fn a_call_comes_in_on_the_trunk_at_its_exact_address_first() {
        let c: crate::config::SwitchConfig = toml::from_str(
            r#"
[[trunks]]
id = "tr_000000000000000a"
host = "127.0.0.1"
port = 48999
options_interval = 0

[[trunks]]
id = "tr_000000000000000b"
host = "127.0.0.1"
port = 48070
options_interval = 0

[[trunks]]
id = "tr_000000000000000c"
host = "gw.example"
inbound = ["198.51.100.0/24"]
options_interval = 0
"#,
        )
        .unwrap();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let addrs = HashMap::from([
            ("tr_000000000000000a".to_owned(), a("127.0.0.1:48999")),
            ("tr_000000000000000b".to_owned(), a("127.0.0.1:48070")),
            ("tr_000000000000000c".to_owned(), a("198.51.100.7:5060")),
        ]);
        let id = |peer: &str| inbound_trunk(&c.trunks, &addrs, a(peer)).map(|t| t.id.as_str());
        assert_eq!(id("127.0.0.1:48070"), Some("tr_000000000000000b"));
        assert_eq!(id("127.0.0.1:48999"), Some("tr_000000000000000a"));
        // Another port of the shared IP: the first trunk that takes it.
        assert_eq!(id("127.0.0.1:5060"), Some("tr_000000000000000a"));
        assert_eq!(id("198.51.100.9:5060"), Some("tr_000000000000000c"));
        assert_eq!(id("203.0.113.1:5060"), None);
    }
}
