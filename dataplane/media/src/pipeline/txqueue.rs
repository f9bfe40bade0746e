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

    pub(super) fn pop(&mut self) -> Option<&TxSlot> {
        if self.len == 0 {
            return None;
        }
        let i = self.head;
        self.head = (self.head + 1) % TX_QUEUE;
        self.len -= 1;
        Some(&self.slots[i])
    }
}
