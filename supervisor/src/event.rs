//! Typed lifecycle events, logged and counted in exactly one place
//! (`Emitter::emit`), and optionally broadcast for tests and tooling.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// Returned `Ok(())` on its own.
    Normal,
    /// Returned `Err`; the text is the error (a nested supervisor's give-up reason).
    Error(String),
    /// Stopped by its supervisor within its grace (returned after cancellation).
    Shutdown,
    /// Did not stop within its grace and was aborted.
    Killed,
}

impl ExitReason {
    /// Abnormal exits are what transient children are restarted for.
    #[must_use]
    pub fn is_abnormal(&self) -> bool {
        matches!(self, Self::Error(_))
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("normal"),
            Self::Error(e) => write!(f, "error: {e}"),
            Self::Shutdown => f.write_str("shutdown"),
            Self::Killed => f.write_str("killed after grace"),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The child was (re)started.
    Started,
    /// The child ended without panicking.
    Exited {
        /// Why it ended.
        reason: ExitReason,
    },
    /// The child panicked (reported instead of `Exited`).
    Panicked {
        /// The panic payload when it was a string, else a placeholder.
        message: String,
    },
    /// A restart is scheduled after `delay` (zero without backoff).
    Restarting {
        /// This child's restarts within the intensity period, from 1.
        attempt: u32,
        /// Backoff delay before the start.
        delay: Duration,
    },
    /// The supervisor exceeded its intensity, stopped its children and failed.
    /// `child` is the supervisor's own name.
    GaveUp {
        /// What failed and the limit that was exceeded.
        reason: String,
    },
}

impl EventKind {
    /// The metric label value.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Exited { .. } => "exited",
            Self::Panicked { .. } => "panicked",
            Self::Restarting { .. } => "restarting",
            Self::GaveUp { .. } => "gave_up",
        }
    }
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Path of the supervisor that owns the child, e.g. `root/messaging`.
    pub supervisor: Arc<str>,
    /// The child's name.
    pub child: Arc<str>,
    /// What happened.
    pub kind: EventKind,
}

/// Emits a supervisor's events; cloned into nested supervisors with a longer path.
#[derive(Debug, Clone)]
pub(crate) struct Emitter {
    pub(crate) path: Arc<str>,
    pub(crate) sink: broadcast::Sender<Event>,
}

impl Emitter {
    pub(crate) fn nested(&self, name: &str) -> Self {
        Self {
            path: format!("{}/{}", self.path, name).into(),
            sink: self.sink.clone(),
        }
    }

    /// Log, count and broadcast one event. Child names become metric labels,
    /// so pool children should share a low-cardinality name.
    pub(crate) fn emit(&self, child: &Arc<str>, kind: EventKind) {
        let sup = &*self.path;
        let name = &**child;
        match &kind {
            EventKind::Started => tracing::debug!(supervisor = sup, child = name, "child started"),
            EventKind::Exited { reason } if reason.is_abnormal() => {
                tracing::warn!(supervisor = sup, child = name, %reason, "child exited");
            }
            // Routine (a closed connection in a pool, a clean shutdown): debug,
            // or a busy pool would log a line per child.
            EventKind::Exited { reason } => {
                tracing::debug!(supervisor = sup, child = name, %reason, "child exited");
            }
            EventKind::Panicked { message } => {
                tracing::error!(supervisor = sup, child = name, %message, "child panicked");
            }
            EventKind::Restarting { attempt, delay } => tracing::info!(
                supervisor = sup,
                child = name,
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "child restarting"
            ),
            EventKind::GaveUp { reason } => {
                tracing::error!(supervisor = sup, %reason, "supervisor gave up");
            }
        }
        metrics::counter!(
            "supervisor_events_total",
            "supervisor" => self.path.clone(),
            "child" => child.clone(),
            "event" => kind.label(),
        )
        .increment(1);
        // No subscriber is the normal case outside tests.
        let _ = self.sink.send(Event {
            supervisor: self.path.clone(),
            child: child.clone(),
            kind,
        });
    }
}
