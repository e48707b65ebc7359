//! dialtone's wire contract (PROTOCOL.md) as types, with no I/O and no tokio.
//!
//! Everything that parses or prints a frame lives here so that the gateway,
//! the services and the tests agree byte for byte.
//!
//! - [`names`]: user and room name rules, direct-room naming (`dm:<a>:<b>`).
//! - [`codes`]: the closed set of error codes and the close codes.
//! - [`client`]: parsing a client frame into a typed [`client::Request`].
//! - [`server`]: building server frames (`ok`, `error`, `message`, ...).

#![forbid(unsafe_code)]

pub mod client;
pub mod codes;
pub mod names;
pub mod server;

pub use client::{Ref, Request, RequestFrame};
pub use codes::{CloseCode, ErrorCode};
pub use names::{Name, RoomName};
