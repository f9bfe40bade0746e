//! Abuse protection in front of the SIP stack: a token bucket per source
//! address, temporary bans for sources that keep overrunning it, and a drop
//! list of scanner user agents. Trusted sources (the trunks' inbound
//! networks and each trunk's own address) are not limited here; their own
//! per-trunk limits apply later.
//!
//! Sans-IO: time is passed in. The table is bounded; when full, the entries
//! that have been quiet longest are evicted first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::cidr::Cidr;

/// Tunables.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sustained messages per second per source.
    pub rate: f64,
    /// Bucket size (burst).
    pub burst: f64,
    /// Overruns within one ban window that earn a ban.
    pub strikes: u32,
    pub ban: Duration,
    /// Most sources tracked.
    pub max_sources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate: 50.0,
            burst: 200.0,
            strikes: 100,
            ban: Duration::from_secs(60),
            max_sources: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the rate: this message is dropped.
    RateLimited,
    /// Banned until the ban ends.
    Banned,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    strikes: u32,
    banned_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Protection {
    limits: Limits,
    trusted: Vec<Cidr>,
    sources: HashMap<IpAddr, Bucket>,
    pub rate_limited: u64,
    pub banned_drops: u64,
    pub bans: u64,
}

impl Protection {
    pub fn new(limits: Limits, trusted: Vec<Cidr>) -> Protection {
        Protection {
            limits,
            trusted,
            sources: HashMap::new(),
            rate_limited: 0,
            banned_drops: 0,
            bans: 0,
        }
    }

    pub fn set_trusted(&mut self, trusted: Vec<Cidr>) {
        self.trusted = trusted;
    }

    /// `ip` is a trunk's (never limited).
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        if self.trusted.iter().any(|c| c.contains(ip)) {
            return Verdict::Allow;
        }
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.limits.max_sources {
            self.evict(now);
        }
        let limits = &self.limits;
        let b = self.sources.entry(ip).or_insert(Bucket {
            tokens: limits.burst,
            last: now,
            strikes: 0,
            banned_until: None,
        });
        if let Some(until) = b.banned_until {
            if now < until {
                self.banned_drops += 1;
                return Verdict::Banned;
            }
            b.banned_until = None;
            b.strikes = 0;
            b.tokens = limits.burst;
        }
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = now;
        if elapsed > limits.ban.as_secs_f64() {
            b.strikes = 0;
        }
        b.tokens = (b.tokens + elapsed * limits.rate).min(limits.burst);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Allow;
        }
        b.strikes += 1;
        self.rate_limited += 1;
        if b.strikes >= limits.strikes {
            b.banned_until = Some(now + limits.ban);
            self.bans += 1;
            tracing::warn!(source = %ip, secs = limits.ban.as_secs(), "source banned for flooding");
        }
        Verdict::RateLimited
    }

    fn evict(&mut self, now: Instant) {
        let mut ages: Vec<(Instant, IpAddr)> = self
            .sources
            .iter()
            .filter(|(_, b)| b.banned_until.is_none_or(|u| u <= now))
            .map(|(ip, b)| (b.last, *ip))
            .collect();
        ages.sort_unstable();
        for (_, ip) in ages.iter().take((self.limits.max_sources / 4).max(1)) {
            self.sources.remove(ip);
        }
    }

    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

/// User agents of SIP scanners (sipvicious and kin), dropped silently: an
/// answer only confirms to them that something is listening.
pub fn is_scanner(user_agent: &[u8]) -> bool {
    const SCANNERS: &[&[u8]] = &[
        b"friendly-scanner",
        b"sipvicious",
        b"sipcli",
        b"sip-scan",
        b"sundayddr",
        b"iwar",
        b"sipsak-scan",
        b"vaxsipuseragent",
        b"pplsip",
    ];
    let ua = user_agent.to_ascii_lowercase();
    SCANNERS
        .iter()
        .any(|s| ua.windows(s.len()).any(|w| w == *s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_strikes_and_ban() {
        let limits = Limits {
            rate: 10.0,
            burst: 5.0,
            strikes: 3,
            ban: Duration::from_secs(30),
            max_sources: 10,
        };
        let mut p = Protection::new(limits, vec!["10.0.0.0/8".parse().unwrap()]);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(p.check(ip, t0), Verdict::Allow);
        }
        assert_eq!(p.check(ip, t0), Verdict::RateLimited);
        // 100 ms later one token has come back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(p.check(ip, t1), Verdict::Allow);
        assert_eq!(p.check(ip, t1), Verdict::RateLimited);
        assert_eq!(p.check(ip, t1), Verdict::RateLimited);
        assert_eq!(p.bans, 1, "third strike bans");
        assert_eq!(p.check(ip, t1 + Duration::from_secs(10)), Verdict::Banned);
        assert_eq!(
            p.check(ip, t1 + Duration::from_secs(31)),
            Verdict::Allow,
            "the ban ends"
        );
        let trunk: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..1000 {
            assert_eq!(
                p.check(trunk, t0),
                Verdict::Allow,
                "trusted sources are not limited"
            );
        }
    }

    #[test]
    fn bounded_table() {
        let mut p = Protection::new(
            Limits {
                max_sources: 8,
                ..Limits::default()
            },
            vec![],
        );
        let t = Instant::now();
        for i in 0..100u32 {
            p.check(
                IpAddr::from(i.to_be_bytes()),
                t + Duration::from_millis(u64::from(i)),
            );
            assert!(p.tracked() <= 8);
        }
    }

    #[test]
    fn scanners() {
        assert!(is_scanner(b"friendly-scanner"));
        assert!(is_scanner(b"sipvicious/0.3.4"));
        assert!(is_scanner(b"SIPCLI/v1.8"));
        assert!(!is_scanner(b"SIPp/3.6.1"));
        assert!(!is_scanner(b"Linphone/5.2"));
    }
}
