//! CoDel (RFC 8289) applied to a wait queue: drop decisions at dequeue.
//!
//! The RFC's `dequeue()` may drop several packets in one call; here the same
//! state machine is fed one waiter at a time ([`Codel::on_dequeue`]), so the
//! caller answers a dropped waiter `codel` and asks again for the next one.
//! A "dequeue" happens only when a waiter could actually be served (capacity
//! is free), as a link sends a packet only when it is free. `MAXPACKET` has no
//! analogue: a waiter is one unit.

use crate::gcra::Nanos;

/// CoDel's control state for one queue.
#[derive(Debug, Clone)]
pub(crate) struct Codel {
    target: Nanos,
    interval: Nanos,
    first_above_time: Nanos,
    drop_next: Nanos,
    count: u32,
    lastcount: u32,
    dropping: bool,
    /// A drop happened in the dropping state; `drop_next` advances only if the
    /// next waiter is still above target (as the RFC's loop does).
    pending_advance: bool,
}

/// `t + interval / sqrt(count)`.
pub(crate) fn control_law(t: Nanos, interval: Nanos, count: u32) -> Nanos {
    let step = interval as f64 / f64::from(count.max(1)).sqrt();
    t.saturating_add(step as Nanos)
}

impl Codel {
    pub(crate) fn new(target: Nanos, interval: Nanos) -> Self {
        Self {
            target,
            interval,
            first_above_time: 0,
            drop_next: 0,
            count: 0,
            lastcount: 0,
            dropping: false,
            pending_advance: false,
        }
    }

    /// Changes target and interval, keeping the control state.
    pub(crate) fn retune(&mut self, target: Nanos, interval: Nanos) {
        self.target = target;
        self.interval = interval;
    }

    pub(crate) fn dropping(&self) -> bool {
        self.dropping
    }

    /// The RFC's `dodequeue` test: has the sojourn been above target for an interval?
    fn ok_to_drop(&mut self, now: Nanos, sojourn: Nanos) -> bool {
        if sojourn < self.target {
            self.first_above_time = 0;
            false
        } else if self.first_above_time == 0 {
            self.first_above_time = now + self.interval;
            false
        } else {
            now >= self.first_above_time
        }
    }

    /// Decides for the waiter about to be served: `true` means drop it.
    pub(crate) fn on_dequeue(&mut self, now: Nanos, sojourn: Nanos) -> bool {
        let ok = self.ok_to_drop(now, sojourn);
        if self.dropping {
            if !ok {
                self.dropping = false;
                self.pending_advance = false;
                return false;
            }
            if self.pending_advance {
                self.drop_next = control_law(self.drop_next, self.interval, self.count);
                self.pending_advance = false;
            }
            if now >= self.drop_next {
                self.count += 1;
                self.pending_advance = true;
                return true;
            }
            false
        } else if ok {
            self.dropping = true;
            let delta = self.count.saturating_sub(self.lastcount);
            self.count = if delta > 1 && now.saturating_sub(self.drop_next) < 16 * self.interval {
                delta
            } else {
                1
            };
            self.drop_next = control_law(now, self.interval, self.count);
            self.lastcount = self.count;
            true
        } else {
            false
        }
    }

    /// A dequeue found the queue empty (RFC: `dodequeue` returned null).
    pub(crate) fn on_empty(&mut self) {
        self.first_above_time = 0;
        self.dropping = false;
        self.pending_advance = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn short_sojourns_never_drop() {
        let mut c = Codel::new(5 * MS, 100 * MS);
        for t in 0..10_000 {
            assert!(!c.on_dequeue(t * MS, 4 * MS));
        }
    }

    #[test]
    fn standing_queue_drops_on_the_control_law_schedule() {
        let mut c = Codel::new(5 * MS, 100 * MS);
        let mut drops = Vec::new();
        // One dequeue every 100 us, each waiter having waited 20 ms.
        for i in 0..10_000u64 {
            let now = 1_000 * MS + i * MS / 10;
            if c.on_dequeue(now, 20 * MS) {
                drops.push(now - 1_000 * MS);
            }
        }
        // Above target from t=0; first drop one interval later, then
        // interval/sqrt(n) apart (within the 100 us dequeue granularity).
        assert_eq!(drops[0], 100 * MS);
        let mut expect = drops[0];
        for (n, &d) in drops.iter().enumerate().skip(1) {
            expect = control_law(expect, 100 * MS, n as u32);
            assert!(
                d >= expect && d - expect < MS / 10,
                "drop {n} at {d}, expected {expect}"
            );
        }
        assert!(drops.len() >= 15, "{drops:?}");
        assert!(c.dropping());
    }

    #[test]
    fn leaves_dropping_state_when_sojourn_falls() {
        let mut c = Codel::new(5 * MS, 100 * MS);
        let mut t = 0;
        while !c.dropping() {
            t += MS;
            c.on_dequeue(t, 50 * MS);
        }
        assert!(!c.on_dequeue(t + MS, MS));
        assert!(!c.dropping());
    }
}
