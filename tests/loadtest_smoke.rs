//! The load-test suite against a real node: a short `load` profile (50 users,
//! rooms of 10, 10 s) must lose nothing and write every report.

mod common;

use std::time::Duration;

use common::*;
use loadtest::{Options, Profile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_load_profile_delivers_everything_and_writes_reports() {
    let node = start(&[]).await;
    let out = tempfile::tempdir().unwrap();
    let mut o = Options::new(Profile::Load);
    o.host = url(node.addr());
    o.jwt_secret = Some(SECRET.into());
    o.users = 50;
    o.room_size = 10;
    o.rate = 2.0;
    o.duration = Some(Duration::from_secs(10));
    o.out_dir = out.path().into();
    o.goose = vec!["--quiet".into(), "--no-print-metrics".into()];
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
