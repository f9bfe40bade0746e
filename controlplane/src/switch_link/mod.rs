//! The control plane's side of the gRPC link to switch nodes
//! (`CODEB_SWITCH_URLS`, contract `codeb.switch.v1`).
//!
//! One lazily connected client per node. Per node, background tasks
//! - probe it with `Stats` (every second while it answers; with capped
//!   exponential backoff and jitter while it does not), which gives health,
//!   load and the configuration version it runs;
//! - read its event stream from the cursor stored in the database
//!   (`events`).
//!
//! Beside them, one task pushes the routing configuration (`config`) and
//! the scheduler (`crate::scheduler`) dispatches due calls to the least
//! loaded healthy node and ends the calls of nodes that stay unreachable
//! longer than `CODEB_SWITCH_LOST_AFTER`.
//!
//! The API uses `choose` (503 `bridge_not_configured` without nodes, 502
//! `bridge_unreachable` when none can take a call), `dispatch` and
//! `hangup`.

pub mod backoff;
pub mod config;
pub mod events;
pub mod node;

use std::sync::Arc;
use std::time::Duration;

use codeb_proto::v1 as pb;
use codeb_types::{CallStatus, UtcMillis};
use tonic::Code;

use self::backoff::Backoff;
use self::node::{ChannelSettings, Node};
use crate::clock::Clock;
use crate::config::SwitchTls;
use crate::store::{Deferral, DispatchCall, Lost, Store};

/// Deadline of one Stats probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time between probes of a healthy node.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Deadline of PlaceCall and Hangup.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a node made of a hangup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// It ends the call now; its `Ended` event follows.
    Ending,
    /// The call was ending already (an earlier hangup, its own end).
    AlreadyEnding,
    /// The node does not know the call: it ended there long ago, or it
    /// was never placed there (its PlaceCall has not arrived, or will not).
    Unknown,
}

impl Hangup {
    /// The hangup changed nothing on the node.
    pub fn was_noop(self) -> bool {
        self != Hangup::Ending
    }
}
/// Calls ended as lost hung up per node per sweep (the rest the next).
const LOST_HANGUPS_PER_ROUND: i64 = 200;
/// How long a call the node had no room for waits before it is tried
/// again (the switch's own hint for a trunk's calls-per-second limit).
pub const CAPACITY_WAIT_MS: i64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// No switch nodes are configured.
    NotConfigured,
    /// Nodes are configured but none can take the request.
    Unreachable(String),
}

/// Link settings.
#[derive(Debug, Clone, Copy)]
pub struct LinkSettings {
    /// A node unreachable this long has lost its calls
    /// (`CODEB_SWITCH_LOST_AFTER`).
    pub lost_after: Duration,
    /// Calls on a node that no control plane has heard from this long,
    /// and that is not in this one's CODEB_SWITCH_URLS, end as lost (its
    /// URL left every control plane's list: no one else would end them).
    pub unwatched_after: Duration,
    pub channel: ChannelSettings,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            lost_after: Duration::from_secs(5),
            unwatched_after: Duration::from_secs(120),
            channel: ChannelSettings {
                connect_timeout: Duration::from_secs(2),
                keepalive: Duration::from_secs(2),
            },
        }
    }
}

/// What became of a dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    /// Placed (or found already placed) on the node.
    Placed {
        node: String,
        trunk_id: String,
        duplicate: bool,
    },
    /// Not placed; the attempt ended and the call is now in this status.
    Failed { status: CallStatus, detail: String },
    /// The outcome is unknown (timeout); the call stays `dispatching` and
    /// is dispatched again to the same node when its lease runs out.
    Unknown { node: String, detail: String },
    /// The node had no room for it now (a trunk or node limit): nothing
    /// rang, the attempt is not spent, and the call waits until `until`.
    Deferred { until: UtcMillis, detail: String },
    /// Someone else owns the call now (cancelled, or taken over).
    Lost,
}

#[derive(Debug)]
pub struct SwitchNodes {
    nodes: Vec<Arc<Node>>,
    settings: LinkSettings,
    clock: Clock,
    /// Fired when a node turns reachable (so configuration goes out now).
    node_appeared: tokio::sync::Notify,
    /// When this control plane began, when it last noted hearing from
    /// each node in the store, and when it last looked for calls on
    /// nodes no one watches (`sweep_unwatched`).
    started: UtcMillis,
    noted: std::sync::Mutex<std::collections::HashMap<String, UtcMillis>>,
    unwatched: std::sync::Mutex<Unwatched>,
    /// How this control plane reaches a node: kept to probe a node it
    /// does not watch before ending that node's calls.
    token: node::Token,
    tls: SwitchTls,
}

/// What [`SwitchNodes::sweep_unwatched`] keeps between its rounds.
#[derive(Debug, Default)]
struct Unwatched {
    /// When it last looked.
    checked: Option<UtcMillis>,
    /// When it first found each node (with calls, beyond its list) with
    /// no note of anyone hearing from it.
    first_found: std::collections::HashMap<String, UtcMillis>,
    /// The nodes it found answering, and when (left out of the search
    /// for [`ANSWERED_RECHECK_MS`], then probed again).
    answered: std::collections::HashMap<String, UtcMillis>,
    /// The nodes that did not answer its last probe (a second miss, a
    /// round later, ends their calls).
    missed: std::collections::HashSet<String>,
}

/// How long a node not watched but answering is left out of the search.
const ANSWERED_RECHECK_MS: i64 = 600_000;

impl SwitchNodes {
    pub fn new(urls: Vec<String>, settings: LinkSettings, clock: Clock) -> SwitchNodes {
        Self::secured(urls, settings, clock, None, &SwitchTls::default())
    }

    /// Nodes whose requests carry `token` (`CODEB_SWITCH_TOKEN`), reached
    /// over `tls` where their URL is `https://`.
    pub fn secured(
        urls: Vec<String>,
        settings: LinkSettings,
        clock: Clock,
        token: Option<&str>,
        tls: &SwitchTls,
    ) -> SwitchNodes {
        let token = node::Token::new(token);
        let mut seen = std::collections::HashSet::new();
        let nodes = urls
            .into_iter()
            .filter(|u| seen.insert(u.clone()))
            .map(|u| Arc::new(Node::new(&u, settings.channel, &token, tls)))
            .collect();
        SwitchNodes {
            nodes,
            settings,
            started: clock.now(),
            clock,
            node_appeared: tokio::sync::Notify::new(),
            noted: std::sync::Mutex::default(),
            unwatched: std::sync::Mutex::default(),
            token,
            tls: tls.clone(),
        }
    }

    pub fn is_configured(&self) -> bool {
        !self.nodes.is_empty()
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url().to_owned()).collect()
    }

    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    pub fn node(&self, url: &str) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.url() == url)
    }

    pub fn settings(&self) -> &LinkSettings {
        &self.settings
    }

    /// The least loaded healthy node by what the probes last saw: lowest
    /// share of call capacity in use, then lowest media load, then the
    /// order of `CODEB_SWITCH_URLS`.
    pub fn choose(&self) -> Result<Arc<Node>, LinkError> {
        if self.nodes.is_empty() {
            return Err(LinkError::NotConfigured);
        }
        let mut best: Option<(&Arc<Node>, (f64, f32))> = None;
        for node in &self.nodes {
            if let Some(key) = node.load_key() {
                let better = best
                    .as_ref()
                    .is_none_or(|(_, b)| key.0 < b.0 || (key.0 == b.0 && key.1 < b.1));
                if better {
                    best = Some((node, key));
                }
            }
        }
        match best {
            Some((n, _)) => Ok(n.clone()),
            None => Err(LinkError::Unreachable(
                self.nodes
                    .iter()
                    .map(|n| n.why_unusable())
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    /// `choose`, but when no node is known usable, probes every node once
    /// first (the API's first call after start, or after an outage).
    pub async fn choose_probing(&self) -> Result<Arc<Node>, LinkError> {
        match self.choose() {
            Err(LinkError::Unreachable(_)) => {
                let probes = self.nodes.iter().map(|n| self.probe(n));
                for ok in futures_join(probes).await {
                    if ok {
                        self.node_appeared.notify_one();
                    }
                }
                self.choose()
            }
            other => other,
        }
    }

    /// One Stats call; records the result. True when it turned the node
    /// reachable.
    async fn probe(&self, node: &Node) -> bool {
        let was = node.health().healthy;
        let result = match node.client() {
            Ok(mut c) => tokio::time::timeout(PROBE_TIMEOUT, c.stats(pb::StatsRequest {}))
                .await
                .map_err(|_| "Stats timed out".to_owned())
                .and_then(|r| r.map_err(|s| describe(&s))),
            Err(e) => Err(e),
        };
        let now = self.clock.now();
        match result {
            Ok(r) => {
                node.record_ok(r.into_inner(), now);
                if !was {
                    // Back: it may still carry calls ended as lost.
                    node.want_lost_hangups();
                }
                !was
            }
            Err(e) => {
                node.record_failure(e, now);
                false
            }
        }
    }

    /// Probes `node` until aborted: every `PROBE_INTERVAL` while it
    /// answers, with backoff while it does not.
    async fn probe_loop(self: Arc<Self>, node: Arc<Node>, store: Store) {
        let mut backoff = Backoff::default();
        loop {
            let appeared = self.probe(&node).await;
            if appeared {
                self.node_appeared.notify_one();
            }
            self.note_heard(&store).await;
            let wait = if node.health().healthy {
                backoff.reset();
                PROBE_INTERVAL
            } else {
                backoff.next_delay()
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Ends the calls of every node unreachable for `lost_after` at `now`,
    /// and of every node that restarted since it took them (a process
    /// that stops loses its calls; the next one does not know them, and
    /// no event would ever end them).
    pub async fn sweep_lost_nodes(&self, store: &Store, now: UtcMillis) {
        self.note_heard(store).await;
        for node in &self.nodes {
            if !node.is_lost(now, self.settings.lost_after) {
                self.sweep_restarted(store, node, now).await;
                // Once what an earlier process of it carried is settled
                // (those calls ended with it).
                let health = node.health();
                if health.healthy && health.instance.as_ref().is_none_or(|i| i.swept) {
                    self.hang_up_lost(store, node, now).await;
                }
                continue;
            }
            let detail = format!("switch node {} lost", node.url());
            // Its calls end when it was last heard from (a probe or an
            // event), not now.
            let seen = node
                .last_heard()
                .or(node.health().failing_since)
                .unwrap_or(now);
            match store
                .sweep_calls_on_node(node.url(), Lost::All, &detail, seen, now)
                .await
            {
                Ok(s) if s.ended == 0 => {}
                Ok(s) => {
                    tracing::error!(node = %node.url(), calls = s.ended,
                        "switch node unreachable for {:?}: its calls ended", self.settings.lost_after);
                    node.want_lost_hangups();
                }
                Err(e) => tracing::error!(node = %node.url(), "ending a lost node's calls: {e}"),
            }
        }
    }

    /// Notes in the store when each node was last heard from (every
    /// sixth of `unwatched_after`, 10 s at most), so that other control
    /// planes on the database know it is watched.
    async fn note_heard(&self, store: &Store) {
        let every = i64::try_from(self.settings.unwatched_after.as_millis() / 6)
            .unwrap_or(i64::MAX)
            .min(10_000);
        for node in &self.nodes {
            let Some(heard) = node.last_heard() else {
                continue;
            };
            let due = self
                .noted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(node.url())
                .is_none_or(|n| heard.0.saturating_sub(n.0) >= every);
            if !due {
                continue;
            }
            match store.note_node_heard(node.url(), heard).await {
                Ok(()) => {
                    self.noted
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(node.url().to_owned(), heard);
                }
                Err(e) => tracing::warn!(node = %node.url(), "noting the node heard from: {e}"),
            }
        }
    }

    /// Ends the calls of nodes that are in no control plane's
    /// CODEB_SWITCH_URLS (a renamed host, a node taken out of service),
    /// which nothing else would ever end: no one reads their events, and
    /// no one probes them. A node counts as unwatched once no control
    /// plane has noted hearing from it for `unwatched_after` (one never
    /// noted: since this control plane first found it so), and its calls
    /// end only if it does not answer two of this control plane's own
    /// probes a round apart either (no connection: refused, no such host,
    /// timed out; a node that answers anything, an error or a TLS alert
    /// included, answers). One that answers (watched by a control plane
    /// that does not note, or left out of every list by mistake) is
    /// reported, not touched, and looked at again after ten minutes.
    /// Looked for every 5 s (by its own task), once this control plane
    /// has run for `unwatched_after`.
    pub async fn sweep_unwatched(&self, store: &Store, now: UtcMillis) {
        let after = i64::try_from(self.settings.unwatched_after.as_millis()).unwrap_or(i64::MAX);
        if now.0.saturating_sub(self.started.0) < after {
            return;
        }
        let skip: Vec<String> = {
            let mut u = self.unwatched();
            if u.checked.is_some_and(|t| now.0.saturating_sub(t.0) < 5_000) {
                return;
            }
            u.checked = Some(now);
            u.answered
                .retain(|_, at| now.0.saturating_sub(at.0) < ANSWERED_RECHECK_MS);
            u.answered.keys().cloned().collect()
        };
        let mut left_out: Vec<&str> = self.nodes.iter().map(|n| n.url()).collect();
        left_out.extend(skip.iter().map(String::as_str));
        let cutoff = UtcMillis(now.0.saturating_sub(after));
        let beyond = match store.nodes_with_calls_beyond(&left_out, cutoff, 16).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("looking for calls on nodes no one watches: {e}");
                return;
            }
        };
        let stale: Vec<(String, UtcMillis)> = {
            let mut u = self.unwatched();
            u.first_found
                .retain(|url, _| beyond.iter().any(|(b, _)| b == url));
            beyond
                .into_iter()
                .filter_map(|(url, heard)| {
                    let since = match heard {
                        Some(h) => h,
                        None => *u.first_found.entry(url.clone()).or_insert(now),
                    };
                    (now.0.saturating_sub(since.0) >= after).then_some((url, since))
                })
                .collect()
        };
        let answers = futures_join(stale.iter().map(|(url, _)| self.answers(url))).await;
        for ((url, since), answers) in stale.into_iter().zip(answers) {
            let second_miss = {
                let mut u = self.unwatched();
                if answers {
                    u.missed.remove(&url);
                    u.answered.insert(url.clone(), now);
                    false
                } else {
                    // A first miss: the next round's probe decides.
                    !u.missed.insert(url.clone())
                }
            };
            if answers {
                tracing::error!(node = %url, "A SWITCH NODE CARRIES CALLS THAT NO CONTROL PLANE \
                    WATCHES: it is in no CODEB_SWITCH_URLS that notes it, yet answers; its \
                    calls' events are not read and the calls will not end until it is \
                    watched again (add it back to CODEB_SWITCH_URLS)");
                continue;
            }
            if !second_miss {
                continue;
            }
            self.unwatched().missed.remove(&url);
            let detail = format!(
                "switch node {url} lost: no control plane watches it (it is in no CODEB_SWITCH_URLS)"
            );
            match store
                .sweep_calls_on_node(&url, Lost::All, &detail, since, now)
                .await
            {
                Ok(s) if s.ended == 0 => {}
                Ok(s) => tracing::error!(node = %url, calls = s.ended,
                    "calls on a switch node no control plane watches, which does not answer, \
                     were ended as lost"),
                Err(e) => {
                    tracing::error!(node = %url, "ending the calls of an unwatched node: {e}")
                }
            }
        }
    }

    /// Whether the node at `url` answers at all: anything but no
    /// connection (refused, no such host, no TCP within the probe's time)
    /// counts, an error status or a failed TLS handshake included.
    async fn answers(&self, url: &str) -> bool {
        let node = Node::new(url, self.settings.channel, &self.token, &self.tls);
        let Ok(mut client) = node.client() else {
            return false;
        };
        match tokio::time::timeout(PROBE_TIMEOUT, client.stats(pb::StatsRequest {})).await {
            Ok(Ok(_)) => true,
            Err(_) => false,
            Ok(Err(status)) => !no_connection(&status),
        }
    }

    fn unwatched(&self) -> std::sync::MutexGuard<'_, Unwatched> {
        self.unwatched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends the calls of nodes no one watches ([`Self::sweep_unwatched`]),
    /// also in a control plane without nodes of its own.
    async fn unwatched_loop(self: Arc<Self>, store: Store) {
        loop {
            self.sweep_unwatched(&store, self.clock.now()).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    /// A node that answers again after its calls were ended as lost (it
    /// was cut off or frozen, not restarted) may still carry them: each is
    /// hung up there, so its far end gets a BYE and its AI stops, instead
    /// of going on with no record to show for it. The calls are read from
    /// the store (`store::lost_hangups`), so a control plane restarted
    /// meanwhile hangs them up too. A node that restarted does not know
    /// them (NotFound is no error).
    pub(crate) async fn hang_up_lost(&self, store: &Store, node: &Node, now: UtcMillis) {
        if !node.take_lost_hangups_due(now) {
            return;
        }
        let due = match store
            .lost_calls_to_hang_up(node.url(), now, LOST_HANGUPS_PER_ROUND)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(node = %node.url(), "reading the calls lost with the node: {e}");
                node.want_lost_hangups();
                return;
            }
        };
        if due.len() >= usize::try_from(LOST_HANGUPS_PER_ROUND).unwrap_or(usize::MAX) {
            node.want_lost_hangups();
        }
        let mut ended = 0;
        for id in due {
            // Its end says why, so that it corrects the record's times
            // but not its reason (see `store::switch_events`).
            match self
                .hangup_as(node.url(), &id, crate::store::LOST_HANGUP_OUTCOME, 0)
                .await
            {
                Ok(h) => {
                    ended += usize::from(!h.was_noop());
                    if let Err(e) = store.lost_call_hung_up(&id, now).await {
                        tracing::error!(node = %node.url(), call = %id, "recording a lost call's hangup: {e}");
                        node.want_lost_hangups();
                    }
                }
                // The node (not the call) failed: the rest wait for the
                // next look (it answering again, or the recheck), instead
                // of holding the scheduler's tick a timeout each.
                Err(e) => {
                    tracing::warn!(node = %node.url(), call = %id, error = ?e,
                        "hanging up a call ended as lost failed; the rest are tried later");
                    break;
                }
            }
        }
        if ended > 0 {
            tracing::warn!(node = %node.url(), calls = ended,
                "the node answered again still carrying calls ended as lost; hung them up");
        }
    }

    /// Once per instance of `node` (first seen answering), after every
    /// event its predecessors wrote has been applied: ends the calls they
    /// carried.
    async fn sweep_restarted(&self, store: &Store, node: &Node, now: UtcMillis) {
        let Some(inst) = node.health().instance.filter(|i| !i.swept) else {
            return;
        };
        let read = match store.switch_cursor(node.url()).await {
            // The journal the node had then, read up to where it stood.
            Ok(Some(c)) if c.journal_id == inst.journal_id => {
                u64::try_from(c.last_seq).unwrap_or(0) >= inst.last_seq
            }
            // Not read from that journal yet: only an empty one has
            // nothing to wait for.
            Ok(_) => inst.last_seq == 0,
            Err(e) => {
                tracing::error!(node = %node.url(), "reading the node's cursor: {e}");
                return;
            }
        };
        if !read {
            return;
        }
        let detail = format!(
            "switch node {} restarted: the call was lost with its process",
            node.url()
        );
        let seen = inst.predecessor_seen.unwrap_or(now);
        match store
            .sweep_calls_on_node(
                node.url(),
                Lost::CarriedBefore(&inst.id),
                &detail,
                seen,
                now,
            )
            .await
            .map(|s| s.ended)
        {
            Ok(n) => {
                if n > 0 {
                    tracing::error!(node = %node.url(), calls = n,
                        "switch node restarted: the calls its earlier process carried ended");
                }
                node.record_swept(&inst.id);
            }
            Err(e) => tracing::error!(node = %node.url(), "ending a restarted node's calls: {e}"),
        }
        // Calls it lost while unreachable are gone with that process: they
        // need no hangup, and their retries need not wait for them to end
        // there.
        match store
            .lost_calls_ended_by_restart(node.url(), &inst.id, now)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                tracing::error!(node = %node.url(), "forgetting a restarted node's lost calls: {e}")
            }
        }
        match store.release_lost_retries(node.url(), &inst.id, now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(node = %node.url(), calls = n,
                "switch node restarted: the retries of calls lost with it are due after their delay"),
            Err(e) => tracing::error!(node = %node.url(), "releasing lost calls' retries: {e}"),
        }
    }

    /// Places a claimed call: on the node it was already handed to (an
    /// interrupted dispatch), else on the least loaded healthy node. The
    /// node is recorded on the call before `PlaceCall`.
    pub async fn dispatch(&self, store: &Store, call: &DispatchCall) -> Dispatched {
        match self.try_dispatch(store, call).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(call = %call.call_id, "dispatch: store error: {e}");
                Dispatched::Unknown {
                    node: call.node_url.clone().unwrap_or_default(),
                    detail: e.to_string(),
                }
            }
        }
    }

    async fn try_dispatch(
        &self,
        store: &Store,
        call: &DispatchCall,
    ) -> crate::store::Result<Dispatched> {
        let fail = |detail: String| async move {
            match store
                .dispatch_failed(call, &detail, self.clock.now())
                .await?
            {
                Some(status) => Ok(Dispatched::Failed { status, detail }),
                None => Ok(Dispatched::Lost),
            }
        };
        // Nothing rang and the platform itself is the reason (no node up
        // now): the call waits as for a full trunk, its attempt unspent,
        // and is tried again; calls that fall due during a switch outage
        // go out when a node is back instead of failing at once.
        // A repeat of a dispatch that was interrupted (its PlaceCall got no
        // answer) may have rung on its node already: whatever stops this
        // one short of the node's answer leaves it there, unsure (its lease
        // runs out and it is asked again), instead of freeing it for
        // another node, or another attempt, to ring a second time.
        // Past the longest the first could have lasted it is over either
        // way, and is handled as a fresh dispatch.
        let repeat = call.node_url.is_some() && !call.surely_over(self.clock.now());
        let unsure = |node: &str, detail: String| {
            Ok(Dispatched::Unknown {
                node: node.to_owned(),
                detail,
            })
        };
        let defer = |why: String| async move {
            let now = self.clock.now();
            let until = now.plus_ms(CAPACITY_WAIT_MS);
            let detail = format!("not placed yet: {why}");
            tracing::info!(call = %call.call_id, "no switch node can take the call now; it waits: {why}");
            match store.defer_dispatch(call, until, &detail, now).await? {
                Deferral::Deferred => Ok(Dispatched::Deferred { until, detail }),
                // Nothing rang (that is why it would wait), and a hangup
                // was asked for meanwhile: cancelled, on the node it was
                // being handed to.
                Deferral::HangupRequested => {
                    store.cancel_claimed(call, now).await?;
                    tracing::info!(call = %call.call_id, "a hangup was asked for: cancelled, not placed");
                    Ok(Dispatched::Lost)
                }
                Deferral::Lost => Ok(Dispatched::Lost),
            }
        };
        if call.hangup_requested {
            return self.hangup_requested(store, call).await;
        }
        let node = match &call.node_url {
            Some(url) => match self.node(url) {
                Some(n) => n.clone(),
                // The node left CODEB_SWITCH_URLS: nothing can reach it.
                None => return fail(format!("switch node {url} lost")).await,
            },
            None => match self.choose() {
                Ok(n) => n,
                Err(LinkError::NotConfigured) => {
                    return fail("no switch node is configured".into()).await;
                }
                Err(LinkError::Unreachable(why)) => {
                    return defer(format!("no switch node can take the call: {why}")).await;
                }
            },
        };
        // Events do not say which attempt they belong to: a retry placed on
        // a node whose journal still holds unread events of an earlier
        // attempt (the node came back after a crash, or this control plane
        // did) would take those events as its own. It waits until they are
        // read: the claim's lease runs out and the call is dispatched anew.
        if call.node_url.is_none()
            && call.attempt > 1
            && let Some(why) = journal_unread(store, &node).await?
        {
            tracing::info!(call = %call.call_id, node = %node.url(), attempt = call.attempt,
                "retry waits for the node's journal to be read: {why}");
            return Ok(Dispatched::Unknown {
                node: node.url().to_owned(),
                detail: why,
            });
        }
        let trunk = match &call.trunk_id {
            Some(t) => Some(t.clone()),
            None => store
                .default_trunk(&call.tenant)
                .await?
                .map(|t| t.id.to_string()),
        };
        if !store
            .set_dispatch_node(call, node.url(), trunk.as_deref(), self.clock.now())
            .await?
        {
            return Ok(Dispatched::Lost);
        }
        match config::ensure_config(&node, store).await {
            Ok(()) => {}
            Err(config::NotConfigured::Unreached(e) | config::NotConfigured::Failed(e))
                if repeat =>
            {
                return unsure(node.url(), e);
            }
            // Nothing rang and the platform is the reason (the node went
            // away since its last probe): as when no node is up.
            Err(config::NotConfigured::Unreached(e)) => {
                return defer(format!("no configuration on {}: {e}", node.url())).await;
            }
            Err(config::NotConfigured::Failed(e)) => return fail(e).await,
        }
        // A systemPrompt naming a prompt slug is placed as its text (the
        // call record keeps what the integrator sent).
        let system_prompt = store
            .expand_call_prompt(
                &call.tenant,
                &call.system_prompt,
                &call.phone,
                &call.display_name,
            )
            .await?;
        let request = pb::PlaceCallRequest {
            call_id: call.call_id.to_string(),
            tenant: call.tenant.clone(),
            phone: call.phone.clone(),
            display_name: call.display_name.clone(),
            trunk_id: trunk.unwrap_or_default(),
            ai: Some(pb::AiSession {
                model: call.model.clone(),
                voice: call.voice.clone(),
                language: call.language.clone(),
                system_prompt,
                api_key: call.ai_api_key.clone(),
                transfer_targets: Vec::new(),
                save_transcript: true,
            }),
            max_seconds: u32::try_from(call.max_seconds.max(0)).unwrap_or(u32::MAX),
            // Explicit: a lost attempt's retry waits this long and its
            // talk limit (`store::finish_attempt`).
            ring_timeout_seconds: crate::store::PLACED_RING_SECONDS.unsigned_abs() as u32,
            attempt: u32::try_from(call.attempt.max(1)).unwrap_or(u32::MAX),
            // The API has no per-call recording switch: the node's
            // CODEB_RECORD=all records every call.
            record: false,
        };
        let mut client = match node.client() {
            Ok(c) => c,
            Err(e) if repeat => return unsure(node.url(), e),
            Err(e) => return defer(e).await,
        };
        let sent_at = self.clock.now();
        store.placecall_sending(call, sent_at).await?;
        let reply = tokio::time::timeout(CALL_TIMEOUT, client.place_call(request)).await;
        match reply {
            Ok(Ok(r)) if r.get_ref().duplicate && call.node_url.is_none() => {
                // A fresh attempt (not the repeat of an interrupted
                // dispatch) that the node calls a duplicate: it remembers
                // this call id from an earlier attempt and rang nothing.
                // Waiting for events would leave the call in-flight
                // forever, so the attempt ends here.
                fail(format!(
                    "{}: the node treats attempt {} as a duplicate of an earlier attempt \
                     of this call id and did not place it",
                    node.url(),
                    call.attempt
                ))
                .await
            }
            Ok(Ok(r)) => {
                let r = r.into_inner();
                let instance = events::instance_id(&r.instance_id);
                if !store
                    .mark_placed(call, &r.trunk_id, &instance, self.clock.now())
                    .await?
                {
                    tracing::info!(call = %call.call_id, "placed, but events or another \
                        dispatcher moved the call on first");
                    // Events (an answer) may have moved it to in-flight:
                    // which process carries it must still be known.
                    store
                        .record_node_instance(call, node.url(), &instance)
                        .await?;
                }
                if call.node_url.is_some() && !r.duplicate {
                    // The dispatch this repeats never reached the node.
                    store.redispatched(call, node.url(), sent_at).await?;
                }
                tracing::info!(call = %call.call_id, node = %node.url(), attempt = call.attempt,
                    duplicate = r.duplicate, "call placed");
                Ok(Dispatched::Placed {
                    node: node.url().to_owned(),
                    trunk_id: r.trunk_id,
                    duplicate: r.duplicate,
                })
            }
            // No room now (a trunk's concurrency or calls-per-second
            // limit, the node's call limit or media ports): nothing rang.
            // A limit is the platform's own back-pressure, not a failed
            // attempt: the call waits and is tried again, its retries
            // untouched (a campaign larger than the trunk queues instead of
            // failing).
            // So is a node that is going away (shutting down) or that the
            // connection could not reach: nothing rang there either.
            // A repeat that did not reach the core says nothing of what
            // became of the first: it stays. (A node answers a repeat of
            // an attempt it placed as a duplicate before any limit, so
            // a limit's refusal means the first did not ring there.)
            Ok(Err(s)) if repeat && s.code() == Code::Unavailable => {
                unsure(node.url(), format!("{}: {}", node.url(), s.message()))
            }
            // The same codes made by the transport after the request may
            // have gone out (an HTTP/2 keep-alive ping unanswered, a stream
            // reset) say nothing of whether the node placed the call: the
            // call stays with this node, as for a timeout, and its repeat
            // asks the node again.
            Ok(Err(s))
                if matches!(s.code(), Code::ResourceExhausted | Code::Unavailable)
                    && !from_node_or_unsent(&s) =>
            {
                unsure(node.url(), describe(&s))
            }
            Ok(Err(s)) if matches!(s.code(), Code::ResourceExhausted | Code::Unavailable) => {
                defer(format!("{}: {}", node.url(), s.message())).await
            }
            // The node said no: nothing rings; the attempt failed.
            Ok(Err(s)) if matches!(s.code(), Code::FailedPrecondition | Code::InvalidArgument) => {
                fail(format!("{}: {}", node.url(), describe(&s))).await
            }
            Ok(Err(s)) => Ok(Dispatched::Unknown {
                node: node.url().to_owned(),
                detail: describe(&s),
            }),
            Err(_) => Ok(Dispatched::Unknown {
                node: node.url().to_owned(),
                detail: "PlaceCall timed out".into(),
            }),
        }
    }

    /// A claimed call a hangup was asked for (its node could not be
    /// reached then): ended instead of placed. One never handed to a
    /// node, or whose node now says it has not placed the attempt (and so
    /// never will), is cancelled; one the node carries is being hung up
    /// there (its events end it); one whose node still cannot be reached
    /// waits (its lease runs out and it comes back here) until its attempt
    /// must be over, then is cancelled.
    async fn hangup_requested(
        &self,
        store: &Store,
        call: &DispatchCall,
    ) -> crate::store::Result<Dispatched> {
        let Some(url) = call.node_url.clone() else {
            store.cancel_claimed(call, self.clock.now()).await?;
            return Ok(Dispatched::Lost);
        };
        let now = self.clock.now();
        match self.hangup(&url, call.call_id.as_str(), call.attempt).await {
            Ok(Hangup::Unknown) => {
                self.cancel_requested(store, call, &url).await?;
                Ok(Dispatched::Lost)
            }
            Ok(Hangup::Ending | Hangup::AlreadyEnding) => Ok(Dispatched::Unknown {
                node: url,
                detail: "a hangup was asked for; the node is ending the call".into(),
            }),
            Err(_) if call.surely_over(now) => {
                self.cancel_requested(store, call, &url).await?;
                Ok(Dispatched::Lost)
            }
            Err(e) => Ok(Dispatched::Unknown {
                node: url,
                detail: format!("a hangup was asked for; not delivered yet: {e:?}"),
            }),
        }
    }

    /// Cancels `call` for a hangup asked for while it was being
    /// dispatched, its attempt not (or no longer) carried by `node`.
    async fn cancel_requested(
        &self,
        store: &Store,
        call: &DispatchCall,
        node: &str,
    ) -> crate::store::Result<()> {
        let now = self.clock.now();
        let r = store
            .hangup_unknown_to_node(&call.tenant, &call.call_id, node, call.attempt, now)
            .await?;
        tracing::info!(call = %call.call_id, result = ?r, "a call a hangup was asked for is not placed");
        Ok(())
    }

    /// Calls ended as lost with `node_url` may wait to be hung up there
    /// (a lost call cancelled while it waited for its retry): looked for
    /// at the next sweep that finds the node answering.
    pub fn want_lost_hangups(&self, node_url: &str) {
        if let Some(node) = self.node(node_url) {
            node.want_lost_hangups();
        }
    }

    /// Asks `node_url` to end `attempt` of a call (0: whichever it
    /// carries, for calls without attempts such as inbound ones): CANCEL or
    /// BYE, the outcome arriving as its `Ended` event. A node that does not
    /// know the call is not an error: named with its attempt, that means
    /// the node has not placed it and now never will ([`Hangup::Unknown`]).
    pub async fn hangup(
        &self,
        node_url: &str,
        call_id: &str,
        attempt: i64,
    ) -> Result<Hangup, LinkError> {
        self.hangup_as(node_url, call_id, "cancelled", attempt)
            .await
    }

    /// [`Self::hangup`] with the outcome the node's `Ended` is to carry.
    async fn hangup_as(
        &self,
        node_url: &str,
        call_id: &str,
        outcome: &str,
        attempt: i64,
    ) -> Result<Hangup, LinkError> {
        let node = self.node(node_url).ok_or_else(|| {
            LinkError::Unreachable(format!("{node_url}: no longer in CODEB_SWITCH_URLS"))
        })?;
        let mut client = node.client().map_err(LinkError::Unreachable)?;
        let request = pb::HangupRequest {
            call_id: call_id.to_owned(),
            outcome: outcome.to_owned(),
            attempt: u32::try_from(attempt).unwrap_or(0),
        };
        match tokio::time::timeout(CALL_TIMEOUT, client.hangup(request)).await {
            Ok(Ok(r)) if r.get_ref().already_ending => Ok(Hangup::AlreadyEnding),
            Ok(Ok(_)) => Ok(Hangup::Ending),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(Hangup::Unknown),
            Ok(Err(s)) => Err(LinkError::Unreachable(format!(
                "{node_url}: {}",
                describe(&s)
            ))),
            Err(_) => Err(LinkError::Unreachable(format!(
                "{node_url}: Hangup timed out"
            ))),
        }
    }

    /// Starts the probers, event readers, configuration pusher and
    /// scheduler. Dropping (or `shutdown`) the handle stops them.
    pub fn start(self: &Arc<Self>, store: &Store) -> LinkTasks {
        let mut tasks = Vec::new();
        for node in &self.nodes {
            tasks.push(tokio::spawn(
                self.clone().probe_loop(node.clone(), store.clone()),
            ));
            tasks.push(tokio::spawn(events::run(
                node.clone(),
                store.clone(),
                self.clock.clone(),
            )));
        }
        // Without nodes nothing can be placed: scheduled calls wait for a
        // restart with CODEB_SWITCH_URLS rather than failing.
        if !self.nodes.is_empty() {
            tasks.push(tokio::spawn(config::run(self.clone(), store.clone())));
            tasks.push(tokio::spawn(crate::scheduler::run(
                self.clone(),
                store.clone(),
                self.clock.clone(),
            )));
        }
        tasks.push(tokio::spawn(self.clone().unwatched_loop(store.clone())));
        LinkTasks { tasks }
    }
}

/// The link's background tasks; aborted when dropped.
#[derive(Debug)]
pub struct LinkTasks {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LinkTasks {
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for LinkTasks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Why the events `node` had written at its last probe are not all applied
/// yet (by any control plane on this database), or None when they are.
async fn journal_unread(store: &Store, node: &Node) -> crate::store::Result<Option<String>> {
    let Some(stats) = node.health().stats else {
        return Ok(None);
    };
    let written = i64::try_from(stats.last_seq).unwrap_or(i64::MAX);
    if written == 0 {
        return Ok(None);
    }
    Ok(match store.switch_cursor(node.url()).await? {
        Some(c) if c.journal_id == stats.journal_id && c.last_seq >= written => None,
        Some(c) if c.journal_id == stats.journal_id => Some(format!(
            "events {} to {written} of journal {} are not applied yet",
            c.last_seq + 1,
            stats.journal_id
        )),
        _ => Some(format!(
            "journal {} ({written} events) is not read yet",
            stats.journal_id
        )),
    })
}

/// Whether a failed request's status is the node's own answer (read from
/// its trailers, so the node decided) or the transport's failure to reach
/// it at all (no connection: the request never left). Anything else the
/// transport reports may have come after the request was delivered.
pub(super) fn from_node_or_unsent(s: &tonic::Status) -> bool {
    let mut cause = std::error::Error::source(s);
    if cause.is_none() {
        return true;
    }
    // The chain is tonic → tower → hyper → io at most.
    for _ in 0..8 {
        let Some(c) = cause else { break };
        if c.is::<tonic::ConnectError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Whether a failed request found no one at the node's address: no TCP
/// connection (refused, no such host, timed out). A TLS handshake that
/// failed reached someone.
fn no_connection(s: &tonic::Status) -> bool {
    let mut connect = false;
    let mut cause = std::error::Error::source(s);
    for _ in 0..8 {
        let Some(c) = cause else { break };
        if c.is::<rustls::Error>() {
            return false;
        }
        connect |= c.is::<tonic::ConnectError>();
        cause = c.source();
    }
    connect
}

/// A gRPC status as one line: code, message, and the causes beneath a
/// transport failure ("transport error" alone does not say that the TLS
/// handshake failed, or why).
pub(super) fn describe(s: &tonic::Status) -> String {
    let mut line = if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {}", s.code(), s.message())
    };
    let mut cause = std::error::Error::source(s);
    // A few levels: the chain is tonic → hyper → io → rustls at most.
    for _ in 0..6 {
        let Some(c) = cause else { break };
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    // Plaintext HTTP/2 to a port that serves TLS reads the TLS alert as a
    // frame header; say what it likely is.
    if line.contains("frame with invalid size") {
        line.push_str(" (a node serving TLS reached over http://? its URL takes https://)");
    }
    line
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    // Probes are few (one per node) and bounded by PROBE_TIMEOUT each;
    // polling them together keeps the API's worst case at one timeout.
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, res) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *res = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}

#[cfg(test)]
mod tests;
