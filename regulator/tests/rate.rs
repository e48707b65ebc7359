//! Rate regulators on tokio's paused clock: GCRA rate and burst, group rate
//! fairness, per-key rate and its bounded table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use regulator::{GroupConfig, QueueConfig, Reason, Regulator, RegulatorConfig, Request};
use tokio::time::{Instant, sleep};

fn regulator(queues: &[(&str, QueueConfig)], groups: &[(&str, GroupConfig)]) -> Regulator {
    let mut c = RegulatorConfig::default();
    for (n, q) in queues {
        c.queues.insert((*n).into(), q.clone());
    }
    for (n, g) in groups {
        c.groups.insert((*n).into(), g.clone());
    }
    Regulator::new(c).unwrap()
}

mod common;
use common::*;

/// `clients` tasks ask `queue` in a loop until `until`; returns admissions.
fn flood(r: &Regulator, queue: &'static str, clients: usize, until: Instant) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    for _ in 0..clients {
        let (r, count) = (r.clone(), count.clone());
        tokio::spawn(async move {
            while Instant::now() < until {
                match r.ask(queue, Request::new()).await {
                    Ok(_p) if Instant::now() < until => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => sleep(e.retry_after).await,
                }
            }
        });
    }
    count
}

fn queued(rate: f64) -> QueueConfig {
    QueueConfig {
        rate_per_sec: Some(rate),
        max_size: 10_000,
        max_wait_ms: 600_000,
        ..QueueConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn rate_holds_within_one_percent_over_simulated_minutes() {
    for rate in [100.0, 30.0, 7.0] {
        let r = regulator(&[("q", queued(rate))], &[]);
        let minutes = 3;
        let until = Instant::now() + Duration::from_secs(60 * minutes);
        let count = flood(&r, "q", 50, until);
        sleep(Duration::from_secs(60 * minutes) + ms(10)).await;
        let got = count.load(Ordering::Relaxed) as f64;
        let want = rate * 60.0 * minutes as f64;
        assert!(
            (got - want).abs() / want < 0.01,
            "rate {rate}: got {got}, want {want}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn burst_passes_at_once_then_tokens_come_at_the_rate() {
    let r = regulator(
        &[(
            "q",
            QueueConfig {
                rate_per_sec: Some(10.0),
                burst: 5,
                max_size: 0,
                ..QueueConfig::default()
            },
        )],
        &[],
    );
    let mut permits = Vec::new();
    for _ in 0..5 {
        permits.push(r.ask("q", Request::new()).await.unwrap());
    }
    let e = r.ask("q", Request::new()).await.unwrap_err();
    assert_eq!(e.reason, Reason::Rate);
    assert_eq!(e.retry_after, ms(100));
    sleep(ms(100)).await;
    assert!(r.ask("q", Request::new()).await.is_ok());
    assert!(r.ask("q", Request::new()).await.is_err());
    // After a long idle, the full burst is back (and no more).
    sleep(Duration::from_secs(10)).await;
    let ok = futures_util::future::join_all((0..8).map(|_| r.ask("q", Request::new()))).await;
    assert_eq!(ok.iter().filter(|x| x.is_ok()).count(), 5);
}

#[tokio::test(start_paused = true)]
async fn group_rate_is_shared_fairly_between_greedy_queues() {
    let g = GroupConfig {
        rate_per_sec: 100.0,
        burst: 1,
    };
    let member = QueueConfig {
        group: Some("g".into()),
        max_size: 10_000,
        max_wait_ms: 600_000,
        ..QueueConfig::default()
    };
    let r = regulator(&[("a", member.clone()), ("b", member)], &[("g", g)]);
    let until = Instant::now() + Duration::from_secs(20);
    // `a` floods with far more clients than `b`.
    let a = flood(&r, "a", 80, until);
    let b = flood(&r, "b", 5, until);
    sleep(Duration::from_secs(20) + ms(10)).await;
    let (a, b) = (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
    assert!(
        a + b >= 1900 && a + b <= 2001,
        "group rate held: a={a} b={b}"
    );
    assert!(a.abs_diff(b) <= 200, "fair split: a={a} b={b}");
}

#[tokio::test(start_paused = true)]
async fn a_light_group_member_is_not_starved_by_a_flooding_one() {
    let member = QueueConfig {
        group: Some("g".into()),
        max_size: 10_000,
        max_wait_ms: 1_000,
        ..QueueConfig::default()
    };
    let r = regulator(
        &[("a", member.clone()), ("b", member)],
        &[(
            "g",
            GroupConfig {
                rate_per_sec: 100.0,
                burst: 1,
            },
        )],
    );
    let until = Instant::now() + Duration::from_secs(20);
    let a = flood(&r, "a", 80, until);
    // `b` asks 20 times a second and records how long each ask took.
    let mut worst = Duration::ZERO;
    let mut b_ok = 0;
    for _ in 0..400 {
        let t = Instant::now();
        if r.ask("b", Request::new()).await.is_ok() {
            b_ok += 1;
        }
        worst = worst.max(t.elapsed());
        sleep(ms(50).saturating_sub(t.elapsed())).await;
    }
    sleep(ms(100)).await;
    let a = a.load(Ordering::Relaxed);
    assert_eq!(b_ok, 400, "every light request admitted");
    assert!(worst <= ms(30), "light member waited {worst:?}");
    assert!(
        a >= 50 * 20,
        "the flooding member keeps at least its share: {a}"
    );
}

#[tokio::test(start_paused = true)]
async fn per_key_rate_limits_each_key_and_the_table_stays_bounded() {
    let r = regulator(
        &[(
            "q",
            QueueConfig {
                key_rate_per_sec: Some(1.0),
                key_burst: 2,
                key_table_size: 1000,
                ..QueueConfig::default()
            },
        )],
        &[],
    );
    let q = r.queue("q").unwrap();
    for _ in 0..2 {
        assert!(q.ask(Request::new().str_key("alice")).await.is_ok());
    }
    let e = q.ask(Request::new().str_key("alice")).await.unwrap_err();
    assert_eq!(e.reason, Reason::KeyRate);
    assert_eq!(e.retry_after, ms(1000));
    assert!(q.ask(Request::new().str_key("bob")).await.is_ok());
    assert!(
        q.ask(Request::new()).await.is_ok(),
        "no key: no per-key limit"
    );
    // A flood of distinct keys.
    for k in 0..200_000u64 {
        let _ = q.ask(Request::new().key(k)).await;
    }
    let keys = q.snapshot()["keys"].as_u64().unwrap();
    assert!(keys <= 1000, "{keys} keys remembered");
    sleep(ms(1000)).await;
    assert!(q.ask(Request::new().str_key("alice")).await.is_ok());
}
