//! Which of a task's sources woke it: one waker per source, each setting
//! its bit before waking the task, so the task polls only the sources
//! that have something (or may have: a spurious wake costs one poll).
//!
//! The session's driver waits on three sources: the caller's audio, the
//! vendor's socket and the call's commands. The caller's audio wakes it
//! for every 20 ms frame; with one waker for all three, each of those
//! wake-ups also polled the command channel (two list pops and a waker
//! registration) and the socket's readiness for nothing. The driver
//! gives the socket and the commands a waker each from here and polls
//! the audio, which is nearly always what woke it, every time.
//!
//! Contract: [`WakeSet::take`] registers the task's waker and returns
//! the bits set since the last take (all of them at first); the task
//! polls each source it names with [`WakeSet::context`] of that source.
//! A source that returns `Ready` may have more: the task marks it again
//! with [`WakeSet::again`], with any it did not poll yet, so the next take names it. A source that
//! returns `Pending` has registered its own waker and sets its bit when
//! it is ready.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};

#[derive(Debug, Default)]
struct Shared {
    pending: AtomicU32,
    /// The task's waker. Kept when woken (an `AtomicWaker` hands it out
    /// on every wake), so the task registers only when its waker
    /// changes: a compare in the task instead of a registration on every
    /// poll.
    task: Mutex<Option<Waker>>,
}

struct SourceWaker {
    shared: Arc<Shared>,
    bit: u32,
}

impl Wake for SourceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The bit before the wake: the task's take after the wake sees it.
        self.shared.pending.fetch_or(self.bit, Ordering::AcqRel);
        let task = self
            .shared
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

/// The wakers of up to 32 sources of one task.
pub(crate) struct WakeSet {
    shared: Arc<Shared>,
    wakers: Vec<Waker>,
    /// What `shared.task` holds, for the compare.
    registered: Option<Waker>,
}

impl std::fmt::Debug for WakeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeSet")
            .field("sources", &self.wakers.len())
            .field("pending", &self.shared.pending.load(Ordering::Relaxed))
            .finish()
    }
}

impl WakeSet {
    /// `n` sources (1 to 32), all pending.
    pub(crate) fn new(n: usize) -> WakeSet {
        let n = n.clamp(1, 32);
        let all = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
        let shared = Arc::new(Shared {
            pending: AtomicU32::new(all),
            task: Mutex::new(None),
        });
        let wakers = (0..n)
            .map(|i| {
                Waker::from(Arc::new(SourceWaker {
                    shared: shared.clone(),
                    bit: 1 << i,
                }))
            })
            .collect();
        WakeSet {
            shared,
            wakers,
            registered: None,
        }
    }

    /// Registers the task's waker (`cx`) if it changed, then returns and
    /// clears the sources woken since the last take: bit `i` is source
    /// `i`.
    pub(crate) fn take(&mut self, cx: &Context<'_>) -> u32 {
        // Before the swap: a wake after it reaches the task.
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            let w = cx.waker().clone();
            *self
                .shared
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(w.clone());
            self.registered = Some(w);
        }
        self.shared.pending.swap(0, Ordering::AcqRel)
    }

    /// Marks the sources in `mask` to be polled at the next take (one
    /// was ready and may have more; others were not polled yet).
    pub(crate) fn again(&self, mask: u32) {
        self.shared.pending.fetch_or(mask, Ordering::Relaxed);
    }

    /// The context to poll source `i` with.
    pub(crate) fn context(&self, i: usize) -> Context<'_> {
        Context::from_waker(&self.wakers[i % self.wakers.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn only_the_sources_that_woke_are_named() {
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let cx = Context::from_waker(&waker);
        let mut set = WakeSet::new(3);
        assert_eq!(set.take(&cx), 0b111, "all pending at first");
        assert_eq!(set.take(&cx), 0);
        set.context(1).waker().wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task was woken");
        // The registration stays: every wake reaches the task.
        set.context(2).waker().wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 2);
        assert_eq!(set.take(&cx), 0b110);
        set.again(0b001);
        assert_eq!(set.take(&cx), 0b001);
        set.context(0).waker().wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 3);
        assert_eq!(set.take(&cx), 0b001);
        // A task polled with another waker is woken through that one.
        let other = Arc::new(Count(AtomicUsize::new(0)));
        let other_waker = Waker::from(other.clone());
        assert_eq!(set.take(&Context::from_waker(&other_waker)), 0);
        set.context(1).waker().wake_by_ref();
        assert_eq!(other.0.load(Ordering::SeqCst), 1);
        assert_eq!(task.0.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_source_registered_through_its_context_sets_its_own_bit() {
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let cx = Context::from_waker(&waker);
        let mut set = WakeSet::new(2);
        let _ = set.take(&cx);
        // A source keeps the waker it was polled with and wakes it later.
        let kept = set.context(1).waker().clone();
        kept.wake();
        assert_eq!(set.take(&cx), 0b10);
        assert_eq!(WakeSet::new(32).take(&cx), u32::MAX);
    }
}
