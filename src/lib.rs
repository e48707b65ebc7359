//! dialtone: a soft real-time chat service built the OTP way.
//!
//! This package is the thin binary plus the code that assembles a node
//! from the role crates (see DESIGN.md):
//!
//! - [`config`]: defaults < TOML file < `DIALTONE_*` environment, validated.
//! - [`local_bus`]: the in-process [`Bus`](dialtone_store::bus::Bus): auth and
//!   messaging called directly, no network in between.
//! - [`node`]: builds the roles, binds the listener, runs until drained.

#![forbid(unsafe_code)]

pub mod config;
pub mod local_bus;
pub mod node;

pub use config::Config;
pub use node::{Node, StartError};
