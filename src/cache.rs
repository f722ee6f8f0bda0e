//! A bounded in-memory map for the caches the service keeps: each entry has a weight (its bytes,
//! or its size in entries), and once the total passes the budget the least recently used entries
//! go first. Nothing in memory grows with traffic beyond its budget.

use std::hash::Hash;

/// A least-recently-used map bounded by the total weight of its entries.
#[derive(Debug)]
pub struct WeightedLru<K: Hash + Eq, V> {
    entries: lru::LruCache<K, (V, usize)>,
    weight: usize,
    budget: usize,
}

impl<K: Hash + Eq, V: Clone> WeightedLru<K, V> {
    /// An empty map that holds at most `budget` in weight.
    pub fn new(budget: usize) -> Self {
        WeightedLru {
            entries: lru::LruCache::unbounded(),
            weight: 0,
            budget,
        }
    }

    /// The value for `key`, which becomes the most recently used.
    pub fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).map(|(value, _)| value.clone())
    }

    /// Keeps `value` under `key` with `weight`, evicting the least recently used entries until
    /// the total fits. A value heavier than the whole budget is not kept (and any old value of
    /// `key` goes).
    pub fn insert(&mut self, key: K, value: V, weight: usize) {
        if weight > self.budget {
            self.remove(&key);
            return;
        }
        if let Some((_, old)) = self.entries.put(key, (value, weight)) {
            self.weight -= old;
        }
        self.weight += weight;
        while self.weight > self.budget {
            match self.entries.pop_lru() {
                Some((_, (_, w))) => self.weight -= w,
                None => break,
            }
        }
    }

    pub fn remove(&mut self, key: &K) {
        if let Some((_, w)) = self.entries.pop(key) {
            self.weight -= w;
        }
    }

    /// Removes every entry for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool)
    where
        K: Clone,
    {
        let doomed: Vec<K> = self
            .entries
            .iter()
            .filter(|(k, (v, _))| !keep(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &doomed {
            self.remove(key);
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.weight = 0;
    }

    /// The total weight held.
    pub fn weight(&self) -> usize {
        self.weight
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_first_once_over_budget() {
        let mut lru = WeightedLru::new(10);
        lru.insert("a", 1, 4);
        lru.insert("b", 2, 4);
        assert_eq!(lru.get(&"a"), Some(1));
        lru.insert("c", 3, 4);
        assert_eq!(lru.get(&"b"), None, "b was least recently used");
        assert_eq!(lru.get(&"a"), Some(1));
        assert_eq!(lru.weight(), 8);
        lru.insert("a", 5, 2);
        assert_eq!(lru.weight(), 6, "a replaced value's weight is given back");
        lru.insert("huge", 9, 11);
        assert_eq!(lru.get(&"huge"), None);
        assert_eq!(lru.len(), 2);
        lru.retain(|k, _| *k != "a");
        assert_eq!((lru.len(), lru.weight()), (1, 4));
        lru.clear();
        assert!(lru.is_empty());
        assert_eq!(lru.weight(), 0);
    }

    #[test]
    fn weight_never_passes_the_budget() {
        let mut lru = WeightedLru::new(1000);
        for i in 0..10_000usize {
            lru.insert(i, i, 1 + i % 17);
            assert!(lru.weight() <= 1000);
        }
    }
}
