//! Delivery lag: how long fanned-out frames wait in outboxes before they
//! are written. It is the signal that the node's fan-out is behind (CPU or
//! sockets), measured where it happens, and the regulator's `delivery_lag`
//! sampler: a modifier on the `send` queue dampens the send rate while it
//! is high, so overload is shed as `overloaded` replies instead of growing
//! every member's latency.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use regulator::{LatencySampler, Sampler};

use crate::telemetry::hot;

/// Mean and max lag per flush since the last sample. The regulator gets the
/// mean, not the max: one slow consumer's long wait must not shed everyone's
/// sends (it gets 1013). Two relaxed atomics per flush: a histogram record
/// per flush (100k/s at full fan-out) cost the node visible tail latency.
#[derive(Default)]
pub struct DeliveryLag {
    /// The regulator's own windowed mean.
    mean: LatencySampler,
    max_us: AtomicU64,
}

/// One flush in this many is recorded, counted per thread: at full fan-out
/// (400,000 flushes/s) three shared atomics per flush bounced a cache line
/// between the cores. A systematic sample keeps the mean unbiased.
const SAMPLE_EVERY: u32 = 16;

thread_local! {
    static FLUSHES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl DeliveryLag {
    /// Records the lag of one batched write (oldest frame's wait), sampled.
    pub fn record(&self, lag: Duration) {
        let sampled = FLUSHES.with(|n| {
            let next = n.get().wrapping_add(1);
            n.set(next);
            next % SAMPLE_EVERY == 0
        });
        if sampled {
            self.record_sample(lag);
        }
    }

    fn record_sample(&self, lag: Duration) {
        self.mean.observe(lag);
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }
}

impl Sampler for DeliveryLag {
    /// Milliseconds; `None` when nothing was written since the last sample.
    /// Also publishes the window's mean and max as gauges.
    fn sample(&self) -> Option<f64> {
        let mean_ms = self.mean.sample();
        let max = self.max_us.swap(0, Ordering::Relaxed);
        // Precision loss is irrelevant at these magnitudes.
        #[allow(clippy::cast_precision_loss)]
        hot().delivery_lag_max.set(max as f64 / 1e6);
        hot().delivery_lag_mean.set(mean_ms.unwrap_or(0.0) / 1e3);
        mean_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_the_mean_lag_in_ms_and_resets() {
        let lag = DeliveryLag::default();
        assert_eq!(lag.sample(), None);
        lag.record_sample(Duration::from_millis(2));
        lag.record_sample(Duration::from_millis(4));
        assert_eq!(lag.sample(), Some(3.0));
        assert_eq!(lag.sample(), None);
    }

    #[test]
    fn records_one_flush_in_sample_every() {
        let lag = DeliveryLag::default();
        // Flush i waits i ms: the 16th, 32nd, 48th and 64th are recorded.
        for i in 1..=SAMPLE_EVERY * 4 {
            lag.record(Duration::from_millis(u64::from(i)));
        }
        assert_eq!(lag.sample(), Some(40.0));
    }
}
