//! Flood protection for a worker's media ports.
//!
//! Each datagram a worker reads costs it a receive and a pipeline step,
//! whoever sent it: strict source drops a stranger's packet, but only
//! after paying for it. A flood at one port (a DoS, or a runaway peer)
//! would so take the worker's core from every call it carries. A call
//! leg's port takes 50 packets a second (100 at 10 ms), and RTCP far
//! fewer: a port that receives more than `limit` datagrams within one
//! second is paused for [`PAUSE`] (its socket is not read, and the kernel
//! drops the flood at its full receive buffer for free), then read again.
//! Only the flooded leg loses audio meanwhile. The limit is far above any
//! stream (a burst after a network stall included): below it the worker
//! absorbs what strict source drops, so a stranger cannot mute a leg for
//! less than a flood.
//!
//! Counting is per loop turn's clock (`now` is passed in) and per socket
//! id: one slot index, one comparison and one add per datagram.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long a flooded port stays paused.
pub const PAUSE: Duration = Duration::from_secs(2);

/// The window a port's datagrams are counted over.
const WINDOW: Duration = Duration::from_secs(1);

/// Datagrams a second on one port past which it is paused, by default
/// (`CODEB_RTP_FLOOD_PPS`): 200 times a 20-ms stream's rate.
pub const DEFAULT_LIMIT: u32 = 10_000;

#[derive(Debug, Clone, Copy)]
struct Count {
    since: Option<Instant>,
    n: u32,
    paused: bool,
}

const FRESH: Count = Count {
    since: None,
    n: 0,
    paused: false,
};

/// Which sockets are flooded, and when each paused one is read again.
#[derive(Debug)]
pub(super) struct FloodGuard {
    /// Datagrams in a window past which a socket is paused (0: never).
    limit: u32,
    counts: Vec<Count>,
    /// Sockets to pause after this turn.
    flooded: Vec<u32>,
    /// Paused sockets by when they are read again.
    paused: BTreeSet<(Instant, u32)>,
    /// Sockets paused since the start.
    pub(super) pauses: u64,
}

impl FloodGuard {
    pub(super) fn new(limit: u32) -> FloodGuard {
        FloodGuard {
            limit,
            counts: Vec::new(),
            flooded: Vec::new(),
            paused: BTreeSet::new(),
            pauses: 0,
        }
    }

    /// A datagram arrived on `socket` (in the turn of `now`).
    #[inline]
    pub(super) fn datagram(&mut self, now: Instant, socket: u32) {
        if self.limit == 0 {
            return;
        }
        let i = socket as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, FRESH);
        }
        let c = &mut self.counts[i];
        match c.since {
            Some(t) if now.saturating_duration_since(t) < WINDOW => c.n = c.n.saturating_add(1),
            _ => {
                c.since = Some(now);
                c.n = 1;
            }
        }
        if c.n > self.limit && !c.paused {
            c.paused = true;
            self.flooded.push(socket);
        }
    }

    /// The sockets found flooded this turn, to pause now: each one the
    /// reactor paused is then [`Self::paused_at`], any other
    /// [`Self::forget`]-ed.
    pub(super) fn take_flooded(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.flooded)
    }

    /// `socket` was paused at `now`: it is read again at [`Self::due`]
    /// from `now` + [`PAUSE`].
    pub(super) fn paused_at(&mut self, now: Instant, socket: u32) {
        self.paused.insert((now + PAUSE, socket));
        self.pauses += 1;
    }

    /// The paused sockets whose pause is over, to read again; their
    /// counts start afresh.
    pub(super) fn due(&mut self, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(&(at, s)) = self.paused.first() {
            if at > now {
                break;
            }
            self.paused.pop_first();
            if let Some(c) = self.counts.get_mut(s as usize) {
                *c = FRESH;
            }
            out.push(s);
        }
        out
    }

    /// Nothing is flooded or paused (the worker's turn skips it).
    pub(super) fn idle(&self) -> bool {
        self.flooded.is_empty() && self.paused.is_empty()
    }

    /// When the next paused socket is to be read again.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.paused.first().map(|(at, _)| *at)
    }

    /// Sockets paused now.
    pub(super) fn paused(&self) -> usize {
        self.paused.len()
    }

    /// `socket` is closed (its id may be given to a new socket): it is
    /// forgotten, paused or not.
    pub(super) fn forget(&mut self, socket: u32) {
        if let Some(c) = self.counts.get_mut(socket as usize) {
            *c = FRESH;
        }
        self.paused.retain(|&(_, s)| s != socket);
        self.flooded.retain(|&s| s != socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// What the worker does: pauses every flooded socket at `now`.
    fn pause(g: &mut FloodGuard, now: Instant) -> Vec<u32> {
        let flooded = g.take_flooded();
        for &s in &flooded {
            g.paused_at(now, s);
        }
        flooded
    }

    #[test]
    fn a_socket_past_the_limit_in_a_second_is_paused_once_then_read_again() {
        let t0 = Instant::now();
        let mut g = FloodGuard::new(100);
        // A real stream (50 a second) and a burst of 100 in one turn, as
        // after a network stall: within the limit.
        for i in 0..50u64 {
            g.datagram(t0 + ms(i * 20), 3);
        }
        assert_eq!(pause(&mut g, t0).len(), 0);
        for _ in 0..100 {
            g.datagram(t0 + ms(1000), 3);
        }
        assert_eq!(pause(&mut g, t0 + ms(1000)).len(), 0);
        // 101 within one second: paused, once.
        for _ in 0..200 {
            g.datagram(t0 + ms(1500), 3);
            g.datagram(t0 + ms(1500), 4);
        }
        let now = t0 + ms(1500);
        let mut flooded = pause(&mut g, now);
        flooded.sort_unstable();
        assert_eq!(flooded, [3, 4]);
        assert_eq!((g.pauses, g.paused()), (2, 2));
        g.datagram(now, 3);
        assert_eq!(pause(&mut g, now).len(), 0, "already paused");
        assert_eq!(g.next_due(), Some(now + PAUSE));
        assert!(g.due(now + PAUSE - ms(1)).is_empty());
        let mut back = g.due(now + PAUSE);
        back.sort_unstable();
        assert_eq!(back, [3, 4]);
        assert_eq!((g.paused(), g.next_due()), (0, None));
        // Read again with a fresh count; a flood that goes on pauses it
        // again.
        let later = now + PAUSE;
        for _ in 0..100 {
            g.datagram(later, 3);
        }
        assert_eq!(pause(&mut g, later).len(), 0);
        g.datagram(later, 3);
        assert_eq!(pause(&mut g, later), [3]);
        assert_eq!(g.pauses, 3);
    }

    #[test]
    fn a_closed_socket_is_forgotten_and_a_zero_limit_never_pauses() {
        let t0 = Instant::now();
        let mut g = FloodGuard::new(10);
        for _ in 0..11 {
            g.datagram(t0, 7);
        }
        assert_eq!(pause(&mut g, t0), [7]);
        g.forget(7);
        assert_eq!(g.paused(), 0);
        assert!(g.due(t0 + PAUSE).is_empty());
        // A new socket with the id starts afresh.
        for _ in 0..10 {
            g.datagram(t0, 7);
        }
        assert_eq!(pause(&mut g, t0).len(), 0);

        let mut off = FloodGuard::new(0);
        for _ in 0..100_000 {
            off.datagram(t0, 1);
        }
        assert_eq!(pause(&mut off, t0).len(), 0);
    }
}
