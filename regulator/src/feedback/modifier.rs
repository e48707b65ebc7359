//! Step tables: from a sampler value to a damping factor (jobs' modifiers).
//!
//! A factor in (0, 1] multiplies a queue's configured rate and concurrency.
//! The strongest step whose threshold is exceeded, and whose `for_ms` the
//! overload has lasted, wins; several modifiers on one queue combine by taking
//! the smallest factor. When the value falls back to or below every threshold
//! (or the sampler has no data), the overload clock resets and the factor
//! returns to 1: the configured limits are restored.

use serde::Serialize;

use crate::config::ModifierConfig;
use crate::gcra::Nanos;

/// Run-time state of one modifier.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModifierState {
    /// Last sampled value.
    pub value: Option<f64>,
    /// Factor currently applied by this modifier.
    pub factor: f64,
    /// How long the overload has lasted, in ms (0 when not overloaded).
    pub overloaded_for_ms: u64,
    #[serde(skip)]
    since: Option<Nanos>,
}

impl ModifierState {
    pub(crate) fn new() -> Self {
        Self {
            factor: 1.0,
            ..Self::default()
        }
    }

    /// Feeds one sample taken at `now`; returns the factor in force.
    pub(crate) fn update(&mut self, cfg: &ModifierConfig, value: Option<f64>, now: Nanos) -> f64 {
        self.value = value;
        let lowest = cfg
            .steps
            .iter()
            .map(|s| s.above)
            .fold(f64::INFINITY, f64::min);
        let v = match value {
            Some(v) if v > lowest => v,
            _ => {
                self.since = None;
                self.overloaded_for_ms = 0;
                self.factor = 1.0;
                return 1.0;
            }
        };
        let since = *self.since.get_or_insert(now);
        let lasted = now.saturating_sub(since) / 1_000_000;
        self.overloaded_for_ms = lasted;
        self.factor = cfg
            .steps
            .iter()
            .filter(|s| v > s.above && lasted >= s.for_ms)
            .map(|s| s.factor)
            .fold(1.0, f64::min);
        self.factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Step;

    const MS: u64 = 1_000_000;

    fn table() -> ModifierConfig {
        ModifierConfig {
            sampler: "cpu".into(),
            steps: vec![
                Step {
                    above: 80.0,
                    for_ms: 0,
                    factor: 0.8,
                },
                Step {
                    above: 90.0,
                    for_ms: 0,
                    factor: 0.5,
                },
                Step {
                    above: 80.0,
                    for_ms: 5_000,
                    factor: 0.25,
                },
            ],
        }
    }

    #[test]
    fn damping_deepens_with_value_and_duration_then_clears() {
        let cfg = table();
        let mut m = ModifierState::new();
        assert_eq!(m.update(&cfg, Some(50.0), 0), 1.0);
        assert_eq!(m.update(&cfg, Some(85.0), 0), 0.8);
        assert_eq!(m.update(&cfg, Some(95.0), 1_000 * MS), 0.5);
        assert_eq!(m.update(&cfg, Some(85.0), 5_000 * MS), 0.25);
        assert_eq!(m.overloaded_for_ms, 5_000);
        assert_eq!(m.update(&cfg, Some(10.0), 6_000 * MS), 1.0);
        assert_eq!(
            m.update(&cfg, Some(85.0), 7_000 * MS),
            0.8,
            "overload clock restarted"
        );
        assert_eq!(m.update(&cfg, None, 8_000 * MS), 1.0);
    }
}
