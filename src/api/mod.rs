//! The relay's HTTP surface: which paths and methods exist and what each one is (a relay
//! endpoint, an admin operation, the dashboard), decided before any handler runs, and the
//! query strings of admin listings.

pub mod listing;
pub mod routes;
pub mod server_timing;
