//! Serving waiters: discipline, CoDel drops, expiry, rate timers; plus the
//! per-queue feedback tick and snapshot, which also run under the queue lock.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;

use crate::config::Discipline;
use crate::feedback::modifier::Damping;
use crate::gcra::Nanos;
use crate::limits::{Block, UNLIMITED};
use crate::permit::Permit;
use crate::queue::{Shared, State};
use crate::reject::Reason;
use crate::waitq::{Order, Waiter};

const MS: Nanos = 1_000_000;

impl State {
    /// Serve order in force at `now`.
    pub(crate) fn order(&self, now: Nanos) -> Order {
        match self.cfg.discipline {
            Discipline::Fifo | Discipline::Codel => Order::Fifo,
            Discipline::Lifo => Order::Lifo,
            Discipline::AdaptiveLifo => {
                let stood = self
                    .nonempty_since
                    .is_some_and(|s| now.saturating_sub(s) >= self.cfg.codel_interval_ms * MS);
                if stood { Order::Lifo } else { Order::Fifo }
            }
        }
    }

    /// The configured rate under the damping in force.
    pub(crate) fn damped_rate(&self) -> Option<f64> {
        self.cfg.rate_per_sec.map(|r| r * self.damping.rate)
    }

    /// The burst in force: configured, or capped after a tracking cut.
    pub(crate) fn burst(&self) -> u32 {
        self.damping.burst(self.cfg.burst, self.damped_rate())
    }
}

impl Shared {
    fn answer_rejected(&self, w: Waiter, reason: Reason, retry: Nanos, now: Nanos) {
        let r = self.reject(reason, retry, now);
        // A waiter that stopped listening was cancelled: nothing to tell.
        let _ = w.tx.send(Err(r));
    }

    /// Serves waiters while the limits allow. `rate_now` is the instant the
    /// rate regulators see: a rate timer passes the instant it was armed for,
    /// so the timer wheel's millisecond rounding does not slow the rate down.
    pub(crate) fn dispatch(self: &Arc<Self>, st: &mut State, now: Nanos, rate_now: Nanos) {
        loop {
            let order = st.order(now);
            let Some(key) = st.waiters.next(order) else {
                st.nonempty_since = None;
                st.codel.on_empty();
                break;
            };
            let Some(w) = st.waiters.get(&key) else { break };
            let (expiry, by_deadline, weight, enqueued) =
                (w.expiry, w.by_deadline, w.weight, w.enqueued);
            if expiry <= now {
                if let Some(w) = st.waiters.remove(&key) {
                    let reason = if by_deadline {
                        Reason::Deadline
                    } else {
                        Reason::Timeout
                    };
                    self.answer_rejected(w, reason, self.per_slot(), now);
                }
                continue;
            }
            match self.limits.try_acquire(weight, rate_now) {
                Ok(()) => {
                    let Some(w) = st.waiters.remove(&key) else {
                        break;
                    };
                    let sojourn = now.saturating_sub(enqueued);
                    if st.cfg.discipline == Discipline::Codel && st.codel.on_dequeue(now, sojourn) {
                        self.limits.undo(weight);
                        let retry = st.cfg.codel_interval_ms * MS;
                        self.answer_rejected(w, Reason::Codel, retry, now);
                        continue;
                    }
                    let permit = self.grant(weight, now, sojourn);
                    if let Err(Ok(p)) = w.tx.send(Ok(permit)) {
                        // Receiver gone: release without the drop path, which
                        // would take this lock again.
                        if let Some((s, wgt)) = Permit::defuse(p) {
                            s.limits.undo(wgt);
                        }
                    }
                }
                Err(Block {
                    wait: Some(wait), ..
                }) => {
                    self.arm(st, rate_now + wait);
                    break;
                }
                Err(_) => break,
            }
        }
        let len = st.waiters.len();
        self.waiting.store(len, Ordering::SeqCst);
        self.stats.queue_length(len);
    }

    /// Makes sure a dispatch runs at `at` (a rate regulator's next token).
    fn arm(self: &Arc<Self>, st: &mut State, at: Nanos) {
        if st.timer_at.is_some_and(|t| t <= at) {
            return;
        }
        // Without a runtime (no waiter ever enqueued from one) there is no
        // waiter to serve either; waiters always come with a runtime.
        let Some(rt) = st.rt.clone() else { return };
        st.timer_at = Some(at);
        let weak = Arc::downgrade(self);
        let when = self.clock.instant(at);
        rt.spawn(async move {
            tokio::time::sleep_until(when).await;
            let Some(s) = weak.upgrade() else { return };
            let now = s.clock.now();
            let mut st = s.lock();
            if st.timer_at == Some(at) {
                st.timer_at = None;
            }
            s.dispatch(&mut st, now, at.min(now));
        });
    }

    /// One feedback tick: sample, recompute damping, apply, export gauges.
    pub(crate) fn feedback(self: &Arc<Self>, lookup: &dyn Fn(&str) -> Option<f64>) {
        use crate::feedback::sampler::Sampler;
        let now = self.clock.now();
        let mut st = self.lock();
        let mut latency = None;
        let mut damping = Damping::NONE;
        let admitted = self.stats.admitted.load(Ordering::Relaxed);
        let rate = st.cfg.rate_per_sec;
        let throughput = st.throughput.tick(now, admitted, rate);
        let State { cfg, mods, .. } = &mut *st;
        for (m, cfg) in mods.iter_mut().zip(&cfg.modifiers) {
            let value = if cfg.sampler == "latency" {
                *latency.get_or_insert_with(|| self.latency.sample())
            } else {
                lookup(&cfg.sampler)
            };
            let was_unreachable = m.unreachable;
            m.update(cfg, value, now, throughput);
            damping = damping.min(m.damping(cfg, rate.is_some()));
            // Once per episode: the operator's target cannot be met by shedding.
            match (was_unreachable, m.unreachable, &cfg.track) {
                (false, true, Some(t)) => tracing::warn!(
                    queue = %self.name(), sampler = %cfg.sampler, value = m.value.unwrap_or_default(),
                    target = t.target, min_factor = t.min_factor,
                    "regulator tracking target unreachable: at min_factor and still above target; raise track.target or lower min_factor"
                ),
                (true, false, _) => tracing::info!(
                    queue = %self.name(), sampler = %cfg.sampler,
                    "regulator tracking target reachable again"
                ),
                _ => {}
            }
        }
        if damping != st.damping {
            let from = std::mem::replace(&mut st.damping, damping);
            let (rate, concurrency) = (damping.rate, damping.concurrency);
            // A tracking modifier moves the factor every tick: log the start
            // and the end of damping, the steps in between only at debug.
            if from == Damping::NONE || damping == Damping::NONE {
                tracing::info!(queue = %self.name(), rate, concurrency, "regulator limits damping changed");
            } else {
                tracing::debug!(queue = %self.name(), rate, concurrency, "regulator limits damping changed");
            }
            self.apply_limits(&st, now);
            self.dispatch(&mut st, now, now);
        }
        self.stats.maybe_stop_shedding(now);
        let conc = self.limits.concurrency.load(Ordering::Acquire);
        self.stats.gauges(
            st.waiters.len(),
            self.limits.in_flight(),
            (conc != UNLIMITED).then_some(conc),
            st.damped_rate(),
        );
    }

    /// Limits in force, active modifiers and counters.
    pub(crate) fn snapshot(&self) -> serde_json::Value {
        let now = self.clock.now();
        let st = self.lock();
        let conc = self.limits.concurrency.load(Ordering::Acquire);
        let active: Vec<serde_json::Value> = st
            .mods
            .iter()
            .zip(&st.cfg.modifiers)
            .map(|(m, c)| {
                json!({
                    "sampler": c.sampler,
                    "value": m.value,
                    "factor": m.factor,
                    "overloaded_for_ms": m.overloaded_for_ms,
                    "tracked": m.tracked,
                    "unreachable": m.unreachable,
                    "active": m.factor < 1.0,
                })
            })
            .collect();
        let standing_ms = st
            .waiters
            .oldest()
            .map_or(0, |t| now.saturating_sub(t) / MS);
        json!({
            "name": self.name(),
            "config": st.cfg,
            "limits": {
                "enabled": st.cfg.enabled,
                "rate_per_sec": st.cfg.enabled.then(|| st.damped_rate()).flatten(),
                "burst": st.burst(),
                "max_concurrency": (conc != UNLIMITED).then_some(conc),
                "adaptive_limit": st.adaptive.as_ref().map(|a| a.limit()),
                "key_rate_per_sec": st.cfg.key_rate_per_sec,
                "max_size": st.cfg.max_size,
                "max_wait_ms": st.cfg.max_wait_ms,
                "discipline": st.cfg.discipline,
                "group": st.cfg.group,
                "factor": st.damping.rate,
                "concurrency_factor": st.damping.concurrency,
            },
            "modifiers": active,
            "queue_length": st.waiters.len(),
            "oldest_wait_ms": standing_ms,
            "order": st.order(now).as_str(),
            "codel_dropping": st.codel.dropping(),
            "in_flight": self.limits.in_flight(),
            "keys": self.limits.key_count(),
            "service_time_ms": self.service_time() as f64 / 1e6,
            "admitted": self.stats.admitted.load(Ordering::Relaxed),
            "rejected": self.stats.rejected_json(),
            "shedding": self.stats.shedding(),
        })
    }
}
