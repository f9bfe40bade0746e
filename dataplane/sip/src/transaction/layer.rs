//! The transaction table: owns every transaction, aggregates their timers
//! in one [`TimerQueue`], is bounded (`max_transactions`, counting slots
//! reserved for deferred CANCELs), and takes the TU's calls. How received
//! messages are routed is in `inbound.rs`.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::machine::{Cancelling, Entry, Machine, each};
use super::{
    Address, ClientInvite, ClientNonInvite, Kind, State, Timer, TimerQueue, Timers,
    TransactionError, TransactionEvent, TransactionId, TransactionKey, Transmit,
};
use crate::message::{Request, Response};
use crate::method::Method;

/// How the table behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub timers: Timers,
    /// Live transactions at most (client and server together). Requests
    /// that open something new get only seven eighths of them (see
    /// `full_for`).
    pub max_transactions: usize,
    /// Seconds announced in the Retry-After of a 503 sent when full.
    pub retry_after: u32,
    /// Send 100 Trying as soon as an INVITE arrives instead of after
    /// 200 ms of TU silence (§17.2.1).
    pub trying_immediately: bool,
    /// Secret for the To-tags of stateless 503s
    /// ([`stateless_tag`](crate::validate::stateless_tag)).
    pub tag_key: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            timers: Timers::default(),
            max_transactions: 65_536,
            retry_after: 5,
            trying_immediately: false,
            tag_key: 0,
        }
    }
}

/// What the table tells the TU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<A> {
    /// A new request: answer it with [`TransactionLayer::respond`].
    Request {
        id: TransactionId,
        request: Request,
        source: A,
    },
    /// A new CANCEL and the INVITE server transaction it targets, if any:
    /// answer both with [`TransactionLayer::answer_cancel`].
    Cancel {
        id: TransactionId,
        request: Request,
        source: A,
        invite: Option<TransactionId>,
    },
    /// An ACK for a 2xx (no transaction, or one in the Accepted state).
    Ack {
        request: Request,
        transaction: Option<TransactionId>,
    },
    /// A response to a client transaction.
    Response {
        id: TransactionId,
        response: Response,
    },
    /// A deferred CANCEL (see [`super::CancelStatus::Deferred`]) went out.
    CancelSent {
        invite: TransactionId,
        cancel: TransactionId,
    },
    /// A timer ran out (see [`TransactionEvent::Timeout`]).
    Timeout { id: TransactionId, timer: Timer },
    /// The transport failed to deliver for this transaction.
    TransportError { id: TransactionId },
    /// The transaction is gone; the last event about it.
    Terminated { id: TransactionId },
}

/// Counters of what the table absorbed or refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub created: u64,
    /// Retransmitted requests answered or absorbed by their transaction.
    pub retransmissions_absorbed: u64,
    /// Responses that matched no transaction, or had several Vias.
    pub stray_responses: u64,
    /// ACKs passed to the TU without a transaction.
    pub stray_acks: u64,
    /// Messages whose matching headers would not parse.
    pub malformed: u64,
    /// New requests refused with 503 because the table was full.
    pub rejected_full: u64,
}

/// The transaction table. See the module docs for the drain contract.
#[derive(Debug)]
pub struct TransactionLayer<A> {
    pub(super) config: Config,
    next_id: u64,
    /// Boxed: an entry is a few hundred bytes, and a table that grows
    /// to hundreds of thousands moves only pointers when it rehashes.
    pub(super) entries: HashMap<TransactionId, Box<Entry<A>>>,
    pub(super) keys: HashMap<TransactionKey, TransactionId>,
    timers: TimerQueue<TransactionId>,
    pub(super) transmits: VecDeque<Transmit<A>>,
    pub(super) events: VecDeque<Event<A>>,
    /// Slots promised to deferred CANCELs.
    pub(super) reserved: usize,
    pub(super) stats: Stats,
}

impl<A: Address> TransactionLayer<A> {
    pub fn new(config: Config) -> Self {
        Self {
            config: Config {
                timers: config.timers.sanitized(),
                ..config
            },
            next_id: 0,
            entries: HashMap::new(),
            keys: HashMap::new(),
            timers: TimerQueue::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            reserved: 0,
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Live transactions plus slots reserved for deferred CANCELs; never
    /// above `max_transactions`.
    pub fn occupancy(&self) -> usize {
        self.entries.len() + self.reserved
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn kind(&self, id: TransactionId) -> Option<Kind> {
        self.entries.get(&id).map(|e| e.machine.kind())
    }

    pub fn state(&self, id: TransactionId) -> Option<State> {
        self.entries.get(&id).map(|e| e.machine.state())
    }

    /// The request that created a transaction, until its final response
    /// (the states after it keep only what they resend, so that a table
    /// of lingering transactions costs little).
    pub fn request(&self, id: TransactionId) -> Option<&Request> {
        self.entries.get(&id).and_then(|e| e.machine.request())
    }

    /// The server transaction `request` belongs to, if any (§17.2.3).
    pub fn find_server(&self, request: &Request) -> Option<TransactionId> {
        let key = TransactionKey::server(request).ok()?;
        self.keys.get(&key).copied()
    }

    /// Whether the table has no room for `request`. Requests that open
    /// something new (no To tag: a call, a registration, an OPTIONS
    /// ping) stop at seven eighths of `max_transactions`; the last eighth
    /// is kept for requests inside a dialog and CANCELs, so that a table
    /// filled by new calls still lets the calls it has end (and free
    /// their media) instead of refusing their BYEs.
    pub(super) fn full_for(&self, request: &Request) -> bool {
        let max = self.config.max_transactions;
        let opens = request.method != Method::Cancel
            && request
                .headers
                .to()
                .ok()
                .is_none_or(|to| to.tag().is_none());
        let limit = if opens { max - max / 8 } else { max };
        self.occupancy() >= limit
    }

    pub(super) fn insert(&mut self, machine: Machine<A>, key: TransactionKey) -> TransactionId {
        self.next_id += 1;
        let id = TransactionId(self.next_id);
        let key = key.detached();
        self.keys.insert(key.clone(), id);
        self.entries.insert(
            id,
            Box::new(Entry {
                machine,
                key,
                ack_alias: None,
                scheduled: None,
                cancelling: Cancelling::No,
            }),
        );
        self.stats.created += 1;
        id
    }

    /// Starts a client transaction for `request` (any method but ACK; its
    /// top Via must carry a fresh RFC 3261 branch) towards `destination`.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Request,
        destination: A,
    ) -> Result<TransactionId, TransactionError> {
        if request.method == Method::Ack {
            return Err(TransactionError::AckIsNotATransaction);
        }
        let key =
            TransactionKey::client_request(&request).map_err(|_| TransactionError::NoBranch)?;
        if self.keys.contains_key(&key) {
            return Err(TransactionError::DuplicateBranch);
        }
        if self.full_for(&request) {
            return Err(TransactionError::TableFull);
        }
        self.start_client(now, request, destination, key)
    }

    /// Creates a client transaction without the capacity check (the
    /// caller checked it or holds a reservation).
    pub(super) fn start_client(
        &mut self,
        now: Instant,
        request: Request,
        destination: A,
        key: TransactionKey,
    ) -> Result<TransactionId, TransactionError> {
        let timers = self.config.timers;
        let machine = if request.method == Method::Invite {
            Machine::ClientInvite(ClientInvite::new(now, request, destination, timers)?)
        } else {
            Machine::ClientNonInvite(ClientNonInvite::new(now, request, destination, timers)?)
        };
        let id = self.insert(machine, key);
        self.settle(now, id);
        Ok(id)
    }

    /// The TU's response to a server transaction.
    pub fn respond(
        &mut self,
        now: Instant,
        id: TransactionId,
        response: Response,
    ) -> Result<(), TransactionError> {
        let entry = self.entries.get_mut(&id).ok_or(TransactionError::Unknown)?;
        match &mut entry.machine {
            Machine::ServerInvite(m) => m.respond(now, response)?,
            Machine::ServerNonInvite(m) => m.respond(now, response)?,
            _ => return Err(TransactionError::WrongKind),
        }
        self.settle(now, id);
        Ok(())
    }

    /// Sends 100 Trying for an INVITE now (instead of after 200 ms).
    pub fn send_trying(&mut self, now: Instant, id: TransactionId) -> Result<(), TransactionError> {
        match self.entries.get_mut(&id).map(|e| &mut e.machine) {
            Some(Machine::ServerInvite(m)) => m.send_trying(now),
            Some(_) => return Err(TransactionError::WrongKind),
            None => return Err(TransactionError::Unknown),
        }
        self.settle(now, id);
        Ok(())
    }

    /// The transport failed to deliver a [`Transmit`] of transaction `id`.
    pub fn handle_transport_error(&mut self, now: Instant, id: TransactionId) {
        if let Some(e) = self.entries.get_mut(&id) {
            each!(&mut e.machine, m => m.handle_transport_error(now));
            self.settle(now, id);
        }
    }

    /// The earliest deadline of any transaction.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let entries = &self.entries;
        self.timers
            .peek(|at, id| entries.get(id).is_some_and(|e| e.scheduled == Some(at)))
    }

    /// Fires every expired timer of every transaction.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Each pop consumes an entry and machines rearm strictly later, so
        // this ends; the budget is a belt over those braces.
        let mut budget = self.entries.len().saturating_mul(4).saturating_add(64);
        while budget > 0 {
            budget -= 1;
            let entries = &self.entries;
            let Some((_, id)) = self.timers.pop_due(now, |at, id| {
                entries.get(id).is_some_and(|e| e.scheduled == Some(at))
            }) else {
                break;
            };
            if let Some(e) = self.entries.get_mut(&id) {
                e.scheduled = None;
                each!(&mut e.machine, m => m.handle_timeout(now));
            }
            self.settle(now, id);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event<A>> {
        self.events.pop_front()
    }

    /// Moves a machine's outputs to the table's queues, applies what the
    /// table adds (RFC 2543 ACK aliases, deferred CANCELs), reschedules it
    /// and forgets it once terminated.
    pub(super) fn settle(&mut self, now: Instant, id: TransactionId) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        while let Some(mut t) = each!(&mut entry.machine, m => m.poll_transmit()) {
            t.transaction = Some(id);
            self.transmits.push_back(t);
        }
        let mut terminated = false;
        while let Some(ev) = each!(&mut entry.machine, m => m.poll_event()) {
            self.events.push_back(match ev {
                TransactionEvent::Response(response) => Event::Response { id, response },
                TransactionEvent::Ack(request) => Event::Ack {
                    request,
                    transaction: Some(id),
                },
                TransactionEvent::Timeout(timer) => Event::Timeout { id, timer },
                TransactionEvent::TransportError => Event::TransportError { id },
                TransactionEvent::Terminated => {
                    terminated = true;
                    Event::Terminated { id }
                }
            });
        }
        if let Machine::ServerInvite(m) = &entry.machine
            && entry.ack_alias.is_none()
            && m.final_status().is_some()
            && let Some(alias) = entry
                .key
                .legacy_ack(m.local_tag().cloned())
                .map(|k| k.detached())
        {
            self.keys.insert(alias.clone(), id);
            entry.ack_alias = Some(Box::new(alias));
        }
        // What lingers after a final response rarely sends again: give
        // back the queues' memory instead of keeping it for 32 s.
        if matches!(
            entry.machine.state(),
            State::Completed | State::Accepted | State::Confirmed
        ) {
            each!(&mut entry.machine, m => m.release_outbox());
        }
        let next = each!(&entry.machine, m => m.poll_timeout());
        if next != entry.scheduled {
            entry.scheduled = next;
            if let Some(at) = next {
                self.timers.push(at, id);
            }
        }
        let deferred = entry.cancelling == Cancelling::Deferred;
        let state = entry.machine.state();
        if terminated {
            self.remove(id);
        } else if deferred && state != State::Calling {
            self.release_deferred_cancel(now, id, state);
        }
        if self.timers.len() > self.entries.len().saturating_mul(2).saturating_add(1024) {
            let entries = &self.entries;
            self.timers
                .compact(|at, id| entries.get(id).is_some_and(|e| e.scheduled == Some(at)));
        }
    }

    fn remove(&mut self, id: TransactionId) {
        let Some(entry) = self.entries.remove(&id) else {
            return;
        };
        if entry.cancelling == Cancelling::Deferred {
            self.reserved = self.reserved.saturating_sub(1);
        }
        let Entry { key, ack_alias, .. } = *entry;
        for key in std::iter::once(key).chain(ack_alias.map(|k| *k)) {
            if self.keys.get(&key) == Some(&id) {
                self.keys.remove(&key);
            }
        }
    }
}

#[cfg(test)]
impl<A: Address> TransactionLayer<A> {
    /// Entries in the timer heap, stale ones included (for bound tests).
    pub(crate) fn timer_entries(&self) -> usize {
        self.timers.len()
    }
}
