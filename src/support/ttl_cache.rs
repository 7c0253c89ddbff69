//! A small time-bounded cache for lookups an isolate repeats on every request (key grants,
//! channels, the model map). Time is passed in; the edge holds one instance per isolate.

use std::collections::HashMap;
use std::hash::Hash;

pub struct TtlCache<K, V> {
    entries: HashMap<K, (V, i64)>,
    ttl_ms: i64,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl_ms: i64, capacity: usize) -> Self {
        TtlCache {
            entries: HashMap::new(),
            ttl_ms,
            capacity,
        }
    }

    pub fn get(&self, key: &K, now_ms: i64) -> Option<V> {
        match self.entries.get(key) {
            Some((value, stored_at))
                if now_ms - stored_at < self.ttl_ms && now_ms >= *stored_at =>
            {
                Some(value.clone())
            }
            _ => None,
        }
    }

    pub fn insert(&mut self, key: K, value: V, now_ms: i64) {
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
    fn zero_ttl_caches_nothing() {
        let mut c = TtlCache::new(0, 10);
        c.insert("a", 1, 0);
        assert!(c.is_empty());
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
