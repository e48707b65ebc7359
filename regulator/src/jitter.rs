//! Spreads retry hints, so that callers refused together do not all come
//! back together (the retry storm a fixed hint turns into waves).
//!
//! splitmix64 over an atomic counter: one relaxed `fetch_add` a draw, no
//! lock, no thread-local state, and a sequence fixed by the queue's name, so
//! tests are reproducible. Rejections from many callers interleave, so one
//! caller's draws are as good as random; nothing here is for secrets.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::gcra::Nanos;

/// splitmix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Debug)]
pub(crate) struct Jitter(AtomicU64);

impl Jitter {
    /// A sequence that starts from a hash of `name` (FNV-1a).
    pub(crate) fn seeded(name: &str) -> Self {
        let seed = name.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        });
        Self(AtomicU64::new(seed))
    }

    /// A draw in [0, 1).
    pub(crate) fn unit(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits: exactly representable, so the result is below 1.
        #[allow(clippy::cast_precision_loss)]
        let unit = (z >> 11) as f64 / (1_u64 << 53) as f64;
        unit
    }

    /// `hint` spread uniformly over [hint, hint × (1 + jitter)).
    pub(crate) fn spread(&self, hint: Nanos, jitter: f64) -> Nanos {
        if jitter <= 0.0 || hint == 0 {
            return hint;
        }
        // Hints are at most a day (validated), far inside f64's exact range.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let extra = (hint as f64 * jitter * self.unit()) as Nanos;
        hint.saturating_add(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINT: Nanos = 2_500_000_000;

    #[test]
    fn no_jitter_leaves_the_hint_exact() {
        let j = Jitter::seeded("send");
        assert!((0..100).all(|_| j.spread(HINT, 0.0) == HINT));
    }

    #[test]
    fn hints_spread_evenly_over_the_jitter_range() {
        let j = Jitter::seeded("send");
        let mut deciles = [0_u32; 10];
        for _ in 0..10_000 {
            let h = j.spread(HINT, 1.0);
            assert!((HINT..2 * HINT).contains(&h), "{h}");
            deciles[usize::try_from((h - HINT) * 10 / HINT).unwrap()] += 1;
        }
        // 1,000 expected in each; a sequence stuck in a few values, or
        // skewed to one end, falls far outside.
        assert!(
            deciles.iter().all(|&n| (850..1150).contains(&n)),
            "{deciles:?}"
        );
    }

    #[test]
    fn queues_draw_different_sequences() {
        let (a, b) = (Jitter::seeded("send"), Jitter::seeded("login"));
        let a: Vec<_> = (0..8).map(|_| a.spread(HINT, 1.0)).collect();
        let b: Vec<_> = (0..8).map(|_| b.spread(HINT, 1.0)).collect();
        assert_ne!(a, b);
    }
}
