//! A callee's redirect (3xx, RFC 3261 §8.1.3.4): the switch recurses on
//! the Contact itself instead of relaying it, so the caller never learns
//! the callee side's addresses (topology hiding). A redirect target is
//! resolved as a REFER's is: the tenant's SIP user of that name, or what
//! an inbound call to it would ring when that is a user of the tenant.
//! Anything else (another trunk number, a foreign host) is refused, as is
//! a redirect once the call has tried `MAX_BRANCHES` branches (loops).
//! A 3xx that is not followed reaches the caller as 480.

use std::time::Instant;

use codeb_sip::header::Contact;
use codeb_sip::{Response, StatusCode};

use super::*;
use crate::ai::user_name_ok;

/// Branches a call may try in all, first fork and redirects together.
const MAX_BRANCHES: usize = 16;
/// Contacts of one 3xx looked at.
const MAX_CONTACTS: usize = 8;

impl Core {
    /// Follows branch `bi`'s 3xx if its Contacts name a user the switch
    /// routes for the call's tenant: new branches ring that user. True if
    /// any went out (the redirecting branch then counts as failed).
    pub(super) fn follow_redirect(
        &mut self,
        now: Instant,
        key: CallKey,
        bi: usize,
        resp: &Response,
    ) -> bool {
        let followed = self.redirect_branches(now, key, bi, resp);
        if followed {
            self.stats.redirects_followed += 1;
        } else {
            self.stats.redirects_refused += 1;
        }
        followed
    }

    fn redirect_branches(
        &mut self,
        now: Instant,
        key: CallKey,
        bi: usize,
        resp: &Response,
    ) -> bool {
        let Some(call) = self.calls.calls.get(&key) else {
            return false;
        };
        if call.phase != Phase::Routing || call.branches.len() >= MAX_BRANCHES {
            return false;
        }
        let mut contacts: Vec<Contact> = resp.headers.contacts().unwrap_or_default();
        contacts.truncate(MAX_CONTACTS);
        // Highest q first (§8.1.3.4); no q counts as 1.0.
        contacts.sort_by_key(|c| std::cmp::Reverse(c.q().unwrap_or(1000)));
        let tenant = self.call_tenant(call);
        let caller = call.a_invite.headers.from().ok();
        let from = caller.as_ref().and_then(user_of);
        let target = contacts.iter().find_map(|c| {
            let user = c
                .addr()?
                .uri
                .as_sip()?
                .user_unescaped()
                .map(|u| String::from_utf8_lossy(&u).into_owned())
                .filter(|u| user_name_ok(u))?;
            self.refer_user(&tenant, &user, from.as_deref())
        });
        let Some(target) = target else {
            tracing::info!(
                call = key,
                "a redirect to no user of the tenant; not followed"
            );
            return false;
        };
        let targets = self.user_targets(&target, now);
        let Some(mut call) = self.calls.calls.remove(&key) else {
            return false;
        };
        let before = call.branches.len();
        self.fork(now, &mut call, targets, Side::B, caller.as_ref());
        let started = call.branches.len() > before;
        if started {
            if let Some(b) = call.branches.get_mut(bi) {
                b.failed = Some(resp.status);
            }
            tracing::info!(call = key, user = %target, "following a redirect");
        }
        self.calls.calls.insert(key, call);
        started
    }
}

/// What the caller hears of a callee's failure: a 3xx is never relayed
/// (its Contact is the callee side's, and the switch follows or refuses
/// redirects itself), nor a challenge or interval demand meant for us.
pub(super) fn relayed_failure(status: StatusCode) -> StatusCode {
    match status.as_u16() {
        300..=399 | 401 | 407 | 422 => StatusCode::TEMPORARILY_UNAVAILABLE,
        _ => status,
    }
}
