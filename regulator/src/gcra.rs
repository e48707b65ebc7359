//! GCRA (generic cell rate algorithm), lock-free, on tokio's clock.
//!
//! Why not `governor`: its limiters fix the quota at construction, so a live
//! retune would have to start a new limiter and forget the theoretical arrival
//! time (a retune would hand out a fresh burst). Here the interval and the
//! tolerance are atomics next to the TAT, so a retune keeps the rate state, and
//! time comes from `tokio::time::Instant`, which the paused test clock drives.
//! The algorithm is the one governor implements: a request at `now` passes when
//! `max(tat, now) + T - now <= tolerance`, where `T = 1/rate` and
//! `tolerance = burst * T`; passing moves the TAT forward by `T`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::pad::Padded;

/// Time in nanoseconds since a clock base (see [`Clock`]).
pub(crate) type Nanos = u64;

/// Converts tokio instants to nanoseconds since a base taken at construction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    base: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            base: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> Nanos {
        self.nanos(tokio::time::Instant::now())
    }

    pub(crate) fn nanos(&self, t: tokio::time::Instant) -> Nanos {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn instant(&self, n: Nanos) -> tokio::time::Instant {
        self.base + std::time::Duration::from_nanos(n)
    }
}

/// Interval and tolerance for a rate and burst, in nanoseconds.
pub(crate) fn params(rate_per_sec: f64, burst: u32) -> (Nanos, Nanos) {
    // Float to int saturates; a rate so high the interval rounds to 0 means
    // "no practical limit", which 1 ns approximates.
    let interval = ((1e9 / rate_per_sec).round() as u64).max(1);
    (interval, interval.saturating_mul(u64::from(burst.max(1))))
}

/// One GCRA step on a plain TAT: `Ok(new_tat)` or `Err(wait_nanos)`.
pub(crate) fn step(
    tat: Nanos,
    now: Nanos,
    interval: Nanos,
    tolerance: Nanos,
) -> Result<Nanos, Nanos> {
    let new_tat = tat.max(now).saturating_add(interval);
    let ahead = new_tat - now;
    if ahead <= tolerance {
        Ok(new_tat)
    } else {
        Err(ahead - tolerance)
    }
}

/// A GCRA whose parameters can change without losing its TAT.
#[derive(Debug)]
pub(crate) struct Gcra {
    tat: Padded<AtomicU64>,
    /// 0 means "no rate limit".
    interval: AtomicU64,
    tolerance: AtomicU64,
}

impl Gcra {
    pub(crate) fn new() -> Self {
        Self {
            tat: Padded(AtomicU64::new(0)),
            interval: AtomicU64::new(0),
            tolerance: AtomicU64::new(0),
        }
    }

    /// Sets the rate (`None`: unlimited) at `now`. The state is kept, so a
    /// retune neither grants a new burst nor forgets debt already run up; the
    /// debt (how far the TAT is ahead of now) is rescaled to the new interval,
    /// so the share of the burst in use stays the same and a raised rate
    /// takes effect at once.
    pub(crate) fn set(&self, rate: Option<f64>, burst: u32, now: Nanos) {
        let (i, t) = rate.map_or((0, 0), |r| params(r, burst));
        let old = self.interval.load(Ordering::Acquire);
        if old != 0 && i != 0 && old != i {
            // fetch_update only fails when the closure returns None, which it never does.
            let _ = self
                .tat
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                    if tat <= now {
                        return Some(tat);
                    }
                    let scaled = u128::from(tat - now) * u128::from(i) / u128::from(old);
                    Some(now.saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX)))
                });
        }
        self.tolerance.store(t, Ordering::Relaxed);
        self.interval.store(i, Ordering::Release);
    }

    pub(crate) fn interval(&self) -> Nanos {
        self.interval.load(Ordering::Acquire)
    }

    /// Takes one token at `now`, or says how long until one is available.
    pub(crate) fn try_take(&self, now: Nanos) -> Result<(), Nanos> {
        let interval = self.interval.load(Ordering::Acquire);
        if interval == 0 {
            return Ok(());
        }
        let tolerance = self.tolerance.load(Ordering::Relaxed);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let new_tat = step(tat, now, interval, tolerance)?;
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Gives back a token taken by [`Gcra::try_take`] when a later regulator
    /// in the stack refused the request.
    pub(crate) fn refund(&self) {
        let interval = self.interval.load(Ordering::Acquire);
        // fetch_update only fails when the closure returns None, which it never does.
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(interval))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_then_spacing() {
        let g = Gcra::new();
        g.set(Some(100.0), 3, 0);
        let now = 1_000 * MS;
        for _ in 0..3 {
            assert!(g.try_take(now).is_ok());
        }
        let wait = g.try_take(now).unwrap_err();
        assert_eq!(wait, 10 * MS);
        assert!(g.try_take(now + 10 * MS).is_ok());
        assert!(g.try_take(now + 10 * MS).is_err());
    }

    #[test]
    fn retune_keeps_debt() {
        let g = Gcra::new();
        g.set(Some(10.0), 1, 0);
        assert!(g.try_take(0).is_ok());
        g.set(Some(10.0), 1, 0);
        assert!(
            g.try_take(0).is_err(),
            "a retune must not grant a new burst"
        );
        g.set(Some(1.0), 1, 0);
        assert_eq!(
            g.try_take(0),
            Err(1_000 * MS),
            "debt rescaled to the new rate"
        );
        g.set(None, 1, 0);
        assert!(g.try_take(0).is_ok());
    }

    #[test]
    fn refund_returns_the_token() {
        let g = Gcra::new();
        g.set(Some(10.0), 1, 0);
        assert!(g.try_take(0).is_ok());
        g.refund();
        assert!(g.try_take(0).is_ok());
    }
}
