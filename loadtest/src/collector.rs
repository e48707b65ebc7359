//! The once-a-second collector: merges the users' histogram shards into one
//! interval, writes it to the HdrHistogram interval log, keeps the time series
//! for the plots, accumulates per-phase histograms, judges stress steps as they
//! end, and stops goose when the rate plan is over.

use crate::hist::{LatencySummary, new_hist};
use crate::procstat;
use crate::state::RunState;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One second of the run, as plotted and written to `timeseries.csv`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IntervalPoint {
    /// End of the interval, seconds since the epoch.
    pub t_s: f64,
    /// Sends per second the rate plan offered (users sending × per-user rate).
    pub offered_per_s: f64,
    /// Sends written per second.
    pub sent_per_s: f64,
    /// Oks per second.
    pub acked_per_s: f64,
    /// Error replies to sends per second.
    pub errors_per_s: f64,
    /// Live deliveries per second.
    pub delivered_per_s: f64,
    /// Send-to-delivery latency of the interval.
    pub delivery: LatencySummary,
    /// Send-to-ok latency of the interval.
    pub send_ok: LatencySummary,
    /// Cores the load generator used.
    pub loadgen_cpu: Option<f64>,
    /// Cores the node used (`--node-pid`).
    pub node_cpu: Option<f64>,
    /// Node resident memory, MiB (`--node-pid`).
    pub node_rss_mib: Option<f64>,
}

/// Totals of one rate-plan segment (a phase) of the run.
#[derive(Debug, Clone)]
pub struct PhaseAcc {
    /// Segment name.
    pub name: String,
    /// Per-user rate.
    pub rate: f64,
    /// Start and end, seconds from `t0`.
    pub start_s: f64,
    /// End, seconds from `t0`.
    pub end_s: f64,
    /// Deliveries recorded while the phase ran.
    pub delivery: Histogram<u64>,
    /// Acks recorded while the phase ran.
    pub send_ok: Histogram<u64>,
    /// Sends written.
    pub sent: u64,
    /// Oks.
    pub acked: u64,
    /// Error replies.
    pub errors: u64,
    /// Judged (stress) and passed.
    pub verdict: Option<bool>,
}

/// What the collector hands back when it stops.
#[derive(Debug)]
pub struct Collected {
    /// Every second.
    pub points: Vec<IntervalPoint>,
    /// The whole run's deliveries.
    pub delivery: Histogram<u64>,
    /// The whole run's acks.
    pub send_ok: Histogram<u64>,
    /// Per phase.
    pub phases: Vec<PhaseAcc>,
    /// Stress: the index of the first failing phase.
    pub failed_phase: Option<usize>,
}

#[derive(Default, Clone, Copy)]
struct Snapshot {
    sent: u64,
    acked: u64,
    errors: u64,
    received: u64,
}

impl Snapshot {
    fn take(run: &RunState) -> Self {
        Self {
            sent: run.c.sent.load(Ordering::Relaxed),
            acked: run.c.acked.load(Ordering::Relaxed),
            errors: run.c.send_errors.load(Ordering::Relaxed),
            received: run.c.received.load(Ordering::Relaxed),
        }
    }
}

/// Runs until `stop` turns true, then does a last interval and returns.
///
/// # Errors
/// When the interval log cannot be written.
pub async fn collect(
    run: Arc<RunState>,
    log_path: PathBuf,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<Collected> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(&log_path)?);
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("dialtone loadtest: send-to-delivery (tag delivery) and send-to-ok (tag send_ok), values in microseconds, max column in milliseconds")
        .with_start_time(run.epoch_wall)
        .with_base_time(run.epoch_wall)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut file, &mut serializer)?;
    let mut out = Collected {
        points: Vec::new(),
        delivery: new_hist(),
        send_ok: new_hist(),
        phases: run
            .rates
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| PhaseAcc {
                name: s.name.clone(),
                rate: s.rate,
                start_s: s.start.as_secs_f64(),
                end_s: run.rates.segment_end(i).as_secs_f64(),
                delivery: new_hist(),
                send_ok: new_hist(),
                sent: 0,
                acked: 0,
                errors: 0,
                verdict: None,
            })
            .collect(),
        failed_phase: None,
    };
    let mut ticker =
        tokio::time::interval_at(run.epoch + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Snapshot::default();
    let mut last_at = run.epoch;
    let node_pid = run.opts.node_pid.map(|p| p.to_string());
    let mut last_self = procstat::read("self");
    let mut last_node = node_pid.as_deref().and_then(procstat::read);
    let mut plan_over = false;
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.changed() => true,
        };
        let now = Instant::now();
        let (mut point, d, a, snap) = interval(&run, last, last_at, now);
        let secs = now
            .saturating_duration_since(last_at)
            .as_secs_f64()
            .max(1e-3);
        let me = procstat::read("self");
        point.loadgen_cpu = cores(last_self, me, secs);
        last_self = me;
        if let Some(pid) = node_pid.as_deref() {
            let node = procstat::read(pid);
            point.node_cpu = cores(last_node, node, secs);
            point.node_rss_mib = node.map(|n| n.rss_mib);
            last_node = node;
        }
        let start = last_at.saturating_duration_since(run.epoch);
        let len = now.saturating_duration_since(last_at);
        for (h, tag) in [(&d, "delivery"), (&a, "send_ok")] {
            log.write_histogram(h, start, len, Tag::new(tag))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        // Deltas within the phase that holds the interval's middle.
        if let Some(t0) = run.t0() {
            let mid = (last_at + len / 2)
                .saturating_duration_since(t0)
                .as_secs_f64();
            if last_at + len / 2 >= t0
                && let Some(p) = out
                    .phases
                    .iter_mut()
                    .find(|p| p.start_s <= mid && mid < p.end_s)
            {
                add(&mut p.delivery, &d);
                add(&mut p.send_ok, &a);
                p.sent += snap.sent - last.sent;
                p.acked += snap.acked - last.acked;
                p.errors += snap.errors - last.errors;
            }
            if run.plan.stepwise {
                judge_steps(&run, &mut out, now.saturating_duration_since(t0));
            }
            if !plan_over && now >= t0 + run.rates.end + Duration::from_secs(1) {
                plan_over = true;
                goose::trigger_killswitch("rate plan complete");
            }
        } else if now.saturating_duration_since(run.epoch) > run.opts.start_timeout {
            // Not everyone got in: start with those who did.
            run.start_now();
        }
        add(&mut out.delivery, &d);
        add(&mut out.send_ok, &a);
        out.points.push(point);
        last = snap;
        last_at = now;
        if stopping {
            break;
        }
    }
    drop(log);
    file.flush()?;
    Ok(out)
}

/// Cores used between two readings `secs` apart.
fn cores(
    before: Option<procstat::Reading>,
    after: Option<procstat::Reading>,
    secs: f64,
) -> Option<f64> {
    Some((after?.cpu_s - before?.cpu_s).max(0.0) / secs)
}

fn add(into: &mut Histogram<u64>, h: &Histogram<u64>) {
    if into.add(h).is_err() {
        for v in h.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

fn interval(
    run: &RunState,
    last: Snapshot,
    last_at: Instant,
    now: Instant,
) -> (IntervalPoint, Histogram<u64>, Histogram<u64>, Snapshot) {
    let mut d = new_hist();
    let mut a = new_hist();
    run.delivery.drain_into(&mut d);
    run.send_ok.drain_into(&mut a);
    let snap = Snapshot::take(run);
    let secs = now
        .saturating_duration_since(last_at)
        .as_secs_f64()
        .max(1e-3);
    let per = |x: u64, y: u64| (x.saturating_sub(y)) as f64 / secs;
    let senders = run.senders_active.load(Ordering::Relaxed) as f64;
    let offered = run.t0().map_or(0.0, |t0| {
        senders * run.rates.rate_at(now.saturating_duration_since(t0))
    });
    let point = IntervalPoint {
        t_s: now.saturating_duration_since(run.epoch).as_secs_f64(),
        offered_per_s: offered,
        sent_per_s: per(snap.sent, last.sent),
        acked_per_s: per(snap.acked, last.acked),
        errors_per_s: per(snap.errors, last.errors),
        delivered_per_s: per(snap.received, last.received),
        delivery: LatencySummary::of(&d),
        send_ok: LatencySummary::of(&a),
        ..IntervalPoint::default()
    };
    (point, d, a, snap)
}

/// Stress: a step is judged one second after it ends; the first failure
/// stops the run (the knee is the step before it).
fn judge_steps(run: &RunState, out: &mut Collected, since_t0: Duration) {
    if out.failed_phase.is_some() {
        return;
    }
    let now_s = since_t0.as_secs_f64();
    for i in 0..out.phases.len() {
        let p = &out.phases[i];
        if p.verdict.is_some() || now_s < p.end_s + 1.0 {
            continue;
        }
        let (ok, why) = step_passes(run, p);
        out.phases[i].verdict = Some(ok);
        if !ok {
            out.failed_phase = Some(i);
            run.stop(&format!("stress: {} failed ({why})", out.phases[i].name));
            return;
        }
    }
}

/// Whether phase `p` met the delivery and error limits, and if not why.
pub fn step_passes(run: &RunState, p: &PhaseAcc) -> (bool, String) {
    let p99 = LatencySummary::of(&p.delivery).p99_ms;
    if p.sent > 0 && p.delivery.is_empty() {
        return (false, "no deliveries".into());
    }
    if let Some(limit) = run.opts.delivery_limit_ms()
        && p99 > limit
    {
        return (false, format!("p99 delivery {p99:.1} ms > {limit} ms"));
    }
    if let Some(limit) = run.opts.error_rate_limit() {
        let rate = error_rate(p.errors, p.acked);
        if rate > limit {
            return (
                false,
                format!("error rate {:.2}% > {:.2}%", rate * 100.0, limit * 100.0),
            );
        }
    }
    (true, String::new())
}

/// Errors over answered sends (0 when nothing was answered).
pub fn error_rate(errors: u64, acked: u64) -> f64 {
    let total = errors + acked;
    if total == 0 {
        0.0
    } else {
        errors as f64 / total as f64
    }
}

/// Seconds after `spike_end_s` (from `t0`) until the per-second p99 delivery
/// is back within twice the baseline p99 (or baseline + 5 ms): the peak
/// profile's "does latency recover?". `None` if it never is.
pub fn recovery_s(
    points: &[IntervalPoint],
    t0_s: f64,
    spike_end_s: f64,
    baseline_p99_ms: f64,
) -> Option<f64> {
    let limit = (baseline_p99_ms * 2.0).max(baseline_p99_ms + 5.0);
    points
        .iter()
        .filter(|p| p.t_s - t0_s > spike_end_s && p.delivery.count > 0)
        .find(|p| p.delivery.p99_ms <= limit)
        .map(|p| (p.t_s - t0_s - spike_end_s).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64, p99: f64) -> IntervalPoint {
        IntervalPoint {
            t_s: t,
            delivery: LatencySummary {
                count: 10,
                p99_ms: p99,
                ..LatencySummary::default()
            },
            ..IntervalPoint::default()
        }
    }

    #[test]
    fn error_rate_counts_errors_over_answers() {
        assert_eq!(error_rate(0, 0), 0.0);
        assert!((error_rate(1, 99) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn recovery_is_the_first_second_back_near_baseline() {
        // t0 at 2 s; spike ends at 10 s from t0; baseline p99 4 ms (limit 9 ms).
        let pts: Vec<_> = [(11.0, 50.0), (12.0, 30.0), (13.0, 8.0), (14.0, 3.0)]
            .iter()
            .map(|(t, p)| point(*t, *p))
            .collect();
        let r = recovery_s(&pts, 2.0, 10.0, 4.0);
        assert_eq!(r, Some(1.0));
        assert_eq!(recovery_s(&pts[..2], 2.0, 10.0, 4.0), None);
    }
}
