//! Where a B-leg goes and what goes there: a user's contacts (registered
//! or fixed), a trunk's dialled-number URI, the caller identity shown to B,
//! and the B-leg INVITE itself, built from scratch (topology hiding) with
//! our session-timer offer (RFC 4028 §7.1).

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use codeb_sip::header::{KnownHeader, NameAddr};
use codeb_sip::{Method, Request, RequestBuilder, SipScheme, Uri};

use super::*;
use crate::config::{TrunkConfig, TrunkTransport};

impl Core {
    /// Whether `user` may be rung for `tenant`: a user of that tenant, or
    /// one with no tenant (a file-configured switch); a route of no
    /// tenant may ring any user.
    pub(super) fn user_of(&self, tenant: &str, user: &str) -> bool {
        tenant.is_empty()
            || self
                .config
                .users
                .iter()
                .any(|u| u.name == user && (u.tenant.is_empty() || u.tenant == tenant))
    }

    /// A user's contacts: registrations (sent to where the REGISTER came
    /// from when the contact names another address, i.e. behind NAT) and
    /// the configured fixed contact. A contact's `transport` parameter
    /// picks UDP (none, or `udp`) or TCP (`tcp`: over the connection the
    /// REGISTER came on while it is open, else a new one, RFC 3261
    /// §18.1.1); one asking for a transport we lack (`tls`, `sctp`, `ws`,
    /// a `sips:` URI) is skipped and logged.
    pub(super) fn user_targets(&self, user: &str, now: Instant) -> Vec<Target> {
        let mut out: Vec<Target> = self
            .registrar()
            .lookup(user, now)
            .into_iter()
            .filter_map(|b| {
                let uri = Uri::parse(Bytes::from(b.uri.clone())).ok()?;
                let tcp = contact_tcp(user, &uri)?;
                let named = contact_addr(&uri).filter(|a| a.ip() == b.source.ip());
                let addr = match named {
                    Some(a) => a,
                    // Behind NAT: the REGISTER's source. Over TCP its port
                    // is the phone's own for that connection, so a new one
                    // goes to the port the contact names.
                    None if tcp => SocketAddr::new(
                        b.source.ip(),
                        uri.as_sip().and_then(|u| u.port).unwrap_or(5060),
                    ),
                    None => b.source,
                };
                Some(Target {
                    uri,
                    addr,
                    trunk: None,
                    tcp,
                    conn: b.conn.filter(|_| tcp).map(|c| (c, b.source)),
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
            && let Some(tcp) = contact_tcp(user, &uri)
        {
            out.push(Target {
                uri,
                addr,
                trunk: None,
                tcp,
                conn: None,
            });
        }
        out.retain(|t| !crate::sip::flow::is_forbidden_destination(&t.addr));
        out
    }

    /// The dialled number at a trunk: `sip:<did>@<host>:<port>`, with
    /// `;transport=tcp` for a TCP trunk (RFC 3261 §19.1.1: the URI names
    /// the transport, for the trunk's proxies as much as for us).
    pub(super) fn trunk_target(&self, trunk: &TrunkConfig, did: &str) -> Option<Target> {
        let addr = *self.trunk_addrs.get(&trunk.id)?;
        let user: String = did
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "+*#".contains(*c))
            .take(32)
            .collect();
        let uri = Uri::parse(Bytes::from(format!(
            "sip:{user}@{}:{}{}",
            trunk.host,
            trunk.port(),
            trunk.transport.uri_param()
        )))
        .ok()?;
        Some(Target {
            uri,
            addr,
            trunk: Some(trunk.id.clone()),
            tcp: trunk.transport == TrunkTransport::Tcp,
            conn: None,
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

    /// The flow a B-leg INVITE to `target` goes out on (and the rest of
    /// that branch: CANCEL, ACK, in-dialog requests): for TCP, the
    /// connection the contact registered over while it is open, else our
    /// connection to the trunk or contact address (opened on demand);
    /// else UDP.
    pub(super) fn target_flow(&self, target: &Target) -> Option<Flow> {
        if !target.tcp {
            return self.udp_flow(target.addr);
        }
        match target.conn {
            Some((conn, peer)) if self.stream_open(conn, peer) => Some(Flow::Tcp { conn, peer }),
            _ => Some(Flow::TcpTo { peer: target.addr }),
        }
    }

    pub(super) fn build_b_invite(
        &mut self,
        flow: &Flow,
        target: &Uri,
        who: &Identity,
        tag: &[u8],
        hops: u8,
        sdp_body: Bytes,
    ) -> Option<Request> {
        let via = self.our_via(flow.transport())?;
        let contact = self.our_contact(flow)?;
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
        let b = RequestBuilder::new(Method::Invite, target.clone())
            .via(&via)
            .max_forwards(hops)
            .from(&from)
            .to(&to)
            .call_id(call_id)
            .cseq(1)
            .contact(&contact)
            .header(
                KnownHeader::Allow,
                "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER",
            )
            .header(KnownHeader::UserAgent, "CodeB-Switch")
            .body(&sdp_type(), sdp_body);
        // We ask to refresh B ourselves: a B2BUA that refreshes both legs
        // notices a dead peer on either side.
        let b = match self.settings.session_timer {
            Some(timer) => timer.offer(b),
            None => b,
        };
        b.build().ok()
    }
}

/// Whether `user`'s contact `uri` is reached over TCP (`transport=tcp`,
/// any case) or UDP (no transport, or `udp`); None, logged, for a
/// transport the switch does not speak (RFC 3261 §19.1.1: the URI's
/// transport is the one to use, so falling back to UDP would be wrong).
fn contact_tcp(user: &str, uri: &Uri) -> Option<bool> {
    let Some(sip) = uri.as_sip() else {
        // Not a SIP URI (a registered `tel:`): as before, UDP to where
        // the REGISTER came from.
        return Some(false);
    };
    let transport = sip.params.value("transport").unwrap_or(b"udp");
    if sip.scheme == SipScheme::Sip && transport.eq_ignore_ascii_case(b"udp") {
        Some(false)
    } else if sip.scheme == SipScheme::Sip && transport.eq_ignore_ascii_case(b"tcp") {
        Some(true)
    } else {
        tracing::info!(
            user,
            transport = %String::from_utf8_lossy(transport),
            sips = sip.scheme == SipScheme::Sips,
            "contact skipped: a transport the switch does not speak"
        );
        None
    }
}
