//! The gateway: the only crate that speaks HTTP and WebSocket.
//!
//! It admits upgrades, runs one task per connection, turns frames into Bus
//! calls through the sans-IO [`session`], and writes fan-out from a bounded
//! per-connection [`outbox`]. It never touches the store directly.
//!
//! - [`coalesce`]: write batching under the WebSocket layer, buffer freed when idle.
//! - [`admission`]: the named regulator queues and how a rejection is answered.
//! - [`config`]: the gateway's settings (listen address, limits, timeouts).
//! - [`outbox`]: bounded outbound queue; overflow marks a slow consumer.
//! - [`session`]: per-connection state + frame → Bus calls → reply (no socket).
//! - [`conn`]: the connection task: socket I/O, login timeout, drain, close codes.
//! - [`http`]: the router: `/ws` admission, `/healthz`, `/readyz`, `/metrics`, `/admin/*`.
//! - [`lag`]: delivery lag, the fan-out backlog signal the `send` queue is damped by.
//! - [`keepalive`]: one shared ticker that pings every peer and drops dead ones.
//! - [`drain`]: the drain sequence shared by every connection.
//! - [`telemetry`]: metric names, cached handles, the Prometheus recorder.
//! - [`listener`]: a TCP listener with a large accept backlog, and what axum serves from it.
//! - [`quiet`]: a held connection's socket wakes nobody until the hold ends.

// Denied, not forbidden: `quiet` sets one socket option through libc.
#![deny(unsafe_code)]

pub mod admission;
pub mod coalesce;
pub mod config;
pub mod conn;
pub mod drain;
pub mod http;
pub mod keepalive;
pub mod lag;
pub mod listener;
pub mod outbox;
pub mod quiet;
pub mod session;
pub mod telemetry;

pub use config::GatewayConfig;
pub use http::{Gateway, router};
