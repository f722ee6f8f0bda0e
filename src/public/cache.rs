//! Served files kept in memory. A stored object never changes (it is addressed by its content),
//! so an entry is keyed by what the response depends on and never goes stale; whether the page is
//! live is decided elsewhere (see `live`).
//!
//! Memory is bounded three ways: entries are weighed (body, key and overhead) in a
//! [`WeightedLru`]; objects above [`MAX_CACHED_BYTES`] are not kept (routes stream them); and
//! loading is single-flight (concurrent misses for one key read the object once) within a budget
//! of bytes being read at once ([`LOAD_BUDGET_BYTES`]), so many clients missing at the same time
//! wait rather than multiply memory.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use tokio::sync::{OnceCell, Semaphore};

use crate::cache::WeightedLru;

/// A response body ready to send.
#[derive(Debug)]
pub struct Served {
    pub body: Bytes,
}

/// What a served body depends on: the stored object, and for pages what was added to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub object: String,
    /// The title, address and footer choice added to an HTML page; empty for other files.
    pub additions: String,
}

/// The largest object kept in memory; larger ones are streamed.
pub const MAX_CACHED_BYTES: u64 = 1024 * 1024;
/// The bytes of objects being read into memory at once, across all requests.
pub const LOAD_BUDGET_BYTES: u32 = 32 * 1024 * 1024;
/// What an entry costs besides its body and key.
const ENTRY_OVERHEAD: usize = 128;

type Loading = Arc<OnceCell<Arc<Served>>>;

#[derive(Debug)]
pub struct PageCache {
    entries: Mutex<WeightedLru<Key, Arc<Served>>>,
    loading: Mutex<HashMap<Key, Loading>>,
    /// One permit per KiB being read.
    budget: Semaphore,
}

impl Default for PageCache {
    fn default() -> Self {
        PageCache::new(64 * 1024 * 1024)
    }
}

impl PageCache {
    pub fn new(max_bytes: usize) -> Self {
        PageCache {
            entries: Mutex::new(WeightedLru::new(max_bytes)),
            loading: Mutex::new(HashMap::new()),
            budget: Semaphore::new((LOAD_BUDGET_BYTES / 1024) as usize),
        }
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Served>> {
        self.entries.lock().ok()?.get(key)
    }

    /// The body for `key`: from memory, or from `load` (which reads about `size` bytes), run once
    /// however many requests miss together. Kept when it is small enough.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &Key,
        size: u64,
        load: F,
    ) -> Result<Arc<Served>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Served, E>>,
    {
        if let Some(served) = self.get(key) {
            return Ok(served);
        }
        let cell = match self.loading.lock() {
            Ok(mut loading) => loading.entry(key.clone()).or_default().clone(),
            Err(_) => Arc::new(OnceCell::new()),
        };
        let loaded = cell
            .get_or_try_init(|| async {
                let kib = u32::try_from(size.div_ceil(1024))
                    .unwrap_or(u32::MAX)
                    .clamp(1, LOAD_BUDGET_BYTES / 1024);
                // Never closed, so acquiring only waits.
                let _permit = self.budget.acquire_many(kib).await;
                let served = Arc::new(load().await?);
                self.insert(key.clone(), served.clone());
                Ok(served)
            })
            .await
            .cloned();
        if let Ok(mut loading) = self.loading.lock()
            && loading.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            loading.remove(key);
        }
        loaded
    }

    fn insert(&self, key: Key, served: Arc<Served>) {
        let size = served.body.len();
        if size as u64 > MAX_CACHED_BYTES {
            return;
        }
        let weight = size + key.object.len() + key.additions.len() + ENTRY_OVERHEAD;
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key, served, weight);
        }
    }

    /// The bytes held (bodies, keys and overhead).
    pub fn weight(&self) -> usize {
        self.entries.lock().map(|e| e.weight()).unwrap_or(0)
    }

    /// Forgets every object of `aide` (after it is deleted, so its memory is given back).
    pub fn forget(&self, aide: uuid::Uuid) {
        let prefix = crate::storage::keys::aide_prefix(aide);
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|key, _| !key.object.starts_with(&prefix));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn key(n: usize) -> Key {
        Key {
            object: format!("aides/x/blobs/{n}"),
            additions: String::new(),
        }
    }

    #[tokio::test]
    async fn concurrent_misses_load_once() {
        let cache = Arc::new(PageCache::new(1024 * 1024));
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load(&key(1), 5, || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Ok::<_, ()>(Served {
                            body: Bytes::from_static(b"hello"),
                        })
                    })
                    .await
            }));
        }
        for task in tasks {
            let served = task.await.expect("task").expect("loaded");
            assert_eq!(served.body, Bytes::from_static(b"hello"));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(cache.loading.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn memory_stays_within_budget_and_old_entries_go_first() {
        let cache = PageCache::new(10_000);
        for n in 0..100 {
            cache
                .get_or_load(&key(n), 1000, || async {
                    Ok::<_, ()>(Served {
                        body: Bytes::from(vec![0u8; 1000]),
                    })
                })
                .await
                .expect("loaded");
            assert!(cache.weight() <= 10_000);
        }
        assert!(cache.get(&key(99)).is_some());
        assert!(cache.get(&key(0)).is_none());
    }
}
