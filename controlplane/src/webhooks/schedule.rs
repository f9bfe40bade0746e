//! What happens after an attempt: the retry schedule (5 s, 30 s, 120 s by
//! default: attempts 1–4), `Retry-After`, 410 and giving up. Pure
//! functions of the attempt and the time, which the caller passes in.

use std::time::Duration;

use codeb_types::UtcMillis;

use crate::store::NextStep;

/// Longest wait a receiver's `Retry-After` can ask for; a larger value is
/// cut to this, so one header cannot park a delivery for days.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait before attempt 2, 3, …: one more attempt than entries.
    pub delays: Vec<Duration>,
    /// Consecutive failed attempts after which a subscription pauses.
    pub pause_after: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            delays: vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
            pause_after: 20,
        }
    }
}

/// How an attempt ended, as far as scheduling cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver answered with this status.
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: refused by the guard, connection failed, timed out.
    NoAnswer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub next: NextStep,
    /// 410: the receiver says the subscription is gone.
    pub gone: bool,
}

impl RetryPolicy {
    pub fn max_attempts(&self) -> i64 {
        i64::try_from(self.delays.len()).unwrap_or(i64::MAX - 1) + 1
    }

    /// What follows attempt number `attempt` (1-based) ending in `result`
    /// at `now`. Only 2xx succeeds (redirects are not followed, so 3xx is a
    /// failure). `Retry-After` on 429 and 503 can lengthen the scheduled
    /// wait (up to `RETRY_AFTER_CAP`) but never shorten it.
    pub fn decide(&self, attempt: i64, result: &AttemptResult, now: UtcMillis) -> Decision {
        let mut gone = false;
        let mut hint = None;
        if let AttemptResult::Status {
            status,
            retry_after,
        } = result
        {
            if (200..300).contains(status) {
                return Decision {
                    next: NextStep::Succeeded,
                    gone: false,
                };
            }
            gone = *status == 410;
            if matches!(status, 429 | 503) {
                hint = *retry_after;
            }
        }
        let scheduled = usize::try_from(attempt - 1)
            .ok()
            .and_then(|i| self.delays.get(i));
        let next = match scheduled {
            Some(delay) if !gone => {
                let wait = match hint {
                    Some(h) => (*delay).max(h.min(RETRY_AFTER_CAP)),
                    None => *delay,
                };
                NextStep::RetryAt(now.plus_ms(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)))
            }
            _ => NextStep::Failed,
        };
        Decision { next, gone }
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`), relative to `now`.
pub fn parse_retry_after(value: &str, now: UtcMillis) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    let ms = u64::try_from(at.0.saturating_sub(now.0)).unwrap_or(0);
    Some(Duration::from_millis(ms))
}

fn parse_http_date(v: &str) -> Option<UtcMillis> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let rest = v.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let (day, mon, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| *x == mon)? + 1;
    UtcMillis::parse_rfc3339(&format!("{year}-{m:02}-{day}T{time}Z")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UtcMillis = UtcMillis(1_767_268_800_000);

    fn status(s: u16) -> AttemptResult {
        AttemptResult::Status {
            status: s,
            retry_after: None,
        }
    }

    #[test]
    fn the_spec_schedule() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(), 4);
        let at = |attempt, r: &AttemptResult| p.decide(attempt, r, T0).next;
        assert_eq!(at(1, &status(200)), NextStep::Succeeded);
        assert_eq!(at(3, &status(204)), NextStep::Succeeded);
        assert_eq!(at(1, &status(500)), NextStep::RetryAt(T0.plus_ms(5_000)));
        assert_eq!(
            at(2, &AttemptResult::NoAnswer),
            NextStep::RetryAt(T0.plus_ms(30_000))
        );
        assert_eq!(at(3, &status(302)), NextStep::RetryAt(T0.plus_ms(120_000)));
        assert_eq!(at(4, &status(500)), NextStep::Failed);
        assert_eq!(at(4, &AttemptResult::NoAnswer), NextStep::Failed);
        let gone = p.decide(1, &status(410), T0);
        assert_eq!((gone.next, gone.gone), (NextStep::Failed, true));
    }

    #[test]
    fn retry_after_lengthens_within_bounds() {
        let p = RetryPolicy::default();
        let ra = |s, secs| AttemptResult::Status {
            status: s,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            p.decide(1, &ra(429, 60), T0).next,
            NextStep::RetryAt(T0.plus_ms(60_000))
        );
        assert_eq!(
            p.decide(1, &ra(503, 1), T0).next,
            NextStep::RetryAt(T0.plus_ms(5_000)),
            "never shorter than the schedule"
        );
        assert_eq!(
            p.decide(1, &ra(429, 86_400), T0).next,
            NextStep::RetryAt(T0.plus_ms(600_000)),
            "capped"
        );
        assert_eq!(
            p.decide(1, &ra(500, 60), T0).next,
            NextStep::RetryAt(T0.plus_ms(5_000)),
            "only 429 and 503 carry a hint"
        );
        assert_eq!(p.decide(4, &ra(429, 60), T0).next, NextStep::Failed);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(" 120 ", T0),
            Some(Duration::from_secs(120))
        );
        let now = UtcMillis::parse_rfc3339("1994-11-06T08:49:00Z").unwrap();
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(37))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", T0),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        for bad in ["soon", "-5", "Sun, 06 Nov 1994 08:49:37 PST", ""] {
            assert_eq!(parse_retry_after(bad, T0), None, "{bad}");
        }
    }

    #[test]
    fn custom_schedules() {
        let p = RetryPolicy {
            delays: vec![Duration::from_millis(50)],
            pause_after: 20,
        };
        assert_eq!(p.max_attempts(), 2);
        assert_eq!(
            p.decide(1, &status(500), T0).next,
            NextStep::RetryAt(T0.plus_ms(50))
        );
        assert_eq!(p.decide(2, &status(500), T0).next, NextStep::Failed);
    }
}
