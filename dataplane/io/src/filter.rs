//! A kernel source filter on a UDP socket: a classic BPF socket filter
//! (`SO_ATTACH_FILTER`) that lets through only datagrams whose source IP
//! is one of a few. Once a call's far end is known, a stranger's
//! datagrams at its port are then dropped by the kernel before they reach
//! the socket's buffer: they cost no read, no wake-up and no parsing, and
//! a flood of them cannot fill the buffer and crowd out the far end's
//! audio (nor trip the flood pause, which stops reading the port).
//!
//! The program reads the source address relative to the network header
//! (`SKF_NET_OFF`), so it works whatever the socket's family: an IPv4
//! header's source is at byte 12, an IPv6 header's at byte 8 (16 bytes).
//! IPv4-mapped IPv6 addresses are matched as the IPv4 address they carry
//! (a dual-stack socket sees those datagrams with an IPv4 header).

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// The most source IPs one filter takes (the program stays far below
/// the kernel's 4,096 instructions and its jumps within 255).
pub const MAX_SOURCES: usize = 8;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD: u16 = 0x00;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const W: u16 = 0x00;
const B: u16 = 0x10;
const ABS: u16 = 0x20;
const RSH: u16 = 0x70;
const JEQ: u16 = 0x10;
const JA: u16 = 0x00;
const K: u16 = 0x00;
/// Offsets from here on are from the network header (`SKF_NET_OFF`).
const NET: i32 = -0x0010_0000;

/// Where a jump goes, before offsets are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Next,
    Accept,
    Reject,
    V6,
    /// The next IPv6 address's first instruction.
    NextIp,
}

#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u16,
    jt: To,
    jf: To,
    k: u32,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: To::Next,
        jf: To::Next,
        k,
    }
}

fn jump(k: u32, jt: To, jf: To) -> Insn {
    Insn {
        code: JMP | JEQ | K,
        jt,
        jf,
        k,
    }
}

fn load_net(code: u16, offset: i32) -> Insn {
    // The kernel reads k as a signed offset.
    stmt(LD | code | ABS, (NET + offset) as u32)
}

/// The filter program accepting datagrams from `sources` only, as
/// `(code, jt, jf, k)` instructions. Errors past [`MAX_SOURCES`].
pub fn program(sources: &[IpAddr]) -> io::Result<Vec<(u16, u8, u8, u32)>> {
    if sources.len() > MAX_SOURCES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_SOURCES} source IPs per filter"),
        ));
    }
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for ip in sources {
        match ip.to_canonical() {
            IpAddr::V4(a) => v4.push(u32::from(a)),
            IpAddr::V6(a) => v6.push(a.octets()),
        }
    }
    // A = the IP version; IPv4 sources, then IPv6 ones.
    let mut insns = vec![
        load_net(B, 0),
        stmt(ALU | RSH | K, 4),
        jump(4, To::Next, To::V6),
    ];
    for ip in &v4 {
        insns.push(load_net(W, 12));
        insns.push(jump(*ip, To::Accept, To::Next));
    }
    insns.push(stmt(JMP | JA, 0)); // to Reject, resolved below
    let v6_at = insns.len();
    insns.push(jump(6, To::Next, To::Reject));
    // Where each IPv6 address's comparison starts (the next one's start
    // is where a mismatch goes).
    let mut ip_starts = Vec::new();
    for ip in &v6 {
        ip_starts.push(insns.len());
        for word in 0..4 {
            let w = u32::from_be_bytes([
                ip[word * 4],
                ip[word * 4 + 1],
                ip[word * 4 + 2],
                ip[word * 4 + 3],
            ]);
            insns.push(load_net(W, 8 + 4 * word as i32));
            let last = word == 3;
            insns.push(jump(
                w,
                if last { To::Accept } else { To::Next },
                To::NextIp,
            ));
        }
    }
    let reject = insns.len();
    insns.push(stmt(RET | K, 0));
    let accept = insns.len();
    insns.push(stmt(RET | K, u32::MAX));
    let ja = v6_at - 1;
    insns[ja].k = (reject - ja - 1) as u32;
    let mut out = Vec::with_capacity(insns.len());
    for (pc, insn) in insns.iter().enumerate() {
        // The IPv6 address this instruction compares, if any: a mismatch
        // goes on to the next one's first instruction (or rejects).
        let next_ip = ip_starts
            .iter()
            .find(|&&s| s > pc)
            .copied()
            .unwrap_or(reject);
        let offset = |to: To| -> io::Result<u8> {
            let target = match to {
                To::Next => pc + 1,
                To::Accept => accept,
                To::Reject => reject,
                To::V6 => v6_at,
                To::NextIp => next_ip,
            };
            u8::try_from(target - pc - 1)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter too long"))
        };
        out.push((insn.code, offset(insn.jt)?, offset(insn.jf)?, insn.k));
    }
    Ok(out)
}

/// Lets through to `socket` only datagrams from `sources` (None: from
/// anywhere, the filter is removed). Replaces any filter set before.
pub fn filter_sources(socket: &impl AsRawFd, sources: Option<&[IpAddr]>) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let Some(sources) = sources else {
        let zero: libc::c_int = 0;
        // SAFETY: a live fd and an int option value.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_DETACH_FILTER,
                (&raw const zero).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // No filter attached: nothing to remove.
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(());
            }
            return Err(e);
        }
        return Ok(());
    };
    let mut insns: Vec<libc::sock_filter> = program(sources)?
        .into_iter()
        .map(|(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
        .collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(insns.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter too long"))?,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: a live fd; the kernel copies the program during the call,
    // while `insns` is alive.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Datagrams the kernel dropped at `socket` (its filter's, and those past
/// a full receive buffer): `SO_MEMINFO`'s `SK_MEMINFO_DROPS`.
pub fn socket_drops(socket: &impl AsRawFd) -> io::Result<u64> {
    /// `SK_MEMINFO_DROPS` (linux/sock_diag.h).
    const DROPS: usize = 8;
    let mut info = [0u32; 16];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: a live fd, and a buffer of `len` bytes the kernel fills.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < (DROPS + 1) * 4 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_MEMINFO without a drops count",
        ));
    }
    Ok(u64::from(info[DROPS]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on a packet's network header, as the kernel does
    /// for the instructions it uses: true if accepted.
    fn run(prog: &[(u16, u8, u8, u32)], net: &[u8]) -> bool {
        let mut a: u32 = 0;
        let mut pc = 0;
        loop {
            let (code, jt, jf, k) = prog[pc];
            pc += 1;
            match code {
                c if c == LD | W | ABS => {
                    let at = (k as i32 - NET) as usize;
                    a = u32::from_be_bytes(net[at..at + 4].try_into().unwrap());
                }
                c if c == LD | B | ABS => a = u32::from(net[(k as i32 - NET) as usize]),
                c if c == ALU | RSH | K => a >>= k,
                c if c == JMP | JEQ | K => {
                    pc += usize::from(if a == k { jt } else { jf });
                }
                c if c == JMP | JA => pc += k as usize,
                c if c == RET | K => return k != 0,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn v4_header(src: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[12..16].copy_from_slice(&src);
        h
    }

    fn v6_header(src: std::net::Ipv6Addr) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[8..24].copy_from_slice(&src.octets());
        h
    }

    #[test]
    fn only_the_listed_sources_pass() {
        let allowed: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::7".parse().unwrap(),
            "::ffff:198.51.100.1".parse().unwrap(),
            "2001:db8::8".parse().unwrap(),
        ];
        let p = program(&allowed).unwrap();
        assert!(run(&p, &v4_header([192, 0, 2, 10])));
        assert!(run(&p, &v4_header([198, 51, 100, 1])), "a mapped IPv4");
        assert!(!run(&p, &v4_header([192, 0, 2, 11])));
        assert!(run(&p, &v6_header("2001:db8::7".parse().unwrap())));
        assert!(run(&p, &v6_header("2001:db8::8".parse().unwrap())));
        // Differs in its last word only, or its first only.
        assert!(!run(&p, &v6_header("2001:db8::9".parse().unwrap())));
        assert!(!run(&p, &v6_header("2001:db9::7".parse().unwrap())));
        // Neither version 4 nor 6.
        let mut odd = v4_header([192, 0, 2, 10]);
        odd[0] = 0x55;
        assert!(!run(&p, &odd));
    }

    #[test]
    fn an_empty_list_passes_nothing_and_a_long_one_is_refused() {
        let p = program(&[]).unwrap();
        assert!(!run(&p, &v4_header([192, 0, 2, 10])));
        assert!(!run(&p, &v6_header("2001:db8::7".parse().unwrap())));
        let many: Vec<IpAddr> = (0..=MAX_SOURCES as u8)
            .map(|i| IpAddr::from([10, 0, 0, i]))
            .collect();
        assert!(program(&many).is_err());
        assert!(program(&many[..MAX_SOURCES]).is_ok());
    }
}
