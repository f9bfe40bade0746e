//! The SIP transport thread. It owns the SIP sockets (the UDP socket, the
//! TCP listener and every TCP connection, on a codeb-io reactor) and parses
//! what arrives by UDP, so the kernel's send and receive work and the
//! parser run beside the SIP core's thread instead of on it: at thousands
//! of calls a second they were over a third of the single SIP thread
//! (benches/README.md, "A transport thread beside the SIP core").
//!
//! Two queues join the threads:
//! * transport → core ([`FromWire`]) is bounded. A datagram that finds it
//!   full is dropped and counted, as a full socket buffer drops it (UDP
//!   peers retransmit); TCP bytes wait for room, because a lost piece of a
//!   stream would break its framing.
//! * core → transport ([`ToWire`]: sends, closes, connects) is bounded by
//!   what the core produces for what it was given.
//!
//! Each side wakes the other only when that side is parked (about to block
//! or blocked), so two busy threads pass batches without a syscall per
//! message. The park protocol: the sleeper sets its flag, then looks at its
//! queue once more before it blocks; the producer pushes, then clears the
//! flag and wakes if it was set. Both sides put a `SeqCst` fence between
//! their store and their load, so one of them always sees the other.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use codeb_io::{CloseReason, ConnId, Event, Options, Reactor, SharedStats, SocketId, Stats, Waker};
use codeb_sip::Limits;
use codeb_sip::validate::{Policy, Verdict, screen_datagram};

use super::core::Outgoing;
use super::flow::Flow;

/// Events from the transport thread to the core, in the order they happened.
#[derive(Debug)]
pub enum FromWire {
    /// A datagram, already parsed and screened.
    Datagram {
        socket: SocketId,
        from: SocketAddr,
        verdict: Box<Verdict>,
    },
    /// A TCP connection was accepted, or one we opened is up.
    Connection {
        conn: ConnId,
        peer: SocketAddr,
    },
    Data {
        conn: ConnId,
        data: Bytes,
    },
    Closed {
        conn: ConnId,
        why: String,
    },
    /// A [`ToWire::Connect`] started as `conn` (it is not up yet).
    Connecting {
        peer: SocketAddr,
        conn: ConnId,
    },
    /// A [`ToWire::Connect`] could not even start.
    ConnectRefused {
        peer: SocketAddr,
        error: String,
    },
}

/// Work for the transport thread.
#[derive(Debug)]
pub enum ToWire {
    Send(Outgoing),
    Close(ConnId),
    Connect(SocketAddr),
}

/// How datagrams are screened (parsed and checked against the core's
/// limits and policy), on whichever thread receives them.
#[derive(Debug, Clone, Copy)]
pub struct Screener {
    pub limits: Limits,
    pub policy: Policy<'static>,
}

impl Screener {
    pub fn screen(&self, data: &[u8]) -> Verdict {
        screen_datagram(Bytes::copy_from_slice(data), &self.limits, &self.policy)
    }
}

/// Counters of the transport thread, for the metrics page.
#[derive(Debug, Clone, Copy, Default)]
pub struct WireStats {
    pub io: Stats,
    /// Datagrams dropped because the core's queue was full.
    pub queue_drops: u64,
}

/// Events the core's queue holds (each a pointer and a few words: the
/// parsed message is boxed). 70,000 messages a second fill it in ~230 ms.
pub const QUEUE: usize = 16_384;

struct Shared {
    core_parked: AtomicBool,
    wire_parked: AtomicBool,
    stop: AtomicBool,
    queue_drops: AtomicU64,
    /// The reactor's counters, published once per loop turn.
    io: SharedStats,
}

/// The core's end of the transport thread.
pub struct Transport {
    tx: Sender<ToWire>,
    rx: Receiver<FromWire>,
    /// An event taken off the queue while parking, handed out next.
    held: Option<FromWire>,
    shared: Arc<Shared>,
    wire_waker: Waker,
    /// Work queued since the transport thread was last woken.
    queued: bool,
    backend: &'static str,
    udp: SocketId,
    thread: Option<JoinHandle<()>>,
}

impl Transport {
    /// Starts the thread with the SIP sockets. `core_waker` wakes the
    /// core's thread when events arrive while it is parked.
    pub fn start(
        opts: &Options,
        udp: UdpSocket,
        tcp: TcpListener,
        screener: Screener,
        core_waker: Waker,
    ) -> io::Result<Transport> {
        Self::start_with(opts, udp, tcp, screener, core_waker, QUEUE)
    }

    fn start_with(
        opts: &Options,
        udp: UdpSocket,
        tcp: TcpListener,
        screener: Screener,
        core_waker: Waker,
        queue: usize,
    ) -> io::Result<Transport> {
        let shared = Arc::new(Shared {
            core_parked: AtomicBool::new(false),
            wire_parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            queue_drops: AtomicU64::new(0),
            io: SharedStats::default(),
        });
        let (tx, work) = std::sync::mpsc::channel();
        let (events, rx) = std::sync::mpsc::sync_channel(queue);
        let (init_tx, init_rx) = std::sync::mpsc::sync_channel(1);
        let opts = opts.clone();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sip-transport".into())
            .spawn(move || {
                // The ring is created on the thread that submits to it
                // (SINGLE_ISSUER).
                let set_up = Reactor::new(&opts).and_then(|mut reactor| {
                    let udp = reactor.add_udp(udp)?;
                    reactor.add_tcp_listener(tcp)?;
                    Ok((reactor, udp))
                });
                match set_up {
                    Ok((reactor, udp)) => {
                        let _ = init_tx.send(Ok((reactor.waker(), reactor.backend(), udp)));
                        Wire {
                            reactor,
                            work,
                            events,
                            shared: thread_shared,
                            core_waker,
                            screener,
                            pushed: false,
                        }
                        .run();
                    }
                    Err(e) => {
                        let _ = init_tx.send(Err(e));
                    }
                }
            })?;
        let (wire_waker, backend, udp) = init_rx
            .recv()
            .map_err(|_| io::Error::other("the SIP transport thread died at start"))??;
        Ok(Transport {
            tx,
            rx,
            held: None,
            shared,
            wire_waker,
            queued: false,
            backend,
            udp,
            thread: Some(thread),
        })
    }

    /// The reactor's backend (`io_uring` or `epoll`).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The UDP socket's id on the transport's reactor.
    pub fn udp_socket(&self) -> SocketId {
        self.udp
    }

    /// The next event, if one is waiting.
    pub fn next_event(&mut self) -> Option<FromWire> {
        if let Some(ev) = self.held.take() {
            return Some(ev);
        }
        self.rx.try_recv().ok()
    }

    /// Queues work for the transport thread (it is woken by [`Self::flush`]).
    pub fn push(&mut self, work: ToWire) {
        // The thread ends only after the core's end is dropped.
        let _ = self.tx.send(work);
        self.queued = true;
    }

    /// Wakes the transport thread if work was queued and it is parked.
    pub fn flush(&mut self) {
        if std::mem::take(&mut self.queued) {
            fence(Ordering::SeqCst);
            if self.shared.wire_parked.swap(false, Ordering::SeqCst) {
                self.wire_waker.wake();
            }
        }
    }

    /// Marks the core parked. False (and not parked) when an event came in
    /// meanwhile: then the core must not block.
    pub fn park(&mut self) -> bool {
        self.shared.core_parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.held.is_none() {
            match self.rx.try_recv() {
                Ok(ev) => self.held = Some(ev),
                Err(TryRecvError::Empty) => return true,
                // A dead transport thread never wakes us: do not block on it.
                Err(TryRecvError::Disconnected) => {}
            }
        }
        self.shared.core_parked.store(false, Ordering::SeqCst);
        false
    }

    /// The core is running again.
    pub fn unpark(&self) {
        self.shared.core_parked.store(false, Ordering::SeqCst);
    }

    /// Whether the transport thread is still running.
    pub fn alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn stats(&self) -> WireStats {
        let s = &self.shared;
        let r = Ordering::Relaxed;
        WireStats {
            io: s.io.load(),
            queue_drops: s.queue_drops.load(r),
        }
    }

    /// Sends what is queued, then stops the thread.
    pub fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // A thread waiting for room in a full queue gives up once the
        // queue's reader is gone.
        let (_, closed) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, closed));
        self.wire_waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The transport thread's state.
struct Wire {
    reactor: Reactor,
    work: Receiver<ToWire>,
    events: SyncSender<FromWire>,
    shared: Arc<Shared>,
    core_waker: Waker,
    screener: Screener,
    /// Events pushed since the core was last woken.
    pushed: bool,
}

/// The longest the thread blocks without looking at its stop flag.
const IDLE: Duration = Duration::from_secs(1);

impl Wire {
    fn run(mut self) {
        loop {
            while let Ok(w) = self.work.try_recv() {
                self.apply(w);
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                // What the core queued before stopping still goes out.
                let _ = self.reactor.poll(Some(Duration::ZERO), &mut |_| {});
                return;
            }
            self.shared.wire_parked.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let wait = match self.work.try_recv() {
                Ok(w) => {
                    self.shared.wire_parked.store(false, Ordering::SeqCst);
                    self.apply(w);
                    // Submit and collect without blocking: more work may
                    // follow at once.
                    Duration::ZERO
                }
                Err(_) => IDLE,
            };
            let polled = {
                let Wire {
                    reactor,
                    events,
                    shared,
                    core_waker,
                    screener,
                    pushed,
                    ..
                } = &mut self;
                reactor.poll(Some(wait), &mut |ev| {
                    if let Some(ev) = convert(ev, screener) {
                        deliver(events, shared, core_waker, pushed, ev);
                    }
                })
            };
            self.shared.wire_parked.store(false, Ordering::SeqCst);
            if let Err(e) = polled {
                tracing::error!(error = %e, "SIP transport poll failed; the transport thread stops");
                return;
            }
            self.shared.io.publish(&self.reactor.stats());
            if std::mem::take(&mut self.pushed) {
                wake_core(&self.shared, &self.core_waker);
            }
        }
    }

    fn apply(&mut self, w: ToWire) {
        match w {
            ToWire::Send(out) => {
                let sent = match out.flow {
                    Flow::Udp { socket, peer } => self.reactor.send_to(socket, peer, &out.payload),
                    Flow::Tcp { conn, .. } => self.reactor.send(conn, &out.payload),
                    // The core resolves these to a connection before it
                    // hands a message out.
                    Flow::TcpTo { .. } => Err(io::Error::other("no TCP connection named")),
                };
                if let Err(e) = sent {
                    tracing::debug!(error = %e, peer = %out.flow.peer(), "send failed");
                }
            }
            ToWire::Close(conn) => self.reactor.close(conn),
            ToWire::Connect(peer) => {
                let ev = match self.reactor.connect(peer) {
                    Ok(conn) => FromWire::Connecting { peer, conn },
                    Err(e) => FromWire::ConnectRefused {
                        peer,
                        error: e.to_string(),
                    },
                };
                deliver(
                    &self.events,
                    &self.shared,
                    &self.core_waker,
                    &mut self.pushed,
                    ev,
                );
            }
        }
    }
}

fn convert(ev: Event<'_>, screener: &Screener) -> Option<FromWire> {
    Some(match ev {
        Event::Datagram { socket, from, data } => FromWire::Datagram {
            socket,
            from,
            verdict: Box::new(screener.screen(data)),
        },
        Event::Accepted { conn, peer, .. } | Event::Connected { conn, peer } => {
            FromWire::Connection { conn, peer }
        }
        Event::Data { conn, data } => FromWire::Data {
            conn,
            data: Bytes::copy_from_slice(data),
        },
        Event::Closed { conn, reason } => FromWire::Closed {
            conn,
            why: match reason {
                CloseReason::PeerClosed => "closed by the peer".to_owned(),
                CloseReason::Local => "closed by the switch".to_owned(),
                CloseReason::Error(errno) => io::Error::from_raw_os_error(errno).to_string(),
            },
        },
        Event::Woken => return None,
    })
}

/// Hands an event to the core. A datagram that finds the queue full is
/// dropped and counted; anything else waits for room (the core is woken
/// first, so it drains the queue).
fn deliver(
    events: &SyncSender<FromWire>,
    shared: &Shared,
    core_waker: &Waker,
    pushed: &mut bool,
    ev: FromWire,
) {
    match events.try_send(ev) {
        Ok(()) => *pushed = true,
        Err(TrySendError::Full(ev)) => {
            wake_core(shared, core_waker);
            if matches!(ev, FromWire::Datagram { .. }) {
                shared.queue_drops.fetch_add(1, Ordering::Relaxed);
            } else if events.send(ev).is_ok() {
                *pushed = true;
            }
        }
        // The core is gone: the switch is stopping.
        Err(TrySendError::Disconnected(_)) => {}
    }
}

fn wake_core(shared: &Shared, core_waker: &Waker) {
    fence(Ordering::SeqCst);
    if shared.core_parked.swap(false, Ordering::SeqCst) {
        core_waker.wake();
    }
}

#[cfg(test)]
mod tests;
