//! Step tables: from a sampler value to a damping factor (jobs' modifiers).
//!
//! A step's factor in (0, 1] multiplies a queue's configured rate and
//! concurrency.
//! The strongest step whose threshold is exceeded, and whose `for_ms` the
//! overload has lasted, wins; several modifiers on one queue combine by taking
//! the smallest factor. When the value falls back to or below every threshold
//! (or the sampler has no data), the overload clock resets and the factor
//! returns to 1: the configured limits are restored.
//!
//! A modifier with a `track` table also finds a factor by itself: down to a
//! share of the measured throughput when the value rises above target, and
//! again whenever it gets a quarter worse than at the last cut (a backlog
//! still growing) or is still above target a second after it; up a little
//! each tick while it is at or below target. Within that second, a value
//! above target but not that much worse holds the factor: the cut is taking
//! effect (a backlog takes ticks to drain, so the value keeps rising for a
//! while after a cut), and cutting on every such tick would ratchet the
//! limit down and lose goodput.
//!
//! The tracked factor also stays within `headroom` × the admitted
//! throughput. Under that ceiling it follows the demand (up at most
//! `headroom`-fold a tick); after a cut it grows by `increase` until the
//! demand falls below the ceiling again.
//!
//! While the tracking, not the demand, holds admissions back (from a cut
//! until the demand falls below the ceiling again), `cut_burst_ms` caps the
//! queue's burst at that long at the damped rate: a burst counted in
//! requests is seconds of work at a rate cut far down, which every lull in
//! the demand refills and the next wave dumps on a downstream already
//! behind. Following the demand, the configured burst absorbs a spike.
//!
//! The tracked factor is a share of the admitted *rate*, so on a queue with
//! a rate it damps the rate alone ([`Damping`]). Scaling a concurrency limit
//! by it means nothing: an adaptive limit of 64 under a tracked 0.01 became
//! one job in flight, and the node's sends fell to a fifth
//! (docs/OVERLOAD.md). Without a rate it damps concurrency, the one limit
//! there is.

use serde::Serialize;

use crate::config::{ModifierConfig, Track};
use crate::gcra::Nanos;

/// Run-time state of one modifier.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModifierState {
    /// Last sampled value.
    pub value: Option<f64>,
    /// Factor currently applied by this modifier (the smaller of its steps'
    /// and its tracking's).
    pub factor: f64,
    /// How long the overload has lasted, in ms (0 when not overloaded).
    pub overloaded_for_ms: u64,
    /// The tracking factor (1 without a `track` table).
    pub tracked: f64,
    /// The tracking has sat at `min_factor` with the value above target
    /// for [`UNREACHABLE_AFTER`]: admitting less cannot bring the value to
    /// target (the downstream is slower than that even when idle), and the
    /// queue only throws work away. Raise `target` or lower `min_factor`.
    pub unreachable: bool,
    /// Since when the tracking has sat at `min_factor` above target.
    #[serde(skip)]
    floored_since: Option<Nanos>,
    /// The steps' factor alone.
    #[serde(skip)]
    stepped: f64,
    #[serde(skip)]
    since: Option<Nanos>,
    /// The tracking's last cut while above target: value and time.
    #[serde(skip)]
    cut: Option<Cut>,
    /// The tracking follows the demand (`headroom` × the admitted
    /// throughput) rather than growing by `increase`: the limit has not been
    /// what held admissions back since the last cut, so there is no
    /// capacity to feel for slowly.
    #[serde(skip)]
    following: bool,
}

impl ModifierState {
    pub(crate) fn new() -> Self {
        Self {
            factor: 1.0,
            tracked: 1.0,
            stepped: 1.0,
            following: true,
            ..Self::default()
        }
    }

    /// Feeds one sample taken at `now`; `throughput` is the queue's best
    /// admitted rate of the last second, as a share of its configured rate
    /// (`None` without a rate). Returns the factor in force.
    pub(crate) fn update(
        &mut self,
        cfg: &ModifierConfig,
        value: Option<f64>,
        now: Nanos,
        throughput: Option<f64>,
    ) -> f64 {
        if let Some(t) = &cfg.track {
            self.track(t, value, now, throughput);
            // An episode starts at the floor, above target, and lasts until
            // the factor has grown clear of the floor: a tick's dip below
            // target (a noisy signal) does not end it.
            let floored = value.is_some_and(|v| v > t.target) && self.tracked <= t.min_factor;
            let clear = self.tracked > t.min_factor * CLEAR_OF_FLOOR;
            self.floored_since = match self.floored_since {
                Some(_) if clear => None,
                Some(since) => Some(since),
                None => floored.then_some(now),
            };
            self.unreachable = self
                .floored_since
                .is_some_and(|since| now.saturating_sub(since) >= UNREACHABLE_AFTER);
        }
        self.stepped = self.steps(cfg, value, now);
        self.value = value;
        self.factor = self.stepped.min(self.tracked);
        self.factor
    }

    /// What this modifier multiplies, on a queue with or without a rate
    /// (see the module docs).
    pub(crate) fn damping(&self, cfg: &ModifierConfig, has_rate: bool) -> Damping {
        let cut_burst_ms = cfg
            .track
            .as_ref()
            .filter(|t| t.cut_burst_ms > 0 && !self.following)
            .map(|t| t.cut_burst_ms);
        Damping {
            rate: self.factor,
            concurrency: if has_rate { self.stepped } else { self.factor },
            burst_ms: cut_burst_ms,
        }
    }

    /// One tracking step from the new value taken at `now` and the admitted
    /// throughput (share of the rate).
    fn track(&mut self, t: &Track, value: Option<f64>, now: Nanos, throughput: Option<f64>) {
        // As much as the demand justifies. A limit far above what is
        // admitted protects nothing: on a node at 2,000 sends/s under a
        // 20,000/s ceiling, a jump to 10x went through at full rate for the
        // second or two the lag took to rise, and the backlog overflowed
        // 840 of 2,000 clients' outboxes (docs/OVERLOAD.md).
        let ceiling = throughput
            .filter(|_| t.headroom > 0.0)
            .map(|tp| (tp * t.headroom).clamp(t.min_factor, 1.0));
        let settling = |v: f64, c: Cut| v <= c.value * WORSE && now.saturating_sub(c.at) < SETTLE;
        match value {
            // Not much worse than when we last cut, and recently: that cut is
            // still taking effect (a backlog drains), and cutting on every such
            // tick would ratchet the limit down to `min_factor`.
            Some(v) if v > t.target && self.cut.is_some_and(|c| settling(v, c)) => {
                self.tracked = ceiling.map_or(self.tracked, |c| c.min(self.tracked));
            }
            Some(v) if v > t.target => {
                // Below what was really admitted, not below a ceiling nobody reached.
                let from = throughput.map_or(self.tracked, |tp| tp.min(self.tracked));
                self.tracked = (from * t.backoff).max(t.min_factor);
                self.cut = Some(Cut { value: v, at: now });
                self.following = false;
            }
            _ => {
                self.cut = None;
                let grown = (self.tracked * (1.0 + t.increase)).min(1.0);
                match ceiling {
                    // The demand, not the limit, holds admissions back: follow
                    // it, so that a rise is met within ticks (each tick at most
                    // `headroom` × the one before) instead of at `increase`.
                    Some(c) if self.following || c < grown => {
                        self.tracked = c;
                        self.following = true;
                    }
                    _ => self.tracked = grown,
                }
            }
        }
    }

    fn steps(&mut self, cfg: &ModifierConfig, value: Option<f64>, now: Nanos) -> f64 {
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
                return 1.0;
            }
        };
        let since = *self.since.get_or_insert(now);
        let lasted = now.saturating_sub(since) / 1_000_000;
        self.overloaded_for_ms = lasted;
        cfg.steps
            .iter()
            .filter(|s| v > s.above && lasted >= s.for_ms)
            .map(|s| s.factor)
            .fold(1.0, f64::min)
    }
}

/// The factors in force on a queue's configured rate and concurrency, and
/// the cap on its burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Damping {
    pub(crate) rate: f64,
    pub(crate) concurrency: f64,
    /// The burst is at most this many ms of the damped rate (`cut_burst_ms`
    /// of a tracking that holds admissions back); `None`: as configured.
    pub(crate) burst_ms: Option<u64>,
}

impl Damping {
    /// The configured limits as they are.
    pub(crate) const NONE: Damping = Damping {
        rate: 1.0,
        concurrency: 1.0,
        burst_ms: None,
    };

    /// Several modifiers: the strongest damping of each limit.
    pub(crate) fn min(self, other: Damping) -> Damping {
        Damping {
            rate: self.rate.min(other.rate),
            concurrency: self.concurrency.min(other.concurrency),
            burst_ms: self.burst_ms.into_iter().chain(other.burst_ms).min(),
        }
    }

    /// The burst in force: `configured`, or fewer while `burst_ms` caps it
    /// at that long at `rate` (never below one request).
    pub(crate) fn burst(&self, configured: u32, rate: Option<f64>) -> u32 {
        match (self.burst_ms, rate) {
            (Some(ms), Some(r)) => {
                // Saturating float to int; at most `configured` anyway.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let capped = (r * ms as f64 / 1000.0).round() as u32;
                capped.clamp(1, configured.max(1))
            }
            _ => configured,
        }
    }
}

/// How much worse than at the last cut the value must get before the next
/// cut. Measured on a starved node: the lag rose 51 → 60 → 65 ms over the
/// ticks after a cut while the backlog drained, and cutting on each took the
/// rate from 1,000/s to 323/s (docs/OVERLOAD.md).
const WORSE: f64 = 1.25;

/// How long a cut is given to take effect. Measured on a starved node with
/// rooms of 500: one cut at a spike (569 ms) let the lag stay at 200-470 ms,
/// four to nine times the target, for the rest of the run, every value
/// being "not a quarter worse" than the spike (docs/OVERLOAD.md).
const SETTLE: Nanos = 1_000_000_000;

/// How long a tracking modifier sits at its floor, still above target,
/// before the target counts as unreachable. On a node starved to a quarter
/// core, dialtone's 50 ms lag target held `send` at its floor from the first
/// seconds of every run, refusing 89 % at the node's capacity, and nothing
/// said so (docs/OVERLOAD.md, "Steady state").
const UNREACHABLE_AFTER: Nanos = 5_000_000_000;

/// How far above `min_factor` the tracked factor must grow to end an
/// episode at the floor. At 10x the lag dipped under target every few
/// seconds and the factor rose 5 % (0.01 → 0.0105) before the next cut.
const CLEAR_OF_FLOOR: f64 = 1.5;

/// The tracking's last cut.
#[derive(Debug, Clone, Copy)]
struct Cut {
    value: f64,
    at: Nanos,
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
            track: None,
        }
    }

    fn tracking() -> ModifierConfig {
        ModifierConfig {
            sampler: "delivery_lag".into(),
            steps: Vec::new(),
            // Round numbers for the arithmetic below.
            track: Some(Track {
                target: 50.0,
                increase: 0.1,
                min_factor: 0.05,
                ..Track::default()
            }),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn tracking_cuts_below_the_admitted_throughput_not_the_ceiling() {
        let cfg = tracking();
        let mut m = ModifierState::new();
        // Above target while admitting 30 % of the configured rate: the
        // first cut lands at 0.8 x 30 %, not 0.8 x 100 %.
        assert!(close(m.update(&cfg, Some(80.0), 0, Some(0.3)), 0.24));
        // Rising, but less than a quarter: the cut is still taking effect.
        assert!(close(m.update(&cfg, Some(95.0), 0, Some(0.24)), 0.24));
        // A quarter worse than at the cut: cut again from what was admitted.
        assert!(close(m.update(&cfg, Some(101.0), 0, Some(0.24)), 0.192));
        // Above target but no worse than at the last cut: hold.
        assert!(close(m.update(&cfg, Some(70.0), 0, Some(0.19)), 0.192));
        // At or below target: grow 10 % per tick, up to 1.
        assert!(close(m.update(&cfg, Some(40.0), 0, Some(0.19)), 0.2112));
        for _ in 0..40 {
            m.update(&cfg, None, 0, None);
        }
        assert!(close(m.factor, 1.0), "{}", m.factor);
    }

    #[test]
    fn tracking_cuts_again_when_a_cut_has_not_helped_within_a_second() {
        let cfg = tracking();
        let mut m = ModifierState::new();
        // A cut at a spike, then a lag well above target but below the spike.
        assert!(close(m.update(&cfg, Some(500.0), 0, Some(0.5)), 0.4));
        assert!(close(m.update(&cfg, Some(250.0), 500 * MS, Some(0.4)), 0.4));
        // A second on, still above target: the cut did not do it; cut again.
        assert!(close(
            m.update(&cfg, Some(250.0), 1_000 * MS, Some(0.4)),
            0.32
        ));
        // That cut settles for its own second.
        assert!(close(
            m.update(&cfg, Some(240.0), 1_750 * MS, Some(0.32)),
            0.32
        ));
        assert!(close(
            m.update(&cfg, Some(240.0), 2_000 * MS, Some(0.32)),
            0.256
        ));
    }

    #[test]
    fn a_target_missed_at_the_floor_for_five_seconds_is_unreachable() {
        let cfg = tracking();
        let mut m = ModifierState::new();
        let mut at = 0;
        // Each tick admits all the limit allows (or nothing, when above
        // target: a stalled downstream).
        let mut tick = |m: &mut ModifierState, v: f64| {
            let admitted = if v > 50.0 { 0.0 } else { m.tracked };
            m.update(&cfg, Some(v), at, Some(admitted));
            at += 250 * MS;
        };
        // The first tick cuts to the floor (nothing was admitted).
        tick(&mut m, 100.0);
        assert!(close(m.tracked, 0.05));
        for _ in 0..19 {
            tick(&mut m, 100.0);
            assert!(!m.unreachable, "only {} ms at the floor", at / MS);
        }
        tick(&mut m, 100.0);
        assert!(m.unreachable);
        // One tick under target grows the factor a little off the floor:
        // still the same episode.
        tick(&mut m, 10.0);
        assert!(m.unreachable);
        // Under target long enough to grow clear of the floor: reached.
        for _ in 0..4 {
            tick(&mut m, 10.0);
        }
        assert!(m.tracked > 0.075, "{}", m.tracked);
        assert!(!m.unreachable);
    }

    #[test]
    fn tracking_stays_within_headroom_of_the_admitted_throughput() {
        let cfg = tracking();
        let mut m = ModifierState::new();
        // Under target but nothing admitted: the floor, not the ceiling.
        assert!(close(m.update(&cfg, Some(10.0), 0, Some(0.0)), 0.05));
        // The demand rises: the limit follows at twice what got through,
        // so it doubles each tick while the demand fills it...
        assert!(close(m.update(&cfg, Some(10.0), 0, Some(0.05)), 0.1));
        assert!(close(m.update(&cfg, Some(10.0), 0, Some(0.1)), 0.2));
        // ...and falls back when the demand does.
        assert!(close(m.update(&cfg, Some(10.0), 0, Some(0.03)), 0.06));
        assert!(close(m.update(&cfg, Some(10.0), 0, Some(0.7)), 1.0));
    }

    #[test]
    fn after_a_cut_the_limit_grows_by_increase_until_the_demand_falls_away() {
        let cfg = tracking();
        let mut m = ModifierState::new();
        assert!(close(m.update(&cfg, Some(10.0), 0, Some(0.2)), 0.4));
        // Above target with 0.4 admitted: cut to 0.32.
        assert!(close(m.update(&cfg, Some(80.0), 0, Some(0.4)), 0.32));
        // The limit is what holds admissions back now: feel for the
        // capacity at `increase` (10 %), not at twice the throughput.
        assert!(close(m.update(&cfg, Some(10.0), 0, Some(0.32)), 0.352));
        // The demand drops below half the limit: follow it again.
        assert!(close(m.update(&cfg, Some(10.0), 0, Some(0.1)), 0.2));
        assert!(close(m.update(&cfg, Some(10.0), 0, Some(0.2)), 0.4));
    }

    #[test]
    fn headroom_zero_lets_an_unused_limit_grow_to_the_ceiling() {
        let mut cfg = tracking();
        cfg.track.as_mut().unwrap().headroom = 0.0;
        let mut m = ModifierState::new();
        for _ in 0..5 {
            assert!(close(m.update(&cfg, Some(10.0), 0, Some(0.0)), 1.0));
        }
    }

    #[test]
    fn tracking_never_goes_below_min_factor() {
        let cfg = tracking();
        let mut m = ModifierState::new();
        let mut v = 100.0;
        for _ in 0..50 {
            v *= 1.3;
            m.update(&cfg, Some(v), 0, Some(0.0));
        }
        assert!(close(m.factor, 0.05), "{}", m.factor);
    }

    #[test]
    fn tracking_without_a_rate_cuts_from_its_own_factor() {
        let cfg = tracking();
        let mut m = ModifierState::new();
        assert!(close(m.update(&cfg, Some(80.0), 0, None), 0.8));
        // Not a quarter worse than at the cut: hold; a quarter worse: cut again.
        assert!(close(m.update(&cfg, Some(100.0), 0, None), 0.8));
        assert!(close(m.update(&cfg, Some(100.1), 0, None), 0.64));
    }

    #[test]
    fn damping_deepens_with_value_and_duration_then_clears() {
        let cfg = table();
        let mut m = ModifierState::new();
        assert_eq!(m.update(&cfg, Some(50.0), 0, None), 1.0);
        assert_eq!(m.update(&cfg, Some(85.0), 0, None), 0.8);
        assert_eq!(m.update(&cfg, Some(95.0), 1_000 * MS, None), 0.5);
        assert_eq!(m.update(&cfg, Some(85.0), 5_000 * MS, None), 0.25);
        assert_eq!(m.overloaded_for_ms, 5_000);
        assert_eq!(m.update(&cfg, Some(10.0), 6_000 * MS, None), 1.0);
        assert_eq!(
            m.update(&cfg, Some(85.0), 7_000 * MS, None),
            0.8,
            "overload clock restarted"
        );
        assert_eq!(m.update(&cfg, None, 8_000 * MS, None), 1.0);
    }
}
