//! Webhook delivery: how an event recorded in the outbox (`store::outbox`)
//! reaches each subscriber, signed, in order per call, once per delivery
//! id, through failures and restarts, and never to an internal address.
//!
//! - `addr`, `guard`: the SSRF guard (which addresses a URL may reach).
//! - `sign`: the `X-CodeB-Signature` and Standard Webhooks signatures.
//! - `schedule`: retries, `Retry-After`, 410 and giving up (pure).
//! - `client`: the HTTP client that connects only to vetted addresses.
//! - `dispatcher`: the workers that claim, deliver and record.

pub mod addr;
pub mod client;
pub mod dispatcher;
pub mod guard;
pub mod schedule;
pub mod sign;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use addr::IpNet;
pub use client::WebhookClient;
pub use dispatcher::{DeliveryConfig, DispatcherHandle};
pub use guard::{GuardError, Resolver, UrlGuard};
pub use schedule::RetryPolicy;

use crate::config::Config;

/// The guard for this configuration: the operator's exceptions, and the
/// control plane's own ports (its HTTP listener, and the switch nodes'
/// gRPC ports in case they run on this machine).
pub fn guard_for(config: &Config) -> UrlGuard {
    let mut own_ports = vec![config.http_addr.port()];
    own_ports.extend(
        config
            .switch_urls
            .iter()
            .filter_map(|u| url::Url::parse(u).ok()?.port_or_known_default()),
    );
    UrlGuard::new(config.webhooks.allow.clone(), own_ports, Resolver::System)
}

/// Starts delivery for `state`'s store, clock and guard.
pub fn start(state: &crate::state::AppState) -> Result<DispatcherHandle, rustls::Error> {
    let w = &state.config.webhooks;
    let client = WebhookClient::new(state.guard.clone(), w.timeout)?;
    let cfg = DeliveryConfig::new(
        RetryPolicy {
            delays: w.retry_delays.clone(),
            ..RetryPolicy::default()
        },
        w.timeout,
    );
    Ok(dispatcher::start(
        state.store.clone(),
        state.clock.clone(),
        client,
        cfg,
        Some(Arc::clone(&state.metrics)),
    ))
}
