//! What a caller says about one unit of work: key, deadline, priority, weight.

use std::hash::{Hash, Hasher};

use tokio::time::{Duration, Instant};

/// How much a request may be refused.
///
/// Ordered: every `Rejectable` level is below `NonRejectable`, and a higher
/// `Rejectable` level is served before and shed after a lower one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// May be queued, shed or refused. Higher numbers are more important.
    Rejectable(u8),
    /// Never refused (a logout, a leave): it bypasses every limit but is still
    /// counted in flight, so it presses on the limits other requests see.
    NonRejectable,
}

impl Priority {
    /// The default level, in the middle so callers can go below it for background work.
    pub const NORMAL: Priority = Priority::Rejectable(128);

    /// The rank used to order the wait queue: lower rank is served first.
    pub(crate) fn rank(self) -> u8 {
        match self {
            Priority::Rejectable(p) => u8::MAX - p,
            Priority::NonRejectable => 0,
        }
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

/// One request for admission. Cheap to build and `Copy`.
///
/// ```
/// use regulator::{Priority, Request};
/// use std::time::Duration;
/// let req = Request::new().key(42).weight(2).priority(Priority::Rejectable(200));
/// assert_eq!(req.weight, 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Key for the per-key rate (a user id, a hashed IP). `None` skips that regulator.
    pub key: Option<u64>,
    /// Answer (admit or reject) by this instant at the latest.
    pub deadline: Option<Instant>,
    /// Rejectable level, or never rejected.
    pub priority: Priority,
    /// Share of the concurrency limit this job takes (default 1).
    pub weight: u32,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            key: None,
            deadline: None,
            priority: Priority::NORMAL,
            weight: 1,
        }
    }
}

impl Request {
    /// A rejectable request of normal priority and weight 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the per-key rate key.
    #[must_use]
    pub fn key(mut self, key: u64) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the per-key rate key from a string (a user name, an IP address),
    /// hashed to 64 bits. Collisions only merge two keys' budgets.
    #[must_use]
    pub fn str_key(self, key: &str) -> Self {
        self.key(hash_key(key))
    }

    /// Sets an absolute deadline.
    #[must_use]
    pub fn deadline(mut self, at: Instant) -> Self {
        self.deadline = Some(at);
        self
    }

    /// Sets a deadline `d` from now.
    #[must_use]
    pub fn timeout(self, d: Duration) -> Self {
        self.deadline(Instant::now() + d)
    }

    /// Sets the priority.
    #[must_use]
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// Marks the request as never rejected.
    #[must_use]
    pub fn non_rejectable(self) -> Self {
        self.priority(Priority::NonRejectable)
    }

    /// Sets the weight taken from the concurrency limit.
    #[must_use]
    pub fn weight(mut self, w: u32) -> Self {
        self.weight = w;
        self
    }
}

/// Hashes a string key with a fixed hasher so the same key maps to the same
/// slot in every process (useful when nodes compare notes).
pub fn hash_key(key: &str) -> u64 {
    #[allow(deprecated)] // SipHasher is fixed-keyed on purpose: stable across processes.
    let mut h = std::hash::SipHasher::new();
    key.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_rejectable_outranks_every_rejectable_level() {
        assert!(Priority::NonRejectable > Priority::Rejectable(255));
        assert!(Priority::Rejectable(3) > Priority::Rejectable(2));
        assert!(Priority::NonRejectable.rank() < Priority::Rejectable(255).rank() + 1);
        assert!(Priority::Rejectable(200).rank() < Priority::Rejectable(100).rank());
    }

    #[test]
    fn string_keys_hash_stably() {
        assert_eq!(hash_key("10.0.0.1"), hash_key("10.0.0.1"));
        assert_ne!(hash_key("10.0.0.1"), hash_key("10.0.0.2"));
        assert_eq!(Request::new().str_key("a").key, Some(hash_key("a")));
    }
}
