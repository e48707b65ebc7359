//! One queue: the regulator stack, its wait queue, and the handle callers hold.
//!
//! The uncontended path (`ask` when nobody waits and the limits have room,
//! then dropping the permit) touches only atomics. Everything else (waiting,
//! dispatching waiters, retuning, feedback) runs under the queue's own mutex,
//! never a regulator-wide one. Dispatch is driven by three events: a permit
//! released, a rate timer firing, and an enqueue; `dispatch.rs` holds it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::codel::Codel;
use crate::config::QueueConfig;
use crate::feedback::adaptive::AdaptiveLimit;
use crate::feedback::modifier::{Damping, ModifierState};
use crate::feedback::sampler::LatencySampler;
use crate::feedback::throughput::Throughput;
use crate::gcra::{Clock, Nanos};
use crate::jitter::Jitter;
use crate::limits::{Block, GroupLink, Limits, UNLIMITED};
use crate::pad::Padded;
use crate::permit::Permit;
use crate::reject::{Reason, Rejected};
use crate::request::{Priority, Request};
use crate::stats::Stats;
use crate::waitq::{Answer, Waiters};

const MS: Nanos = 1_000_000;

/// A cheap, clonable handle on one queue. It stays valid across retunes and
/// reloads (the queue's state is kept; only its limits change).
#[derive(Clone, Debug)]
pub struct Queue {
    pub(crate) shared: Arc<Shared>,
}

/// State behind the queue mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) cfg: QueueConfig,
    pub(crate) waiters: Waiters,
    pub(crate) codel: Codel,
    /// The earliest rate timer armed, if any.
    pub(crate) timer_at: Option<Nanos>,
    /// Where rate timers are spawned: the runtime of the first waiter.
    pub(crate) rt: Option<tokio::runtime::Handle>,
    /// Since when the queue has been non-empty (adaptive LIFO).
    pub(crate) nonempty_since: Option<Nanos>,
    /// Damping in force (over several modifiers, the strongest).
    pub(crate) damping: Damping,
    pub(crate) mods: Vec<ModifierState>,
    pub(crate) adaptive: Option<AdaptiveLimit>,
    /// Admitted throughput over the last feedback ticks.
    pub(crate) throughput: Throughput,
}

/// Everything one queue owns; shared by its handles, permits and timers.
#[derive(Debug)]
pub(crate) struct Shared {
    name: String,
    pub(crate) clock: Clock,
    pub(crate) limits: Limits,
    pub(crate) stats: Stats,
    /// Mirror of the wait queue length, read without the lock so the fast
    /// path can tell whether anyone is waiting (no barging past waiters).
    pub(crate) waiting: AtomicUsize,
    /// EWMA of the time permits are held, in ns (0: unknown yet).
    svc: Padded<AtomicU64>,
    adaptive_on: AtomicBool,
    /// `min_retry_after_ms` in ns, read without the lock on every rejection.
    min_retry: AtomicU64,
    /// `retry_jitter`, as the bits of an f64 (read like `min_retry`).
    retry_jitter: AtomicU64,
    /// Draws for the jitter.
    rng: Padded<Jitter>,
    pub(crate) latency: LatencySampler,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(name: &str, cfg: QueueConfig, group: Option<GroupLink>) -> Arc<Self> {
        let codel = Codel::new(cfg.codel_target_ms * MS, cfg.codel_interval_ms * MS);
        let shared = Arc::new(Self {
            name: name.to_owned(),
            clock: Clock::new(),
            limits: Limits::new(),
            stats: Stats::new(name),
            waiting: AtomicUsize::new(0),
            svc: Padded(AtomicU64::new(0)),
            adaptive_on: AtomicBool::new(false),
            min_retry: AtomicU64::new(0),
            retry_jitter: AtomicU64::new(0),
            rng: Padded(Jitter::seeded(name)),
            latency: LatencySampler::new(),
            state: Mutex::new(State {
                cfg: QueueConfig::default(),
                waiters: Waiters::default(),
                codel,
                timer_at: None,
                rt: None,
                nonempty_since: None,
                damping: Damping::NONE,
                mods: Vec::new(),
                throughput: Throughput::default(),
                adaptive: None,
            }),
        });
        shared.retune(cfg, group);
        shared
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under this lock leaves the state consistent before any
        // call that could panic, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Nanoseconds one queued request adds to the wait of those behind it.
    pub(crate) fn per_slot(&self) -> Nanos {
        let svc = self.svc.load(Ordering::Relaxed);
        let limit = self.limits.concurrency.load(Ordering::Relaxed);
        let by_concurrency = if limit == UNLIMITED {
            0
        } else {
            svc / limit.max(1)
        };
        by_concurrency.max(self.limits.rate.interval())
    }

    pub(crate) fn service_time(&self) -> Nanos {
        self.svc.load(Ordering::Relaxed)
    }

    pub(crate) fn reject(&self, reason: Reason, retry: Nanos, now: Nanos) -> Rejected {
        self.stats.reject(reason, now);
        let retry = match reason {
            Reason::KeyRate => retry,
            _ => {
                let floor = retry.max(self.min_retry.load(Ordering::Relaxed));
                let jitter = f64::from_bits(self.retry_jitter.load(Ordering::Relaxed));
                self.rng.spread(floor, jitter)
            }
        };
        Rejected::new(reason, Duration::from_nanos(retry))
    }

    /// A permit granted at `now` after waiting `waited`.
    pub(crate) fn grant(self: &Arc<Self>, weight: u32, now: Nanos, waited: Nanos) -> Permit {
        self.stats.admit(waited, self.limits.in_flight(), now);
        Permit::new(Arc::clone(self), weight, now)
    }

    /// The permit drop path.
    pub(crate) fn release(self: &Arc<Self>, weight: u32, granted: Nanos) {
        let now = self.clock.now();
        let held = now.saturating_sub(granted);
        let old = self.svc.load(Ordering::Relaxed);
        // EWMA with weight 1/8; racing updates may lose one sample, harmlessly.
        let new = if old == 0 {
            held
        } else {
            old - old / 8 + held / 8
        };
        self.svc.store(new.max(1), Ordering::Relaxed);
        let in_flight = self.limits.release(weight);
        self.stats.in_flight(in_flight);
        let adaptive = self.adaptive_on.load(Ordering::Relaxed);
        // SeqCst pairs with the enqueue path: either we see the waiter, or the
        // waiter's own try_acquire sees the slot we just freed.
        if adaptive || self.waiting.load(Ordering::SeqCst) > 0 {
            let mut st = self.lock();
            if let Some(a) = st.adaptive.as_mut() {
                a.on_sample(held, in_flight);
                self.apply_limits(&st, now);
            }
            self.dispatch(&mut st, now, now);
        }
    }

    /// Writes the effective limits (config × modifiers, adaptive) to the atomics.
    pub(crate) fn apply_limits(&self, st: &State, now: Nanos) {
        let l = &self.limits;
        if !st.cfg.enabled {
            l.concurrency.store(UNLIMITED, Ordering::Release);
            l.rate.set(None, 1, now);
            self.stats.limits(None, None);
            return;
        }
        let base = match (&st.adaptive, st.cfg.max_concurrency) {
            (Some(a), max) => Some(a.limit().min(max.unwrap_or(u32::MAX))),
            (None, max) => max,
        };
        let eff = base.map_or(UNLIMITED, |c| {
            ((f64::from(c) * st.damping.concurrency).floor() as u64).max(1)
        });
        l.concurrency.store(eff, Ordering::Release);
        let rate = st.damped_rate();
        l.rate.set(rate, st.burst(), now);
        self.stats.limits((eff != UNLIMITED).then_some(eff), rate);
    }

    /// Applies a new configuration, keeping waiters, in-flight counts, rate
    /// state (TATs), remembered keys and CoDel state.
    pub(crate) fn retune(self: &Arc<Self>, cfg: QueueConfig, group: Option<GroupLink>) {
        let now = self.clock.now();
        let mut st = self.lock();
        self.limits.enabled.store(cfg.enabled, Ordering::Release);
        self.limits
            .set_key_rate(cfg.key_rate_per_sec, cfg.key_burst, cfg.key_table_size);
        self.limits.group.store(group.map(Arc::new));
        st.codel
            .retune(cfg.codel_target_ms * MS, cfg.codel_interval_ms * MS);
        if st.cfg.modifiers != cfg.modifiers || st.mods.len() != cfg.modifiers.len() {
            st.mods = cfg.modifiers.iter().map(|_| ModifierState::new()).collect();
            st.damping = Damping::NONE;
        }
        if st.cfg.adaptive != cfg.adaptive || st.adaptive.is_none() != cfg.adaptive.is_none() {
            st.adaptive = cfg.adaptive.clone().map(AdaptiveLimit::new);
        }
        self.adaptive_on
            .store(st.adaptive.is_some(), Ordering::Relaxed);
        self.min_retry
            .store(cfg.min_retry_after_ms * MS, Ordering::Relaxed);
        self.retry_jitter
            .store(cfg.retry_jitter.to_bits(), Ordering::Relaxed);
        st.cfg = cfg;
        self.apply_limits(&st, now);
        self.dispatch(&mut st, now, now);
    }

    /// The fast path: an answer without waiting, or what blocked the request
    /// (then it must go through [`Shared::wait`]). Atomics only, unless a
    /// per-key rate or a group is configured.
    pub(crate) fn try_fast(self: &Arc<Self>, req: &Request) -> Result<Answer, Block> {
        let now = self.clock.now();
        if req.priority == Priority::NonRejectable || !self.limits.enabled.load(Ordering::Relaxed) {
            self.limits.force(req.weight);
            return Ok(Ok(self.grant(req.weight, now, 0)));
        }
        if let Err(wait) = self.limits.try_key(req.key, now) {
            return Ok(Err(self.reject(Reason::KeyRate, wait, now)));
        }
        if self.waiting.load(Ordering::SeqCst) > 0 {
            // No barging past waiters: join the queue.
            return Err(Block {
                reason: Reason::Concurrency,
                wait: None,
            });
        }
        match self.limits.try_acquire(req.weight, now) {
            Ok(()) => Ok(Ok(self.grant(req.weight, now, 0))),
            Err(b) => Err(b),
        }
    }
}

impl Queue {
    /// Asks for admission.
    ///
    /// Returns at once with a permit when the limits have room and nobody
    /// waits; otherwise waits in the queue at most `max_wait` (or the request's
    /// deadline), or returns a rejection at once. Non-rejectable requests and
    /// disabled queues are admitted at once (still counted in flight).
    ///
    /// # Cancel safety
    /// Dropping the future leaves the queue cleanly: the waiter is removed and
    /// a permit granted in the meantime is released.
    ///
    /// # Panics
    /// If it has to wait outside a tokio runtime with time enabled (the
    /// immediate answers need no runtime).
    pub async fn ask(&self, req: Request) -> Result<Permit, Rejected> {
        match self.shared.try_fast(&req) {
            Ok(answer) => answer,
            Err(block) => self.shared.wait(req, block).await,
        }
    }

    /// Runs `fut` under a permit of this queue.
    ///
    /// # Errors
    /// The rejection, if not admitted (`fut` is then not polled).
    pub async fn run<F: Future>(&self, req: Request, fut: F) -> Result<F::Output, Rejected> {
        let _permit = self.ask(req).await?;
        Ok(fut.await)
    }

    /// Feeds one downstream latency to this queue's `latency` sampler.
    pub fn observe_latency(&self, d: Duration) {
        self.shared.latency.observe(d);
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// Weight currently in flight.
    pub fn in_flight(&self) -> u64 {
        self.shared.limits.in_flight()
    }

    /// Waiters currently queued.
    pub fn len(&self) -> usize {
        self.shared.lock().waiters.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The concurrency limit in force (after modifiers and adaptation).
    pub fn concurrency_limit(&self) -> Option<u64> {
        let l = self.shared.limits.concurrency.load(Ordering::Acquire);
        (l != UNLIMITED).then_some(l)
    }

    /// Total admissions so far.
    pub fn admitted(&self) -> u64 {
        self.shared.stats.admitted.load(Ordering::Relaxed)
    }

    /// Rejections for `reason` so far.
    pub fn rejected(&self, reason: Reason) -> u64 {
        self.shared.stats.rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Limits in force, counters and modifier state, as JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        self.shared.snapshot()
    }
}
