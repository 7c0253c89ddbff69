//! Who may do what, and how much: relay keys and their authentication, access rules
//! (addresses, countries, time windows), model allowlists, budgets and their notices, prepaid
//! credit, the operator's relay switch, a tenant's own webhooks, and the limits (rate buckets,
//! calendar quotas, concurrency, leases) a key's and a tenant's limiter enforce.

pub mod access;
pub mod alerts;
pub mod auth;
pub mod budget;
pub mod credits;
pub mod grant;
pub mod limits;
pub mod notices;
pub mod rules;
pub mod switch;

/// Absurd limits are refused rather than stored (they would overflow nothing, but they are
/// always a typo).
pub const MAX_LIMIT: u64 = 1_000_000_000_000;
