//! A user's contact that says `transport=tcp` is rung over TCP (RFC 3261
//! §18.1.1, §19.1.1): over the connection its REGISTER came on while that
//! is open, else over a connection the switch opens to the contact; one
//! naming a transport the switch does not speak is skipped.

use codeb_io::ConnId;
use codeb_sip::cancel_for;
use codeb_sip::digest::{Answer, authorize, pick_challenge};
use codeb_sip::header::Contact;

use super::tcp_trunk::conn;
use super::*;
use crate::registrar::Registration;

/// Alex's phone: the address its TCP connection comes from (an ephemeral
/// port) and the one its contact names.
const ALEX_CONN: &str = "198.51.100.7:40001";
const ALEX: &str = "198.51.100.7:5062";
/// Carl: a PBX-style peer with a fixed TCP contact.
const CARL: &str = "198.51.100.9:5070";
/// Dana: a fixed contact over TLS only.
const DANA: &str = "198.51.100.11:5061";

/// DID 4000 rings alex (who registers), 4100 carl, 4200 dana, 4300 erin
/// (a fixed UDP contact at B2).
fn harness() -> Harness {
    Harness::with_config(
        None,
        &format!(
            r#"
[[users]]
name = "alex"
password = "alexpw"

[[users]]
name = "carl"
contact = "sip:carl@{CARL};transport=TCP"

[[users]]
name = "dana"
contact = "sip:dana@{DANA};transport=tls"

[[users]]
name = "erin"
contact = "sip:erin@{B2}"

[[routes]]
did = "4000"
user = "alex"

[[routes]]
did = "4100"
user = "carl"

[[routes]]
did = "4200"
user = "dana"

[[routes]]
did = "4300"
user = "erin"
"#
        ),
    )
}

fn phone_local(at: &str, user: &str) -> Local {
    let a = addr(at);
    Local {
        transport: Transport::Tcp,
        host: Host::from_bytes(a.ip().to_string()).unwrap(),
        port: Some(a.port()),
        contact: NameAddr::from_bytes(format!("<sip:{user}@{a};transport=tcp>")).unwrap(),
    }
}

fn tcp_flow(id: ConnId, peer: &str) -> Flow {
    Flow::Tcp {
        conn: id,
        peer: addr(peer),
    }
}

impl Harness {
    /// Alex's REGISTER (CSeq `cseq`, optionally answering a challenge).
    fn alex_register(&mut self, cseq: u32, auth: Option<String>) -> Request {
        self.register_as("alex", cseq, auth)
    }

    /// `user`'s REGISTER from Alex's phone.
    fn register_as(&mut self, user: &str, cseq: u32, auth: Option<String>) -> Request {
        let via = Via::new(
            &Transport::Tcp,
            &Host::from_bytes("198.51.100.7").unwrap(),
            Some(5062),
            &self.ids.branch(),
            true,
        )
        .unwrap();
        let aor = format!("<sip:{user}@{}>", addr(SW).ip());
        let mut b = RequestBuilder::new(Method::Register, Uri::parse(format!("sip:{SW}")).unwrap())
            .via(&via)
            .max_forwards(70)
            .from(
                &NameAddr::from_bytes(aor.clone())
                    .unwrap()
                    .with_tag(b"regtag")
                    .unwrap(),
            )
            .to(&NameAddr::from_bytes(aor).unwrap())
            .call_id(Bytes::from_static(b"alex-reg-1"))
            .cseq(cseq)
            .contact(&phone_local(ALEX, user).contact)
            .header(KnownHeader::Expires, "3600");
        if let Some(a) = auth {
            b = b.header(KnownHeader::Authorization, a);
        }
        b.build().unwrap()
    }

    /// Alex registers over connection `id`, digest and all.
    fn alex_registers_over(&mut self, id: ConnId) {
        self.core.handle_connection(self.now, id, addr(ALEX_CONN));
        let first = self.alex_register(1, None);
        self.send_tcp(id, first);
        let challenge = response(self.one(ALEX_CONN));
        assert_eq!(challenge.status, StatusCode::UNAUTHORIZED);
        let challenges = challenge.headers.www_authenticates().unwrap();
        let ch = pick_challenge(challenges.iter(), None).unwrap();
        let uri = format!("sip:{SW}");
        let answer = Answer {
            username: "alex",
            password: "alexpw",
            method: "REGISTER",
            uri: &uri,
            cnonce: "0a1b2c3d",
            nc: 1,
        };
        let second = self.alex_register(2, Some(authorize(&ch, &answer).unwrap()));
        self.send_tcp(id, second);
        let ok = response(self.one(ALEX_CONN));
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(self.flows.remove(&addr(ALEX_CONN)).unwrap().len(), 2);
    }

    /// The IO loop opens the connection the core asks for to `peer` as
    /// `id`, and it comes up.
    fn connect(&mut self, peer: &str, id: ConnId) {
        assert_eq!(self.core.poll_connect(), Some(addr(peer)));
        assert_eq!(self.core.poll_connect(), None, "one connection");
        self.core.handle_connecting(self.now, addr(peer), id);
        assert!(self.take(peer).is_empty(), "nothing before it is up");
        self.core.handle_connection(self.now, id, addr(peer));
        self.collect();
    }
}

fn uri_text(uri: &Uri) -> String {
    let mut b = bytes::BytesMut::new();
    uri.render(&mut b);
    String::from_utf8_lossy(&b).into_owned()
}

/// What a B-leg INVITE over TCP says about its transport.
fn assert_tcp_invite(invite: &Request) {
    assert_eq!(invite.method, Method::Invite);
    let via = header(invite, KnownHeader::Via).unwrap();
    assert!(via.starts_with("SIP/2.0/TCP 192.0.2.1:5060;"), "{via}");
    let contact = header(invite, KnownHeader::Contact).unwrap();
    assert!(contact.contains(";transport=tcp"), "{contact}");
}

impl Harness {
    /// A calls alex (registered over `id`), who answers over it: the
    /// INVITE, retransmission-free, and the ACK all take that connection.
    /// A's dialog and alex's.
    fn alex_answers_over(&mut self, id: ConnId) -> (Dialog<Peer>, Dialog<Peer>) {
        let h = self;
        let invite = h.invite_from_a("4000", &[]);
        h.send(A, invite.clone());
        let to_alex = request(h.one(ALEX_CONN));
        assert_tcp_invite(&to_alex);
        assert_eq!(
            uri_text(&to_alex.uri),
            format!("sip:alex@{ALEX};transport=tcp"),
            "the contact, as registered"
        );
        assert_eq!(h.core.poll_connect(), None, "no new connection");
        assert!(h.take(ALEX).is_empty());
        // Reliable: no Timer A retransmissions.
        h.advance(secs(4));
        assert!(h.take(ALEX_CONN).is_empty(), "no retransmission over TCP");

        // Alex answers over the connection; the ACK goes back on it.
        let mut alex = Dialog::uas(
            &to_alex,
            b"alextag",
            phone_local(ALEX, "alex"),
            Peer::tcp(addr(SW)),
            peer_config(None),
            &mut h.ids,
        )
        .unwrap();
        let ok = alex
            .reply(&to_alex, StatusCode::OK)
            .body(&super::super::sdp_type(), sdp_answer("198.51.100.7", 44000))
            .build()
            .unwrap();
        alex.sent_response(h.now, &ok);
        h.send_tcp(id, ok);
        let ack = request(h.one(ALEX_CONN));
        assert_eq!(ack.method, Method::Ack);
        let ok_a = response(h.one(A));
        assert_eq!(ok_a.status, StatusCode::OK);
        let a = a_dialog(h, &invite, &ok_a, true, None);
        (a, alex)
    }
}

#[test]
fn a_user_registered_over_tcp_is_rung_on_that_connection_for_the_whole_call() {
    let mut h = harness();
    h.alex_registers_over(conn(5));
    let (mut a, alex) = h.alex_answers_over(conn(5));

    // Alex's binding ends mid-call and his phone stays quiet past the idle
    // timeout: the connection stays, as the call is carried over it.
    h.alex_binding_over(conn(5), 3, 0);
    assert!(h.core.registrar().lookup("alex", h.now).is_empty());
    h.core.handle_timeout(h.now);
    h.advance(secs(11 * 60));
    assert!(h.core.take_closes().is_empty());

    // A hangs up: the BYE to alex takes the same connection.
    let bye = a.request(Method::Bye).unwrap().build().unwrap();
    h.send(A, bye);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    let bye_alex = request(h.one(ALEX_CONN));
    assert_eq!(bye_alex.method, Method::Bye);
    let via = header(&bye_alex, KnownHeader::Via).unwrap();
    assert!(via.starts_with("SIP/2.0/TCP "), "{via}");
    h.send_tcp(
        conn(5),
        alex.reply(&bye_alex, StatusCode::OK).build().unwrap(),
    );
    assert_eq!(h.core.active_calls(), 0);
    let flows = h.flows.remove(&addr(ALEX_CONN)).unwrap();
    assert_eq!(flows.len(), 3, "INVITE, ACK, BYE");
    assert!(flows.iter().all(|f| *f == tcp_flow(conn(5), ALEX_CONN)));

    // Once that connection is gone, the next call opens one to the
    // contact's address.
    h.alex_binding_over(conn(5), 4, 3600);
    h.core
        .handle_stream_closed(h.now, conn(5), "closed by the peer");
    let invite = h.invite_from_a("4000", &[]);
    h.send(A, invite);
    h.connect(ALEX, conn(6));
    assert_tcp_invite(&request(h.one(ALEX)));
    assert_eq!(h.flows[&addr(ALEX)], [tcp_flow(conn(6), ALEX)]);
    assert!(h.take(ALEX_CONN).is_empty());
}

#[test]
fn a_bye_after_the_phone_dropped_its_connection_goes_over_a_new_one() {
    let mut h = harness();
    h.alex_registers_over(conn(5));
    let (mut a, alex) = h.alex_answers_over(conn(5));
    h.core
        .handle_stream_closed(h.now, conn(5), "closed by the peer");
    h.flows.clear();

    // A hangs up: the BYE goes to the port alex's Contact names, at the
    // address his connection came from (§18.1.1), over a new connection,
    // and the dialog stays on it.
    let bye = a.request(Method::Bye).unwrap().build().unwrap();
    h.send(A, bye);
    assert_eq!(response(h.one(A)).status, StatusCode::OK);
    h.connect(ALEX, conn(6));
    let bye_alex = request(h.one(ALEX));
    assert_eq!(bye_alex.method, Method::Bye);
    h.send_tcp(
        conn(6),
        alex.reply(&bye_alex, StatusCode::OK).build().unwrap(),
    );
    assert_eq!(h.core.active_calls(), 0);
    assert_eq!(h.flows[&addr(ALEX)], [tcp_flow(conn(6), ALEX)]);
    assert!(!h.flows.contains_key(&addr(ALEX_CONN)));
}

#[test]
fn a_contact_registered_over_udp_with_transport_tcp_gets_a_connection() {
    let mut h = harness();
    let raw = Bytes::from(format!("<sip:alex@{ALEX};transport=Tcp>"));
    let contact = Contact::parse(&raw, &raw, &Limits::default()).unwrap();
    let now = h.now;
    h.core
        .registrar_mut()
        .register(
            &Registration {
                user: "alex",
                contacts: &[contact],
                header_expires: Some(3600),
                call_id: b"reg-udp",
                cseq: 1,
                source: addr(ALEX),
                conn: None,
            },
            now,
        )
        .unwrap();
    let invite = h.invite_from_a("4000", &[]);
    h.send(A, invite);
    h.connect(ALEX, conn(9));
    assert_tcp_invite(&request(h.one(ALEX)));
    assert_eq!(h.flows[&addr(ALEX)], [tcp_flow(conn(9), ALEX)]);
}

#[test]
fn a_fixed_tcp_contact_gets_a_new_connection_that_carries_the_cancel() {
    let mut h = harness();
    let invite = h.invite_from_a("4100", &[]);
    h.send(A, invite.clone());
    assert!(h.take(CARL).is_empty(), "waits for the connection");
    h.connect(CARL, conn(3));
    let to_carl = request(h.one(CARL));
    assert_tcp_invite(&to_carl);
    assert_eq!(
        uri_text(&to_carl.uri),
        format!("sip:carl@{CARL};transport=TCP")
    );

    let ringing = to_carl
        .reply(StatusCode::new(180).unwrap(), Some(b"carltag"))
        .build()
        .unwrap();
    h.send_tcp(conn(3), ringing);
    assert_eq!(response(h.one(A)).status.as_u16(), 180);

    // A gives up: the CANCEL, and the ACK of carl's 487, use the same
    // connection.
    h.send(A, cancel_for(&invite).unwrap());
    let cancel = request(h.one(CARL));
    assert_eq!(cancel.method, Method::Cancel);
    let via = header(&cancel, KnownHeader::Via).unwrap();
    assert!(via.starts_with("SIP/2.0/TCP "), "{via}");
    h.send_tcp(
        conn(3),
        cancel
            .reply(StatusCode::OK, Some(b"carltag"))
            .build()
            .unwrap(),
    );
    h.send_tcp(
        conn(3),
        to_carl
            .reply(StatusCode::new(487).unwrap(), Some(b"carltag"))
            .build()
            .unwrap(),
    );
    let ack = request(h.one(CARL));
    assert_eq!(ack.method, Method::Ack);
    let statuses: Vec<u16> = h
        .take(A)
        .into_iter()
        .map(|m| response(m).status.as_u16())
        .collect();
    assert!(statuses.contains(&487), "{statuses:?}");
    assert_eq!(h.core.active_calls(), 0);
    let flows = &h.flows[&addr(CARL)];
    assert_eq!(flows.len(), 3, "INVITE, CANCEL, ACK");
    assert!(flows.iter().all(|f| *f == tcp_flow(conn(3), CARL)));
    assert_eq!(h.core.stats.outbound.connects, 1);
}

#[test]
fn a_contact_over_a_transport_we_lack_is_skipped() {
    let mut h = harness();
    // Dana's only contact is TLS: she is offline.
    let invite = h.invite_from_a("4200", &[]);
    h.send(A, invite);
    assert_eq!(
        response(h.one(A)).status,
        StatusCode::TEMPORARILY_UNAVAILABLE
    );
    assert!(h.take(DANA).is_empty());
    assert_eq!(h.core.poll_connect(), None);
    assert_eq!(h.core.active_calls(), 0);

    // Erin registered a TLS and a SIPS contact beside her fixed UDP one:
    // only the UDP one rings.
    let raws = [
        Bytes::from_static(b"<sip:erin@198.51.100.12:5061;transport=TLS>"),
        Bytes::from_static(b"<sips:erin@198.51.100.13:5061>"),
    ];
    let contacts: Vec<Contact> = raws
        .iter()
        .map(|r| Contact::parse(r, r, &Limits::default()).unwrap())
        .collect();
    let now = h.now;
    h.core
        .registrar_mut()
        .register(
            &Registration {
                user: "erin",
                contacts: &contacts,
                header_expires: Some(3600),
                call_id: b"reg-tls",
                cseq: 1,
                source: addr("198.51.100.12:40000"),
                conn: None,
            },
            now,
        )
        .unwrap();
    assert_eq!(h.core.registrar().lookup("erin", now).len(), 2);
    let invite = h.invite_from_a("4300", &[]);
    h.send(A, invite);
    let to_erin = request(h.one(B2));
    assert_eq!(to_erin.method, Method::Invite);
    let via = header(&to_erin, KnownHeader::Via).unwrap();
    assert!(via.starts_with("SIP/2.0/UDP "), "{via}");
    assert_eq!(h.flows.len(), 2, "A and B2 only: {:?}", h.flows.keys());
    assert_eq!(h.core.poll_connect(), None);
}

#[test]
fn the_ais_transfer_rings_a_user_on_the_connection_he_registered_over() {
    let (mut h, _carrier, key) = super::transfer::answered_ai_call("oac-tcp1");
    // Bob registered from another phone over TCP, beside his fixed UDP
    // contact at B.
    h.core.handle_connection(h.now, conn(5), addr(ALEX_CONN));
    let raw = Bytes::from(format!("<sip:bob@{ALEX};transport=tcp>"));
    let contact = Contact::parse(&raw, &raw, &Limits::default()).unwrap();
    let now = h.now;
    h.core
        .registrar_mut()
        .register(
            &Registration {
                user: "bob",
                contacts: &[contact],
                header_expires: Some(3600),
                call_id: b"reg-bob-tcp",
                cseq: 1,
                source: addr(ALEX_CONN),
                conn: Some(conn(5)),
            },
            now,
        )
        .unwrap();
    h.flows.clear();
    super::transfer::transfer_to(&mut h, key, "bob");
    assert_tcp_invite(&request(h.one(ALEX_CONN)));
    assert_eq!(h.flows[&addr(ALEX_CONN)], [tcp_flow(conn(5), ALEX_CONN)]);
    let to_b = request(h.one(B));
    let via = header(&to_b, KnownHeader::Via).unwrap();
    assert!(via.starts_with("SIP/2.0/UDP "), "{via}");
    assert_eq!(h.core.poll_connect(), None);
}

impl Harness {
    /// Alex's phone refreshes (or, with `expires` 0, removes) its binding
    /// over connection `id`, as the registrar sees it after digest.
    fn alex_binding_over(&mut self, id: ConnId, cseq: u32, expires: u32) {
        let raw = Bytes::from(format!("<sip:alex@{ALEX};transport=tcp>"));
        let contact = Contact::parse(&raw, &raw, &Limits::default()).unwrap();
        let now = self.now;
        self.core
            .registrar_mut()
            .register(
                &Registration {
                    user: "alex",
                    contacts: &[contact],
                    header_expires: Some(expires),
                    call_id: b"alex-reg-1",
                    cseq,
                    source: addr(ALEX_CONN),
                    conn: Some(id),
                },
                now,
            )
            .unwrap();
    }

    /// The switch's raw sends on `id` since the last look, before the
    /// harness parses them (a keep-alive pong is not a SIP message).
    fn raw_sends_on(&mut self, id: ConnId) -> Vec<Bytes> {
        let mut on = Vec::new();
        while let Some(out) = self.core.poll_transmit() {
            assert!(matches!(out.flow, Flow::Tcp { conn, .. } if conn == id));
            on.push(out.payload);
        }
        on
    }
}

#[test]
fn a_crlf_ping_gets_one_pong_however_it_arrives() {
    let mut h = harness();
    h.core.handle_connection(h.now, conn(5), addr(ALEX_CONN));
    h.core.handle_stream_data(h.now, conn(5), b"\r\n\r\n");
    assert_eq!(h.raw_sends_on(conn(5)), [Bytes::from_static(b"\r\n")]);
    // Split across two reads, it is still one ping.
    h.core.handle_stream_data(h.now, conn(5), b"\r\n");
    assert!(h.raw_sends_on(conn(5)).is_empty(), "half a ping");
    h.core.handle_stream_data(h.now, conn(5), b"\r\n");
    assert_eq!(h.raw_sends_on(conn(5)), [Bytes::from_static(b"\r\n")]);
    // A flood in one read gets one pong, not one per ping.
    h.core
        .handle_stream_data(h.now, conn(5), "\r\n".repeat(2000).as_bytes());
    assert_eq!(h.raw_sends_on(conn(5)).len(), 1);
    // A lone CRLF before a message (RFC 3261 §7.5) is no ping.
    h.core.handle_stream_data(h.now, conn(5), b"\r\n");
    let register = h.alex_register(1, None);
    h.send_tcp(conn(5), register);
    assert_eq!(
        response(h.one(ALEX_CONN)).status,
        StatusCode::UNAUTHORIZED,
        "the REGISTER after it is read, and no pong"
    );
    assert_eq!(h.core.stats.keepalive_pongs, 3);
}

#[test]
fn a_registered_phone_keeps_its_quiet_connection_until_the_binding_ends() {
    let mut h = harness();
    h.core.handle_timeout(h.now);
    h.alex_registers_over(conn(5));
    // Another connection, which registers nothing, idles out.
    h.core
        .handle_connection(h.now, conn(8), addr("198.51.100.20:40100"));
    h.advance(secs(11 * 60));
    assert_eq!(h.core.take_closes(), [conn(8)]);
    // Alex's phone said nothing for 11 minutes (no pings either), but it
    // is registered for an hour: a call still reaches it on its own
    // connection, the only way to a phone behind NAT.
    let invite = h.invite_from_a("4000", &[]);
    h.send(A, invite);
    let to_alex = request(h.one(ALEX_CONN));
    assert_tcp_invite(&to_alex);
    assert_eq!(h.flows[&addr(ALEX_CONN)], [tcp_flow(conn(5), ALEX_CONN)]);
    assert_eq!(h.core.poll_connect(), None);
    let busy = to_alex
        .reply(StatusCode::new(486).unwrap(), Some(b"alextag"))
        .build()
        .unwrap();
    h.send_tcp(conn(5), busy);
    assert_eq!(request(h.one(ALEX_CONN)).method, Method::Ack);
    assert_eq!(response(h.one(A)).status.as_u16(), 486);
    assert_eq!(h.core.active_calls(), 0);
    // Once the binding has expired, the quiet connection is closed.
    h.advance(secs(3600));
    assert_eq!(h.core.take_closes(), [conn(5)]);
}

/// A REGISTER whose Authorization was captured and sent again (the same
/// nonce and nonce count) is challenged afresh, not bound: it was taken
/// again and again while the nonce was fresh, so anyone who saw one
/// REGISTER could move the user's calls to their own address. The next
/// count of the same nonce, as a real phone sends, is accepted.
#[test]
fn a_replayed_register_is_challenged_not_bound() {
    let mut h = harness();
    let id = conn(7);
    h.core.handle_connection(h.now, id, addr(ALEX_CONN));
    let first = h.alex_register(1, None);
    h.send_tcp(id, first);
    let challenge = response(h.one(ALEX_CONN));
    let challenges = challenge.headers.www_authenticates().unwrap();
    let ch = pick_challenge(challenges.iter(), None).unwrap();
    let uri = format!("sip:{SW}");
    let answer = |nc| Answer {
        username: "alex",
        password: "alexpw",
        method: "REGISTER",
        uri: &uri,
        cnonce: "0a1b2c3d",
        nc,
    };
    let creds = authorize(&ch, &answer(1)).unwrap();
    let second = h.alex_register(2, Some(creds.clone()));
    h.send_tcp(id, second);
    assert_eq!(response(h.one(ALEX_CONN)).status, StatusCode::OK);
    // The same header again, in a new REGISTER.
    let replay = h.alex_register(3, Some(creds));
    h.send_tcp(id, replay);
    let again = response(h.one(ALEX_CONN));
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(
        header(&again, KnownHeader::WwwAuthenticate).is_some_and(|w| w.contains("stale=true")),
        "a fresh nonce"
    );
    assert_eq!(h.core.stats.digest_replays, 1);
    // The phone's next count of the nonce it has is good.
    let next = h.alex_register(4, Some(authorize(&ch, &answer(2)).unwrap()));
    h.send_tcp(id, next);
    assert_eq!(response(h.one(ALEX_CONN)).status, StatusCode::OK);
}

/// A name the switch does not have is challenged and refused exactly like
/// a known one with a wrong password: 404 told a scanner which exist.
#[test]
fn an_unknown_user_registers_like_a_wrong_password() {
    let mut h = harness();
    let id = conn(7);
    h.core.handle_connection(h.now, id, addr(ALEX_CONN));
    // `user` registers, is challenged, and answers with `password`: the
    // challenge's status, its number of challenges, and the answer's.
    let mut attempt = |user: &str, cseq: u32, password: &str| {
        let first = h.register_as(user, cseq, None);
        h.send_tcp(id, first);
        let challenge = response(h.one(ALEX_CONN));
        let challenges = challenge.headers.www_authenticates().unwrap();
        let ch = pick_challenge(challenges.iter(), None).unwrap();
        let uri = format!("sip:{SW}");
        let creds = authorize(
            &ch,
            &Answer {
                username: user,
                password,
                method: "REGISTER",
                uri: &uri,
                cnonce: "0a1b2c3d",
                nc: 1,
            },
        )
        .unwrap();
        let second = h.register_as(user, cseq + 1, Some(creds));
        h.send_tcp(id, second);
        let refused = response(h.one(ALEX_CONN));
        (challenge.status, challenges.len(), refused.status)
    };
    let known = attempt("alex", 1, "guess");
    assert_eq!(known, (StatusCode::UNAUTHORIZED, 2, StatusCode::FORBIDDEN));
    assert_eq!(attempt("mallory", 3, "guess"), known);
    // Answering with no password at all gets no binding either.
    assert_eq!(attempt("mallory", 5, ""), known);
}

/// One address cannot take the whole connection table: past 256 of its
/// connections the next is closed at once; another address, and the same
/// one once it closed some, still get in.
#[test]
fn one_address_holds_at_most_its_share_of_connections() {
    use crate::sip::core::MAX_CONNECTIONS_PER_ADDRESS as MAX;
    let mut h = harness();
    let n = u32::try_from(MAX).unwrap();
    for i in 0..n {
        h.core.handle_connection(
            h.now,
            conn(100 + i),
            addr(&format!("198.51.100.9:{}", 20000 + i)),
        );
    }
    assert!(h.core.take_closes().is_empty());
    h.core
        .handle_connection(h.now, conn(100 + n), addr("198.51.100.9:30000"));
    assert_eq!(h.core.take_closes(), vec![conn(100 + n)]);
    assert_eq!(h.core.stats.tcp_refused_per_address, 1);
    // Its messages go nowhere.
    let reg = h.alex_register(1, None);
    h.send_tcp(conn(100 + n), reg);
    assert!(h.take("198.51.100.9:30000").is_empty());
    h.core.handle_connection(h.now, conn(7), addr(ALEX_CONN));
    assert!(h.core.take_closes().is_empty(), "another address");
    h.core
        .handle_stream_closed(h.now, conn(100), "closed by the peer");
    h.core
        .handle_connection(h.now, conn(100 + n + 1), addr("198.51.100.9:30001"));
    assert!(h.core.take_closes().is_empty(), "room again");
}
