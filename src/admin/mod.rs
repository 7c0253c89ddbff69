//! The relay's configuration as the admin API reads and writes it: tenants, keys, channels and
//! the model map, their views without secrets, and the validation of every admin input.

pub mod config;
pub mod fields;
pub mod validate;
