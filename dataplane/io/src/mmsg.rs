//! Batched datagram syscalls for the epoll backend. [`RecvBatch`] reads up
//! to a batch of datagrams with one `recvmmsg` into buffers allocated once;
//! [`SendQueue`] copies datagrams into an arena allocated once and sends
//! them with one `sendmmsg` per socket, each socket's in the order queued.
//!
//! Headers are filled just before each call from the current addresses of
//! the buffers they point at, so nothing here points into itself between
//! calls.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::sys::{from_sockaddr, to_sockaddr};

/// Datagrams one `recvmmsg` asks for at most.
pub(crate) const RECV_BATCH: usize = 32;

/// Datagrams a [`SendQueue`] holds before it is flushed.
pub(crate) const SEND_QUEUE: usize = 64;

/// Bytes a [`SendQueue`] holds before it is flushed: a full queue of
/// MTU-sized datagrams fits. A larger datagram still goes, alone.
const SEND_ARENA: usize = 128 * 1024;

const EMPTY_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// A header with no buffers; filled in before each call.
fn empty_header() -> libc::mmsghdr {
    // SAFETY: all-zero bytes are a valid mmsghdr (null pointers, zero
    // lengths); msghdr has private padding fields on some targets, so it
    // cannot be spelled out.
    unsafe { std::mem::zeroed() }
}

/// One datagram of a batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received<'a> {
    Datagram {
        from: SocketAddr,
        data: &'a [u8],
    },
    /// Larger than a buffer: the kernel kept only its head, so it is
    /// dropped whole.
    Truncated,
    /// From an address that is neither IPv4 nor IPv6 (never, on the
    /// sockets a reactor takes).
    Unaddressed,
}

/// Receive buffers and the headers `recvmmsg` fills.
pub(crate) struct RecvBatch {
    buf_len: usize,
    /// `hdrs.len()` buffers of `buf_len` bytes, one after the other.
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// How many of them the last [`Self::recv`] filled.
    filled: usize,
}

impl RecvBatch {
    /// `batch` buffers (at least one) of `buf_len` bytes.
    pub(crate) fn new(batch: usize, buf_len: usize) -> RecvBatch {
        let batch = batch.max(1);
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        RecvBatch {
            buf_len,
            bufs: vec![0; batch * buf_len],
            names: vec![name; batch],
            iovs: vec![EMPTY_IOVEC; batch],
            hdrs: vec![empty_header(); batch],
            filled: 0,
        }
    }

    /// Datagrams one [`Self::recv`] can take.
    pub(crate) fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// The first buffer, for a stream read (which overwrites what the
    /// last [`Self::recv`] read).
    pub(crate) fn stream_buffer(&mut self) -> &mut [u8] {
        self.filled = 0;
        &mut self.bufs[..self.buf_len]
    }

    /// Reads up to `want` (at most [`Self::capacity`]) datagrams queued on
    /// `fd` without blocking: how many, at least one, or the error
    /// (`WouldBlock` when none is queued). Fewer than `want` means the
    /// queue is empty (or an error stopped the batch, which the next read
    /// reports).
    pub(crate) fn recv(&mut self, fd: RawFd, want: usize) -> io::Result<usize> {
        self.filled = 0;
        let want = want.clamp(1, self.hdrs.len());
        let bufs = self.bufs.as_mut_ptr();
        for (i, iov) in self.iovs[..want].iter_mut().enumerate() {
            *iov = libc::iovec {
                iov_base: bufs.wrapping_add(i * self.buf_len).cast(),
                iov_len: self.buf_len,
            };
        }
        let (names, iovs) = (self.names.as_mut_ptr(), self.iovs.as_mut_ptr());
        for (i, h) in self.hdrs[..want].iter_mut().enumerate() {
            h.msg_hdr.msg_name = names.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovs.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: the first `want` headers (no more than the vector holds)
        // point at this batch's buffers, iovecs and name areas, live and
        // sized as stated and not touched until the call returns; a null
        // timeout is allowed. MSG_TRUNC makes `msg_len` the datagram's
        // full length, which is how an oversize one shows.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.filled = usize::try_from(n).unwrap_or(0).min(want);
        Ok(self.filled)
    }

    /// What the last [`Self::recv`] read, in arrival order.
    pub(crate) fn received(&self) -> impl Iterator<Item = Received<'_>> {
        let filled = &self.hdrs[..self.filled];
        filled
            .iter()
            .zip(&self.names)
            .enumerate()
            .map(|(i, (h, name))| {
                let len = h.msg_len as usize;
                if len > self.buf_len || h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    return Received::Truncated;
                }
                match from_sockaddr(name, h.msg_hdr.msg_namelen as usize) {
                    Some(from) => Received::Datagram {
                        from,
                        data: &self.bufs[i * self.buf_len..][..len],
                    },
                    None => Received::Unaddressed,
                }
            })
    }
}

/// A queued datagram: its bytes are `arena[at..at + len]`.
struct Queued {
    socket: u32,
    at: usize,
    len: usize,
    addr: libc::sockaddr_storage,
    addr_len: libc::socklen_t,
}

/// Datagrams waiting for one `sendmmsg` per socket.
pub(crate) struct SendQueue {
    arena: Vec<u8>,
    queued: Vec<Queued>,
    /// Indices into `queued`, grouped by socket at a flush (kept to reuse
    /// the allocation).
    order: Vec<usize>,
    headers: SendHeaders,
}

/// What one `sendmmsg` reads: a header and an iovec per datagram.
struct SendHeaders {
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl SendQueue {
    pub(crate) fn new() -> SendQueue {
        SendQueue {
            arena: Vec::with_capacity(SEND_ARENA),
            queued: Vec::with_capacity(SEND_QUEUE),
            order: Vec::with_capacity(SEND_QUEUE),
            headers: SendHeaders {
                iovs: vec![EMPTY_IOVEC; SEND_QUEUE],
                hdrs: vec![empty_header(); SEND_QUEUE],
            },
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Whether a datagram of `len` bytes fits without a flush first.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.queued.len() < SEND_QUEUE
            && (self.queued.is_empty() || self.arena.len() + len <= SEND_ARENA)
    }

    /// Queues a copy of `data` for `to` on `socket`.
    pub(crate) fn push(&mut self, socket: u32, to: &SocketAddr, data: &[u8]) {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let addr_len = to_sockaddr(to, &mut addr);
        self.queued.push(Queued {
            socket,
            at: self.arena.len(),
            len: data.len(),
            addr,
            addr_len,
        });
        self.arena.extend_from_slice(data);
    }

    /// Sends everything queued, emptying the queue: each socket's
    /// datagrams in the order they were queued, in one `sendmmsg` unless
    /// the kernel refuses one. `fd_of` names a socket's descriptor.
    /// Returns how many were refused (or had no socket); each is dropped,
    /// as the network might drop it, and the rest still go.
    pub(crate) fn flush(&mut self, fd_of: impl Fn(u32) -> Option<RawFd>) -> u64 {
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(0..self.queued.len());
        // The index breaks every tie, so this sort (which allocates
        // nothing) keeps each socket's datagrams in queue order.
        order.sort_unstable_by_key(|&i| (self.queued[i].socket, i));
        let mut refused = 0;
        let (queued, arena) = (&self.queued, &self.arena);
        for run in order.chunk_by(|&a, &b| queued[a].socket == queued[b].socket) {
            match fd_of(queued[run[0]].socket) {
                Some(fd) => {
                    for chunk in run.chunks(self.headers.hdrs.len()) {
                        refused += self.headers.send(fd, chunk, queued, arena);
                    }
                }
                None => refused += run.len() as u64,
            }
        }
        self.order = order;
        self.queued.clear();
        self.arena.clear();
        refused
    }
}

impl SendHeaders {
    /// Sends the datagrams of `queued` that `run` names (at most
    /// `hdrs.len()`) on `fd`; returns how many the kernel refused.
    fn send(&mut self, fd: RawFd, run: &[usize], queued: &[Queued], arena: &[u8]) -> u64 {
        let n = run.len().min(self.hdrs.len());
        let arena = arena.as_ptr();
        for (iov, &i) in self.iovs.iter_mut().zip(&run[..n]) {
            let q = &queued[i];
            *iov = libc::iovec {
                // The kernel only reads through it.
                iov_base: arena.wrapping_add(q.at).cast_mut().cast(),
                iov_len: q.len,
            };
        }
        let iovs = self.iovs.as_mut_ptr();
        for (k, (h, &i)) in self.hdrs.iter_mut().zip(&run[..n]).enumerate() {
            let q = &queued[i];
            h.msg_hdr.msg_name = (&raw const q.addr).cast_mut().cast();
            h.msg_hdr.msg_namelen = q.addr_len;
            h.msg_hdr.msg_iov = iovs.wrapping_add(k);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let (mut at, mut refused) = (0, 0);
        while at < n {
            // SAFETY: headers `at..n` lie within the vector and point at
            // its iovecs and at the arena's bytes and queued addresses,
            // all borrowed (so live and unchanged) for this whole call and
            // sized as stated; the kernel reads them and writes only
            // `msg_len`.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().wrapping_add(at),
                    (n - at) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent > 0 {
                at += usize::try_from(sent).unwrap_or(1);
                continue;
            }
            // sendmmsg stops at the first datagram the kernel refuses and
            // reports its error only when that one comes first, as now.
            let e = if sent == 0 {
                io::Error::from(io::ErrorKind::WriteZero)
            } else {
                io::Error::last_os_error()
            };
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // UDP is lossy by contract; a full buffer loses this datagram
            // exactly as the network might, and retransmission covers it.
            refused += 1;
            if e.kind() != io::ErrorKind::WouldBlock {
                let q = &queued[run[at]];
                let to = from_sockaddr(&q.addr, q.addr_len as usize);
                tracing::debug!(error = %e, ?to, "UDP send failed");
            }
            at += 1;
        }
        refused
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd as _;
    use std::time::Duration;

    use super::*;

    fn bind() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    #[test]
    fn one_recv_takes_what_is_queued_up_to_the_batch() {
        let (sock, peer) = (bind(), bind());
        let to = sock.local_addr().unwrap();
        for i in 0..5u8 {
            peer.send_to(&[i; 3], to).unwrap();
        }
        let mut batch = RecvBatch::new(4, 16);
        // A full batch, then the one left over: a short batch, so the
        // caller knows the queue is empty without another call.
        assert_eq!(batch.recv(sock.as_raw_fd(), 4).unwrap(), 4);
        let from = peer.local_addr().unwrap();
        let got: Vec<_> = batch.received().collect();
        assert_eq!(got.len(), 4);
        for (i, d) in got.into_iter().enumerate() {
            assert_eq!(
                d,
                Received::Datagram {
                    from,
                    data: &[i as u8; 3]
                }
            );
        }
        assert_eq!(batch.recv(sock.as_raw_fd(), 4).unwrap(), 1);
        let err = batch.recv(sock.as_raw_fd(), 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(batch.received().count(), 0, "a failed read leaves nothing");
    }

    #[test]
    fn a_datagram_longer_than_its_buffer_is_truncated_and_one_that_fits_is_not() {
        let (sock, peer) = (bind(), bind());
        let to = sock.local_addr().unwrap();
        peer.send_to(&[1; 16], to).unwrap();
        peer.send_to(&[2; 17], to).unwrap();
        peer.send_to(&[3; 0], to).unwrap();
        let mut batch = RecvBatch::new(8, 16);
        assert_eq!(batch.recv(sock.as_raw_fd(), 8).unwrap(), 3);
        let from = peer.local_addr().unwrap();
        let got: Vec<_> = batch.received().collect();
        assert_eq!(
            got,
            [
                Received::Datagram {
                    from,
                    data: &[1; 16]
                },
                Received::Truncated,
                Received::Datagram { from, data: &[] },
            ]
        );
    }

    #[test]
    fn a_flush_sends_each_sockets_datagrams_in_order_and_counts_refusals() {
        let (a, b, peer) = (bind(), bind(), bind());
        peer.set_nonblocking(false).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let to = peer.local_addr().unwrap();
        let port0: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut q = SendQueue::new();
        q.push(0, &to, b"a0");
        q.push(1, &to, b"b0");
        q.push(0, &port0, b"refused");
        q.push(0, &to, b"a1");
        q.push(1, &to, b"b1");
        q.push(2, &to, b"no socket");
        let fd_of = |s: u32| match s {
            0 => Some(a.as_raw_fd()),
            1 => Some(b.as_raw_fd()),
            _ => None,
        };
        assert_eq!(q.flush(fd_of), 2);
        assert!(q.is_empty());
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        for _ in 0..4 {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            got.push((from, buf[..n].to_vec()));
        }
        let (a, b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // Grouped by socket, each socket's in queue order.
        assert_eq!(
            got,
            [
                (a, b"a0".to_vec()),
                (a, b"a1".to_vec()),
                (b, b"b0".to_vec()),
                (b, b"b1".to_vec()),
            ]
        );
    }

    #[test]
    fn the_queue_is_full_at_its_count_or_its_bytes() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut q = SendQueue::new();
        assert!(q.has_room(SEND_ARENA * 2), "an empty queue takes anything");
        q.push(0, &to, &[0; 100]);
        assert!(q.has_room(SEND_ARENA - 100));
        assert!(!q.has_room(SEND_ARENA - 99));
        for _ in 1..SEND_QUEUE {
            q.push(0, &to, &[0; 1]);
        }
        assert!(!q.has_room(0));
    }
}
