//! One deadline for many machines: a binary heap with lazy deletion.
//!
//! Owners keep, per machine, the deadline they last pushed ("scheduled").
//! Rescheduling pushes a new entry and leaves the old one in the heap;
//! entries are checked against the owner's record when they reach the top
//! and dropped if stale. `poll_timeout` is O(1) amortised and a reschedule
//! O(log n), instead of a scan of every machine; [`TimerQueue::compact`]
//! bounds the garbage when deadlines move often.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A min-heap of `(deadline, key)` entries.
#[derive(Debug, Clone)]
pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord> TimerQueue<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a deadline for `key`.
    pub fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest deadline for which `is_current(at, key)` holds; stale
    /// entries met on the way are discarded.
    pub fn peek(&mut self, mut is_current: impl FnMut(Instant, &K) -> bool) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.heap.peek() {
            if is_current(*at, key) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns the earliest current entry due at `now`.
    pub fn pop_due(
        &mut self,
        now: Instant,
        is_current: impl FnMut(Instant, &K) -> bool,
    ) -> Option<(Instant, K)> {
        let at = self.peek(is_current)?;
        if at > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    /// Entries, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops every stale entry (O(n)); call when `len` outgrows the number
    /// of live machines by a wide margin.
    pub fn compact(&mut self, mut is_current: impl FnMut(Instant, &K) -> bool) {
        self.heap.retain(|Reverse((at, key))| is_current(*at, key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn stale_entries_are_skipped_and_compacted() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut scheduled: HashMap<u32, Instant> = HashMap::new();
        let mut q = TimerQueue::new();
        for (key, at) in [(1, t0 + s(5)), (2, t0 + s(3)), (3, t0 + s(9))] {
            scheduled.insert(key, at);
            q.push(at, key);
        }
        // Key 2 moves later and key 3 goes away: their old entries are stale.
        scheduled.insert(2, t0 + s(7));
        q.push(t0 + s(7), 2);
        scheduled.remove(&3);
        let current = |s: &HashMap<u32, Instant>| {
            let s = s.clone();
            move |at: Instant, k: &u32| s.get(k) == Some(&at)
        };
        assert_eq!(q.peek(current(&scheduled)), Some(t0 + s(5)));
        assert_eq!(q.pop_due(t0 + s(4), current(&scheduled)), None);
        assert_eq!(
            q.pop_due(t0 + s(8), current(&scheduled)),
            Some((t0 + s(5), 1))
        );
        scheduled.remove(&1);
        assert_eq!(
            q.pop_due(t0 + s(8), current(&scheduled)),
            Some((t0 + s(7), 2))
        );
        scheduled.remove(&2);
        assert_eq!(q.len(), 1);
        q.compact(current(&scheduled));
        assert!(q.is_empty());
        assert_eq!(q.peek(current(&scheduled)), None);
    }
}
