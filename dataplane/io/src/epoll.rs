//! The epoll backend, for kernels without (usable) io_uring. Readiness
//! driven (level-triggered), streams read with `read`.
//!
//! A readable UDP socket is read with `recvmmsg`, a batch of datagrams per
//! call into buffers allocated once (`mmsg.rs`); a short batch means its
//! queue is empty. One socket delivers at most `Options::buffers`
//! datagrams (at least one batch) per turn; the rest stays readable for
//! the next, so a flooded socket cannot keep the others (or the loop's
//! timers) waiting for its whole backlog.
//!
//! Datagram sends are queued (copied into an arena allocated once) and go
//! out with one `sendmmsg` per socket, in the order queued, when `poll`
//! starts (before it waits, as the io_uring backend submits), when the
//! queue is full, and before a socket is removed or the reactor dropped.
//! A datagram the kernel refuses is counted in `send_errors` and dropped;
//! the ones behind it still go. Stream sends go out directly and what the
//! kernel does not take waits until the socket is writable again.

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crate::mmsg::{RECV_BATCH, Received, RecvBatch, SendQueue};
use crate::sys::{Slab, eventfd, to_sockaddr};
use crate::{CloseReason, ConnId, Event, Options, SocketId, Stats, Waker};

const TAG_WAKE: u64 = 1 << 62;
const TAG_UDP: u64 = 2 << 62;
const TAG_LISTENER: u64 = 3 << 62;
const LISTENER_BIT: u32 = 1 << 31;

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    connecting: bool,
    out: VecDeque<Vec<u8>>,
    out_offset: usize,
    want_write: bool,
}

pub struct EpollReactor {
    ep: OwnedFd,
    /// UDP sockets by [`SocketId`]; `None` is a free slot (in `free_udp`).
    udp: Vec<Option<UdpSocket>>,
    free_udp: Vec<u32>,
    /// UDP sockets paused by the owner.
    paused_udp: std::collections::HashSet<u32>,
    listeners: Vec<TcpListener>,
    conns: Slab<Conn>,
    wake_fd: Arc<OwnedFd>,
    /// Datagram batches; its first buffer takes stream reads too.
    recv: RecvBatch,
    /// Datagrams one socket may deliver per turn.
    recv_budget: usize,
    sends: SendQueue,
    max_connections: usize,
    stats: Stats,
    closed: Vec<(ConnId, CloseReason)>,
}

fn conn_tag(id: ConnId) -> u64 {
    (u64::from(id.generation) << 32) | u64::from(id.index)
}

impl EpollReactor {
    pub fn new(opts: &Options) -> io::Result<EpollReactor> {
        // SAFETY: plain syscall; checked; ownership taken below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let ep = unsafe { OwnedFd::from_raw_fd(fd) };
        let r = EpollReactor {
            ep,
            udp: Vec::new(),
            free_udp: Vec::new(),
            paused_udp: std::collections::HashSet::new(),
            listeners: Vec::new(),
            conns: Slab::new(),
            wake_fd: Arc::new(eventfd()?),
            recv: RecvBatch::new(RECV_BATCH.min(usize::from(opts.buffers)), opts.buffer_len),
            recv_budget: usize::from(opts.buffers).max(1),
            sends: SendQueue::new(),
            max_connections: opts.max_connections,
            stats: Stats::default(),
            closed: Vec::new(),
        };
        r.ctl(
            libc::EPOLL_CTL_ADD,
            r.wake_fd.as_raw_fd(),
            libc::EPOLLIN as u32,
            TAG_WAKE,
        )?;
        Ok(r)
    }

    fn ctl(&self, op: i32, fd: i32, events: u32, tag: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: tag };
        // SAFETY: ev lives across the call; fds are ours.
        if unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &raw mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add_udp(&mut self, sock: UdpSocket) -> io::Result<SocketId> {
        sock.set_nonblocking(true)?;
        let idx = match self.free_udp.last() {
            Some(&idx) => idx,
            None => u32::try_from(self.udp.len())
                .ok()
                .filter(|i| i & LISTENER_BIT == 0)
                .ok_or_else(|| io::Error::other("too many UDP sockets"))?,
        };
        self.ctl(
            libc::EPOLL_CTL_ADD,
            sock.as_raw_fd(),
            libc::EPOLLIN as u32,
            TAG_UDP | u64::from(idx),
        )?;
        if self.free_udp.last() == Some(&idx) {
            self.free_udp.pop();
            self.udp[idx as usize] = Some(sock);
        } else {
            self.udp.push(Some(sock));
        }
        Ok(SocketId(idx))
    }

    /// Stops receiving on a UDP socket and closes it; its id may be reused
    /// by a later [`Self::add_udp`].
    pub fn remove_udp(&mut self, s: SocketId) -> io::Result<()> {
        // What was queued on it leaves from it, before a later socket can
        // be given its id.
        self.flush_sends();
        let sock = self
            .udp
            .get_mut(s.0 as usize)
            .and_then(Option::take)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such UDP socket"))?;
        // Closing the socket removes it from the epoll set too; deleting
        // first keeps a readiness event of it out of the next wait.
        let _ = self.ctl(libc::EPOLL_CTL_DEL, sock.as_raw_fd(), 0, 0);
        drop(sock);
        self.paused_udp.remove(&s.0);
        self.free_udp.push(s.0);
        Ok(())
    }

    /// See [`crate::Reactor::filter_udp_sources`].
    pub fn filter_udp_sources(
        &mut self,
        s: SocketId,
        sources: Option<&[std::net::IpAddr]>,
    ) -> io::Result<()> {
        crate::filter::filter_sources(self.udp_socket(s)?, sources)
    }

    /// See [`crate::Reactor::udp_drops`].
    pub fn udp_drops(&mut self, s: SocketId) -> io::Result<u64> {
        crate::filter::socket_drops(self.udp_socket(s)?)
    }

    fn udp_socket(&self, s: SocketId) -> io::Result<&UdpSocket> {
        self.udp
            .get(s.0 as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such UDP socket"))
    }

    /// Stops (or resumes) reading a UDP socket: its registration stays,
    /// with no events asked for while it is paused.
    pub fn set_udp_paused(&mut self, s: SocketId, paused: bool) -> io::Result<()> {
        let sock = self
            .udp
            .get(s.0 as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such UDP socket"))?;
        let fd = sock.as_raw_fd();
        if paused == self.paused_udp.contains(&s.0) {
            return Ok(());
        }
        if !paused {
            crate::sys::discard_queued(sock);
        }
        let events = if paused { 0 } else { libc::EPOLLIN as u32 };
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, TAG_UDP | u64::from(s.0))?;
        if paused {
            self.paused_udp.insert(s.0);
        } else {
            self.paused_udp.remove(&s.0);
        }
        Ok(())
    }

    pub fn add_listener(&mut self, l: TcpListener) -> io::Result<SocketId> {
        l.set_nonblocking(true)?;
        let idx = u32::try_from(self.listeners.len()).map_err(io::Error::other)?;
        self.ctl(
            libc::EPOLL_CTL_ADD,
            l.as_raw_fd(),
            libc::EPOLLIN as u32,
            TAG_LISTENER | u64::from(idx),
        )?;
        self.listeners.push(l);
        Ok(SocketId(idx | LISTENER_BIT))
    }

    pub fn local_addr(&self, s: SocketId) -> Option<SocketAddr> {
        if s.0 & LISTENER_BIT != 0 {
            self.listeners
                .get((s.0 & !LISTENER_BIT) as usize)?
                .local_addr()
                .ok()
        } else {
            self.udp.get(s.0 as usize)?.as_ref()?.local_addr().ok()
        }
    }

    /// Queues a datagram; it goes out at the latest when `poll` starts.
    pub fn send_to(&mut self, s: SocketId, to: SocketAddr, data: &[u8]) -> io::Result<()> {
        if self
            .udp
            .get(s.0 as usize)
            .and_then(Option::as_ref)
            .is_none()
        {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such UDP socket",
            ));
        }
        if !self.sends.has_room(data.len()) {
            self.flush_sends();
        }
        self.sends.push(s.0, &to, data);
        self.stats.datagrams_out += 1;
        Ok(())
    }

    /// Sends every queued datagram.
    fn flush_sends(&mut self) {
        if self.sends.is_empty() {
            return;
        }
        let udp = &self.udp;
        self.stats.send_errors += self
            .sends
            .flush(|s| Some(udp.get(s as usize)?.as_ref()?.as_raw_fd()));
    }

    fn register_conn(&mut self, id: ConnId, fd: i32, write: bool) -> io::Result<()> {
        let mut events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        if write {
            events |= libc::EPOLLOUT as u32;
        }
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, conn_tag(id))
    }

    fn set_want_write(&mut self, id: ConnId, want: bool) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.want_write == want {
            return;
        }
        c.want_write = want;
        let fd = c.stream.as_raw_fd();
        let mut events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        if want {
            events |= libc::EPOLLOUT as u32;
        }
        let _ = self.ctl(libc::EPOLL_CTL_MOD, fd, events, conn_tag(id));
    }

    /// Writes queued bytes until the kernel pushes back.
    fn flush(&mut self, id: ConnId) {
        let mut failed = None;
        let mut pending = false;
        if let Some(c) = self.conns.get_mut(id) {
            if c.connecting {
                return;
            }
            while let Some(front) = c.out.front() {
                match c.stream.write(&front[c.out_offset..]) {
                    Ok(n) => {
                        c.out_offset += n;
                        if c.out_offset >= front.len() {
                            c.out.pop_front();
                            c.out_offset = 0;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        pending = true;
                        break;
                    }
                    Err(e) => {
                        failed = Some(e.raw_os_error().unwrap_or(libc::EIO));
                        break;
                    }
                }
            }
        }
        if let Some(err) = failed {
            self.stats.send_errors += 1;
            self.drop_conn(id, CloseReason::Error(err));
            return;
        }
        self.set_want_write(id, pending);
    }

    pub fn send(&mut self, id: ConnId, data: &[u8]) -> io::Result<()> {
        let c = self
            .conns
            .get_mut(id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection is closed"))?;
        c.out.push_back(data.to_vec());
        self.flush(id);
        Ok(())
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
        // SAFETY: plain socket(2); checked; owned below.
        let fd = unsafe {
            libc::socket(
                domain,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fd, ours.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        // SAFETY: zeroed storage is valid.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = to_sockaddr(&to, &mut addr);
        // SAFETY: addr/len describe a valid sockaddr for this call.
        let rc = unsafe { libc::connect(fd, (&raw const addr).cast(), len) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        let _ = stream.set_nodelay(true);
        let id = self.conns.insert(Conn {
            stream,
            peer: to,
            connecting: true,
            out: VecDeque::new(),
            out_offset: 0,
            want_write: true,
        });
        self.register_conn(id, fd, true)?;
        Ok(id)
    }

    fn drop_conn(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(c) = self.conns.remove(id) {
            let _ = self.ctl(libc::EPOLL_CTL_DEL, c.stream.as_raw_fd(), 0, 0);
            self.stats.open_connections = self.conns.len() as u64;
            self.closed.push((id, reason));
        }
    }

    pub fn close(&mut self, id: ConnId) {
        self.drop_conn(id, CloseReason::Local);
    }

    pub fn waker(&self) -> Waker {
        Waker {
            fd: self.wake_fd.clone(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<()> {
        self.flush_sends();
        for (conn, reason) in std::mem::take(&mut self.closed) {
            on_event(Event::Closed { conn, reason });
        }
        let ms = match timeout {
            None => -1,
            Some(t) => i32::try_from(t.as_millis() + u128::from(t.subsec_nanos() % 1_000_000 != 0))
                .unwrap_or(i32::MAX),
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: the array outlives the call and its length is passed.
        let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), events.as_mut_ptr(), 64, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for ev in &events[..usize::try_from(n).unwrap_or(0)] {
            let (tag, flags) = (ev.u64, ev.events);
            match tag >> 62 {
                _ if tag == TAG_WAKE => {
                    let mut b = [0u8; 8];
                    // SAFETY: reading 8 bytes into a live buffer from our eventfd.
                    unsafe { libc::read(self.wake_fd.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
                    on_event(Event::Woken);
                }
                2 => self.read_udp((tag & 0xffff_ffff) as u32, on_event),
                3 => self.accept((tag & 0xffff_ffff) as u32, on_event),
                _ => {
                    let id = ConnId {
                        index: (tag & 0xffff_ffff) as u32,
                        generation: (tag >> 32) as u32,
                    };
                    self.conn_ready(id, flags, on_event);
                }
            }
        }
        for (conn, reason) in std::mem::take(&mut self.closed) {
            on_event(Event::Closed { conn, reason });
        }
        Ok(())
    }

    /// Reads a readable UDP socket's datagrams, a batch per call, until its
    /// queue is empty or it has had its turn's share.
    fn read_udp(&mut self, idx: u32, on_event: &mut dyn FnMut(Event<'_>)) {
        let Some(fd) = self
            .udp
            .get(idx as usize)
            .and_then(Option::as_ref)
            .map(AsRawFd::as_raw_fd)
        else {
            return;
        };
        let mut left = self.recv_budget;
        while left > 0 {
            let want = left.min(self.recv.capacity());
            let got = match self.recv.recv(fd, want) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Empty (EAGAIN), or an error the socket reported: the
                // next turn reads on if it is still readable.
                Err(_) => return,
            };
            for d in self.recv.received() {
                match d {
                    Received::Datagram { from, data } => {
                        self.stats.datagrams_in += 1;
                        on_event(Event::Datagram {
                            socket: SocketId(idx),
                            from,
                            data,
                        });
                    }
                    Received::Truncated => self.stats.datagrams_truncated += 1,
                    Received::Unaddressed => {}
                }
            }
            if got < want {
                return;
            }
            left -= got;
        }
    }

    fn accept(&mut self, idx: u32, on_event: &mut dyn FnMut(Event<'_>)) {
        loop {
            let Some(l) = self.listeners.get(idx as usize) else {
                return;
            };
            let (stream, peer) = match l.accept() {
                Ok(x) => x,
                Err(_) => return,
            };
            self.stats.accepted += 1;
            if self.conns.len() >= self.max_connections || stream.set_nonblocking(true).is_err() {
                self.stats.refused_connections += 1;
                continue;
            }
            let _ = stream.set_nodelay(true);
            let fd = stream.as_raw_fd();
            let id = self.conns.insert(Conn {
                stream,
                peer,
                connecting: false,
                out: VecDeque::new(),
                out_offset: 0,
                want_write: false,
            });
            if self.register_conn(id, fd, false).is_err() {
                self.conns.remove(id);
                continue;
            }
            self.stats.open_connections = self.conns.len() as u64;
            on_event(Event::Accepted {
                listener: SocketId(idx | LISTENER_BIT),
                conn: id,
                peer,
            });
        }
    }

    fn conn_ready(&mut self, id: ConnId, flags: u32, on_event: &mut dyn FnMut(Event<'_>)) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if c.connecting && flags & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
            match c.stream.take_error() {
                Ok(None) if flags & libc::EPOLLERR as u32 == 0 => {
                    c.connecting = false;
                    let peer = c.peer;
                    on_event(Event::Connected { conn: id, peer });
                    self.flush(id);
                }
                Ok(Some(e)) | Err(e) => {
                    self.drop_conn(
                        id,
                        CloseReason::Error(e.raw_os_error().unwrap_or(libc::ECONNREFUSED)),
                    );
                    return;
                }
                Ok(None) => {
                    self.drop_conn(id, CloseReason::Error(libc::ECONNREFUSED));
                    return;
                }
            }
        } else if flags & libc::EPOLLOUT as u32 != 0 {
            self.flush(id);
        }
        if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
            loop {
                let Some(c) = self.conns.get_mut(id) else {
                    return;
                };
                let buf = self.recv.stream_buffer();
                match c.stream.read(buf) {
                    Ok(0) => {
                        self.drop_conn(id, CloseReason::PeerClosed);
                        return;
                    }
                    Ok(n) => on_event(Event::Data {
                        conn: id,
                        data: &buf[..n],
                    }),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.drop_conn(
                            id,
                            CloseReason::Error(e.raw_os_error().unwrap_or(libc::EIO)),
                        );
                        return;
                    }
                }
            }
        }
    }
}

impl Drop for EpollReactor {
    /// Datagrams queued since the last poll still go out, as they did
    /// when this backend sent each at once.
    fn drop(&mut self) {
        self.flush_sends();
    }
}
