//! Gateway settings, filled from the node's config; its defaults (src/config.rs,
//! ops/dialtone.toml) are the only ones.

use std::{net::SocketAddr, time::Duration};

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Largest inbound WebSocket message; bigger gets close 1009.
    pub max_frame_bytes: usize,
    /// Largest `body` of a chat message; bigger gets `too_large`.
    pub max_body_bytes: usize,
    /// Time to log in after the upgrade; then close 1008.
    pub login_timeout: Duration,
    /// Frames a connection may have waiting while its socket takes nothing;
    /// past that it is a slow consumer (1013). A late connection task may
    /// hold `outbox::LATE_ALLOWANCE` times as many.
    pub outbox_frames: usize,
    /// How long a blocked write or close may take before the socket is dropped.
    pub write_timeout: Duration,
    /// Open connections above which upgrades get 503.
    pub max_connections: usize,
    /// After `goaway`, how long connections get to leave before close 1012.
    pub drain_grace: Duration,
    /// Retry hint given in `goaway` and `Retry-After` while draining.
    pub drain_retry_after: Duration,
    /// Ping every peer this often; one that answered nothing for a whole
    /// interval is dropped. Zero disables.
    pub ping_interval: Duration,
    /// Socket read buffer of each connection (tungstenite's default is 128 KiB).
    pub read_buffer_bytes: usize,
    /// Listen backlog; the kernel caps it at `net.core.somaxconn`.
    pub backlog: u32,
    /// Longest a connection goes unread after `overloaded` to a send (it was
    /// told to wait `retry_after_ms`). Zero: never held.
    pub max_hold: Duration,
    /// Bearer token for `/admin/*`; `None` hides them (404).
    pub admin_token: Option<String>,
    /// Lets `/admin/fault` make workers panic (drills); off by default.
    pub fault_injection: bool,
}
