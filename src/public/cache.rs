//! Served pages kept in memory. A version's bytes never change, so an entry is keyed by what the
//! response depends on (aide, version, path, footer, title) and never goes stale; whether the
//! page is live is decided by the database on every request, not by this cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use uuid::Uuid;

/// A response body ready to send.
#[derive(Debug)]
pub struct Served {
    pub body: Bytes,
    pub etag: String,
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub aide: Uuid,
    pub version: i32,
    pub path: String,
    pub footer: bool,
    pub title: String,
}

/// A bounded map of served pages. When full it starts again empty: simple, and hot pages return
/// at once.
#[derive(Debug)]
pub struct PageCache {
    entries: Mutex<(HashMap<Key, Arc<Served>>, usize)>,
    max_bytes: usize,
}

impl Default for PageCache {
    fn default() -> Self {
        PageCache::new(64 * 1024 * 1024)
    }
}

impl PageCache {
    pub fn new(max_bytes: usize) -> Self {
        PageCache {
            entries: Mutex::new((HashMap::new(), 0)),
            max_bytes,
        }
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Served>> {
        self.entries.lock().ok()?.0.get(key).cloned()
    }

    pub fn insert(&self, key: Key, served: Arc<Served>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let size = served.body.len();
        if size > self.max_bytes {
            return;
        }
        if entries.1 + size > self.max_bytes {
            entries.0.clear();
            entries.1 = 0;
        }
        entries.1 += size;
        entries.0.insert(key, served);
    }

    /// Forgets every version of `aide` (after it is deleted, so its memory is given back).
    pub fn forget(&self, aide: Uuid) {
        if let Ok(mut entries) = self.entries.lock() {
            let (map, bytes) = &mut *entries;
            map.retain(|key, served| {
                let keep = key.aide != aide;
                if !keep {
                    *bytes -= served.body.len();
                }
                keep
            });
        }
    }
}
