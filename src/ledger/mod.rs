//! What a request cost and what happened to it: where its token counts come from, the usage row
//! and its columns, prices and cost, the analytics over the rows, redaction of logged bodies, and
//! the response cache.

pub mod analytics;
pub mod pricing;
pub mod redact;
pub mod response_cache;
pub mod row;
pub mod usage;
