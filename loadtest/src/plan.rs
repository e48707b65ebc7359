//! What each profile does: its per-user [`RatePlan`], its goose test plan and
//! the user behaviour it switches on.
//!
//! Goose owns the users (how many, how fast they start, when they stop); the
//! rate plan owns the messages. Every profile starts its users with the goose
//! plan `"N,<ramp>;N,<hold>;0,0s"` and keeps them connected, and the load
//! varies through the message rate, so a spike or a step changes the offered
//! sends per second on the same connections. Sending starts when every user
//! has joined its room (`t0`), and the run stops itself once the rate plan is
//! over (goose's hold is only an upper bound).

use crate::options::{Options, Profile, Request};
use crate::schedule::RatePlan;
use std::time::Duration;

/// The decisions a profile makes before the run.
#[derive(Debug, Clone)]
pub struct ProfilePlan {
    /// Per-user rate over time, from `t0`.
    pub rates: RatePlan,
    /// The goose `--test-plan` the profile uses.
    pub goose_plan: String,
    /// Users register and log in with a password instead of using a token.
    pub password_login: bool,
    /// When every connection drops at once (offset from `t0`).
    pub drop_at: Option<Duration>,
    /// Stress: judge each segment separately and stop at the first failure.
    pub stepwise: bool,
    /// Overload: the measured segments (index into the rate plan's) and
    /// their multiple of the base rate.
    pub multiples: Vec<(usize, f64)>,
}

impl ProfilePlan {
    /// The plan of `opts.profile`.
    pub fn of(opts: &Options) -> Self {
        let rate = opts.rate;
        let mut multiples = Vec::new();
        let (rates, stepwise) = match opts.profile {
            Profile::Peak => (
                RatePlan::from_steps(&[
                    ("baseline", rate, opts.warmup),
                    ("spike", rate * opts.spike_factor, opts.spike),
                    ("recovery", rate, opts.warmup),
                ]),
                false,
            ),
            Profile::Stress => {
                let step = opts.step_rate.unwrap_or(rate);
                let names: Vec<String> = (1..=opts.max_steps.max(1))
                    .map(|i| format!("step {i}"))
                    .collect();
                let steps: Vec<(&str, f64, Duration)> = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.as_str(), rate + step * i as f64, opts.step_time))
                    .collect();
                (RatePlan::from_steps(&steps), true)
            }
            Profile::Overload => {
                // Per multiple a settling segment, then the measured one. A
                // multiple offered again is numbered: "1x", "10x", "1x #2".
                let names: Vec<(String, String)> = opts
                    .multiples
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        let n = opts.multiples[..i].iter().filter(|&x| x == m).count();
                        let name = if n == 0 {
                            format!("{m}x")
                        } else {
                            format!("{m}x #{}", n + 1)
                        };
                        (format!("{name} settle"), name)
                    })
                    .collect();
                let mut steps = Vec::new();
                for ((settle, measured), &m) in names.iter().zip(&opts.multiples) {
                    steps.push((settle.as_str(), rate * m, opts.settle));
                    multiples.push((steps.len(), m));
                    steps.push((measured.as_str(), rate * m, opts.step_time));
                }
                (RatePlan::from_steps(&steps), false)
            }
            Profile::Soak => {
                // Thirds, so the report compares the start with the end.
                let third = opts.effective_duration() / 3;
                (
                    RatePlan::from_steps(&[
                        ("first third", rate, third),
                        ("middle third", rate, third),
                        ("last third", rate, third),
                    ]),
                    false,
                )
            }
            Profile::ReconnectStorm => {
                let total = opts.effective_duration();
                let before = opts.drop_after.min(total);
                (
                    RatePlan::from_steps(&[
                        ("before drop", rate, before),
                        ("after drop", rate, total.saturating_sub(before)),
                    ]),
                    false,
                )
            }
            _ => (RatePlan::constant(rate, opts.effective_duration()), false),
        };
        let goose_plan = goose_plan(opts, &rates);
        Self {
            goose_plan,
            password_login: opts.profile == Profile::LoginStorm || opts.request == Request::Login,
            drop_at: (opts.profile == Profile::ReconnectStorm).then_some(opts.drop_after),
            stepwise,
            multiples,
            rates,
        }
    }
}

/// `"N,<ramp>;N,<hold>;0,0s"`: start N users at the hatch rate, hold them long
/// enough for every join (start timeout), the rate plan and the drain, then stop all.
fn goose_plan(opts: &Options, rates: &RatePlan) -> String {
    let n = opts.users.max(1);
    let hatch = opts.effective_hatch_rate();
    let ramp = if hatch.is_finite() {
        (n as f64 / hatch).ceil() as u64
    } else {
        0
    };
    let hold = opts.start_timeout + rates.end + Duration::from_secs(5);
    format!("{n},{ramp}s;{n},{}s;0,0s", hold.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Options {
        let mut all = vec!["loadtest"];
        all.extend_from_slice(args);
        <Options as clap::Parser>::parse_from(all)
    }

    #[test]
    fn peak_spikes_to_five_times_then_returns() {
        let p = ProfilePlan::of(&opts(&[
            "peak", "--rate", "2", "--warmup", "10s", "--spike", "5s",
        ]));
        let r = &p.rates;
        assert_eq!(r.rate_at(Duration::from_secs(1)), 2.0);
        assert_eq!(r.rate_at(Duration::from_secs(12)), 10.0);
        assert_eq!(r.rate_at(Duration::from_secs(16)), 2.0);
        assert_eq!(r.end, Duration::from_secs(25));
    }

    #[test]
    fn stress_steps_up_linearly() {
        let p = ProfilePlan::of(&opts(&[
            "stress",
            "--rate",
            "1",
            "--step-time",
            "5s",
            "--max-steps",
            "4",
        ]));
        assert!(p.stepwise);
        let rates: Vec<f64> = p.rates.segments.iter().map(|s| s.rate).collect();
        assert_eq!(rates, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(p.rates.end, Duration::from_secs(20));
    }

    #[test]
    fn overload_settles_then_measures_each_multiple_of_the_rate() {
        let p = ProfilePlan::of(&opts(&[
            "overload",
            "--rate",
            "0.5",
            "--multiples",
            "1,4",
            "--settle",
            "2s",
            "--step-time",
            "5s",
        ]));
        assert!(!p.stepwise, "every multiple runs, none stops the run");
        let segs: Vec<(&str, f64)> = p
            .rates
            .segments
            .iter()
            .map(|s| (s.name.as_str(), s.rate))
            .collect();
        assert_eq!(
            segs,
            vec![
                ("1x settle", 0.5),
                ("1x", 0.5),
                ("4x settle", 2.0),
                ("4x", 2.0)
            ]
        );
        assert_eq!(p.multiples, vec![(1, 1.0), (3, 4.0)]);
        assert_eq!(p.rates.end, Duration::from_secs(14));
        let p = ProfilePlan::of(&opts(&["overload", "--multiples", "1,10,1,10"]));
        let names: Vec<&str> = p.rates.segments.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "1x settle",
                "1x",
                "10x settle",
                "10x",
                "1x #2 settle",
                "1x #2",
                "10x #2 settle",
                "10x #2"
            ],
            "a multiple offered again is told apart"
        );
        let p = ProfilePlan::of(&opts(&["overload"]));
        let ms: Vec<f64> = p.multiples.iter().map(|m| m.1).collect();
        assert_eq!(
            ms,
            vec![1.0, 2.0, 5.0, 10.0],
            "the issue's curve by default"
        );
    }

    #[test]
    fn goose_plan_ramps_then_holds_then_stops() {
        let p = ProfilePlan::of(&opts(&[
            "load",
            "--users",
            "50",
            "--hatch-rate",
            "20",
            "--duration",
            "10s",
            "--start-timeout",
            "30s",
        ]));
        assert_eq!(p.goose_plan, "50,3s;50,45s;0,0s");
        let p = ProfilePlan::of(&opts(&["connect-storm", "--users", "10"]));
        assert!(p.goose_plan.starts_with("10,0s;10,"));
        let p = ProfilePlan::of(&opts(&["login-storm"]));
        assert!(p.password_login);
        let p = ProfilePlan::of(&opts(&["reconnect-storm", "--drop-after", "3s"]));
        assert_eq!(p.drop_at, Some(Duration::from_secs(3)));
    }
}
