//! edgerelay: an AI API relay that runs as a Cloudflare Worker.
//!
//! Everything that decides something lives in plain modules that never name `worker::` and are
//! tested on the host with `cargo test`. The `edge` module is the only code that touches the
//! Workers runtime (D1, KV, Durable Objects, fetch, streams); it is compiled for wasm32 only, so
//! a host build refuses any pure module that slips and reaches for the runtime.

pub mod access;
pub mod analytics;
pub mod auth;
pub mod base64;
pub mod budget;
pub mod cache;
pub mod config;
pub mod error;
pub mod formats;
pub mod gcp;
pub mod health;
pub mod lease;
pub mod limits;
pub mod pricing;
pub mod providers;
pub mod response_cache;
pub mod routes;
pub mod routing;
pub mod rules;
pub mod sigv4;
pub mod translate;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod edge;
