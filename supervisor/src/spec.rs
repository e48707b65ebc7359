//! Child and supervisor specifications: plain data plus factories.
//!
//! A spec describes *how* to start something and is kept by the supervisor for
//! the whole life of the tree, so every restart starts from the same recipe
//! (OTP's child spec). Specs are cheap to clone: factories sit behind `Arc`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::dynamic::PoolInbox;

/// When a child that has exited is started again (OTP `restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted, whatever the exit reason.
    Permanent,
    /// Restarted only after an abnormal exit: an `Err` or a panic.
    Transient,
    /// Never restarted.
    Temporary,
}

/// Which siblings are restarted with a failed child (OTP `strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the failed child.
    #[default]
    OneForOne,
    /// Every child: the others are stopped in reverse start order, then all
    /// are started again in start order.
    OneForAll,
    /// The failed child and every child started after it.
    RestForOne,
}

/// Exponential restart delay: `initial * 2^(attempt-1)`, capped at `max`.
///
/// `attempt` counts this child's restarts within the intensity period, so a
/// child that has been quiet for a whole period starts again at `initial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart of a period.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Backoff {
    /// Delay before restart number `attempt` (1-based).
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// Why a worker ended abnormally. Any `std::error::Error` converts with `?`.
///
/// Deliberately not an `Error` itself, so that the blanket `From` impl below
/// does not overlap with `From<T> for T`.
pub struct ChildError {
    message: String,
}

impl ChildError {
    /// An error with a plain message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    /// The message, as shown in events and snapshots.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ChildError {
    fn from(err: E) -> Self {
        Self::new(err)
    }
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChildError({:?})", self.message)
    }
}

/// What a worker is given on every (re)start.
#[derive(Debug, Clone)]
pub struct ChildContext {
    pub(crate) name: Arc<str>,
    pub(crate) token: CancellationToken,
    pub(crate) restarts: u64,
}

impl ChildContext {
    /// The child's name from its spec.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cancelled when the supervisor wants this child to stop; the child then
    /// has its spec's grace period to return before it is aborted.
    #[must_use]
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Resolves when a stop is requested (shorthand for `token().cancelled()`).
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// How many times this child has been restarted so far (0 on first start),
    /// so a worker can tell a fresh start from a recovery.
    #[must_use]
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
}

/// The future a worker runs until it ends.
pub type WorkerFuture = BoxFuture<'static, Result<(), ChildError>>;

/// Builds a fresh worker future; called on every (re)start.
pub(crate) type Factory = Arc<dyn Fn(ChildContext) -> WorkerFuture + Send + Sync>;

#[derive(Clone)]
pub(crate) enum ChildKind {
    Worker(Factory),
    Supervisor(Box<SupervisorSpec>),
}

/// One child of a supervisor: a worker or a nested supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) name: Arc<str>,
    pub(crate) restart: Restart,
    /// `None` waits for ever, as OTP's `infinity` (the default for supervisors,
    /// which run their own graces).
    pub(crate) grace: Option<Duration>,
    pub(crate) kind: ChildKind,
}

/// Grace a worker gets to stop after cancellation, as OTP's 5000 ms default.
pub const DEFAULT_WORKER_GRACE: Duration = Duration::from_secs(5);

impl ChildSpec {
    /// A worker: `factory` is called on every start and its future is the child.
    pub fn worker<F>(name: impl Into<Arc<str>>, restart: Restart, factory: F) -> Self
    where
        F: Fn(ChildContext) -> WorkerFuture + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            restart,
            grace: Some(DEFAULT_WORKER_GRACE),
            kind: ChildKind::Worker(Arc::new(factory)),
        }
    }

    /// A nested supervisor, `Permanent`, waiting for its own ordered shutdown.
    #[must_use]
    pub fn supervisor(spec: SupervisorSpec) -> Self {
        Self {
            name: spec.name.clone(),
            restart: Restart::Permanent,
            grace: None,
            kind: ChildKind::Supervisor(Box::new(spec)),
        }
    }

    /// Time the child gets to return after cancellation before it is aborted.
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// Wait for the child to stop however long it takes (OTP `infinity`).
    #[must_use]
    pub fn shutdown_unbounded(mut self) -> Self {
        self.grace = None;
        self
    }

    /// Change the restart type (useful for nested supervisors).
    #[must_use]
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// The child's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ChildKind::Worker(_) => "worker",
            ChildKind::Supervisor(_) => "supervisor",
        };
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &kind)
            .field("restart", &self.restart)
            .field("grace", &self.grace)
            .finish()
    }
}

/// At most `max_restarts` restarts within `period`, as OTP's intensity/period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed inside one period; one more makes the supervisor give up.
    pub max_restarts: u32,
    /// Length of the sliding window.
    pub period: Duration,
}

/// A supervisor: its strategy, limits and children in start order.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    pub(crate) name: Arc<str>,
    pub(crate) strategy: Strategy,
    pub(crate) intensity: Intensity,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) children: Vec<ChildSpec>,
    /// Present when this supervisor also accepts children at run time.
    pub(crate) pool: Option<PoolInbox>,
    pub(crate) snapshot_limit: usize,
}

impl SupervisorSpec {
    /// A one_for_one supervisor with OTP's default intensity (1 restart in 5 s)
    /// — loose enough for a leaf, strict enough that a crash loop escalates.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts: 1,
                period: Duration::from_secs(5),
            },
            backoff: None,
            children: Vec::new(),
            pool: None,
            snapshot_limit: crate::tree::DEFAULT_SNAPSHOT_LIMIT,
        }
    }

    /// Restart strategy for the static children.
    #[must_use]
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Allow at most `max_restarts` restarts within `period`.
    #[must_use]
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            period,
        };
        self
    }

    /// Delay restarts exponentially (none by default, as in OTP).
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Some(Backoff { initial, max });
        self
    }

    /// Append a child; children start in the order they are added.
    #[must_use]
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// List at most `limit` children in snapshots, then one summary entry
    /// (`"+N more"`, state `summary`, restarts summed), so a pool of 20,000
    /// connections stays a small document. Default 100.
    #[must_use]
    pub fn snapshot_limit(mut self, limit: usize) -> Self {
        self.snapshot_limit = limit;
        self
    }

    /// The supervisor's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn child_error_converts_from_std_errors() {
        fn fails() -> Result<(), ChildError> {
            Err(std::io::Error::other("disk gone"))?;
            Ok(())
        }
        assert_eq!(fails().unwrap_err().message(), "disk gone");
    }
}
