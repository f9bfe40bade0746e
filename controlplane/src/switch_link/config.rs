//! The routing snapshot pushed to switch nodes (`ApplyConfig`), built from
//! the store, and the task that pushes it: to every node whose running
//! version is not the store's, on a change in this process (the
//! store's `config_wake`, bursts coalesced), on a node (re)appearing, and
//! on a slow poll of the version (changes made by other control planes).
//!
//! Mapping decisions:
//! - SIP users (`/api.ashx/v1/sip-users`) go out with their tenant, digest
//!   password and static contact (their display name stays in the control
//!   plane). The store keeps names unique across tenants and checks
//!   contacts the way the switch's own validation does, so a node never
//!   refuses a snapshot over them.
//! - An inbound route's `user` that names one of the tenant's virtual
//!   numbers targets that number (answered by its AI persona); any other
//!   value is a user.
//! - Only virtual numbers in mode `live-voice-ai` are sent (`disabled` ones
//!   are not answered).
//! - Whitelists are enforced: every outbound call adds its number first,
//!   and the dispatcher makes sure the node runs a configuration at least
//!   as new as the call before it places it (`ensure_config`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use codeb_proto::v1 as pb;
use tonic::Code;

use super::SwitchNodes;
use super::node::Node;
use crate::store::{ConfigRows, Store};

/// Quiet time that ends a burst of changes before one push.
const COALESCE: Duration = Duration::from_millis(100);
/// How often the version is polled for changes made elsewhere.
const POLL: Duration = Duration::from_secs(2);
/// Deadline of one ApplyConfig call.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

fn u32_of(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// What the switch takes of a route's DID, a virtual number's name and its
/// persona's instructions, in bytes (its `Config::validate`): a row past
/// them would make every node refuse the whole snapshot, for every tenant.
const SWITCH_MAX_DID: usize = 64;
const SWITCH_MAX_NUMBER_NAME: usize = 256;
const SWITCH_MAX_PROMPT: usize = 65_536;

/// The snapshot of `rows`.
pub fn snapshot(rows: &ConfigRows) -> pb::ConfigSnapshot {
    // A row the switch would refuse (stored before the API's byte bounds)
    // is left out, and said so, rather than freezing every tenant's
    // configuration.
    let numbers: Vec<_> = rows
        .numbers
        .iter()
        .filter(|n| n.mode == "live-voice-ai")
        .filter(|n| {
            let fits = n.name.len() <= SWITCH_MAX_NUMBER_NAME
                && n.system_prompt.len() <= SWITCH_MAX_PROMPT;
            if !fits {
                tracing::warn!(number = %n.number, tenant = %n.tenant,
                    "virtual number left out of the switch configuration: its name or \
                     instructions are longer than the switch takes");
            }
            fits
        })
        .collect();
    let ai_numbers: HashSet<(&str, &str)> = numbers
        .iter()
        .map(|n| (n.tenant.as_str(), n.number.as_str()))
        .collect();
    // A trunk the switch cannot reach (a `tls` one stored before the API
    // refused them) would make every node refuse the whole snapshot, for
    // every tenant: it is left out, and said so.
    let trunks = rows
        .trunks
        .iter()
        .filter(|t| {
            let usable = matches!(t.transport.as_str(), "udp" | "tcp");
            if !usable {
                tracing::warn!(trunk = %t.id, tenant = %t.tenant, transport = %t.transport,
                    "trunk left out of the switch configuration: the switch has no such transport");
            }
            usable
        })
        .map(|t| pb::Trunk {
            id: t.id.to_string(),
            tenant: t.tenant.clone(),
            host: t.host.clone(),
            port: u32_of(t.port),
            transport: t.transport.clone(),
            username: t.username.clone(),
            password: t.password.clone(),
            realm: String::new(),
            from_user: t.from_user.clone(),
            from_domain: t.from_domain.clone(),
            max_concurrent_calls: u32_of(t.max_concurrent_calls),
            calls_per_second: u32_of(t.calls_per_second),
            register: t.register,
            register_expires: 0,
            is_default: t.is_default,
            inbound: Vec::new(),
            options_interval: 0,
        })
        .collect();
    let users = rows
        .sip_users
        .iter()
        .map(|u| pb::User {
            name: u.name.clone(),
            tenant: u.tenant.clone(),
            password: u.password.clone(),
            contact: u.contact.clone(),
        })
        .collect();
    let routes = rows
        .routes
        .iter()
        .filter(|r| {
            let fits = !r.did.is_empty()
                && r.did.len() <= SWITCH_MAX_DID
                && !r.did.chars().any(char::is_whitespace);
            if !fits {
                tracing::warn!(did = %r.did, tenant = %r.tenant,
                    "inbound route left out of the switch configuration: its DID is not one \
                     the switch takes");
            }
            fits
        })
        .map(|r| pb::InboundRoute {
            tenant: r.tenant.clone(),
            did: r.did.clone(),
            from_number: r.from_number.clone(),
            target: Some(
                if ai_numbers.contains(&(r.tenant.as_str(), r.user.as_str())) {
                    pb::inbound_route::Target::VirtualNumber(r.user.clone())
                } else {
                    pb::inbound_route::Target::User(r.user.clone())
                },
            ),
        })
        .collect();
    let virtual_numbers = numbers
        .iter()
        .map(|n| pb::VirtualNumber {
            tenant: n.tenant.clone(),
            number: n.number.clone(),
            name: n.name.clone(),
            ai: Some(pb::AiSession {
                model: n.model.clone(),
                voice: n.voice.clone(),
                language: n.language.clone(),
                system_prompt: n.system_prompt.clone(),
                api_key: n.ai_api_key.clone(),
                transfer_targets: Vec::new(),
                save_transcript: n.save_transcripts,
            }),
            max_seconds: u32_of(n.max_duration_sec),
        })
        .collect();
    let mut lists: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for t in &rows.trunks {
        lists.entry(t.tenant.as_str()).or_default();
    }
    for (tenant, phone) in &rows.whitelist {
        lists
            .entry(tenant.as_str())
            .or_default()
            .push(phone.clone());
    }
    let whitelists = lists
        .into_iter()
        .map(|(tenant, numbers)| pb::Whitelist {
            tenant: tenant.to_owned(),
            numbers,
            enforce: true,
        })
        .collect();
    pb::ConfigSnapshot {
        version: u64::try_from(rows.version).unwrap_or(0),
        trunks,
        users,
        routes,
        virtual_numbers,
        whitelists,
    }
}

/// What pushing a snapshot to a node did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The node runs this version (or a newer one) now.
    Running(u64),
    /// The node runs a version newer than this database has ever had (the
    /// database was replaced): it ignored the snapshot.
    Ahead(u64),
    /// The node refused the snapshot; it keeps its last good one.
    Refused(String),
    /// Not applied for now: no connection (or one lost under the
    /// request), the node shutting down, or a race with another control
    /// plane's push. Tried again.
    Unreached(String),
    /// Anything else: a timeout, another error, a node running another
    /// deployment's configuration.
    Failed(String),
}

/// Sends `snap` to one node.
pub async fn push(node: &Node, snap: &pb::ConfigSnapshot) -> Pushed {
    let mut client = match node.client() {
        Ok(c) => c,
        Err(e) => return Pushed::Unreached(e),
    };
    let reply = tokio::time::timeout(APPLY_TIMEOUT, client.apply_config(snap.clone())).await;
    match reply {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            if r.running_version > snap.version {
                tracing::warn!(node = %node.url(), ours = snap.version, running = r.running_version,
                    "switch node runs a NEWER configuration version than this control plane's \
                     database holds (was the database recreated or restored?); the database's \
                     version is raised past it and the configuration pushed again");
                return Pushed::Ahead(r.running_version);
            }
            node.record_running_version(r.running_version, snap.version);
            if r.applied {
                tracing::info!(node = %node.url(), version = snap.version, "configuration applied");
            }
            Pushed::Running(r.running_version)
        }
        Ok(Err(status)) if status.code() == Code::InvalidArgument => {
            node.record_refused(snap.version);
            tracing::error!(node = %node.url(), version = snap.version,
                "SWITCH NODE REFUSED THE CONFIGURATION: {}; it keeps running its last good \
                 configuration until a corrected one is pushed", status.message());
            Pushed::Refused(status.message().to_owned())
        }
        // Unavailable, the node's (shutting down) or the transport's (no
        // connection, or one lost under the request): a snapshot rings
        // nothing, so whether it arrived does not matter; tried again.
        Ok(Err(status)) if status.code() == Code::Unavailable => {
            Pushed::Unreached(format!("{}: {}", node.url(), super::describe(&status)))
        }
        Ok(Err(status)) => Pushed::Failed(format!("{}: {}", node.url(), status.message())),
        Err(_) => Pushed::Failed(format!("{}: ApplyConfig timed out", node.url())),
    }
}

/// Whether `node` should be sent `version`: it runs another one (an older
/// one; or a newer one, which this database never had unless another
/// control plane pushed it just now, see [`Pushed::Ahead`]).
fn behind(node: &Node, version: u64) -> bool {
    let h = node.health();
    h.healthy
        && h.running_version != version
        && h.refused_version != Some(version)
        && h.ahead_of != Some(version)
}

/// Pushes the store's configuration to every reachable node that runs an
/// older one. Returns how many nodes it pushed to.
pub async fn push_all(link: &SwitchNodes, store: &Store) -> crate::store::Result<usize> {
    let version = u64::try_from(store.config_version().await?).unwrap_or(0);
    let stale: Vec<Arc<Node>> = link
        .nodes()
        .iter()
        .filter(|n| behind(n, version))
        .cloned()
        .collect();
    if stale.is_empty() {
        return Ok(0);
    }
    let snap = snapshot(&store.config_rows().await?);
    for node in &stale {
        match push(node, &snap).await {
            Pushed::Failed(e) | Pushed::Unreached(e) => {
                tracing::warn!(node = %node.url(), "configuration push failed: {e}");
            }
            Pushed::Ahead(running) => {
                if let Pushed::Failed(e) | Pushed::Unreached(e) =
                    push_past(node, store, snap.version, running).await?
                {
                    tracing::warn!(node = %node.url(), "configuration push failed: {e}");
                }
            }
            Pushed::Running(_) | Pushed::Refused(_) => {}
        }
    }
    Ok(stale.len())
}

/// `node` runs `running`, newer than this database's version (`ours`):
/// the version is raised past it and the configuration pushed again, once.
pub(super) async fn push_past(
    node: &Node,
    store: &Store,
    ours: u64,
    running: u64,
) -> crate::store::Result<Pushed> {
    // Another control plane on this database may have pushed a newer
    // version just now: then this one is behind, not the database.
    let current = u64::try_from(store.config_version().await?).unwrap_or(0);
    if current >= running {
        let snap = snapshot(&store.config_rows().await?);
        // A race with another control plane's push: tried again.
        return Ok(match push(node, &snap).await {
            Pushed::Ahead(v) => Pushed::Unreached(format!(
                "{}: runs a newer configuration ({v}) again",
                node.url()
            )),
            other => other,
        });
    }
    if !node.may_raise_past(ours) {
        tracing::error!(node = %node.url(), ours, running,
            "SWITCH NODE RUNS ANOTHER CONFIGURATION AGAIN after this control plane raised its \
             version past it: is it also configured by another deployment's database? Not \
             pushed to it again until this database's configuration changes");
        return Ok(Pushed::Failed(format!(
            "{} runs a configuration from elsewhere",
            node.url()
        )));
    }
    store
        .raise_config_version(i64::try_from(running).unwrap_or(i64::MAX))
        .await?;
    let snap = snapshot(&store.config_rows().await?);
    Ok(match push(node, &snap).await {
        // Raised meanwhile by another change: the next push settles it.
        Pushed::Ahead(v) => Pushed::Unreached(format!(
            "{}: still runs a newer configuration ({v})",
            node.url()
        )),
        other => other,
    })
}

/// Why a node cannot take a call now for want of our configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotConfigured {
    /// The push did not get through (no connection, the node shutting
    /// down, the store unreadable): the platform's own trouble, gone when
    /// it is.
    Unreached(String),
    /// The node refused it, runs another deployment's configuration, or
    /// the push went wrong otherwise (a timeout): the attempt fails.
    Failed(String),
}

/// Makes sure `node` runs the store's current configuration (or newer)
/// before a call is placed on it.
pub async fn ensure_config(node: &Node, store: &Store) -> Result<(), NotConfigured> {
    let unreached = |e: crate::store::StoreError| NotConfigured::Unreached(e.to_string());
    let version = u64::try_from(store.config_version().await.map_err(unreached)?).unwrap_or(0);
    let h = node.health();
    if h.running_version == version {
        return Ok(());
    }
    let rows = store.config_rows().await.map_err(unreached)?;
    let snap = snapshot(&rows);
    let pushed = match push(node, &snap).await {
        Pushed::Ahead(running) => push_past(node, store, snap.version, running)
            .await
            .map_err(unreached)?,
        other => other,
    };
    match pushed {
        Pushed::Running(_) => Ok(()),
        Pushed::Ahead(_) => Err(NotConfigured::Failed(format!(
            "{} runs a newer configuration",
            node.url()
        ))),
        Pushed::Refused(e) => Err(NotConfigured::Failed(format!(
            "{} refused the configuration: {e}",
            node.url()
        ))),
        Pushed::Unreached(e) => Err(NotConfigured::Unreached(e)),
        Pushed::Failed(e) => Err(NotConfigured::Failed(e)),
    }
}

/// The push task: runs until aborted.
pub async fn run(link: Arc<SwitchNodes>, store: Store) {
    let wake = store.config_wake();
    loop {
        tokio::select! {
            () = wake.notified() => {
                // Let the burst finish; the notification it leaves behind
                // (if any) costs one extra version read.
                tokio::time::sleep(COALESCE).await;
            }
            () = link.node_appeared.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
        if let Err(e) = push_all(&link, &store).await {
            tracing::warn!("configuration push: cannot read the store: {e}");
        }
    }
}
