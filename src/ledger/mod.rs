//! What a request cost and what happened to it: normalised token usage, the usage row, prices
//! and cost, the analytics over the rows, redaction of logged bodies, and the response cache.

pub mod analytics;
pub mod pricing;
pub mod redact;
pub mod response_cache;
pub mod usage;
