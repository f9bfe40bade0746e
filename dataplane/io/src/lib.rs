//! The data plane's IO, and the only crate that makes syscalls or reads the
//! clock on the hot path.
//!
//! A [`Reactor`] owns sockets and reports what happened to them as
//! [`Event`]s: datagrams, accepted TCP connections, stream bytes, closes,
//! and wake-ups from other threads. Two backends with one interface:
//!
//! * io_uring (preferred): multishot `recvmsg`/`accept`/`recv` fed from a
//!   provided-buffer ring, sends submitted in batches, one `io_uring_enter`
//!   per loop turn that both submits and waits (with the deadline as its
//!   timeout). Set up `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has
//!   them.
//! * epoll, chosen when io_uring is unavailable (old kernel, seccomp,
//!   `io_uring_disabled`), or forced with `Options::force_epoll`:
//!   datagrams read with `recvmmsg` and sent with `sendmmsg` in batches,
//!   sends queued until the next `poll` as with io_uring.
//!
//! The choice is logged once at start.

#![allow(unsafe_code)] // FFI to io_uring, epoll and socket calls, each block justified.

mod bufring;
mod epoll;
pub mod filter;
mod mmsg;
mod steer;
mod sys;
mod uring;

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A UDP socket or TCP listener registered with a reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u32);

/// A TCP connection. The generation makes a stale id (of a closed
/// connection whose slot was reused) harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub index: u32,
    pub generation: u32,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed it.
    PeerClosed,
    /// We closed it.
    Local,
    /// A socket error.
    Error(i32),
}

/// Something that happened; borrowed data is valid only during the callback.
#[derive(Debug)]
pub enum Event<'a> {
    Datagram {
        socket: SocketId,
        from: SocketAddr,
        data: &'a [u8],
    },
    Accepted {
        listener: SocketId,
        conn: ConnId,
        peer: SocketAddr,
    },
    /// An outbound connection from [`Reactor::connect`] is established.
    Connected {
        conn: ConnId,
        peer: SocketAddr,
    },
    Data {
        conn: ConnId,
        data: &'a [u8],
    },
    Closed {
        conn: ConnId,
        reason: CloseReason,
    },
    /// [`Waker::wake`] was called (possibly several times).
    Woken,
}

/// Wakes a reactor blocked in [`Reactor::poll`] from another thread.
#[derive(Debug, Clone)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Waker {
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to an eventfd we own.
        // A full counter (EAGAIN) already means "wake up", so errors are moot.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8);
        }
    }
}

/// Reactor settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Use epoll even where io_uring works (tests exercise both paths).
    pub force_epoll: bool,
    /// Submission queue entries of the io_uring.
    pub ring_entries: u32,
    /// Receive buffers (a power of two) and their size (one datagram or one
    /// stream read each).
    pub buffers: u16,
    pub buffer_len: usize,
    /// Most TCP connections at once; more are closed at accept.
    pub max_connections: usize,
    /// UDP sockets entered in the io_uring's registered-file table (at
    /// most the process's open-file limit), so each send on them skips
    /// the kernel's fd lookup and file reference count; sockets past it
    /// work as before. io_uring only.
    pub fixed_files: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            force_epoll: false,
            ring_entries: 1024,
            buffers: 256,
            buffer_len: 65_536 + 512,
            max_connections: 4096,
            fixed_files: 256,
        }
    }
}

/// Counters a reactor keeps (exported as metrics by its owner).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub datagrams_truncated: u64,
    pub send_errors: u64,
    pub accepted: u64,
    pub refused_connections: u64,
    pub open_connections: u64,
    /// Of `datagrams_in`, those that came through port steering.
    pub steered_in: u64,
    /// Steered datagrams for a port no socket holds (any more).
    pub steered_strays: u64,
}

/// [`Stats`] as one thread publishes them for others to read (metrics):
/// relaxed stores and loads, each counter on its own, no lock.
#[derive(Debug, Default)]
pub struct SharedStats {
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    datagrams_truncated: AtomicU64,
    send_errors: AtomicU64,
    accepted: AtomicU64,
    refused_connections: AtomicU64,
    open_connections: AtomicU64,
    steered_in: AtomicU64,
    steered_strays: AtomicU64,
}

impl SharedStats {
    pub fn publish(&self, s: &Stats) {
        let r = Ordering::Relaxed;
        self.datagrams_in.store(s.datagrams_in, r);
        self.datagrams_out.store(s.datagrams_out, r);
        self.datagrams_truncated.store(s.datagrams_truncated, r);
        self.send_errors.store(s.send_errors, r);
        self.accepted.store(s.accepted, r);
        self.refused_connections.store(s.refused_connections, r);
        self.open_connections.store(s.open_connections, r);
        self.steered_in.store(s.steered_in, r);
        self.steered_strays.store(s.steered_strays, r);
    }

    /// The last published counters.
    pub fn load(&self) -> Stats {
        let r = Ordering::Relaxed;
        Stats {
            datagrams_in: self.datagrams_in.load(r),
            datagrams_out: self.datagrams_out.load(r),
            datagrams_truncated: self.datagrams_truncated.load(r),
            send_errors: self.send_errors.load(r),
            accepted: self.accepted.load(r),
            refused_connections: self.refused_connections.load(r),
            open_connections: self.open_connections.load(r),
            steered_in: self.steered_in.load(r),
            steered_strays: self.steered_strays.load(r),
        }
    }
}

/// An event loop over either backend.
pub enum Reactor {
    Uring(Box<uring::UringReactor>),
    Epoll(Box<epoll::EpollReactor>),
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Reactor").field(&self.backend()).finish()
    }
}

impl Reactor {
    /// io_uring when it works here, epoll otherwise; says which in the log.
    pub fn new(opts: &Options) -> io::Result<Reactor> {
        if !opts.force_epoll {
            match uring::UringReactor::new(opts) {
                Ok(r) => {
                    tracing::info!(backend = "io_uring", "IO reactor ready");
                    return Ok(Reactor::Uring(Box::new(r)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring is unavailable on this kernel; using epoll");
                }
            }
        } else {
            tracing::info!(backend = "epoll", "IO reactor ready (epoll forced)");
        }
        Ok(Reactor::Epoll(Box::new(epoll::EpollReactor::new(opts)?)))
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Reactor::Uring(_) => "io_uring",
            Reactor::Epoll(_) => "epoll",
        }
    }

    /// Receives the datagrams of every UDP socket added afterwards whose
    /// port is in `ports` on `ip` through one socket, reported as that
    /// socket's (see `steer.rs`); sockets elsewhere are not affected.
    /// Fails, changing nothing, where it cannot be done: the epoll
    /// backend, IPv6, a kernel without socket-lookup programs (5.9+), or
    /// a process without `CAP_BPF` and `CAP_NET_ADMIN`.
    pub fn steer_ports(&mut self, ip: IpAddr, ports: RangeInclusive<u16>) -> io::Result<()> {
        match self {
            Reactor::Uring(r) => r.steer_ports(ip, ports),
            Reactor::Epoll(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "port steering needs the io_uring backend",
            )),
        }
    }

    pub fn add_udp(&mut self, socket: UdpSocket) -> io::Result<SocketId> {
        match self {
            Reactor::Uring(r) => r.add_udp(socket),
            Reactor::Epoll(r) => r.add_udp(socket),
        }
    }

    /// Stops receiving on a UDP socket and closes it (a call's media port
    /// when the call ends). Its id is never reported again, though a later
    /// [`Self::add_udp`] may be given the same id.
    pub fn remove_udp(&mut self, socket: SocketId) -> io::Result<()> {
        match self {
            Reactor::Uring(r) => r.remove_udp(socket),
            Reactor::Epoll(r) => r.remove_udp(socket),
        }
    }

    /// Stops receiving on a UDP socket for now (one flooded with
    /// datagrams): nothing is read from it, so the kernel drops what
    /// overflows its receive buffer, at no cost to this thread. With port
    /// steering its port is taken out of the steering too. Pausing a
    /// paused socket does nothing.
    pub fn pause_udp(&mut self, socket: SocketId) -> io::Result<()> {
        match self {
            Reactor::Uring(r) => r.pause_udp(socket),
            Reactor::Epoll(r) => r.set_udp_paused(socket, true),
        }
    }

    /// Receives on a paused UDP socket again. What its receive buffer
    /// kept meanwhile (the flood, and audio seconds old) is dropped
    /// first, not delivered.
    pub fn resume_udp(&mut self, socket: SocketId) -> io::Result<()> {
        match self {
            Reactor::Uring(r) => r.resume_udp(socket),
            Reactor::Epoll(r) => r.set_udp_paused(socket, false),
        }
    }

    /// Lets the kernel deliver to a UDP socket only datagrams from
    /// `sources` (None: from anywhere again); see [`filter`]. Unsupported
    /// for a socket whose port is steered (its datagrams arrive on the
    /// steering socket, which all the worker's ports share).
    pub fn filter_udp_sources(
        &mut self,
        socket: SocketId,
        sources: Option<&[IpAddr]>,
    ) -> io::Result<()> {
        match self {
            Reactor::Uring(r) => r.filter_udp_sources(socket, sources),
            Reactor::Epoll(r) => r.filter_udp_sources(socket, sources),
        }
    }

    /// Datagrams the kernel dropped at a UDP socket since it was opened:
    /// turned away by its source filter, or past its full receive buffer
    /// (`SK_MEMINFO_DROPS`).
    pub fn udp_drops(&mut self, socket: SocketId) -> io::Result<u64> {
        match self {
            Reactor::Uring(r) => r.udp_drops(socket),
            Reactor::Epoll(r) => r.udp_drops(socket),
        }
    }

    pub fn add_tcp_listener(&mut self, listener: TcpListener) -> io::Result<SocketId> {
        match self {
            Reactor::Uring(r) => r.add_listener(listener),
            Reactor::Epoll(r) => r.add_listener(listener),
        }
    }

    /// The local address of a registered socket.
    pub fn local_addr(&self, socket: SocketId) -> Option<SocketAddr> {
        match self {
            Reactor::Uring(r) => r.local_addr(socket),
            Reactor::Epoll(r) => r.local_addr(socket),
        }
    }

    /// Queues a datagram (copied) for `to`.
    pub fn send_to(&mut self, socket: SocketId, to: SocketAddr, data: &[u8]) -> io::Result<()> {
        match self {
            Reactor::Uring(r) => r.send_to(socket, to, data),
            Reactor::Epoll(r) => r.send_to(socket, to, data),
        }
    }

    /// Queues stream bytes (copied); they go out in order.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> io::Result<()> {
        match self {
            Reactor::Uring(r) => r.send(conn, data),
            Reactor::Epoll(r) => r.send(conn, data),
        }
    }

    /// Starts a TCP connection; [`Event::Connected`] or [`Event::Closed`]
    /// follows.
    pub fn connect(&mut self, to: SocketAddr) -> io::Result<ConnId> {
        match self {
            Reactor::Uring(r) => r.connect(to),
            Reactor::Epoll(r) => r.connect(to),
        }
    }

    /// Closes a connection; [`Event::Closed`] with `Local` follows.
    pub fn close(&mut self, conn: ConnId) {
        match self {
            Reactor::Uring(r) => r.close(conn),
            Reactor::Epoll(r) => r.close(conn),
        }
    }

    /// Lets [`Self::poll`] gather work instead of returning at the first
    /// completion: it waits until `completions` have arrived, or, once
    /// `max_delay` has passed, for the first one (still ending at its
    /// timeout). Under load a loop turn then handles a batch of datagrams
    /// for one kernel crossing, at the price of up to `max_delay` of
    /// added latency when traffic is light. io_uring only, on kernels
    /// with the wait's minimum timeout (6.12+); returns whether it is in
    /// effect (epoll: never; its waits return at the first event).
    pub fn set_coalescing(&mut self, completions: u32, max_delay: Duration) -> bool {
        match self {
            Reactor::Uring(r) => r.set_coalescing(completions, max_delay),
            Reactor::Epoll(_) => false,
        }
    }

    /// Whether [`Self::set_coalescing`] can take effect here.
    pub fn can_coalesce(&self) -> bool {
        match self {
            Reactor::Uring(r) => r.can_coalesce(),
            Reactor::Epoll(_) => false,
        }
    }

    pub fn waker(&self) -> Waker {
        match self {
            Reactor::Uring(r) => r.waker(),
            Reactor::Epoll(r) => r.waker(),
        }
    }

    pub fn stats(&self) -> Stats {
        match self {
            Reactor::Uring(r) => r.stats(),
            Reactor::Epoll(r) => r.stats(),
        }
    }

    /// Sends what is queued, waits until something happens or `timeout`
    /// passes (None: no limit), and reports every event to `on_event`.
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<()> {
        match self {
            Reactor::Uring(r) => r.poll(timeout, on_event),
            Reactor::Epoll(r) => r.poll(timeout, on_event),
        }
    }
}

#[cfg(test)]
mod tests;

/// Asks for a larger socket receive buffer (signalling bursts, RTP): the
/// kernel may grant less (`net.core.rmem_max`) unless the process may
/// exceed that limit (`CAP_NET_ADMIN`, `SO_RCVBUFFORCE`), which is tried
/// when the plain request falls short; what was granted is returned (the
/// kernel doubles the request for its own bookkeeping, as `socket(7)` says).
pub fn set_recv_buffer(socket: &impl AsRawFd, bytes: usize) -> io::Result<usize> {
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX / 2);
    let set = |opt: libc::c_int| sys::set_int_option(socket, libc::SOL_SOCKET, opt, want);
    set(libc::SO_RCVBUF)?;
    let granted = get_recv_buffer(socket)?;
    if granted >= bytes {
        return Ok(granted);
    }
    // Without the capability this fails (EPERM) and the plain grant stands.
    match set(libc::SO_RCVBUFFORCE) {
        Ok(()) => get_recv_buffer(socket),
        Err(_) => Ok(granted),
    }
}

/// Makes an IPv4 UDP socket send every datagram with DF set and never
/// fragment one here (`IP_PMTUDISC_PROBE`): a datagram larger than the
/// interface's MTU fails with `EMSGSIZE` instead of leaving in fragments.
/// The kernel then gives each datagram IP ID 0 (RFC 6864: an atomic
/// datagram's ID means nothing) instead of drawing one from its
/// system-wide ID generator on every send, which a media relay pays per
/// packet. Under the default (`IP_PMTUDISC_WANT`) DF is already set on the
/// wire, so peers see no other difference. IPv6 sockets are left alone
/// (IPv6 has no per-packet ID to draw).
pub fn set_no_fragment(socket: &UdpSocket) -> io::Result<()> {
    if !socket.local_addr()?.is_ipv4() {
        return Ok(());
    }
    sys::set_int_option(
        socket,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    )
}

/// The socket's receive buffer size as the kernel reports it.
fn get_recv_buffer(socket: &impl AsRawFd) -> io::Result<usize> {
    // SAFETY: getsockopt with a live fd and correctly sized ints.
    unsafe {
        let mut got: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut got).cast(),
            &raw mut len,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(got).unwrap_or(0))
    }
}
