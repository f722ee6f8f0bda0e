//! Which public pages are live, kept in memory and kept true by PostgreSQL notifications.
//!
//! Every answer of the lookup query (including "no such page") is cached by slug. Triggers send
//! the slug on channel `aide_pages` when anything about a page changes (or '*' for everything),
//! and every process evicts on receipt; the process that made a change also evicts at once. The
//! cache is used only while the listening connection is up; when it drops, everything is
//! forgotten and requests go to the database until it is back. A generation counter, bumped on
//! every eviction, keeps an answer read before an eviction from being stored after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::repo::LiveFile;
use crate::db::Db;

/// The notification channel the triggers use.
pub const CHANNEL: &str = "aide_pages";

type Entries = HashMap<String, HashMap<(Option<i32>, String), Option<Arc<LiveFile>>>>;

#[derive(Debug, Default)]
pub struct LiveCache {
    entries: Mutex<Entries>,
    generation: AtomicU64,
    listening: AtomicBool,
}

impl LiveCache {
    /// The cached answer for (slug, version, path): Some(None) for a cached "not live".
    pub fn lookup(
        &self,
        slug: &str,
        version: Option<i32>,
        path: &str,
    ) -> Option<Option<Arc<LiveFile>>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        entries
            .get(slug)?
            .get(&(version, path.to_string()))
            .cloned()
    }

    /// Whether answers are being kept (the listening connection is up).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Read before querying the database; pass to [`LiveCache::store`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps an answer, unless something was evicted since `generation` was read.
    pub fn store(
        &self,
        generation: u64,
        slug: &str,
        version: Option<i32>,
        path: &str,
        answer: Option<Arc<LiveFile>>,
    ) {
        if !self.listening.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        // Checked under the lock that evictions also take.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() > 100_000 {
            entries.clear();
        }
        entries
            .entry(slug.to_string())
            .or_default()
            .insert((version, path.to_string()), answer);
    }

    /// Forgets a slug ('*': everything).
    pub fn evict(&self, slug: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            if slug == "*" {
                entries.clear();
            } else {
                entries.remove(slug);
            }
        }
    }

    /// Forgets everything known about an aide, under whatever slug.
    pub fn evict_aide(&self, aide: Uuid) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.retain(|_, files| {
                !files
                    .values()
                    .any(|answer| answer.as_ref().is_some_and(|f| f.aide_id == aide))
            });
        }
    }

    fn set_listening(&self, on: bool) {
        self.evict("*");
        self.listening.store(on, Ordering::Release);
    }

    /// Listens for page changes until `shutdown` turns true, reconnecting after failures.
    pub async fn listen(self: Arc<Self>, db: Db, mut shutdown: watch::Receiver<bool>) {
        loop {
            match db.listener().await {
                Ok(mut listener) => match listener.listen(CHANNEL).await {
                    Ok(()) => {
                        self.set_listening(true);
                        loop {
                            tokio::select! {
                                received = listener.try_recv() => match received {
                                    Ok(Some(notification)) => self.evict(notification.payload()),
                                    // The connection was lost: notifications may have been missed.
                                    Ok(None) | Err(_) => break,
                                },
                                _ = shutdown.changed() => {}
                            }
                            if *shutdown.borrow() {
                                break;
                            }
                        }
                        self.set_listening(false);
                    }
                    Err(e) => tracing::warn!(error = %e, "public pages: could not listen"),
                },
                Err(e) => tracing::warn!(error = %e, "public pages: could not connect to listen"),
            }
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}
