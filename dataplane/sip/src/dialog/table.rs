//! Many dialogs behind one drain surface: lookup by [`DialogId`], one
//! `poll_timeout` for all of them (the same lazy-deletion heap as the
//! transaction table), a bound on their number, and removal once a
//! dialog has terminated and its last event has been queued.
//!
//! Dialogs are changed through [`DialogTable::update`], which drains the
//! dialog's outputs and reschedules its timer afterwards, so the table
//! never misses a new deadline.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::{Dialog, DialogError, DialogEvent, DialogId, DialogState};
use crate::message::{Request, Response};
use crate::transaction::{Address, TimerQueue, Transmit};

#[derive(Debug)]
struct Slot<A> {
    dialog: Dialog<A>,
    scheduled: Option<Instant>,
}

/// A bounded table of dialogs.
#[derive(Debug)]
pub struct DialogTable<A> {
    max: usize,
    /// Boxed: a dialog is about 2 KB, and the map moves its entries
    /// whenever it grows or rehashes away the tombstones that calls
    /// ending leave behind.
    slots: HashMap<DialogId, Box<Slot<A>>>,
    pub(super) timers: TimerQueue<DialogId>,
    transmits: VecDeque<Transmit<A>>,
    events: VecDeque<(DialogId, DialogEvent)>,
}

impl<A: Address> DialogTable<A> {
    /// A table holding at most `max` dialogs.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            slots: HashMap::new(),
            timers: TimerQueue::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every dialog, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Dialog<A>> {
        self.slots.values().map(|s| &s.dialog)
    }

    /// Adds a dialog (and queues what it has produced so far).
    pub fn insert(&mut self, dialog: Dialog<A>) -> Result<DialogId, DialogError> {
        let id = dialog.id().clone();
        if self.slots.contains_key(&id) {
            return Err(DialogError::Exists);
        }
        if self.slots.len() >= self.max {
            return Err(DialogError::TableFull);
        }
        self.slots.insert(
            id.clone(),
            Box::new(Slot {
                dialog,
                scheduled: None,
            }),
        );
        self.settle(&id);
        Ok(id)
    }

    pub fn get(&self, id: &DialogId) -> Option<&Dialog<A>> {
        self.slots.get(id).map(|s| &s.dialog)
    }

    /// Runs `f` on a dialog, then drains its outputs into the table and
    /// reschedules it. `None` if there is no such dialog.
    pub fn update<R>(&mut self, id: &DialogId, f: impl FnOnce(&mut Dialog<A>) -> R) -> Option<R> {
        let out = f(&mut self.slots.get_mut(id)?.dialog);
        self.settle(id);
        Some(out)
    }

    /// Takes a dialog out of the table.
    pub fn remove(&mut self, id: &DialogId) -> Option<Dialog<A>> {
        self.slots.remove(id).map(|s| s.dialog)
    }

    /// The dialog a received request belongs to.
    pub fn find_request(&self, request: &Request) -> Option<DialogId> {
        DialogId::of_request(request).filter(|id| self.slots.contains_key(id))
    }

    /// The dialog a response to our request belongs to.
    pub fn find_response(&self, response: &Response) -> Option<DialogId> {
        DialogId::of_response(response).filter(|id| self.slots.contains_key(id))
    }

    fn settle(&mut self, id: &DialogId) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        while let Some(t) = slot.dialog.poll_transmit() {
            self.transmits.push_back(t);
        }
        while let Some(e) = slot.dialog.poll_event() {
            self.events.push_back((id.clone(), e));
        }
        if slot.dialog.state() == DialogState::Terminated {
            self.slots.remove(id);
        } else {
            let next = slot.dialog.poll_timeout();
            if next != slot.scheduled {
                slot.scheduled = next;
                if let Some(at) = next {
                    self.timers.push(at, id.clone());
                }
            }
        }
        if self.timers.len() > self.slots.len().saturating_mul(2).saturating_add(1024) {
            let slots = &self.slots;
            self.timers
                .compact(|at, id| slots.get(id).is_some_and(|s| s.scheduled == Some(at)));
        }
    }

    /// The earliest deadline of any dialog.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let slots = &self.slots;
        self.timers
            .peek(|at, id| slots.get(id).is_some_and(|s| s.scheduled == Some(at)))
    }

    /// Fires every expired timer of every dialog.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut budget = self.slots.len().saturating_mul(4).saturating_add(64);
        while budget > 0 {
            budget -= 1;
            let slots = &self.slots;
            let Some((_, id)) = self.timers.pop_due(now, |at, id| {
                slots.get(id).is_some_and(|s| s.scheduled == Some(at))
            }) else {
                break;
            };
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.scheduled = None;
                slot.dialog.handle_timeout(now);
            }
            self.settle(&id);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<(DialogId, DialogEvent)> {
        self.events.pop_front()
    }
}
