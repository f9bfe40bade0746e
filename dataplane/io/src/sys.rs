//! Small syscall helpers shared by both backends: socket addresses in C
//! form, eventfds, and connection bookkeeping.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Reads a socket address the kernel wrote.
pub(crate) fn from_sockaddr(storage: &libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(std::ptr::from_ref(storage).cast::<libc::sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>()) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Reads a socket address from raw bytes (a recvmsg name area).
pub(crate) fn from_sockaddr_bytes(bytes: &[u8]) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; zeroed is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = bytes.len().min(size_of::<libc::sockaddr_storage>());
    // SAFETY: copying n <= size_of(storage) bytes into it.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut storage).cast::<u8>(), n);
    }
    from_sockaddr(&storage, n)
}

/// Writes `addr` in C form; returns the length used.
pub(crate) fn to_sockaddr(
    addr: &SocketAddr,
    storage: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    // SAFETY: zeroed is a valid sockaddr_storage.
    *storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: storage is large and aligned enough for a sockaddr_in.
            let s = unsafe { &mut *(std::ptr::from_mut(storage).cast::<libc::sockaddr_in>()) };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = a.port().to_be();
            s.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: storage is large and aligned enough for a sockaddr_in6.
            let s = unsafe { &mut *(std::ptr::from_mut(storage).cast::<libc::sockaddr_in6>()) };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = a.port().to_be();
            s.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            s.sin6_flowinfo = a.flowinfo();
            s.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A slab of connections addressed by `ConnId` (index + generation).
pub(crate) struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    live: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn insert(&mut self, v: T) -> crate::ConnId {
        self.live += 1;
        if let Some(i) = self.free.pop() {
            let slot = &mut self.slots[i as usize];
            slot.0 = slot.0.wrapping_add(1) & 0x00ff_ffff;
            slot.1 = Some(v);
            return crate::ConnId {
                index: i,
                generation: slot.0,
            };
        }
        let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push((0, Some(v)));
        crate::ConnId {
            index: i,
            generation: 0,
        }
    }

    pub(crate) fn get_mut(&mut self, id: crate::ConnId) -> Option<&mut T> {
        match self.slots.get_mut(id.index as usize) {
            Some((g, Some(v))) if *g == id.generation => Some(v),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, id: crate::ConnId) -> Option<T> {
        match self.slots.get_mut(id.index as usize) {
            Some((g, v @ Some(_))) if *g == id.generation => {
                self.free.push(id.index);
                self.live -= 1;
                v.take()
            }
            _ => None,
        }
    }
}

/// Sets an int-valued socket option.
pub(crate) fn set_int_option(
    socket: &impl AsRawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt with a live fd and a correctly sized int.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            opt,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Most datagrams [`discard_queued`] drops in one call: about what a
/// media socket's receive buffer holds. A flood that goes on refills the
/// buffer as it is drained; the rest is read, or paused again, as usual.
const MAX_DISCARD: u32 = 2_048;

/// Drops what waits in a UDP socket's receive buffer, without blocking;
/// returns how many datagrams it dropped.
pub(crate) fn discard_queued(socket: &impl AsRawFd) -> u32 {
    let mut scratch = [0u8; 16];
    let mut n = 0;
    while n < MAX_DISCARD {
        // SAFETY: a receive into a live stack buffer of the given length
        // on a socket we own; MSG_TRUNC only reports the datagram's size.
        let got = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                scratch.as_mut_ptr().cast(),
                scratch.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if got < 0 {
            break;
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:5060", "[::1]:5070", "[2001:db8::5%3]:1"] {
            let addr: SocketAddr = a.parse().unwrap();
            // SAFETY: zeroed storage is valid.
            let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let len = to_sockaddr(&addr, &mut s);
            assert_eq!(from_sockaddr(&s, len as usize), Some(addr), "{a}");
        }
    }

    #[test]
    fn slab_generations() {
        let mut s = Slab::new();
        let a = s.insert(1);
        assert_eq!(s.remove(a), Some(1));
        let b = s.insert(2);
        assert_eq!(a.index, b.index);
        assert_ne!(a.generation, b.generation);
        assert!(
            s.get_mut(a).is_none(),
            "a stale id does not reach the new occupant"
        );
        assert_eq!(s.get_mut(b), Some(&mut 2));
        assert_eq!(s.len(), 1);
    }
}
