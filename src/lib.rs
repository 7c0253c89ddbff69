//! edgerelay: an AI API relay that runs as a Cloudflare Worker.
//!
//! Everything that decides something lives in plain modules that never name `worker::` and are
//! tested on the host with `cargo test`. The `edge` module is the only code that touches the
//! Workers runtime (D1, KV, Durable Objects, fetch, streams); it is compiled for wasm32 only, so
//! a host build refuses any pure module that slips and reaches for the runtime.
//!
//! The folders follow the architecture, lowest layer first (a module only uses those above it
//! in this list; `scripts/check-layers.mjs` fails the build on a cycle):

pub mod error;
pub mod support;

pub mod formats;
pub mod providers;

pub mod governance;
pub mod ledger;
pub mod routing;

pub mod admin;
pub mod api;

#[cfg(target_arch = "wasm32")]
mod edge;
