//! [edge] Everything that touches the Workers runtime: the fetch entry point, the router,
//! D1/KV access, upstream fetches and stream piping. Decisions are delegated to the pure
//! modules of the crate; this code moves bytes and reads the clock and the random source.

mod admin;
mod config;
mod entry;
mod gcp_auth;
mod http;
mod objects;
mod relay;
mod state;
mod store;
mod stream;
mod upstream;
