//! The messaging role: rooms spread over shard workers by a stable hash, so
//! each room has exactly one writer (gap-free seq, ordered fan-out) and no
//! lock is shared by the send paths of different shards.
//!
//! - [`shard`]: one worker: membership, presence, append, fan-out.
//! - [`routes`]: which connections a user has, for direct messages.
//! - [`service`]: [`Messaging`], the handle callers use; routes requests to shards.
//! - [`metrics`]: counters cached once, bumped per batch on the hot path.

#![forbid(unsafe_code)]

pub mod metrics;
pub mod routes;
pub mod service;
pub mod shard;

pub use service::{Messaging, MessagingConfig};
