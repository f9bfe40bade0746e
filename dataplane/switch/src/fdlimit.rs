//! The open-file limit: a call holds up to four media sockets (RTP and
//! RTCP on each leg), plus its voice-AI WebSocket and its recording file,
//! so a switch sized for `CODEB_MAX_CALLS` needs that many descriptors and
//! some room for SIP, TCP connections and the control link. At start the soft limit is raised as far as the hard limit
//! allows, and a limit still too small is reported with the call count it
//! does allow.

/// Descriptors a call holds at most: four media sockets, a voice-AI
/// WebSocket, a recording file.
pub const FDS_PER_CALL: u64 = 6;
/// Descriptors kept for everything else (SIP sockets, TCP connections,
/// gRPC, the journal, rings).
pub const RESERVE: u64 = 4096;

/// What to do about the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The soft limit already suffices.
    Enough,
    /// Raise the soft limit to this (at most the hard limit).
    Raise(u64),
}

/// Descriptors `max_calls` calls need when the RTP range has `rtp_ports`
/// ports: every call holds at least one port pair, so the range bounds the
/// calls (an AI call: two sockets on one pair, its WebSocket and a
/// recording) whatever `max_calls` says.
pub fn needed(max_calls: u64, rtp_ports: u64) -> u64 {
    max_calls
        .min(rtp_ports / 2)
        .saturating_mul(FDS_PER_CALL)
        .saturating_add(RESERVE)
}

/// Calls a limit of `fds` descriptors carries.
pub fn calls_for(fds: u64) -> u64 {
    fds.saturating_sub(RESERVE) / FDS_PER_CALL
}

pub fn plan(soft: u64, hard: u64, needed: u64) -> Plan {
    if soft >= needed {
        Plan::Enough
    } else {
        Plan::Raise(needed.min(hard).max(soft))
    }
}

/// Checks (and raises) the limit for `max_calls` on `rtp_ports` ports;
/// returns the calls the final limit carries when it is short of them.
#[allow(unsafe_code)]
pub fn ensure(max_calls: u64, rtp_ports: u64) -> std::io::Result<Option<u64>> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let need = needed(max_calls, rtp_ports);
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    let now = match plan(soft, hard, need) {
        Plan::Enough => soft,
        Plan::Raise(to) if to > soft => {
            let new = libc::rlimit {
                rlim_cur: to,
                rlim_max: hard,
            };
            // SAFETY: setrlimit reads one rlimit from a live local.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const new) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            tracing::info!(from = soft, to, "open-file limit raised");
            to
        }
        Plan::Raise(_) => soft,
    };
    Ok((now < need).then(|| calls_for(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_raised_within_the_hard_limit() {
        // The default range (20000-29999) carries 5,000 calls at most,
        // whatever CODEB_MAX_CALLS says.
        assert_eq!(needed(20_000, 10_000), 5_000 * 6 + 4096);
        assert_eq!(needed(100, 10_000), 100 * 6 + 4096);
        let need = needed(20_000, 60_000);
        assert_eq!(need, 124_096);
        assert_eq!(plan(1024, 1_048_576, need), Plan::Raise(need));
        assert_eq!(plan(1024, 65_536, need), Plan::Raise(65_536));
        assert_eq!(plan(200_000, 1_048_576, need), Plan::Enough);
        // A hard limit below the soft one (never on Linux) lowers nothing.
        assert_eq!(plan(2048, 1024, need), Plan::Raise(2048));
        assert_eq!(calls_for(65_536), 10_240);
        assert_eq!(calls_for(100), 0);
        assert_eq!(needed(u64::MAX, u64::MAX), u64::MAX);
    }
}
