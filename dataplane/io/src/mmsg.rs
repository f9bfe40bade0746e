//! Batched datagram syscalls for the epoll backend. [`RecvBatch`] reads up
//! to a batch of datagrams with one `recvmmsg` into buffers allocated once.
//!
//! Headers are filled just before each call from the current addresses of
//! the buffers they point at, so nothing here points into itself between
//! calls.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::sys::from_sockaddr;

/// Datagrams one `recvmmsg` asks for at most.
pub(crate) const RECV_BATCH: usize = 32;

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

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd as _;

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
}
