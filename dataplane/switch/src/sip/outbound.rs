//! TCP connections the switch opens itself (RFC 3261 §18.1.1): towards
//! trunks configured with `transport = "tcp"` and users' contacts that say
//! `transport=tcp` (when no connection their REGISTER came on is open),
//! addressed as [`Flow::TcpTo`]. One connection per peer address, reused by every
//! transaction and dialog towards it (and carrying the peer's responses and
//! in-dialog requests back, which arrive as ordinary stream data).
//!
//! Sans-IO like the rest of the core: a message for a peer without an open
//! connection is queued (bounded, [`MAX_PENDING`]) and the peer's address
//! is offered on [`Core::poll_connect`]; the IO loop opens the connection
//! and reports the id ([`Core::handle_connecting`]) or the refusal
//! ([`Core::handle_connect_refused`]); `Event::Connected` arrives as
//! [`Core::handle_connection`], which flushes the queue. A connection that
//! fails, closes or is not up within [`CONNECT_TIMEOUT`] (a black-holed
//! address would otherwise hold its queue for the kernel's two minutes of
//! SYN retries) fails the queued messages' transactions as transport
//! errors (§17.1.4), so callers learn at once instead of after Timer B.
//!
//! Idle timeouts close these connections like inbound ones; a later message
//! to the peer (an in-dialog BYE, a keep-alive) opens a new one, which is
//! what §18.1.1 asks of a client, and the peer reaches us over our own
//! listener (our Via and Contact say `transport=tcp`) if it has something
//! to send meanwhile. So no dialog is tied to one connection. The same
//! holds for what goes back to a trunk's own requests on our connection
//! (a response, or a request in a dialog the trunk started there): once
//! that connection is gone, a new one to the trunk carries it (§18.2.2).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codeb_io::ConnId;
use codeb_sip::transaction::TransactionId;

use super::core::{Core, Outgoing};
use super::flow::Flow;
use crate::config::TrunkTransport;

/// Messages queued per connection while it opens; more are refused.
pub const MAX_PENDING: usize = 64;
/// Outbound connections (open or opening) at once; more are refused.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a connection may take to come up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Offered on `poll_connect`, not yet taken by the IO loop.
    Wanted,
    /// The IO loop started it; given up at the deadline.
    Connecting(ConnId, Instant),
    Open(ConnId),
}

#[derive(Debug)]
struct Pending {
    payload: Bytes,
    tx: Option<TransactionId>,
}

#[derive(Debug)]
struct Conn {
    state: State,
    pending: VecDeque<Pending>,
}

/// The table of our outbound connections.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    by_peer: HashMap<SocketAddr, Conn>,
    by_conn: HashMap<ConnId, SocketAddr>,
    connects: VecDeque<SocketAddr>,
    /// Transactions whose message could not be delivered, to report to the
    /// transaction layer on the next drain.
    failed: Vec<TransactionId>,
}

/// Counters of outbound connections (exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundStats {
    /// Connections asked of the IO loop.
    pub connects: u64,
    /// Connections that failed or closed before they were up.
    pub connect_failures: u64,
    /// Messages refused: the connection's queue or the table was full.
    pub refused: u64,
}

impl Outbound {
    /// Connections open or opening.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// `conn` is a connection we opened.
    pub(crate) fn owns(&self, conn: ConnId) -> bool {
        self.by_conn.contains_key(&conn)
    }

    pub(crate) fn take_failed(&mut self) -> Vec<TransactionId> {
        std::mem::take(&mut self.failed)
    }

    /// Forgets `conn` (closed by either side); the queued messages, if it
    /// never came up. None if it is not one of ours.
    fn remove(&mut self, conn: ConnId) -> Option<(SocketAddr, State, VecDeque<Pending>)> {
        let peer = self.by_conn.remove(&conn)?;
        let c = self.by_peer.remove(&peer)?;
        Some((peer, c.state, c.pending))
    }
}

impl Core {
    /// Sends `payload` to `peer` over TCP: over our open connection to it,
    /// or queued until one is up.
    pub(crate) fn send_tcp_to(
        &mut self,
        peer: SocketAddr,
        payload: Bytes,
        tx: Option<TransactionId>,
    ) {
        let o = &mut self.outbound;
        let full = o.by_peer.len() >= MAX_CONNECTIONS;
        match o.by_peer.get_mut(&peer) {
            Some(Conn {
                state: State::Open(conn),
                ..
            }) => {
                let flow = Flow::Tcp { conn: *conn, peer };
                self.out.push_back(Outgoing { flow, payload });
            }
            Some(c) if c.pending.len() < MAX_PENDING => {
                c.pending.push_back(Pending { payload, tx })
            }
            Some(_) => {
                self.refuse_tcp(peer, tx, "its queue of messages waiting to connect is full")
            }
            None if full => self.refuse_tcp(peer, tx, "the outbound connection table is full"),
            None => {
                tracing::debug!(%peer, "opening a TCP connection");
                o.by_peer.insert(
                    peer,
                    Conn {
                        state: State::Wanted,
                        pending: VecDeque::from([Pending { payload, tx }]),
                    },
                );
                o.connects.push_back(peer);
                self.stats.outbound.connects += 1;
            }
        }
    }

    fn refuse_tcp(&mut self, peer: SocketAddr, tx: Option<TransactionId>, why: &str) {
        tracing::warn!(%peer, "TCP message refused: {why}");
        self.stats.outbound.refused += 1;
        self.outbound.failed.extend(tx);
    }

    /// The next connection the IO loop should open; answer with
    /// [`Self::handle_connecting`] or [`Self::handle_connect_refused`].
    pub fn poll_connect(&mut self) -> Option<SocketAddr> {
        let o = &mut self.outbound;
        while let Some(peer) = o.connects.pop_front() {
            if o.by_peer
                .get(&peer)
                .is_some_and(|c| c.state == State::Wanted)
            {
                return Some(peer);
            }
        }
        None
    }

    /// The IO loop started the connection to `peer` as `conn`.
    pub fn handle_connecting(&mut self, now: Instant, peer: SocketAddr, conn: ConnId) {
        let o = &mut self.outbound;
        if let Some(c) = o.by_peer.get_mut(&peer) {
            c.state = State::Connecting(conn, now + CONNECT_TIMEOUT);
            o.by_conn.insert(conn, peer);
        }
    }

    /// Connections still not up at their deadline, to close (and fail).
    pub(crate) fn overdue_connects(&self, now: Instant) -> Vec<ConnId> {
        self.outbound
            .by_peer
            .values()
            .filter_map(|c| match c.state {
                State::Connecting(conn, deadline) if deadline <= now => Some(conn),
                _ => None,
            })
            .collect()
    }

    /// The IO loop could not even start the connection to `peer`.
    pub fn handle_connect_refused(&mut self, now: Instant, peer: SocketAddr, error: &str) {
        if let Some(c) = self.outbound.by_peer.remove(&peer) {
            self.connect_failed(peer, c.pending, error);
        }
        self.drain(now);
    }

    fn connect_failed(&mut self, peer: SocketAddr, pending: VecDeque<Pending>, error: &str) {
        tracing::warn!(%peer, error, dropped = pending.len(), "TCP connection failed");
        self.stats.outbound.connect_failures += 1;
        self.trunk_unreachable(peer);
        self.outbound
            .failed
            .extend(pending.into_iter().filter_map(|p| p.tx));
    }

    /// `conn` is up: if it is one of ours, what waited for it goes out.
    /// Messages of transactions that ended meanwhile (Timer B or F) stay
    /// unsent.
    pub(crate) fn outbound_connected(&mut self, conn: ConnId) {
        let Some(peer) = self.outbound.by_conn.get(&conn).copied() else {
            return;
        };
        let Some(c) = self.outbound.by_peer.get_mut(&peer) else {
            return;
        };
        c.state = State::Open(conn);
        self.trunk_reachable(peer);
        let Some(c) = self.outbound.by_peer.get_mut(&peer) else {
            return;
        };
        let flow = Flow::Tcp { conn, peer };
        for p in std::mem::take(&mut c.pending) {
            if p.tx.is_none_or(|tx| self.layer.state(tx).is_some()) {
                self.out.push_back(Outgoing {
                    flow,
                    payload: p.payload,
                });
            }
        }
    }

    /// `conn` closed (or is being closed by us): a later message to its
    /// peer opens a new one. If it never came up, its queue fails.
    pub(crate) fn outbound_closed(&mut self, conn: ConnId, why: &str) {
        if let Some((peer, state, pending)) = self.outbound.remove(conn) {
            match state {
                State::Open(_) => tracing::debug!(%peer, why, "outbound TCP connection closed"),
                _ => self.connect_failed(peer, pending, why),
            }
        }
    }

    /// `peer` is the address of a trunk we reach over TCP.
    pub(crate) fn is_tcp_trunk(&self, peer: SocketAddr) -> bool {
        self.config.trunks.iter().any(|t| {
            t.transport == TrunkTransport::Tcp && self.trunk_addrs.get(&t.id) == Some(&peer)
        })
    }

    /// Outbound connections open or opening.
    pub fn outbound_connections(&self) -> usize {
        self.outbound.len()
    }
}
