//! Adaptive concurrency limits (after Netflix's concurrency-limits).
//!
//! Fed one sample per completed job (the time its permit was held) and the
//! number of jobs in flight at that moment. AIMD adds one slot per sample
//! while latency stays under the threshold and the limit is in use, and
//! multiplies by `backoff` above it. Gradient (Gradient2) keeps a slow moving
//! baseline of latency and shrinks the limit by `tolerance * baseline /
//! latency` (bounded to [0.5, 1]) plus a small headroom of `sqrt(limit)`.
//! Neither grows while the queue uses under half its limit (app-limited), so an
//! idle queue does not drift to `max_limit`.

use crate::config::{AdaptiveConfig, Algorithm};

#[derive(Debug, Clone)]
pub(crate) struct AdaptiveLimit {
    cfg: AdaptiveConfig,
    limit: f64,
    baseline: Option<f64>,
}

impl AdaptiveLimit {
    pub(crate) fn new(cfg: AdaptiveConfig) -> Self {
        let limit = f64::from(cfg.initial_limit.clamp(cfg.min_limit, cfg.max_limit));
        Self {
            cfg,
            limit,
            baseline: None,
        }
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit as u32
    }

    /// One completed job: `rtt_ns` held, `in_flight` jobs still running.
    pub(crate) fn on_sample(&mut self, rtt_ns: u64, in_flight: u64) {
        let (min, max) = (f64::from(self.cfg.min_limit), f64::from(self.cfg.max_limit));
        let rtt = rtt_ns.max(1) as f64;
        let app_limited = (in_flight as f64) * 2.0 < self.limit;
        self.limit = match self.cfg.algorithm {
            Algorithm::Aimd => {
                if rtt > self.cfg.latency_threshold_ms as f64 * 1e6 {
                    self.limit * self.cfg.backoff
                } else if app_limited {
                    self.limit
                } else {
                    self.limit + 1.0
                }
            }
            Algorithm::Gradient => self.gradient(rtt, app_limited),
        }
        .clamp(min, max);
    }

    fn gradient(&mut self, rtt: f64, app_limited: bool) -> f64 {
        // The baseline follows slowly (about 600 samples), as Gradient2's long window.
        let base = match self.baseline {
            None => rtt,
            Some(b) => b + (rtt - b) / 600.0,
        };
        // Recover from a baseline stuck high after a latency step down.
        let base = if base / rtt > 2.0 { base * 0.95 } else { base };
        self.baseline = Some(base);
        if app_limited {
            return self.limit;
        }
        let gradient = (self.cfg.tolerance * base / rtt).clamp(0.5, 1.0);
        let target = self.limit * gradient + self.limit.sqrt();
        self.limit * (1.0 - self.cfg.smoothing) + target * self.cfg.smoothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn cfg(algorithm: Algorithm) -> AdaptiveConfig {
        AdaptiveConfig {
            algorithm,
            initial_limit: 10,
            ..AdaptiveConfig::default()
        }
    }

    #[test]
    fn aimd_grows_when_fast_and_backs_off_when_slow() {
        let mut a = AdaptiveLimit::new(cfg(Algorithm::Aimd));
        for _ in 0..10 {
            let l = u64::from(a.limit());
            a.on_sample(10 * MS, l);
        }
        assert_eq!(a.limit(), 20);
        a.on_sample(500 * MS, 20);
        assert_eq!(a.limit(), 18);
        a.on_sample(10 * MS, 1);
        assert_eq!(a.limit(), 18, "app-limited: no growth");
    }

    #[test]
    fn gradient_shrinks_when_latency_rises_above_baseline() {
        let mut a = AdaptiveLimit::new(cfg(Algorithm::Gradient));
        for _ in 0..200 {
            let l = u64::from(a.limit());
            a.on_sample(10 * MS, l);
        }
        let grown = a.limit();
        assert!(grown > 10, "grew to {grown}");
        for _ in 0..200 {
            let l = u64::from(a.limit());
            a.on_sample(100 * MS, l);
        }
        assert!(a.limit() < grown / 2, "{} vs {grown}", a.limit());
    }
}
