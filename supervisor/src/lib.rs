//! OTP-style supervision trees for tokio tasks.
//!
//! This crate owns starting, watching, restarting and stopping long-lived
//! tasks, and the request/reply mailboxes that let callers survive a worker's
//! crash. It must never know about chat: no frames, rooms or users.
//!
//! The model is Erlang/OTP's: a [`SupervisorSpec`] lists [`ChildSpec`]s in
//! start order, each a worker factory or a nested supervisor, with a
//! [`Restart`] type; a [`Strategy`] says which siblings restart together; an
//! intensity limit makes a crash-looping supervisor give up and escalate to
//! its parent; shutdown goes in reverse start order with a grace per child.
//!
//! Modules:
//! - [`spec`]: restart types, strategies, backoff, child and supervisor specs.
//! - `runner`: the supervisor task itself (restart decisions, stopping).
//! - [`handle`]: starting a tree, [`SupervisorHandle`], [`GaveUp`].
//! - [`dynamic`]: run-time children ([`DynamicSupervisor`], `simple_one_for_one`).
//! - [`event`]: typed lifecycle events, logged and counted in one place.
//! - [`tree`]: the live tree and its serialisable [`TreeNode`] snapshot.
//! - [`call`]: `gen_server:call` with a monitor over a restart-proof mailbox.
#![forbid(unsafe_code)]

pub mod call;
pub mod dynamic;
pub mod event;
pub mod handle;
mod runner;
pub mod spec;
pub mod tree;

pub use call::{CallError, Mailbox, ServerRef};
pub use dynamic::{ChildId, DynamicSupervisor, StartChildError};
pub use event::{Event, EventKind, ExitReason};
pub use handle::{GaveUp, SupervisorHandle};
pub use spec::{
    Backoff, ChildContext, ChildError, ChildSpec, Intensity, Restart, Strategy, SupervisorSpec,
    WorkerFuture,
};
pub use tree::{ChildState, NodeKind, TreeNode};
