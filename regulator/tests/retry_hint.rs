//! `min_retry_after_ms`: shed callers are not told to come back at once.

use std::{collections::BTreeMap, time::Duration};

use regulator::{QueueConfig, Reason, Regulator, RegulatorConfig, Request};

fn regulator(q: QueueConfig) -> Regulator {
    let mut queues = BTreeMap::new();
    queues.insert("q".to_owned(), q);
    Regulator::new(RegulatorConfig {
        queues,
        ..RegulatorConfig::default()
    })
    .unwrap()
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

#[tokio::test(start_paused = true)]
async fn a_per_key_rate_keeps_its_exact_hint() {
    let r = regulator(QueueConfig {
        key_rate_per_sec: Some(10.0),
        key_burst: 1,
        min_retry_after_ms: 5000,
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
