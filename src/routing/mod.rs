//! Which channel a request tries, in what order, and whether a channel or one of its upstream
//! keys should be tried at all: priority and weighted choice among candidates, a preference for
//! channels near the caller, jurisdiction pinning, a circuit breaker per (channel, upstream
//! model), cooldowns per upstream key, and the retry budget of one request.
//!
//! Everything here is pure: time arrives as `now_ms`, randomness as a `draw` function returning
//! uniform `u32`s, so a test replays any sequence and only the edge reads `Date::now()` or
//! `getrandom`. The breaker and the key pool are the states a Durable Object keeps as JSON, in
//! the manner of `governance::limits`.
//!
//! Floating point is used for geography only; every decision that is counted (breaker windows,
//! cooldowns, budgets) is integer arithmetic, so it cannot drift between isolates.

pub mod attempts;
pub mod breaker;
pub mod canary;
pub mod channel;
pub mod geo;
pub mod health;
pub mod key_pool;
pub mod model_map;
pub mod order;
pub mod retry;

/// A uniform integer in `0..n` from one draw. Multiply-shift rather than modulo: no loop, so a
/// draw sequence maps to exactly one outcome, and the bias is below 2^-32 per unit of `n`.
fn below(draw: u32, n: u64) -> u64 {
    // The product shifted right by 32 is < n, so it fits.
    ((u128::from(draw) * u128::from(n)) >> 32) as u64
}

fn i64_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Marsaglia's xorshift32: deterministic, and uniform enough for tolerance tests.
#[cfg(test)]
fn xorshift(seed: u32) -> impl FnMut() -> u32 {
    let mut s = seed.max(1);
    move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    }
}
