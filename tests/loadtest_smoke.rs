//! The load-test suite against a real node: a short `load` profile (50 users,
//! rooms of 10, 10 s) must lose nothing and write every report; the
//! `overload` profile must show the curve a `send` queue's limit makes, and,
//! with password logins as its requests, the curve of the `login` queue.

mod common;

use std::time::Duration;

use common::*;
use dialtone::{Config, Node};
use loadtest::{Options, Profile, Request};

/// A `profile` run against `addr` writing its reports under `out`, quiet.
fn options(
    profile: Profile,
    addr: std::net::SocketAddr,
    out: &std::path::Path,
    (users, room_size, rate): (usize, usize, f64),
) -> Options {
    let mut o = Options::new(profile);
    o.host = url(addr);
    o.jwt_secret = Some(SECRET.into());
    o.users = users;
    o.room_size = room_size;
    o.rate = rate;
    o.out_dir = out.into();
    o.goose = vec!["--quiet".into(), "--no-print-metrics".into()];
    o
}

/// Each run takes the generator's and a node's share of the machine.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_load_profile_delivers_everything_and_writes_reports() {
    let _alone = ONE_RUN_AT_A_TIME.lock().await;
    let node = start(&[]).await;
    let out = tempfile::tempdir().unwrap();
    let mut o = options(Profile::Load, node.addr(), out.path(), (50, 10, 2.0));
    o.duration = Some(Duration::from_secs(10));
    let s = loadtest::run(o).await.expect("the run is carried out");

    assert!(s.passed, "limits held: {:?}", s.failures);
    assert_eq!((s.gaps, s.duplicates, s.reorders), (0, 0, 0));
    assert_eq!(s.send_errors + s.send_timeouts, 0);
    // 50 users × 2/s × 10 s, each delivered to the 10 members of its room.
    assert!(
        s.messages_acked >= 900,
        "about 1,000 sends acked: {}",
        s.messages_acked
    );
    assert_eq!(s.deliveries_expected, s.messages_acked * 10);
    assert_eq!(s.deliveries_received, s.deliveries_expected);
    assert!(
        s.achieved_sends_per_s > 80.0 && s.achieved_sends_per_s < 120.0,
        "{}",
        s.achieved_sends_per_s
    );

    let dir = std::path::Path::new(&s.run_dir);
    for file in [
        "summary.json",
        "report.html",
        "report.md",
        "report.json",
        "intervals.hlog",
        "timeseries.csv",
        "latency_over_time.svg",
        "rates.svg",
        "latency_distribution.svg",
    ] {
        let meta = std::fs::metadata(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(meta.len() > 0, "{file} is empty");
    }
    let hgrm = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "hgrm")
        })
        .count();
    assert!(hgrm >= 2, "send→ok and delivery percentile files");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert!(
        summary["delivery"]["p99_ms"].as_f64().is_some(),
        "{summary}"
    );
}

/// Runs `overload` at 1x and 4x (2 s settle, 5 s measured, judged at 90 %)
/// against a fresh node with `queues` (TOML) and `env`, with `users` in
/// rooms of `room_size` at `rate` each; `tune` adjusts the options.
async fn curve_at_1x_and_4x(
    queues: &str,
    env: &[(&str, &str)],
    (users, room_size, rate): (usize, usize, f64),
    tune: impl FnOnce(&mut Options),
) -> loadtest::Summary {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dialtone.toml");
    std::fs::write(&path, queues).unwrap();
    let env = [("DIALTONE_GATEWAY__LISTEN", "127.0.0.1:0")]
        .iter()
        .chain(env)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    let cfg = Config::load_from(Some(&path), env).expect("test config");
    let node = Node::start(cfg).await.expect("node starts");
    let out = tempfile::tempdir().unwrap();
    let mut o = options(
        Profile::Overload,
        node.addr(),
        out.path(),
        (users, room_size, rate),
    );
    o.multiples = vec![1.0, 4.0];
    o.settle = Duration::from_secs(2);
    o.step_time = Duration::from_secs(5);
    o.min_goodput_share = Some(0.9);
    tune(&mut o);
    loadtest::run(o).await.expect("the run is carried out")
}

/// The curve a queue admitting `limit`/s makes when 1x is under it and 4x
/// far over it: 1x nearly all admitted, 4x mostly refused `overloaded`, with
/// the limit as its goodput, which is no less than 1x's.
fn assert_the_limit_is_the_4x_goodput(s: &loadtest::Summary, limit: f64, refused_at_1x: f64) {
    let [one, four] = &s.curve[..] else {
        panic!("two measured rates: {:?}", s.curve)
    };
    assert_eq!((one.multiple, four.multiple), (1.0, 4.0));
    assert!(
        one.phase.error_rate < refused_at_1x,
        "1x is under the limit: {one:?}"
    );
    assert!(
        four.phase.error_rate > 0.5,
        "4x is mostly refused: {four:?}"
    );
    assert!(
        four.phase.achieved_per_s < limit * 1.25,
        "the queue's limit is the goodput: {four:?}"
    );
    assert!(four.goodput_share >= 0.9, "{four:?}");
    assert!(s.errors_by_code.contains_key("overloaded"));
}

/// A node whose `send` queue admits 20/s (no feedback, no holds): at 1x
/// (16/s offered) everything is stored; at 4x (64/s) the queue's limit is
/// the goodput and the rest is refused, so the 4x goodput is no less than
/// the 1x goodput, which is what `--min-goodput-share` judges. Not beside
/// the other run: a generator that falls behind sends a user's sends in
/// clumps, and a refused send refuses the rest of its clump (the standing
/// refusal), which a busy 2-core machine turned into 70 % of the goodput.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_profile_reports_goodput_held_at_the_queue_limit() {
    let _alone = ONE_RUN_AT_A_TIME.lock().await;
    let s = curve_at_1x_and_4x(
        "[regulator.queues.send]\nrate_per_sec = 20.0\nburst = 20\nmax_size = 0\n\
         min_retry_after_ms = 50\nmodifiers = []\n",
        &[
            ("DIALTONE_AUTH__JWT_SECRET", SECRET),
            ("DIALTONE_GATEWAY__MAX_HOLD_MS", "0"),
        ],
        (20, 10, 0.8),
        |_| {},
    )
    .await;

    assert!(s.passed, "{:?} {:#?}", s.failures, s.curve);
    assert_eq!(s.gaps, 0);
    assert_the_limit_is_the_4x_goodput(&s, 20.0, 0.05);
    assert_eq!(s.checks.len(), 1, "{:?}", s.checks);
}

/// The login path's curve through the same profile: every scheduled request
/// is a password `login` (argon2 behind the `login` queue, here 6/s with no
/// waiting). At 1x (4/s) every login is verified; at 4x the queue's rate is
/// the goodput and the rest are refused `overloaded`, so 4x keeps the 1x
/// goodput. Users get in by registering with the password, no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_profile_drives_password_logins_against_the_login_queue() {
    let _alone = ONE_RUN_AT_A_TIME.lock().await;
    let s = curve_at_1x_and_4x(
        "[regulator.queues.login]\nrate_per_sec = 6.0\nburst = 2\nmax_size = 0\n",
        &[],
        (8, 8, 0.5),
        |o| {
            o.jwt_secret = None;
            o.request = Request::Login;
        },
    )
    .await;

    assert_eq!(s.request, Request::Login);
    assert_eq!(s.failed_users, 0, "every user registered and logged in");
    assert!(
        s.curve[0].phase.achieved_per_s > 2.0,
        "logins verified at 1x: {:?}",
        s.curve
    );
    assert_the_limit_is_the_4x_goodput(&s, 6.0, 0.1);
    assert_eq!(s.deliveries_received, 0, "logins send no messages");
}
