//! The supervisor process: one tokio task per supervisor that owns its
//! children's `JoinSet`, learns who died from `join_next_with_id`, and applies
//! the restart type, strategy, intensity and backoff.
//!
//! Everything about one supervisor happens on its own task, so the decisions
//! need no locks; only the status nodes read by snapshots are shared.

mod restart;
mod stop;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::OwnedMutexGuard;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dynamic::{ChildId, PoolCommand, StartChildError};
use crate::event::{Emitter, EventKind, ExitReason};
use crate::handle::GaveUp;
use crate::spec::{ChildContext, ChildKind, ChildSpec, Restart, SupervisorSpec};
use crate::tree::{ChildState, Node, NodeKind};

/// What a child task returns: a nested supervisor's give-up reason or a
/// worker's error text; both are just "abnormal" to the parent.
type TaskOutput = Result<(), String>;

/// How one child task ended, as seen through its `JoinSet`.
#[derive(Debug)]
pub(crate) enum Outcome {
    Returned(TaskOutput),
    Panicked(String),
    Aborted,
}

impl Outcome {
    fn is_abnormal(&self) -> bool {
        !matches!(self, Self::Returned(Ok(())))
    }

    fn describe(&self) -> String {
        match self {
            Self::Returned(Ok(())) => "exited normally".to_owned(),
            Self::Returned(Err(e)) => format!("failed: {e}"),
            Self::Panicked(m) => format!("panicked: {m}"),
            Self::Aborted => "was aborted".to_owned(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Finished {
    key: u64,
    id: Id,
    outcome: Outcome,
}

struct Running {
    id: Id,
    token: CancellationToken,
    abort: AbortHandle,
}

struct Slot {
    spec: ChildSpec,
    node: Arc<Node>,
    running: Option<Running>,
    /// This child's restart times within the period: its backoff attempt.
    recent: VecDeque<Instant>,
    /// Started at run time through a pool handle: always one_for_one, and
    /// forgotten once it ends for good so a big pool does not accumulate.
    dynamic: bool,
}

pub(crate) struct Runner {
    spec: SupervisorSpec,
    node: Arc<Node>,
    emitter: Emitter,
    /// Cancelled by the parent (or the handle) to ask for an ordered shutdown.
    token: CancellationToken,
    slots: BTreeMap<u64, Slot>,
    tasks: JoinSet<TaskOutput>,
    by_task: HashMap<Id, u64>,
    /// Exits seen while waiting for a specific child to stop, handled next.
    deferred: VecDeque<Finished>,
    /// Restart times within the intensity period, supervisor-wide.
    restarts: VecDeque<Instant>,
    /// Restarts waiting out a backoff delay, by start key.
    pending: BTreeMap<u64, Instant>,
    /// Held for this incarnation's lifetime: the queue outlives restarts.
    pool: Option<OwnedMutexGuard<mpsc::Receiver<PoolCommand>>>,
}

impl Runner {
    /// Start every static child in order, synchronously, like OTP's `init`.
    pub(crate) fn init(
        spec: SupervisorSpec,
        node: Arc<Node>,
        emitter: Emitter,
        token: CancellationToken,
    ) -> Self {
        node.clear_children();
        let pool = spec.pool.as_ref().and_then(|p| {
            p.live.store(0, Ordering::Relaxed);
            let guard = p.rx.clone().try_lock_owned().ok();
            if guard.is_none() {
                tracing::error!(supervisor = %emitter.path, "pool queue already taken; is the spec used twice?");
            }
            guard
        });
        let mut runner = Self {
            spec,
            node,
            emitter,
            token,
            slots: BTreeMap::new(),
            tasks: JoinSet::new(),
            by_task: HashMap::new(),
            deferred: VecDeque::new(),
            restarts: VecDeque::new(),
            pending: BTreeMap::new(),
            pool,
        };
        let children = std::mem::take(&mut runner.spec.children);
        for (key, child) in (0u64..).zip(children) {
            runner.add_slot(key, child, false);
            runner.start_child(key);
        }
        runner
    }

    fn add_slot(&mut self, key: u64, spec: ChildSpec, dynamic: bool) {
        let (kind, limit) = match &spec.kind {
            ChildKind::Worker(_) => (NodeKind::Worker, 0),
            ChildKind::Supervisor(s) => (NodeKind::Supervisor, s.snapshot_limit),
        };
        let node = Node::new(spec.name.clone(), kind, limit);
        self.node.insert_child(key, node.clone());
        self.slots.insert(
            key,
            Slot {
                spec,
                node,
                running: None,
                recent: VecDeque::new(),
                dynamic,
            },
        );
    }

    fn start_child(&mut self, key: u64) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let token = CancellationToken::new();
        let abort = match &slot.spec.kind {
            ChildKind::Worker(factory) => {
                let factory = factory.clone();
                let ctx = ChildContext {
                    name: slot.spec.name.clone(),
                    token: token.clone(),
                    restarts: slot.node.restarts(),
                };
                // The factory runs inside the task so that a panic in it is
                // caught like any other child panic.
                self.tasks
                    .spawn(async move { factory(ctx).await.map_err(|e| e.message().to_owned()) })
            }
            ChildKind::Supervisor(sup) => {
                let emitter = self.emitter.nested(&sup.name);
                let child =
                    Runner::init((**sup).clone(), slot.node.clone(), emitter, token.clone());
                self.tasks
                    .spawn(async move { child.run().await.map_err(|g| g.reason) })
            }
        };
        self.by_task.insert(abort.id(), key);
        slot.running = Some(Running {
            id: abort.id(),
            token,
            abort,
        });
        slot.node.set_state(ChildState::Running);
        self.emitter.emit(&slot.spec.name, EventKind::Started);
    }

    /// Supervise until asked to stop (`Ok`) or until intensity is exceeded.
    pub(crate) async fn run(mut self) -> Result<(), GaveUp> {
        loop {
            if let Some(done) = self.deferred.pop_front() {
                self.on_exit(done).await?;
                continue;
            }
            let due = self.pending.values().min().copied();
            let pool = self.pool.as_deref_mut();
            let has_pool = pool.is_some();
            tokio::select! {
                biased;
                () = self.token.cancelled() => {
                    self.stop_all().await;
                    return Ok(());
                }
                Some(res) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    if let Some(done) = self.finished(res) {
                        self.on_exit(done).await?;
                    }
                }
                () = sleep_until_opt(due), if due.is_some() => self.start_due(),
                Some(cmd) = recv_opt(pool), if has_pool => self.on_command(cmd).await,
            }
        }
    }

    /// Map a `JoinSet` result back to the child it belongs to.
    fn finished(&mut self, res: Result<(Id, TaskOutput), JoinError>) -> Option<Finished> {
        let (id, outcome) = match res {
            Ok((id, out)) => (id, Outcome::Returned(out)),
            Err(err) if err.is_panic() => {
                let id = err.id();
                (id, Outcome::Panicked(panic_message(err.into_panic())))
            }
            Err(err) => (err.id(), Outcome::Aborted),
        };
        let key = self.by_task.remove(&id)?;
        Some(Finished { key, id, outcome })
    }

    async fn on_exit(&mut self, done: Finished) -> Result<(), GaveUp> {
        let Some(slot) = self.slots.get_mut(&done.key) else {
            return Ok(());
        };
        if slot.running.as_ref().map(|r| r.id) != Some(done.id) {
            return Ok(()); // an earlier incarnation, already accounted for
        }
        slot.running = None;
        let name = slot.spec.name.clone();
        self.emitter.emit(&name, exit_event(&done.outcome, false));
        let abnormal = done.outcome.is_abnormal();
        let restart = match slot.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        };
        if !restart {
            slot.node.set_state(if abnormal {
                ChildState::Failed
            } else {
                ChildState::Stopped
            });
            if slot.dynamic {
                self.forget(done.key);
            }
            return Ok(());
        }
        if self.intensity_exceeded() {
            // Keep the culprit visible in the tree after everything stops.
            if let Some(slot) = self.slots.get(&done.key) {
                slot.node.set_state(ChildState::Failed);
            }
            let i = self.spec.intensity;
            let reason = format!(
                "child '{name}' {}; more than {} restarts in {:?}",
                done.outcome.describe(),
                i.max_restarts,
                i.period
            );
            return Err(self.give_up(reason).await);
        }
        let group = self.restart_group(done.key);
        self.stop_siblings(&group, done.key).await;
        self.schedule_restart(&group, done.key);
        Ok(())
    }

    async fn on_command(&mut self, cmd: PoolCommand) {
        let Some(pool) = self.spec.pool.clone() else {
            return;
        };
        match cmd {
            PoolCommand::Start { spec, reply } => {
                let key = pool.next_key.fetch_add(1, Ordering::Relaxed);
                self.add_slot(key, spec, true);
                self.start_child(key);
                pool.live.fetch_add(1, Ordering::Relaxed);
                // The caller may have given up waiting; the child runs anyway.
                let _ = reply.send(Ok(ChildId(key)));
            }
            PoolCommand::Terminate { id, reply } => {
                let found = self.slots.get(&id.0).is_some_and(|s| s.dynamic);
                if found {
                    self.stop_keys(&[id.0]).await;
                    self.forget(id.0);
                }
                let _ = reply.send(if found {
                    Ok(())
                } else {
                    Err(StartChildError::NoSuchChild)
                });
            }
        }
    }

    /// Drop a dynamic child from the books and the tree.
    fn forget(&mut self, key: u64) {
        if self.slots.remove(&key).is_some() {
            self.pending.remove(&key);
            self.node.remove_child(key);
            if let Some(pool) = &self.spec.pool {
                pool.live.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    async fn give_up(&mut self, reason: String) -> GaveUp {
        self.stop_all().await;
        let own = self.spec.name.clone();
        self.emitter.emit(
            &own,
            EventKind::GaveUp {
                reason: reason.clone(),
            },
        );
        GaveUp {
            supervisor: self.emitter.path.to_string(),
            reason,
        }
    }
}

/// The event for a child's end; `stopping` when we asked it to stop.
fn exit_event(outcome: &Outcome, stopping: bool) -> EventKind {
    let reason = match outcome {
        Outcome::Panicked(message) => {
            return EventKind::Panicked {
                message: message.clone(),
            };
        }
        Outcome::Returned(Ok(())) if stopping => ExitReason::Shutdown,
        Outcome::Returned(Ok(())) => ExitReason::Normal,
        Outcome::Returned(Err(e)) => ExitReason::Error(e.clone()),
        Outcome::Aborted => ExitReason::Killed,
    };
    EventKind::Exited { reason }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn recv_opt(rx: Option<&mut mpsc::Receiver<PoolCommand>>) -> Option<PoolCommand> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
