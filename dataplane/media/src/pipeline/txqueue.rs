//! A fixed ring of outgoing datagrams: the pipeline writes packets straight
//! into its slots and the worker drains them, so sending allocates nothing.

use super::{Leg, PacketKind, TX_QUEUE};
use crate::rtp::MAX_PACKET_LEN;
use std::net::SocketAddr;

pub(super) struct TxSlot {
    pub(super) leg: Leg,
    pub(super) kind: PacketKind,
    pub(super) dst: SocketAddr,
    pub(super) len: usize,
    pub(super) buf: [u8; MAX_PACKET_LEN],
}

/// Fixed ring of outgoing datagrams.
pub(super) struct TxQueue {
    slots: Box<[TxSlot]>,
    head: usize,
    pub(super) len: usize,
}

impl TxQueue {
    pub(super) fn new() -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        TxQueue {
            slots: (0..TX_QUEUE)
                .map(|_| TxSlot {
                    leg: Leg::A,
                    kind: PacketKind::Rtp,
                    dst: unspecified,
                    len: 0,
                    buf: [0; MAX_PACKET_LEN],
                })
                .collect(),
            head: 0,
            len: 0,
        }
    }

    pub(super) fn push(
        &mut self,
        leg: Leg,
        kind: PacketKind,
        dst: SocketAddr,
    ) -> Option<&mut TxSlot> {
        if self.len == TX_QUEUE {
            return None;
        }
        let i = (self.head + self.len) % TX_QUEUE;
        self.len += 1;
        let s = &mut self.slots[i];
        s.leg = leg;
        s.kind = kind;
        s.dst = dst;
        s.len = 0;
        Some(s)
    }

    /// Takes back the last push (when writing into it failed).
    pub(super) fn unpush(&mut self) {
        self.len -= 1;
    }

    /// The oldest packet. Once the queue is empty the next push goes to
    /// the first slot again: a pipeline drained after every operation (as
    /// the worker drains) writes every packet into the same slot, whose
    /// lines are then still in cache from its last packet, instead of
    /// turning through all the slots' (some 12 KB) with hundreds of
    /// calls' in between.
    pub(super) fn pop(&mut self) -> Option<&TxSlot> {
        if self.len == 0 {
            return None;
        }
        let i = self.head;
        self.len -= 1;
        self.head = if self.len == 0 { 0 } else { (i + 1) % TX_QUEUE };
        Some(&self.slots[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(q: &mut TxQueue, mark: u8) -> bool {
        let dst = SocketAddr::from(([192, 0, 2, 1], 4000));
        match q.push(Leg::A, PacketKind::Rtp, dst) {
            Some(s) => {
                s.buf[0] = mark;
                s.len = 1;
                true
            }
            None => false,
        }
    }

    #[test]
    fn packets_leave_in_order_and_a_drained_queue_starts_at_its_first_slot() {
        let mut q = TxQueue::new();
        let first = q.slots[0].buf.as_ptr();
        // One packet at a time, drained each time: always the first slot.
        for mark in 0..20 {
            assert!(push(&mut q, mark));
            let s = q.pop().unwrap();
            assert_eq!((s.buf[0], s.buf.as_ptr()), (mark, first));
            assert!(q.pop().is_none());
        }
        // Partly drained, the queue wraps around its slots in order.
        for mark in 0..3 {
            assert!(push(&mut q, mark));
        }
        assert_eq!(q.pop().map(|s| s.buf[0]), Some(0));
        for mark in 3..9 {
            assert!(push(&mut q, mark));
        }
        assert!(!push(&mut q, 9), "full at {TX_QUEUE}");
        let out: Vec<u8> = std::iter::from_fn(|| q.pop().map(|s| s.buf[0])).collect();
        assert_eq!(out, (1..9).collect::<Vec<u8>>());
        // Emptied with the head mid-ring: the next goes first again.
        assert!(push(&mut q, 42));
        assert_eq!(
            q.pop().map(|s| (s.buf[0], s.buf.as_ptr())),
            Some((42, first))
        );
    }
}
