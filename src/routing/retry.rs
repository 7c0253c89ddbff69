//! The retry policy of one request: which outcomes are worth another attempt, and the budget
//! (attempts and time) with exponential backoff and full jitter, honouring a short Retry-After.

use serde::{Deserialize, Serialize};

use crate::routing::below;

// ---- retry policy ----------------------------------------------------------------------

/// Whether an upstream outcome is worth another attempt: no answer (`None`), 408, 425, 429 and
/// the overload/gateway 5xx (500, 502, 503, 504, Anthropic's 529). Any other 4xx would fail the
/// same way again; 409 too (a conflict is about the request's content), and 501 means the
/// upstream lacks the feature.
pub fn retryable(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => matches!(s, 408 | 425 | 429 | 500 | 502 | 503 | 504 | 529),
    }
}

/// How much retrying one request may do. `max_attempts` counts every upstream attempt of the
/// request, on whichever channel, the first included, so fallbacks cannot multiply the load
/// an outage puts on the remaining channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryBudget {
    pub max_attempts: u32,
    /// From the first attempt's start; no attempt starts later than this.
    pub total_ms: i64,
    pub base_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            max_attempts: 3,
            total_ms: 30_000,
            base_backoff_ms: 100,
            max_backoff_ms: 2_000,
        }
    }
}

impl RetryBudget {
    /// The wait before retrying on the same channel after `attempt` attempts have been made,
    /// or `None` when the budget is spent. The wait is full jitter — uniform in
    /// `0..=min(max_backoff, base × 2^(attempt−1))` — so isolates that failed together do not
    /// retry together; an upstream `Retry-After` is a floor. A wait that would end past the
    /// total budget is `None`: the upstream told us not to come back in time.
    pub fn next_delay(
        &self,
        attempt: u32,
        retry_after_ms: Option<u64>,
        started_ms: i64,
        now_ms: i64,
        draw: &mut impl FnMut() -> u32,
    ) -> Option<u64> {
        let remaining = self.remaining_ms(attempt, started_ms, now_ms)?;
        let doubling = 1u64 << attempt.saturating_sub(1).min(32);
        let cap = self
            .base_backoff_ms
            .saturating_mul(doubling)
            .min(self.max_backoff_ms);
        let jitter = below(draw(), cap.saturating_add(1));
        let delay = retry_after_ms.map_or(jitter, |ra| ra.max(jitter));
        (delay < remaining).then_some(delay)
    }

    /// The wait before the next attempt: none when it goes to another channel (the failure
    /// was this channel's, and so was any `Retry-After`), `next_delay` when it is the same
    /// channel again; `None` when the budget is spent either way.
    pub fn delay_before(
        &self,
        next_is_same_channel: bool,
        attempt: u32,
        retry_after_ms: Option<u64>,
        started_ms: i64,
        now_ms: i64,
        draw: &mut impl FnMut() -> u32,
    ) -> Option<u64> {
        if next_is_same_channel {
            self.next_delay(attempt, retry_after_ms, started_ms, now_ms, draw)
        } else {
            self.remaining_ms(attempt, started_ms, now_ms).map(|_| 0)
        }
    }

    /// Milliseconds left for further attempts, `None` when attempts or time are used up.
    fn remaining_ms(&self, attempt: u32, started_ms: i64, now_ms: i64) -> Option<u64> {
        if attempt >= self.max_attempts {
            return None;
        }
        let left = started_ms
            .saturating_add(self.total_ms)
            .saturating_sub(now_ms);
        u64::try_from(left).ok().filter(|&ms| ms > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::xorshift;

    #[test]
    fn what_is_worth_retrying() {
        assert!(retryable(None));
        for s in [408, 425, 429, 500, 502, 503, 504, 529] {
            assert!(retryable(Some(s)), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 413, 422, 501] {
            assert!(!retryable(Some(s)), "{s}");
        }
    }

    #[test]
    fn the_budget_runs_out_by_attempts_and_by_time() {
        let budget = RetryBudget::default();
        let mut draw = xorshift(13);
        assert!(budget.next_delay(1, None, 0, 10, &mut draw).is_some());
        assert!(budget.next_delay(2, None, 0, 10, &mut draw).is_some());
        assert_eq!(budget.next_delay(3, None, 0, 10, &mut draw), None);
        assert_eq!(budget.delay_before(false, 3, None, 0, 10, &mut draw), None);
        assert_eq!(budget.next_delay(1, None, 0, 30_000, &mut draw), None);
        assert_eq!(
            budget.delay_before(false, 1, None, 0, 30_000, &mut draw),
            None
        );
        // A delay that would end past the budget is refused rather than cut short.
        let mut max = || u32::MAX;
        assert_eq!(budget.next_delay(1, None, 0, 29_950, &mut max), None);
        assert_eq!(budget.next_delay(1, None, 0, 29_850, &mut max), Some(100));
    }

    #[test]
    fn retry_after_is_a_floor_when_it_fits() {
        let budget = RetryBudget::default();
        let mut zero = || 0;
        assert_eq!(
            budget.next_delay(1, Some(5_000), 0, 1_000, &mut zero),
            Some(5_000)
        );
        assert_eq!(
            budget.next_delay(1, Some(1), 0, 1_000, &mut || u32::MAX),
            Some(100)
        );
        assert_eq!(
            budget.next_delay(1, Some(29_000), 0, 1_000, &mut zero),
            None
        );
        // Another channel needs no wait, whatever this one said.
        assert_eq!(
            budget.delay_before(false, 1, Some(29_000), 0, 1_000, &mut zero),
            Some(0)
        );
        assert_eq!(
            budget.delay_before(true, 1, Some(5_000), 0, 1_000, &mut zero),
            Some(5_000)
        );
    }

    #[test]
    fn jitter_stays_within_the_exponential_cap() {
        let budget = RetryBudget {
            max_attempts: 10,
            ..RetryBudget::default()
        };
        let mut draw = xorshift(99);
        for (attempt, cap) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (5, 1_600),
            (6, 2_000),
            (9, 2_000),
        ] {
            let delays: Vec<u64> = (0..2_000)
                .filter_map(|_| budget.next_delay(attempt, None, 0, 0, &mut draw))
                .collect();
            assert_eq!(delays.len(), 2_000);
            assert!(delays.iter().all(|&d| d <= cap), "attempt {attempt}");
            let (lo, hi) = (delays.iter().min(), delays.iter().max());
            assert!(
                lo < Some(&(cap / 10)) && hi > Some(&(cap * 9 / 10)),
                "attempt {attempt}: full jitter"
            );
        }
        assert_eq!(budget.next_delay(1, None, 0, 0, &mut || 0), Some(0));
        assert_eq!(
            budget.next_delay(1, None, 0, 0, &mut || u32::MAX),
            Some(100)
        );
    }
}
