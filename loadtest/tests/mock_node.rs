//! The whole load test (goose, users, collector, reports) against a tiny
//! in-test chat server that speaks just enough of PROTOCOL.md: join, send with
//! per-room gap-free seq and fan-out, history, register/login. It lets the
//! crate be tested without a dialtone node; the root project's CI test runs
//! the same `run` against the real node.
//!
//! Runs are serialized: goose's stop switch is process-wide.

use loadtest::{Options, Profile, run};
use std::path::Path;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[path = "../examples/support/bare_server.rs"]
mod bare_server;

/// Starts the shared bare server on a free port; `drop_every` > 0 loses messages.
async fn start(drop_every: u64) -> String {
    bare_server::start("127.0.0.1:0", drop_every).await
}

fn options(profile: Profile, host: &str, out: &Path) -> Options {
    let mut o = Options::new(profile);
    o.host = host.to_string();
    o.jwt_secret = Some("secret".into());
    o.users = 12;
    o.room_size = 4;
    o.rate = 5.0;
    o.hatch_rate = Some(100.0);
    o.duration = Some(std::time::Duration::from_secs(3));
    o.drain_timeout = std::time::Duration::from_secs(3);
    o.out_dir = out.to_path_buf();
    o.goose = vec!["--quiet".into(), "--no-print-metrics".into()];
    o
}

/// Standard base64 (the interval log's encoding), without a dependency.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("loadtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_profile_delivers_every_message_to_every_member() {
    let _serial = SERIAL.lock().await;
    let host = start(0).await;
    let out = temp_dir("load");
    let s = run(options(Profile::Load, &host, &out)).await.expect("run");
    assert!(s.passed, "{:?}", s.failures);
    assert_eq!(s.gaps, 0);
    assert_eq!(s.failed_users, 0);
    // 12 users x 5 msg/s x 3 s.
    assert_eq!(s.messages_sent, 180);
    assert_eq!(s.messages_acked, 180);
    assert_eq!(
        s.deliveries_expected,
        s.messages_acked * 4,
        "every member gets every message"
    );
    assert_eq!(s.deliveries_received, s.deliveries_expected);
    assert_eq!(s.delivery.count, s.deliveries_received);
    assert!(s.delivery.p99_ms > 0.0 && s.send_ok.p50_ms > 0.0);
    for f in [
        "summary.json",
        "report.html",
        "report.md",
        "report.json",
        "delivery.hgrm",
        "send_ok.hgrm",
        "intervals.hlog",
        "timeseries.csv",
        "latency_over_time.svg",
        "rates.svg",
        "latency_distribution.svg",
    ] {
        let p = Path::new(&s.run_dir).join(f);
        assert!(p.exists(), "{f} written");
        assert!(
            std::fs::metadata(&p).expect("meta").len() > 0,
            "{f} not empty"
        );
    }
    // The interval log is standard HdrHistogram: its delivery intervals add up
    // to the run's deliveries.
    let log = std::fs::read(Path::new(&s.run_dir).join("intervals.hlog")).expect("hlog");
    let mut from_log = 0;
    for entry in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&log) {
        if let Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(h)) = entry
            && h.tag().map(|t| t.as_str()) == Some("delivery")
        {
            let bytes = base64_decode(h.encoded_histogram());
            let hist: hdrhistogram::Histogram<u64> =
                hdrhistogram::serialization::Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .expect("histogram");
            from_log += hist.len();
        }
    }
    assert_eq!(from_log, s.delivery.count);
    let report = std::fs::read_to_string(Path::new(&s.run_dir).join("report.md")).expect("md");
    assert!(
        report.contains("| WS | send |"),
        "goose saw the custom requests"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_deliveries_are_gaps_and_fail_the_run() {
    let _serial = SERIAL.lock().await;
    let host = start(7).await;
    let out = temp_dir("gaps");
    let s = run(options(Profile::Load, &host, &out)).await.expect("run");
    assert!(s.gaps > 0);
    assert!(!s.passed);
    let _ = std::fs::remove_dir_all(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_catches_up_with_history() {
    let _serial = SERIAL.lock().await;
    let host = start(0).await;
    let out = temp_dir("reconnect");
    let mut o = options(Profile::ReconnectStorm, &host, &out);
    o.drop_after = std::time::Duration::from_millis(1500);
    let s = run(o).await.expect("run");
    assert!(s.passed, "{:?}", s.failures);
    assert_eq!(s.connections["reconnects"], 12);
    assert_eq!(s.gaps, 0);
    assert!(s.latencies.contains_key("reconnect"));
    let _ = std::fs::remove_dir_all(&out);
}

/// Also shows `run` works on a current-thread runtime (plain `#[tokio::test]`).
#[tokio::test]
async fn login_storm_registers_and_logs_in_everyone() {
    let _serial = SERIAL.lock().await;
    let host = start(0).await;
    let out = temp_dir("login");
    let mut o = options(Profile::LoginStorm, &host, &out);
    o.jwt_secret = None;
    let s = run(o).await.expect("run");
    assert!(s.passed, "{:?}", s.failures);
    assert_eq!(s.latencies["login"].count, 12);
    assert_eq!(s.latencies["register"].count, 12);
    let _ = std::fs::remove_dir_all(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_reports_a_knee() {
    let _serial = SERIAL.lock().await;
    let host = start(0).await;
    let out = temp_dir("stress");
    let mut o = options(Profile::Stress, &host, &out);
    o.step_time = std::time::Duration::from_secs(1);
    o.max_steps = 3;
    let s = run(o).await.expect("run");
    assert!(s.passed, "{:?}", s.failures);
    assert_eq!(s.phases.len(), 3);
    assert_eq!(s.knee.as_ref().map(|k| k.name.as_str()), Some("step 3"));
    let _ = std::fs::remove_dir_all(&out);
}
