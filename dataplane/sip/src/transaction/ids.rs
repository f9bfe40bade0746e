//! Fresh identifiers: Via branches (§8.1.1.7), From/To tags (§19.3) and
//! Call-IDs (§8.1.1.4), plus the random values RFC 3261 asks for in a few
//! timers (§14.1 glare back-off).
//!
//! Sans-IO means no entropy source either: the caller seeds the generator
//! once (from the OS, at start-up) and every value is a keyed hash of the
//! seed and a counter. That makes values unique for the generator's life,
//! unguessable without the seed, and reproducible in tests.

use std::hash::{BuildHasher, Hasher};

use bytes::{BufMut, Bytes, BytesMut};

use crate::header::BRANCH_MAGIC_COOKIE;

/// SipHash with fixed keys; the secret is the seed fed into every hash.
#[derive(Debug, Clone, Copy, Default)]
struct FixedState;

impl BuildHasher for FixedState {
    type Hasher = std::hash::DefaultHasher;

    fn build_hasher(&self) -> Self::Hasher {
        std::hash::DefaultHasher::new()
    }
}

/// Generates branches, tags, Call-IDs and random numbers.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    seed: u64,
    counter: u64,
}

impl IdGenerator {
    /// A generator keyed by `seed`. Seed it from the OS in production
    /// (e.g. `std::collections::hash_map::RandomState`), with a constant
    /// in tests.
    pub fn new(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        let mut h = FixedState.build_hasher();
        h.write_u64(self.seed);
        h.write_u64(self.counter);
        h.finish()
    }

    /// A value in `0..bound` (`0` when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    fn hex(&mut self, out: &mut BytesMut, words: usize) {
        for _ in 0..words {
            out.put_slice(format!("{:016x}", self.next_u64()).as_bytes());
        }
    }

    /// A Via branch with the RFC 3261 magic cookie and 64 random bits.
    pub fn branch(&mut self) -> Bytes {
        let mut out = BytesMut::with_capacity(BRANCH_MAGIC_COOKIE.len() + 16);
        out.put_slice(BRANCH_MAGIC_COOKIE);
        self.hex(&mut out, 1);
        out.freeze()
    }

    /// A From/To tag: 64 random bits, more than the 32 §19.3 asks for.
    pub fn tag(&mut self) -> Bytes {
        let mut out = BytesMut::with_capacity(16);
        self.hex(&mut out, 1);
        out.freeze()
    }

    /// A Call-ID: 128 random bits, `@host` appended when given.
    pub fn call_id(&mut self, host: Option<&[u8]>) -> Bytes {
        let mut out = BytesMut::with_capacity(48);
        self.hex(&mut out, 2);
        if let Some(host) = host {
            out.put_u8(b'@');
            out.put_slice(host);
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn values_are_unique_reproducible_and_well_formed() {
        let mut a = IdGenerator::new(7);
        let mut b = IdGenerator::new(7);
        assert_eq!(a.branch(), b.branch());
        let mut c = IdGenerator::new(8);
        assert_ne!(a.tag(), c.tag());
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(a.branch()));
        }
        let branch = a.branch();
        assert!(branch.starts_with(BRANCH_MAGIC_COOKIE) && branch.len() == 23);
        let id = a.call_id(Some(b"switch.example.com"));
        assert!(id.ends_with(b"@switch.example.com") && id.len() == 32 + 19);
        assert!(a.below(10) < 10);
        assert_eq!(a.below(0), 0);
    }
}
