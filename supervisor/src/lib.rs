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
//! - [`fault`]: named panic points for tests and drills, off unless armed.
//!
//! ```
//! use std::time::Duration;
//! use supervisor::{call, ChildSpec, Restart, SupervisorSpec};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let (doubler, mailbox) = call::channel::<u32, u32>(64);
//! let handle = SupervisorSpec::new("root")
//!     .intensity(5, Duration::from_secs(10))
//!     .child(ChildSpec::worker("doubler", Restart::Permanent, move |ctx| {
//!         let mailbox = mailbox.clone();
//!         Box::pin(async move {
//!             let mut inbox = mailbox.take().await;
//!             loop {
//!                 tokio::select! {
//!                     () = ctx.cancelled() => return Ok(()),
//!                     req = inbox.recv() => match req {
//!                         Some(req) => { req.reply.send(req.request * 2); }
//!                         None => return Ok(()),
//!                     },
//!                 }
//!             }
//!         })
//!     }))
//!     .start();
//!
//! assert_eq!(doubler.call(21, Duration::from_secs(1)).await, Ok(42));
//! assert_eq!(handle.snapshot().children[0].name, "doubler");
//! handle.shutdown().await;
//! assert!(handle.wait().await.is_ok());
//! # });
//! ```
#![forbid(unsafe_code)]

pub mod call;
pub mod dynamic;
pub mod event;
pub mod fault;
pub mod handle;
mod runner;
pub mod spec;
pub mod tree;

pub use call::{CallError, Mailbox, ServerRef};
pub use dynamic::{ChildId, DynamicSupervisor, StartChildError};
pub use event::{Event, EventKind, ExitReason};
pub use fault::Faults;
pub use handle::{GaveUp, SupervisorHandle};
pub use spec::{
    Backoff, ChildContext, ChildError, ChildSpec, Intensity, Restart, Strategy, SupervisorSpec,
    WorkerFuture,
};
pub use tree::{ChildState, NodeKind, TreeNode};
