//! Starting a tree and holding on to it: [`SupervisorHandle`].

use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::event::{Emitter, Event};
use crate::runner::Runner;
use crate::spec::SupervisorSpec;
use crate::tree::{ChildState, Node, NodeKind, TreeNode};

/// Events buffered per subscriber before it starts lagging.
const EVENT_CAPACITY: usize = 1024;

/// A supervisor exceeded its restart intensity and stopped. From the root,
/// this is the reason the node should exit non-zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("supervisor {supervisor} gave up: {reason}")]
pub struct GaveUp {
    /// Path of the supervisor that gave up, e.g. `root`.
    pub supervisor: String,
    /// What failed, including the reasons escalated from below.
    pub reason: String,
}

type Done = Option<Result<(), GaveUp>>;

/// A running tree. Cheap to clone; every clone sees the same tree.
#[derive(Clone, Debug)]
pub struct SupervisorHandle {
    node: Arc<Node>,
    token: CancellationToken,
    done: watch::Receiver<Done>,
    events: broadcast::Sender<Event>,
}

impl SupervisorSpec {
    /// Start the tree: every child is spawned, in order, before this returns.
    ///
    /// # Panics
    /// Outside a tokio runtime, as `tokio::spawn` does.
    #[must_use]
    pub fn start(self) -> SupervisorHandle {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        self.start_with_events(events)
    }

    /// Like [`start`](Self::start), but every event, including the first
    /// `Started`s, also goes to `events` (subscribe before calling this).
    ///
    /// # Panics
    /// Outside a tokio runtime, as `tokio::spawn` does.
    #[must_use]
    pub fn start_with_events(self, events: broadcast::Sender<Event>) -> SupervisorHandle {
        let node = Node::new(self.name.clone(), NodeKind::Supervisor, self.snapshot_limit);
        let token = CancellationToken::new();
        let emitter = Emitter {
            path: self.name.clone(),
            sink: events.clone(),
        };
        let path = self.name.to_string();
        let runner = Runner::init(self, node.clone(), emitter, token.clone());
        let (done_tx, done) = watch::channel(None);
        let inner = tokio::spawn(runner.run());
        let status = node.clone();
        // A second task turns a panic or abort of the root loop itself into a
        // GaveUp, so `wait` always resolves with a reason.
        tokio::spawn(async move {
            let result = match inner.await {
                Ok(result) => result,
                Err(err) => Err(GaveUp {
                    supervisor: path,
                    reason: if err.is_panic() {
                        "supervisor task panicked".to_owned()
                    } else {
                        "supervisor task aborted".to_owned()
                    },
                }),
            };
            status.set_state(if result.is_ok() {
                ChildState::Stopped
            } else {
                ChildState::Failed
            });
            // Receivers may all be gone; nobody is waiting then.
            let _ = done_tx.send(Some(result));
        });
        SupervisorHandle {
            node,
            token,
            done,
            events,
        }
    }
}

impl SupervisorHandle {
    /// The live tree, copied. Takes no supervisor's attention: it reads shared
    /// status, so it is fine to call from an HTTP handler at any rate.
    #[must_use]
    pub fn snapshot(&self) -> TreeNode {
        self.node.snapshot()
    }

    /// Events from now on (see [`SupervisorSpec::start_with_events`] for all).
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Ask for an ordered shutdown without waiting for it.
    pub fn request_shutdown(&self) {
        self.token.cancel();
    }

    /// Stop the tree in reverse start order, each child within its grace, and
    /// return when everything has stopped. The outcome is in [`wait`](Self::wait).
    pub async fn shutdown(&self) {
        self.token.cancel();
        // Shutdown means we no longer care whether the root had given up.
        let _ = self.wait().await;
    }

    /// Resolve when the tree has stopped.
    ///
    /// # Errors
    /// [`GaveUp`] when the root exceeded its intensity (or its task died);
    /// the binary should then exit non-zero with this reason.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future changes nothing.
    pub async fn wait(&self) -> Result<(), GaveUp> {
        let mut done = self.done.clone();
        let result = match done.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_closed) => None,
        };
        result.unwrap_or_else(|| {
            Err(GaveUp {
                supervisor: self.node.snapshot().name,
                reason: "supervisor vanished without a result".to_owned(),
            })
        })
    }

    /// Whether the tree has stopped (or given up).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.done.borrow().is_some()
    }
}
