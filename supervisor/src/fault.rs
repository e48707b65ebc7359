//! Named panic points for tests and drills (the fault injection).
//!
//! A worker calls [`Faults::check`] at a point of its choosing, e.g. before
//! handling a frame. Nothing fires unless a point was armed, and the unarmed
//! check is a single atomic load, so it may stay in release builds; whether
//! anything can arm it (a test, or an admin switch that is off by default) is
//! the binary's decision, not this crate's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Shared set of armed panic points. Clone it into the workers that check it.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Fast path: false whenever no point is armed.
    any: AtomicBool,
    /// Point name → how many more checks should panic.
    armed: Mutex<HashMap<String, u32>>,
}

impl Faults {
    /// Make the next `times` checks of `point` panic.
    pub fn arm(&self, point: impl Into<String>, times: u32) {
        let mut armed = self.lock();
        armed.insert(point.into(), times);
        self.inner.any.store(!armed.is_empty(), Ordering::Release);
    }

    /// Disarm every point.
    pub fn disarm_all(&self) {
        let mut armed = self.lock();
        armed.clear();
        self.inner.any.store(false, Ordering::Release);
    }

    /// Panic with `injected fault at <point>` if `point` is armed.
    ///
    /// # Panics
    /// That is its purpose: when `point` is armed.
    pub fn check(&self, point: &str) {
        if !self.inner.any.load(Ordering::Acquire) {
            return;
        }
        let fire = {
            let mut armed = self.lock();
            let fire = match armed.get_mut(point) {
                Some(left) if *left > 1 => {
                    *left -= 1;
                    true
                }
                Some(_) => {
                    armed.remove(point);
                    true
                }
                None => false,
            };
            self.inner.any.store(!armed.is_empty(), Ordering::Release);
            fire
        };
        // Panic outside the lock so it is not poisoned by the drill itself.
        assert!(!fire, "injected fault at {point}");
    }

    // Poisoning cannot leave the map inconsistent (single-step updates).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.inner
            .armed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unarmed_points_never_fire() {
        let faults = Faults::default();
        faults.check("shard-0");
        faults.arm("shard-1", 1);
        faults.check("shard-0");
    }

    #[test]
    fn an_armed_point_fires_the_given_number_of_times() {
        let faults = Faults::default();
        faults.arm("shard-0", 2);
        for _ in 0..2 {
            let f = faults.clone();
            let err = std::panic::catch_unwind(move || f.check("shard-0")).unwrap_err();
            assert_eq!(
                err.downcast_ref::<String>().map(String::as_str),
                Some("injected fault at shard-0")
            );
        }
        faults.check("shard-0"); // spent
    }
}
