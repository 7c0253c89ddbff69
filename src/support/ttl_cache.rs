//! A small time-bounded cache for lookups an isolate repeats on every request (key grants,
//! channels, the model map), served stale-while-revalidate: an entry is used for `ttl_ms`, and
//! once it is half that old the caller refreshes it in the background, so steady traffic never
//! waits for storage and nothing is used older than `ttl_ms`. Time is passed in; the edge holds
//! one instance per isolate.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

pub struct TtlCache<K, V> {
    entries: HashMap<K, (V, i64)>,
    /// Keys whose refresh is under way (one at a time per key).
    refreshing: HashSet<K>,
    ttl_ms: i64,
    capacity: usize,
}

/// What the cache holds for a key now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached<V> {
    /// Young enough to use as it is.
    Fresh(V),
    /// Still usable (younger than the TTL), and worth refreshing now.
    Stale(V),
    /// Nothing usable: the caller must load it.
    Missing,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl_ms: i64, capacity: usize) -> Self {
        TtlCache {
            entries: HashMap::new(),
            refreshing: HashSet::new(),
            ttl_ms,
            capacity,
        }
    }

    pub fn lookup(&self, key: &K, now_ms: i64) -> Cached<V> {
        match self.entries.get(key) {
            // A clock that goes backwards does not resurrect or extend entries.
            Some((value, stored_at)) if now_ms >= *stored_at => {
                let age = now_ms - stored_at;
                if age * 2 < self.ttl_ms {
                    Cached::Fresh(value.clone())
                } else if age < self.ttl_ms {
                    Cached::Stale(value.clone())
                } else {
                    Cached::Missing
                }
            }
            _ => Cached::Missing,
        }
    }

    /// The value while it is usable, fresh or stale.
    pub fn get(&self, key: &K, now_ms: i64) -> Option<V> {
        match self.lookup(key, now_ms) {
            Cached::Fresh(v) | Cached::Stale(v) => Some(v),
            Cached::Missing => None,
        }
    }

    /// Claim the refresh of `key`: true for the first caller, false while one is under way.
    pub fn start_refresh(&mut self, key: &K) -> bool {
        self.ttl_ms > 0 && self.refreshing.insert(key.clone())
    }

    /// The refresh of `key` ended without a new value (it failed or was cancelled): the next
    /// stale read may try again.
    pub fn end_refresh(&mut self, key: &K) {
        self.refreshing.remove(key);
    }

    pub fn insert(&mut self, key: K, value: V, now_ms: i64) {
        self.refreshing.remove(&key);
        if self.ttl_ms <= 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            // Drop what has expired; if that frees nothing, start over rather than grow:
            // a burst of distinct keys must not make an isolate's memory unbounded.
            let ttl = self.ttl_ms;
            self.entries.retain(|_, (_, at)| now_ms - *at < ttl);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (value, now_ms));
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.refreshing.clear();
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
    fn entries_expire_after_the_ttl() {
        let mut c = TtlCache::new(100, 10);
        c.insert("a", 1, 1000);
        assert_eq!(c.get(&"a", 1099), Some(1));
        assert_eq!(c.get(&"a", 1100), None);
        // a clock that goes backwards does not resurrect or extend entries
        assert_eq!(c.get(&"a", 999), None);
    }

    #[test]
    fn entries_go_stale_at_half_the_ttl_and_one_refresh_at_a_time() {
        let mut c = TtlCache::new(2000, 10);
        c.insert("k", 1, 0);
        assert_eq!(c.lookup(&"k", 999), Cached::Fresh(1));
        assert_eq!(c.lookup(&"k", 1000), Cached::Stale(1));
        assert_eq!(c.lookup(&"k", 1999), Cached::Stale(1));
        assert_eq!(c.lookup(&"k", 2000), Cached::Missing);
        assert!(c.start_refresh(&"k"));
        assert!(
            !c.start_refresh(&"k"),
            "a second refresh waits for the first"
        );
        c.end_refresh(&"k");
        assert!(c.start_refresh(&"k"), "a failed refresh may be tried again");
        c.insert("k", 2, 1500);
        assert_eq!(c.lookup(&"k", 1600), Cached::Fresh(2));
        assert!(c.start_refresh(&"k"), "a new value ends the refresh");
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let mut c = TtlCache::new(0, 10);
        c.insert("a", 1, 0);
        assert!(c.is_empty());
        assert!(!c.start_refresh(&"a"));
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let mut c = TtlCache::new(1_000_000, 3);
        for i in 0..100 {
            c.insert(i, i, i64::from(i));
            assert!(c.len() <= 3);
        }
        assert_eq!(c.get(&99, 100), Some(99));
    }
}
