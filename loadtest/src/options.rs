//! Command-line options ([`Options`]), also built in code by tests and by the
//! root project's CI test through [`Options::new`].

use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Which question the run answers; see `loadtest/README.md` for each profile's
/// goose test plan and rate plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Steady users and message rate: what latency at this load?
    Load,
    /// Rate spikes to --spike-factor x for --spike, then back: does latency recover?
    Peak,
    /// Rate steps up every --step-time until p99 delivery or error rate breaks: where is the knee?
    Stress,
    /// Long steady run (default 30 min): do latency and errors drift?
    Soak,
    /// Every user connects at once: how fast are N connections admitted, and how are excess ones refused?
    ConnectStorm,
    /// Every user registers and logs in with a password at once (argon2): does the login queue shed cleanly?
    LoginStorm,
    /// After --drop-after every connection drops at once, reconnects and catches up with history: is anything lost?
    ReconnectStorm,
    /// The rate at each of --multiples x --rate (the node's capacity per user), each held --settle and then measured for --step-time: does goodput hold past capacity?
    Overload,
}

impl Profile {
    /// The profile's name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Peak => "peak",
            Self::Stress => "stress",
            Self::Soak => "soak",
            Self::ConnectStorm => "connect-storm",
            Self::LoginStorm => "login-storm",
            Self::ReconnectStorm => "reconnect-storm",
            Self::Overload => "overload",
        }
    }
}

/// What each scheduled request of a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Request {
    /// A chat message to the user's room.
    Send,
    /// A password `login` for the user's own account on its open connection
    /// (a token refresh: one argon2 verify behind the `login` queue).
    Login,
}

impl Request {
    /// The request's name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Login => "login",
        }
    }

    /// Its replies' name in goose's reports: scheduled logins apart from
    /// the one each user makes to get in (`WS login`).
    pub fn goose_name(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Login => "scheduled login",
        }
    }
}

/// Options of one load-test run (the command line; [`Options::new`] in code).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Drive simulated dialtone chat users over WebSocket with goose and report latency, throughput and message integrity.",
    long_about = "Drive simulated dialtone chat users over WebSocket with goose and report latency, throughput and message integrity.\n\n\
        Everything after `--` goes to goose unchanged (`loadtest load -- --help` lists goose's own options), \
        e.g. `-- --threshold \"p99<50ms for WS send\" --co-mitigation average --report-file extra.pdf`. \
        A goose `--test-plan`, `--users` or `--run-time` given there replaces the profile's user plan.",
    after_help = "Profiles are described in loadtest/README.md. Exit status: 0 when every threshold passed and no message was lost, 1 otherwise, 2 on bad options."
)]
pub struct Options {
    /// The profile to run.
    #[arg(value_enum)]
    pub profile: Profile,

    /// WebSocket URL of the node's /ws endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub host: String,

    /// HS256 secret to mint user tokens with (the node's auth.jwt_secret).
    /// Required by every profile except login-storm.
    #[arg(long, env = "DIALTONE_AUTH__JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Simulated users: one WebSocket each.
    #[arg(long, default_value_t = 100)]
    pub users: usize,

    /// Members per room: users are partitioned into rooms of this many, in order.
    #[arg(long, default_value_t = 50)]
    pub room_size: usize,

    /// Messages per second each user sends (the baseline rate of every profile).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,

    /// What each scheduled request is: a chat `send`, or a password `login`
    /// (users then register with --password first, as in login-storm), to
    /// run the overload curve of the login path. The figures named after
    /// sends (sent, acked, send->ok, goodput) then count logins.
    #[arg(long, value_enum, default_value_t = Request::Send)]
    pub request: Request,

    /// Bytes of each message body.
    #[arg(long, default_value_t = 100)]
    pub body_bytes: usize,

    /// Users started per second; default: all at once for the storms, 100/s otherwise.
    #[arg(long)]
    pub hatch_rate: Option<f64>,

    /// How long senders send once every user has joined (load, soak, storms);
    /// default 60s, 30m for soak, 30s for storms. Peak and stress derive theirs.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// peak: time at the baseline rate before the spike, and again after it.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub warmup: Duration,

    /// peak: how long the spike lasts.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub spike: Duration,

    /// peak: the spike's rate as a multiple of --rate.
    #[arg(long, default_value_t = 5.0)]
    pub spike_factor: f64,

    /// stress and overload: how long each step lasts (overload: is measured).
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub step_time: Duration,

    /// stress: per-user rate added at each step (default: --rate, so steps are 1x, 2x, 3x, ...).
    #[arg(long)]
    pub step_rate: Option<f64>,

    /// stress: most steps to try.
    #[arg(long, default_value_t = 10)]
    pub max_steps: usize,

    /// overload: the rates to offer, as multiples of --rate (set --rate to
    /// the node's capacity per user, e.g. the knee `stress` found). Offer
    /// the first again between the others (1,10,1,10,1) and each step is
    /// compared with the first multiple's steps beside it: the machine's
    /// drift during the run cancels out.
    #[arg(long, value_delimiter = ',', default_value = "1,2,5,10")]
    pub multiples: Vec<f64>,

    /// overload: time at each rate before it is measured (--step-time), so
    /// that backlogs and feedback settle and each step reports a steady state.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub settle: Duration,

    /// overload: fail the run when the goodput (oks/s) at a multiple falls
    /// below this share of the first multiple's (0.9 = 90 %).
    #[arg(long)]
    pub min_goodput_share: Option<f64>,

    /// reconnect-storm: when (after every user joined) all connections drop at once.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub drop_after: Duration,

    /// Fail the run (stress: fail the step) when p99 send-to-delivery exceeds this many ms.
    /// Default 100 for stress, unset otherwise.
    #[arg(long)]
    pub max_p99_delivery_ms: Option<f64>,

    /// Fail the run when p99 send-to-ok exceeds this many ms.
    #[arg(long)]
    pub max_p99_send_ms: Option<f64>,

    /// Fail the run (stress: the step) when the share of sends that got an
    /// error or no ok exceeds this (0.01 = 1%). Default 0.01 for stress.
    #[arg(long)]
    pub max_error_rate: Option<f64>,

    /// Folder that receives one sub-folder per run.
    #[arg(long, default_value = "loadtest-results")]
    pub out_dir: PathBuf,

    /// Name of this run's folder (default: `<profile>-<UTC date-time>`).
    #[arg(long)]
    pub run_name: Option<String>,

    /// Prefix of user and room names (default: lt + a per-run id, so runs never share rooms).
    #[arg(long)]
    pub prefix: Option<String>,

    /// Password used by login-storm to register and log in.
    #[arg(long, default_value = "loadtest-password-1")]
    pub password: String,

    /// Seed of the users' send phases.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Longest wait for the join of every user before sending starts anyway.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub start_timeout: Duration,

    /// At the end, longest wait for outstanding oks and for deliveries to arrive.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,

    /// Longest wait for the reply to a join, history, login or register.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub request_timeout: Duration,

    /// Clients that honour `retry_after_ms` on sends: after a refused send a
    /// user holds its sends for the advised time, then sends one as a probe
    /// and, once it is answered, the ones that fell due meanwhile (their
    /// latency still counts from their schedule). Without it the schedule is
    /// open loop and ignores refusals.
    #[arg(long)]
    pub honor_retry_after: bool,

    /// Attempts per connect/login/register/join before the user gives up
    /// (after 503 or `overloaded`, waiting the advised retry time).
    #[arg(long, default_value_t = 50)]
    pub max_retries: u32,

    /// PID of the node when it runs on this machine: its CPU and resident
    /// memory are sampled every second beside the generator's own (Linux).
    #[arg(long)]
    pub node_pid: Option<u32>,

    /// Options passed to goose unchanged (after `--`).
    #[arg(last = true, value_name = "GOOSE_ARGS")]
    pub goose: Vec<String>,
}

impl Options {
    /// The defaults of `profile`, as `loadtest <profile>` would have them
    /// (the JWT secret still comes from `DIALTONE_AUTH__JWT_SECRET` if set).
    pub fn new(profile: Profile) -> Self {
        Self::parse_from(["loadtest", profile.name()])
    }

    /// The sending time of load, soak and the storms.
    pub fn effective_duration(&self) -> Duration {
        self.duration.unwrap_or(match self.profile {
            Profile::Soak => Duration::from_secs(30 * 60),
            Profile::ConnectStorm | Profile::LoginStorm | Profile::ReconnectStorm => {
                Duration::from_secs(30)
            }
            _ => Duration::from_secs(60),
        })
    }

    /// Users started per second (`f64::INFINITY` = all at once).
    pub fn effective_hatch_rate(&self) -> f64 {
        match self.hatch_rate {
            Some(r) if r > 0.0 => r,
            Some(_) => f64::INFINITY,
            None => match self.profile {
                Profile::ConnectStorm | Profile::LoginStorm | Profile::ReconnectStorm => {
                    f64::INFINITY
                }
                _ => 100.0,
            },
        }
    }

    /// The p99 delivery limit in force.
    pub fn delivery_limit_ms(&self) -> Option<f64> {
        self.max_p99_delivery_ms
            .or((self.profile == Profile::Stress).then_some(100.0))
    }

    /// The error-rate limit in force.
    pub fn error_rate_limit(&self) -> Option<f64> {
        self.max_error_rate
            .or((self.profile == Profile::Stress).then_some(0.01))
    }
}

/// Parses `1h2m3s`, `90s`, `500ms`, `2m` or a bare number of seconds.
///
/// # Errors
/// On anything else.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>()
        && secs >= 0.0
        && secs.is_finite()
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{s}`: a number needs a unit (h, m, s, ms)"))?;
        let (num, tail) = rest.split_at(digits);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{s}`: bad number `{num}`"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let secs = match unit {
            "h" => value * 3600.0,
            "m" | "min" => value * 60.0,
            "s" => value,
            "ms" => value / 1000.0,
            _ => return Err(format!("`{s}`: unknown unit `{unit}` (use h, m, s, ms)")),
        };
        total += Duration::from_secs_f64(secs);
        rest = next;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn cli_is_consistent_and_passes_goose_args_through() {
        Options::command().debug_assert();
        let o = Options::try_parse_from([
            "loadtest",
            "stress",
            "--users",
            "20",
            "--",
            "--threshold",
            "p99<50ms",
        ])
        .expect("parse");
        assert_eq!(o.profile, Profile::Stress);
        assert_eq!(o.users, 20);
        assert_eq!(o.goose, vec!["--threshold", "p99<50ms"]);
        assert_eq!(o.delivery_limit_ms(), Some(100.0));
        assert_eq!(o.error_rate_limit(), Some(0.01));
    }

    #[test]
    fn storms_hatch_everyone_at_once() {
        let o = Options::new(Profile::ConnectStorm);
        assert!(o.effective_hatch_rate().is_infinite());
        assert_eq!(o.effective_duration(), Duration::from_secs(30));
        let o = Options::new(Profile::Load);
        assert_eq!(o.effective_hatch_rate(), 100.0);
        assert_eq!(o.delivery_limit_ms(), None);
    }
}
