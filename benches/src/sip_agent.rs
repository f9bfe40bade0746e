//! A SIP user agent for the load generators: it places calls into a switch
//! (the caller, on one UDP socket) and answers the calls a switch places
//! (the callee, on another), each call with an RTP socket of its own on
//! loopback, every message built and parsed with the project's SIP crate.
//!
//! It does what a benchmark's calls need of RFC 3261 and no more:
//! INVITE / 200 / ACK with SDP both ways, BYE both ways, OPTIONS and
//! in-dialog requests answered 200, a retransmitted INVITE answered from
//! the stored response, and its own INVITEs and BYEs retransmitted at 1, 2,
//! 4 … s (plenty on loopback). No authentication, forking or early media.
//! It is driven by [`Agent::pump`]; nothing runs behind the caller's back.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use codeb_io::{Event, Options, Reactor, SocketId};
use codeb_sip::{
    KnownHeader, Limits, MediaType, Message, Method, NameAddr, Request, RequestBuilder, Response,
    StatusCode, Uri, ack_for_non2xx, parse_datagram,
};

use crate::rtp_stream::{Endpoint, leg_addr, sdp, sdp_addr};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// First retransmission interval (T1 is 500 ms; loopback loses little, so
/// this is generous and keeps retransmissions out of the measurement).
const RETRANSMIT: Duration = Duration::from_secs(1);
/// Sends of a request before it is given up.
const MAX_SENDS: u32 = 6;

/// Where a call this agent placed stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// INVITE sent, no final response yet.
    Calling,
    /// Answered (200, ACK sent).
    Up,
    /// BYE sent, not answered yet.
    Leaving,
    /// Over: BYE answered, or the switch hung up.
    Ended,
    /// Refused with this status (408: no answer to our retransmissions).
    Failed(u16),
}

/// A request of ours waiting for its final response.
#[derive(Debug)]
struct Outstanding {
    bytes: Bytes,
    sent: Instant,
    sends: u32,
}

#[derive(Debug)]
struct PlacedCall {
    state: Placed,
    invite: Request,
    /// The leg's RTP address, until the answer hands it out with its peer.
    media: Option<SocketAddr>,
    /// The 2xx's To (with the switch's tag) and Contact, once answered.
    to: Option<Bytes>,
    target: Option<Uri>,
    ack: Option<Bytes>,
    pending: Option<Outstanding>,
}

#[derive(Debug)]
struct AnsweredCall {
    /// Our 200 to the INVITE (sent again if the INVITE is).
    ok: Bytes,
    ended: bool,
}

/// A leg ready for media: the call, the user part of the Request-URI it
/// was placed or received with, and its RTP socket with its peer.
#[derive(Debug)]
pub struct Leg {
    pub call_id: String,
    pub user: String,
    pub endpoint: Endpoint,
}

/// Counts of where the calls are.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub placed_up: usize,
    pub placed_calling: usize,
    pub placed_failed: usize,
    pub placed_ended: usize,
    pub answered: usize,
    pub answered_ended: usize,
}

/// The agent. See the module documentation.
pub struct Agent {
    reactor: Reactor,
    uac: SocketId,
    uac_addr: SocketAddr,
    uas: SocketId,
    uas_addr: SocketAddr,
    switch: SocketAddr,
    limits: Limits,
    sdp_type: MediaType,
    /// Unique per agent: tags, branches and Call-IDs start with it.
    prefix: String,
    next: u64,
    placed: HashMap<Bytes, PlacedCall>,
    answered: HashMap<Bytes, AnsweredCall>,
    ready_placed: Vec<Leg>,
    ready_answered: Vec<Leg>,
    last_retransmit_scan: Instant,
}

impl Agent {
    /// An agent calling `switch` from an ephemeral port and answering on
    /// `uas` (the address the switch's user or trunk points at).
    pub fn new(switch: SocketAddr, uas: SocketAddr) -> anyhow::Result<Agent> {
        let mut reactor = Reactor::new(&Options {
            ring_entries: 1024,
            buffers: 1024,
            buffer_len: 8192,
            max_connections: 0,
            ..Options::default()
        })?;
        let uac_sock = UdpSocket::bind((LO, 0))?;
        let uac_addr = uac_sock.local_addr()?;
        let uas_sock = UdpSocket::bind(uas).with_context(|| format!("bind the callee at {uas}"))?;
        let uas_addr = uas_sock.local_addr()?;
        for s in [&uac_sock, &uas_sock] {
            let _ = codeb_io::set_recv_buffer(s, 8 << 20);
        }
        let uac = reactor.add_udp(uac_sock)?;
        let uas = reactor.add_udp(uas_sock)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Ok(Agent {
            reactor,
            uac,
            uac_addr,
            uas,
            uas_addr,
            switch,
            limits: Limits::default(),
            sdp_type: MediaType::from_bytes("application/sdp")
                .map_err(|e| anyhow::anyhow!("media type: {e}"))?,
            prefix: format!("ld{}x{nanos:x}", std::process::id()),
            next: 0,
            placed: HashMap::new(),
            answered: HashMap::new(),
            ready_placed: Vec::new(),
            ready_answered: Vec::new(),
            last_retransmit_scan: Instant::now(),
        })
    }

    /// Where the agent answers calls.
    pub fn uas_addr(&self) -> SocketAddr {
        self.uas_addr
    }

    fn fresh(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{}{what}{}", self.prefix, self.next)
    }

    fn via(&mut self) -> String {
        let branch = self.fresh("b");
        format!("SIP/2.0/UDP {};branch=z9hG4bK{branch};rport", self.uac_addr)
    }

    /// Places a call to `user` (a DID or phone number) at the switch with
    /// a fresh RTP socket; returns its Call-ID.
    pub fn place(&mut self, user: &str) -> anyhow::Result<String> {
        let media = leg_addr()?;
        let call_id = self.fresh("c");
        let tag = self.fresh("t");
        let uri = Uri::parse(format!("sip:{user}@{}", self.switch))
            .map_err(|e| anyhow::anyhow!("Request-URI: {e}"))?;
        let via = self.via();
        let invite = RequestBuilder::new(Method::Invite, uri)
            .header(KnownHeader::Via, via)
            .max_forwards(70)
            .header(
                KnownHeader::From,
                format!("<sip:load@{}>;tag={tag}", self.uac_addr),
            )
            .header(KnownHeader::To, format!("<sip:{user}@{}>", self.switch))
            .call_id(call_id.clone())
            .cseq(1)
            .header(
                KnownHeader::Contact,
                format!("<sip:load@{}>", self.uac_addr),
            )
            .body(&self.sdp_type, Bytes::from(sdp(media)))
            .build()
            .map_err(|e| anyhow::anyhow!("INVITE: {e}"))?;
        let bytes = Message::from(invite.clone()).to_bytes();
        self.reactor.send_to(self.uac, self.switch, &bytes)?;
        self.placed.insert(
            Bytes::from(call_id.clone()),
            PlacedCall {
                state: Placed::Calling,
                invite,
                media: Some(media),
                to: None,
                target: None,
                ack: None,
                pending: Some(Outstanding {
                    bytes,
                    sent: Instant::now(),
                    sends: 1,
                }),
            },
        );
        Ok(call_id)
    }

    /// Sends BYE on a placed call that is up.
    pub fn hang_up(&mut self, call_id: &str) -> anyhow::Result<()> {
        let via = self.via();
        let Some(call) = self.placed.get_mut(call_id.as_bytes()) else {
            bail!("no call {call_id}");
        };
        if call.state != Placed::Up {
            return Ok(());
        }
        let (Some(to), Some(target)) = (call.to.clone(), call.target.clone()) else {
            bail!("call {call_id} has no dialog");
        };
        let bytes = in_dialog(Method::Bye, call, target, to, via, 2)?;
        self.reactor.send_to(self.uac, self.switch, &bytes)?;
        call.state = Placed::Leaving;
        call.pending = Some(Outstanding {
            bytes,
            sent: Instant::now(),
            sends: 1,
        });
        Ok(())
    }

    /// Placed calls answered since the last call, with their RTP sockets.
    pub fn take_placed(&mut self) -> Vec<Leg> {
        std::mem::take(&mut self.ready_placed)
    }

    /// Calls answered here since the last call, with their RTP sockets.
    pub fn take_answered(&mut self) -> Vec<Leg> {
        std::mem::take(&mut self.ready_answered)
    }

    /// Where the calls are.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for c in self.placed.values() {
            match c.state {
                Placed::Calling => t.placed_calling += 1,
                Placed::Up | Placed::Leaving => t.placed_up += 1,
                Placed::Ended => t.placed_ended += 1,
                Placed::Failed(_) => t.placed_failed += 1,
            }
        }
        t.answered = self.answered.len();
        t.answered_ended = self.answered.values().filter(|a| a.ended).count();
        t
    }

    /// The Call-IDs of the placed calls that are up.
    pub fn up_calls(&self) -> Vec<String> {
        self.placed
            .iter()
            .filter(|(_, c)| c.state == Placed::Up)
            .map(|(id, _)| String::from_utf8_lossy(id).into_owned())
            .collect()
    }

    /// The status codes placed calls failed with, and how often.
    pub fn failures(&self) -> Vec<(u16, usize)> {
        let mut m: HashMap<u16, usize> = HashMap::new();
        for c in self.placed.values() {
            if let Placed::Failed(code) = c.state {
                *m.entry(code).or_default() += 1;
            }
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_unstable();
        v
    }

    /// Handles what arrives within `wait`, and retransmits what is due.
    pub fn pump(&mut self, wait: Duration) -> anyhow::Result<()> {
        let mut got: Vec<(SocketId, SocketAddr, Bytes)> = Vec::new();
        self.reactor.poll(Some(wait), &mut |ev| {
            if let Event::Datagram { socket, from, data } = ev {
                got.push((socket, from, Bytes::copy_from_slice(data)));
            }
        })?;
        for (socket, from, data) in got {
            // A message that does not parse is the switch's bug, not the
            // benchmark's: it is dropped (and its call will show as failed).
            let Ok(msg) = parse_datagram(data, &self.limits) else {
                continue;
            };
            match msg {
                Message::Response(r) if socket == self.uac => self.on_response(r)?,
                Message::Request(r) => self.on_request(socket, from, r)?,
                Message::Response(_) => {}
            }
        }
        if self.last_retransmit_scan.elapsed() >= Duration::from_millis(100) {
            self.last_retransmit_scan = Instant::now();
            self.retransmit()?;
        }
        Ok(())
    }

    fn retransmit(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        for call in self.placed.values_mut() {
            let Some(p) = &mut call.pending else {
                continue;
            };
            if now.duration_since(p.sent) < RETRANSMIT * (1 << (p.sends - 1).min(5)) {
                continue;
            }
            if p.sends >= MAX_SENDS {
                call.pending = None;
                call.state = match call.state {
                    Placed::Calling => Placed::Failed(408),
                    _ => Placed::Ended,
                };
                continue;
            }
            p.sends += 1;
            p.sent = now;
            self.reactor.send_to(self.uac, self.switch, &p.bytes)?;
        }
        Ok(())
    }

    fn on_response(&mut self, r: Response) -> anyhow::Result<()> {
        let (Ok(call_id), Ok(cseq)) = (r.headers.call_id(), r.headers.cseq()) else {
            return Ok(());
        };
        let code = r.status.as_u16();
        // For the ACK, should this be a first 2xx.
        let via = self.via();
        let Some(call) = self.placed.get_mut(&call_id) else {
            return Ok(());
        };
        if code < 200 {
            return Ok(());
        }
        match cseq.method {
            Method::Invite if (200..300).contains(&code) => {
                if let Some(ack) = &call.ack {
                    // The 200 again: our ACK was lost.
                    self.reactor.send_to(self.uac, self.switch, ack)?;
                    return Ok(());
                }
                if call.state != Placed::Calling {
                    return Ok(());
                }
                let to = r
                    .headers
                    .get(KnownHeader::To)
                    .cloned()
                    .context("200 without To")?;
                let target = r
                    .headers
                    .contacts()
                    .ok()
                    .and_then(|c| c.first().and_then(|c| c.addr()).map(|a| a.uri.clone()))
                    .unwrap_or_else(|| call.invite.uri.clone());
                let ack = in_dialog(Method::Ack, call, target.clone(), to.clone(), via, 1)?;
                self.reactor.send_to(self.uac, self.switch, &ack)?;
                call.ack = Some(ack);
                call.to = Some(to);
                call.target = Some(target);
                call.pending = None;
                call.state = Placed::Up;
                let peer = sdp_addr(&r.body);
                if let (Some(local), Ok(to)) = (call.media.take(), peer) {
                    self.ready_placed.push(Leg {
                        call_id: String::from_utf8_lossy(&call_id).into_owned(),
                        user: user_of(&call.invite.uri),
                        endpoint: Endpoint { local, to },
                    });
                } else {
                    // Answered without usable SDP: no media to measure.
                    call.state = Placed::Failed(code);
                }
            }
            Method::Invite if call.state == Placed::Calling => {
                let ack =
                    ack_for_non2xx(&call.invite, &r).map_err(|e| anyhow::anyhow!("ACK: {e}"))?;
                self.reactor
                    .send_to(self.uac, self.switch, &Message::from(ack).to_bytes())?;
                call.pending = None;
                call.state = Placed::Failed(code);
            }
            Method::Bye => {
                call.pending = None;
                call.state = Placed::Ended;
            }
            _ => {}
        }
        Ok(())
    }

    fn on_request(&mut self, socket: SocketId, from: SocketAddr, r: Request) -> anyhow::Result<()> {
        let Ok(call_id) = r.headers.call_id() else {
            return Ok(());
        };
        let reply = |agent: &mut Agent, b: codeb_sip::ResponseBuilder| -> anyhow::Result<()> {
            let resp = b.build().map_err(|e| anyhow::anyhow!("response: {e}"))?;
            agent
                .reactor
                .send_to(socket, from, &Message::from(resp).to_bytes())?;
            Ok(())
        };
        match r.method {
            Method::Ack => Ok(()),
            Method::Invite if socket == self.uas => {
                if let Some(a) = self.answered.get(&call_id) {
                    // A retransmission, or a re-INVITE: the same answer.
                    let ok = a.ok.clone();
                    self.reactor.send_to(socket, from, &ok)?;
                    return Ok(());
                }
                let peer = match sdp_addr(&r.body) {
                    Ok(p) => p,
                    Err(_) => {
                        return reply(self, r.reply(StatusCode::NOT_ACCEPTABLE, None));
                    }
                };
                let media = leg_addr()?;
                let tag = self.fresh("t");
                let contact = Uri::parse(format!("sip:callee@{}", self.uas_addr))
                    .map_err(|e| anyhow::anyhow!("Contact: {e}"))?;
                let ok = r
                    .reply(StatusCode::OK, Some(tag.as_bytes()))
                    .contact(&NameAddr::new(contact))
                    .body(&self.sdp_type, Bytes::from(sdp(media)))
                    .build()
                    .map_err(|e| anyhow::anyhow!("200: {e}"))?;
                let ok = Message::from(ok).to_bytes();
                self.reactor.send_to(socket, from, &ok)?;
                self.answered
                    .insert(call_id.clone(), AnsweredCall { ok, ended: false });
                self.ready_answered.push(Leg {
                    call_id: String::from_utf8_lossy(&call_id).into_owned(),
                    user: user_of(&r.uri),
                    endpoint: Endpoint {
                        local: media,
                        to: peer,
                    },
                });
                Ok(())
            }
            Method::Bye => {
                if let Some(a) = self.answered.get_mut(&call_id) {
                    a.ended = true;
                }
                if socket == self.uac
                    && let Some(c) = self.placed.get_mut(&call_id)
                {
                    c.state = Placed::Ended;
                    c.pending = None;
                }
                reply(self, r.reply(StatusCode::OK, None))
            }
            _ => reply(self, r.reply(StatusCode::OK, None)),
        }
    }
}

/// An in-dialog request on a placed call (ACK for its 2xx, BYE): to the
/// remote target, with the INVITE's From and Call-ID and the 2xx's To.
fn in_dialog(
    method: Method,
    call: &PlacedCall,
    target: Uri,
    to: Bytes,
    via: String,
    cseq: u32,
) -> anyhow::Result<Bytes> {
    let h = &call.invite.headers;
    let from = h.get(KnownHeader::From).context("INVITE without From")?;
    let call_id = h.call_id().map_err(|e| anyhow::anyhow!("Call-ID: {e}"))?;
    let req = RequestBuilder::new(method, target)
        .header(KnownHeader::Via, via)
        .max_forwards(70)
        .header(KnownHeader::From, from.clone())
        .header(KnownHeader::To, to)
        .call_id(call_id)
        .cseq(cseq)
        .build()
        .map_err(|e| anyhow::anyhow!("in-dialog request: {e}"))?;
    Ok(Message::from(req).to_bytes())
}

/// The user part of a SIP URI (empty for others).
fn user_of(uri: &Uri) -> String {
    uri.as_sip()
        .and_then(|s| s.user.as_ref())
        .map(|u| String::from_utf8_lossy(u).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two agents back to back: one places calls at the other's callee
    /// socket (as if it were a switch), which answers; both sides hand out
    /// legs whose RTP peers are each other's sockets; BYE ends both.
    #[test]
    fn places_answers_and_hangs_up() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut callee = Agent::new("127.0.0.1:9".parse().unwrap(), any).unwrap();
        let mut caller = Agent::new(callee.uas_addr(), any).unwrap();
        let ids: Vec<String> = (0..3)
            .map(|i| caller.place(&format!("+1555000{i}")).unwrap())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut placed, mut answered) = (Vec::new(), Vec::new());
        while (placed.len() < 3 || answered.len() < 3) && Instant::now() < deadline {
            caller.pump(Duration::from_millis(5)).unwrap();
            callee.pump(Duration::from_millis(5)).unwrap();
            placed.extend(caller.take_placed());
            answered.extend(callee.take_answered());
        }
        assert_eq!((placed.len(), answered.len()), (3, 3));
        let mut users: Vec<_> = answered.iter().map(|l| l.user.clone()).collect();
        users.sort();
        assert_eq!(users, ["+15550000", "+15550001", "+15550002"]);
        for p in &placed {
            let a = answered.iter().find(|a| a.call_id == p.call_id).unwrap();
            assert_eq!(p.endpoint.to, a.endpoint.local);
            assert_eq!(a.endpoint.to, p.endpoint.local);
        }
        for id in &ids {
            caller.hang_up(id).unwrap();
        }
        while caller.tally().placed_ended < 3 && Instant::now() < deadline {
            caller.pump(Duration::from_millis(5)).unwrap();
            callee.pump(Duration::from_millis(5)).unwrap();
        }
        assert_eq!(caller.tally().placed_ended, 3);
        assert_eq!(callee.tally().answered_ended, 3);
    }
}
