//! `min_retry_after_ms` and `retry_jitter`: shed callers are not told to
//! come back at once, nor all at the same moment.

use std::{collections::BTreeMap, time::Duration};

use regulator::{QueueConfig, Reason, Regulator, RegulatorConfig, Request};

/// One queue, "q".
fn config(q: QueueConfig) -> RegulatorConfig {
    RegulatorConfig {
        queues: BTreeMap::from([("q".to_owned(), q)]),
        ..RegulatorConfig::default()
    }
}

fn regulator(q: QueueConfig) -> Regulator {
    Regulator::new(config(q)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn rejections_carry_at_least_the_configured_retry_hint() {
    let r = regulator(QueueConfig {
        rate_per_sec: Some(1000.0),
        burst: 1,
        max_size: 0,
        min_retry_after_ms: 250,
        ..QueueConfig::default()
    });
    let _first = r.ask("q", Request::new()).await.unwrap();
    let shed = r.ask("q", Request::new()).await.unwrap_err();
    assert_eq!(shed.reason, Reason::Rate);
    assert_eq!(
        shed.retry_after,
        Duration::from_millis(250),
        "the next token is due in 1 ms; the floor wins"
    );
}

/// Neither the floor nor the jitter: a per-key rate's hint is the key's
/// own next token.
#[tokio::test(start_paused = true)]
async fn a_per_key_rate_keeps_its_exact_hint() {
    let r = regulator(QueueConfig {
        key_rate_per_sec: Some(10.0),
        key_burst: 1,
        min_retry_after_ms: 5000,
        retry_jitter: 4.0,
        ..QueueConfig::default()
    });
    let _first = r.ask("q", Request::new().key(7)).await.unwrap();
    let shed = r.ask("q", Request::new().key(7)).await.unwrap_err();
    assert_eq!(shed.reason, Reason::KeyRate);
    assert!(
        shed.retry_after <= Duration::from_millis(100),
        "{:?}",
        shed.retry_after
    );
}

#[tokio::test(start_paused = true)]
async fn the_floor_is_retunable_live() {
    let r = regulator(QueueConfig {
        max_concurrency: Some(1),
        max_size: 0,
        ..QueueConfig::default()
    });
    let _held = r.ask("q", Request::new()).await.unwrap();
    r.retune_json("q", serde_json::json!({"min_retry_after_ms": 40}))
        .unwrap();
    let shed = r.ask("q", Request::new()).await.unwrap_err();
    assert_eq!(shed.reason, Reason::Concurrency);
    assert!(shed.retry_after >= Duration::from_millis(40));
}

#[tokio::test(start_paused = true)]
async fn jittered_hints_spread_over_the_range_above_the_floor() {
    let r = regulator(QueueConfig {
        max_concurrency: Some(1),
        max_size: 0,
        min_retry_after_ms: 1000,
        retry_jitter: 0.5,
        ..QueueConfig::default()
    });
    let _held = r.ask("q", Request::new()).await.unwrap();
    let mut hints = Vec::new();
    for _ in 0..200 {
        hints.push(r.ask("q", Request::new()).await.unwrap_err().retry_after);
    }
    let (lo, hi) = (Duration::from_millis(1000), Duration::from_millis(1500));
    assert!(hints.iter().all(|h| (lo..hi).contains(h)), "{hints:?}");
    // Refused together, they come back over the whole half second: some in
    // its first tenth and some in its last.
    assert!(hints.iter().any(|h| *h < lo + Duration::from_millis(50)));
    assert!(hints.iter().any(|h| *h >= hi - Duration::from_millis(50)));
}

#[test]
fn a_jitter_outside_zero_to_four_is_refused() {
    for bad in [-0.1, 4.5, f64::NAN] {
        let err = Regulator::new(config(QueueConfig {
            retry_jitter: bad,
            ..QueueConfig::default()
        }))
        .err()
        .unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(err.to_string().contains("retry_jitter"), "{err}");
    }
}
