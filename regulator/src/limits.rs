//! The regulator stack of one queue: concurrency, rate, group rate, per-key rate.
//!
//! Everything the uncontended path touches is an atomic (no lock, no
//! allocation); only the per-key table and a group take a lock, and only when
//! configured. Effective values already include modifier damping and the
//! adaptive limit; `Shared::apply_limits` writes them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use crate::gcra::{Gcra, Nanos};
use crate::group::Group;
use crate::keyed::KeyTable;
use crate::pad::Padded;
use crate::reject::Reason;

/// "No concurrency limit".
pub(crate) const UNLIMITED: u64 = u64::MAX;

/// Membership of a queue in a rate group.
#[derive(Debug)]
pub(crate) struct GroupLink {
    pub(crate) group: Arc<Group>,
    pub(crate) member: usize,
}

/// Why a request cannot pass now, and when the blocking regulator will allow
/// it (`None`: when a permit is released).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    pub(crate) reason: Reason,
    pub(crate) wait: Option<Nanos>,
}

#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) enabled: AtomicBool,
    pub(crate) in_flight: Padded<AtomicU64>,
    pub(crate) concurrency: AtomicU64,
    pub(crate) rate: Gcra,
    pub(crate) group: ArcSwapOption<GroupLink>,
    pub(crate) keyed: AtomicBool,
    pub(crate) keys: Mutex<Option<KeyTable>>,
}

impl Limits {
    pub(crate) fn new() -> Self {
        Self {
            enabled: AtomicBool::new(true),
            in_flight: Padded(AtomicU64::new(0)),
            concurrency: AtomicU64::new(UNLIMITED),
            rate: Gcra::new(),
            group: ArcSwapOption::empty(),
            keyed: AtomicBool::new(false),
            keys: Mutex::new(None),
        }
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Option<KeyTable>> {
        // The table holds plain numbers; a panic elsewhere cannot corrupt it.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets (or removes) the per-key rate, keeping remembered keys.
    pub(crate) fn set_key_rate(&self, rate: Option<f64>, burst: u32, capacity: u32) {
        let mut keys = self.keys();
        match (rate, keys.as_mut()) {
            (Some(r), Some(t)) => t.retune(r, burst, capacity),
            (Some(r), None) => *keys = Some(KeyTable::new(r, burst, capacity)),
            (None, _) => *keys = None,
        }
        self.keyed.store(keys.is_some(), Ordering::Release);
    }

    /// Per-key check. Never queued, so it runs before the rest of the stack.
    pub(crate) fn try_key(&self, key: Option<u64>, now: Nanos) -> Result<(), Nanos> {
        if !self.keyed.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(key) = key else { return Ok(()) };
        match self.keys().as_mut() {
            Some(t) => t.try_take(key, now),
            None => Ok(()),
        }
    }

    pub(crate) fn key_count(&self) -> usize {
        self.keys().as_ref().map_or(0, KeyTable::len)
    }

    /// Counts `weight` in flight without checking any limit (non-rejectable
    /// work, or a disabled queue).
    pub(crate) fn force(&self, weight: u32) {
        self.in_flight
            .fetch_add(u64::from(weight), Ordering::SeqCst);
    }

    fn try_concurrency(&self, weight: u64) -> bool {
        let limit = self.concurrency.load(Ordering::Acquire);
        if limit == UNLIMITED {
            self.in_flight.fetch_add(weight, Ordering::SeqCst);
            return true;
        }
        // A job heavier than the whole limit still runs, alone.
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                (cur == 0 || cur.saturating_add(weight) <= limit).then_some(cur + weight)
            })
            .is_ok()
    }

    /// Passes the stack at `now`, taking concurrency, rate and group tokens,
    /// or takes nothing and says what blocked.
    pub(crate) fn try_acquire(&self, weight: u32, now: Nanos) -> Result<(), Block> {
        let w = u64::from(weight);
        if !self.try_concurrency(w) {
            return Err(Block {
                reason: Reason::Concurrency,
                wait: None,
            });
        }
        if let Err(wait) = self.rate.try_take(now) {
            self.in_flight.fetch_sub(w, Ordering::SeqCst);
            return Err(Block {
                reason: Reason::Rate,
                wait: Some(wait),
            });
        }
        if let Some(link) = self.group.load().as_ref()
            && let Err(wait) = link.group.try_take(link.member, now)
        {
            self.rate.refund();
            self.in_flight.fetch_sub(w, Ordering::SeqCst);
            return Err(Block {
                reason: Reason::Rate,
                wait: Some(wait),
            });
        }
        Ok(())
    }

    /// Undoes a successful [`Limits::try_acquire`] whose request was then
    /// not served (CoDel drop, cancelled waiter).
    pub(crate) fn undo(&self, weight: u32) {
        self.rate.refund();
        if let Some(link) = self.group.load().as_ref() {
            link.group.refund(link.member);
        }
        self.release(weight);
    }

    /// Returns `weight` to the concurrency limit; the new in-flight value.
    pub(crate) fn release(&self, weight: u32) -> u64 {
        let w = u64::from(weight);
        self.in_flight.fetch_sub(w, Ordering::SeqCst) - w
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_fill_the_concurrency_limit() {
        let l = Limits::new();
        l.concurrency.store(4, Ordering::Release);
        assert!(l.try_acquire(3, 0).is_ok());
        assert!(l.try_acquire(2, 0).is_err());
        assert!(l.try_acquire(1, 0).is_ok());
        l.release(3);
        assert!(l.try_acquire(2, 0).is_ok());
        assert_eq!(l.in_flight(), 3);
    }

    #[test]
    fn an_oversized_job_runs_alone() {
        let l = Limits::new();
        l.concurrency.store(2, Ordering::Release);
        assert!(l.try_acquire(5, 0).is_ok());
        assert!(l.try_acquire(1, 0).is_err());
    }

    #[test]
    fn a_rate_refusal_gives_back_the_concurrency_slot() {
        let l = Limits::new();
        l.concurrency.store(10, Ordering::Release);
        l.rate.set(Some(1.0), 1, 0);
        assert!(l.try_acquire(1, 0).is_ok());
        let b = l.try_acquire(1, 0).unwrap_err();
        assert_eq!(b.reason, Reason::Rate);
        assert_eq!(l.in_flight(), 1);
    }
}
