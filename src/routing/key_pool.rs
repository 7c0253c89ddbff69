//! A channel's pool of upstream keys: a key cools down on 429 (doubling, or for the
//! upstream's Retry-After, capped) and is disabled on 401/403 until an operator re-enables it;
//! a request picks uniformly among the usable ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::routing::{below, i64_ms};

// ---- key pools -------------------------------------------------------------------------

/// Longest a key cools for an upstream's `Retry-After`: a misconfigured upstream asking for a
/// day must not bench a key for a day.
pub const MAX_RETRY_AFTER_MS: u64 = 10 * 60_000;

const FIRST_BACKOFF_MS: u64 = 1_000;

const MAX_BACKOFF_MS: u64 = 60_000;

/// A 429 this long after the previous one starts a new streak: the pool hears only what the
/// relay reports, and a key that went unused for a while should not carry its old streak.
const STREAK_MEMORY_MS: i64 = 10 * 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Ok,
    Cooling,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyReason {
    /// 429 from the upstream.
    RateLimited,
    /// 401: the upstream does not know the key.
    Unauthorized,
    /// 403: the key is known but not allowed (suspended account, no access to the model).
    Forbidden,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct KeyHealth {
    #[serde(default)]
    cooling_until_ms: i64,
    #[serde(default)]
    streak: u32,
    #[serde(default)]
    last_429_ms: i64,
    #[serde(default)]
    disabled: Option<KeyReason>,
}

impl KeyHealth {
    fn available(&self, now_ms: i64) -> bool {
        self.disabled.is_none() && self.cooling_until_ms <= now_ms
    }
}

/// The health of one channel's upstream keys, by fingerprint (never the key itself). Keys the
/// pool has no entry for are healthy; entries go away once there is nothing to remember.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPool {
    #[serde(default)]
    keys: BTreeMap<String, KeyHealth>,
}

/// One key as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    pub fingerprint: String,
    pub state: KeyState,
    /// End of the cooldown while cooling.
    pub until_ms: Option<i64>,
    pub reason: Option<KeyReason>,
    pub consecutive_429s: u32,
}

impl KeyPool {
    fn available(&self, fingerprint: &str, now_ms: i64) -> bool {
        self.keys
            .get(fingerprint)
            .is_none_or(|h| h.available(now_ms))
    }

    /// A uniformly random index into `fingerprints` among keys neither cooling nor disabled;
    /// `None` when there is none (see `next_available_ms`).
    pub fn pick(
        &self,
        fingerprints: &[&str],
        now_ms: i64,
        draw: &mut impl FnMut() -> u32,
    ) -> Option<usize> {
        let open: Vec<usize> = (0..fingerprints.len())
            .filter(|&i| {
                fingerprints
                    .get(i)
                    .is_some_and(|fp| self.available(fp, now_ms))
            })
            .collect();
        match open.len() {
            0 => None,
            1 => open.first().copied(),
            n => {
                let k = usize::try_from(below(draw(), n as u64)).unwrap_or(0);
                open.get(k).copied()
            }
        }
    }

    /// What the upstream answered a request made with this key. 429 cools the key for the
    /// upstream's `Retry-After` (capped) or else 1 s, 2 s, 4 s… up to 60 s over a streak;
    /// 401 and 403 disable it until an operator calls `enable`, since retrying a rejected
    /// credential only adds load; 2xx ends a 429 streak. Other statuses say nothing about the key.
    pub fn on_status(
        &mut self,
        fingerprint: &str,
        status: u16,
        retry_after_ms: Option<u64>,
        now_ms: i64,
    ) {
        match status {
            429 => {
                let h = self.keys.entry(fingerprint.to_string()).or_default();
                let fresh =
                    h.streak == 0 || now_ms.saturating_sub(h.last_429_ms) >= STREAK_MEMORY_MS;
                h.streak = if fresh { 1 } else { h.streak.saturating_add(1) };
                h.last_429_ms = now_ms;
                let cool = match retry_after_ms {
                    Some(ms) => ms.min(MAX_RETRY_AFTER_MS),
                    None => {
                        let doubling = 1u64 << (h.streak - 1).min(16);
                        FIRST_BACKOFF_MS
                            .saturating_mul(doubling)
                            .min(MAX_BACKOFF_MS)
                    }
                };
                // Never shorten a cooldown a later-arriving report already set.
                h.cooling_until_ms = h.cooling_until_ms.max(now_ms.saturating_add(i64_ms(cool)));
            }
            401 | 403 => {
                let reason = if status == 401 {
                    KeyReason::Unauthorized
                } else {
                    KeyReason::Forbidden
                };
                self.keys
                    .entry(fingerprint.to_string())
                    .or_default()
                    .disabled = Some(reason);
            }
            200..=299 => {
                if let Some(h) = self.keys.get_mut(fingerprint) {
                    h.streak = 0;
                    if h.disabled.is_none() && h.cooling_until_ms <= now_ms {
                        self.keys.remove(fingerprint);
                    }
                }
            }
            _ => {}
        }
    }

    /// An operator vouches for the key again: it starts afresh, cooldown and streak included.
    pub fn enable(&mut self, fingerprint: &str) {
        self.keys.remove(fingerprint);
    }

    /// Drops what the pool remembers about keys the channel no longer has.
    pub fn retain_only(&mut self, fingerprints: &[&str]) {
        self.keys
            .retain(|fp, _| fingerprints.contains(&fp.as_str()));
    }

    pub fn view(&self, now_ms: i64) -> Vec<KeyView> {
        self.keys
            .iter()
            .map(|(fp, h)| {
                let (state, until_ms, reason) = match h.disabled {
                    Some(reason) => (KeyState::Disabled, None, Some(reason)),
                    None if h.cooling_until_ms > now_ms => (
                        KeyState::Cooling,
                        Some(h.cooling_until_ms),
                        Some(KeyReason::RateLimited),
                    ),
                    None => (KeyState::Ok, None, None),
                };
                KeyView {
                    fingerprint: fp.clone(),
                    state,
                    until_ms,
                    reason,
                    consecutive_429s: h.streak,
                }
            })
            .collect()
    }

    /// When the first of `fingerprints` can be used again: `now_ms` if one can now, the end of
    /// the shortest cooldown if all are cooling (for the client's `Retry-After`), `None` if
    /// every key is disabled or there are none.
    pub fn next_available_ms(&self, fingerprints: &[&str], now_ms: i64) -> Option<i64> {
        fingerprints
            .iter()
            .filter_map(|fp| match self.keys.get(*fp) {
                None => Some(now_ms),
                Some(h) if h.disabled.is_some() => None,
                Some(h) => Some(h.cooling_until_ms.max(now_ms)),
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::xorshift;

    #[test]
    fn key_pool_backs_off_on_429_streaks() {
        let mut pool = KeyPool::default();
        let mut now = 0;
        for expected in [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000] {
            pool.on_status("k1", 429, None, now);
            assert_eq!(pool.next_available_ms(&["k1"], now), Some(now + expected));
            now += expected;
        }
        // A 2xx ends the streak.
        pool.on_status("k1", 200, None, now);
        assert!(pool.view(now).is_empty(), "nothing left to remember");
        pool.on_status("k1", 429, None, now);
        assert_eq!(pool.next_available_ms(&["k1"], now), Some(now + 1_000));
        // A 429 long after the last one starts a new streak.
        pool.on_status("k1", 429, None, now + 1_000);
        assert_eq!(pool.view(now + 1_000)[0].consecutive_429s, 2);
        pool.on_status("k1", 429, None, now + 1_000 + STREAK_MEMORY_MS);
        assert_eq!(
            pool.view(now + 1_000 + STREAK_MEMORY_MS)[0].consecutive_429s,
            1
        );
    }

    #[test]
    fn key_pool_honours_retry_after_with_a_cap() {
        let mut pool = KeyPool::default();
        pool.on_status("k", 429, Some(5_000), 100);
        assert_eq!(pool.next_available_ms(&["k"], 100), Some(5_100));
        pool.on_status("k", 429, Some(86_400_000), 200);
        assert_eq!(
            pool.next_available_ms(&["k"], 200),
            Some(200 + MAX_RETRY_AFTER_MS as i64)
        );
        // A shorter Retry-After never shortens a cooldown already set.
        pool.on_status("k", 429, Some(1), 300);
        assert_eq!(
            pool.next_available_ms(&["k"], 300),
            Some(200 + MAX_RETRY_AFTER_MS as i64)
        );
    }

    #[test]
    fn key_pool_picks_among_usable_keys() {
        let fps = ["a", "b", "c"];
        let mut pool = KeyPool::default();
        let mut draw = xorshift(77);
        let mut counts = [0; 3];
        for _ in 0..3_000 {
            counts[pool.pick(&fps, 0, &mut draw).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|c| (900..1_100).contains(c)),
            "{counts:?}"
        );
        pool.on_status("a", 429, None, 0);
        pool.on_status("c", 401, None, 0);
        for _ in 0..100 {
            assert_eq!(pool.pick(&fps, 10, &mut draw), Some(1));
        }
        pool.on_status("b", 403, None, 0);
        assert_eq!(pool.pick(&fps, 10, &mut draw), None);
        assert_eq!(pool.next_available_ms(&fps, 10), Some(1_000));
        assert_eq!(pool.pick(&fps, 1_000, &mut draw), Some(0));
        assert_eq!(pool.next_available_ms(&["b", "c"], 10), None);
        assert_eq!(pool.next_available_ms(&[], 10), None);
        assert_eq!(pool.next_available_ms(&["new"], 10), Some(10));
    }

    #[test]
    fn disabled_keys_wait_for_an_operator() {
        let mut pool = KeyPool::default();
        pool.on_status("k", 401, None, 0);
        pool.on_status("k", 200, None, 1);
        assert_eq!(pool.pick(&["k"], 1_000_000, &mut xorshift(1)), None);
        let view = pool.view(5);
        assert_eq!(
            view,
            vec![KeyView {
                fingerprint: "k".into(),
                state: KeyState::Disabled,
                until_ms: None,
                reason: Some(KeyReason::Unauthorized),
                consecutive_429s: 0,
            }]
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json[0]["state"], "disabled");
        assert_eq!(json[0]["reason"], "unauthorized");
        pool.enable("k");
        assert_eq!(pool.pick(&["k"], 6, &mut xorshift(1)), Some(0));
        assert!(pool.view(6).is_empty());
    }

    #[test]
    fn key_pool_views_and_round_trips() {
        let mut pool = KeyPool::default();
        pool.on_status("a", 429, Some(2_000), 0);
        pool.on_status("b", 403, None, 0);
        pool.on_status("c", 500, None, 0);
        let view = pool.view(1_000);
        assert_eq!(view.len(), 2, "a 500 says nothing about the key");
        assert_eq!(
            (view[0].state, view[0].until_ms, view[0].reason),
            (KeyState::Cooling, Some(2_000), Some(KeyReason::RateLimited))
        );
        assert_eq!(pool.view(2_000)[0].state, KeyState::Ok);
        let back: KeyPool = serde_json::from_str(&serde_json::to_string(&pool).unwrap()).unwrap();
        assert_eq!(back, pool);
        pool.retain_only(&["b"]);
        assert_eq!(pool.view(0).len(), 1);
        assert_eq!(
            serde_json::from_str::<KeyPool>("{}").unwrap(),
            KeyPool::default()
        );
    }
}
