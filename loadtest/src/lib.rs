//! dialtone's load tests: goose drives simulated chat users over WebSocket
//! (PROTOCOL.md) and reports what a capacity planner needs: send→ok and
//! send→delivery latency without coordinated omission, throughput offered vs
//! achieved, overload signals, and message integrity (gaps, duplicates,
//! reorders). It owns no server code and never talks to a node except through
//! the public wire contract.
//!
//! Entry point: [`run`] with [`Options`] (the CLI struct; [`Options::new`]
//! builds the defaults of a [`Profile`] in code) returns a [`Summary`], also
//! written to `summary.json` in the run's folder.
//!
//! Modules:
//! - [`options`]: the command line; [`plan`]: what each profile does;
//! - [`schedule`]: the open-loop timetable; [`seq`]: the seq checker;
//! - [`protocol`]: frames, tokens, how the schedule rides in `ref`/`cid`;
//! - `conn`: socket, reader task, request/reply; `user`: the goose user;
//! - `state`: what users share; [`collector`]: per-second intervals, stress steps;
//! - [`hist`]: histograms and `.hgrm`; [`summary`], `report`, `plot`: the outputs.
#![forbid(unsafe_code)]

pub mod collector;
mod conn;
pub mod hist;
pub mod options;
pub mod plan;
mod plot;
mod procstat;
pub mod protocol;
mod report;
pub mod schedule;
pub mod seq;
mod state;
pub mod summary;
mod user;

pub use options::{Options, Profile, Request};
pub use summary::Summary;

use goose::config::GooseConfiguration;
use goose::prelude::{GooseAttack, GooseDefault, GooseDefaultType, GooseError};
use plan::ProfilePlan;
use state::RunState;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// Why a run could not be carried out (a run that ran but failed its limits
/// is an `Ok` [`Summary`] with `passed == false`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Options that cannot work together.
    #[error("bad options: {0}")]
    Options(String),
    /// goose refused the configuration or failed.
    #[error("goose: {0}")]
    Goose(#[from] Box<GooseError>),
    /// The run folder or a report could not be written.
    #[error("writing results: {0}")]
    Io(#[from] std::io::Error),
    /// The collector task died.
    #[error("collector: {0}")]
    Collector(String),
}

impl From<GooseError> for Error {
    fn from(e: GooseError) -> Self {
        Self::Goose(Box::new(e))
    }
}

/// Runs one load test against `opts.host` and writes its folder under
/// `opts.out_dir`. Must not run twice at once in one process (goose's
/// stop switch is process-wide).
///
/// # Errors
/// See [`Error`].
pub async fn run(opts: Options) -> Result<Summary, Error> {
    validate(&opts)?;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let dir = run_dir(&opts, started.as_secs())?;
    let prefix = opts
        .prefix
        .clone()
        .unwrap_or_else(|| format!("lt{}", base36(started.as_millis() as u64)));
    let longest = format!("{prefix}u{}", opts.users);
    if !protocol::valid_name(&longest) {
        return Err(Error::Options(format!(
            "--prefix makes invalid names such as `{longest}`"
        )));
    }
    let plan = ProfilePlan::of(&opts);
    let config = goose_config(&opts, &dir)?;
    let goose_plan = plan.goose_plan.clone();
    let users = user_plan(&opts, &config);
    let mut state = RunState::new(opts.clone(), plan, prefix);
    if let UserPlan::Goose(n) | UserPlan::GoosePlan(n) = users {
        state.expected_users = n;
    }
    let run = Arc::new(state);

    let attack =
        GooseAttack::initialize_with_config(config)?.register_scenario(user::scenario(&run)?);
    let mut attack = *attack.set_default(GooseDefault::Host, opts.host.as_str())?;
    match users {
        UserPlan::Profile => {
            attack = *attack.set_default(GooseDefault::TestPlan, goose_plan.as_str())?;
        }
        UserPlan::Goose(_) => {
            // goose's --users/-r/-t given: fill in the rest from our options.
            let hatch = opts.effective_hatch_rate();
            let hatch = if hatch.is_finite() {
                hatch
            } else {
                opts.users as f64
            };
            attack = *attack.set_default(GooseDefault::Users, opts.users)?;
            attack = *attack.set_default(GooseDefault::IncreaseRate, hatch.to_string().as_str())?;
            let hold = opts.start_timeout + run.rates.end + std::time::Duration::from_secs(5);
            attack = *attack.set_default(GooseDefault::RunTime, hold.as_secs() as usize)?;
        }
        UserPlan::GoosePlan(_) => {}
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let collector = tokio::spawn(collector::collect(
        run.clone(),
        dir.join("intervals.hlog"),
        stop_rx,
    ));
    let outcome = attack.execute().await;
    // The collector may have ended on its own error; its result says so.
    let _ = stop_tx.send(true);
    let collected = collector
        .await
        .map_err(|e| Error::Collector(e.to_string()))??;
    let goose_failed = match outcome {
        Ok(_) => Vec::new(),
        Err(GooseError::ThresholdsFailed { failed, .. }) => failed
            .iter()
            .filter(|r| !r.passed)
            .map(|r| format!("{} (observed {})", r.rule, r.observed))
            .collect(),
        Err(e) => return Err(e.into()),
    };
    let mut summary = Summary::build(
        &run,
        &collected,
        summary::Extra {
            run_dir: dir.display().to_string(),
            started_unix_s: started.as_secs(),
            goose_failed,
        },
    );
    report::write_all(&dir, &run, &collected, &mut summary)?;
    Ok(summary)
}

/// goose's own options, as `loadtest <profile> -- --help` prints them.
pub fn goose_help() -> String {
    use clap::Args;
    let mut cmd = GooseConfiguration::augment_args(
        clap::Command::new("loadtest <PROFILE> [OPTIONS] --").disable_help_flag(true),
    )
    .about("goose's own options, accepted after `--`")
    .long_about(None::<&str>);
    cmd.render_long_help().to_string()
}

/// A short human-readable account of a summary, as the binary prints it.
pub fn console_report(s: &Summary) -> String {
    report::console(s)
}

/// Who decides how many users run and when.
#[derive(Debug, Clone, Copy, PartialEq)]
enum UserPlan {
    /// The profile's goose test plan.
    Profile,
    /// goose options after `--` (`--users`, `-r`, `-t`, ...): that many users.
    Goose(usize),
    /// A `--test-plan` after `--`; the number is its largest step.
    GoosePlan(usize),
}

fn user_plan(opts: &Options, config: &GooseConfiguration) -> UserPlan {
    let plan = opts.goose.iter().enumerate().find_map(|(i, a)| {
        if a == "--test-plan" {
            opts.goose.get(i + 1).cloned()
        } else {
            a.strip_prefix("--test-plan=").map(str::to_string)
        }
    });
    if let Some(plan) = plan {
        return UserPlan::GoosePlan(plan_users(&plan).unwrap_or(opts.users));
    }
    if config.users.is_some()
        || config.run_time.is_some()
        || config.increase_rate.is_some()
        || config.increase_time.is_some()
        || config.iterations.is_some()
    {
        return UserPlan::Goose(config.users.unwrap_or(opts.users));
    }
    UserPlan::Profile
}

/// The largest user count of a goose test plan, if it parses.
fn plan_users(plan: &str) -> Option<usize> {
    plan.parse::<goose::test_plan::TestPlan>()
        .ok()
        .and_then(|p| p.steps.iter().map(|s| s.0).max())
}

fn validate(opts: &Options) -> Result<(), Error> {
    let bad = |m: &str| Err(Error::Options(m.to_string()));
    if opts.users == 0 {
        return bad("--users must be at least 1");
    }
    if opts.room_size == 0 {
        return bad("--room-size must be at least 1");
    }
    if !(opts.rate.is_finite() && opts.rate >= 0.0) {
        return bad("--rate must be a number >= 0");
    }
    if opts.profile == Profile::Overload
        && (opts.multiples.is_empty() || !opts.multiples.iter().all(|m| m.is_finite() && *m > 0.0))
    {
        return bad("--multiples must be one or more numbers > 0, e.g. 1,2,5,10");
    }
    if opts
        .min_goodput_share
        .is_some_and(|s| !(s.is_finite() && s >= 0.0))
    {
        return bad("--min-goodput-share must be a number >= 0, e.g. 0.9");
    }
    if opts.profile != Profile::LoginStorm
        && opts.request != Request::Login
        && opts.jwt_secret.is_none()
    {
        return bad("--jwt-secret (or DIALTONE_AUTH__JWT_SECRET) is needed to mint user tokens");
    }
    if !(opts.host.starts_with("ws://") || opts.host.starts_with("wss://")) {
        return bad("--host must be a ws:// or wss:// URL");
    }
    Ok(())
}

/// goose's configuration: the args after `--`, plus our report files unless
/// the user chose their own.
fn goose_config(opts: &Options, dir: &Path) -> Result<GooseConfiguration, Error> {
    let mut config = GooseConfiguration::parse_args_default(&opts.goose)?;
    if config.report_file.is_empty() {
        for f in ["report.html", "report.md", "report.json"] {
            config.report_file.push(path_str(&dir.join(f))?.to_string());
        }
    }
    Ok(config)
}

fn path_str(p: &Path) -> Result<&str, Error> {
    p.to_str()
        .ok_or_else(|| Error::Options(format!("path is not UTF-8: {}", p.display())))
}

/// `out_dir/<run name>`, created empty (a suffix is added if it exists).
fn run_dir(opts: &Options, unix_s: u64) -> Result<PathBuf, Error> {
    let base = opts
        .run_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", opts.profile.name(), utc_stamp(unix_s)));
    let mut dir = opts.out_dir.join(&base);
    let mut n = 2;
    while dir.exists() {
        dir = opts.out_dir.join(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `YYYYMMDD-HHMMSS` (UTC) of unix seconds.
fn utc_stamp(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goose_user_options_take_over_the_user_plan() {
        let parse = |extra: &[&str]| {
            let mut o = Options::new(Profile::Load);
            o.users = 7;
            o.goose = extra.iter().map(|s| s.to_string()).collect();
            let c = GooseConfiguration::parse_args_default(&o.goose).expect("goose args");
            user_plan(&o, &c)
        };
        assert_eq!(parse(&[]), UserPlan::Profile);
        assert_eq!(parse(&["--users", "10"]), UserPlan::Goose(10));
        assert_eq!(parse(&["-t", "5s"]), UserPlan::Goose(7));
        assert_eq!(
            parse(&["--test-plan", "5,1s;20,2s;0,0s"]),
            UserPlan::GoosePlan(20)
        );
    }

    #[test]
    fn stamps_are_utc_calendar_dates() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(1_700_000_000), "20231114-221320");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
    }

    #[test]
    fn base36_is_short_and_name_safe() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert!(protocol::valid_name(&base36(u64::MAX)));
    }

    #[test]
    fn overload_refuses_multiples_that_are_no_rate() {
        let with = |multiples: Vec<f64>| {
            let mut o = Options::new(Profile::Overload);
            o.jwt_secret = Some("s".into());
            o.multiples = multiples;
            validate(&o)
        };
        assert!(with(vec![1.0, 2.0, 5.0, 10.0]).is_ok());
        for bad in [vec![], vec![1.0, 0.0], vec![-2.0], vec![f64::NAN]] {
            assert!(
                matches!(with(bad.clone()), Err(Error::Options(_))),
                "{bad:?}"
            );
        }
        let mut o = Options::new(Profile::Overload);
        o.jwt_secret = Some("s".into());
        o.min_goodput_share = Some(-1.0);
        assert!(matches!(validate(&o), Err(Error::Options(_))));
    }

    #[test]
    fn options_without_secret_are_refused_except_login_storm() {
        let mut o = Options::new(Profile::Load);
        o.jwt_secret = None;
        assert!(matches!(validate(&o), Err(Error::Options(_))));
        let mut o = Options::new(Profile::LoginStorm);
        o.jwt_secret = None;
        assert!(validate(&o).is_ok());
    }
}
