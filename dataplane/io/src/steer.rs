//! RTP port steering: the datagrams of many UDP ports received through
//! one socket.
//!
//! A media worker holds two sockets per call leg (RTP, RTCP), each on its
//! own port, because that is what SDP names. Received one socket at a
//! time, every datagram costs the kernel a wake-up of that socket's
//! receive, a receive and an empty retry; received through one socket, a
//! single multishot receive drains the lot (benches/README.md, "One
//! socket receives for every port").
//!
//! The kernel's socket lookup can be steered by a BPF program attached to
//! the network namespace (`BPF_PROG_TYPE_SK_LOOKUP`, Linux 5.9+): for a
//! UDP datagram to one of *our* ports on our address, the program picks
//! the worker's receive socket from a map; for anything else it does
//! nothing and the usual lookup runs. The map is keyed by port (offset in
//! the worker's range) and holds only the ports whose sockets the worker
//! has added, so a port in the range bound by another process is never
//! taken from it. Each leg socket stays bound (it owns its port and sends
//! from it); it simply receives nothing. The original destination port
//! comes with each datagram (`IP_ORIGDSTADDR`).
//!
//! The program is 25 instructions assembled here (no compiler, no BPF
//! crate). It needs `CAP_BPF` and `CAP_NET_ADMIN` (or root); where it
//! cannot be loaded, the caller is told why and each port's socket
//! receives for itself, as before. The program lives as long as this
//! process holds its link: it is detached when the reactor is dropped or
//! the process dies.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_SOCKMAP: u32 = 15;
const BPF_PROG_TYPE_SK_LOOKUP: u32 = 30;
const BPF_SK_LOOKUP: u32 = 36;
const BPF_ANY: u64 = 0;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const FUNC_SK_RELEASE: i32 = 86;
const FUNC_SK_ASSIGN: i32 = 124;
const SK_PASS: i32 = 1;

/// `struct bpf_sk_lookup` field offsets (include/uapi/linux/bpf.h).
const CTX_FAMILY: i16 = 8;
const CTX_PROTOCOL: i16 = 12;
const CTX_LOCAL_IP4: i16 = 40;
const CTX_LOCAL_PORT: i16 = 60;

/// Where each port's datagrams are steered, and the means to change it.
pub(crate) struct PortSteer {
    first: u16,
    last: u16,
    /// Our address's ports only (None: the socket is on the unspecified
    /// address, so every local address).
    ip: Option<Ipv4Addr>,
    /// The socket every steered datagram arrives on.
    pub(crate) socket: UdpSocket,
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    /// Per port (offset from `first`): the reactor's id of the socket
    /// that owns it, or `NONE`.
    owners: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl PortSteer {
    /// Loads and attaches the program for `ports` on `ip` (IPv4 only).
    pub(crate) fn new(ip: IpAddr, ports: RangeInclusive<u16>) -> io::Result<PortSteer> {
        let IpAddr::V4(ip) = ip else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "port steering is IPv4 only",
            ));
        };
        let (first, last) = (*ports.start(), *ports.end());
        if first > last {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty port range",
            ));
        }
        let ip = (!ip.is_unspecified()).then_some(ip);
        let entries = u32::from(last - first) + 1;
        let map = map_create(entries)?;
        let prog = prog_load(&program(map.as_raw_fd(), ip, first, last))?;
        let link = link_netns(&prog)?;
        let socket = UdpSocket::bind(SocketAddr::new(
            IpAddr::V4(ip.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            0,
        ))?;
        socket.set_nonblocking(true)?;
        crate::sys::set_int_option(&socket, libc::IPPROTO_IP, libc::IP_RECVORIGDSTADDR, 1)?;
        Ok(PortSteer {
            first,
            last,
            ip,
            socket,
            map,
            _prog: prog,
            _link: link,
            owners: vec![NONE; entries as usize],
        })
    }

    /// Whether a socket bound to `addr` belongs to the steered set.
    pub(crate) fn covers(&self, addr: SocketAddr) -> bool {
        match addr {
            SocketAddr::V4(a) => {
                (self.first..=self.last).contains(&a.port())
                    && self.ip.is_none_or(|ip| ip == *a.ip())
            }
            SocketAddr::V6(_) => false,
        }
    }

    /// Steers `port`'s datagrams to our socket, reported as `owner`'s.
    pub(crate) fn insert(&mut self, port: u16, owner: u32) -> io::Result<()> {
        let key = self.key(port)?;
        let value = u64::try_from(self.socket.as_raw_fd()).map_err(io::Error::other)?;
        let mut attr = Attr::new();
        attr.u32_at(0, self.map.as_raw_fd() as u32);
        attr.u64_at(8, (&raw const key) as u64);
        attr.u64_at(16, (&raw const value) as u64);
        attr.u64_at(24, BPF_ANY);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
        self.owners[key as usize] = owner;
        Ok(())
    }

    /// Stops steering `port` (its socket is closing).
    pub(crate) fn remove(&mut self, port: u16) {
        let Ok(key) = self.key(port) else {
            return;
        };
        self.owners[key as usize] = NONE;
        let mut attr = Attr::new();
        attr.u32_at(0, self.map.as_raw_fd() as u32);
        attr.u64_at(8, (&raw const key) as u64);
        if let Err(e) = bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            tracing::warn!(port, error = %e, "steered port not released");
        }
    }

    /// The owner of a steered datagram's destination port.
    pub(crate) fn owner(&self, port: u16) -> Option<u32> {
        let key = port.checked_sub(self.first)?;
        self.owners
            .get(usize::from(key))
            .copied()
            .filter(|&o| o != NONE)
    }

    fn key(&self, port: u16) -> io::Result<u32> {
        if !(self.first..=self.last).contains(&port) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "port outside the steered range",
            ));
        }
        Ok(u32::from(port - self.first))
    }
}

/// The destination port of a datagram, from its `IP_ORIGDSTADDR` control
/// message.
pub(crate) fn orig_dst_port(control: &[u8]) -> Option<u16> {
    let hdr = size_of::<libc::cmsghdr>();
    let mut at = 0usize;
    while control.len().checked_sub(at)? >= hdr {
        // SAFETY: `hdr` bytes are in bounds; read unaligned (the kernel
        // aligns them, the slice's start may not be).
        let c: libc::cmsghdr = unsafe { std::ptr::read_unaligned(control.as_ptr().add(at).cast()) };
        let len = c.cmsg_len;
        if len < hdr || len > control.len() - at {
            return None;
        }
        if c.cmsg_level == libc::IPPROTO_IP
            && c.cmsg_type == libc::IP_ORIGDSTADDR
            && len - hdr >= size_of::<libc::sockaddr_in>()
        {
            // SAFETY: the message holds a sockaddr_in, in bounds (checked).
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read_unaligned(control.as_ptr().add(at + hdr).cast()) };
            return Some(u16::from_be(sin.sin_port));
        }
        // Messages are padded to the word size.
        at = at.checked_add(len.next_multiple_of(size_of::<usize>()))?;
    }
    None
}

/// One BPF instruction, encoded.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from((src << 4) | (dst & 0x0f)) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

// Opcode parts (include/uapi/linux/bpf_common.h, bpf.h).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const STX_W: u8 = 0x63; // BPF_STX | BPF_MEM | BPF_W
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const SUB32_K: u8 = 0x14; // BPF_ALU | BPF_SUB | BPF_K
const JEQ64_K: u8 = 0x15;
const JNE32_K: u8 = 0x56; // BPF_JMP32 | BPF_JNE | BPF_K
const JLT32_K: u8 = 0xa6;
const JGT32_K: u8 = 0x26;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

/// The steering program: for an IPv4 UDP lookup of a port in
/// `first..=last` (on `ip`, if given), assign the socket the map holds
/// for that port, if any; always pass (no socket: the usual lookup).
fn program(map_fd: i32, ip: Option<Ipv4Addr>, first: u16, last: u16) -> Vec<u64> {
    // Jumps to the final "pass" are patched once its index is known.
    const PASS: i16 = i16::MIN;
    let mut p = vec![
        insn(MOV64_X, 6, 1, 0, 0),
        insn(LDX_W, 2, 6, CTX_FAMILY, 0),
        insn(JNE32_K, 2, 0, PASS, libc::AF_INET),
        insn(LDX_W, 2, 6, CTX_PROTOCOL, 0),
        insn(JNE32_K, 2, 0, PASS, libc::IPPROTO_UDP),
    ];
    if let Some(ip) = ip {
        // The context holds the address in network order: a 32-bit load
        // gives the octets as they lie in memory.
        p.push(insn(LDX_W, 2, 6, CTX_LOCAL_IP4, 0));
        p.push(insn(JNE32_K, 2, 0, PASS, i32::from_ne_bytes(ip.octets())));
    }
    p.extend([
        insn(LDX_W, 2, 6, CTX_LOCAL_PORT, 0),
        insn(JLT32_K, 2, 0, PASS, i32::from(first)),
        insn(JGT32_K, 2, 0, PASS, i32::from(last)),
        insn(SUB32_K, 2, 0, 0, i32::from(first)),
        insn(STX_W, 10, 2, -4, 0),
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_X, 2, 10, 0, 0),
        insn(ADD64_K, 2, 0, 0, -4),
        insn(CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM),
        insn(JEQ64_K, 0, 0, PASS, 0),
        insn(MOV64_X, 7, 0, 0, 0),
        insn(MOV64_X, 1, 6, 0, 0),
        insn(MOV64_X, 2, 7, 0, 0),
        insn(MOV64_K, 3, 0, 0, 0),
        // An error (another program chose first) leaves the choice as is.
        insn(CALL, 0, 0, 0, FUNC_SK_ASSIGN),
        insn(MOV64_X, 1, 7, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_SK_RELEASE),
    ]);
    let pass = p.len();
    p.extend([insn(MOV64_K, 0, 0, 0, SK_PASS), insn(EXIT, 0, 0, 0, 0)]);
    for (i, ins) in p.iter_mut().enumerate() {
        let jump = matches!(*ins & 0x07, 0x05 | 0x06); // BPF_JMP, BPF_JMP32
        if jump && (*ins >> 16) as u16 == PASS as u16 {
            let off = (pass - i - 1) as u16;
            *ins = (*ins & !(0xffff << 16)) | (u64::from(off) << 16);
        }
    }
    p
}

/// A `union bpf_attr`, zeroed, large enough for the commands used here
/// (the kernel takes a shorter one and treats the rest as zero).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32_at(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn u64_at(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
    fn name_at(&mut self, at: usize, name: &str) {
        let n = name.len().min(15);
        self.0[at..at + n].copy_from_slice(&name.as_bytes()[..n]);
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a live, zero-padded bpf_attr of the size given;
    // the pointers inside it point at live values for the call's length.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            attr.0.len() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i64) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn map_create(entries: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new();
    attr.u32_at(0, BPF_MAP_TYPE_SOCKMAP);
    attr.u32_at(4, 4); // key: the port's offset
    attr.u32_at(8, 8); // value: a socket (its fd on update)
    attr.u32_at(12, entries);
    attr.name_at(28, "codeb_rtp_ports");
    owned(bpf(BPF_MAP_CREATE, &mut attr)?)
}

fn prog_load(insns: &[u64]) -> io::Result<OwnedFd> {
    let mut log = vec![0u8; 16 * 1024];
    let license = c"Apache-2.0";
    let mut attr = Attr::new();
    attr.u32_at(0, BPF_PROG_TYPE_SK_LOOKUP);
    attr.u32_at(4, u32::try_from(insns.len()).map_err(io::Error::other)?);
    attr.u64_at(8, insns.as_ptr() as u64);
    attr.u64_at(16, license.as_ptr() as u64);
    attr.u32_at(24, 1); // log level: the verifier says why it refused
    attr.u32_at(28, log.len() as u32);
    attr.u64_at(32, log.as_mut_ptr() as u64);
    attr.name_at(48, "codeb_rtp_steer");
    attr.u32_at(68, BPF_SK_LOOKUP);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => owned(fd),
        Err(e) => {
            let text = String::from_utf8_lossy(&log);
            let last = text
                .trim_end_matches('\0')
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_owned();
            Err(io::Error::new(
                e.kind(),
                format!(
                    "BPF program refused: {e}{}{last}",
                    if last.is_empty() { "" } else { ": " }
                ),
            ))
        }
    }
}

/// Attaches the program to this process's network namespace.
fn link_netns(prog: &OwnedFd) -> io::Result<OwnedFd> {
    let ns = std::fs::File::open("/proc/self/ns/net")?;
    let mut attr = Attr::new();
    attr.u32_at(0, prog.as_raw_fd() as u32);
    attr.u32_at(4, ns.as_raw_fd() as u32);
    attr.u32_at(8, BPF_SK_LOOKUP);
    owned(bpf(BPF_LINK_CREATE, &mut attr)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        // r1 = *(u32 *)(r6 + 60): code 0x61, dst 1, src 6, off 60.
        assert_eq!(insn(LDX_W, 1, 6, 60, 0), 0x0000_0000_003c_6161);
        // if w2 != 17 goto +3 (JMP32): code 0x56, dst 2.
        assert_eq!(insn(JNE32_K, 2, 0, 3, 17), 0x0000_0011_0003_0256);
        // r2 += -4
        assert_eq!(insn(ADD64_K, 2, 0, 0, -4), 0xffff_fffc_0000_0207);
    }

    #[test]
    fn every_jump_lands_on_the_pass_at_the_end() {
        for ip in [None, Some(Ipv4Addr::LOCALHOST)] {
            let p = program(7, ip, 10_000, 10_999);
            let pass = p.len() - 2;
            let mut jumps = 0;
            for (i, ins) in p.iter().enumerate() {
                let code = (*ins & 0xff) as u8;
                if matches!(code, JNE32_K | JLT32_K | JGT32_K | JEQ64_K) {
                    let off = ((*ins >> 16) as u16) as i16;
                    assert_eq!(i as i64 + 1 + i64::from(off), pass as i64, "insn {i}");
                    jumps += 1;
                }
            }
            assert_eq!(jumps, if ip.is_some() { 6 } else { 5 });
            assert_eq!(p[pass], insn(MOV64_K, 0, 0, 0, SK_PASS));
        }
    }

    #[test]
    fn the_destination_port_is_read_from_its_control_message() {
        // SAFETY: plain old data, zeroed is valid.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = 40_006u16.to_be();
        let hdr = size_of::<libc::cmsghdr>();
        let msg = |level: i32, ty: i32, data: &[u8]| {
            // SAFETY: plain old data, zeroed is valid.
            let mut c: libc::cmsghdr = unsafe { std::mem::zeroed() };
            c.cmsg_len = hdr + data.len();
            c.cmsg_level = level;
            c.cmsg_type = ty;
            // SAFETY: viewing a live cmsghdr's bytes.
            let mut out =
                unsafe { std::slice::from_raw_parts((&raw const c).cast::<u8>(), hdr).to_vec() };
            out.extend_from_slice(data);
            out.resize(out.len().next_multiple_of(8), 0);
            out
        };
        // SAFETY: viewing a live sockaddr_in's bytes.
        let sin_bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const sin).cast::<u8>(),
                size_of::<libc::sockaddr_in>(),
            )
        };
        let mut control = msg(libc::SOL_SOCKET, libc::SO_TIMESTAMP, &[0; 16]);
        control.extend(msg(libc::IPPROTO_IP, libc::IP_ORIGDSTADDR, sin_bytes));
        assert_eq!(orig_dst_port(&control), Some(40_006));
        // Cut short, or a length past the end: nothing, no panic.
        assert_eq!(orig_dst_port(&control[..control.len() - 4]), None);
        assert_eq!(orig_dst_port(&[]), None);
        let mut bad = control.clone();
        bad[0] = 0xff;
        assert_eq!(orig_dst_port(&bad), None);
        let mut short = msg(libc::IPPROTO_IP, libc::IP_ORIGDSTADDR, &sin_bytes[..4]);
        short.extend_from_slice(&[0; 8]);
        assert_eq!(orig_dst_port(&short), None);
    }
}
