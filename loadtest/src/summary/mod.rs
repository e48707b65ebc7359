//! [`Summary`]: the figures of one run as `summary.json` holds them, and the
//! verdict (thresholds, gaps) that decides the exit status.

mod verdict;

use crate::collector::{Collected, PhaseAcc, error_rate, recovery_s, step_passes};
use crate::hist::{LatencySummary, lock};
use crate::options::{Profile, Request};
use crate::procstat::Resources;
use crate::seq::SeqCounts;
use crate::state::RunState;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
pub use verdict::Check;

/// One phase (rate-plan segment) of the run.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    /// Segment name (`steady`, `baseline`, `spike`, `step 3`, ...).
    pub name: String,
    /// Start, seconds from `t0`.
    pub start_s: f64,
    /// End, seconds from `t0`.
    pub end_s: f64,
    /// Per-user rate.
    pub rate_per_user: f64,
    /// Sends per second offered (users × rate).
    pub offered_per_s: f64,
    /// Oks per second achieved.
    pub achieved_per_s: f64,
    /// Error replies / answered sends.
    pub error_rate: f64,
    /// Send-to-delivery latency.
    pub delivery: LatencySummary,
    /// Send-to-ok latency.
    pub send_ok: LatencySummary,
    /// Stress only: whether the step met the limits (`null` when not judged).
    pub passed: Option<bool>,
}

/// Overload: one measured rate of the curve.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    /// The rate as a multiple of `--rate`.
    pub multiple: f64,
    /// Its goodput (oks/s) as a share of `base_per_s`.
    pub goodput_share: f64,
    /// The goodput it is compared with: the first multiple's. When the
    /// first multiple is offered again (`--multiples 1,10,1,10,1`), the mean
    /// of its steps just before and just after this one, so that the
    /// machine's drift during the run cancels out; a step of the first
    /// multiple is compared with the mean of them all (its share shows the
    /// drift).
    pub base_per_s: f64,
    /// The measured segment (its settling segment is left out).
    #[serde(flatten)]
    pub phase: PhaseSummary,
}

/// The measured segments of an overload run, each against the first
/// multiple's goodput (see [`CurvePoint::base_per_s`]).
fn curve(multiples: &[(usize, f64)], phases: &[PhaseSummary]) -> Vec<CurvePoint> {
    let points: Vec<(f64, &PhaseSummary)> = multiples
        .iter()
        .filter_map(|&(i, m)| Some((m, phases.get(i)?)))
        .collect();
    let Some(&(first, _)) = points.first() else {
        return Vec::new();
    };
    // The first multiple's steps: (position in the curve, goodput).
    let base: Vec<(usize, f64)> = points
        .iter()
        .enumerate()
        .filter(|(_, (m, _))| *m == first)
        .map(|(i, (_, p))| (i, p.achieved_per_s))
        .collect();
    let all = mean(base.iter().map(|b| b.1));
    points
        .iter()
        .enumerate()
        .map(|(i, &(multiple, p))| {
            let base_per_s = if multiple == first {
                all
            } else {
                let before = base.iter().rev().find(|b| b.0 < i);
                let after = base.iter().find(|b| b.0 > i);
                mean([before, after].into_iter().flatten().map(|b| b.1))
            };
            CurvePoint {
                multiple,
                goodput_share: if base_per_s > 0.0 {
                    p.achieved_per_s / base_per_s
                } else {
                    0.0
                },
                base_per_s,
                phase: p.clone(),
            }
        })
        .collect()
}

/// The mean, 0 for none.
pub(crate) fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (n, sum) = xs.fold((0u32, 0.0), |(n, sum), x| (n + 1, sum + x));
    if n == 0 { 0.0 } else { sum / f64::from(n) }
}

/// Overload signals the server sent.
#[derive(Debug, Clone, Serialize)]
pub struct Overload {
    /// `overloaded` error replies (sends and requests).
    pub rejections: u64,
    /// Their `retry_after_ms` hints.
    pub retry_after_ms: LatencySummary,
    /// Upgrades refused with HTTP 503.
    pub connect_503: u64,
}

/// The figures of one run (`summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Profile run.
    pub profile: Profile,
    /// What the scheduled requests were (`send`, or `login` for the login
    /// path's curve: the figures named after sends then count logins).
    pub request: Request,
    /// Target URL.
    pub host: String,
    /// Unix seconds at the start.
    pub started_unix_s: u64,
    /// The run's folder.
    pub run_dir: String,
    /// Users the run started.
    pub users: usize,
    /// Users that never got in.
    pub failed_users: u64,
    /// Members per room.
    pub room_size: usize,
    /// Rooms.
    pub rooms: usize,
    /// Bytes per body.
    pub body_bytes: usize,
    /// The goose test plan used.
    pub goose_test_plan: String,
    /// Seconds from start of run to `t0` (every user joined).
    pub startup_s: f64,
    /// Seconds of sending (from `t0` to the end of the rate plan or the stop).
    pub sending_s: f64,
    /// Sends per second the plan offered (mean over the sending time).
    pub offered_sends_per_s: f64,
    /// Oks per second achieved (mean over the sending time).
    pub achieved_sends_per_s: f64,
    /// Live deliveries per second (mean over the sending time).
    pub deliveries_per_s: f64,
    /// Sends written.
    pub messages_sent: u64,
    /// Oks received.
    pub messages_acked: u64,
    /// Error replies to sends.
    pub send_errors: u64,
    /// Sends never answered (timeouts).
    pub send_timeouts: u64,
    /// Sends that could not be written.
    pub write_failures: u64,
    /// Sends re-sent with the same cid after a reconnect.
    pub resent: u64,
    /// (send errors + timeouts) / sends.
    pub error_rate: f64,
    /// Deliveries receivers should have had (per receiver: room's acked high − join seq).
    pub deliveries_expected: u64,
    /// Distinct messages received live.
    pub deliveries_received: u64,
    /// Live message frames including duplicates.
    pub message_frames_received: u64,
    /// Messages recovered through history after a reconnect.
    pub recovered_via_history: u64,
    /// Messages acknowledged and never delivered (fail the run).
    pub gaps: u64,
    /// Messages delivered twice.
    pub duplicates: u64,
    /// Messages delivered after a higher seq.
    pub reorders: u64,
    /// Send-to-ok latency.
    pub send_ok: LatencySummary,
    /// Send-to-delivery latency.
    pub delivery: LatencySummary,
    /// Other latencies: connect, register, login, join, history, reconnect,
    /// and `send_refused` (schedule to an error reply to a send).
    pub latencies: BTreeMap<String, LatencySummary>,
    /// Error replies by code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Overload signals.
    pub overload: Overload,
    /// Connections opened, refused, failed, dropped by the server, reconnected.
    pub connections: BTreeMap<String, u64>,
    /// Close codes received.
    pub close_codes: BTreeMap<String, u64>,
    /// Per phase of the rate plan.
    pub phases: Vec<PhaseSummary>,
    /// Stress: the highest step that met the limits.
    pub knee: Option<PhaseSummary>,
    /// Overload: goodput and latency at each multiple of the rate.
    pub curve: Vec<CurvePoint>,
    /// Peak: seconds after the spike until p99 delivery was back near baseline.
    pub recovery_s: Option<f64>,
    /// CPU and memory of the generator and the node.
    pub resources: Resources,
    /// Limits checked.
    pub checks: Vec<Check>,
    /// Goose threshold rules that failed.
    pub goose_thresholds_failed: Vec<String>,
    /// Why the run stopped early.
    pub stopped_early: Option<String>,
    /// Every check passed, no gap, no goose threshold failed.
    pub passed: bool,
    /// Why it did not pass.
    pub failures: Vec<String>,
    /// Files written in the run folder.
    pub files: Vec<String>,
}

/// Inputs of [`Summary::build`] beyond the run state.
pub struct Extra {
    /// The run folder.
    pub run_dir: String,
    /// Unix seconds at start.
    pub started_unix_s: u64,
    /// Goose thresholds that failed.
    pub goose_failed: Vec<String>,
}

fn phase_summary(run: &RunState, p: &PhaseAcc, users: f64) -> PhaseSummary {
    let len = (p.end_s - p.start_s).max(1e-9);
    PhaseSummary {
        name: p.name.clone(),
        start_s: p.start_s,
        end_s: p.end_s,
        rate_per_user: p.rate,
        offered_per_s: p.rate * users,
        achieved_per_s: p.acked as f64 / len,
        error_rate: error_rate(p.errors, p.acked),
        delivery: LatencySummary::of(&p.delivery),
        send_ok: LatencySummary::of(&p.send_ok),
        passed: if run.plan.stepwise {
            p.verdict
                .or_else(|| Some(step_passes(run, p).0).filter(|_| p.sent > 0))
        } else {
            None
        },
    }
}

impl Summary {
    /// The profile's command-line name.
    pub fn profile_name(&self) -> &'static str {
        self.profile.name()
    }

    /// The summary of a finished run.
    pub fn build(run: &RunState, col: &Collected, extra: Extra) -> Self {
        let c = &run.c;
        let seq: SeqCounts = *lock(&run.seq);
        let users = run.expected_users;
        let failed_users = c.failed_users.load(Ordering::Relaxed);
        let in_users = users.saturating_sub(failed_users as usize) as f64;
        let epoch_s = 0.0;
        let t0_s = run.t0().map_or(epoch_s, |t| {
            t.saturating_duration_since(run.epoch).as_secs_f64()
        });
        let last_s = col.points.last().map_or(t0_s, |p| p.t_s);
        let sending_s = (last_s - t0_s).min(run.rates.end.as_secs_f64()).max(1e-9);
        let sent = c.sent.load(Ordering::Relaxed);
        let acked = c.acked.load(Ordering::Relaxed);
        let send_errors = c.send_errors.load(Ordering::Relaxed);
        let timeouts = run.unanswered.load(Ordering::Relaxed);
        let received = c.received.load(Ordering::Relaxed);
        let offered_msgs = run
            .rates
            .messages_until(std::time::Duration::from_secs_f64(sending_s))
            * in_users;

        let mut phases: Vec<PhaseSummary> = col
            .phases
            .iter()
            .filter(|p| p.start_s < sending_s + 1e-6)
            .map(|p| phase_summary(run, p, in_users))
            .collect();
        // A stopped stress run: the phase that was cut off is judged too.
        if let Some(i) = col.failed_phase {
            phases.truncate(i + 1);
        }
        let knee = if run.plan.stepwise {
            phases
                .iter()
                .take_while(|p| p.passed == Some(true))
                .last()
                .cloned()
        } else {
            None
        };
        let recovery = if run.opts.profile == Profile::Peak && col.phases.len() == 3 {
            let baseline = LatencySummary::of(&col.phases[0].delivery).p99_ms;
            recovery_s(&col.points, t0_s, col.phases[1].end_s, baseline)
        } else {
            None
        };

        let others = run.others();
        let latencies = others
            .iter()
            .filter(|(k, _)| **k != "retry_after")
            .map(|(k, h)| ((*k).to_string(), LatencySummary::of(h)))
            .collect();
        let errors_by_code = lock(&run.errors_by_code).clone();
        let overload = Overload {
            rejections: errors_by_code.get("overloaded").copied().unwrap_or(0),
            retry_after_ms: others
                .get("retry_after")
                .map(LatencySummary::of)
                .unwrap_or_default(),
            connect_503: c.connect_rejected.load(Ordering::Relaxed),
        };
        let connections = BTreeMap::from([
            ("opened".to_string(), c.connects.load(Ordering::Relaxed)),
            (
                "refused_503".to_string(),
                c.connect_rejected.load(Ordering::Relaxed),
            ),
            (
                "failed".to_string(),
                c.connect_failed.load(Ordering::Relaxed),
            ),
            (
                "closed_by_server".to_string(),
                c.server_closes.load(Ordering::Relaxed),
            ),
            (
                "reconnects".to_string(),
                c.reconnects.load(Ordering::Relaxed),
            ),
            ("goaway".to_string(), c.goaways.load(Ordering::Relaxed)),
        ]);
        let close_codes = lock(&run.close_codes)
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let err_rate = if sent == 0 {
            0.0
        } else {
            (send_errors + timeouts) as f64 / sent as f64
        };
        let delivery = LatencySummary::of(&col.delivery);
        let send_ok = LatencySummary::of(&col.send_ok);

        let mut s = Self {
            profile: run.opts.profile,
            request: run.opts.request,
            host: run.opts.host.clone(),
            started_unix_s: extra.started_unix_s,
            run_dir: extra.run_dir,
            users,
            failed_users,
            room_size: run.opts.room_size,
            rooms: users.div_ceil(run.opts.room_size.max(1)),
            body_bytes: run.opts.body_bytes,
            goose_test_plan: run.plan.goose_plan.clone(),
            startup_s: t0_s,
            sending_s,
            offered_sends_per_s: offered_msgs / sending_s,
            achieved_sends_per_s: acked as f64 / sending_s,
            deliveries_per_s: received as f64 / sending_s,
            messages_sent: sent,
            messages_acked: acked,
            send_errors,
            send_timeouts: timeouts,
            write_failures: c.write_failures.load(Ordering::Relaxed),
            resent: c.resent.load(Ordering::Relaxed),
            error_rate: err_rate,
            deliveries_expected: seq.expected,
            deliveries_received: seq.delivered,
            message_frames_received: received,
            recovered_via_history: seq.recovered,
            gaps: seq.gaps,
            duplicates: seq.duplicates,
            reorders: seq.reorders,
            send_ok,
            delivery,
            latencies,
            errors_by_code,
            overload,
            connections,
            close_codes,
            curve: curve(&run.plan.multiples, &phases),
            phases,
            knee,
            recovery_s: recovery,
            resources: Resources::of(&col.points, t0_s, t0_s + sending_s),
            checks: Vec::new(),
            goose_thresholds_failed: extra.goose_failed,
            stopped_early: lock(&run.stop_reason).clone(),
            passed: true,
            failures: Vec::new(),
            files: Vec::new(),
        };
        s.judge(
            run.opts.delivery_limit_ms(),
            run.opts.max_p99_send_ms,
            run.opts.error_rate_limit(),
        );
        s.judge_curve(run.plan.multiples.len(), run.opts.min_goodput_share);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Collected;
    use crate::hist::{new_hist, record};
    use crate::options::Options;
    use crate::plan::ProfilePlan;
    use std::sync::Arc;

    fn run_with(profile: Profile, args: &[&str]) -> Arc<RunState> {
        let mut all = vec![
            "loadtest",
            profile.name(),
            "--users",
            "4",
            "--room-size",
            "2",
        ];
        all.extend_from_slice(args);
        let opts = <Options as clap::Parser>::parse_from(all);
        let plan = ProfilePlan::of(&opts);
        Arc::new(RunState::new(opts, plan, "t".into()))
    }

    fn collected() -> Collected {
        let mut delivery = new_hist();
        for v in 1..=100 {
            record(&mut delivery, v * 1000);
        }
        Collected {
            points: Vec::new(),
            delivery,
            send_ok: new_hist(),
            phases: Vec::new(),
            failed_phase: None,
        }
    }

    fn extra() -> Extra {
        Extra {
            run_dir: "x".into(),
            started_unix_s: 0,
            goose_failed: Vec::new(),
        }
    }

    #[test]
    fn rates_and_integrity_come_from_counters() {
        let run = run_with(Profile::Load, &["--rate", "2", "--duration", "10s"]);
        run.c.sent.store(80, Ordering::Relaxed);
        run.c.acked.store(79, Ordering::Relaxed);
        run.c.send_errors.store(1, Ordering::Relaxed);
        run.c.received.store(158, Ordering::Relaxed);
        run.add_seq(SeqCounts {
            delivered: 158,
            expected: 158,
            ..SeqCounts::default()
        });
        let s = Summary::build(&run, &collected(), extra());
        assert_eq!(s.rooms, 2);
        // 4 users x 2 msg/s offered.
        assert!((s.offered_sends_per_s - 8.0).abs() < 1e-9);
        assert!((s.error_rate - 1.0 / 80.0).abs() < 1e-12);
        assert_eq!(s.deliveries_expected, s.deliveries_received);
        assert!((s.delivery.p99_ms - 99.0).abs() < 0.1);
        assert!(s.passed, "{:?}", s.failures);
    }

    #[test]
    fn any_gap_fails_the_run() {
        let run = run_with(Profile::Load, &[]);
        run.c.sent.store(10, Ordering::Relaxed);
        run.add_seq(SeqCounts {
            gaps: 1,
            ..SeqCounts::default()
        });
        let s = Summary::build(&run, &collected(), extra());
        assert!(!s.passed);
        assert!(s.failures[0].contains("gaps"));
    }

    #[test]
    fn limits_fail_the_run_when_exceeded() {
        let run = run_with(
            Profile::Load,
            &["--max-p99-delivery-ms", "50", "--max-error-rate", "0.5"],
        );
        run.c.sent.store(10, Ordering::Relaxed);
        let s = Summary::build(&run, &collected(), extra());
        assert!(!s.passed);
        assert_eq!(s.checks.len(), 2);
        assert!(!s.checks[0].passed, "p99 99 ms > 50 ms");
        assert!(s.checks[1].passed);
    }

    fn phase(name: &str, achieved_per_s: f64) -> PhaseSummary {
        PhaseSummary {
            name: name.into(),
            start_s: 0.0,
            end_s: 1.0,
            rate_per_user: 1.0,
            offered_per_s: 4.0,
            achieved_per_s,
            error_rate: 0.0,
            delivery: LatencySummary::default(),
            send_ok: LatencySummary::default(),
            passed: None,
        }
    }

    #[test]
    fn overload_compares_each_measured_rate_with_the_first() {
        let phases = [
            phase("1x settle", 50.0),
            phase("1x", 100.0),
            phase("4x settle", 10.0),
            phase("4x", 80.0),
        ];
        let c = curve(&[(1, 1.0), (3, 4.0)], &phases);
        assert_eq!(c.len(), 2, "settling segments are left out");
        assert_eq!((c[0].multiple, c[0].goodput_share), (1.0, 1.0));
        assert_eq!((c[1].phase.name.as_str(), c[1].multiple), ("4x", 4.0));
        assert!((c[1].goodput_share - 0.8).abs() < 1e-12);

        let run = run_with(
            Profile::Overload,
            &["--multiples", "1,4", "--min-goodput-share", "0.9"],
        );
        run.c.sent.store(10, Ordering::Relaxed);
        let mut s = Summary::build(&run, &collected(), extra());
        assert!(
            s.failures
                .iter()
                .any(|f| f.contains("0 of 2 rates measured")),
            "a run cut short fails: {:?}",
            s.failures
        );
        s.curve = c;
        s.failures.clear();
        s.judge_curve(2, Some(0.9));
        assert!(!s.passed);
        assert_eq!(s.checks.len(), 1);
        assert_eq!(s.checks[0].rule, "goodput at 4x >= 0.9 x goodput at 1x");
        assert!(!s.checks[0].passed);
        s.failures.clear();
        s.checks.clear();
        s.judge_curve(2, Some(0.75));
        assert!(s.passed, "{:?}", s.failures);
        s.judge_curve(2, None);
        assert!(s.passed, "without a share only completeness is judged");
    }

    #[test]
    fn overload_offered_again_compares_each_step_with_the_first_multiple_beside_it() {
        // The machine slows during the run: 1x carries 100/s, later 80/s.
        let phases = [
            phase("1x settle", 0.0),
            phase("1x", 100.0),
            phase("10x settle", 0.0),
            phase("10x", 80.0),
            phase("1x #2 settle", 0.0),
            phase("1x #2", 80.0),
            phase("10x #2 settle", 0.0),
            phase("10x #2", 72.0),
        ];
        let c = curve(&[(1, 1.0), (3, 10.0), (5, 1.0), (7, 10.0)], &phases);
        let against: Vec<f64> = c.iter().map(|p| p.base_per_s).collect();
        assert_eq!(
            against,
            vec![90.0, 90.0, 90.0, 80.0],
            "1x steps against their mean; 10x against the 1x steps before and after it"
        );
        let shares: Vec<f64> = c.iter().map(|p| p.goodput_share).collect();
        for (got, want) in shares
            .iter()
            .zip([100.0 / 90.0, 80.0 / 90.0, 80.0 / 90.0, 0.9])
        {
            assert!((got - want).abs() < 1e-12, "{shares:?}");
        }

        let run = run_with(
            Profile::Overload,
            &["--multiples", "1,10,1,10", "--min-goodput-share", "0.9"],
        );
        run.c.sent.store(10, Ordering::Relaxed);
        let mut s = Summary::build(&run, &collected(), extra());
        s.curve = c;
        s.failures.clear();
        s.judge_curve(4, Some(0.9));
        assert_eq!(
            s.checks.len(),
            1,
            "one verdict per multiple: {:?}",
            s.checks
        );
        assert_eq!(
            s.checks[0].rule,
            "goodput at 10x >= 0.9 x goodput at 1x (mean of 2 steps)"
        );
        assert!((s.checks[0].value - (80.0 / 90.0 + 0.9) / 2.0).abs() < 1e-12);
        assert!(!s.passed, "a mean of 0.894 is short of 0.9");
        s.failures.clear();
        s.checks.clear();
        s.judge_curve(4, Some(0.89));
        assert!(s.passed, "{:?}", s.failures);
    }

    #[test]
    fn goose_threshold_failures_fail_the_run() {
        let run = run_with(Profile::Load, &[]);
        run.c.sent.store(10, Ordering::Relaxed);
        let mut e = extra();
        e.goose_failed = vec!["p99<1ms".into()];
        let s = Summary::build(&run, &collected(), e);
        assert!(!s.passed);
    }
}
