//! The `Switch` service: each RPC checks its request, hands what touches
//! calls or routing to the SIP thread (bounded queue + wake-up, reply by
//! oneshot, never an unbounded wait), and serves events from the journal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codeb_proto::v1::switch_server::{Switch, SwitchServer};
use codeb_proto::v1::{self, transfer_request};
use tokio::sync::{Semaphore, broadcast, oneshot};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::journal::Journal;
use super::{Command, NodeState, snapshot};
use crate::config::SwitchConfig;
use crate::sip::calls::{Originate, OriginateError, TransferError, TransferTarget};

/// How long an RPC waits for the SIP thread's answer.
const REPLY_WAIT: Duration = Duration::from_secs(5);
/// Concurrent Subscribe streams.
pub(super) const MAX_SUBSCRIBERS: usize = 16;
/// Events read from disk per step of a catching-up stream.
const READ_BATCH: usize = 256;
/// Events buffered per stream towards its client.
const STREAM_BUFFER: usize = 256;

/// What the service shares with the rest of the switch.
pub struct Shared {
    pub state: Arc<NodeState>,
    pub journal: Arc<Mutex<Journal>>,
    pub live: broadcast::Sender<Arc<v1::Event>>,
    pub commands: SyncSender<Command>,
    pub waker: codeb_io::Waker,
    pub data_dir: PathBuf,
    /// Becomes true when the switch stops: the event streams end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

pub struct Service {
    shared: Arc<Shared>,
    subscribers: Arc<Semaphore>,
    /// ApplyConfig one at a time: apply and persist in the same order.
    apply: tokio::sync::Mutex<()>,
}

impl Service {
    pub fn new(shared: Shared) -> Service {
        Service {
            shared: Arc::new(shared),
            subscribers: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            apply: tokio::sync::Mutex::new(()),
        }
    }

    /// The permits of the event streams: one is held per connected
    /// subscriber.
    pub fn subscribers(&self) -> Arc<Semaphore> {
        self.subscribers.clone()
    }

    /// Queues a command for the SIP thread and waits (bounded) for its
    /// answer.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Status> {
        if self.shared.state.draining() {
            return Err(Status::unavailable("the switch is shutting down"));
        }
        let (tx, rx) = oneshot::channel();
        match self.shared.commands.try_send(make(tx)) {
            Ok(()) => self.shared.waker.wake(),
            Err(TrySendError::Full(_)) => {
                return Err(Status::unavailable(
                    "the switch's command queue is full; retry shortly",
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Status::unavailable("the switch is shutting down"));
            }
        }
        match tokio::time::timeout(REPLY_WAIT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(Status::unavailable("the switch is shutting down")),
            // Not UNAVAILABLE (nothing done, try elsewhere): the command
            // may still take effect, or may have.
            Err(_) => Err(Status::deadline_exceeded(
                "the SIP thread did not answer in time; the command may yet take effect",
            )),
        }
    }
}

/// The control link's check of each call: with a token
/// (`CODEB_SWITCH_TOKEN`), `authorization: Bearer <token>` or
/// UNAUTHENTICATED (compared in constant time).
#[derive(Clone)]
pub struct Auth(Option<std::sync::Arc<[u8]>>);

impl Auth {
    pub fn new(token: Option<&str>) -> Auth {
        Auth(token.map(|t| format!("Bearer {t}").into_bytes().into()))
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let Some(want) = &self.0 else {
            return Ok(req);
        };
        let got = req
            .metadata()
            .get("authorization")
            .map_or(&[][..], |v| v.as_bytes());
        // Equal lengths first (the token's length is no secret), then
        // every byte, whatever differs.
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(want.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "this switch needs its CODEB_SWITCH_TOKEN as a bearer",
            ))
        }
    }
}

/// Serves until `stop` fires.
pub async fn serve(
    service: Service,
    listener: tokio::net::TcpListener,
    stop: oneshot::Receiver<()>,
    auth: Auth,
    tls: Option<Arc<super::tls::LinkTls>>,
) {
    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(256)
        .timeout(Duration::from_secs(30))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            SwitchServer::new(service)
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(16 << 20),
            auth,
        ));
    let stopped = async {
        let _ = stop.await;
    };
    let res = match tls {
        None => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, stopped).await
        }
        Some(tls) => {
            // Our acceptor, so that SIGHUP can renew the certificate.
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(super::tls::accept(listener, tls, tx));
            let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
            router.serve_with_incoming_shutdown(incoming, stopped).await
        }
    };
    if let Err(e) = res {
        tracing::error!(error = %e, "gRPC server failed");
    }
}

fn originate_status(e: OriginateError) -> Status {
    match e {
        OriginateError::InvalidArgument(m) => Status::invalid_argument(m),
        OriginateError::FailedPrecondition(m) => Status::failed_precondition(m),
        OriginateError::ResourceExhausted(m) => Status::resource_exhausted(m),
    }
}

/// Resolves trunk hosts off the async threads (DNS may block).
async fn resolve(config: &SwitchConfig) -> HashMap<String, SocketAddr> {
    let c = config.clone();
    tokio::task::spawn_blocking(move || crate::config::resolve_trunks(&c))
        .await
        .unwrap_or_default()
}

/// The persona of a call or virtual number, as the contract carries it.
pub fn persona(a: v1::AiSession) -> crate::ai::Persona {
    crate::ai::Persona {
        model: a.model,
        voice: a.voice,
        language: a.language,
        system_prompt: a.system_prompt,
        api_key: a.api_key,
        transfer_targets: a.transfer_targets,
        save_transcript: a.save_transcript,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Switch for Service {
    async fn place_call(
        &self,
        request: Request<v1::PlaceCallRequest>,
    ) -> Result<Response<v1::PlaceCallReply>, Status> {
        let r = request.into_inner();
        let req = Originate {
            call_id: r.call_id,
            tenant: r.tenant,
            phone: r.phone,
            display_name: r.display_name,
            trunk_id: r.trunk_id,
            max_seconds: r.max_seconds,
            ring_timeout_seconds: r.ring_timeout_seconds,
            attempt: r.attempt,
            record: r.record,
            ai: r.ai.map(persona),
        };
        let placed = self
            .ask(|tx| Command::Place(Box::new(req), tx))
            .await?
            .map_err(originate_status)?;
        Ok(Response::new(v1::PlaceCallReply {
            trunk_id: placed.trunk_id,
            duplicate: placed.duplicate,
            instance_id: self.shared.state.instance_id.clone(),
        }))
    }

    async fn hangup(
        &self,
        request: Request<v1::HangupRequest>,
    ) -> Result<Response<v1::HangupReply>, Status> {
        let r = request.into_inner();
        if r.call_id.is_empty() || r.call_id.len() > 64 || r.outcome.len() > 64 {
            return Err(Status::invalid_argument(
                "call_id (1-64 characters) and outcome (at most 64)",
            ));
        }
        let already_ending = self
            .ask(|reply| Command::Hangup {
                call_id: r.call_id,
                outcome: r.outcome,
                attempt: r.attempt,
                reply,
            })
            .await?
            .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(v1::HangupReply { already_ending }))
    }

    async fn transfer(
        &self,
        request: Request<v1::TransferRequest>,
    ) -> Result<Response<v1::TransferReply>, Status> {
        let r = request.into_inner();
        if r.call_id.is_empty() || r.call_id.len() > 64 || r.trunk_id.len() > 64 {
            return Err(Status::invalid_argument(
                "call_id (1-64 characters) and trunk_id (at most 64)",
            ));
        }
        let target = match r.target {
            Some(transfer_request::Target::ToUser(user)) if crate::ai::user_name_ok(&user) => {
                TransferTarget::User(user)
            }
            Some(transfer_request::Target::ToUser(_)) => {
                return Err(Status::invalid_argument(
                    "to_user: 1-64 letters, digits or _-.+",
                ));
            }
            Some(transfer_request::Target::ToPhone(number)) => TransferTarget::Phone {
                number,
                trunk_id: r.trunk_id,
            },
            None => return Err(Status::invalid_argument("target: to_user or to_phone")),
        };
        self.ask(|reply| Command::Transfer {
            call_id: r.call_id,
            target,
            reply,
        })
        .await?
        .map_err(|e| match e {
            TransferError::UnknownCall(m) => Status::not_found(m),
            TransferError::InvalidArgument(m) => Status::invalid_argument(m),
            TransferError::FailedPrecondition(m) => Status::failed_precondition(m),
            TransferError::ResourceExhausted(m) => Status::resource_exhausted(m),
        })?;
        Ok(Response::new(v1::TransferReply {}))
    }

    async fn apply_config(
        &self,
        request: Request<v1::ConfigSnapshot>,
    ) -> Result<Response<v1::ApplyConfigReply>, Status> {
        let snap = request.into_inner();
        let config = snapshot::to_config(&snap).map_err(|e| {
            tracing::warn!(version = snap.version, error = %e, "configuration snapshot refused");
            Status::invalid_argument(e.to_string())
        })?;
        let _one = self.apply.lock().await;
        let addrs = resolve(&config).await;
        let version = config.version;
        let applied = self
            .ask(|reply| Command::Apply {
                config: Box::new(config),
                addrs,
                reply,
            })
            .await?;
        if applied {
            let dir = self.shared.data_dir.clone();
            let stored = tokio::task::spawn_blocking(move || snapshot::store(&dir, &snap)).await;
            match stored {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the applied snapshot could not be kept on disk")
                }
                Err(e) => tracing::error!(error = %e, "storing the snapshot failed"),
            }
        }
        Ok(Response::new(v1::ApplyConfigReply {
            running_version: if applied {
                version
            } else {
                self.shared.state.config_version()
            },
            applied,
        }))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        let permit = self
            .subscribers
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("too many event subscribers"))?;
        let after = if r.journal_id == self.shared.state.journal_id {
            r.after_seq
        } else {
            0
        };
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            stream_events(shared, after, tx).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn ack(
        &self,
        request: Request<v1::AckRequest>,
    ) -> Result<Response<v1::AckReply>, Status> {
        let r = request.into_inner();
        if r.journal_id != self.shared.state.journal_id {
            return Err(Status::failed_precondition(format!(
                "journal {:?} is not this node's journal",
                r.journal_id
            )));
        }
        let journal = self.shared.journal.clone();
        let state = self.shared.state.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut j = journal.lock().unwrap_or_else(|p| p.into_inner());
            let r = j.ack(r.up_to_seq);
            if !j.is_full() && state.journal_full() {
                state
                    .journal_full
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("event journal has room again");
            }
            r
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(Response::new(v1::AckReply {})),
            Ok(Err(e)) => Err(Status::internal(format!("journal: {e}"))),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }

    async fn stats(
        &self,
        _request: Request<v1::StatsRequest>,
    ) -> Result<Response<v1::StatsReply>, Status> {
        let s = &self.shared.state;
        if let Some(silent) = s.sip_stalled(std::time::Instant::now()) {
            tracing::error!(
                silent_secs = silent.as_secs(),
                "the SIP thread is not running; Stats fails"
            );
            return Err(Status::unavailable(format!(
                "the switch's SIP thread has not run for {} s",
                silent.as_secs()
            )));
        }
        Ok(Response::new(v1::StatsReply {
            node_id: s.node_id.clone(),
            journal_id: s.journal_id.clone(),
            config_version: s.config_version(),
            active_calls: s.active_calls(),
            max_calls: s.max_calls,
            load: s.load(),
            draining: s.stopping(),
            uptime_seconds: s.started.elapsed().as_secs(),
            last_seq: s.last_seq(),
            instance_id: s.instance_id.clone(),
        }))
    }
}

/// One subscriber: retained events from disk after `after`, then live
/// ones; back to disk whenever the live feed skipped (a slow client).
async fn stream_events(
    shared: Arc<Shared>,
    mut after: u64,
    tx: tokio::sync::mpsc::Sender<Result<v1::Event, Status>>,
) {
    // Subscribed before reading, so nothing written meanwhile is missed.
    let mut live = shared.live.subscribe();
    let mut stopping = shared.stopping.clone();
    let stopped = Status::unavailable("the switch is stopping");
    let mut pos = None;
    loop {
        // Read before the journal: the stop is set once the journal has
        // every event, so what it holds then is sent before the end.
        let stop = *stopping.borrow_and_update();
        let view = {
            let j = shared.journal.lock().unwrap_or_else(|p| p.into_inner());
            j.view()
        };
        let last = view.last_seq();
        if last > after {
            let from = after;
            let batch =
                tokio::task::spawn_blocking(move || view.read_from(from, READ_BATCH, pos)).await;
            let batch = match batch {
                Ok((b, p)) => {
                    pos = p;
                    b
                }
                Err(_) => return,
            };
            if batch.is_empty() {
                // Acknowledged meanwhile (or unreadable, which the reader
                // logged): nothing retained up to `last` is left to send.
                after = last;
                continue;
            }
            for ev in batch {
                after = ev.seq;
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            continue;
        }
        if stop {
            let _ = tx.send(Err(stopped)).await;
            return;
        }
        tokio::select! {
            () = tx.closed() => return,
            // Seen at the loop's top, after the journal is read again
            // (an error: the link is gone without a stop, end now).
            changed = stopping.changed() => if changed.is_err() {
                let _ = tx.send(Err(stopped)).await;
                return;
            },
            got = live.recv() => match got {
                Ok(ev) if ev.seq <= after => {}
                Ok(ev) if ev.seq == after + 1 => {
                    after = ev.seq;
                    if tx.send(Ok((*ev).clone())).await.is_err() {
                        return;
                    }
                }
                // A gap or a lag: read the disk again.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
