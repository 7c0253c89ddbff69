//! The relay's HTTP surface: which paths and methods exist and what each one is (a relay
//! endpoint, an admin resource, the dashboard), decided before any handler runs.

pub mod paths;
