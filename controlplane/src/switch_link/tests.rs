//! Link tests against an in-process switch node: a tonic server that keeps
//! the `codeb.switch.v1` contract (a journal of numbered events kept until
//! acknowledged, resend from `after_seq`, a new journal id after losing
//! it, PlaceCall idempotent per call and attempt, snapshots not newer than
//! the running one ignored, invalid ones refused whole) with knobs for the
//! failures the link must survive.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codeb_proto::v1 as pb;
use codeb_proto::v1::switch_server::{Switch, SwitchServer};
use codeb_types::{CallStatus, UtcMillis};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::{Dispatched, LinkSettings, SwitchNodes};
use crate::clock::Clock;
use crate::store::testing::{self, TENANT, TestDb, event_data};
use crate::store::{NewCall, Store, TrunkRecord};

#[derive(Debug, Default)]
struct PeerState {
    journal_id: String,
    /// Retained (unacknowledged) events.
    journal: Vec<pb::Event>,
    next_seq: u64,
    running: Option<pb::ConfigSnapshot>,
    applies: u32,
    refuse_config: bool,
    /// ApplyConfig fails with this code.
    config_error: Option<tonic::Code>,
    /// (call_id, attempt) placed; calls still up.
    placed: HashSet<(String, u32)>,
    active: HashSet<String>,
    place_error: Option<tonic::Code>,
    /// Places the call, then answers with this error (its answer lost).
    place_then_error: Option<tonic::Code>,
    /// PlaceCall waits for a permit of this before it places.
    place_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// PlaceCall requests that arrived (placed or not).
    place_requests: u32,
    placements: Vec<pb::PlaceCallRequest>,
    hangups: Vec<String>,
    /// Calls a hangup has started to end (a second one changes nothing).
    ending: HashSet<String>,
    /// Attempts hung up before they were placed here: never placed.
    forbidden: HashSet<(String, u32)>,
    /// A node whose calls take a while to end: a hangup emits no Ended.
    slow_ends: bool,
    subscribes: Vec<(String, u64)>,
    /// Ack requests received (up_to_seq of each).
    acks: Vec<u64>,
    /// A node that forgets to honour after_seq (resends all it retains).
    resend_all: bool,
    /// A node whose idempotency key is the call id alone (every attempt
    /// after the first is a "duplicate").
    dedup_by_call_id: bool,
    max_calls: u32,
    load: f32,
    draining: bool,
    dead: bool,
    /// The process (StatsReply.instance_id).
    instance: String,
}

#[derive(Debug, Clone)]
struct Peer {
    state: Arc<Mutex<PeerState>>,
    changed: Arc<Notify>,
}

impl Peer {
    fn new(journal: &str) -> Peer {
        Peer {
            state: Arc::new(Mutex::new(PeerState {
                journal_id: journal.into(),
                next_seq: 1,
                max_calls: 100,
                instance: "i1".into(),
                ..PeerState::default()
            })),
            changed: Arc::new(Notify::new()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut PeerState) -> R) -> R {
        let r = f(&mut self.state.lock().unwrap());
        self.changed.notify_waiters();
        r
    }

    fn emit(&self, call_id: &str, kind: pb::event::Kind) -> u64 {
        self.emit_as(None, call_id, kind)
    }

    /// `emit` with the tenant given (an inbound call's: the node knows it
    /// from the virtual number, not from a placement).
    fn emit_as(&self, tenant: Option<&str>, call_id: &str, kind: pb::event::Kind) -> u64 {
        self.with(|s| {
            let seq = s.next_seq;
            s.next_seq += 1;
            if matches!(kind, pb::event::Kind::Ended(_)) {
                s.active.remove(call_id);
            }
            let tenant = tenant.map(str::to_owned).unwrap_or_else(|| {
                s.placements
                    .iter()
                    .find(|p| p.call_id == call_id)
                    .map_or(TENANT.to_owned(), |p| p.tenant.clone())
            });
            s.journal.push(pb::Event {
                seq,
                journal_id: s.journal_id.clone(),
                at_unix_ms: 1_780_000_000_000 + seq * 1000,
                call_id: call_id.into(),
                attempt: 0,
                tenant,
                kind: Some(kind),
            });
            seq
        })
    }

    /// The node's process restarted as `instance`: the calls it carried
    /// are gone; its journal is kept (on disk).
    fn restart(&self, instance: &str) {
        self.with(|s| {
            s.instance = instance.into();
            s.active.clear();
        });
    }

    /// The node lost its journal: a new id, seq from 1 again.
    fn lose_journal(&self, new_id: &str) {
        self.with(|s| {
            s.journal_id = new_id.into();
            s.journal.clear();
            s.next_seq = 1;
        });
    }

    fn dead(&self) -> bool {
        self.state.lock().unwrap().dead
    }
}

fn unavailable() -> Status {
    Status::unavailable("node is down")
}

#[tonic::async_trait]
impl Switch for Peer {
    async fn place_call(
        &self,
        request: Request<pb::PlaceCallRequest>,
    ) -> Result<Response<pb::PlaceCallReply>, Status> {
        let r = request.into_inner();
        let gate = self.with(|s| {
            s.place_requests += 1;
            s.place_gate.clone()
        });
        if let Some(gate) = gate {
            let _permit = gate.acquire().await;
        }
        self.with(|s| {
            if s.dead {
                return Err(unavailable());
            }
            if r.call_id.is_empty() || r.phone.is_empty() {
                return Err(Status::invalid_argument("call_id and phone are required"));
            }
            if let Some(code) = s.place_error {
                return Err(Status::new(code, "scripted refusal"));
            }
            if s.forbidden.contains(&(r.call_id.clone(), r.attempt)) {
                return Err(Status::failed_precondition(
                    "hung up before it was placed here",
                ));
            }
            let trunk = if r.trunk_id.is_empty() {
                "tr_00000000000000aa".to_owned()
            } else {
                r.trunk_id.clone()
            };
            let key = (
                r.call_id.clone(),
                if s.dedup_by_call_id { 0 } else { r.attempt },
            );
            let duplicate = !s.placed.insert(key);
            if !duplicate {
                s.active.insert(r.call_id.clone());
                s.placements.push(r);
            }
            if let Some(code) = s.place_then_error {
                return Err(Status::new(code, "placed, but the answer is lost"));
            }
            Ok(Response::new(pb::PlaceCallReply {
                trunk_id: trunk,
                duplicate,
                instance_id: s.instance.clone(),
            }))
        })
    }

    async fn hangup(
        &self,
        request: Request<pb::HangupRequest>,
    ) -> Result<Response<pb::HangupReply>, Status> {
        let r = request.into_inner();
        let (known, already_ending, slow) = self.with(|s| {
            if s.dead {
                return Err(unavailable());
            }
            s.hangups.push(r.call_id.clone());
            let known = s.active.contains(&r.call_id);
            let already = known && !s.ending.insert(r.call_id.clone());
            let attempt = (r.call_id.clone(), r.attempt);
            // Named with its attempt: one placed and ended here is over;
            // one not placed here never will be.
            let ended = !known && r.attempt > 0 && s.placed.contains(&attempt);
            if !known && r.attempt > 0 && !ended {
                s.forbidden.insert(attempt);
            }
            Ok((known || ended, already || ended, s.slow_ends))
        })?;
        if !known {
            return Err(Status::not_found("no such call"));
        }
        if already_ending || slow {
            return Ok(Response::new(pb::HangupReply { already_ending }));
        }
        self.emit(
            &r.call_id,
            pb::event::Kind::Ended(pb::CallEnded {
                outcome: if r.outcome.is_empty() {
                    "cancelled".into()
                } else {
                    r.outcome
                },
                ..Default::default()
            }),
        );
        Ok(Response::new(pb::HangupReply {
            already_ending: false,
        }))
    }

    async fn transfer(
        &self,
        _request: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::TransferReply>, Status> {
        Err(Status::unimplemented("not in these tests"))
    }

    async fn apply_config(
        &self,
        request: Request<pb::ConfigSnapshot>,
    ) -> Result<Response<pb::ApplyConfigReply>, Status> {
        let snap = request.into_inner();
        self.with(|s| {
            if s.dead {
                return Err(unavailable());
            }
            s.applies += 1;
            if let Some(code) = s.config_error {
                return Err(Status::new(code, "scripted ApplyConfig failure"));
            }
            if s.refuse_config {
                return Err(Status::invalid_argument("trunks[0].host: not a host"));
            }
            let running = s.running.as_ref().map_or(0, |r| r.version);
            if snap.version <= running {
                return Ok(Response::new(pb::ApplyConfigReply {
                    running_version: running,
                    applied: false,
                }));
            }
            let v = snap.version;
            s.running = Some(snap);
            Ok(Response::new(pb::ApplyConfigReply {
                running_version: v,
                applied: true,
            }))
        })
    }

    type SubscribeStream = tokio_stream::wrappers::ReceiverStream<Result<pb::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        if self.dead() {
            return Err(unavailable());
        }
        self.with(|s| s.subscribes.push((r.journal_id.clone(), r.after_seq)));
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let peer = self.clone();
        tokio::spawn(async move {
            let (mut sent, journal) = {
                let s = peer.state.lock().unwrap();
                let from = if r.journal_id == s.journal_id && !s.resend_all {
                    r.after_seq
                } else {
                    0
                };
                (from, s.journal_id.clone())
            };
            loop {
                let changed = peer.changed.notified();
                let (batch, dead) = {
                    let s = peer.state.lock().unwrap();
                    let batch: Vec<pb::Event> =
                        s.journal.iter().filter(|e| e.seq > sent).cloned().collect();
                    // Losing the journal is a restart: streams break.
                    (batch, s.dead || s.journal_id != journal)
                };
                if dead {
                    let _ = tx.send(Err(unavailable())).await;
                    return;
                }
                for e in batch {
                    sent = e.seq;
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckReply>, Status> {
        let r = request.into_inner();
        self.with(|s| {
            if s.dead {
                return Err(unavailable());
            }
            s.acks.push(r.up_to_seq);
            if r.journal_id == s.journal_id {
                s.journal.retain(|e| e.seq > r.up_to_seq);
            }
            Ok(Response::new(pb::AckReply {}))
        })
    }

    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsReply>, Status> {
        self.with(|s| {
            if s.dead {
                return Err(unavailable());
            }
            Ok(Response::new(pb::StatsReply {
                node_id: "peer".into(),
                journal_id: s.journal_id.clone(),
                config_version: s.running.as_ref().map_or(0, |r| r.version),
                active_calls: u32::try_from(s.active.len()).unwrap(),
                max_calls: s.max_calls,
                load: s.load,
                draining: s.draining,
                uptime_seconds: 1,
                last_seq: s.next_seq - 1,
                instance_id: s.instance.clone(),
            }))
        })
    }
}

/// A running peer server.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(peer: &Peer, addr: Option<SocketAddr>) -> Server {
        let listener = tokio::net::TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        peer.with(|s| s.dead = false);
        let svc = SwitchServer::new(peer.clone());
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node goes away: every RPC and stream fails, the listener closes.
    async fn kill(mut self, peer: &Peer) -> SocketAddr {
        peer.with(|s| s.dead = true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
        self.addr
    }
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..400 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn link(urls: Vec<String>, clock: &Clock) -> Arc<SwitchNodes> {
    Arc::new(SwitchNodes::new(
        urls,
        LinkSettings::default(),
        clock.clone(),
    ))
}

/// Call `n`, stored and claimed for dispatch at the clock's time.
async fn claimed_call(db: &TestDb, n: u8, clock: &Clock) -> (NewCall, crate::store::DispatchCall) {
    let call = new_call(n, clock.now());
    let claimed = stored_and_claimed(db, &call, clock).await;
    (call, claimed)
}

/// `call`, stored and claimed for dispatch at the clock's time.
async fn stored_and_claimed(
    db: &TestDb,
    call: &NewCall,
    clock: &Clock,
) -> crate::store::DispatchCall {
    db.store.insert_call(call).await.unwrap();
    db.store
        .claim_call(&call.call_id, clock.now())
        .await
        .unwrap()
        .unwrap()
}

/// Call `n`, created and due at `now`, one retry a minute later.
fn new_call(n: u8, now: UtcMillis) -> NewCall {
    NewCall {
        retry_delay_minutes: 1,
        created_at: now,
        next_attempt_at: now,
        ..testing::new_call(n, 1)
    }
}

fn trunk(n: u8) -> TrunkRecord {
    TrunkRecord {
        name: "carrier".into(),
        ..testing::trunk(n, true)
    }
}

async fn status(store: &Store, id: &codeb_types::CallId) -> CallStatus {
    store.call(TENANT, id).await.unwrap().unwrap().status
}

fn answered() -> pb::event::Kind {
    pb::event::Kind::Answered(pb::CallAnswered {
        direction: "outbound".into(),
        trunk_id: String::new(),
        answer_ms: 900,
    })
}

fn ended(outcome: &str) -> pb::event::Kind {
    pb::event::Kind::Ended(pb::CallEnded {
        outcome: outcome.into(),
        answered: true,
        talk_seconds: 12,
        duration_seconds: 15,
        ..Default::default()
    })
}

#[tokio::test]
async fn least_loaded_healthy_node_is_chosen() {
    let db = TestDb::sqlite().await;
    let clock = Clock::manual(UtcMillis(1_780_000_000_000));
    let (busy, idle) = (Peer::new("a"), Peer::new("b"));
    busy.with(|s| s.active.extend(["x".to_owned(), "y".to_owned()]));
    idle.with(|s| s.active.insert("z".to_owned()));
    let (sa, sb) = (
        Server::start(&busy, None).await,
        Server::start(&idle, None).await,
    );
    let l = link(
        vec![sa.url(), sb.url(), "http://127.0.0.1:1".into()],
        &clock,
    );
    // Nothing probed yet: the API's path probes first.
    assert!(l.choose().is_err());
    let n = l.choose_probing().await.unwrap();
    assert_eq!(n.url(), sb.url(), "1 of 100 calls beats 2 of 100");
    // Equal shares: the lower media load wins.
    busy.with(|s| {
        s.active.remove("x");
        s.load = 0.1;
    });
    idle.with(|s| s.load = 0.9);
    for node in l.nodes() {
        l.probe(node).await;
    }
    assert_eq!(l.choose().unwrap().url(), sa.url());
    // Draining and full nodes take no calls.
    busy.with(|s| s.draining = true);
    idle.with(|s| s.max_calls = 1);
    for node in l.nodes() {
        l.probe(node).await;
    }
    let err = l.choose().unwrap_err();
    let super::LinkError::Unreachable(why) = err else {
        panic!("{err:?}")
    };
    assert!(
        why.contains("draining") && why.contains("full") && why.contains("127.0.0.1:1"),
        "{why}"
    );
    // A call goes to the chosen node, with the whole request.
    busy.with(|s| s.draining = false);
    l.probe(&l.nodes()[0]).await;
    let (call, claimed) = claimed_call(&db, 1, &clock).await;
    let d = l.dispatch(&db.store, &claimed).await;
    assert!(
        matches!(&d, Dispatched::Placed { node, duplicate: false, .. } if *node == sa.url()),
        "{d:?}"
    );
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::InFlight);
    assert_eq!(rec.trunk_id.as_deref(), Some("tr_00000000000000aa"));
    let placed = busy.with(|s| s.placements.clone());
    assert_eq!(placed.len(), 1);
    let p = &placed[0];
    assert_eq!(p.call_id, call.call_id.as_str());
    assert_eq!(
        (
            p.tenant.as_str(),
            p.phone.as_str(),
            p.attempt,
            p.max_seconds
        ),
        (TENANT, "+15551234567", 1, 60)
    );
    let ai = p.ai.as_ref().unwrap();
    assert_eq!(
        (
            ai.system_prompt.as_str(),
            ai.api_key.as_str(),
            ai.voice.as_str()
        ),
        ("Say hi", "key", "Aoede")
    );
    // The node got the configuration (with the call's whitelisted number)
    // before the call.
    let running = busy.with(|s| s.running.clone()).unwrap();
    assert_eq!(running.whitelists[0].numbers, ["+15551234567"]);
}

/// A database, a manual clock and one reachable node (its peer state and
/// server), with the link to it.
async fn one_node() -> (TestDb, Clock, Peer, Server, Arc<SwitchNodes>) {
    one_node_named("a").await
}

/// [`one_node`], the node's journal named `journal`.
async fn one_node_named(journal: &str) -> (TestDb, Clock, Peer, Server, Arc<SwitchNodes>) {
    let db = TestDb::sqlite().await;
    let clock = Clock::manual(UtcMillis(1_780_000_000_000));
    let peer = Peer::new(journal);
    let server = Server::start(&peer, None).await;
    let l = link(vec![server.url()], &clock);
    l.choose_probing().await.unwrap();
    (db, clock, peer, server, l)
}

#[tokio::test]
async fn a_call_the_node_has_no_room_for_waits_without_spending_an_attempt() {
    let (db, clock, peer, _server, l) = one_node().await;
    // The trunk is at its limit: the node refuses, nothing rings.
    peer.with(|s| s.place_error = Some(tonic::Code::ResourceExhausted));
    let call = new_call(2, clock.now());
    db.store.insert_call(&call).await.unwrap();
    let out = crate::scheduler::tick(&l, &db.store, &clock).await;
    assert!(
        matches!(&out[..], [Dispatched::Deferred { until, detail }]
            if *until == clock.now().plus_ms(super::CAPACITY_WAIT_MS) && detail.starts_with("not placed yet")),
        "{out:?}"
    );
    let row = db
        .store
        .call(&call.tenant, &call.call_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.status, row.attempt, row.retries_left),
        (CallStatus::Scheduled, 0, 1),
        "waiting, as before its claim"
    );
    assert!(row.error_detail.starts_with("not placed yet"));
    // Still no room 5 s later: it waits again, its attempt still unspent.
    clock.advance_ms(super::CAPACITY_WAIT_MS);
    let out = crate::scheduler::tick(&l, &db.store, &clock).await;
    assert!(matches!(&out[..], [Dispatched::Deferred { .. }]), "{out:?}");
    // Room again: placed as attempt 1.
    peer.with(|s| s.place_error = None);
    clock.advance_ms(super::CAPACITY_WAIT_MS - 1);
    assert!(
        crate::scheduler::tick(&l, &db.store, &clock)
            .await
            .is_empty()
    );
    clock.advance_ms(1);
    let out = crate::scheduler::tick(&l, &db.store, &clock).await;
    assert!(matches!(&out[..], [Dispatched::Placed { .. }]), "{out:?}");
    assert_eq!(peer.with(|s| s.placements[0].attempt), 1);
    let row = db
        .store
        .call(&call.tenant, &call.call_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.attempt, row.retries_left), (1, 1));
    assert_eq!(row.error_detail, "");
}

#[tokio::test]
async fn refused_placements_follow_the_retry_policy() {
    let (db, clock, peer, server, l) = one_node().await;
    peer.with(|s| s.place_error = Some(tonic::Code::FailedPrecondition));
    let call = new_call(2, clock.now());
    db.store.insert_call(&call).await.unwrap();
    let out = crate::scheduler::tick(&l, &db.store, &clock).await;
    assert!(
        matches!(&out[..], [Dispatched::Failed { status: CallStatus::EndedFailedRetryPending, detail }] if detail.contains("FailedPrecondition")),
        "{out:?}"
    );
    // A minute later (retryDelayMinutes = 1) the retry goes out, and the
    // node sees attempt 2.
    peer.with(|s| s.place_error = None);
    clock.advance_ms(59_000);
    assert!(
        crate::scheduler::tick(&l, &db.store, &clock)
            .await
            .is_empty()
    );
    clock.advance_ms(1_000);
    let out = crate::scheduler::tick(&l, &db.store, &clock).await;
    assert!(matches!(&out[..], [Dispatched::Placed { .. }]), "{out:?}");
    assert_eq!(peer.with(|s| s.placements[0].attempt), 2);
    // No node up at all: nothing can ring, so the call waits, its one
    // attempt unspent, until a node is back (it failed at once before, and
    // calls due during a switch outage were lost).
    let gone = server.kill(&peer).await;
    let _ = gone;
    l.probe(&l.nodes()[0]).await;
    let c2 = new_call(3, clock.now());
    let mut c2 = c2;
    c2.retries = 0;
    db.store.insert_call(&c2).await.unwrap();
    let out = crate::scheduler::tick(&l, &db.store, &clock).await;
    assert!(
        matches!(&out[..], [Dispatched::Deferred { detail, .. }] if detail.starts_with("not placed yet: no switch node can take the call")),
        "{out:?}"
    );
    let row = db
        .store
        .call(&c2.tenant, &c2.call_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.status, row.attempt, row.retries_left),
        (CallStatus::Scheduled, 0, 0)
    );
}

/// A node that runs a configuration version this database never reached
/// (the database was recreated, or restored from a backup) is not left on
/// it: the database's version is raised past the node's, and the node
/// takes the snapshot, before a call is placed and from the push task.
#[tokio::test]
async fn a_node_ahead_of_a_replaced_database_gets_its_configuration() {
    let (db, clock, peer, server, l) = one_node().await;
    db.store.create_trunk(&trunk(1)).await.unwrap();
    peer.with(|s| {
        s.running = Some(pb::ConfigSnapshot {
            version: 1000,
            ..Default::default()
        })
    });
    l.probe(&l.nodes()[0]).await;
    // Before a call: ensure_config raises and pushes.
    let (_call, claimed) = claimed_call(&db, 9, &clock).await;
    let d = l.dispatch(&db.store, &claimed).await;
    assert!(matches!(d, Dispatched::Placed { .. }), "{d:?}");
    let running = peer.with(|s| s.running.clone().unwrap());
    assert_eq!((running.version, running.trunks.len()), (1001, 1));
    assert_eq!(db.store.config_version().await.unwrap(), 1001);
    // From the push task, for a node that comes up ahead later (a new
    // process of it, started on another database's configuration).
    peer.restart("i2");
    peer.with(|s| {
        s.running = Some(pb::ConfigSnapshot {
            version: 5000,
            ..Default::default()
        })
    });
    l.probe(&l.nodes()[0]).await;
    let tasks = l.start(&db.store);
    eventually("the configuration pushed past the node's", || async {
        peer.with(|s| {
            s.running
                .as_ref()
                .is_some_and(|r| r.version == 5001 && r.trunks.len() == 1)
        })
    })
    .await;
    tasks.shutdown().await;
    server.kill(&peer).await;
}

/// A node configured by two deployments' databases (a misconfiguration):
/// each raises its version past the node's once, then leaves the node to
/// the other with an error, instead of both raising for ever and the node
/// switching configuration every poll.
#[tokio::test]
async fn two_databases_configuring_one_node_raise_once_each() {
    let (db_a, clock, peer, server, la) = one_node().await;
    let db_b = TestDb::sqlite().await;
    let lb = link(vec![server.url()], &clock);
    lb.choose_probing().await.unwrap();
    db_a.store.create_trunk(&trunk(1)).await.unwrap();
    db_b.store.create_trunk(&trunk(2)).await.unwrap();
    db_b.store.create_trunk(&trunk(3)).await.unwrap();
    for _ in 0..4 {
        for (l, db) in [(&la, &db_a), (&lb, &db_b)] {
            l.probe(&l.nodes()[0]).await;
            super::config::push_all(l, &db.store).await.unwrap();
        }
    }
    let (a, b) = (
        db_a.store.config_version().await.unwrap(),
        db_b.store.config_version().await.unwrap(),
    );
    let applies = peer.with(|s| s.applies);
    for _ in 0..3 {
        for (l, db) in [(&la, &db_a), (&lb, &db_b)] {
            l.probe(&l.nodes()[0]).await;
            super::config::push_all(l, &db.store).await.unwrap();
        }
    }
    assert_eq!(
        (
            db_a.store.config_version().await.unwrap(),
            db_b.store.config_version().await.unwrap()
        ),
        (a, b),
        "settled"
    );
    assert_eq!(peer.with(|s| s.applies), applies, "no more snapshots");
    // The node runs B's configuration: A places no call there.
    let err = la.choose().unwrap_err();
    assert!(format!("{err:?}").contains("another deployment"), "{err:?}");
    server.kill(&peer).await;
}

/// Two control planes on one database: one finds the node ahead only
/// because the other pushed a newer version just now. Having raised past
/// this node once already, it still pushes (the database is at that
/// version), rather than taking the node as configured from elsewhere.
#[tokio::test]
async fn a_node_ahead_by_a_peer_control_plane_is_not_taken_as_foreign() {
    let (db, _clock, peer, server, l) = one_node().await;
    db.store.create_trunk(&trunk(1)).await.unwrap();
    let node = l.nodes()[0].clone();
    assert!(node.may_raise_past(0), "raised past once before");
    let ours = u64::try_from(db.store.config_version().await.unwrap()).unwrap();
    // The other control plane's change and push: the database and the
    // node are one version on.
    db.store.create_trunk(&trunk(2)).await.unwrap();
    let now = ours + 1;
    peer.with(|s| {
        s.running = Some(pb::ConfigSnapshot {
            version: now,
            ..Default::default()
        })
    });
    let pushed = super::config::push_past(&node, &db.store, ours, now)
        .await
        .unwrap();
    assert!(
        matches!(pushed, super::config::Pushed::Running(_)),
        "{pushed:?}"
    );
    assert!(node.load_key().is_some(), "still a node for our calls");
    server.kill(&peer).await;
}

#[tokio::test]
async fn reconnects_with_backoff_and_pushes_config_on_connect_and_change() {
    let db = TestDb::sqlite().await;
    let clock = Clock::manual(UtcMillis(1_780_000_000_000));
    // Reserve a port, then start the node only after the link is running.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let l = link(vec![format!("http://{addr}")], &clock);
    let tasks = l.start(&db.store);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!l.nodes()[0].health().healthy);
    db.store.create_trunk(&trunk(1)).await.unwrap();
    let peer = Peer::new("a");
    let server = Server::start(&peer, Some(addr)).await;
    // Reconnected (backoff is capped at 5 s) and handed the configuration.
    eventually("config pushed on connect", || async {
        peer.with(|s| s.running.as_ref().is_some_and(|r| r.trunks.len() == 1))
    })
    .await;
    assert!(l.nodes()[0].health().healthy);
    let v1 = peer.with(|s| s.running.as_ref().unwrap().version);
    // A change is pushed promptly, as a new version.
    let mut t = trunk(1);
    t.host = "10.9.9.9".into();
    db.store.update_trunk(&t).await.unwrap();
    eventually("config pushed on change", || async {
        peer.with(|s| s.running.as_ref().unwrap().trunks[0].host == "10.9.9.9")
    })
    .await;
    assert!(peer.with(|s| s.running.as_ref().unwrap().version) > v1);
    // A refused snapshot is logged, not retried in a loop, and the node
    // keeps its last good one.
    peer.with(|s| s.refuse_config = true);
    t.host = "bad host".into();
    db.store.update_trunk(&t).await.unwrap();
    eventually("refusal recorded", || async {
        l.nodes()[0].health().refused_version.is_some()
    })
    .await;
    let tries = peer.with(|s| s.applies);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(peer.with(|s| s.applies), tries, "no retry storm");
    assert_eq!(
        peer.with(|s| s.running.as_ref().unwrap().trunks[0].host.clone()),
        "10.9.9.9"
    );
    tasks.shutdown().await;
    server.kill(&peer).await;
}

#[tokio::test]
async fn events_resume_from_the_cursor_across_restarts() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    let (call, claimed) = claimed_call(&db, 4, &clock).await;
    assert!(matches!(
        l.dispatch(&db.store, &claimed).await,
        Dispatched::Placed { .. }
    ));
    let id = call.call_id.as_str();
    let tasks = l.start(&db.store);
    peer.emit(id, answered());
    eventually("answered applied", || async {
        db.store
            .call(TENANT, &call.call_id)
            .await
            .unwrap()
            .unwrap()
            .answered_at
            .is_some()
    })
    .await;
    eventually("acked", || async { peer.with(|s| s.journal.is_empty()) }).await;
    // The control plane goes away; the call goes on and ends meanwhile.
    tasks.shutdown().await;
    peer.emit(
        id,
        pb::event::Kind::Turn(pb::TranscriptTurn {
            role: "ai".into(),
            text: "Goodbye.".into(),
            at_ms: 100,
            interrupted: false,
        }),
    );
    peer.emit(id, ended("finished"));
    // A restarted control plane (new link, same database) resumes after
    // what it applied; with a node that resends everything it retains,
    // the cursor still keeps each event to one application.
    peer.with(|s| s.resend_all = true);
    let l2 = link(vec![server.url()], &clock);
    let tasks = l2.start(&db.store);
    eventually("ended applied", || async {
        status(&db.store, &call.call_id).await == CallStatus::EndedSuccess
    })
    .await;
    eventually("acked again", || async {
        peer.with(|s| s.journal.is_empty())
    })
    .await;
    let subs = peer.with(|s| s.subscribes.clone());
    assert_eq!(subs[0], (String::new(), 0), "first contact");
    assert_eq!(
        subs.last().unwrap(),
        &("j1".to_owned(), 1),
        "resumed after seq 1"
    );
    assert_eq!(
        event_data(&db.store, TENANT, "call.answered").await.len(),
        1
    );
    assert_eq!(
        event_data(&db.store, TENANT, "outbound-ai.finished")
            .await
            .len(),
        1
    );
    assert_eq!(
        event_data(&db.store, TENANT, "transcript.saved")
            .await
            .len(),
        1
    );
    // The node loses its journal: the link says so and reads the new one
    // from its start.
    let call2 = new_call(5, clock.now());
    db.store.insert_call(&call2).await.unwrap();
    // The running scheduler places it.
    eventually("second call placed", || async {
        status(&db.store, &call2.call_id).await == CallStatus::InFlight
    })
    .await;
    peer.lose_journal("j2");
    peer.emit(call2.call_id.as_str(), answered());
    eventually("new journal read", || async {
        db.store.switch_cursor(&server.url()).await.unwrap()
            == Some(crate::store::Cursor {
                journal_id: "j2".into(),
                last_seq: 1,
            })
    })
    .await;
    assert!(
        db.store
            .call(TENANT, &call2.call_id)
            .await
            .unwrap()
            .unwrap()
            .answered_at
            .is_some()
    );
    tasks.shutdown().await;
    server.kill(&peer).await;
}

/// One node (journal `j1`), probed, with call `n` placed on it.
async fn one_node_with_call(n: u8) -> (TestDb, Clock, Peer, Server, Arc<SwitchNodes>, NewCall) {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    let call = placed(&db, &l, n, &clock).await;
    (db, clock, peer, server, l, call)
}

/// Call `n`, stored, claimed and placed on `l`'s node.
async fn placed(db: &TestDb, l: &SwitchNodes, n: u8, clock: &Clock) -> NewCall {
    let (call, claimed) = claimed_call(db, n, clock).await;
    assert!(matches!(
        l.dispatch(&db.store, &claimed).await,
        Dispatched::Placed { .. }
    ));
    call
}

/// A dispatcher that died after recording the node but before PlaceCall
/// left the call `dispatching`; dispatched again after the lease, the node
/// rings it only then, and the record says when it really went. One that
/// had reached the node (a duplicate) keeps its first time.
#[tokio::test]
async fn a_repeated_dispatch_is_dated_when_the_node_rang_it() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    let url = server.url();
    for (n, reached) in [(21u8, false), (22, true)] {
        let (call, first) = claimed_call(&db, n, &clock).await;
        let t0 = clock.now();
        assert!(
            db.store
                .set_dispatch_node(&first, &url, None, t0)
                .await
                .unwrap()
        );
        if reached {
            // Its PlaceCall reached the node before the dispatcher died.
            peer.with(|s| s.placed.insert((call.call_id.to_string(), 1)));
        }
        clock.advance_ms(crate::store::DISPATCH_LEASE_MS);
        let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert!(matches!(
            l.dispatch(&db.store, &again[0]).await,
            Dispatched::Placed { duplicate, .. } if duplicate == reached
        ));
        let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
        let want = if reached { t0 } else { clock.now() };
        assert_eq!(
            rec.dispatched_at,
            Some(want),
            "reached the node first: {reached}"
        );
    }
    server.kill(&peer).await;
}

#[tokio::test]
async fn a_lost_node_ends_its_calls_within_the_bound() {
    let (db, clock, peer, server, l, call) = one_node_with_call(6).await;
    let url = server.url();
    let node = l.nodes()[0].clone();
    // Last probed 2 s after the call was placed; an event came on its
    // stream 0.5 s later; it dies then.
    clock.advance_ms(2_000);
    l.probe(&node).await;
    let seen = node.health().last_ok.unwrap().plus_ms(500);
    node.record_event(seen);
    server.kill(&peer).await;
    clock.advance_ms(1_000);
    l.probe(&node).await;
    assert!(!node.health().healthy);
    // Not yet: unreachable for less than CODEB_SWITCH_LOST_AFTER.
    clock.advance_ms(4_999);
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    assert_eq!(status(&db.store, &call.call_id).await, CallStatus::InFlight);
    clock.advance_ms(1);
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::EndedFailedRetryPending);
    assert_eq!(rec.error_detail, format!("switch node {url} lost"));
    // It ended when the node was last heard from, not 6 s later when its
    // loss was noticed.
    assert_eq!(rec.ended_at, Some(seen));
    // A hangup for a call on a dead node is a 502-class error.
    assert!(l.hangup(&url, call.call_id.as_str(), 1).await.is_err());
}

/// A node taken out of every control plane's CODEB_SWITCH_URLS (its host
/// renamed) would leave its calls in flight for ever: no one reads its
/// events or probes it. Another control plane ends them as lost once no
/// one has heard from the node for `unwatched_after` and it does not
/// answer two of that control plane's own probes a round apart; not while
/// one still watches it, nor while it answers (it is then looked at again
/// after ten minutes). A node no one ever noted counts from when the
/// sweep first found it.
#[tokio::test]
async fn calls_on_a_node_no_control_plane_watches_end_as_lost() {
    let (db, clock, peer, server, l, call) = one_node_with_call(6).await;
    let url = server.url();
    // The control plane after the rename: its list no longer has `url`.
    let renamed = link(vec!["http://127.0.0.1:1".into()], &clock);
    let after = renamed.settings().unwatched_after.as_millis() as i64;
    let round = |ms: i64| {
        clock.advance_ms(ms);
        renamed.sweep_unwatched(&db.store, clock.now())
    };
    // A call on a node that never answered anyone (nothing listens there).
    let (never, claimed) = claimed_call(&db, 7, &clock).await;
    let dead = "http://127.0.0.1:2";
    assert!(
        db.store
            .set_dispatch_node(&claimed, dead, None, clock.now())
            .await
            .unwrap()
    );
    let node = l.nodes()[0].clone();
    clock.advance_ms(1_000);
    l.probe(&node).await;
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    // Past the bound, but the first control plane still watches it.
    clock.advance_ms(after);
    l.probe(&node).await;
    let heard = node.last_heard().unwrap();
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    round(0).await;
    assert_eq!(status(&db.store, &call.call_id).await, CallStatus::InFlight);
    // Found unnoted only now: its bound counts from here.
    assert_eq!(
        status(&db.store, &never.call_id).await,
        CallStatus::Dispatching
    );
    // It stops watching (restarted with the new list); no one notes the
    // node any more.
    round(after - 1).await;
    assert_eq!(status(&db.store, &call.call_id).await, CallStatus::InFlight);
    // Past the bound, but the node answers the probe: it is left alone
    // (and reported); the dead one missed its first probe.
    round(5_000).await;
    assert_eq!(status(&db.store, &call.call_id).await, CallStatus::InFlight);
    assert_eq!(
        status(&db.store, &never.call_id).await,
        CallStatus::Dispatching,
        "one miss is not enough"
    );
    round(5_000).await;
    let rec = db
        .store
        .call(TENANT, &never.call_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.status, CallStatus::EndedFailedRetryPending, "{rec:?}");
    // Gone too: looked at again ten minutes after it answered, it misses
    // two probes, and its calls end when it was last heard from.
    server.kill(&peer).await;
    round(600_000).await;
    assert_eq!(status(&db.store, &call.call_id).await, CallStatus::InFlight);
    round(5_000).await;
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::EndedFailedRetryPending);
    assert_eq!(
        rec.error_detail,
        format!(
            "switch node {url} lost: no control plane watches it (it is in no CODEB_SWITCH_URLS)"
        )
    );
    assert_eq!(rec.ended_at, Some(heard), "when it was last heard from");
}

/// The node stops answering, and its loss is swept once
/// CODEB_SWITCH_LOST_AFTER (5 s) has passed: its calls end as lost.
async fn cut_off_past_the_bound(
    db: &TestDb,
    clock: &Clock,
    peer: &Peer,
    l: &SwitchNodes,
    node: &Arc<super::node::Node>,
) {
    peer.with(|s| s.dead = true);
    l.probe(node).await;
    clock.advance_ms(5_000);
    l.sweep_lost_nodes(&db.store, clock.now()).await;
}

/// Runs `l`'s tasks until the node at `url` has had its events up to
/// `last` applied.
async fn read_events_up_to(l: &Arc<SwitchNodes>, db: &TestDb, url: &str, last: u64) {
    let tasks = l.start(&db.store);
    eventually("the node's events read", || async {
        db.store
            .switch_cursor(url)
            .await
            .unwrap()
            .map(|c| c.last_seq)
            == i64::try_from(last).ok()
    })
    .await;
    tasks.shutdown().await;
}

/// Call `n` placed on a node that is then cut off past
/// CODEB_SWITCH_LOST_AFTER: its attempt is ended as lost (unanswered, so
/// a retry is planned, the only one). Then, on the node, the call goes
/// on: answered, two turns, usage, and an end with `outcome`
/// (`answered`), and the node answers again. Returns the call's record
/// once its events are read, and the `outbound-ai.finished` payloads.
async fn lost_call_that_went_on(
    n: u8,
    outcome: &str,
) -> (crate::store::CallRecord, Vec<serde_json::Value>, TestDb) {
    let (db, clock, peer, server, l, call) = one_node_with_call(n).await;
    let url = server.url();
    let node = l.nodes()[0].clone();
    cut_off_past_the_bound(&db, &clock, &peer, &l, &node).await;
    let lost = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(lost.status, CallStatus::EndedFailedRetryPending);
    assert_eq!(lost.retries_left, 0);
    let id = call.call_id.as_str();
    peer.emit(id, answered());
    for (role, text, at_ms) in [
        ("ai", "Hello, this is your reminder.", 200),
        ("caller", "Thanks, see you then.", 2_000),
    ] {
        peer.emit(
            id,
            pb::event::Kind::Turn(pb::TranscriptTurn {
                role: role.into(),
                text: text.into(),
                at_ms,
                interrupted: false,
            }),
        );
    }
    peer.emit(
        id,
        pb::event::Kind::Usage(pb::Usage {
            input_tokens: 300,
            output_tokens: 200,
            estimated: false,
        }),
    );
    let last = peer.emit(id, ended(outcome));
    peer.with(|s| s.dead = false);
    l.probe(&node).await;
    read_events_up_to(&l, &db, &url, last).await;
    // No retry is due, whatever the time.
    clock.advance_ms(3_600_000);
    assert!(
        db.store
            .claim_due_calls(clock.now(), 10)
            .await
            .unwrap()
            .is_empty(),
        "the retry is called off"
    );
    server.kill(&peer).await;
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    let finished = event_data(&db.store, TENANT, "outbound-ai.finished").await;
    (rec, finished, db)
}

/// The callee answered after all and talked with the AI: the node's
/// account replaces the end made up at the loss, the retry is called
/// off, and the integrator is told again, marked corrected.
#[tokio::test]
async fn a_lost_calls_real_end_corrects_its_record() {
    let (rec, finished, db) = lost_call_that_went_on(11, "finished").await;
    assert_eq!(
        (
            rec.status,
            rec.ended_reason.as_str(),
            rec.error_detail.as_str()
        ),
        (CallStatus::EndedSuccess, "finished", "")
    );
    assert_eq!(rec.duration_sec, 12, "the node's talk time");
    assert!(rec.answered_at.is_some());
    assert_eq!(rec.retries_left, 1, "the retry the loss took is given back");
    assert!(!rec.transcript_path.is_empty(), "the node's turns are kept");
    assert_eq!(finished.len(), 2, "{finished:#?}");
    assert_eq!(finished[0]["outcome"], "failed");
    assert!(finished[0].get("corrected").is_none());
    assert_eq!(
        (
            &finished[1]["outcome"],
            &finished[1]["talkSec"],
            &finished[1]["answered"],
            &finished[1]["inputTurns"],
            &finished[1]["outputTurns"],
            &finished[1]["corrected"],
        ),
        (
            &serde_json::json!("finished"),
            &serde_json::json!(12),
            &serde_json::json!(true),
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(true),
        )
    );
    let saved = event_data(&db.store, TENANT, "transcript.saved").await;
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0]["corrected"], true);
    assert!(
        event_data(&db.store, TENANT, "call.answered")
            .await
            .is_empty(),
        "the answer is not sent late"
    );
}

/// A user's hangup that reached the node just before it was cut off:
/// the call was cancelled, and is not tried again.
#[tokio::test]
async fn a_lost_call_the_user_hung_up_stays_cancelled() {
    let (rec, finished, _db) = lost_call_that_went_on(12, "cancelled").await;
    assert_eq!(rec.status, CallStatus::Cancelled);
    assert_eq!(finished.len(), 2);
    assert_eq!(finished[1]["outcome"], "cancelled");
}

/// A call ended as lost for good (no retry left) that its node, back
/// again, still carries is hung up there; the end that hangup brings
/// corrects the record's times, answer and transcript, not its reason,
/// and the email not sent yet carries the corrected end.
#[tokio::test]
async fn a_lost_call_hung_up_on_the_nodes_return_keeps_its_reason() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    let url = server.url();
    let call = NewCall {
        retries: 0,
        ..new_call(13, clock.now())
    };
    let claimed = stored_and_claimed(&db, &call, &clock).await;
    assert!(matches!(
        l.dispatch(&db.store, &claimed).await,
        Dispatched::Placed { .. }
    ));
    let node = l.nodes()[0].clone();
    cut_off_past_the_bound(&db, &clock, &peer, &l, &node).await;
    assert_eq!(
        status(&db.store, &call.call_id).await,
        CallStatus::EndedFailedFinal
    );
    let email = db.store.call_email(TENANT, call.call_id.as_str()).await;
    assert!(email.unwrap().is_some(), "the loss's email is queued");
    // On the node the callee answered and spoke.
    let id = call.call_id.as_str();
    peer.emit(id, answered());
    peer.emit(
        id,
        pb::event::Kind::Turn(pb::TranscriptTurn {
            role: "caller".into(),
            text: "Thanks, see you then.".into(),
            at_ms: 1_500,
            interrupted: false,
        }),
    );
    peer.with(|s| s.dead = false);
    l.probe(&node).await;
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    assert_eq!(peer.with(|s| s.hangups.clone()), vec![id.to_owned()]);
    let last = peer.with(|s| s.next_seq - 1);
    read_events_up_to(&l, &db, &url, last).await;
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(
        (
            rec.status,
            rec.ended_reason.as_str(),
            rec.error_detail.clone()
        ),
        (
            CallStatus::EndedFailedFinal,
            "failed",
            format!("switch node {url} lost")
        )
    );
    assert!(rec.answered_at.is_some(), "the node's answer");
    assert!(!rec.transcript_path.is_empty(), "the node's turn");
    let finished = event_data(&db.store, TENANT, "outbound-ai.finished").await;
    assert_eq!(finished.len(), 2);
    assert_eq!(
        (&finished[1]["outcome"], &finished[1]["corrected"]),
        (&serde_json::json!("failed"), &serde_json::json!(true))
    );
    let email = db
        .store
        .call_email(TENANT, call.call_id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert!(
        email.body.contains("Thanks, see you then."),
        "{}",
        email.body
    );
    server.kill(&peer).await;
}

/// A node cut off (or frozen) long enough to be declared lost, that then
/// answers again as the same process, still carries the calls whose
/// records were ended: each is hung up there (its far end got no BYE and
/// its AI talked on, with the record saying it had ended).
#[tokio::test]
async fn a_lost_node_that_comes_back_is_told_to_end_the_calls_ended_meanwhile() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    // No retry: its end is final.
    let call = NewCall {
        retries: 0,
        ..new_call(9, clock.now())
    };
    let claimed = stored_and_claimed(&db, &call, &clock).await;
    assert!(matches!(
        l.dispatch(&db.store, &claimed).await,
        Dispatched::Placed { .. }
    ));
    let node = l.nodes()[0].clone();
    peer.with(|s| s.dead = true);
    l.probe(&node).await;
    clock.advance_ms(5_000);
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    assert_eq!(
        status(&db.store, &call.call_id).await,
        CallStatus::EndedFailedFinal
    );
    assert!(peer.with(|s| s.hangups.is_empty()));
    // The same process answers again: the call is hung up there, once.
    peer.with(|s| s.dead = false);
    l.probe(&node).await;
    assert!(node.health().healthy);
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    assert_eq!(
        peer.with(|s| s.hangups.clone()),
        vec![call.call_id.to_string()]
    );
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    assert_eq!(peer.with(|s| s.hangups.len()), 1);
    server.kill(&peer).await;
}

/// Call `n` with no retry left, placed on the one node, which is then
/// cut off past CODEB_SWITCH_LOST_AFTER: ended as lost for good.
async fn lost_for_good(db: &TestDb, clock: &Clock, peer: &Peer, l: &SwitchNodes, n: u8) -> NewCall {
    let call = NewCall {
        retries: 0,
        ..new_call(n, clock.now())
    };
    let claimed = stored_and_claimed(db, &call, clock).await;
    assert!(matches!(
        l.dispatch(&db.store, &claimed).await,
        Dispatched::Placed { .. }
    ));
    cut_off_past_the_bound(db, clock, peer, l, &l.nodes()[0].clone()).await;
    assert_eq!(
        status(&db.store, &call.call_id).await,
        CallStatus::EndedFailedFinal
    );
    call
}

/// The control plane that ended a call as lost is restarted before the
/// node answers again: the new one still hangs the call up there (the
/// calls to hang up are kept in the database), once.
#[tokio::test]
async fn a_lost_call_is_hung_up_by_a_control_plane_started_after_the_loss() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    let call = lost_for_good(&db, &clock, &peer, &l, 14).await;
    drop(l);
    let restarted = link(vec![server.url()], &clock);
    let node = restarted.nodes()[0].clone();
    peer.with(|s| s.dead = false);
    restarted.probe(&node).await;
    assert!(node.health().healthy);
    restarted.sweep_lost_nodes(&db.store, clock.now()).await;
    assert_eq!(
        peer.with(|s| s.hangups.clone()),
        vec![call.call_id.to_string()]
    );
    // Taken: neither this control plane nor another one sends it again.
    restarted.sweep_lost_nodes(&db.store, clock.now()).await;
    let other = link(vec![server.url()], &clock);
    other.probe(&other.nodes()[0].clone()).await;
    other.sweep_lost_nodes(&db.store, clock.now()).await;
    assert_eq!(peer.with(|s| s.hangups.len()), 1);
    server.kill(&peer).await;
}

/// Another control plane sharing the database ended a call as lost (it
/// could not reach the node; this one always could, so nothing here says
/// to look): this one still hangs the call up, at its next recheck.
#[tokio::test]
async fn calls_another_control_plane_ended_as_lost_are_hung_up_at_the_recheck() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    let url = server.url();
    let call = NewCall {
        retries: 0,
        ..new_call(17, clock.now())
    };
    let claimed = stored_and_claimed(&db, &call, &clock).await;
    assert!(matches!(
        l.dispatch(&db.store, &claimed).await,
        Dispatched::Placed { .. }
    ));
    // This control plane has looked, and found nothing.
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    // The other one's loss.
    db.store
        .fail_calls_on_node(
            &url,
            crate::store::Lost::All,
            "switch node lost",
            clock.now(),
        )
        .await
        .unwrap();
    clock.advance_ms(1_000);
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    assert!(peer.with(|s| s.hangups.is_empty()), "not looked for yet");
    clock.advance_ms(super::node::LOST_HANGUPS_RECHECK_MS);
    l.probe(&l.nodes()[0].clone()).await;
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    assert_eq!(
        peer.with(|s| s.hangups.clone()),
        vec![call.call_id.to_string()]
    );
    server.kill(&peer).await;
}

/// A call lost with its node and waiting for its retry is cancelled by
/// its user: when the node answers again, the attempt it may still carry
/// is hung up there, and the call stays cancelled.
#[tokio::test]
async fn a_lost_call_cancelled_while_waiting_for_its_retry_is_hung_up_on_the_nodes_return() {
    let (db, clock, peer, server, l, call) = one_node_with_call(15).await;
    let url = server.url();
    let node = l.nodes()[0].clone();
    cut_off_past_the_bound(&db, &clock, &peer, &l, &node).await;
    assert_eq!(
        status(&db.store, &call.call_id).await,
        CallStatus::EndedFailedRetryPending
    );
    match db
        .store
        .hangup_unplaced(TENANT, &call.call_id, clock.now())
        .await
        .unwrap()
    {
        crate::store::HangupResult::Cancelled { lost_on } => {
            assert_eq!(lost_on.as_deref(), Some(url.as_str()));
        }
        other => panic!("{other:?}"),
    }
    l.want_lost_hangups(&url);
    // Not while the node is still away.
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    assert!(peer.with(|s| s.hangups.is_empty()));
    peer.with(|s| s.dead = false);
    l.probe(&node).await;
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    let id = call.call_id.as_str();
    assert_eq!(peer.with(|s| s.hangups.clone()), vec![id.to_owned()]);
    let last = peer.with(|s| s.next_seq - 1);
    read_events_up_to(&l, &db, &url, last).await;
    assert_eq!(
        status(&db.store, &call.call_id).await,
        CallStatus::Cancelled
    );
    server.kill(&peer).await;
}

/// A node that comes back as another process ended the calls lost with
/// it: none of them is hung up there.
#[tokio::test]
async fn the_calls_lost_with_a_node_that_restarted_are_not_hung_up() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    let url = server.url();
    let call = lost_for_good(&db, &clock, &peer, &l, 16).await;
    let last = peer.emit(call.call_id.as_str(), answered());
    peer.restart("i2");
    peer.with(|s| s.dead = false);
    let node = l.nodes()[0].clone();
    l.probe(&node).await;
    read_events_up_to(&l, &db, &url, last).await;
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    assert!(peer.with(|s| s.hangups.is_empty()));
    server.kill(&peer).await;
}

#[tokio::test]
async fn a_node_that_restarts_ends_the_calls_its_earlier_process_carried() {
    // Back within CODEB_SWITCH_LOST_AFTER, so never "lost": without the
    // instance check its calls stayed in-flight for ever.
    let (db, clock, peer, server, l, old) = one_node_with_call(7).await;
    let url = server.url();
    let node = l.nodes()[0].clone();
    // Its process wrote an answer for it, was last heard from 3 s after
    // the call was placed, then stopped; the next answered 4 s later.
    peer.emit(old.call_id.as_str(), answered());
    clock.advance_ms(3_000);
    l.probe(&node).await;
    let seen = node.health().last_ok.unwrap();
    peer.restart("i2");
    clock.advance_ms(4_000);
    l.probe(&node).await;
    assert!(node.health().healthy);
    // A call placed on the new process is its own.
    let new = placed(&db, &l, 8, &clock).await;
    // Not while the old process's events are unread: the answer may be
    // followed by its end, which says more than "lost".
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    assert_eq!(status(&db.store, &old.call_id).await, CallStatus::InFlight);
    let tasks = l.start(&db.store);
    eventually("the old process's events read", || async {
        db.store
            .switch_cursor(&url)
            .await
            .unwrap()
            .map(|c| c.last_seq)
            == Some(1)
    })
    .await;
    tasks.shutdown().await;
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    let rec = db.store.call(TENANT, &old.call_id).await.unwrap().unwrap();
    // Answered, so not tried again.
    assert_eq!(rec.status, CallStatus::EndedFailedFinal);
    assert_eq!(
        rec.error_detail,
        format!("switch node {url} restarted: the call was lost with its process")
    );
    assert!(rec.answered_at.is_some(), "its answer was applied first");
    assert_eq!(
        rec.ended_at,
        Some(seen),
        "ended when its process was last heard from"
    );
    assert_eq!(status(&db.store, &new.call_id).await, CallStatus::InFlight);
    // Once per instance: later sweeps leave the new process's calls be.
    l.sweep_lost_nodes(&db.store, clock.now()).await;
    assert_eq!(status(&db.store, &new.call_id).await, CallStatus::InFlight);
    server.kill(&peer).await;
}

#[tokio::test]
async fn a_retry_waits_until_the_nodes_journal_is_read() {
    let db = TestDb::sqlite().await;
    let clock = Clock::manual(UtcMillis(1_780_000_000_000));
    let peer = Peer::new("j1");
    let server = Server::start(&peer, None).await;
    let url = server.url();
    let l = link(vec![url.clone()], &clock);
    l.choose_probing().await.unwrap();
    let node = l.nodes()[0].clone();
    let (call, claimed) = claimed_call(&db, 8, &clock).await;
    assert!(matches!(
        l.dispatch(&db.store, &claimed).await,
        Dispatched::Placed { .. }
    ));
    // Attempt 1 is answered on the node, but nobody reads the node's
    // events (say it crashed and came back, or this control plane did),
    // and the attempt ends as lost.
    peer.emit(call.call_id.as_str(), answered());
    db.store
        .fail_calls_on_node(&url, crate::store::Lost::All, "lost", clock.now())
        .await
        .unwrap();
    // Its retry delay (a minute) is not enough: attempt 1 may still go
    // on there until its PlaceCall's answer wait (10 s), ring time (60 s)
    // and talk limit (60 s) are over, and 30 s more.
    clock.advance_ms(60_000);
    assert!(
        db.store
            .claim_due_calls(clock.now(), 10)
            .await
            .unwrap()
            .is_empty(),
        "not while attempt 1 may still be up on its node"
    );
    // Then the retry is due, and the node reports the event it wrote.
    clock.advance_ms(100_000);
    l.probe(&node).await;
    let retry = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    assert_eq!(retry[0].attempt, 2);
    assert!(matches!(
        l.dispatch(&db.store, &retry[0]).await,
        Dispatched::Unknown { .. }
    ));
    assert_eq!(peer.with(|s| s.placements.len()), 1, "nothing rang");
    // Read now, attempt 1's answer is skipped, not taken for attempt 2's.
    let reader = tokio::spawn(super::events::run(
        node.clone(),
        db.store.clone(),
        clock.clone(),
    ));
    eventually("the journal read", || async {
        db.store
            .switch_cursor(&url)
            .await
            .unwrap()
            .is_some_and(|c| c.last_seq == 1)
    })
    .await;
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(rec.answered_at, None);
    assert_eq!(rec.status, CallStatus::Dispatching);
    // Once the claim's lease runs out, the retry goes out.
    clock.advance_ms(crate::store::DISPATCH_LEASE_MS);
    let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    assert_eq!(again[0].attempt, 2);
    assert!(matches!(
        l.dispatch(&db.store, &again[0]).await,
        Dispatched::Placed { .. }
    ));
    assert_eq!(peer.with(|s| s.placements[1].attempt), 2);
    reader.abort();
    server.kill(&peer).await;
}

/// The API on SQLite linked to `peer`'s node (running), an admin token,
/// and the answer to one POST /calls through it.
async fn api_call_through(
    peer: &Peer,
) -> (
    Server,
    crate::api::tests::Harness,
    super::LinkTasks,
    String,
    crate::api::tests::Resp,
) {
    let server = Server::start(peer, None).await;
    let db = TestDb::sqlite().await;
    let h = crate::api::tests::Harness::with_switch(db, vec![server.url()]).await;
    let tasks = h.state.switch.start(&h.state.store);
    let t = h.admin().await;
    let body = serde_json::json!({
        "phone": "+15551234567", "displayName": "Reminder", "email": "ops@example.com",
        "systemPrompt": "Say hi", "apiKey": "AIza-test", "maxSeconds": 30
    });
    // No trunk yet: the call would fail at once, so it is refused.
    let r = h.post("/api.ashx/v1/calls", &t, body.clone()).await;
    assert_eq!(r.status, axum::http::StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(
        r.text.contains("trunkId: the tenant has no trunk"),
        "{}",
        r.text
    );
    let r = h
        .post(
            "/api.ashx/v1/trunks",
            &t,
            serde_json::json!({"host": "127.0.0.1", "port": 5070}),
        )
        .await;
    assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text);
    let r = h.post("/api.ashx/v1/calls", &t, body).await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text);
    (server, h, tasks, t, r)
}

#[tokio::test]
async fn api_places_and_hangs_up_through_the_node() {
    use axum::http::StatusCode;
    let peer = Peer::new("j1");
    let (server, h, tasks, t, r) = api_call_through(&peer).await;
    assert_eq!(r.json["status"], "in-flight");
    let reply: serde_json::Value =
        serde_json::from_str(r.json["bridgeReply"].as_str().unwrap()).unwrap();
    assert_eq!(reply["placed"], true);
    assert_eq!(reply["node"], server.url());
    let id = r.json["callId"].as_str().unwrap().to_owned();
    peer.emit(&id, answered());
    let url = format!("/api.ashx/v1/calls/{id}");
    eventually("answered", || async {
        h.get(&url, &t).await.json["answeredAtUtc"].is_string()
    })
    .await;
    let r = h
        .post(&format!("{url}/hangup"), &t, serde_json::json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["wasNoop"], false);
    assert_eq!(peer.with(|s| s.hangups.clone()), vec![id.clone()]);
    eventually("cancelled by the node's Ended event", || async {
        h.get(&url, &t).await.json["status"] == "cancelled"
    })
    .await;
    let tenant = crate::api::tests::TENANT;
    let answered = event_data(&h.state.store, tenant, "call.answered").await;
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0]["callId"], id.as_str());
    assert_eq!(answered[0]["answerMs"], 900);
    let finished = event_data(&h.state.store, tenant, "outbound-ai.finished").await;
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["outcome"], "cancelled");
    // Hanging up again is a no-op.
    let r = h
        .post(&format!("{url}/hangup"), &t, serde_json::json!({}))
        .await;
    assert_eq!(r.json["wasNoop"], true);
    tasks.shutdown().await;
    server.kill(&peer).await;
}

/// A PlaceCall whose answer was lost (the node placed the call but its
/// answer timed out): the call stays on that node, unsure. Asked again
/// while the node cannot take the request, it still stays (not deferred
/// and handed to the other node, which would ring the callee twice); once
/// the node takes it, it answers the repeat as the duplicate it is.
#[tokio::test]
async fn an_unanswered_placement_is_never_placed_on_another_node() {
    let db = TestDb::sqlite().await;
    let clock = Clock::manual(UtcMillis(1_780_000_000_000));
    let (first, other) = (Peer::new("a"), Peer::new("b"));
    other.with(|s| s.active.extend(["x".to_owned(), "y".to_owned()]));
    let (sa, sb) = (
        Server::start(&first, None).await,
        Server::start(&other, None).await,
    );
    let l = link(vec![sa.url(), sb.url()], &clock);
    assert_eq!(l.choose_probing().await.unwrap().url(), sa.url());
    first.with(|s| s.place_then_error = Some(tonic::Code::DeadlineExceeded));
    let (call, claimed) = claimed_call(&db, 7, &clock).await;
    let d = l.dispatch(&db.store, &claimed).await;
    assert!(
        matches!(&d, Dispatched::Unknown { node, .. } if *node == sa.url()),
        "{d:?}"
    );
    assert_eq!(
        status(&db.store, &call.call_id).await,
        CallStatus::Dispatching
    );
    // The node now refuses requests at its door (its command queue full),
    // and is the busier of the two.
    first.with(|s| {
        s.place_then_error = None;
        s.place_error = Some(tonic::Code::Unavailable);
        s.active
            .extend(["p".to_owned(), "q".to_owned(), "r".to_owned()]);
    });
    other.with(|s| s.active.clear());
    for node in l.nodes() {
        l.probe(node).await;
    }
    clock.advance_ms(crate::store::DISPATCH_LEASE_MS);
    let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    assert_eq!(again.len(), 1);
    let d = l.dispatch(&db.store, &again[0]).await;
    assert!(
        matches!(&d, Dispatched::Unknown { node, .. } if *node == sa.url()),
        "{d:?}"
    );
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!((rec.status, rec.attempt), (CallStatus::Dispatching, 1));
    first.with(|s| s.place_error = None);
    clock.advance_ms(crate::store::DISPATCH_LEASE_MS);
    let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    let d = l.dispatch(&db.store, &again[0]).await;
    assert!(
        matches!(&d, Dispatched::Placed { node, duplicate: true, .. } if *node == sa.url()),
        "{d:?}"
    );
    assert_eq!(status(&db.store, &call.call_id).await, CallStatus::InFlight);
    assert!(
        other.with(|s| s.place_requests) == 0,
        "never asked of the other node"
    );
    assert_eq!(first.with(|s| s.placements.len()), 1, "rang once");
}

/// A repeat that stays unsure (here its node refuses every configuration,
/// so no PlaceCall can go) is not kept on its node for ever: once the
/// attempt must be over, counted from its last PlaceCall (its answer wait,
/// ring time, talk limit and a margin), the call is dispatched as a fresh
/// one would be (here: it fails); not before, even when its first
/// PlaceCall is long past.
#[tokio::test]
async fn an_unsure_repeat_is_freed_once_its_last_placecall_must_be_over() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    // The first PlaceCall is lost on the way.
    peer.with(|s| s.place_error = Some(tonic::Code::DeadlineExceeded));
    let (call, claimed) = claimed_call(&db, 11, &clock).await;
    assert!(matches!(
        l.dispatch(&db.store, &claimed).await,
        Dispatched::Unknown { .. }
    ));
    // The repeat rings, but its answer is lost.
    peer.with(|s| {
        s.place_error = None;
        s.place_then_error = Some(tonic::Code::DeadlineExceeded);
    });
    clock.advance_ms(crate::store::DISPATCH_LEASE_MS);
    let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    assert!(matches!(
        l.dispatch(&db.store, &again[0]).await,
        Dispatched::Unknown { .. }
    ));
    let sent = clock.now();
    // The node now refuses every configuration (a change it cannot take),
    // so no PlaceCall can be sent. 170 s after the first PlaceCall (which
    // must be over) the call that rang at the repeat may still be up: it
    // stays.
    peer.with(|s| {
        s.place_then_error = None;
        s.refuse_config = true;
    });
    db.store.create_trunk(&trunk(2)).await.unwrap();
    clock.advance_ms(110_000);
    let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    let d = l.dispatch(&db.store, &again[0]).await;
    assert!(matches!(d, Dispatched::Unknown { .. }), "{d:?}");
    // A lease on: past 10 s of answer wait + 60 s of ringing + 60 s of
    // talk (the call's maxSeconds) + 30 s after the repeat's PlaceCall,
    // so over either way.
    clock.advance_ms(crate::store::DISPATCH_LEASE_MS);
    assert!(clock.now().0 > sent.plus_ms(160_000).0);
    let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    assert_eq!(again.len(), 1);
    let d = l.dispatch(&db.store, &again[0]).await;
    assert!(matches!(d, Dispatched::Failed { .. }), "{d:?}");
    assert_eq!(
        status(&db.store, &call.call_id).await,
        CallStatus::EndedFailedRetryPending
    );
    server.kill(&peer).await;
}

/// A hangup while the call's PlaceCall is on its way: the node does not
/// know the call yet, so the call is cancelled at once, and the node,
/// told which attempt was hung up, refuses the PlaceCall when it comes:
/// nothing rings.
#[tokio::test]
async fn a_call_hung_up_while_its_placecall_is_under_way_never_rings() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    let url = server.url();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    peer.with(|s| s.place_gate = Some(gate.clone()));
    let (call, claimed) = claimed_call(&db, 8, &clock).await;
    let dispatch = {
        let (l, store) = (l.clone(), db.store.clone());
        tokio::spawn(async move { l.dispatch(&store, &claimed).await })
    };
    eventually("the PlaceCall at the node", || async {
        peer.with(|s| s.place_requests) == 1
    })
    .await;
    assert_eq!(
        l.hangup(&url, call.call_id.as_str(), 1).await.unwrap(),
        super::Hangup::Unknown
    );
    let r = db
        .store
        .hangup_unknown_to_node(TENANT, &call.call_id, &url, 1, clock.now())
        .await
        .unwrap();
    assert!(
        matches!(r, crate::store::HangupResult::Cancelled { .. }),
        "{r:?}"
    );
    gate.add_permits(1);
    let d = dispatch.await.unwrap();
    assert!(matches!(d, Dispatched::Lost), "{d:?}");
    assert!(peer.with(|s| s.placements.is_empty()), "nothing rang");
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::Cancelled);
    let finished = event_data(&db.store, TENANT, "outbound-ai.finished").await;
    assert_eq!(finished.len(), 1, "{finished:?}");
    server.kill(&peer).await;
}

/// A TCP relay to `upstream` that can be frozen: from then on it passes
/// nothing either way and keeps every connection open, as a peer behind a
/// network that went dark does.
struct FreezingRelay {
    addr: SocketAddr,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezingRelay {
    async fn start(upstream: SocketAddr) -> FreezingRelay {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = frozen.clone();
        let task = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                for (mut from, mut to, flag) in [
                    (
                        Box::new(ri) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                        flag.clone(),
                    ),
                    (Box::new(ro), Box::new(wi), flag.clone()),
                ] {
                    pumps.spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if flag.load(Ordering::SeqCst) {
                                // Dark: hold both ends, pass nothing.
                                std::future::pending::<()>().await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        FreezingRelay { addr, frozen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FreezingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A first dispatch whose PlaceCall reached the node, which then went
/// dark before its answer came back: the transport's UNAVAILABLE (the
/// HTTP/2 keep-alive ping unanswered) does not mean nothing rang, so the
/// call stays with that node, unsure, instead of waiting to be placed on
/// another (where it would ring a second time).
#[tokio::test]
async fn a_placecall_cut_off_after_it_was_delivered_stays_with_its_node() {
    let db = TestDb::sqlite().await;
    let clock = Clock::manual(UtcMillis(1_780_000_000_000));
    let peer = Peer::new("j1");
    let server = Server::start(&peer, None).await;
    let relay = FreezingRelay::start(server.addr).await;
    let l = link(vec![relay.url()], &clock);
    l.choose_probing().await.unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    peer.with(|s| s.place_gate = Some(gate.clone()));
    let (call, claimed) = claimed_call(&db, 9, &clock).await;
    let dispatch = {
        let (l, store) = (l.clone(), db.store.clone());
        tokio::spawn(async move { l.dispatch(&store, &claimed).await })
    };
    eventually("the PlaceCall at the node", || async {
        peer.with(|s| s.place_requests) == 1
    })
    .await;
    relay.freeze();
    gate.add_permits(1);
    let d = dispatch.await.unwrap();
    assert!(
        matches!(&d, Dispatched::Unknown { node, detail }
            if *node == relay.url() && detail.starts_with("Unavailable")),
        "{d:?}"
    );
    assert_eq!(peer.with(|s| s.placements.len()), 1, "it rang there");
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::Dispatching);
    // Its next dispatch asks that node again.
    clock.advance_ms(crate::store::DISPATCH_LEASE_MS);
    let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].node_url.as_deref(), Some(relay.url().as_str()));
    server.kill(&peer).await;
}

/// A node that died since its last probe: the PlaceCall (or the
/// configuration push before it) finds no one to connect to, so it surely
/// rang nothing, and the call waits to be placed on whichever node is up
/// then, its attempt unspent, as when no node is up at all.
#[tokio::test]
async fn a_call_on_a_node_that_could_not_be_reached_waits_to_be_placed_anywhere() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    db.store.create_trunk(&trunk(1)).await.unwrap();
    super::config::ensure_config(&l.nodes()[0], &db.store)
        .await
        .unwrap();
    server.kill(&peer).await;
    let (call, claimed) = claimed_call(&db, 9, &clock).await;
    let d = l.dispatch(&db.store, &claimed).await;
    assert!(
        matches!(&d, Dispatched::Deferred { detail, .. }
            if detail.starts_with("not placed yet") && detail.contains("connect")),
        "{d:?}"
    );
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.attempt, rec.retries_left),
        (CallStatus::Scheduled, 0, 1)
    );
    // Its configuration changed meanwhile: the push fails the same way.
    db.store.create_trunk(&trunk(2)).await.unwrap();
    clock.advance_ms(super::CAPACITY_WAIT_MS);
    let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].node_url, None, "free for any node");
    let d = l.dispatch(&db.store, &again[0]).await;
    assert!(
        matches!(&d, Dispatched::Deferred { detail, .. }
            if detail.starts_with("not placed yet: no configuration on")),
        "{d:?}"
    );
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.attempt, rec.retries_left),
        (CallStatus::Scheduled, 0, 1)
    );
}

/// The configuration push before a call fails: a node that says it
/// cannot take requests now (UNAVAILABLE from the node itself) leaves the
/// call waiting, its attempt unspent; any other failure fails the attempt
/// (it is retried per the call's settings) rather than waiting for ever.
#[tokio::test]
async fn a_failed_configuration_push_waits_only_when_the_node_is_unavailable() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    db.store.create_trunk(&trunk(1)).await.unwrap();
    peer.with(|s| s.config_error = Some(tonic::Code::Unavailable));
    let (call, claimed) = claimed_call(&db, 10, &clock).await;
    let d = l.dispatch(&db.store, &claimed).await;
    assert!(
        matches!(&d, Dispatched::Deferred { detail, .. } if detail.contains("no configuration on")),
        "{d:?}"
    );
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!((rec.status, rec.attempt), (CallStatus::Scheduled, 0));
    peer.with(|s| s.config_error = Some(tonic::Code::Internal));
    clock.advance_ms(super::CAPACITY_WAIT_MS);
    let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    let d = l.dispatch(&db.store, &again[0]).await;
    assert!(
        matches!(&d, Dispatched::Failed { detail, .. } if detail.contains("scripted ApplyConfig failure")),
        "{d:?}"
    );
    assert!(peer.with(|s| s.placements.is_empty()), "nothing rang");
    server.kill(&peer).await;
}

/// A hangup asked for while the call was being handed to a node that
/// could not be reached (the API's 502): the dispatch under way, finding
/// that nothing rang there, cancels the call instead of leaving it to be
/// placed on another node later.
#[tokio::test]
async fn a_hangup_asked_for_during_a_failing_dispatch_cancels_the_call() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    let (call, claimed) = claimed_call(&db, 11, &clock).await;
    server.kill(&peer).await;
    assert!(
        db.store
            .note_hangup_request(TENANT, &call.call_id, clock.now())
            .await
            .unwrap()
    );
    let d = l.dispatch(&db.store, &claimed).await;
    assert!(matches!(d, Dispatched::Lost), "{d:?}");
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!((rec.status, rec.attempt), (CallStatus::Cancelled, 0));
    clock.advance_ms(super::CAPACITY_WAIT_MS + crate::store::DISPATCH_LEASE_MS);
    assert!(
        db.store
            .claim_due_calls(clock.now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A repeated dispatch of a call a hangup was asked for (its node could
/// not be reached then) is not placed: while the node stays away it
/// waits (the first PlaceCall may have rung there); once the node is back
/// and says it never placed the attempt, it is cancelled. Nothing goes to
/// another node.
#[tokio::test]
async fn a_repeat_a_hangup_was_asked_for_is_never_placed() {
    let db = TestDb::sqlite().await;
    let clock = Clock::manual(UtcMillis(1_780_000_000_000));
    let (pa, pb) = (Peer::new("ja"), Peer::new("jb"));
    let (sa, sb) = (
        Server::start(&pa, None).await,
        Server::start(&pb, None).await,
    );
    let l = link(vec![sa.url(), sb.url()], &clock);
    l.choose_probing().await.unwrap();
    let (call, claimed) = claimed_call(&db, 12, &clock).await;
    // Its dispatcher recorded node A, then died; A dies too.
    let a = sa.url();
    assert!(
        db.store
            .set_dispatch_node(&claimed, &a, None, clock.now())
            .await
            .unwrap()
    );
    sa.kill(&pa).await;
    assert!(
        db.store
            .note_hangup_request(TENANT, &call.call_id, clock.now())
            .await
            .unwrap()
    );
    clock.advance_ms(crate::store::DISPATCH_LEASE_MS);
    let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    assert!(again[0].hangup_requested);
    let d = l.dispatch(&db.store, &again[0]).await;
    assert!(
        matches!(&d, Dispatched::Unknown { node, .. } if *node == a),
        "{d:?}"
    );
    // A is back (restarted): told of the hangup, it says it has not
    // placed the attempt (and now never will): cancelled, not placed.
    let addr: std::net::SocketAddr = a.trim_start_matches("http://").parse().unwrap();
    let sa = Server::start(&pa, Some(addr)).await;
    clock.advance_ms(crate::store::DISPATCH_LEASE_MS);
    let again = db.store.claim_due_calls(clock.now(), 10).await.unwrap();
    let d = l.dispatch(&db.store, &again[0]).await;
    assert!(matches!(d, Dispatched::Lost), "{d:?}");
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_eq!(rec.status, CallStatus::Cancelled);
    assert!(pa.with(|s| s.placements.is_empty()), "nothing rang on A");
    assert!(pb.with(|s| s.placements.is_empty()), "nor on B");
    sa.kill(&pa).await;
    sb.kill(&pb).await;
}

/// A hangup of a call whose PlaceCall answer was lost but which rang and
/// ended on its node before the node's end was read: the node says it is
/// over, the call is not cancelled, and its real end is what it records.
#[tokio::test]
async fn a_hangup_after_an_unrecorded_placement_ended_keeps_its_real_end() {
    let (db, clock, peer, server, l) = one_node_named("j1").await;
    let url = server.url();
    peer.with(|s| s.place_then_error = Some(tonic::Code::DeadlineExceeded));
    let (call, claimed) = claimed_call(&db, 10, &clock).await;
    assert!(matches!(
        l.dispatch(&db.store, &claimed).await,
        Dispatched::Unknown { .. }
    ));
    peer.emit(call.call_id.as_str(), ended("no-answer"));
    assert_eq!(
        l.hangup(&url, call.call_id.as_str(), 1).await.unwrap(),
        super::Hangup::AlreadyEnding
    );
    read_events_up_to(&l, &db, &url, 1).await;
    let rec = db.store.call(TENANT, &call.call_id).await.unwrap().unwrap();
    assert_ne!(rec.status, CallStatus::Cancelled);
    assert_eq!(rec.ended_reason, "no-answer");
    server.kill(&peer).await;
}

/// Through the API: a call whose PlaceCall never reached its node (the
/// node skipped it, its answer timed out) is cancelled by a hangup at once,
/// and not dispatched again.
#[tokio::test]
async fn api_hangup_of_a_call_its_node_never_got_cancels_it() {
    use axum::http::StatusCode;
    let peer = Peer::new("j1");
    peer.with(|s| s.place_error = Some(tonic::Code::DeadlineExceeded));
    let (server, h, tasks, t, r) = api_call_through(&peer).await;
    assert_eq!(r.json["status"], "dispatching", "{}", r.text);
    let id = r.json["callId"].as_str().unwrap().to_owned();
    let url = format!("/api.ashx/v1/calls/{id}");
    let r = h
        .post(&format!("{url}/hangup"), &t, serde_json::json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.json["newStatus"].as_str(), r.json["wasNoop"].as_bool()),
        (Some("cancelled"), Some(false)),
        "{}",
        r.text
    );
    assert_eq!(h.get(&url, &t).await.json["status"], "cancelled");
    peer.with(|s| s.place_error = None);
    let due = h
        .state
        .store
        .claim_due_calls(UtcMillis(i64::MAX / 2), 10)
        .await
        .unwrap();
    assert!(due.is_empty(), "not dispatched again: {due:?}");
    assert!(peer.with(|s| s.placements.is_empty()));
    tasks.shutdown().await;
    server.kill(&peer).await;
}

/// A backlog of events (a node that kept them while the control plane was
/// away) is acknowledged in batches, not one ack (one durable write on the
/// node) per event, and up to its last event.
#[tokio::test]
async fn a_backlog_is_acknowledged_in_batches() {
    let (db, _clock, peer, server, l) = one_node_named("j1").await;
    let n = super::events::ACK_EVERY * 2 + 10;
    for k in 0..n {
        peer.emit(&format!("oac-{k:012x}"), answered());
    }
    let tasks = l.start(&db.store);
    eventually("every event acknowledged", || async {
        peer.with(|s| s.journal.is_empty())
    })
    .await;
    tasks.shutdown().await;
    let acks = peer.with(|s| s.acks.clone());
    // Every ACK_EVERY events, or 50 ms after the first unacknowledged one
    // (each event is a transaction here): far fewer acks than events.
    assert!(acks.len() < (n / 4) as usize, "{acks:?}");
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "{acks:?}");
    assert!(
        acks.windows(2)
            .all(|w| w[1] - w[0] <= super::events::ACK_EVERY),
        "{acks:?}"
    );
    assert_eq!(acks.last(), Some(&n));
    let cursor = db
        .store
        .switch_cursor(&server.url())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cursor.last_seq, i64::try_from(n).unwrap());
    server.kill(&peer).await;
}

/// Two hangups of one live call at once: the switch acts on one, and the
/// other is the no-op (both answered `wasNoop: false` before).
#[tokio::test]
async fn of_two_hangups_at_once_one_is_the_noop() {
    use axum::http::StatusCode;
    let peer = Peer::new("j1");
    peer.with(|s| s.slow_ends = true);
    let (server, h, tasks, t, r) = api_call_through(&peer).await;
    let id = r.json["callId"].as_str().unwrap().to_owned();
    let url = format!("/api.ashx/v1/calls/{id}/hangup");
    let (one, two) = tokio::join!(
        h.post(&url, &t, serde_json::json!({})),
        h.post(&url, &t, serde_json::json!({}))
    );
    assert_eq!((one.status, two.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(peer.with(|s| s.hangups.len()), 2, "both reached the node");
    let mut noops = [&one, &two].map(|r| r.json["wasNoop"].as_bool().unwrap());
    noops.sort_unstable();
    assert_eq!(noops, [false, true], "{} / {}", one.text, two.text);
    tasks.shutdown().await;
    server.kill(&peer).await;
}

#[tokio::test]
async fn a_retry_the_node_calls_a_duplicate_is_not_left_in_flight() {
    let db = TestDb::sqlite().await;
    let clock = Clock::manual(UtcMillis(1_780_000_000_000));
    let peer = Peer::new("j1");
    peer.with(|s| s.dedup_by_call_id = true);
    let server = Server::start(&peer, None).await;
    let l = link(vec![server.url()], &clock);
    l.choose_probing().await.unwrap();
    let (call, claimed) = claimed_call(&db, 7, &clock).await;
    assert!(matches!(
        l.dispatch(&db.store, &claimed).await,
        Dispatched::Placed { .. }
    ));
    // The attempt rings out; the retry is due a minute later.
    db.store
        .reset_switch_cursor(&server.url(), "j1", clock.now())
        .await
        .unwrap();
    let seq = peer.emit(
        call.call_id.as_str(),
        pb::event::Kind::Ended(pb::CallEnded {
            outcome: "no-answer".into(),
            sip_status: 480,
            ..Default::default()
        }),
    );
    let ev = super::events::convert(&peer.with(|s| s.journal[0].clone())).unwrap();
    assert_eq!(ev.seq, i64::try_from(seq).unwrap());
    db.store
        .apply_switch_event(&server.url(), &ev, clock.now())
        .await
        .unwrap();
    assert_eq!(
        status(&db.store, &call.call_id).await,
        CallStatus::EndedFailedRetryPending
    );
    clock.advance_ms(60_000);
    let out = crate::scheduler::tick(&l, &db.store, &clock).await;
    assert!(
        matches!(&out[..], [Dispatched::Failed { status: CallStatus::EndedFailedFinal, detail }] if detail.contains("duplicate")),
        "{out:?}"
    );
    server.kill(&peer).await;
}

#[tokio::test]
async fn an_inbound_call_streams_into_its_record_transcript_and_events() {
    use axum::http::StatusCode;
    let peer = Peer::new("j1");
    let server = Server::start(&peer, None).await;
    let db = TestDb::sqlite().await;
    let h = crate::api::tests::Harness::with_switch(db, vec![server.url()]).await;
    let tenant = crate::api::tests::TENANT;
    let t = h.admin().await;
    let body = serde_json::json!({
        "name": "codebdemo", "number": "1234", "systemPrompt": "You are the receptionist.",
        "saveTranscripts": true
    });
    let r = h.post("/api.ashx/v1/numbers", &t, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let tasks = h.state.switch.start(&h.state.store);
    // The node pushes the number to its AI persona (with saveTranscripts).
    eventually("number pushed", || async {
        peer.with(|s| {
            s.running
                .as_ref()
                .is_some_and(|r| r.virtual_numbers.iter().any(|n| n.number == "1234"))
        })
    })
    .await;
    let id = "vnum0123456789ab";
    let emit = |kind| peer.emit_as(Some(tenant), id, kind);
    emit(pb::event::Kind::Inbound(pb::InboundCall {
        did: "+15551234567".into(),
        from_number: "+35699123456".into(),
        virtual_number: "1234".into(),
        trunk_id: "tr_0123456789abcdef".into(),
        instance_id: "i1".into(),
    }));
    emit(pb::event::Kind::Answered(pb::CallAnswered {
        direction: "inbound".into(),
        trunk_id: "tr_0123456789abcdef".into(),
        answer_ms: 80,
    }));
    emit(pb::event::Kind::Started(pb::CallStarted {}));
    for (role, text, at_ms) in [
        ("ai", "Hello, CodeB reception.", 200),
        ("caller", "Hi, just testing.", 2_000),
        ("ai", "Test received, goodbye.", 3_500),
    ] {
        emit(pb::event::Kind::Turn(pb::TranscriptTurn {
            role: role.into(),
            text: text.into(),
            at_ms,
            interrupted: false,
        }));
    }
    emit(pb::event::Kind::Usage(pb::Usage {
        input_tokens: 600,
        output_tokens: 400,
        estimated: true,
    }));
    emit(pb::event::Kind::Ended(pb::CallEnded {
        outcome: "finished".into(),
        answered: true,
        answered_at_unix_ms: 1_780_000_002_000,
        talk_seconds: 5,
        duration_seconds: 6,
        input_turns: 1,
        output_turns: 2,
        ..Default::default()
    }));
    let url = format!("/api.ashx/v1/transcripts/{id}");
    eventually("transcript saved", || async {
        h.get(&url, &t).await.status == StatusCode::OK
    })
    .await;
    eventually("acked", || async { peer.with(|s| s.journal.is_empty()) }).await;
    // The transcript, as the spec shows a vnum one.
    let one = h.get(&url, &t).await.json;
    assert_eq!(one["callerSource"], "vnum");
    assert_eq!(one["number"], "1234");
    assert_eq!(one["rule"], "vnum:codebdemo");
    assert_eq!(one["outcome"], "finished");
    assert_eq!(one["answered"], true);
    assert_eq!(one["tokensTotal"], 1000);
    assert_eq!(one["trunkId"], "tr_0123456789abcdef");
    assert_eq!(one["turns"].as_array().unwrap().len(), 3);
    assert_eq!(one["turns"][1]["speaker"], "Caller");
    assert!(one.get("phone").is_none());
    let file = format!("vnum-1234-20260528-202641-{id}.txt");
    assert_eq!(one["file"], file.as_str());
    let list = h.get("/api.ashx/v1/transcripts?source=vnum", &t).await.json;
    assert_eq!(list["total"], 1);
    assert_eq!(list["data"][0]["callId"], id);
    assert_eq!(list["data"][0]["file"], file.as_str());
    let outbound = h
        .get("/api.ashx/v1/transcripts?source=outbound-ai", &t)
        .await
        .json;
    assert_eq!(outbound["total"], 0);
    // Not an outbound AI call: /calls does not list or show it.
    assert_eq!(h.get("/api.ashx/v1/calls", &t).await.json["total"], 0);
    assert_eq!(
        h.get(&format!("/api.ashx/v1/calls/{id}"), &t).await.status,
        StatusCode::NOT_FOUND
    );
    let names: Vec<String> = crate::store::testing::events(&h.state.store, tenant)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        names,
        [
            "call.answered",
            "call.started",
            "call.ended",
            "transcript.saved"
        ]
    );
    let ended = event_data(&h.state.store, tenant, "call.ended").await;
    assert_eq!(ended[0]["tokens"], 1000);
    assert_eq!(ended[0]["source"], "sip");
    let rec = h
        .state
        .store
        .inbound_call(tenant, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.node_url, server.url());
    assert_eq!(rec.from_number, "+35699123456");
    assert_eq!(rec.transcript_path, file);
    let shown = h.get(&format!("/api.ashx/v1/inbound-calls/{id}"), &t).await;
    assert_eq!(shown.json["status"], "ended");
    assert_eq!(shown.json["transcriptPath"], file.as_str());
    tasks.shutdown().await;
    server.kill(&peer).await;
}

#[tokio::test]
async fn prompt_slugs_are_placed_as_their_text() {
    let (db, clock, peer, server, l) = one_node_named("a").await;
    let s = &db.store;
    let now = clock.now();
    assert!(
        s.create_prompt(
            TENANT,
            "dentist",
            "Dentist",
            "Remind them of the dentist.",
            now
        )
        .await
        .unwrap()
    );
    // A virtual number whose persona is a built-in slug.
    let number = crate::store::NumberRecord {
        tenant: TENANT.into(),
        number: "1234".into(),
        name: "desk".into(),
        mode: "live-voice-ai".into(),
        voice: "Aoede".into(),
        language: "en-US".into(),
        model: "m".into(),
        save_transcripts: true,
        max_duration_sec: 600,
        visibility: "signed-in".into(),
        system_prompt: "reminder".into(),
        ai_api_key: String::new(),
        created_at: now,
        updated_at: now,
    };
    assert!(s.create_number(&number).await.unwrap());
    let mut placed_prompts = Vec::new();
    for (n, prompt) in [(40, "dentist"), (41, "reminder"), (42, "Say hi")] {
        let mut call = new_call(n, now);
        call.system_prompt = prompt.into();
        call.display_name = "Dr Who, Tuesday 10:00".into();
        s.insert_call(&call).await.unwrap();
        let claimed = s.claim_call(&call.call_id, now).await.unwrap().unwrap();
        assert_eq!(
            claimed.system_prompt, prompt,
            "the record keeps what was sent"
        );
        let d = l.dispatch(s, &claimed).await;
        assert!(matches!(d, Dispatched::Placed { .. }), "{d:?}");
        let p = peer.with(|st| st.placements.last().cloned()).unwrap();
        assert_eq!(p.call_id, call.call_id.as_str());
        placed_prompts.push(p.ai.unwrap().system_prompt);
    }
    let context = "\n\nCall context: you are calling +15551234567; \
                   the call's caller-ID name is \"Dr Who, Tuesday 10:00\".";
    assert_eq!(
        placed_prompts[0],
        format!("Remind them of the dentist.{context}"),
        "the tenant's prompt"
    );
    let builtin = crate::store::builtin_prompt("reminder").unwrap().text;
    assert_eq!(placed_prompts[1], format!("{builtin}{context}"));
    assert_eq!(placed_prompts[2], "Say hi", "plain text as given");
    // The number's persona got the built-in's text in the snapshot; a
    // tenant override of the slug is a configuration change that replaces
    // it on the node.
    let running = peer.with(|st| st.running.clone()).unwrap();
    assert_eq!(
        running.virtual_numbers[0]
            .ai
            .as_ref()
            .unwrap()
            .system_prompt,
        builtin
    );
    let before = s.config_version().await.unwrap();
    assert!(
        s.create_prompt(TENANT, "reminder", "Ours", "Our reminder.", now)
            .await
            .unwrap()
    );
    assert!(s.config_version().await.unwrap() > before);
    let rows = s.config_rows().await.unwrap();
    let snap = super::config::snapshot(&rows);
    assert_eq!(
        snap.virtual_numbers[0].ai.as_ref().unwrap().system_prompt,
        "Our reminder."
    );
    server.kill(&peer).await;
}

#[tokio::test]
async fn sip_users_reach_the_node_with_their_tenant() {
    let (db, clock, peer, server, l) = one_node_named("a").await;
    let s = &db.store;
    let now = clock.now();
    let user =
        |tenant: &str, name: &str, password: &str, contact: &str| crate::store::SipUserRecord {
            tenant: tenant.into(),
            name: name.into(),
            display_name: "stays in the control plane".into(),
            password: password.into(),
            contact: contact.into(),
            created_at: now,
            updated_at: now,
        };
    s.create_sip_user(&user(TENANT, "desk", "desk-secret", ""))
        .await
        .unwrap();
    s.create_sip_user(&user("other.test", "pbx", "", "sip:pbx@192.0.2.20:5060"))
        .await
        .unwrap();
    // A route to a user and one to an AI number: only the number's is a
    // virtual-number target.
    let route = |did: &str, user: &str| crate::store::InboundRoute {
        did: did.into(),
        from_number: None,
        user: user.into(),
    };
    s.create_route(TENANT, &route("+15550001", "desk"), now)
        .await
        .unwrap()
        .unwrap();
    let node = l.nodes()[0].clone();
    super::config::ensure_config(&node, s).await.unwrap();
    let running = peer.with(|st| st.running.clone()).unwrap();
    assert_eq!(
        running.users,
        vec![
            pb::User {
                name: "desk".into(),
                tenant: TENANT.into(),
                password: "desk-secret".into(),
                contact: String::new(),
            },
            pb::User {
                name: "pbx".into(),
                tenant: "other.test".into(),
                password: String::new(),
                contact: "sip:pbx@192.0.2.20:5060".into(),
            },
        ]
    );
    let desk = running
        .routes
        .iter()
        .find(|r| r.did == "+15550001")
        .unwrap();
    assert_eq!(
        desk.target,
        Some(pb::inbound_route::Target::User("desk".into()))
    );
    // A change to a user is a new configuration for the node.
    let mut pbx = user("other.test", "pbx", "", "sip:pbx@192.0.2.21:5060");
    pbx.updated_at = UtcMillis(now.0 + 1);
    assert!(s.update_sip_user(&pbx).await.unwrap());
    super::config::ensure_config(&node, s).await.unwrap();
    let running2 = peer.with(|st| st.running.clone()).unwrap();
    assert!(running2.version > running.version);
    assert_eq!(running2.users[1].contact, "sip:pbx@192.0.2.21:5060");
    assert!(s.delete_sip_user(TENANT, "desk").await.unwrap());
    super::config::ensure_config(&node, s).await.unwrap();
    assert_eq!(peer.with(|st| st.running.as_ref().unwrap().users.len()), 1);
    server.kill(&peer).await;
}

/// A `tls` trunk stored before the API refused them is left out of the
/// snapshot: the switch would refuse the whole configuration for it, and
/// every tenant's changes would stop reaching it.
#[test]
fn a_trunk_the_switch_cannot_reach_is_left_out_of_the_snapshot() {
    let rows = crate::store::ConfigRows {
        version: 3,
        trunks: vec![
            trunk(1),
            TrunkRecord {
                transport: "tls".into(),
                ..trunk(2)
            },
            TrunkRecord {
                transport: "tcp".into(),
                ..trunk(3)
            },
        ],
        sip_users: Vec::new(),
        routes: Vec::new(),
        numbers: Vec::new(),
        whitelist: Vec::new(),
    };
    let snap = super::config::snapshot(&rows);
    let ids: Vec<&str> = snap.trunks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [trunk(1).id.to_string(), trunk(3).id.to_string()]);
}

/// A virtual number whose instructions, or a route whose DID, are longer
/// (in bytes) than the switch takes, stored before the API counted bytes,
/// would make every node refuse the whole snapshot, for every tenant:
/// each is left out; a route to a number left out is a user route.
#[test]
fn rows_the_switch_would_refuse_are_left_out_of_the_snapshot() {
    let number = |n: &str, prompt: String| crate::store::NumberRecord {
        tenant: TENANT.into(),
        number: n.into(),
        name: "desk".into(),
        mode: "live-voice-ai".into(),
        voice: "Aoede".into(),
        language: "en-US".into(),
        model: "gemini-live-2.5-flash".into(),
        save_transcripts: true,
        max_duration_sec: 600,
        visibility: "private".into(),
        system_prompt: prompt,
        ai_api_key: String::new(),
        created_at: UtcMillis(0),
        updated_at: UtcMillis(0),
    };
    let route = |did: &str, to: &str| crate::store::TenantRoute {
        tenant: TENANT.into(),
        did: did.into(),
        from_number: String::new(),
        user: to.into(),
    };
    let rows = crate::store::ConfigRows {
        version: 3,
        trunks: Vec::new(),
        sip_users: Vec::new(),
        routes: vec![
            route("7001", "+15550001"),
            route(&"é".repeat(33), "+15550001"),
            route("7002", "+15550002"),
        ],
        numbers: vec![
            number("+15550001", "Greet.".into()),
            number("+15550002", "😀".repeat(16_385)),
        ],
        whitelist: Vec::new(),
    };
    let snap = super::config::snapshot(&rows);
    let numbers: Vec<&str> = snap
        .virtual_numbers
        .iter()
        .map(|v| v.number.as_str())
        .collect();
    assert_eq!(numbers, ["+15550001"]);
    let routes: Vec<(&str, &Option<pb::inbound_route::Target>)> = snap
        .routes
        .iter()
        .map(|r| (r.did.as_str(), &r.target))
        .collect();
    assert_eq!(
        routes,
        [
            (
                "7001",
                &Some(pb::inbound_route::Target::VirtualNumber("+15550001".into()))
            ),
            (
                "7002",
                &Some(pb::inbound_route::Target::User("+15550002".into()))
            ),
        ]
    );
}
