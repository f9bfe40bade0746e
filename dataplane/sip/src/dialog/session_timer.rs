//! Session timers (RFC 4028): negotiation and the two timers that follow.
//!
//! The UAC offers `Session-Expires` (and `Min-SE`, `Supported: timer`);
//! the UAS settles interval and refresher in its 2xx; whatever the 2xx
//! says is the agreement, so both sides derive their timers from the 2xx
//! they sent or received ([`SessionTimer::from_2xx`]). A `refresher` names
//! a role in *that* transaction: `uac` means whoever sent the request.
//!
//! The refresher sends a refresh once half the interval has passed
//! ([`DialogEvent::RefreshDue`](super::DialogEvent::RefreshDue)). Either
//! side gives up slightly before expiry — the interval minus the smaller
//! of 32 s and a third of it (§10) — and sends BYE
//! ([`DialogEvent::SessionExpired`](super::DialogEvent::SessionExpired)).

use std::time::{Duration, Instant};

use crate::builder::RequestBuilder;
use crate::header::{Headers, KnownHeader, Refresher};
use crate::message::{Response, StatusCode};
use crate::transaction::after;

/// RFC 4028 §4, §5: no interval below 90 s; also the default Min-SE.
pub const MIN_INTERVAL: u32 = 90;

/// What we ask for and accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// The interval we ask for (RECOMMENDED 1800 s, §4).
    pub session_expires: u32,
    /// The smallest interval we accept (at least 90 s).
    pub min_se: u32,
    /// Where the protocol leaves us the choice, refresh ourselves. A B2BUA
    /// that refreshes both legs notices dead peers on either side.
    pub we_refresh: bool,
    /// The lowest interval used at all, ours or a peer's: RFC 4028's 90 s
    /// (§4, §5), which is also what a request without Min-SE is taken to
    /// ask for. Only tests go lower, so that whole programs can show
    /// sessions refreshing and expiring in seconds; a lower floor puts
    /// non-conforming values on the wire.
    pub floor: u32,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        Self {
            session_expires: 1800,
            min_se: MIN_INTERVAL,
            we_refresh: true,
            floor: MIN_INTERVAL,
        }
    }
}

impl SessionTimerConfig {
    /// Min-SE at least the floor (90 s unless lowered, never below 1 s)
    /// and Session-Expires at least Min-SE.
    pub fn sanitized(self) -> Self {
        let floor = self.floor.max(1);
        let min_se = self.min_se.max(floor);
        Self {
            min_se,
            session_expires: self.session_expires.max(min_se),
            we_refresh: self.we_refresh,
            floor,
        }
    }

    /// Adds the offer to a dialog-creating INVITE: `Supported: timer`,
    /// `Session-Expires` (with `refresher=uac` if we want to refresh) and
    /// `Min-SE` (§7.1).
    pub fn offer(&self, builder: RequestBuilder) -> RequestBuilder {
        let c = self.sanitized();
        let refresher = if c.we_refresh { ";refresher=uac" } else { "" };
        builder
            .header(KnownHeader::Supported, "timer")
            .header(
                KnownHeader::SessionExpires,
                format!("{}{refresher}", c.session_expires),
            )
            .header(KnownHeader::MinSe, c.min_se.to_string())
    }
}

impl SessionTimerConfig {
    /// The 422 (with our Min-SE) that a request with too small a
    /// Session-Expires gets, if it does (§9). Dialogs check in-dialog
    /// requests themselves; the TU calls this for a dialog-creating INVITE
    /// before it creates the dialog.
    pub fn check(&self, request: &crate::Request, to_tag: &[u8]) -> Option<Response> {
        let min_se = too_small(&request.headers, self)?;
        reject_422(&request.headers, to_tag, min_se)
    }
}

/// The Min-SE of a 422 response: the interval to retry with (§7.4).
pub fn min_se_of_422(response: &Response) -> Option<u32> {
    if response.status.as_u16() != 422 {
        return None;
    }
    response.headers.min_se().ok().flatten()
}

fn supports_timer(h: &Headers) -> bool {
    [KnownHeader::Supported, KnownHeader::Require]
        .into_iter()
        .filter_map(|name| h.option_tags(name).ok())
        .flatten()
        .any(|tag| tag.eq_ignore_ascii_case(b"timer"))
}

/// The Min-SE to demand in a 422 when a request's Session-Expires is below
/// ours (§9). Only UACs that support the extension are refused; for the
/// others we become the refresher of whatever interval they chose.
pub(crate) fn too_small(request: &Headers, config: &SessionTimerConfig) -> Option<u32> {
    let config = config.sanitized();
    let se = request.session_expires().ok().flatten()?;
    (se.interval < config.min_se && supports_timer(request)).then_some(config.min_se)
}

/// The `Session-Expires` of our 2xx to a request (§9): the requested
/// interval, lowered to ours but never below the request's Min-SE; the
/// refresher the UAC asked for, else our preference if the UAC supports
/// the extension, else us. Without a Session-Expires in the request we
/// still start a timer, as §9 allows, refreshed by us unless the UAC
/// supports it and we prefer not to.
pub(crate) fn answer(request: &Headers, config: &SessionTimerConfig) -> (u32, Refresher) {
    let config = config.sanitized();
    let uac_supports = supports_timer(request);
    let floor = request
        .min_se()
        .ok()
        .flatten()
        .unwrap_or(config.floor)
        .max(config.floor);
    let preferred = if config.we_refresh || !uac_supports {
        Refresher::Uas
    } else {
        Refresher::Uac
    };
    match request.session_expires().ok().flatten() {
        Some(se) => {
            let interval = se.interval.min(config.session_expires).max(floor);
            let refresher = match se.refresher {
                Some(r) if uac_supports => r,
                _ => preferred,
            };
            (interval, refresher)
        }
        None => (config.session_expires.max(floor), preferred),
    }
}

/// Renders a Session-Expires value.
pub(crate) fn render(interval: u32, refresher: Refresher) -> String {
    let r = match refresher {
        Refresher::Uac => "uac",
        Refresher::Uas => "uas",
    };
    format!("{interval};refresher={r}")
}

/// The running timer of a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionTimer {
    pub(crate) interval: u32,
    pub(crate) we_refresh: bool,
    /// When to send the refresh (refresher only; cleared once due).
    pub(crate) refresh_at: Option<Instant>,
    /// When to give up and send BYE.
    pub(crate) expire_at: Instant,
}

impl SessionTimer {
    pub(crate) fn start(now: Instant, interval: u32, we_refresh: bool) -> Self {
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        let margin = 32.min(interval / 3);
        Self {
            interval,
            we_refresh,
            refresh_at: we_refresh.then(|| after(now, secs(interval / 2))),
            expire_at: after(now, secs(interval - margin)),
        }
    }

    /// The timer a 2xx to a session refresh (or the INVITE) sets up:
    /// `None` when it carries no Session-Expires (no timer, §7.2).
    /// `we_sent_request` tells which role `refresher` names us by; a 2xx
    /// without a refresher (a UAS that breaks §9) leaves it to us.
    pub(crate) fn from_2xx(
        now: Instant,
        response: &Headers,
        we_sent_request: bool,
    ) -> Option<Self> {
        let se = response.session_expires().ok().flatten()?;
        if se.interval == 0 {
            return None;
        }
        let we_refresh = match se.refresher {
            Some(Refresher::Uac) => we_sent_request,
            Some(Refresher::Uas) => !we_sent_request,
            None => true,
        };
        Some(Self::start(now, se.interval, we_refresh))
    }
}

/// 422 with our Min-SE for a request whose interval is too small.
pub(crate) fn reject_422(request: &Headers, local_tag: &[u8], min_se: u32) -> Option<Response> {
    let status = StatusCode::new(422)?;
    crate::builder::ResponseBuilder::reply_to(request, status, Some(local_tag))
        .header(KnownHeader::MinSe, min_se.to_string())
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Header;

    fn headers(lines: &[(KnownHeader, &'static str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in lines {
            h.push(Header::new(*n, *v).unwrap());
        }
        h
    }

    #[test]
    fn the_uas_answer_follows_section_9() {
        let c = SessionTimerConfig::default();
        use KnownHeader::{MinSe, SessionExpires as Se, Supported};
        // The UAC's refresher choice stands when it supports timers.
        let h = headers(&[
            (Supported, "timer"),
            (Se, "3600;refresher=uac"),
            (MinSe, "120"),
        ]);
        assert_eq!(answer(&h, &c), (1800, Refresher::Uac));
        // Lowered to ours, never below the request's Min-SE.
        let h = headers(&[(Supported, "timer"), (Se, "4000"), (MinSe, "2000")]);
        assert_eq!(answer(&h, &c), (2000, Refresher::Uas));
        // A UAC without support cannot refresh: we do.
        let h = headers(&[(Se, "600;refresher=uac")]);
        assert_eq!(answer(&h, &c), (600, Refresher::Uas));
        // No Session-Expires: we may start one ourselves.
        assert_eq!(answer(&Headers::new(), &c), (1800, Refresher::Uas));
        let lazy = SessionTimerConfig {
            we_refresh: false,
            ..c
        };
        let h = headers(&[(Supported, "100rel, timer")]);
        assert_eq!(answer(&h, &lazy), (1800, Refresher::Uac));
    }

    #[test]
    fn only_supporting_uacs_get_422() {
        let c = SessionTimerConfig {
            min_se: 300,
            ..SessionTimerConfig::default()
        };
        use KnownHeader::{SessionExpires as Se, Supported};
        assert_eq!(
            too_small(&headers(&[(Supported, "timer"), (Se, "120")]), &c),
            Some(300)
        );
        assert_eq!(too_small(&headers(&[(Se, "120")]), &c), None);
        assert_eq!(
            too_small(&headers(&[(Supported, "timer"), (Se, "300")]), &c),
            None
        );
        assert_eq!(
            too_small(
                &headers(&[(Supported, "timer")]),
                &SessionTimerConfig::default()
            ),
            None
        );
    }

    #[test]
    fn timers_refresh_at_half_and_expire_early_by_min_32_or_a_third() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let t = SessionTimer::start(t0, 1800, true);
        assert_eq!(
            (t.refresh_at, t.expire_at),
            (Some(t0 + s(900)), t0 + s(1768))
        );
        let t = SessionTimer::start(t0, 90, false);
        assert_eq!((t.refresh_at, t.expire_at), (None, t0 + s(60)));
        use KnownHeader::SessionExpires as Se;
        let uac = |v| SessionTimer::from_2xx(t0, &headers(&[(Se, v)]), true);
        assert!(uac("90;refresher=uac").unwrap().we_refresh);
        assert!(!uac("90;refresher=uas").unwrap().we_refresh);
        assert!(uac("90").unwrap().we_refresh);
        assert_eq!(uac("0"), None);
        assert_eq!(SessionTimer::from_2xx(t0, &Headers::new(), true), None);
        assert!(
            SessionTimer::from_2xx(t0, &headers(&[(Se, "90;refresher=uas")]), false)
                .unwrap()
                .we_refresh
        );
    }

    #[test]
    fn a_lowered_floor_admits_intervals_of_seconds() {
        use KnownHeader::{MinSe, SessionExpires as Se, Supported};
        let fast = SessionTimerConfig {
            session_expires: 6,
            min_se: 2,
            we_refresh: true,
            floor: 2,
        };
        // A request without Min-SE is taken to ask for the floor, not 90 s.
        let h = headers(&[(Supported, "timer"), (Se, "4;refresher=uac")]);
        assert_eq!(too_small(&h, &fast), None);
        assert_eq!(answer(&h, &fast), (4, Refresher::Uac));
        assert_eq!(answer(&Headers::new(), &fast), (6, Refresher::Uas));
        let h = headers(&[(Supported, "timer"), (Se, "1"), (MinSe, "1")]);
        assert_eq!(too_small(&h, &fast), Some(2));
        // The default floor still holds a request without Min-SE to 90 s,
        // and a zero floor means one second.
        let h = headers(&[(Supported, "timer"), (Se, "4;refresher=uac")]);
        assert_eq!(answer(&h, &SessionTimerConfig::default()).0, MIN_INTERVAL);
        let zero = SessionTimerConfig {
            min_se: 0,
            floor: 0,
            ..fast
        };
        assert_eq!(zero.sanitized().min_se, 1);
        let r = fast
            .offer(RequestBuilder::new(
                crate::Method::Invite,
                crate::Uri::parse("sip:a@b").unwrap(),
            ))
            .build()
            .unwrap();
        assert_eq!(r.headers.session_expires().unwrap().unwrap().interval, 6);
        assert_eq!(r.headers.min_se().unwrap(), Some(2));
    }

    #[test]
    fn offers_and_422s_carry_the_right_headers() {
        let c = SessionTimerConfig {
            session_expires: 60,
            min_se: 10,
            ..SessionTimerConfig::default()
        };
        let r = c
            .offer(RequestBuilder::new(
                crate::Method::Invite,
                crate::Uri::parse("sip:a@b").unwrap(),
            ))
            .build()
            .unwrap();
        assert_eq!(
            r.headers.session_expires().unwrap().unwrap().interval,
            MIN_INTERVAL
        );
        assert_eq!(r.headers.min_se().unwrap(), Some(MIN_INTERVAL));
        let resp = reject_422(&r.headers, b"t", 300).unwrap();
        assert_eq!(min_se_of_422(&resp), Some(300));
        assert_eq!(render(90, Refresher::Uac), "90;refresher=uac");
    }
}
