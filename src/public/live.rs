//! Which public pages are live, kept in memory and kept true by PostgreSQL notifications.
//!
//! Every answer of the lookup query is cached per slug and version asked for: the page with its
//! whole file list, or "no such page". A request for any path of a cached page is then answered
//! from memory, so a path that does not exist costs no query and adds nothing. The cache is a
//! [`WeightedLru`]: a page weighs one entry per file, a negative answer one, and the total is
//! bounded, so requests for made-up slugs and versions cannot grow memory.
//!
//! Triggers send the slug on channel `aide_pages` when anything about a page changes (or '*' for
//! everything), and every process evicts on receipt; the process that made a change also evicts
//! at once. The cache is used only while the listening connection is up; when it drops,
//! everything is forgotten and requests go to the database until it is back. A generation
//! counter, bumped on every eviction, keeps an answer read before an eviction from being stored
//! after it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::page::Page;
use crate::cache::WeightedLru;

/// The notification channel the triggers use.
pub const CHANNEL: &str = "aide_pages";

/// The most the cache holds, in entries: a page counts one per file, "no such page" one.
pub const MAX_ENTRIES: usize = 200_000;

/// The key of an answer: the slug for its latest version, `{slug}/{n}` for version n (a slug
/// never holds a `/`), so the hot lookup, the latest version, needs no key built.
fn key(slug: &str, version: Option<i32>) -> String {
    match version {
        Some(n) => format!("{slug}/{n}"),
        None => slug.to_string(),
    }
}

#[derive(Debug)]
pub struct LiveCache {
    entries: Mutex<WeightedLru<String, Option<Arc<Page>>>>,
    generation: AtomicU64,
    listening: AtomicBool,
}

impl Default for LiveCache {
    fn default() -> Self {
        LiveCache::new(MAX_ENTRIES)
    }
}

impl LiveCache {
    /// A cache of at most `max_entries` (see [`MAX_ENTRIES`]).
    pub fn new(max_entries: usize) -> Self {
        LiveCache {
            entries: Mutex::new(WeightedLru::new(max_entries)),
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
        }
    }

    /// The cached answer for (slug, version): Some(None) for a cached "no such page".
    pub fn lookup(&self, slug: &str, version: Option<i32>) -> Option<Option<Arc<Page>>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let mut entries = self.entries.lock().ok()?;
        match version {
            None => entries.get(slug),
            Some(_) => entries.get(key(slug, version).as_str()),
        }
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
        answer: Option<Arc<Page>>,
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
        let weight = 1 + answer.as_ref().map_or(0, |page| page.files.len());
        entries.insert(key(slug, version), answer, weight);
    }

    /// How many entries (by weight) are held.
    pub fn weight(&self) -> usize {
        self.entries.lock().map(|e| e.weight()).unwrap_or(0)
    }

    /// Forgets a slug, every version of it ('*': everything).
    pub fn evict(&self, slug: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            if slug == "*" {
                entries.clear();
            } else {
                let versions = format!("{slug}/");
                entries.retain(|k, _| k != slug && !k.starts_with(&versions));
            }
        }
    }

    /// Forgets everything known about an aide, under whatever slug.
    pub fn evict_aide(&self, aide: Uuid) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            entries.retain(|_, answer| answer.as_ref().is_none_or(|page| page.aide_id != aide));
        }
    }

    pub(crate) fn set_listening(&self, on: bool) {
        self.evict("*");
        self.listening.store(on, Ordering::Release);
    }
}
