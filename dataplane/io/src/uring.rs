//! The io_uring backend.
//!
//! Receives are multishot and draw buffers from one provided-buffer ring;
//! a multishot operation that the kernel ends (no `MORE` flag, e.g. when
//! buffers ran out) is re-armed after the completions of that turn have
//! been handled and their buffers recycled. Sends own their bytes (and, for
//! UDP, the destination address the kernel reads) in boxed slots until they
//! complete; a datagram goes out as `IORING_OP_SEND` with that address
//! (`sendto`: no `msghdr` or iovec for the kernel to copy in), on the
//! socket's registered-file slot where it has one (no fd lookup or file
//! reference count per send). Per connection one send is in flight at a
//! time, so partial writes keep their order. Each `poll` is one
//! `io_uring_enter` that submits everything queued and waits for a
//! completion or the deadline.

use std::collections::VecDeque;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::types::{Fd, Fixed, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use crate::bufring::BufRing;
use crate::steer::{PortSteer, orig_dst_port};
use crate::sys::{Slab, eventfd, from_sockaddr_bytes, to_sockaddr};
use crate::{CloseReason, ConnId, Event, Options, SocketId, Stats, Waker};

const BUF_GROUP: u16 = 0;

/// Receive buffer of the steering socket, which takes every steered
/// port's datagrams (the kernel may grant less without `CAP_NET_ADMIN`).
const STEER_RECV_BUFFER: usize = 2 << 20;
/// Ancillary bytes per steered datagram: one `IP_ORIGDSTADDR`
/// (`CMSG_SPACE(sizeof(struct sockaddr_in))`), with room to spare.
const STEER_CONTROL: usize = 64;

/// Datagram send slots kept for reuse: enough for a worker's burst of
/// sends in one loop turn.
const MAX_SPARE_SENDS: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Kind {
    Udp = 1,
    Accept = 2,
    Recv = 3,
    Send = 4,
    Wake = 5,
    Connect = 6,
    /// The completion of an `AsyncCancel` (nothing to do: the cancelled
    /// operation reports its own end).
    Cancel = 7,
}

/// The slot of a UDP socket its owner holds (added, not being removed).
fn held_udp(udp: &mut [Option<UdpSlot>], idx: u32) -> io::Result<&mut UdpSlot> {
    udp.get_mut(idx as usize)
        .and_then(Option::as_mut)
        .filter(|slot| !slot.closing)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such UDP socket"))
}

fn user_data(kind: Kind, generation: u32, index: u32) -> u64 {
    (u64::from(kind as u8) << 56) | (u64::from(generation & 0x00ff_ffff) << 32) | u64::from(index)
}

fn split(ud: u64) -> (u8, u32, u32) {
    (
        (ud >> 56) as u8,
        ((ud >> 32) & 0x00ff_ffff) as u32,
        (ud & 0xffff_ffff) as u32,
    )
}

struct UdpSlot {
    sock: UdpSocket,
    /// The template multishot recvmsg reads: name length and no control.
    msg: Box<libc::msghdr>,
    armed: bool,
    /// Entered in the ring's registered-file table at the slot's index.
    fixed: bool,
    /// Removed by the owner: its receive is being cancelled, and the slot
    /// is freed (the socket closed) when the final completion arrives.
    closing: bool,
    /// Its port's datagrams arrive on the steering socket.
    steered: Option<u16>,
    /// Paused by the owner: not re-armed, and out of the steering.
    paused: bool,
}

#[derive(PartialEq, Eq)]
enum ConnState {
    Connecting,
    Open,
    Closing(CloseReason),
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    state: ConnState,
    recv_armed: bool,
    /// Bytes waiting behind the send in flight.
    queue: VecDeque<Vec<u8>>,
    sending: bool,
    /// Keeps the address a Connect reads alive.
    connect_addr: Option<Box<(libc::sockaddr_storage, libc::socklen_t)>>,
}

/// A send in flight: its bytes and, for UDP, the destination.
struct SendOp {
    buf: Vec<u8>,
    offset: usize,
    conn: Option<ConnId>,
    addr: libc::sockaddr_storage,
}

pub struct UringReactor {
    ring: IoUring,
    bufs: BufRing,
    /// UDP sockets by [`SocketId`]; `None` is a free slot (in `free_udp`).
    udp: Vec<Option<UdpSlot>>,
    free_udp: Vec<u32>,
    listeners: Vec<(TcpListener, bool)>,
    conns: Slab<Conn>,
    sends: Vec<Option<Box<SendOp>>>,
    free_sends: Vec<u32>,
    /// Finished datagram sends, kept for reuse (at most `MAX_SPARE_SENDS`).
    #[allow(
        clippy::vec_box,
        reason = "kept boxed: an op's address must not move while the kernel reads it"
    )]
    spare_sends: Vec<Box<SendOp>>,
    /// The completions of one turn (kept to reuse its allocation).
    completions: Vec<(u64, i32, u32)>,
    wake_fd: Arc<OwnedFd>,
    wake_buf: Box<u64>,
    max_connections: usize,
    stats: Stats,
    /// Work discovered while handling completions, done before the wait.
    rearm: Vec<u64>,
    /// Connections closed while nothing was in flight on them; their
    /// `Closed` event goes out at the next poll.
    closed: Vec<(ConnId, CloseReason)>,
    /// Whether the kernel has the wait's minimum timeout (6.12+).
    min_timeout: bool,
    /// Set by [`UringReactor::set_coalescing`]: wait for this many
    /// completions, or for the first one after this many µs.
    coalesce: Option<(u32, u32)>,
    /// Size of the registered-file table (0: none); UDP socket `i` uses
    /// slot `i` when `i` is below it.
    fixed_files: u32,
    /// Port steering, with the slot of its receiving socket.
    steer: Option<(PortSteer, u32)>,
    /// Tests: how many coming submissions fail as a full, unsubmittable
    /// queue would.
    #[cfg(test)]
    pub(crate) refuse_pushes: u32,
}

impl UringReactor {
    pub fn new(opts: &Options) -> io::Result<UringReactor> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all()
            .build(opts.ring_entries)
            .or_else(|_| IoUring::builder().build(opts.ring_entries))?;
        // Kernels before 6.0 lack multishot recvmsg; probe for it.
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        // SendZc came with 6.0, as did multishot recvmsg and the
        // destination address on Send that datagram sends rely on.
        for op in [
            opcode::RecvMsg::CODE,
            opcode::AcceptMulti::CODE,
            opcode::RecvMulti::CODE,
            opcode::SendZc::CODE,
        ] {
            if !probe.is_supported(op) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "io_uring lacks a needed operation",
                ));
            }
        }
        let bufs = BufRing::register(&ring, BUF_GROUP, opts.buffers, opts.buffer_len)?;
        let min_timeout = ring.params().is_feature_min_timeout();
        let fixed_files = register_file_table(&ring, opts.fixed_files);
        let mut r = UringReactor {
            ring,
            bufs,
            udp: Vec::new(),
            free_udp: Vec::new(),
            listeners: Vec::new(),
            conns: Slab::new(),
            sends: Vec::new(),
            free_sends: Vec::new(),
            spare_sends: Vec::new(),
            completions: Vec::new(),
            wake_fd: Arc::new(eventfd()?),
            wake_buf: Box::new(0),
            max_connections: opts.max_connections,
            stats: Stats::default(),
            rearm: Vec::new(),
            closed: Vec::new(),
            min_timeout,
            coalesce: None,
            fixed_files,
            steer: None,
            #[cfg(test)]
            refuse_pushes: 0,
        };
        r.arm_wake()?;
        // The first enter fails on kernels where io_uring exists but is
        // switched off by policy; find out now, not in the loop.
        r.ring.submit()?;
        Ok(r)
    }

    /// Tests: the UDP slots in the table, free or not (the next new one's
    /// index).
    #[cfg(test)]
    pub(crate) fn udp_slots(&self) -> u32 {
        u32::try_from(self.udp.len()).unwrap_or(u32::MAX)
    }

    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        #[cfg(test)]
        if self.refuse_pushes > 0 {
            self.refuse_pushes -= 1;
            return Err(io::Error::other("submission refused by the test"));
        }
        // SAFETY: every entry's buffers and headers live in `self` (boxed
        // slots, the buffer ring, sockets) until its completion arrives.
        unsafe {
            if self.ring.submission().push(entry).is_err() {
                self.ring.submit()?;
                self.ring
                    .submission()
                    .push(entry)
                    .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            }
        }
        Ok(())
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let e = opcode::Read::new(
            Fd(self.wake_fd.as_raw_fd()),
            (&raw mut *self.wake_buf).cast(),
            8,
        )
        .build()
        .user_data(user_data(Kind::Wake, 0, 0));
        self.push(&e)
    }

    fn arm_udp(&mut self, idx: u32) -> io::Result<()> {
        let Some(slot) = self.udp.get_mut(idx as usize).and_then(Option::as_mut) else {
            return Ok(());
        };
        if slot.closing || slot.paused {
            return Ok(());
        }
        let e =
            opcode::RecvMsgMulti::new(Fd(slot.sock.as_raw_fd()), &raw const *slot.msg, BUF_GROUP)
                .build()
                .user_data(user_data(Kind::Udp, 0, idx));
        self.push(&e)?;
        // Only a receive the ring took is armed: a slot marked armed waits
        // for its receive's final completion before it is freed.
        if let Some(Some(slot)) = self.udp.get_mut(idx as usize) {
            slot.armed = true;
        }
        Ok(())
    }

    fn arm_accept(&mut self, idx: u32) -> io::Result<()> {
        let Some(l) = self.listeners.get_mut(idx as usize) else {
            return Ok(());
        };
        let e = opcode::AcceptMulti::new(Fd(l.0.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(Kind::Accept, 0, idx));
        self.push(&e)?;
        if let Some(l) = self.listeners.get_mut(idx as usize) {
            l.1 = true;
        }
        Ok(())
    }

    fn arm_recv(&mut self, id: ConnId) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(id) else {
            return Ok(());
        };
        if c.state != ConnState::Open {
            return Ok(());
        }
        let e = opcode::RecvMulti::new(Fd(c.stream.as_raw_fd()), BUF_GROUP)
            .build()
            .user_data(user_data(Kind::Recv, id.generation, id.index));
        self.push(&e)?;
        if let Some(c) = self.conns.get_mut(id) {
            c.recv_armed = true;
        }
        Ok(())
    }

    /// See [`crate::Reactor::steer_ports`].
    pub fn steer_ports(&mut self, ip: IpAddr, ports: RangeInclusive<u16>) -> io::Result<()> {
        if self.steer.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "ports are already steered",
            ));
        }
        let steer = PortSteer::new(ip, ports)?;
        // Every port's datagrams queue here: the 4 MiB granted hold
        // ~20 ms of a worker relaying 2,500 calls (a 172-byte RTP
        // datagram takes 832 bytes of it, as `ss -m` shows).
        crate::set_recv_buffer(&steer.socket, STEER_RECV_BUFFER)?;
        let idx = self.add_udp_slot(steer.socket.try_clone()?, STEER_CONTROL)?;
        self.steer = Some((steer, idx));
        if let Err(e) = self.arm_udp(idx) {
            // Nothing would receive what the program steers: undo it all
            // (the link goes with the steering state).
            self.steer = None;
            self.free_udp_slot(idx);
            return Err(e);
        }
        Ok(())
    }

    pub fn add_udp(&mut self, sock: UdpSocket) -> io::Result<SocketId> {
        let idx = self.add_udp_slot(sock, 0)?;
        if let Some(port) = self.steer_socket(idx)
            && let Some(Some(slot)) = self.udp.get_mut(idx as usize)
        {
            slot.steered = Some(port);
        }
        // A steered socket's own receive is armed too, idle from now on:
        // it takes what queued on the socket before its port was steered,
        // so nothing sent to the port is lost.
        if let Err(e) = self.arm_udp(idx) {
            // The caller gets no id to remove it by: the slot, its
            // registered file, its steering entry and the socket go now.
            if let Some(Some(slot)) = self.udp.get(idx as usize)
                && let Some(port) = slot.steered
                && let Some((steer, _)) = self.steer.as_mut()
            {
                steer.remove(port);
            }
            self.free_udp_slot(idx);
            return Err(e);
        }
        Ok(SocketId(idx))
    }

    /// Enters a socket bound inside the steered ports in the steering
    /// map; its port, if so.
    fn steer_socket(&mut self, idx: u32) -> Option<u16> {
        let (steer, _) = self.steer.as_mut()?;
        let addr = self
            .udp
            .get(idx as usize)?
            .as_ref()?
            .sock
            .local_addr()
            .ok()?;
        if !steer.covers(addr) {
            return None;
        }
        match steer.insert(addr.port(), idx) {
            Ok(()) => Some(addr.port()),
            Err(e) => {
                tracing::warn!(port = addr.port(), error = %e, "port not steered; its socket receives for itself");
                None
            }
        }
    }

    /// A UDP slot for `sock`, its receive not yet armed; `control` bytes
    /// of ancillary data come with each datagram.
    fn add_udp_slot(&mut self, sock: UdpSocket, control: usize) -> io::Result<u32> {
        // SAFETY: zeroed msghdr is valid; only the lengths are set.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_controllen = control;
        let fd = sock.as_raw_fd();
        let slot = UdpSlot {
            sock,
            msg,
            armed: false,
            fixed: false,
            closing: false,
            steered: None,
            paused: false,
        };
        let idx = match self.free_udp.pop() {
            Some(idx) => {
                self.udp[idx as usize] = Some(slot);
                idx
            }
            None => {
                let idx = u32::try_from(self.udp.len())
                    .ok()
                    .filter(|i| i & LISTENER_BIT == 0)
                    .ok_or_else(|| io::Error::other("too many UDP sockets"))?;
                self.udp.push(Some(slot));
                idx
            }
        };
        // A socket without a slot (table full or refused) sends by fd.
        if idx < self.fixed_files
            && matches!(
                self.ring.submitter().register_files_update(idx, &[fd]),
                Ok(1)
            )
            && let Some(Some(slot)) = self.udp.get_mut(idx as usize)
        {
            slot.fixed = true;
        }
        Ok(idx)
    }

    /// Stops receiving on a UDP socket and closes it. Its id is not
    /// reported again; the slot is reused once the kernel has ended the
    /// socket's receive (a later poll).
    pub fn remove_udp(&mut self, s: SocketId) -> io::Result<()> {
        let idx = s.0;
        let slot = held_udp(&mut self.udp, idx)?;
        slot.closing = true;
        // A paused socket's port is out of the steering already.
        if let Some(port) = slot.steered
            && !slot.paused
            && let Some((steer, _)) = self.steer.as_mut()
        {
            steer.remove(port);
        }
        if slot.armed {
            // Its receive's final completion frees the slot: the cancel
            // must reach the ring, now or at the end of the next poll.
            if let Err(e) = self.cancel_udp(idx) {
                tracing::warn!(error = %e, slot = idx, "receive cancel deferred to the next poll");
                self.rearm.push(user_data(Kind::Cancel, 0, idx));
            }
        } else {
            self.free_udp_slot(idx);
        }
        Ok(())
    }

    /// Cancels a UDP slot's multishot receive; its final completion
    /// follows (and re-arms it unless it is paused or closing).
    fn cancel_udp(&mut self, idx: u32) -> io::Result<()> {
        let e = opcode::AsyncCancel::new(user_data(Kind::Udp, 0, idx))
            .build()
            .user_data(user_data(Kind::Cancel, 0, idx));
        self.push(&e)
    }

    /// See [`crate::Reactor::filter_udp_sources`].
    pub fn filter_udp_sources(
        &mut self,
        s: SocketId,
        sources: Option<&[std::net::IpAddr]>,
    ) -> io::Result<()> {
        let slot = held_udp(&mut self.udp, s.0)?;
        if slot.steered.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a steered port's datagrams arrive on the steering socket",
            ));
        }
        crate::filter::filter_sources(&slot.sock, sources)
    }

    /// See [`crate::Reactor::udp_drops`].
    pub fn udp_drops(&mut self, s: SocketId) -> io::Result<u64> {
        crate::filter::socket_drops(&held_udp(&mut self.udp, s.0)?.sock)
    }

    /// Stops receiving on a UDP socket until [`Self::resume_udp`]: its
    /// receive is cancelled and its port leaves the steering map, so its
    /// datagrams wait in (and overflow) its own receive buffer.
    pub fn pause_udp(&mut self, s: SocketId) -> io::Result<()> {
        let idx = s.0;
        let slot = held_udp(&mut self.udp, idx)?;
        if slot.paused {
            return Ok(());
        }
        slot.paused = true;
        if let Some(port) = slot.steered
            && let Some((steer, _)) = self.steer.as_mut()
        {
            steer.remove(port);
        }
        if slot.armed {
            self.cancel_udp(idx)?;
        }
        Ok(())
    }

    /// Receives on a paused UDP socket again (and steers its port again).
    pub fn resume_udp(&mut self, s: SocketId) -> io::Result<()> {
        let idx = s.0;
        let slot = held_udp(&mut self.udp, idx)?;
        if !slot.paused {
            return Ok(());
        }
        slot.paused = false;
        crate::sys::discard_queued(&slot.sock);
        let armed = slot.armed;
        if let Some(port) = slot.steered
            && let Some((steer, _)) = self.steer.as_mut()
            && let Err(e) = steer.insert(port, idx)
        {
            tracing::warn!(port, error = %e, "port not steered again; its socket receives for itself");
            slot.steered = None;
        }
        // Still armed: the cancel has not completed yet, and its
        // completion re-arms the receive as the slot is no longer paused.
        if armed { Ok(()) } else { self.arm_udp(idx) }
    }

    fn free_udp_slot(&mut self, idx: u32) {
        if let Some(entry) = self.udp.get_mut(idx as usize)
            && let Some(slot) = entry.take()
        {
            // The table holds its own reference to the socket: without
            // emptying the slot, closing our fd would not free the port.
            if slot.fixed
                && let Err(e) = self.ring.submitter().register_files_update(idx, &[-1])
            {
                tracing::warn!(error = %e, slot = idx, "registered file not released; its socket stays open");
            }
            drop(slot);
            self.free_udp.push(idx);
        }
    }

    pub fn add_listener(&mut self, l: TcpListener) -> io::Result<SocketId> {
        // Listener ids follow the UDP ones' numbering space apart: high bit.
        let idx = u32::try_from(self.listeners.len()).map_err(io::Error::other)?;
        self.listeners.push((l, false));
        self.arm_accept(idx)?;
        Ok(SocketId(idx | LISTENER_BIT))
    }

    pub fn local_addr(&self, s: SocketId) -> Option<SocketAddr> {
        if s.0 & LISTENER_BIT != 0 {
            self.listeners
                .get((s.0 & !LISTENER_BIT) as usize)?
                .0
                .local_addr()
                .ok()
        } else {
            self.udp
                .get(s.0 as usize)?
                .as_ref()
                .filter(|slot| !slot.closing)?
                .sock
                .local_addr()
                .ok()
        }
    }

    fn send_slot(&mut self, op: Box<SendOp>) -> u32 {
        match self.free_sends.pop() {
            Some(i) => {
                self.sends[i as usize] = Some(op);
                i
            }
            None => {
                self.sends.push(Some(op));
                u32::try_from(self.sends.len() - 1).unwrap_or(u32::MAX)
            }
        }
    }

    pub fn send_to(&mut self, s: SocketId, to: SocketAddr, data: &[u8]) -> io::Result<()> {
        let (fd, fixed) = match self.udp.get(s.0 as usize).and_then(Option::as_ref) {
            Some(slot) if !slot.closing => (slot.sock.as_raw_fd(), slot.fixed),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no such UDP socket",
                ));
            }
        };
        // A finished datagram send's box and buffer are reused, so the
        // steady state (media relay) allocates nothing per packet.
        let mut op = match self.spare_sends.pop() {
            Some(mut op) => {
                op.buf.clear();
                op.buf.extend_from_slice(data);
                op.offset = 0;
                op.conn = None;
                op
            }
            None => Box::new(SendOp {
                buf: data.to_vec(),
                offset: 0,
                conn: None,
                // SAFETY: a zeroed sockaddr_storage is valid.
                addr: unsafe { std::mem::zeroed() },
            }),
        };
        let addr_len = to_sockaddr(&to, &mut op.addr);
        let len = u32::try_from(op.buf.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "datagram too large"))?;
        // The box does not move while the op is in flight, so these
        // pointers stay valid until its completion.
        let (buf, addr) = (
            op.buf.as_ptr(),
            (&raw const op.addr).cast::<libc::sockaddr>(),
        );
        let idx = self.send_slot(op);
        let e = if fixed {
            opcode::Send::new(Fixed(s.0), buf, len)
        } else {
            opcode::Send::new(Fd(fd), buf, len)
        }
        .dest_addr(addr)
        .dest_addr_len(addr_len)
        .build()
        .user_data(user_data(Kind::Send, 0, idx));
        self.stats.datagrams_out += 1;
        self.push(&e)
    }

    pub fn send(&mut self, id: ConnId, data: &[u8]) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(id) else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection is closed",
            ));
        };
        if matches!(c.state, ConnState::Closing(_)) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection is closing",
            ));
        }
        c.queue.push_back(data.to_vec());
        if !c.sending && c.state == ConnState::Open {
            self.start_stream_send(id)?;
        }
        Ok(())
    }

    fn start_stream_send(&mut self, id: ConnId) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(id) else {
            return Ok(());
        };
        let Some(buf) = c.queue.pop_front() else {
            return Ok(());
        };
        c.sending = true;
        let fd = c.stream.as_raw_fd();
        let op = Box::new(SendOp {
            buf,
            offset: 0,
            conn: Some(id),
            // SAFETY: a zeroed sockaddr_storage is valid (unused here).
            addr: unsafe { std::mem::zeroed() },
        });
        let idx = self.send_slot(op);
        self.submit_stream_send(idx, fd)
    }

    fn submit_stream_send(&mut self, idx: u32, fd: i32) -> io::Result<()> {
        let Some(Some(op)) = self.sends.get(idx as usize) else {
            return Ok(());
        };
        let rest = &op.buf[op.offset..];
        let e = opcode::Send::new(
            Fd(fd),
            rest.as_ptr(),
            u32::try_from(rest.len()).unwrap_or(u32::MAX),
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data(Kind::Send, 0, idx));
        self.push(&e)
    }

    pub fn connect(&mut self, to: SocketAddr) -> io::Result<ConnId> {
        if self.conns.len() >= self.max_connections {
            return Err(io::Error::other("connection table full"));
        }
        let domain = if to.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and ours.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        let _ = stream.set_nodelay(true);
        // SAFETY: zeroed storage is valid.
        let mut addr = Box::new((unsafe { std::mem::zeroed::<libc::sockaddr_storage>() }, 0));
        addr.1 = to_sockaddr(&to, &mut addr.0);
        let (ptr, len) = ((&raw const addr.0).cast::<libc::sockaddr>(), addr.1);
        let id = self.conns.insert(Conn {
            stream,
            peer: to,
            state: ConnState::Connecting,
            recv_armed: false,
            queue: VecDeque::new(),
            sending: false,
            connect_addr: Some(addr),
        });
        let e = opcode::Connect::new(Fd(fd), ptr, len)
            .build()
            .user_data(user_data(Kind::Connect, id.generation, id.index));
        self.push(&e)?;
        Ok(id)
    }

    pub fn close(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(id)
            && !matches!(c.state, ConnState::Closing(_))
        {
            c.state = ConnState::Closing(CloseReason::Local);
            // Shutting down ends the multishot recv with 0 bytes; the
            // slot is freed when that completion arrives.
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            // A connect in flight still reads the boxed address: its
            // completion frees the slot instead.
            if !c.recv_armed && c.connect_addr.is_none() && self.conns.remove(id).is_some() {
                self.stats.open_connections = self.conns.len() as u64;
                self.closed.push((id, CloseReason::Local));
            }
        }
    }

    fn finish_close(&mut self, id: ConnId, on_event: &mut dyn FnMut(Event<'_>)) {
        if let Some(c) = self.conns.remove(id) {
            let reason = match c.state {
                ConnState::Closing(r) => r,
                _ => CloseReason::PeerClosed,
            };
            self.stats.open_connections = self.conns.len() as u64;
            on_event(Event::Closed { conn: id, reason });
        }
    }

    pub fn waker(&self) -> Waker {
        Waker {
            fd: self.wake_fd.clone(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// See [`crate::Reactor::set_coalescing`]; false where the kernel
    /// lacks the minimum wait (then every poll returns at the first
    /// completion, as before).
    /// Whether the kernel has the wait's minimum timeout.
    pub fn can_coalesce(&self) -> bool {
        self.min_timeout
    }

    pub fn set_coalescing(&mut self, completions: u32, max_delay: Duration) -> bool {
        if !self.min_timeout || completions <= 1 {
            self.coalesce = None;
            return false;
        }
        let us = u32::try_from(max_delay.as_micros())
            .unwrap_or(u32::MAX)
            .max(1);
        self.coalesce = Some((completions, us));
        true
    }

    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<()> {
        // Coalescing (with a timeout only): wait for `n` completions
        // beyond those of what this enter submits (datagram sends complete
        // inline), or for the first one once `us` have passed; with
        // DEFER_TASKRUN the kernel does not even wake us for each arrival
        // before then.
        let (want, min_wait) = match self.coalesce {
            Some((n, us)) => {
                let queued = u32::try_from(self.ring.submission().len()).unwrap_or(u32::MAX);
                (n.saturating_add(queued), us)
            }
            None => (1, 0),
        };
        let res = match timeout {
            Some(t) => {
                let ts = Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts).min_wait_usec(min_wait);
                self.ring.submitter().submit_with_args(want as usize, &args)
            }
            // Without a timeout the kernel would end the wait at the
            // minimum one, with or without completions: wait for one.
            None => self.ring.submit_and_wait(1),
        };
        match res {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        for (conn, reason) in std::mem::take(&mut self.closed) {
            on_event(Event::Closed { conn, reason });
        }
        let mut completions = std::mem::take(&mut self.completions);
        completions.clear();
        completions.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let mut result = Ok(());
        for &(ud, res, flags) in &completions {
            if let Err(e) = self.complete(ud, res, flags, on_event) {
                result = Err(e);
                break;
            }
        }
        self.completions = completions;
        // The turn's buffers go back to the kernel in one store (it takes
        // none while we are out of the ring: its receives run as task work
        // inside our next enter).
        self.bufs.publish();
        result?;
        self.run_deferred();
        Ok(())
    }

    /// Re-arms the receives and accepts whose multishot ended, and sends
    /// the cancels that could not go before. One the ring refuses (its
    /// queue full and the kernel busy) waits, with those after it, for
    /// the next poll, which first reaps completions: no socket is left
    /// without its receive, and the reactor goes on.
    fn run_deferred(&mut self) {
        let todo = std::mem::take(&mut self.rearm);
        for (i, &ud) in todo.iter().enumerate() {
            let (kind, generation, idx) = split(ud);
            let done = match kind {
                k if k == Kind::Udp as u8 => self.arm_udp(idx),
                k if k == Kind::Accept as u8 => self.arm_accept(idx),
                k if k == Kind::Recv as u8 => self.arm_recv(ConnId {
                    index: idx,
                    generation,
                }),
                k if k == Kind::Cancel as u8 => match self.udp.get(idx as usize) {
                    Some(Some(slot)) if slot.armed && slot.closing => self.cancel_udp(idx),
                    _ => Ok(()),
                },
                _ => Ok(()),
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, waiting = todo.len() - i, "re-arming deferred to the next poll");
                self.rearm.extend_from_slice(&todo[i..]);
                return;
            }
        }
    }

    fn complete(
        &mut self,
        ud: u64,
        res: i32,
        flags: u32,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<()> {
        let (kind, generation, idx) = split(ud);
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        match kind {
            k if k == Kind::Udp as u8 => {
                if let (Some(bid), true) = (bid, res >= 0) {
                    let len = usize::try_from(res).unwrap_or(0);
                    if let Some(slot) = self
                        .udp
                        .get(idx as usize)
                        .and_then(Option::as_ref)
                        .filter(|slot| !slot.closing)
                    {
                        let buf = self.bufs.buffer(bid, len);
                        if let Ok(out) = RecvMsgOut::parse(buf, &slot.msg) {
                            // A steered datagram is its port's socket's.
                            let owner = match &self.steer {
                                Some((steer, s)) if *s == idx => orig_dst_port(out.control_data())
                                    .and_then(|port| steer.owner(port))
                                    .filter(|&o| {
                                        self.udp
                                            .get(o as usize)
                                            .and_then(Option::as_ref)
                                            .is_some_and(|slot| !slot.closing)
                                    }),
                                _ => Some(idx),
                            };
                            if out.is_payload_truncated() {
                                self.stats.datagrams_truncated += 1;
                            } else if let Some(from) = from_sockaddr_bytes(out.name_data()) {
                                match owner {
                                    Some(owner) => {
                                        self.stats.datagrams_in += 1;
                                        self.stats.steered_in += u64::from(owner != idx);
                                        on_event(Event::Datagram {
                                            socket: SocketId(owner),
                                            from,
                                            data: out.payload_data(),
                                        });
                                    }
                                    None => self.stats.steered_strays += 1,
                                }
                            }
                        }
                    }
                    self.bufs.recycle(bid);
                }
                if !more {
                    let closing = match self.udp.get_mut(idx as usize).and_then(Option::as_mut) {
                        Some(slot) => {
                            slot.armed = false;
                            slot.closing
                        }
                        None => false,
                    };
                    if closing {
                        self.free_udp_slot(idx);
                    } else {
                        self.rearm.push(ud);
                    }
                }
            }
            k if k == Kind::Accept as u8 => {
                if res >= 0 {
                    // SAFETY: a successful accept returns a new fd we own.
                    let stream = unsafe { TcpStream::from_raw_fd(res) };
                    self.stats.accepted += 1;
                    let peer = stream.peer_addr();
                    match peer {
                        Ok(peer) if self.conns.len() < self.max_connections => {
                            let _ = stream.set_nodelay(true);
                            let id = self.conns.insert(Conn {
                                stream,
                                peer,
                                state: ConnState::Open,
                                recv_armed: false,
                                queue: VecDeque::new(),
                                sending: false,
                                connect_addr: None,
                            });
                            self.stats.open_connections = self.conns.len() as u64;
                            self.arm_recv(id)?;
                            on_event(Event::Accepted {
                                listener: SocketId(idx | LISTENER_BIT),
                                conn: id,
                                peer,
                            });
                        }
                        _ => self.stats.refused_connections += 1,
                    }
                }
                if !more {
                    self.rearm.push(ud);
                }
            }
            k if k == Kind::Recv as u8 => {
                let id = ConnId {
                    index: idx,
                    generation,
                };
                let open = self.conns.get_mut(id).map(|c| c.state == ConnState::Open);
                match (res, bid) {
                    (n, Some(bid)) if n > 0 => {
                        if open == Some(true) {
                            let data = self.bufs.buffer(bid, usize::try_from(n).unwrap_or(0));
                            on_event(Event::Data { conn: id, data });
                        }
                        self.bufs.recycle(bid);
                    }
                    (n, _) if n == -libc::ENOBUFS => {}
                    (n, _) => {
                        if let Some(c) = self.conns.get_mut(id)
                            && c.state == ConnState::Open
                        {
                            c.state = ConnState::Closing(if n == 0 {
                                CloseReason::PeerClosed
                            } else {
                                CloseReason::Error(-n)
                            });
                        }
                    }
                }
                if !more && let Some(c) = self.conns.get_mut(id) {
                    c.recv_armed = false;
                    if matches!(c.state, ConnState::Closing(_)) {
                        self.finish_close(id, on_event);
                    } else {
                        self.rearm.push(ud);
                    }
                }
            }
            k if k == Kind::Send as u8 => {
                let Some(op) = self.sends.get_mut(idx as usize).and_then(Option::take) else {
                    return Ok(());
                };
                self.free_sends.push(idx);
                match op.conn {
                    None => {
                        if res < 0 {
                            self.stats.send_errors += 1;
                        }
                        if self.spare_sends.len() < MAX_SPARE_SENDS {
                            self.spare_sends.push(op);
                        }
                    }
                    Some(id) => self.stream_sent(id, op, res)?,
                }
            }
            k if k == Kind::Connect as u8 => {
                let id = ConnId {
                    index: idx,
                    generation,
                };
                if let Some(c) = self.conns.get_mut(id) {
                    c.connect_addr = None;
                    if res < 0 || matches!(c.state, ConnState::Closing(_)) {
                        if res < 0 && c.state == ConnState::Connecting {
                            c.state = ConnState::Closing(CloseReason::Error(-res));
                        }
                        self.finish_close(id, on_event);
                    } else if c.state == ConnState::Connecting {
                        c.state = ConnState::Open;
                        let peer = c.peer;
                        self.stats.open_connections = self.conns.len() as u64;
                        self.arm_recv(id)?;
                        on_event(Event::Connected { conn: id, peer });
                        self.start_stream_send(id)?;
                    }
                }
            }
            k if k == Kind::Wake as u8 => {
                on_event(Event::Woken);
                self.arm_wake()?;
            }
            _ => {}
        }
        Ok(())
    }

    fn stream_sent(&mut self, id: ConnId, mut op: Box<SendOp>, res: i32) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(id) else {
            return Ok(());
        };
        if res < 0 {
            self.stats.send_errors += 1;
            c.sending = false;
            c.queue.clear();
            if c.state == ConnState::Open {
                c.state = ConnState::Closing(CloseReason::Error(-res));
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
            return Ok(());
        }
        op.offset += usize::try_from(res).unwrap_or(0);
        if op.offset < op.buf.len() {
            let fd = c.stream.as_raw_fd();
            let idx = self.send_slot(op);
            return self.submit_stream_send(idx, fd);
        }
        c.sending = false;
        self.start_stream_send(id)
    }
}

/// Listener ids carry this bit so they never collide with UDP socket ids.
const LISTENER_BIT: u32 = 1 << 31;

/// Registers an empty file table of up to `want` slots; the kernel refuses
/// one larger than the open-file limit, so it is capped there. Returns
/// the size registered, 0 when there is none (a refusal only costs the
/// per-send fd lookup, so it is logged, not fatal).
fn register_file_table(ring: &IoUring, want: u32) -> u32 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live local.
    let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } == 0 {
        u32::try_from(lim.rlim_cur).unwrap_or(u32::MAX)
    } else {
        0
    };
    let n = want.min(nofile);
    if n == 0 {
        return 0;
    }
    match ring.submitter().register_files_sparse(n) {
        Ok(()) => n,
        Err(e) => {
            tracing::info!(error = %e, slots = n, "io_uring registered files unavailable; sends look up their fd");
            0
        }
    }
}
