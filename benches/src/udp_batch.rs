//! Batched UDP for the media load generator: `sendmmsg` with a per-message
//! source address (`IP_PKTINFO`), and `recvmmsg` with the kernel's arrival
//! time (`SO_TIMESTAMPNS`) and the address each datagram was sent to.
//!
//! This lets a few sockets bound to `0.0.0.0` carry thousands of legs that
//! each have an address of their own on loopback (`127.x.y.z`, all of
//! `127.0.0.0/8` is local): a relay sees every leg as a distinct source,
//! as it would see distinct phones, while the generator pays one syscall
//! per batch instead of one per packet. The kernel's receive timestamp is
//! when the relay's datagram reached the generator's socket, so latency
//! does not include how long the generator took to read it.

#![allow(unsafe_code)] // FFI to sendmmsg/recvmmsg and socket options, each block justified.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams per `sendmmsg` / `recvmmsg`.
pub const BATCH: usize = 64;
/// Largest datagram sent.
pub const SEND_LEN: usize = 172;
/// Largest datagram received whole (longer ones are reported truncated).
pub const RECV_LEN: usize = 512;

/// Control space for one `in_pktinfo` (sending).
type SendCmsg = [u64; 4];
/// Control space for `in_pktinfo` and a `timespec` (receiving).
type RecvCmsg = [u64; 10];

fn setsockopt_int(sock: &UdpSocket, level: i32, opt: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt with a live fd and a correctly sized int.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            (&raw const value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A non-blocking UDP socket on `0.0.0.0:port` that reports each
/// datagram's destination address and kernel arrival time, with a receive
/// buffer of `rcvbuf` bytes (forced past `net.core.rmem_max` when the
/// process may; what was granted is returned beside the socket).
pub fn bind_any(port: u16, rcvbuf: usize) -> io::Result<(UdpSocket, usize)> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
    sock.set_nonblocking(true)?;
    setsockopt_int(&sock, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
    setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    let granted = codeb_io::set_recv_buffer(&sock, rcvbuf)?;
    Ok((sock, granted))
}

/// `sendmmsg` of up to [`BATCH`] datagrams on one socket, each from its own
/// source address.
pub struct SendBatch {
    names: [libc::sockaddr_in; BATCH],
    cmsgs: [SendCmsg; BATCH],
    iovs: [libc::iovec; BATCH],
    bufs: [[u8; SEND_LEN]; BATCH],
    lens: [usize; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
    len: usize,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").field("len", &self.len).finish()
    }
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: zeroed is a valid sockaddr_in; the fields are set below.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

impl SendBatch {
    pub fn new() -> Box<SendBatch> {
        // SAFETY: every field is plain C data or bytes, for which zero is
        // a valid value; pointers are set before each send.
        Box::new(unsafe { std::mem::zeroed() })
    }

    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a datagram from `from` (a local address, port is the
    /// socket's) to `to`; `fill` writes its bytes into the buffer and
    /// returns how many it wrote. Returns false when the batch is full.
    pub fn push(
        &mut self,
        from: Ipv4Addr,
        to: SocketAddrV4,
        fill: impl FnOnce(&mut [u8; SEND_LEN]) -> usize,
    ) -> bool {
        let i = self.len;
        if i == BATCH {
            return false;
        }
        self.names[i] = sockaddr_in(to);
        self.lens[i] = fill(&mut self.bufs[i]).min(SEND_LEN);
        self.cmsgs[i] = [0; 4];
        let cmsg_len = space(size_of::<libc::in_pktinfo>());
        // SAFETY: the control buffer is 32 bytes, 8-aligned, which holds a
        // cmsghdr (16) and an in_pktinfo (12); the header and data are
        // written within it.
        unsafe {
            let h = self.cmsgs[i].as_mut_ptr().cast::<libc::cmsghdr>();
            (*h).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
            (*h).cmsg_level = libc::IPPROTO_IP;
            (*h).cmsg_type = libc::IP_PKTINFO;
            let info = libc::CMSG_DATA(h).cast::<libc::in_pktinfo>();
            info.write_unaligned(libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(from).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            });
        }
        debug_assert!(cmsg_len <= size_of::<SendCmsg>());
        self.len += 1;
        true
    }

    /// Sends the batch on `sock` and empties it: (datagrams the kernel
    /// took, datagrams refused with an error). A full send buffer
    /// (`EAGAIN`) is waited out with `poll`, so nothing is silently left
    /// behind.
    pub fn send(&mut self, sock: &UdpSocket) -> (usize, usize) {
        let n = self.len;
        let cmsg_len = space(size_of::<libc::in_pktinfo>());
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
            self.hdrs[i] = mmsghdr(
                &mut self.names[i],
                &mut self.iovs[i],
                self.cmsgs[i].as_mut_ptr().cast(),
                cmsg_len,
            );
        }
        let (mut done, mut failed) = (0usize, 0usize);
        while done + failed < n {
            let at = done + failed;
            // SAFETY: hdrs[at..n] are initialised above and point at live
            // buffers in `self`.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs[at..].as_mut_ptr(),
                    (n - at) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                done += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => wait_writable(sock),
                Some(libc::EINTR) => {}
                // The first datagram failed (e.g. ECONNREFUSED from an
                // ICMP error of an earlier one): skip it, send the rest.
                _ => failed += 1,
            }
        }
        self.len = 0;
        (done, failed)
    }
}

/// One `mmsghdr` for `sendmmsg`/`recvmmsg` over a batch's slots: an IPv4
/// name, one iovec and `cmsg_len` bytes of control space. The pointers
/// are into the batch, which is boxed and does not move during the call.
fn mmsghdr(
    name: &mut libc::sockaddr_in,
    iov: &mut libc::iovec,
    cmsg: *mut libc::c_void,
    cmsg_len: usize,
) -> libc::mmsghdr {
    // SAFETY: an all-zero msghdr is valid; every pointer is set below.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_name = (name as *mut libc::sockaddr_in).cast();
    h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    h.msg_iov = iov;
    h.msg_iovlen = 1;
    h.msg_control = cmsg;
    h.msg_controllen = cmsg_len as _;
    libc::mmsghdr {
        msg_hdr: h,
        msg_len: 0,
    }
}

fn wait_writable(sock: &UdpSocket) {
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    unsafe {
        libc::poll(&raw mut p, 1, 10);
    }
}

fn space(len: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic.
    unsafe { libc::CMSG_SPACE(len as u32) as usize }
}

/// One datagram of a [`RecvBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub data: &'a [u8],
    pub from: Option<SocketAddrV4>,
    /// The address it was sent to (which of the socket's legs).
    pub to: Option<Ipv4Addr>,
    /// When the kernel queued it on the socket, ns of `CLOCK_REALTIME`.
    pub kernel_ns: Option<u64>,
    pub truncated: bool,
}

/// `recvmmsg` of up to [`BATCH`] datagrams.
pub struct RecvBatch {
    names: [libc::sockaddr_in; BATCH],
    cmsgs: [RecvCmsg; BATCH],
    iovs: [libc::iovec; BATCH],
    bufs: [[u8; RECV_LEN]; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
    len: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("len", &self.len).finish()
    }
}

impl RecvBatch {
    pub fn new() -> Box<RecvBatch> {
        // SAFETY: plain C data and bytes; zero is valid for all of it.
        Box::new(unsafe { std::mem::zeroed() })
    }

    /// Reads what is queued on `sock`, up to [`BATCH`] datagrams, without
    /// waiting; returns how many (0 when nothing was queued).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: RECV_LEN,
            };
            self.hdrs[i] = mmsghdr(
                &mut self.names[i],
                &mut self.iovs[i],
                self.cmsgs[i].as_mut_ptr().cast(),
                size_of::<RecvCmsg>(),
            );
        }
        self.len = 0;
        // SAFETY: BATCH initialised headers pointing at live buffers.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                // An ICMP error queued by an earlier send: not a datagram.
                Some(libc::ECONNREFUSED) => Ok(0),
                _ => Err(e),
            };
        }
        self.len = (r as usize).min(BATCH);
        Ok(self.len)
    }

    /// The `i`th datagram of the last [`Self::recv`].
    pub fn get(&self, i: usize) -> Option<Received<'_>> {
        if i >= self.len {
            return None;
        }
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(RECV_LEN);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let name = &self.names[i];
        let from = (i32::from(name.sin_family) == libc::AF_INET
            && h.msg_hdr.msg_namelen as usize >= size_of::<libc::sockaddr_in>())
        .then(|| {
            SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
                u16::from_be(name.sin_port),
            )
        });
        let (mut to, mut kernel_ns) = (None, None);
        // SAFETY: the kernel wrote msg_controllen bytes of well-formed
        // cmsgs into cmsgs[i]; the CMSG_* macros walk within that length,
        // and each payload is read unaligned with its documented type.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
            while !c.is_null() {
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let info = libc::CMSG_DATA(c)
                            .cast::<libc::in_pktinfo>()
                            .read_unaligned();
                        to = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                    }
                    (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                        let ts = libc::CMSG_DATA(c).cast::<libc::timespec>().read_unaligned();
                        kernel_ns = u64::try_from(ts.tv_sec)
                            .ok()
                            .zip(u64::try_from(ts.tv_nsec).ok())
                            .map(|(s, n)| s * 1_000_000_000 + n);
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
            }
        }
        Some(Received {
            data: &self.bufs[i][..len],
            from,
            to,
            kernel_ns,
            truncated,
        })
    }
}

/// `CLOCK_REALTIME` now, in ns (the clock of [`Received::kernel_ns`]).
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Drops on the UDP sockets bound to `ports` so far (the kernel's count of
/// datagrams that found a full receive buffer), from `/proc/net/udp`.
pub fn drops(ports: &[u16]) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let mut sum = 0u64;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(port) = f
            .get(1)
            .and_then(|local| local.rsplit(':').next())
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
        else {
            continue;
        };
        if ports.contains(&port) {
            sum += f.last().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_sources_on_one_socket() {
        let (a, _) = bind_any(0, 1 << 20).unwrap();
        let (b, _) = bind_any(0, 1 << 20).unwrap();
        let b_port = b.local_addr().unwrap().port();
        let a_port = a.local_addr().unwrap().port();
        let mut out = SendBatch::new();
        for i in 0..3u8 {
            assert!(out.push(
                Ipv4Addr::new(127, 1, 0, 1 + i),
                SocketAddrV4::new(Ipv4Addr::new(127, 2, 0, 1 + i), b_port),
                |buf| {
                    buf[0] = i;
                    10
                }
            ));
        }
        let before = realtime_ns();
        assert_eq!(out.send(&a), (3, 0));
        assert!(out.is_empty());
        let mut got = Vec::new();
        let mut inb = RecvBatch::new();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < 3 && std::time::Instant::now() < until {
            let n = inb.recv(&b).unwrap();
            for i in 0..n {
                let r = inb.get(i).unwrap();
                assert!(r.kernel_ns.unwrap() >= before);
                got.push((r.data[0], r.data.len(), r.from.unwrap(), r.to.unwrap()));
            }
        }
        got.sort();
        for (i, (tag, len, from, to)) in got.into_iter().enumerate() {
            let i = i as u8;
            assert_eq!((tag, len), (i, 10));
            assert_eq!(
                from,
                SocketAddrV4::new(Ipv4Addr::new(127, 1, 0, 1 + i), a_port)
            );
            assert_eq!(to, Ipv4Addr::new(127, 2, 0, 1 + i));
        }
    }
}
