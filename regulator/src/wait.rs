//! Waiting: enqueue with admission checks at the door (size, deadline,
//! priority shedding), then wait for an answer until `max_wait` or the
//! deadline. Cancel-safe: a waiter that stops waiting leaves the queue, and a
//! permit granted to it in the meantime is released.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::Discipline;
use crate::gcra::Nanos;
use crate::limits::Block;
use crate::queue::Shared;
use crate::reject::{Reason, Rejected};
use crate::request::Request;
use crate::waitq::{Answer, Key, Order, Waiter};

const MS: Nanos = 1_000_000;

/// A predicted wait must fit in the limit with 1/this of itself to spare.
const PREDICTION_SLACK: Nanos = 8;

impl Shared {
    /// Admission past the fast path: enqueue, or answer at once.
    fn enqueue(
        self: &Arc<Self>,
        req: &Request,
        mut block: Block,
    ) -> Result<(oneshot::Receiver<Answer>, Key, Nanos), Answer> {
        let mut st = self.lock();
        // Read the clock again under the lock: the fast path's reading may be
        // stale by a preemption, and a stale instant looks like a rate excess.
        let now = self.clock.now();
        if st.rt.is_none() {
            st.rt = tokio::runtime::Handle::try_current().ok();
        }
        if st.waiters.is_empty() {
            match self.limits.try_acquire(req.weight, now) {
                Ok(()) => return Err(Ok(self.grant(req.weight, now, 0))),
                Err(b) => block = b,
            }
        }
        let len = st.waiters.len() as u64;
        let per_slot = self.per_slot();
        let retry = block.wait.unwrap_or(per_slot.max(self.service_time()));
        if st.cfg.max_size == 0 {
            return Err(Err(self.reject(block.reason, retry, now)));
        }
        let mut expiry = now + st.cfg.max_wait_ms * MS;
        let mut by_deadline = false;
        if let Some(d) = req.deadline {
            let d = self.clock.nanos(d);
            let predicted = len * per_slot;
            if d <= now || now + predicted > d {
                return Err(Err(self.reject(
                    Reason::Deadline,
                    predicted.max(retry),
                    now,
                )));
            }
            if d < expiry {
                expiry = d;
                by_deadline = true;
            }
        }
        let order = st.order(now);
        let rank = req.priority.rank();
        // A waiter that would time out anyway is better told now: the
        // client retries or gives up at once instead of after `max_wait`.
        if st.cfg.shed_predicted_timeouts && order == Order::Fifo {
            // While CoDel is dropping, a waiter that would stand longer than
            // its target is dropped at the head anyway: refuse it now.
            let limit = if st.cfg.discipline == Discipline::Codel && st.codel.dropping() {
                st.cfg.codel_target_ms * MS
            } else {
                st.cfg.max_wait_ms * MS
            };
            // One slot per waiter ahead, plus the slot it waits for: erring
            // long turns a likely timeout into an answer now. Service times
            // vary, so the prediction must also fit with an eighth to spare:
            // at 2x login overload 1.4 % of refusals were still timeouts
            // without it (docs/OVERLOAD.md).
            let predicted = (st.waiters.ahead_of(rank) + 1) * per_slot;
            if predicted + predicted / PREDICTION_SLACK > limit {
                return Err(Err(self.reject(Reason::PredictedTimeout, predicted, now)));
            }
        }
        if len >= u64::from(st.cfg.max_size) {
            let Some(victim) = st.waiters.victim(order, rank) else {
                return Err(Err(self.reject(Reason::QueueFull, len * per_slot, now)));
            };
            if let Some(w) = st.waiters.remove(&victim) {
                let r = self.reject(Reason::ShedPriority, len * per_slot, now);
                // The victim may be gone already (cancelled): nothing to tell.
                let _ = w.tx.send(Err(r));
            }
        }
        if order == Order::Lifo && st.cfg.discipline == Discipline::AdaptiveLifo {
            let short = now + st.cfg.lifo_timeout_ms * MS;
            if short < expiry {
                expiry = short;
                by_deadline = false;
            }
        }
        if st.waiters.is_empty() {
            st.nonempty_since = Some(now);
        }
        let (tx, rx) = oneshot::channel();
        let key = st.waiters.push(
            rank,
            Waiter {
                tx,
                enqueued: now,
                expiry,
                by_deadline,
                weight: req.weight,
            },
        );
        self.waiting.store(st.waiters.len(), Ordering::SeqCst);
        self.dispatch(&mut st, now, now);
        Ok((rx, key, expiry))
    }

    /// Waits for an answer until `expiry`. Cancel-safe: dropping the future
    /// removes the waiter, or releases a permit granted in the meantime.
    pub(crate) async fn wait(self: &Arc<Self>, req: Request, block: Block) -> Answer {
        let (rx, key, expiry) = match self.enqueue(&req, block) {
            Ok(x) => x,
            Err(answer) => return answer,
        };
        let mut guard = WaitGuard {
            shared: self,
            key,
            rx,
            done: false,
        };
        let sleep = tokio::time::sleep_until(self.clock.instant(expiry));
        tokio::select! {
            biased;
            r = &mut guard.rx => {
                guard.done = true;
                // The sender is only dropped after sending, or when the queue
                // is gone; treat the latter as a timeout.
                r.unwrap_or_else(|_| Err(Rejected::new(Reason::Timeout, Duration::from_millis(1))))
            }
            () = sleep => guard.expire(),
        }
    }
}

/// Removes a waiter that stops waiting (timeout or cancellation).
struct WaitGuard<'a> {
    shared: &'a Arc<Shared>,
    key: Key,
    rx: oneshot::Receiver<Answer>,
    done: bool,
}

impl WaitGuard<'_> {
    fn expire(&mut self) -> Answer {
        self.done = true;
        let s = self.shared;
        let now = s.clock.now();
        let mut st = s.lock();
        if let Some(w) = st.waiters.remove(&self.key) {
            let reason = if w.by_deadline {
                Reason::Deadline
            } else {
                Reason::Timeout
            };
            let retry = st.waiters.len() as u64 * s.per_slot();
            s.dispatch(&mut st, now, now);
            return Err(s.reject(reason, retry, now));
        }
        drop(st);
        // Answered between the timer and the lock: take that answer.
        self.rx
            .try_recv()
            .unwrap_or_else(|_| Err(Rejected::new(Reason::Timeout, Duration::from_millis(1))))
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let s = self.shared;
        let now = s.clock.now();
        let mut st = s.lock();
        if st.waiters.remove(&self.key).is_some() {
            // Its departure may unblock a waiter behind it (a heavier head).
            s.dispatch(&mut st, now, now);
        }
        // A permit already sent is dropped with `rx` after this, outside the
        // lock, and released through the normal path.
    }
}
