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

use regulator::Sampler;

use crate::telemetry::hot;

/// Mean lag per flush since the last sample. The mean, not the max: one
/// slow consumer's long wait must not shed everyone's sends (it gets 1013).
#[derive(Default)]
pub struct DeliveryLag {
    sum_us: AtomicU64,
    flushes: AtomicU64,
}

impl DeliveryLag {
    /// Records the lag of one batched write (oldest frame's wait).
    pub fn record(&self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        hot().delivery_lag.record(lag.as_secs_f64());
    }
}

impl Sampler for DeliveryLag {
    /// Milliseconds; `None` when nothing was written since the last sample.
    fn sample(&self) -> Option<f64> {
        let n = self.flushes.swap(0, Ordering::Relaxed);
        let sum = self.sum_us.swap(0, Ordering::Relaxed);
        // Precision loss is irrelevant at these magnitudes.
        #[allow(clippy::cast_precision_loss)]
        (n > 0).then(|| sum as f64 / n as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_the_mean_lag_in_ms_and_resets() {
        let lag = DeliveryLag::default();
        assert_eq!(lag.sample(), None);
        lag.record(Duration::from_millis(2));
        lag.record(Duration::from_millis(4));
        assert_eq!(lag.sample(), Some(3.0));
        assert_eq!(lag.sample(), None);
    }
}
