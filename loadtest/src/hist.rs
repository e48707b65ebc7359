//! Latency histograms: creation, sharded recording, merging, percentile
//! summaries and the `.hgrm` percentile-distribution text format.
//!
//! Values are microseconds. One histogram covering 1 µs to 1 h at three
//! significant figures holds ~180 KiB of counters, too much to give every one
//! of thousands of users its own; users record into one of [`SHARDS`] shards
//! (by user index), and the collector merges the shards every second.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Highest value recorded: one hour in µs; larger values saturate to it.
pub const MAX_MICROS: u64 = 3_600_000_000;
/// Shards per [`Sharded`] histogram.
pub const SHARDS: usize = 16;

/// An empty µs histogram (1 µs .. 1 h, 3 significant figures).
pub fn new_hist() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; the fallback is unreachable.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| {
        let mut h = Histogram::new(3).unwrap_or_else(|_| unreachable!("3 sigfig is valid"));
        h.auto(true);
        h
    })
}

/// Records `micros` (clamped into the histogram's range).
pub fn record(h: &mut Histogram<u64>, micros: u64) {
    h.saturating_record(micros.clamp(1, MAX_MICROS));
}

/// Adds every histogram of `parts` into a fresh one.
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut total = new_hist();
    for p in parts {
        // Same bounds everywhere, so addition cannot fail; saturate if it did.
        if total.add(p).is_err() {
            for v in p.iter_recorded() {
                total.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }
    total
}

/// A histogram split into [`SHARDS`] mutex-protected shards.
#[derive(Debug)]
pub struct Sharded {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Sharded {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(new_hist())).collect(),
        }
    }
}

impl Sharded {
    /// Records `micros` into the shard of `key` (a user index).
    pub fn record(&self, key: usize, micros: u64) {
        let mut h = lock(&self.shards[key % SHARDS]);
        record(&mut h, micros);
    }

    /// Moves everything recorded since the last call into `into`, leaving the
    /// shards empty.
    pub fn drain_into(&self, into: &mut Histogram<u64>) {
        for shard in &self.shards {
            let mut h = lock(shard);
            if h.is_empty() {
                continue;
            }
            if into.add(&*h).is_err() {
                for v in h.iter_recorded() {
                    into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
                }
            }
            h.reset();
        }
    }
}

/// Locks a mutex, taking the data even if a panicking holder poisoned it (a
/// histogram is valid after any partial update).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Percentiles of one latency histogram, in milliseconds, as `summary.json` holds them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p99_9_ms: f64,
    /// 99.99th percentile, ms.
    pub p99_99_ms: f64,
    /// Largest sample, ms.
    pub max_ms: f64,
}

impl LatencySummary {
    /// The summary of `h` (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            p99_99_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
        }
    }
}

/// `h` as a Java-HdrHistogram-style percentile distribution (`.hgrm`), values
/// in milliseconds, readable by the usual HdrHistogram plotters.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / 1000.0;
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.3} {q:>14.12} {:>10} {:>14.2}",
                    count_below(h, v.value_iterated_to()),
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.3} {q:>14.12} {:>10}", h.len());
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

/// Samples at or below `value`.
fn count_below(h: &Histogram<u64>, value: u64) -> u64 {
    h.count_between(0, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_keeps_percentiles() {
        let mut a = new_hist();
        let mut b = new_hist();
        for v in 1..=900 {
            record(&mut a, v);
        }
        for v in 901..=1000 {
            record(&mut b, v);
        }
        let m = merge([&a, &b]);
        assert_eq!(m.len(), 1000);
        assert_eq!(m.max(), 1000);
        let s = LatencySummary::of(&m);
        assert!((s.p50_ms - 0.5).abs() < 0.001, "{s:?}");
        assert!((s.p99_ms - 0.99).abs() < 0.001, "{s:?}");
    }

    #[test]
    fn sharded_drain_merges_every_user_and_empties() {
        let s = Sharded::default();
        for user in 0..100 {
            s.record(user, 1000 + user as u64);
        }
        let mut into = new_hist();
        s.drain_into(&mut into);
        assert_eq!(into.len(), 100);
        assert_eq!(into.min(), 1000);
        let mut again = new_hist();
        s.drain_into(&mut again);
        assert!(again.is_empty());
    }

    #[test]
    fn out_of_range_values_saturate() {
        let mut h = new_hist();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_MICROS);
    }

    #[test]
    fn summary_of_empty_is_zero() {
        assert_eq!(LatencySummary::of(&new_hist()), LatencySummary::default());
    }

    #[test]
    fn hgrm_lists_percentiles_and_totals() {
        let mut h = new_hist();
        for v in 1..=10_000 {
            record(&mut h, v);
        }
        let text = hgrm(&h);
        assert!(text.contains("Percentile"));
        assert!(text.contains("Total count    =        10000"));
        assert!(text.lines().count() > 20);
    }
}
