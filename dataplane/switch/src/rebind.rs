//! Binding the switch's own listening addresses on a quick restart.
//!
//! A switch brought back at once (systemd `Restart=`, a container runtime)
//! can find its SIP or gRPC address still held by the process it replaces:
//! sockets registered with an io_uring ring are closed when the kernel
//! tears the ring down, in a work queue after the old process has exited,
//! not at its exit. So `EADDRINUSE` is retried for a short while before
//! the start fails with it.

use std::io;
use std::time::{Duration, Instant};

/// How long an address in use is waited for at start.
pub const WAIT: Duration = Duration::from_secs(5);
const STEP: Duration = Duration::from_millis(50);

/// `bind()`, retried while it fails with `AddrInUse` until `wait` has
/// passed; any other error, or the last `AddrInUse`, is returned.
pub fn bind_retrying<T>(
    what: &str,
    wait: Duration,
    mut bind: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let deadline = Instant::now() + wait;
    let mut logged = false;
    loop {
        match bind() {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !logged {
                    tracing::info!(%what, "address in use; waiting for a previous process's sockets to close");
                    logged = true;
                }
                std::thread::sleep(STEP);
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn an_address_freed_soon_is_bound_and_one_held_is_refused() {
        let held = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let t0 = Instant::now();
        let r = bind_retrying("test", Duration::from_millis(200), || UdpSocket::bind(addr));
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::AddrInUse);
        assert!(t0.elapsed() >= Duration::from_millis(200));
        let freer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(held);
        });
        let got = bind_retrying("test", Duration::from_secs(5), || UdpSocket::bind(addr)).unwrap();
        assert_eq!(got.local_addr().unwrap(), addr);
        freer.join().unwrap();
        // Other errors are not waited for.
        let t0 = Instant::now();
        let r = bind_retrying("test", Duration::from_secs(5), || {
            UdpSocket::bind("192.0.2.1:9")
        });
        assert!(r.is_err());
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
