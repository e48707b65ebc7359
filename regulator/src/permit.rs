//! The permit: admission held for the life of a value, released on drop.

use std::fmt;
use std::sync::Arc;

use crate::gcra::Nanos;
use crate::queue::Shared;

/// Proof of admission. Dropping it releases the slot (like jobs' `done`),
/// including when the future holding it is cancelled, and records the time it
/// was held as the queue's service time.
#[must_use = "dropping the permit releases the admission at once"]
pub struct Permit {
    held: Option<Held>,
}

struct Held {
    shared: Arc<Shared>,
    weight: u32,
    granted: Nanos,
}

impl Permit {
    /// A permit for an unregulated (unconfigured) queue: holds nothing.
    pub(crate) fn unregulated() -> Self {
        Self { held: None }
    }

    pub(crate) fn new(shared: Arc<Shared>, weight: u32, granted: Nanos) -> Self {
        Self {
            held: Some(Held {
                shared,
                weight,
                granted,
            }),
        }
    }

    /// Whether a queue was regulating this admission.
    pub fn is_regulated(&self) -> bool {
        self.held.is_some()
    }

    /// The weight taken from the queue's concurrency limit.
    pub fn weight(&self) -> u32 {
        self.held.as_ref().map_or(0, |h| h.weight)
    }

    /// Takes the permit apart without the drop path (used under the queue
    /// lock, where the drop path would lock again).
    pub(crate) fn defuse(mut self) -> Option<(Arc<Shared>, u32)> {
        self.held.take().map(|h| (h.shared, h.weight))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(h) = self.held.take() {
            h.shared.release(h.weight, h.granted);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.held {
            Some(h) => f
                .debug_struct("Permit")
                .field("queue", &h.shared.name())
                .field("weight", &h.weight)
                .finish(),
            None => f.write_str("Permit(unregulated)"),
        }
    }
}
