//! A token bucket in exact integer arithmetic: the level is kept in units of 1/60000 of a
//! request (or token), so refilling `rate` per minute adds exactly `elapsed_ms × rate` units
//! and nothing drifts. Capacity is the rate plus the burst allowance; a request that used more
//! than it reserved leaves the bucket in debt, paid back by later refills.

use serde::{Deserialize, Serialize};

use crate::support::calendar::MINUTE_MS;

// ---- the state machine ----------------------------------------------------------------

/// A token bucket in units of 1/60000: `rate` per minute refills `elapsed_ms × rate` units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// May go negative: a request that used more than it reserved leaves a debt.
    pub level: i128,
    pub at_ms: i64,
    pub started: bool,
}

pub const UNIT: i128 = MINUTE_MS as i128;

impl Bucket {
    pub fn refill(&mut self, now_ms: i64, rate: u64, capacity: u64) {
        let cap = i128::from(capacity) * UNIT;
        if !self.started {
            *self = Bucket {
                level: cap,
                at_ms: now_ms,
                started: true,
            };
            return;
        }
        let elapsed = i128::from((now_ms - self.at_ms).max(0));
        self.level = (self.level + elapsed * i128::from(rate)).min(cap);
        self.at_ms = self.at_ms.max(now_ms);
    }

    pub fn can_take(&self, amount: u64) -> bool {
        self.level >= i128::from(amount) * UNIT
    }

    pub fn take(&mut self, amount: i128) {
        self.level -= amount * UNIT;
    }

    pub fn remaining(&self) -> u64 {
        u64::try_from(self.level.max(0) / UNIT).unwrap_or(u64::MAX)
    }

    /// Milliseconds until `amount` can be taken (0 if it can now).
    pub fn wait_ms(&self, amount: u64, rate: u64) -> u64 {
        let missing = i128::from(amount) * UNIT - self.level;
        if missing <= 0 || rate == 0 {
            return 0;
        }
        let rate = i128::from(rate);
        u64::try_from((missing + rate - 1) / rate).unwrap_or(u64::MAX)
    }

    /// Milliseconds until the bucket is full again (OpenAI's `x-ratelimit-reset-*`).
    pub fn full_in_ms(&self, rate: u64, capacity: u64) -> u64 {
        self.wait_ms(capacity, rate)
    }
}
