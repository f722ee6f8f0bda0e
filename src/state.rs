//! What every handler can reach: the configuration, the database, the session key, storage,
//! and the in-process caches and limiters, behind one `Arc`.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::ai::provider::{HttpProvider, ModelProvider};
use crate::auth::SessionKey;
use crate::billing::stripe::{StripeApi, StripeClient};
use crate::billing::{KeyedLocks, WebhookRefusals};
use crate::config::Config;
use crate::db::Db;
use crate::limits::{ApiLimiter, InFlight};
use crate::public::{LiveCache, MissLimiter, PageCache};
use crate::storage::Storage;
use crate::turns::hub::TurnHub;

/// What every handler can reach: [`Shared`] behind one `Arc`, so the per-request clones that
/// handlers and middleware take cost one reference count, not one per field.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl AppState {
    pub fn new(config: Arc<Config>, db: Db, session_key: SessionKey, storage: Storage) -> Self {
        Shared::new(config, db, session_key, storage).into()
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub db: Db,
    pub session_key: SessionKey,
    /// Wakes the email worker after an email is queued.
    pub outbox_wake: Arc<Notify>,
    /// This process's share of the per-user API rate limit.
    pub api_limiter: Arc<ApiLimiter>,
    /// Page files.
    pub storage: Storage,
    /// Public pages already read and prepared.
    pub page_cache: Arc<PageCache>,
    /// Which public pages are live (kept true by database notifications).
    pub live_pages: Arc<LiveCache>,
    /// Wakes the storage clean-up worker after an aide is deleted.
    pub storage_cleanup_wake: Arc<Notify>,
    /// Public-page requests memory could not answer, per client network.
    pub public_misses: Arc<MissLimiter>,
    /// Uploads and publishes under way, per user (UPLOADS_IN_FLIGHT_PER_USER).
    pub in_flight: Arc<InFlight>,
    /// The model provider for AI turns; None when AI_PROVIDER is unset.
    pub ai: Option<Arc<dyn ModelProvider>>,
    /// The turns this process runs.
    pub turns: Arc<TurnHub>,
    /// Stripe; None when billing is not configured.
    pub stripe: Option<Arc<dyn StripeApi>>,
    /// One user's concurrent checkouts take turns creating their Stripe customer.
    pub billing_locks: KeyedLocks,
    /// Stripe webhook deliveries refused for their signature.
    pub webhook_refusals: WebhookRefusals,
    /// Requests counted for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Set when the server has been asked to stop: `/ready` answers 503 from then on.
    pub draining: std::sync::atomic::AtomicBool,
    /// Error reports to Sentry; None when SENTRY_DSN is unset.
    pub reporter: Option<Arc<crate::sentry::Reporter>>,
    /// Alerts to Slack; None when SLACK_WEBHOOK is unset.
    pub slack: Option<Arc<crate::alerts::Slack>>,
    /// What this server counts for alerts, added to the database each minute.
    pub ops_counts: Arc<crate::alerts::OpsCounts>,
}

impl Shared {
    pub fn new(config: Arc<Config>, db: Db, session_key: SessionKey, storage: Storage) -> Self {
        let ai = config
            .ai
            .as_ref()
            .map(|ai| Arc::new(HttpProvider::new(ai)) as Arc<dyn ModelProvider>);
        let stripe = config
            .billing
            .as_ref()
            .map(|billing| Arc::new(StripeClient::new(billing)) as Arc<dyn StripeApi>);
        let reporter = crate::sentry::Reporter::start(&config);
        let slack = config
            .ops
            .slack_webhook
            .as_ref()
            .map(|url| Arc::new(crate::alerts::Slack::new(url)));
        Shared {
            reporter,
            slack,
            ops_counts: Arc::new(crate::alerts::OpsCounts::default()),
            stripe,
            billing_locks: KeyedLocks::default(),
            webhook_refusals: WebhookRefusals::default(),
            metrics: crate::metrics::Metrics::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            storage,
            page_cache: Arc::new(PageCache::default()),
            storage_cleanup_wake: Arc::new(Notify::new()),
            live_pages: Arc::new(LiveCache::default()),
            config,
            db,
            session_key,
            outbox_wake: Arc::new(Notify::new()),
            api_limiter: Arc::new(ApiLimiter::default()),
            in_flight: Arc::new(InFlight::default()),
            ai,
            turns: Arc::new(TurnHub::default()),
            public_misses: Arc::new(MissLimiter::default()),
        }
    }
}

impl Shared {
    /// After a change to an aide's public page commits: forget what this process knew about it
    /// at once (other processes hear of it through the database's notification).
    pub fn page_changed(&self, aide: uuid::Uuid, slugs: &[Option<&str>]) {
        self.live_pages.evict_aide(aide);
        for slug in slugs.iter().flatten() {
            self.live_pages.evict(slug);
        }
    }
}
