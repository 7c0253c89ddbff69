//! Who may do what, and how much: relay keys and their authentication, tenant-signed tokens
//! for end users, access rules (addresses, countries, time windows), CORS, model allowlists,
//! plans, budgets and their notices, prepaid credit, the operator's relay switch, a tenant's
//! own webhooks, admin token roles, and the limits (rate buckets, calendar quotas,
//! concurrency, leases) a key's, a tenant's and an end user's limiter enforce.

pub mod access;
pub mod alerts;
pub mod auth;
pub mod budget;
pub mod cors;
pub mod credits;
pub mod end_user;
pub mod grant;
pub mod limits;
pub mod notices;
pub mod plans;
pub mod roles;
pub mod rules;
pub mod switch;
pub mod tokens;

/// Absurd limits are refused rather than stored (they would overflow nothing, but they are
/// always a typo).
pub const MAX_LIMIT: u64 = 1_000_000_000_000;
