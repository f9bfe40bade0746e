//! Whole calls through the public API: two user agents, each a
//! `TransactionLayer` plus a `DialogTable` and a few lines of TU, over an
//! in-process network that delays and drops datagrams (seeded, so every
//! run is the same). Time jumps from deadline to deadline, as in
//! quinn-proto's `Pair::drive`, so minutes of protocol time take
//! milliseconds.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_sip::dialog::{
    DialogConfig, DialogEvent, DialogState, Incoming, Local, SessionTimerConfig, Termination,
};
use codeb_sip::transaction::{Config, Event, IdGenerator, Peer, TransactionLayer, Transmit};
use codeb_sip::{
    Dialog, DialogId, DialogTable, Host, Method, NameAddr, Request, RequestBuilder, StatusCode,
    TransactionId, Transport, Uri, Via,
};

const LATENCY: Duration = Duration::from_millis(20);
const ALICE: &str = "192.0.2.10";
const BOB: &str = "192.0.2.20";

fn peer(ip: &str) -> Peer {
    Peer::udp(format!("{ip}:5060").parse().unwrap())
}

/// Delivers datagrams after `LATENCY`, dropping a seeded share of them.
struct Net {
    rng: IdGenerator,
    loss_percent: u64,
    in_flight: BTreeMap<(Instant, u64), (Peer, Peer, Bytes)>,
    seq: u64,
    dropped: usize,
}

impl Net {
    fn send(&mut self, now: Instant, from: &Peer, t: Transmit<Peer>) {
        if self.rng.below(100) < self.loss_percent {
            self.dropped += 1;
            return;
        }
        self.seq += 1;
        self.in_flight.insert(
            (now + LATENCY, self.seq),
            (from.clone(), t.destination, t.payload),
        );
    }

    fn next(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|(at, _)| *at)
    }
}

#[derive(PartialEq)]
enum Role {
    Caller,
    Callee,
}

/// One user agent: its tables and the TU's memory of its one call.
struct Ua {
    role: Role,
    me: Peer,
    local: Local,
    layer: TransactionLayer<Peer>,
    dialogs: DialogTable<Peer>,
    ids: IdGenerator,
    config: DialogConfig,
    invite: Option<Request>,
    dialog: Option<DialogId>,
    reinvite_at: Option<Instant>,
    hang_up_at: Option<Instant>,
    log: Vec<String>,
}

impl Ua {
    fn new(role: Role, ip: &str, user: &str, seed: u64) -> Self {
        Self {
            role,
            me: peer(ip),
            local: Local {
                transport: Transport::Udp,
                host: Host::from_bytes(ip.to_owned()).unwrap(),
                port: Some(5060),
                contact: NameAddr::from_bytes(format!("<sip:{user}@{ip}:5060>")).unwrap(),
            },
            layer: TransactionLayer::new(Config::default()),
            dialogs: DialogTable::new(16),
            ids: IdGenerator::new(seed),
            config: DialogConfig {
                session_timer: Some(SessionTimerConfig {
                    session_expires: 120,
                    ..SessionTimerConfig::default()
                }),
                ..DialogConfig::default()
            },
            invite: None,
            dialog: None,
            reinvite_at: None,
            hang_up_at: None,
            log: Vec::new(),
        }
    }

    fn next(&mut self) -> Option<Instant> {
        [
            self.layer.poll_timeout(),
            self.dialogs.poll_timeout(),
            self.reinvite_at,
            self.hang_up_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn send(&mut self, now: Instant, request: Request) {
        self.layer.send_request(now, request, peer(BOB)).unwrap();
    }

    /// The caller starts the call.
    fn call(&mut self, now: Instant) {
        let via = Via::new(
            &Transport::Udp,
            &self.local.host,
            self.local.port,
            &self.ids.branch(),
            true,
        )
        .unwrap();
        let from = NameAddr::from_bytes("<sip:alice@example.com>")
            .unwrap()
            .with_tag(&self.ids.tag())
            .unwrap();
        let b = RequestBuilder::new(Method::Invite, Uri::parse("sip:bob@192.0.2.20").unwrap())
            .via(&via)
            .max_forwards(70)
            .from(&from)
            .to(&NameAddr::from_bytes("<sip:bob@example.com>").unwrap())
            .call_id(self.ids.call_id(Some(ALICE.as_bytes())))
            .cseq(1)
            .contact(&self.local.contact);
        let invite = self.config.session_timer.unwrap().offer(b).build().unwrap();
        self.invite = Some(invite.clone());
        self.send(now, invite);
    }

    /// The TU: reacts to everything the tables report, then runs its own
    /// schedule.
    fn react(&mut self, now: Instant) {
        while let Some(ev) = self.layer.poll_event() {
            match ev {
                Event::Request {
                    id,
                    request,
                    source,
                } => self.on_request(now, id, request, source),
                Event::Ack { request, .. } => {
                    if let Some(d) = self.dialogs.find_request(&request) {
                        let r = self.dialogs.update(&d, |d| d.handle_request(now, &request));
                        self.log.push(format!("ACK {r:?}"));
                    }
                }
                Event::Response { response, .. } => self.on_response(now, response),
                Event::Timeout { timer, .. } => self.log.push(format!("timeout {timer:?}")),
                _ => {}
            }
        }
        while let Some((_, ev)) = self.dialogs.poll_event() {
            if ev == DialogEvent::Confirmed && self.role == Role::Caller {
                self.reinvite_at = Some(now + Duration::from_secs(100));
                self.hang_up_at = Some(now + Duration::from_secs(300));
            }
            if ev == DialogEvent::RefreshDue
                && let Some(d) = &self.dialog
                && let Some(Ok(r)) = self
                    .dialogs
                    .update(d, |d| d.request(Method::Update).map(|b| b.build()))
            {
                self.send(now, r.unwrap());
            }
            self.log.push(format!("{ev:?}"));
        }
        let Some(d) = self.dialog.clone() else { return };
        for (at, method) in [
            (&mut self.reinvite_at, Method::Invite),
            (&mut self.hang_up_at, Method::Bye),
        ] {
            if at.is_some_and(|at| at <= now) {
                *at = None;
                if let Some(Ok(b)) = self.dialogs.update(&d, |d| d.request(method)) {
                    self.layer
                        .send_request(now, b.build().unwrap(), peer(BOB))
                        .unwrap();
                }
            }
        }
    }

    fn on_response(&mut self, now: Instant, response: codeb_sip::Response) {
        let status = response.status.as_u16();
        let method = response.headers.cseq().unwrap().method;
        self.log.push(format!("{status} {method}"));
        match self.dialogs.find_response(&response) {
            Some(d) => {
                self.dialogs
                    .update(&d, |d| d.handle_response(now, &response));
            }
            None if method == Method::Invite && (101..300).contains(&status) => {
                let invite = self.invite.clone().unwrap();
                let d = Dialog::uac(
                    now,
                    &invite,
                    &response,
                    self.local.clone(),
                    peer(BOB),
                    self.config,
                    &mut self.ids,
                )
                .unwrap();
                self.dialog = Some(self.dialogs.insert(d).unwrap());
            }
            None => {}
        }
    }

    fn on_request(&mut self, now: Instant, id: TransactionId, request: Request, source: Peer) {
        self.log.push(format!("got {}", request.method));
        if request.method == Method::Invite && DialogId::of_request(&request).is_none() {
            let tag = self.ids.tag();
            let mut d = Dialog::uas(
                &request,
                &tag,
                self.local.clone(),
                source,
                self.config,
                &mut self.ids,
            )
            .unwrap();
            for status in [StatusCode::RINGING, StatusCode::OK] {
                let r = d.reply(&request, status).build().unwrap();
                d.sent_response(now, &r);
                self.layer.respond(now, id, r).unwrap();
            }
            self.dialog = Some(self.dialogs.insert(d).unwrap());
            return;
        }
        let Some(d) = self.dialogs.find_request(&request) else {
            let r = request
                .reply(StatusCode::CALL_DOES_NOT_EXIST, None)
                .build()
                .unwrap();
            self.layer.respond(now, id, r).unwrap();
            return;
        };
        let response = self
            .dialogs
            .update(&d, |d| match d.handle_request(now, &request) {
                Incoming::Accept => {
                    let r = d.reply(&request, StatusCode::OK).build().unwrap();
                    d.sent_response(now, &r);
                    Some(r)
                }
                Incoming::Reject(r) => Some(r),
                _ => None,
            });
        if let Some(Some(r)) = response {
            self.layer.respond(now, id, r).unwrap();
        }
    }
}

/// Runs a call with `loss_percent` loss until both sides are idle.
fn run_call(seed: u64, loss_percent: u64) -> (Ua, Ua, Net, Duration) {
    let t0 = Instant::now();
    let mut alice = Ua::new(Role::Caller, ALICE, "alice", seed);
    let mut bob = Ua::new(Role::Callee, BOB, "bob", seed.wrapping_mul(31) + 7);
    let mut net = Net {
        rng: IdGenerator::new(seed ^ 0x5eed),
        loss_percent,
        in_flight: BTreeMap::new(),
        seq: 0,
        dropped: 0,
    };
    alice.call(t0);
    let mut now = t0;
    for _ in 0..100_000 {
        for ua in [&mut alice, &mut bob] {
            ua.layer.handle_timeout(now);
            ua.dialogs.handle_timeout(now);
            ua.react(now);
            let me = ua.me.clone();
            while let Some(t) = ua.layer.poll_transmit() {
                net.send(now, &me, t);
            }
            while let Some(t) = ua.dialogs.poll_transmit() {
                net.send(now, &me, t);
            }
        }
        let next = [net.next(), alice.next(), bob.next()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { break };
        now = next.max(now);
        while net.next().is_some_and(|at| at <= now) {
            let Some((_, (from, to, bytes))) = net.in_flight.pop_first() else {
                break;
            };
            let msg = codeb_sip::parse_datagram(bytes, &codeb_sip::Limits::default()).unwrap();
            let ua = if to.addr == alice.me.addr {
                &mut alice
            } else {
                &mut bob
            };
            ua.layer.handle_message(now, msg, from);
        }
    }
    (alice, bob, net, now - t0)
}

#[test]
fn a_call_on_a_clean_network() {
    let wall = Instant::now();
    let (alice, bob, net, elapsed) = run_call(1, 0);
    assert_eq!(net.dropped, 0);
    let calls = |ua: &Ua, what: &str| ua.log.iter().filter(|l| *l == what).count();
    assert_eq!(
        calls(&bob, "got INVITE"),
        2,
        "the call and the re-INVITE: {:?}",
        bob.log
    );
    assert_eq!(calls(&bob, "got BYE"), 1);
    assert_eq!(calls(&alice, "Confirmed"), 1);
    assert_eq!(calls(&alice, "200 BYE"), 1);
    assert_eq!(calls(&alice, "Terminated(LocalBye)"), 1);
    assert_eq!(calls(&bob, "Terminated(RemoteBye)"), 1);
    // Session timers kept the call up: 120 s interval, Alice refreshing.
    assert!(calls(&bob, "got UPDATE") >= 1, "{:?}", bob.log);
    assert!(
        !alice
            .log
            .iter()
            .chain(&bob.log)
            .any(|l| l.contains("Expired") || l.contains("timeout"))
    );
    for ua in [&alice, &bob] {
        assert!(ua.layer.is_empty() && ua.dialogs.is_empty(), "{:?}", ua.log);
    }
    assert!(elapsed >= Duration::from_secs(300));
    assert!(
        wall.elapsed() < Duration::from_secs(5),
        "protocol time must be simulated"
    );
}

#[test]
fn calls_survive_a_lossy_network() {
    let mut total_dropped = 0;
    for seed in 0..40 {
        let (alice, bob, net, _) = run_call(seed, 30);
        total_dropped += net.dropped;
        let seen = |ua: &Ua, what: &str| ua.log.iter().filter(|l| *l == what).count();
        // Retransmissions never reach the TU twice.
        assert_eq!(seen(&bob, "got INVITE"), 2, "seed {seed}: {:?}", bob.log);
        assert_eq!(seen(&bob, "got BYE"), 1, "seed {seed}: {:?}", bob.log);
        assert_eq!(seen(&alice, "Confirmed"), 1, "seed {seed}");
        assert_eq!(seen(&alice, "Terminated(LocalBye)"), 1, "seed {seed}");
        assert_eq!(
            seen(&bob, "Terminated(RemoteBye)"),
            1,
            "seed {seed}: {:?}",
            bob.log
        );
        assert!(
            !bob.log.iter().any(|l| l.contains("AckTimeout")),
            "seed {seed}: {:?}",
            bob.log
        );
        for ua in [&alice, &bob] {
            assert!(ua.layer.is_empty() && ua.dialogs.is_empty(), "seed {seed}");
        }
    }
    assert!(
        total_dropped > 100,
        "the network must actually lose packets"
    );
}

#[test]
fn a_dead_callee_is_released_by_the_session_timer() {
    // Bob answers, then vanishes: no ACK handling matters, but Alice must
    // not keep the call forever. Alice is not the refresher here, so her
    // expiry fires and the TU would send BYE.
    let t0 = Instant::now();
    let mut ids = IdGenerator::new(99);
    let mut alice = Ua::new(Role::Caller, ALICE, "alice", 5);
    alice.config.session_timer = Some(SessionTimerConfig {
        session_expires: 120,
        we_refresh: false,
        ..SessionTimerConfig::default()
    });
    alice.call(t0);
    let invite = alice.invite.clone().unwrap();
    let bob_cfg = DialogConfig {
        session_timer: Some(SessionTimerConfig {
            session_expires: 120,
            we_refresh: true,
            ..SessionTimerConfig::default()
        }),
        ..DialogConfig::default()
    };
    let bob = Dialog::uas(
        &invite,
        b"gone",
        Ua::new(Role::Callee, BOB, "bob", 1).local,
        peer(ALICE),
        bob_cfg,
        &mut ids,
    )
    .unwrap();
    let ok = bob.reply(&invite, StatusCode::OK).build().unwrap();
    alice
        .layer
        .handle_message(t0 + LATENCY, ok.into(), peer(BOB));
    alice.react(t0 + LATENCY);
    let d = alice.dialog.clone().unwrap();
    assert_eq!(
        alice.dialogs.get(&d).unwrap().state(),
        DialogState::Confirmed
    );
    assert_eq!(
        alice.dialogs.get(&d).unwrap().session_timer(),
        Some((120, false))
    );
    let mut now = t0;
    while let Some(at) = alice.dialogs.poll_timeout() {
        now = at;
        alice.dialogs.handle_timeout(now);
        if let Some((_, DialogEvent::SessionExpired)) = alice.dialogs.poll_event() {
            break;
        }
    }
    assert_eq!(now - (t0 + LATENCY), Duration::from_secs(120 - 32));
    let bye = alice
        .dialogs
        .update(&d, |d| d.request(Method::Bye).map(|_| ()));
    assert_eq!(bye, Some(Ok(())));
    assert_eq!(
        alice.dialogs.poll_event(),
        Some((d, DialogEvent::Terminated(Termination::LocalBye)))
    );
}
