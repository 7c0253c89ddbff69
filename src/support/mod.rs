//! Small, domain-free building blocks the rest of the relay shares: hashing and constant-time
//! comparison, base64, calendar arithmetic, URL encoding, and the per-isolate TTL cache.

pub mod base64;
pub mod calendar;
pub mod crypto;
pub mod fields;
pub mod ttl_cache;
pub mod url;
