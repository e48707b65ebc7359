//! Rejections: overload is a value returned at once, never a wait.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a request was not admitted.
///
/// Each reason is counted apart (metric label `reason`, snapshot key) so an
/// operator can tell which regulator is doing the shedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The queue's rate (or its group's rate) has no token and the request
    /// could not wait for one.
    Rate,
    /// The caller's per-key rate (per user, per IP) is exhausted. Never queued:
    /// one noisy key must not occupy the shared wait queue.
    KeyRate,
    /// The concurrency limit is reached and the request could not wait.
    Concurrency,
    /// The wait queue is at `max_size` and nothing of lower priority could be shed.
    QueueFull,
    /// The request's own deadline passed, or the predicted wait exceeded it at enqueue.
    Deadline,
    /// The request waited `max_wait` (or the adaptive-LIFO short timeout).
    Timeout,
    /// Refused at enqueue: the predicted wait ((waiters ahead + 1) × service
    /// time ÷ limit) already exceeded `max_wait` (`shed_predicted_timeouts`).
    PredictedTimeout,
    /// CoDel dropped it from a standing queue.
    Codel,
    /// A request of higher priority took its place in a full queue.
    ShedPriority,
}

impl Reason {
    /// Every reason, in a stable order (used for counters and snapshots).
    pub const ALL: [Reason; 9] = [
        Reason::Rate,
        Reason::KeyRate,
        Reason::Concurrency,
        Reason::QueueFull,
        Reason::Deadline,
        Reason::Timeout,
        Reason::PredictedTimeout,
        Reason::Codel,
        Reason::ShedPriority,
    ];

    /// The snake_case name used in logs, metrics and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Rate => "rate",
            Reason::KeyRate => "key_rate",
            Reason::Concurrency => "concurrency",
            Reason::QueueFull => "queue_full",
            Reason::Deadline => "deadline",
            Reason::Timeout => "timeout",
            Reason::PredictedTimeout => "predicted_timeout",
            Reason::Codel => "codel",
            Reason::ShedPriority => "shed_priority",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request the regulator refused, with a hint of when to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rejected ({reason}), retry after {} ms", self.retry_after_ms())]
pub struct Rejected {
    /// Which regulator refused it.
    pub reason: Reason,
    /// The regulator's estimate of when a retry could succeed (never zero).
    pub retry_after: Duration,
}

impl Rejected {
    pub(crate) fn new(reason: Reason, retry_after: Duration) -> Self {
        // A zero hint invites an immediate retry storm; one millisecond is the
        // smallest unit the protocol (`retry_after_ms`) can carry.
        let retry_after = retry_after.max(Duration::from_millis(1));
        Self {
            reason,
            retry_after,
        }
    }

    /// `retry_after` in whole milliseconds, rounded up, at least 1.
    pub fn retry_after_ms(&self) -> u64 {
        let ms = self.retry_after.as_micros().div_ceil(1000);
        u64::try_from(ms).unwrap_or(u64::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_display_as_snake_case() {
        let names: Vec<String> = Reason::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "rate",
                "key_rate",
                "concurrency",
                "queue_full",
                "deadline",
                "timeout",
                "predicted_timeout",
                "codel",
                "shed_priority"
            ]
        );
        for r in Reason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(Reason::ALL[r.index()], r);
        }
    }

    #[test]
    fn retry_after_is_never_zero_and_rounds_up() {
        let r = Rejected::new(Reason::Rate, Duration::ZERO);
        assert_eq!(r.retry_after_ms(), 1);
        let r = Rejected::new(Reason::Rate, Duration::from_micros(2001));
        assert_eq!(r.retry_after_ms(), 3);
    }
}
