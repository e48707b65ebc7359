//! The open-loop timetable every simulated user sends on.
//!
//! A [`RatePlan`] says, for every moment after the run's start `t0`, how many
//! messages per second one user offers: piecewise constant, fixed before the
//! run begins. A user's [`Schedule`] turns it into send instants: send `k` is due
//! when the integral of the rate since `t0` reaches `k + phase`, where `phase`
//! in `[0, 1)` spreads users evenly so they do not all fire together.
//!
//! Nothing the server does moves the timetable: a send that goes out late is
//! still measured from its scheduled instant, so a slow server shows up as
//! latency instead of as fewer sends (no coordinated omission).

use std::time::Duration;
use tokio::time::Instant;

/// One piece of a [`RatePlan`]: from `start` (offset from `t0`) the rate is
/// `rate` messages per second per user, until the next segment or the plan's end.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Segment {
    /// A label for reports, such as `baseline`, `spike` or `step 3`.
    pub name: String,
    /// Offset from `t0` where this segment starts.
    pub start: Duration,
    /// Messages per second offered by each user during this segment.
    pub rate: f64,
}

/// A piecewise-constant per-user send rate, fixed before the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RatePlan {
    /// Segments in ascending `start`; the first starts at zero.
    pub segments: Vec<Segment>,
    /// Offset from `t0` after which nothing is sent.
    pub end: Duration,
}

impl RatePlan {
    /// A constant `rate` for `length`.
    pub fn constant(rate: f64, length: Duration) -> Self {
        Self::from_steps(&[("steady", rate, length)])
    }

    /// Consecutive `(name, rate, length)` segments.
    pub fn from_steps(steps: &[(&str, f64, Duration)]) -> Self {
        let mut start = Duration::ZERO;
        let mut segments = Vec::with_capacity(steps.len());
        for (name, rate, length) in steps {
            segments.push(Segment {
                name: (*name).to_string(),
                start,
                rate: rate.max(0.0),
            });
            start += *length;
        }
        Self {
            segments,
            end: start,
        }
    }

    /// The end offset of segment `i`.
    pub fn segment_end(&self, i: usize) -> Duration {
        self.segments.get(i + 1).map_or(self.end, |s| s.start)
    }

    /// The per-user rate in force at offset `at`, 0 after the end.
    pub fn rate_at(&self, at: Duration) -> f64 {
        if at >= self.end {
            return 0.0;
        }
        self.segments
            .iter()
            .rev()
            .find(|s| s.start <= at)
            .map_or(0.0, |s| s.rate)
    }

    /// Messages one user is scheduled to send over the whole plan.
    pub fn messages_per_user(&self) -> f64 {
        self.messages_until(self.end)
    }

    /// Messages one user is scheduled to send from `t0` to offset `until`.
    pub fn messages_until(&self, until: Duration) -> f64 {
        (0..self.segments.len())
            .map(|i| {
                let end = self.segment_end(i).min(until);
                let len = end.saturating_sub(self.segments[i].start);
                self.segments[i].rate * len.as_secs_f64()
            })
            .sum()
    }

    /// The offset at which the cumulative count of sends reaches `n`, or `None`
    /// when the plan ends first.
    pub fn offset_of(&self, n: f64) -> Option<Duration> {
        let mut before = 0.0;
        for (i, seg) in self.segments.iter().enumerate() {
            let len = self.segment_end(i).saturating_sub(seg.start).as_secs_f64();
            let here = seg.rate * len;
            if seg.rate > 0.0 && before + here > n {
                let into = (n - before) / seg.rate;
                return Some(seg.start + secs(into.max(0.0)));
            }
            before += here;
        }
        None
    }
}

/// One user's timetable: the instants of its sends, computed from a [`RatePlan`],
/// its `phase` and the run's start `t0`.
#[derive(Debug, Clone)]
pub struct Schedule {
    plan: std::sync::Arc<RatePlan>,
    t0: Instant,
    phase: f64,
    next: u64,
}

impl Schedule {
    /// A timetable starting at `t0`; `phase` is taken modulo 1.
    pub fn new(plan: std::sync::Arc<RatePlan>, t0: Instant, phase: f64) -> Self {
        Self {
            plan,
            t0,
            phase: phase.rem_euclid(1.0),
            next: 0,
        }
    }

    /// When the next send is due, `None` once the plan is over.
    pub fn next_due(&self) -> Option<Instant> {
        self.plan
            .offset_of(self.next as f64 + self.phase)
            .map(|off| self.t0 + off)
    }

    /// The next send if it is due at or before `now`, advancing past it.
    /// Returns the send's index and its scheduled instant.
    pub fn pop_due(&mut self, now: Instant) -> Option<(u64, Instant)> {
        let due = self.next_due()?;
        if due > now {
            return None;
        }
        let k = self.next;
        self.next += 1;
        Some((k, due))
    }

    /// Sends popped so far.
    pub fn popped(&self) -> u64 {
        self.next
    }
}

/// Seconds as a `Duration`, rounded to the nanosecond so timetables are exact.
fn secs(s: f64) -> Duration {
    Duration::from_nanos((s * 1e9).round() as u64)
}

/// A phase in `[0, 1)` for user `index`, spread evenly (golden-ratio sequence)
/// and shifted by `seed`, so any number of users is well spread.
pub fn phase_for(index: usize, seed: u64) -> f64 {
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    let shift = (seed % 1_000_003) as f64 / 1_000_003.0;
    (index as f64 * GOLDEN + shift).rem_euclid(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn constant_plan_spaces_sends_by_the_interval() {
        let plan = RatePlan::constant(4.0, Duration::from_secs(2));
        assert_eq!(plan.offset_of(0.0), Some(Duration::ZERO));
        assert_eq!(plan.offset_of(1.0), Some(Duration::from_millis(250)));
        assert_eq!(plan.offset_of(7.5), Some(Duration::from_millis(1875)));
        assert_eq!(plan.offset_of(8.0), None);
        assert!((plan.messages_per_user() - 8.0).abs() < 1e-9);
    }

    #[test]
    fn stepped_plan_integrates_across_segments() {
        let plan = RatePlan::from_steps(&[
            ("base", 1.0, Duration::from_secs(2)),
            ("spike", 5.0, Duration::from_secs(1)),
            ("idle", 0.0, Duration::from_secs(1)),
            ("back", 1.0, Duration::from_secs(2)),
        ]);
        // 2 sends in base, 5 in the spike, none idle, 2 after.
        assert!((plan.messages_per_user() - 9.0).abs() < 1e-9);
        assert!((plan.messages_until(Duration::from_millis(2500)) - 4.5).abs() < 1e-9);
        assert_eq!(plan.offset_of(2.0), Some(Duration::from_secs(2)));
        assert_eq!(plan.offset_of(3.0), Some(Duration::from_millis(2200)));
        // The 8th send skips the idle second.
        assert_eq!(plan.offset_of(7.0), Some(Duration::from_secs(4)));
        assert_eq!(plan.rate_at(Duration::from_millis(2500)), 5.0);
        assert_eq!(plan.rate_at(Duration::from_millis(3500)), 0.0);
        assert_eq!(plan.rate_at(Duration::from_secs(6)), 0.0);
    }

    #[test]
    fn phases_stay_in_unit_interval_and_differ() {
        let a = phase_for(0, 7);
        let b = phase_for(1, 7);
        assert!((0.0..1.0).contains(&a) && (0.0..1.0).contains(&b));
        assert!((a - b).abs() > 0.1);
    }

    /// The heart of open-loop load: a sender that is slowed down (each send
    /// takes three intervals) still sends exactly the timetable, and its
    /// latencies are counted from the scheduled instants, so they grow instead
    /// of vanishing.
    #[tokio::test(start_paused = true)]
    async fn slow_sends_do_not_move_the_timetable() {
        let plan = Arc::new(RatePlan::constant(10.0, Duration::from_secs(1)));
        let t0 = Instant::now();
        let mut schedule = Schedule::new(plan, t0, 0.5);
        let mut sent = Vec::new();
        while let Some(due) = schedule.next_due() {
            tokio::time::sleep_until(due).await;
            while let Some((k, scheduled)) = schedule.pop_due(Instant::now()) {
                // A send that blocks for 300 ms, as on a saturated socket.
                tokio::time::sleep(Duration::from_millis(300)).await;
                sent.push((k, scheduled - t0, Instant::now() - scheduled));
            }
        }
        assert_eq!(sent.len(), 10, "every scheduled send goes out");
        for (k, offset, _) in &sent {
            // Scheduled at 50 ms, 150 ms, ... regardless of the slow sends.
            assert_eq!(*offset, Duration::from_millis(50 + 100 * *k));
        }
        // Latency from the schedule grows by 200 ms per send (300 ms work per
        // 100 ms interval): what a closed loop would have hidden.
        assert_eq!(sent[0].2, Duration::from_millis(300));
        assert_eq!(sent[1].2, Duration::from_millis(500));
        assert_eq!(sent[9].2, Duration::from_millis(2100));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_sender_wakes_exactly_on_schedule() {
        let plan = Arc::new(RatePlan::constant(2.0, Duration::from_secs(2)));
        let t0 = Instant::now();
        let mut schedule = Schedule::new(plan, t0, 0.0);
        let mut lateness = Vec::new();
        while let Some(due) = schedule.next_due() {
            tokio::time::sleep_until(due).await;
            let (_, scheduled) = schedule.pop_due(Instant::now()).expect("due");
            lateness.push(Instant::now() - scheduled);
        }
        assert_eq!(lateness, vec![Duration::ZERO; 4]);
        assert_eq!(schedule.popped(), 4);
    }
}
