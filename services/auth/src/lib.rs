//! The auth role: register, password login and tokens.
//!
//! argon2id costs ~17 ms of CPU and 19 MiB per hash, so hashing never runs on
//! the async workers: a fixed number of supervised workers run it on tokio's
//! blocking threads, fed by a bounded queue ([`pool`]) that answers "full" at
//! once instead of queueing without limit. Admission in front of it (the `login`/`register` regulator queues)
//! decides who gets a slot; this pool is the last line of defence.
//!
//! - [`argon`]: argon2id with a hash thread's memory kept between jobs.
//! - [`jwt`]: HS256 tokens with `sub` and `exp`.
//! - [`pool`]: supervised hash workers behind a bounded mailbox.
//! - [`service`]: [`Auth`], the operations the gateway calls.

#![forbid(unsafe_code)]

pub mod argon;
pub mod jwt;
pub mod pool;
pub mod service;

pub use jwt::{Claims, Jwt};
pub use pool::{HashPool, PoolError};
pub use service::{Auth, AuthConfig, Issued};
