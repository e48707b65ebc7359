//! Dynamic pools (OTP `simple_one_for_one` / Elixir `DynamicSupervisor`):
//! children started at run time through a [`DynamicSupervisor`] handle.
//!
//! The command queue belongs to the spec, not to one incarnation of the
//! supervisor, so the handle keeps working after the pool is restarted by its
//! parent. Children started at run time are not restarted with the pool (as in
//! OTP): a restarted pool starts empty. Each dynamic child is supervised
//! one_for_one whatever the pool's strategy, and forgotten once it ends for
//! good, so temporary children (connections) do not accumulate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::spec::{ChildSpec, SupervisorSpec};

/// Identifies a run-time child within its pool; never reused by that pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildId(pub(crate) u64);

/// Why a pool could not act on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StartChildError {
    /// The pool's command queue is full (a value at once, never a wait).
    #[error("pool command queue is full")]
    Busy,
    /// The pool stopped, or gave up while the request was queued.
    #[error("pool is not running")]
    NotRunning,
    /// No such run-time child (it may already have ended).
    #[error("no such child")]
    NoSuchChild,
}

pub(crate) enum PoolCommand {
    Start {
        spec: ChildSpec,
        reply: oneshot::Sender<Result<ChildId, StartChildError>>,
    },
    Terminate {
        id: ChildId,
        reply: oneshot::Sender<Result<(), StartChildError>>,
    },
}

/// The receiving side kept in the spec, shared by every incarnation.
#[derive(Clone, Debug)]
pub(crate) struct PoolInbox {
    pub(crate) rx: Arc<Mutex<mpsc::Receiver<PoolCommand>>>,
    /// Keys above every static child, so pool children sort after them.
    pub(crate) next_key: Arc<AtomicU64>,
    pub(crate) live: Arc<AtomicUsize>,
}

/// Dynamic children start above this key, after any static child.
const FIRST_DYNAMIC_KEY: u64 = 1 << 32;

/// Handle to a pool; clone it freely.
#[derive(Clone, Debug)]
pub struct DynamicSupervisor {
    tx: mpsc::Sender<PoolCommand>,
    live: Arc<AtomicUsize>,
}

impl SupervisorSpec {
    /// Let this supervisor also take children at run time. `queue` bounds the
    /// start/terminate requests waiting for the supervisor's loop.
    #[must_use]
    pub fn dynamic(mut self, queue: usize) -> (Self, DynamicSupervisor) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let live = Arc::new(AtomicUsize::new(0));
        self.pool = Some(PoolInbox {
            rx: Arc::new(Mutex::new(rx)),
            next_key: Arc::new(AtomicU64::new(FIRST_DYNAMIC_KEY)),
            live: live.clone(),
        });
        (self, DynamicSupervisor { tx, live })
    }
}

impl DynamicSupervisor {
    /// Start a child under the pool; it is running when this returns `Ok`.
    ///
    /// # Errors
    /// `Busy` when the queue is full, `NotRunning` when the pool is gone.
    ///
    /// # Cancel safety
    /// If cancelled after the request was queued, the child may still start.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<ChildId, StartChildError> {
        let (reply, answer) = oneshot::channel();
        self.send(PoolCommand::Start { spec, reply })?;
        answer.await.unwrap_or(Err(StartChildError::NotRunning))
    }

    /// Stop a run-time child within its grace and forget it.
    ///
    /// # Errors
    /// `NoSuchChild` if it already ended; `Busy`/`NotRunning` as for starts.
    pub async fn terminate_child(&self, id: ChildId) -> Result<(), StartChildError> {
        let (reply, answer) = oneshot::channel();
        self.send(PoolCommand::Terminate { id, reply })?;
        answer.await.unwrap_or(Err(StartChildError::NotRunning))
    }

    /// Run-time children currently known to the pool (running or restarting).
    #[must_use]
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Whether the pool has no run-time children.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn send(&self, cmd: PoolCommand) -> Result<(), StartChildError> {
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StartChildError::Busy,
            mpsc::error::TrySendError::Closed(_) => StartChildError::NotRunning,
        })
    }
}
