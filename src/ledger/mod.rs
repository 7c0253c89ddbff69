//! What a request cost and what happened to it: where its token counts come from, the usage row
//! and its columns, the tags it is attributed by, prices and cost, the analytics and Prometheus
//! metrics over the rows, redaction of logged bodies, and the response cache.

pub mod analytics;
pub mod metrics;
pub mod pricing;
pub mod redact;
pub mod response_cache;
pub mod row;
pub mod tags;
pub mod usage;
