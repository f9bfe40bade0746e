//! Throttling of failed logins per (user name, client IP).
//!
//! Five failures are free (typos happen); each further failure locks the
//! pair out for twice as long as the last, from 30 s up to 15 minutes.
//! While locked out even a correct password gets 429, so guessing stays
//! slow. Success clears the record. The table is bounded: past its capacity
//! the oldest, no longer locked records are dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use codeb_types::UtcMillis;

const FREE_FAILURES: u32 = 5;
const BASE_LOCK_MS: i64 = 30_000;
const MAX_LOCK_MS: i64 = 15 * 60_000;
/// Failures older than this are forgotten.
const WINDOW_MS: i64 = 60 * 60_000;
const CAPACITY: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: UtcMillis,
    locked_until: UtcMillis,
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    records: Mutex<HashMap<(String, IpAddr), Record>>,
}

impl LoginThrottle {
    /// `Err(retry_after_secs)` if this pair is locked out now.
    pub fn check(&self, user: &str, ip: IpAddr, now: UtcMillis) -> Result<(), u64> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        match records.get(&(user.to_ascii_lowercase(), ip)) {
            Some(r) if r.locked_until > now => {
                let ms = r.locked_until.0 - now.0;
                Err(u64::try_from((ms + 999) / 1000).unwrap_or(1).max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, user: &str, ip: IpAddr, now: UtcMillis) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() >= CAPACITY {
            records.retain(|_, r| r.locked_until > now && now.0 - r.last_failure.0 < WINDOW_MS);
            if records.len() >= CAPACITY {
                // Still full of live lockouts: drop the oldest half.
                let mut ages: Vec<i64> = records.values().map(|r| r.last_failure.0).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                records.retain(|_, r| r.last_failure.0 > cutoff);
            }
        }
        let r = records
            .entry((user.to_ascii_lowercase(), ip))
            .or_insert(Record {
                failures: 0,
                last_failure: now,
                locked_until: UtcMillis(0),
            });
        if now.0 - r.last_failure.0 > WINDOW_MS {
            r.failures = 0;
        }
        r.failures = r.failures.saturating_add(1);
        r.last_failure = now;
        if r.failures >= FREE_FAILURES {
            let doublings = (r.failures - FREE_FAILURES).min(16);
            let lock = BASE_LOCK_MS.saturating_mul(1 << doublings).min(MAX_LOCK_MS);
            r.locked_until = now.plus_ms(lock);
        }
    }

    pub fn record_success(&self, user: &str, ip: IpAddr) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.remove(&(user.to_ascii_lowercase(), ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_five_and_backs_off() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        let mut now = UtcMillis(1_000_000);
        for _ in 0..4 {
            assert!(t.check("alex", ip, now).is_ok());
            t.record_failure("alex", ip, now);
        }
        assert!(t.check("alex", ip, now).is_ok());
        t.record_failure("ALEX", ip, now);
        assert_eq!(t.check("alex", ip, now), Err(30));
        assert!(t.check("alex", other, now).is_ok(), "per IP");
        assert!(t.check("sam", ip, now).is_ok(), "per user");
        now = now.plus_ms(30_000);
        assert!(t.check("alex", ip, now).is_ok());
        t.record_failure("alex", ip, now);
        assert_eq!(t.check("alex", ip, now), Err(60));
        for _ in 0..20 {
            t.record_failure("alex", ip, now);
        }
        assert_eq!(t.check("alex", ip, now), Err(900), "capped at 15 minutes");
        t.record_success("alex", ip);
        assert!(t.check("alex", ip, now).is_ok());
    }

    #[test]
    fn forgets_old_failures() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "::1".parse().unwrap();
        let now = UtcMillis(0);
        for _ in 0..4 {
            t.record_failure("a", ip, now);
        }
        let later = now.plus_ms(WINDOW_MS + 1);
        t.record_failure("a", ip, later);
        assert!(t.check("a", ip, later).is_ok());
    }
}
