//! Billing: the Pro plan through Stripe. A thin client ([`stripe`]), webhook signatures
//! ([`signature`]), the re-sync every change goes through ([`sync`]), and the routes.

pub mod message;
pub mod repo;
pub mod routes;
pub mod signature;
pub mod stripe;
pub mod sync;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

pub use routes::router;

/// One async lock per key, held by whoever asked last: this process's way of making one user's
/// concurrent "Upgrade" clicks create their Stripe customer one after another.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub async fn lock(&self, key: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Forget the locks nobody holds or waits for.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Webhook deliveries refused for their signature, by reason, since the process started.
#[derive(Debug, Default)]
pub struct WebhookRefusals {
    counts: [AtomicU64; 4],
}

impl WebhookRefusals {
    pub fn count(&self, refusal: signature::Refusal) {
        self.counts[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// All refusals so far.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}
