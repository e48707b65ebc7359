//! Counting and exporting every decision, and logging shedding transitions.
//!
//! Counters live in atomics (for the snapshot) and in `metrics` handles built
//! once per queue, so the hot path neither allocates label sets nor looks up a
//! registry. Install the `metrics` recorder before building the regulator.
//! A log line is written only when a queue starts or stops shedding.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram};

use crate::gcra::Nanos;
use crate::pad::Padded;
use crate::reject::Reason;

/// A queue stops "shedding" after this long without a rejection.
const QUIET: Nanos = 1_000_000_000;

#[derive(Debug)]
struct Handles {
    admitted: Counter,
    rejected: Vec<Counter>,
    timed_out: Counter,
    queue_length: Gauge,
    in_flight: Gauge,
    concurrency_limit: Gauge,
    rate_limit: Gauge,
    wait: Histogram,
}

#[derive(Debug)]
pub(crate) struct Stats {
    name: String,
    pub(crate) admitted: Padded<AtomicU64>,
    pub(crate) rejected: [AtomicU64; Reason::ALL.len()],
    shedding: AtomicBool,
    last_reject: AtomicU64,
    m: Handles,
}

impl Stats {
    pub(crate) fn new(name: &str) -> Self {
        let q = name.to_owned();
        let m = Handles {
            admitted: metrics::counter!("regulator_admitted_total", "queue" => q.clone()),
            rejected: Reason::ALL
                .iter()
                .map(|r| {
                    metrics::counter!("regulator_rejected_total", "queue" => q.clone(), "reason" => r.as_str())
                })
                .collect(),
            timed_out: metrics::counter!("regulator_timed_out_total", "queue" => q.clone()),
            queue_length: metrics::gauge!("regulator_queue_length", "queue" => q.clone()),
            in_flight: metrics::gauge!("regulator_in_flight", "queue" => q.clone()),
            concurrency_limit: metrics::gauge!("regulator_concurrency_limit", "queue" => q.clone()),
            rate_limit: metrics::gauge!("regulator_rate_limit", "queue" => q.clone()),
            wait: metrics::histogram!("regulator_wait_seconds", "queue" => q),
        };
        Self {
            name: name.to_owned(),
            admitted: Padded(AtomicU64::new(0)),
            rejected: Default::default(),
            shedding: AtomicBool::new(false),
            last_reject: AtomicU64::new(0),
            m,
        }
    }

    /// An admission after waiting `waited` nanoseconds.
    pub(crate) fn admit(&self, waited: Nanos, in_flight: u64, now: Nanos) {
        self.admitted.fetch_add(1, Ordering::Relaxed);
        self.m.admitted.increment(1);
        self.m.wait.record(waited as f64 / 1e9);
        self.m.in_flight.set(in_flight as f64);
        if self.shedding.load(Ordering::Relaxed) {
            self.maybe_stop_shedding(now);
        }
    }

    pub(crate) fn reject(&self, reason: Reason, now: Nanos) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.m.rejected[reason.index()].increment(1);
        if reason == Reason::Timeout {
            self.m.timed_out.increment(1);
        }
        self.last_reject.store(now, Ordering::Relaxed);
        if !self.shedding.swap(true, Ordering::AcqRel) {
            tracing::warn!(queue = %self.name, %reason, "regulator queue started shedding");
        }
    }

    /// Ends the shedding state after a quiet second (checked on admissions and
    /// feedback ticks, so it needs no timer of its own).
    pub(crate) fn maybe_stop_shedding(&self, now: Nanos) {
        let last = self.last_reject.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= QUIET && self.shedding.swap(false, Ordering::AcqRel) {
            let rejected: u64 = self
                .rejected
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum();
            tracing::info!(queue = %self.name, rejected_total = rejected, "regulator queue stopped shedding");
        }
    }

    pub(crate) fn shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    pub(crate) fn gauges(
        &self,
        queue_length: usize,
        in_flight: u64,
        concurrency: Option<u64>,
        rate: Option<f64>,
    ) {
        self.m.queue_length.set(queue_length as f64);
        self.m.in_flight.set(in_flight as f64);
        self.limits(concurrency, rate);
    }

    /// Limits in force (-1: none).
    pub(crate) fn limits(&self, concurrency: Option<u64>, rate: Option<f64>) {
        self.m
            .concurrency_limit
            .set(concurrency.map_or(-1.0, |c| c as f64));
        self.m.rate_limit.set(rate.unwrap_or(-1.0));
    }

    pub(crate) fn queue_length(&self, n: usize) {
        self.m.queue_length.set(n as f64);
    }

    pub(crate) fn in_flight(&self, n: u64) {
        self.m.in_flight.set(n as f64);
    }

    pub(crate) fn rejected_json(&self) -> serde_json::Value {
        Reason::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str().to_owned(),
                    serde_json::Value::from(self.rejected[r.index()].load(Ordering::Relaxed)),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}
