//! Who may do what, and how much: relay keys and their authentication, access rules
//! (addresses, countries, time windows), model allowlists, budgets and their notices, and the
//! limits (rate buckets, calendar quotas, concurrency, leases) a key's and a tenant's limiter
//! enforce.

pub mod access;
pub mod auth;
pub mod budget;
pub mod limits;
pub mod rules;
