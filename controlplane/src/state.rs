//! Shared application state handed to every handler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use codeb_types::{ApiKeyId, UtcMillis};

use crate::auth::jwt::SigningKey;
use crate::auth::throttle::LoginThrottle;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::switch_link::{LinkSettings, SwitchNodes};
use crate::webhooks::UrlGuard;

/// Audience (`aud`) of access tokens this issuer mints for the v1 API.
pub const API_AUDIENCE: &str = "codeb-api";
/// The one OAuth client: the admin UI and scripts using the password grant.
pub const CLIENT_ID: &str = "codeb-admin";
/// Access token lifetime.
pub const ACCESS_TOKEN_SECS: i64 = 3600;
/// Refresh token lifetime (each use rotates it and restarts the clock).
pub const REFRESH_TOKEN_SECS: i64 = 30 * 24 * 3600;
/// Default user of the auto-inserted catchall inbound route.
pub const CATCHALL_DEFAULT_USER: &str = "operator";

/// What every handler shares, behind one `Arc`: axum clones the state a few
/// times per request (the middleware, the router, each `State` extractor),
/// and a clone of this struct itself took a dozen reference-count updates
/// on counters both cores touch, a visible share of a list page's CPU.
/// Handlers read the fields through `Deref` (`state.store`, `state.config`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The fields of `AppState`.
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub config: Arc<Config>,
    pub signing_key: Arc<SigningKey>,
    pub throttle: Arc<LoginThrottle>,
    pub metrics: Arc<Metrics>,
    pub switch: Arc<SwitchNodes>,
    pub clock: Clock,
    /// When each API key's `last_used_at` was last written, so a busy key
    /// costs one write a minute, not one per request.
    pub key_touches: Arc<Mutex<HashMap<ApiKeyId, UtcMillis>>>,
    /// The SSRF guard webhook URLs pass (at creation and on delivery).
    pub guard: Arc<UrlGuard>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("tenant", &self.config.tenant)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(store: Store, config: Config, signing_key: SigningKey, clock: Clock) -> AppState {
        let settings = LinkSettings {
            lost_after: config.switch_lost_after,
            // Well past what a node that is only cut off (lost_after) or
            // a peer that notes it every few seconds would take.
            unwatched_after: (config.switch_lost_after * 6)
                .max(std::time::Duration::from_secs(120)),
            ..LinkSettings::default()
        };
        let switch = SwitchNodes::secured(
            config.switch_urls.clone(),
            settings,
            clock.clone(),
            config.switch_token.as_deref(),
            &config.switch_tls,
        );
        let guard = Arc::new(crate::webhooks::guard_for(&config));
        let metrics = Arc::new(Metrics::with_call_ends(store.call_ends().clone()));
        AppState(Arc::new(Shared {
            store,
            config: Arc::new(config),
            signing_key: Arc::new(signing_key),
            throttle: Arc::new(LoginThrottle::default()),
            metrics,
            switch: Arc::new(switch),
            clock,
            key_touches: Arc::new(Mutex::new(HashMap::new())),
            guard,
        }))
    }

    /// The same state with another SSRF guard (route tests resolve names
    /// from a fixed table).
    pub fn with_guard(mut self, guard: Arc<UrlGuard>) -> AppState {
        Arc::make_mut(&mut self.0).guard = guard;
        self
    }

    pub fn now(&self) -> UtcMillis {
        self.clock.now()
    }
}
