//! New calls: the checks on an incoming INVITE, routing, trunk limits,
//! and forking the B-leg to every contact of the routed user.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use codeb_sip::header::{KnownHeader, NameAddr};
use codeb_sip::sdp::{self, Direction, LocalMedia, Sdp, SdpLimits};
use codeb_sip::transaction::TransactionId;
use codeb_sip::{Method, Request, RequestBuilder, StatusCode, Uri};

use super::*;
use crate::config::{RouteTarget, TrunkConfig};

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
        let mut trunks = vec![trunk.id.clone()];
        let targets = match route.target() {
            Some(RouteTarget::User(user)) => self.user_targets(user, now),
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
                if let Some(retry) =
                    self.trunk_admit(&out.id, out.max_concurrent_calls, out.calls_per_second, now)
                {
                    if let Ok(r) = self
                        .reply(&req, StatusCode::SERVICE_UNAVAILABLE)
                        .header(KnownHeader::RetryAfter, retry.to_string())
                        .build()
                    {
                        self.respond(now, id, r);
                    }
                    return;
                }
                trunks.push(out.id.clone());
                self.trunk_target(&out, &did).into_iter().collect()
            }
            None => Vec::new(),
        };
        if targets.is_empty() {
            tracing::info!(%did, "routed target is unreachable (user offline or trunk unresolved)");
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
            trunks,
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
        for target in targets {
            let Some(flow) = self.udp_flow(target.addr) else {
                continue;
            };
            let b_local = LocalMedia {
                port: b_port,
                direction: Direction::SendRecv,
                ..call_local_media(&call, self.calls.media_ip)
            };
            let offer = sdp::offer(&b_local);
            let tag = self.ids.tag();
            let identity = self.caller_identity(&caller, target.trunk.as_deref());
            let Some(invite) = self.build_b_invite(
                &target.uri,
                &identity,
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
                        trunk: target.trunk,
                        auth_tried: false,
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
        for t in &call.trunks {
            self.calls.trunks.entry(t.clone()).or_default().active += 1;
        }
        tracing::info!(call = key, %did, target = ?route.target(), branches = call.branches.len(), "call routed");
        self.calls.calls.insert(key, call);
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

    /// A user's contacts: registrations (sent to where the REGISTER came
    /// from when the contact names another address, i.e. behind NAT) and
    /// the configured fixed contact.
    pub(super) fn user_targets(&self, user: &str, now: Instant) -> Vec<Target> {
        let mut out: Vec<Target> = self
            .registrar()
            .lookup(user, now)
            .into_iter()
            .filter_map(|b| {
                let uri = Uri::parse(Bytes::from(b.uri.clone())).ok()?;
                let addr = match contact_addr(&uri) {
                    Some(a) if a.ip() == b.source.ip() => a,
                    _ => b.source,
                };
                Some(Target {
                    uri,
                    addr,
                    trunk: None,
                })
            })
            .collect();
        if let Some(c) = self
            .config
            .users
            .iter()
            .find(|u| u.name == user)
            .and_then(|u| u.contact.clone())
            && let Ok(uri) = Uri::parse(Bytes::from(c))
            && let Some(addr) = contact_addr(&uri)
        {
            out.push(Target {
                uri,
                addr,
                trunk: None,
            });
        }
        out.retain(|t| !crate::sip::flow::is_forbidden_destination(&t.addr));
        out
    }

    /// The dialled number at a trunk: `sip:<did>@<host>:<port>`.
    pub(super) fn trunk_target(&self, trunk: &TrunkConfig, did: &str) -> Option<Target> {
        let addr = *self.trunk_addrs.get(&trunk.id)?;
        let user: String = did
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "+*#".contains(*c))
            .take(32)
            .collect();
        let uri = Uri::parse(Bytes::from(format!(
            "sip:{user}@{}:{}",
            trunk.host,
            trunk.port()
        )))
        .ok()?;
        Some(Target {
            uri,
            addr,
            trunk: Some(trunk.id.clone()),
        })
    }

    /// Who the B-leg says is calling: the caller's number and name, or a
    /// trunk's configured identity.
    pub(super) fn caller_identity(&self, caller: &NameAddr, trunk: Option<&str>) -> Identity {
        let caller_user: String = user_of(caller)
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "anonymous".into())
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
        let trunk = trunk.and_then(|t| self.config.trunks.iter().find(|c| c.id == t));
        match trunk {
            Some(t) => Identity {
                user: if t.from_user.is_empty() {
                    caller_user
                } else {
                    t.from_user.clone()
                },
                host: if t.from_domain.is_empty() {
                    t.host.clone()
                } else {
                    t.from_domain.clone()
                },
                display,
            },
            None => Identity {
                user: caller_user,
                host: self.our_host(),
                display,
            },
        }
    }

    /// The flow for sending to `addr` over our UDP socket.
    pub(super) fn udp_flow(&self, addr: SocketAddr) -> Option<Flow> {
        self.udp_socket
            .map(|socket| Flow::Udp { socket, peer: addr })
    }

    pub(super) fn build_b_invite(
        &mut self,
        target: &Uri,
        who: &Identity,
        tag: &[u8],
        hops: u8,
        sdp_body: Bytes,
    ) -> Option<Request> {
        let via = self.our_via("UDP")?;
        let contact = self.our_contact()?;
        let tag = String::from_utf8_lossy(tag);
        let from = match &who.display {
            Some(d) => format!("\"{d}\" <sip:{}@{}>;tag={tag}", who.user, who.host),
            None => format!("<sip:{}@{}>;tag={tag}", who.user, who.host),
        };
        let from = NameAddr::from_bytes(from).ok()?;
        let mut to_uri = BytesMut::new();
        target.render(&mut to_uri);
        let to = NameAddr::from_bytes(format!("<{}>", String::from_utf8_lossy(&to_uri))).ok()?;
        let call_id = self.ids.call_id(Some(self.our_host().as_bytes()));
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
}
