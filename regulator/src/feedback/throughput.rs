//! What a queue admitted between feedback ticks: where a tracking modifier
//! cuts from.

use crate::gcra::Nanos;

/// Ticks a cut looks back over (a second at the default 250 ms tick).
/// Cutting from one tick's figure collapsed the limit when that tick was a
/// stall: a starved node admitted almost nothing for 250 ms, the lag spiked,
/// and the rate fell from 7,000/s to `min_factor` (200/s), from where growing
/// back took 18 s (docs/OVERLOAD.md).
const RECENT: usize = 4;

/// Admitted counts at the last tick and the rates of the last [`RECENT`].
#[derive(Debug, Default)]
pub(crate) struct Throughput {
    last: Option<(Nanos, u64)>,
    /// A ring, newest at `(ticks - 1) % RECENT`.
    recent: [f64; RECENT],
    ticks: usize,
}

impl Throughput {
    /// Records the queue's admitted count at `now` and returns the best
    /// admissions per second of the last [`RECENT`] ticks, as a share of
    /// `rate` (`None` without a rate, or on the first tick).
    pub(crate) fn tick(&mut self, now: Nanos, admitted: u64, rate: Option<f64>) -> Option<f64> {
        let (then, before) = self.last.replace((now, admitted))?;
        let rate = rate?;
        let secs = now.saturating_sub(then) as f64 / 1e9;
        if secs <= 0.0 {
            return None;
        }
        self.recent[self.ticks % RECENT] = admitted.saturating_sub(before) as f64 / secs / rate;
        self.ticks += 1;
        Some(
            self.recent[..self.ticks.min(RECENT)]
                .iter()
                .copied()
                .fold(0.0, f64::max),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Nanos = 250_000_000;

    #[test]
    fn a_stalled_tick_does_not_hide_the_seconds_best() {
        let mut t = Throughput::default();
        // Rate 1,000/s: 87.5 admitted per 250 ms tick is a share of 0.35.
        assert_eq!(t.tick(0, 0, Some(1000.0)), None, "first tick: no interval");
        let mut admitted = 0.0;
        for i in 1..=3 {
            admitted += 87.5;
            let share = t.tick(i * TICK, admitted as u64, Some(1000.0)).unwrap();
            assert!((share - 0.35).abs() < 0.01, "{share}");
        }
        // A tick in which almost nothing was admitted: the second's best
        // still stands, and only falls once the stall fills the window.
        for i in 4..=6 {
            let share = t.tick(i * TICK, admitted as u64 + 2, Some(1000.0)).unwrap();
            assert!((share - 0.35).abs() < 0.01, "tick {i}: {share}");
        }
        let share = t.tick(7 * TICK, admitted as u64 + 4, Some(1000.0)).unwrap();
        assert!(share < 0.01, "{share}");
    }

    #[test]
    fn without_a_rate_there_is_no_share() {
        let mut t = Throughput::default();
        t.tick(0, 0, None);
        assert_eq!(t.tick(TICK, 10, None), None);
    }
}
