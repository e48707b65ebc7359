//! Live behaviour: retune and reload keep state, modifiers dampen and restore,
//! adaptive limits move, snapshots report, the tower layer rejects.

use std::sync::Arc;

use futures_util::FutureExt;
use regulator::{
    AdaptiveConfig, Algorithm, ManualSampler, ModifierConfig, QueueConfig, Reason, RegulatedError,
    Regulator, RegulatorConfig, RegulatorLayer, Request, Step, Track,
};
use serde_json::json;
use tokio::time::sleep;
use tower::{Layer, Service, ServiceExt};

mod common;
use common::*;

#[tokio::test(start_paused = true)]
async fn retune_keeps_waiters_and_rate_state() {
    let (r, q) = one(QueueConfig {
        max_concurrency: Some(1),
        max_size: 10,
        max_wait_ms: 10_000,
        ..QueueConfig::default()
    });
    let _hold = q.ask(Request::new()).await.unwrap();
    let mut waiters: Vec<_> = (0..5).map(|_| Box::pin(q.ask(Request::new()))).collect();
    for w in &mut waiters {
        assert!(w.as_mut().now_or_never().is_none());
    }
    assert_eq!(q.len(), 5);
    // Raise the limit: two more are admitted at once, the rest keep waiting.
    let snap = r
        .retune(
            "q",
            QueueConfig {
                max_concurrency: Some(3),
                max_size: 10,
                max_wait_ms: 10_000,
                ..QueueConfig::default()
            },
        )
        .unwrap();
    assert_eq!(snap["limits"]["max_concurrency"], 3);
    assert_eq!(q.len(), 3);
    assert_eq!(q.in_flight(), 3);
    let granted: Vec<_> = waiters
        .iter_mut()
        .filter_map(|w| w.as_mut().now_or_never())
        .collect();
    assert_eq!(granted.len(), 2);
    assert!(granted.iter().all(Result::is_ok));
    // Shrinking max_size below the queue length keeps the waiters too.
    r.retune_json("q", json!({"max_size": 1})).unwrap();
    assert_eq!(q.len(), 3);
    assert_eq!(
        q.ask(Request::new()).await.unwrap_err().reason,
        Reason::QueueFull
    );

    // Rate state: a retune neither hands out a fresh burst nor forgets debt.
    let (r, q) = one(QueueConfig {
        rate_per_sec: Some(1.0),
        burst: 2,
        max_size: 0,
        ..QueueConfig::default()
    });
    assert!(q.ask(Request::new()).await.is_ok());
    assert!(q.ask(Request::new()).await.is_ok());
    r.retune_json("q", json!({"burst": 2, "max_concurrency": 50}))
        .unwrap();
    assert_eq!(
        q.ask(Request::new()).await.unwrap_err().reason,
        Reason::Rate
    );
    // A retune to a higher rate applies from the current debt.
    r.retune_json("q", json!({"rate_per_sec": 10.0})).unwrap();
    sleep(ms(100)).await;
    assert!(q.ask(Request::new()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn retune_json_merges_and_refuses_bad_input_without_change() {
    let (r, _q) = one(QueueConfig {
        rate_per_sec: Some(5.0),
        ..QueueConfig::default()
    });
    let snap = r.retune_json("q", json!({"max_concurrency": 4})).unwrap();
    assert_eq!(snap["config"]["rate_per_sec"], 5.0);
    assert_eq!(snap["config"]["max_concurrency"], 4);
    assert!(r.retune_json("q", json!({"max_concurency": 4})).is_err());
    assert!(r.retune_json("q", json!({"burst": 0})).is_err());
    assert!(r.retune_json("q", json!({"group": "missing"})).is_err());
    assert_eq!(r.config().queues["q"].max_concurrency, Some(4));
    assert_eq!(r.config().queues["q"].burst, 1);
    // A new name creates the queue from the defaults.
    let snap = r.retune_json("new", json!({"max_size": 3})).unwrap();
    assert_eq!(snap["config"]["max_size"], 3);
    assert!(r.queue("new").is_some());
}

#[tokio::test(start_paused = true)]
async fn reload_is_all_or_nothing_and_keeps_queue_handles() {
    let (r, q) = one(QueueConfig {
        max_concurrency: Some(1),
        ..QueueConfig::default()
    });
    let _hold = q.ask(Request::new()).await.unwrap();
    let mut bad = r.config();
    bad.queues.get_mut("q").unwrap().max_concurrency = Some(5);
    bad.queues.insert(
        "other".into(),
        QueueConfig {
            rate_per_sec: Some(-1.0),
            ..QueueConfig::default()
        },
    );
    assert!(r.reload(bad).is_err());
    assert_eq!(q.concurrency_limit(), Some(1), "nothing applied");
    assert!(r.queue("other").is_none());

    let mut good = r.config();
    good.queues.get_mut("q").unwrap().max_concurrency = Some(5);
    good.queues.insert("other".into(), QueueConfig::default());
    r.reload(good).unwrap();
    assert_eq!(
        q.concurrency_limit(),
        Some(5),
        "the old handle sees the new limit"
    );
    assert_eq!(q.in_flight(), 1, "in-flight count kept");
    assert!(r.queue("other").is_some());
    // Removing a queue makes its name unregulated.
    r.reload(RegulatorConfig::default()).unwrap();
    assert!(!r.ask("q", Request::new()).await.unwrap().is_regulated());
}

#[tokio::test(start_paused = true)]
async fn modifiers_dampen_limits_and_restore_them_when_the_signal_clears() {
    let (r, q) = one(QueueConfig {
        max_concurrency: Some(10),
        rate_per_sec: Some(100.0),
        modifiers: vec![ModifierConfig {
            track: None,
            sampler: "load".into(),
            steps: vec![
                Step {
                    above: 50.0,
                    for_ms: 0,
                    factor: 0.5,
                },
                Step {
                    above: 50.0,
                    for_ms: 2_000,
                    factor: 0.2,
                },
            ],
        }],
        ..QueueConfig::default()
    });
    let load = Arc::new(ManualSampler::new());
    r.add_sampler("load", load.clone());
    r.feedback_tick();
    assert_eq!(q.concurrency_limit(), Some(10));
    load.set(60.0);
    r.feedback_tick();
    assert_eq!(q.concurrency_limit(), Some(5));
    let snap = q.snapshot();
    assert_eq!(snap["limits"]["rate_per_sec"], 50.0);
    assert_eq!(snap["modifiers"][0]["active"], true);
    sleep(ms(2_000)).await;
    r.feedback_tick();
    assert_eq!(
        q.concurrency_limit(),
        Some(2),
        "overload lasted 2 s: deeper damping"
    );
    load.set(40.0);
    r.feedback_tick();
    assert_eq!(q.concurrency_limit(), Some(10), "restored");
    assert_eq!(q.snapshot()["limits"]["rate_per_sec"], 100.0);
    load.clear();
    r.feedback_tick();
    assert_eq!(q.concurrency_limit(), Some(10));
}

/// `cfg` with a modifier tracking 50 ms of a hand-set `lag` sampler
/// (backoff 0.8, growth 10 % a tick, floor 0.01, headroom 2).
fn tracking_lag(cfg: QueueConfig) -> (Regulator, regulator::Queue, Arc<ManualSampler>) {
    tracking_lag_with(0, cfg)
}

/// [`tracking_lag`] with `cut_burst_ms`.
fn tracking_lag_with(
    cut_burst_ms: u64,
    cfg: QueueConfig,
) -> (Regulator, regulator::Queue, Arc<ManualSampler>) {
    let (r, q) = one(QueueConfig {
        modifiers: vec![ModifierConfig {
            sampler: "lag".into(),
            steps: Vec::new(),
            track: Some(Track {
                target: 50.0,
                backoff: 0.8,
                increase: 0.1,
                min_factor: 0.01,
                headroom: 2.0,
                cut_burst_ms,
            }),
        }],
        ..cfg
    });
    let lag = Arc::new(ManualSampler::new());
    r.add_sampler("lag", lag.clone());
    (r, q, lag)
}

#[tokio::test(start_paused = true)]
async fn tracking_modifier_settles_below_the_admitted_rate_and_recovers() {
    let (r, q, lag) = tracking_lag(QueueConfig {
        rate_per_sec: Some(1000.0),
        max_size: 0,
        ..QueueConfig::default()
    });
    r.feedback_tick();
    // The downstream falls behind while only 100 requests/s get through.
    for _ in 0..100 {
        drop(q.ask(Request::new()).await.unwrap());
        sleep(ms(10)).await;
    }
    lag.set(80.0);
    r.feedback_tick();
    let rate = |q: &regulator::Queue| q.snapshot()["limits"]["rate_per_sec"].as_f64().unwrap();
    assert!((rate(&q) - 80.0).abs() < 0.5, "0.8 x 100/s: {}", rate(&q));
    assert_eq!(q.snapshot()["modifiers"][0]["active"], true);
    assert_eq!(q.snapshot()["modifiers"][0]["unreachable"], false);
    // The new limit holds: a burst beyond it is refused `rate`.
    let refused = (0..200)
        .filter(|_| {
            q.ask(Request::new())
                .now_or_never()
                .is_some_and(|r| r.is_err())
        })
        .count();
    assert!(refused > 0);
    // The lag clears while the demand (1,000/s) fills the limit: it grows
    // back, 10 % a tick, to the ceiling.
    lag.set(10.0);
    demand_tick(&r, &q, 1000).await;
    assert!((rate(&q) - 88.0).abs() < 0.5, "{}", rate(&q));
    for _ in 0..30 {
        demand_tick(&r, &q, 1000).await;
    }
    assert_eq!(rate(&q), 1000.0);
    // The demand falls to 100/s: the limit follows it down to twice that,
    // so a surge is not let through at 1,000/s.
    for _ in 0..5 {
        demand_tick(&r, &q, 100).await;
    }
    assert!((rate(&q) - 200.0).abs() < 5.0, "{}", rate(&q));
    let mut surge = 0;
    for _ in 0..250 {
        surge += usize::from(
            q.ask(Request::new())
                .now_or_never()
                .is_some_and(|p| p.is_ok()),
        );
        sleep(ms(1)).await;
    }
    assert!((45..=55).contains(&surge), "200/s for 250 ms: {surge}");
}

/// `cut_burst_ms`: after a cut the burst is that long at the damped rate,
/// not the configured count (seconds of work at a rate cut far down), and
/// it is the configured one again once the demand falls below the ceiling.
#[tokio::test(start_paused = true)]
async fn a_cut_caps_the_burst_until_the_demand_is_followed_again() {
    let rate = |q: &regulator::Queue| q.snapshot()["limits"]["rate_per_sec"].as_f64().unwrap();
    let burst = |q: &regulator::Queue| q.snapshot()["limits"]["burst"].as_u64().unwrap();
    // Idle long enough to fill the bucket, then as many asks as can pass
    // at one instant.
    let at_once = |q: regulator::Queue| async move {
        sleep(ms(4_000)).await;
        (0..1_000)
            .filter(|_| {
                q.ask(Request::new())
                    .now_or_never()
                    .is_some_and(|p| p.is_ok())
            })
            .count()
    };
    for cut_burst_ms in [0, 100] {
        let (r, q, lag) = tracking_lag_with(
            cut_burst_ms,
            QueueConfig {
                rate_per_sec: Some(1000.0),
                burst: 500,
                max_size: 0,
                ..QueueConfig::default()
            },
        );
        r.feedback_tick();
        for _ in 0..4 {
            demand_tick(&r, &q, 200).await;
        }
        assert_eq!(burst(&q), 500, "following the demand: as configured");
        lag.set(80.0);
        demand_tick(&r, &q, 200).await;
        assert!((rate(&q) - 160.0).abs() < 1.0, "0.8 x 200/s: {}", rate(&q));
        let passed = at_once(q.clone()).await;
        if cut_burst_ms == 0 {
            assert_eq!(burst(&q), 500);
            assert!((499..=501).contains(&passed), "the whole burst: {passed}");
            continue;
        }
        // 100 ms at 160/s.
        let tenth = burst(&q);
        assert_eq!(tenth as f64, (rate(&q) / 10.0).round());
        assert!((15..=17).contains(&passed), "a tenth of a second: {passed}");
        // The lag clears and the demand drops below the ceiling: the
        // tracking follows it again, and the configured burst is back.
        lag.set(10.0);
        for _ in 0..4 {
            demand_tick(&r, &q, 40).await;
        }
        assert_eq!(burst(&q), 500, "rate {}", rate(&q));
        assert!(at_once(q.clone()).await >= 499);
    }
}

/// The tracked factor is a share of the admitted rate: with a rate it damps
/// the rate and leaves concurrency (an adaptive limit of 64 once fell to 1);
/// steps damp both; without a rate the tracking damps concurrency.
#[tokio::test(start_paused = true)]
async fn tracking_damps_the_rate_and_leaves_the_concurrency_limit() {
    let adaptive = AdaptiveConfig {
        initial_limit: 64,
        min_limit: 8,
        ..AdaptiveConfig::default()
    };
    let (r, q, lag) = tracking_lag(QueueConfig {
        rate_per_sec: Some(1000.0),
        max_concurrency: Some(4096),
        adaptive: Some(adaptive.clone()),
        max_size: 0,
        ..QueueConfig::default()
    });
    r.feedback_tick();
    demand_tick(&r, &q, 100).await;
    lag.set(500.0);
    for _ in 0..20 {
        demand_tick(&r, &q, 100).await;
    }
    let snap = q.snapshot();
    let tracked = snap["modifiers"][0]["tracked"].as_f64().unwrap();
    assert!(tracked < 0.05, "cut far down: {snap}");
    assert_eq!(snap["limits"]["factor"], tracked);
    assert_eq!(snap["limits"]["rate_per_sec"], 1000.0 * tracked);
    assert_eq!(snap["limits"]["concurrency_factor"], 1.0);
    assert_eq!(q.concurrency_limit(), Some(64), "the adaptive limit stands");

    // A step on the same queue damps both.
    r.retune(
        "q",
        QueueConfig {
            rate_per_sec: Some(1000.0),
            max_concurrency: Some(4096),
            adaptive: Some(adaptive),
            max_size: 0,
            modifiers: vec![ModifierConfig {
                sampler: "lag".into(),
                steps: vec![Step {
                    above: 100.0,
                    for_ms: 0,
                    factor: 0.5,
                }],
                track: None,
            }],
            ..QueueConfig::default()
        },
    )
    .unwrap();
    r.feedback_tick();
    assert_eq!(q.concurrency_limit(), Some(32));
    assert_eq!(q.snapshot()["limits"]["rate_per_sec"], 500.0);

    // Without a rate, tracking has only concurrency to damp.
    let (r, q, lag) = tracking_lag(QueueConfig {
        max_concurrency: Some(100),
        max_size: 0,
        ..QueueConfig::default()
    });
    r.feedback_tick();
    lag.set(500.0);
    r.feedback_tick();
    assert_eq!(q.concurrency_limit(), Some(80), "0.8 x its own factor");
}

/// One 250 ms feedback tick with `per_sec` asks spread evenly over it, each
/// permit dropped at once.
async fn demand_tick(r: &Regulator, q: &regulator::Queue, per_sec: u64) {
    let n = per_sec / 4;
    for _ in 0..n {
        drop(q.ask(Request::new()).now_or_never());
        sleep(ms(250 / n)).await;
    }
    r.feedback_tick();
}

#[tokio::test(start_paused = true)]
async fn latency_modifier_is_fed_by_observe_latency() {
    let (r, q) = one(QueueConfig {
        max_concurrency: Some(8),
        modifiers: vec![ModifierConfig {
            track: None,
            sampler: "latency".into(),
            steps: vec![Step {
                above: 100.0,
                for_ms: 0,
                factor: 0.25,
            }],
        }],
        ..QueueConfig::default()
    });
    q.observe_latency(ms(300));
    r.feedback_tick();
    assert_eq!(q.concurrency_limit(), Some(2));
    q.observe_latency(ms(20));
    r.feedback_tick();
    assert_eq!(q.concurrency_limit(), Some(8));
}

/// Real time, not the paused clock: the loop is an OS thread. The test
/// blocks its runtime's only worker while it waits, as an overloaded node's
/// backlog would; the limit must change anyway.
#[tokio::test]
async fn feedback_loop_ticks_on_its_own_thread_even_while_the_runtime_is_blocked() {
    let (r, q) = one(QueueConfig {
        max_concurrency: Some(8),
        modifiers: vec![ModifierConfig {
            track: None,
            sampler: "load".into(),
            steps: vec![Step {
                above: 1.0,
                for_ms: 0,
                factor: 0.5,
            }],
        }],
        ..QueueConfig::default()
    });
    let load = Arc::new(ManualSampler::new());
    r.add_sampler("load", load.clone());
    let feedback = r.spawn_feedback(ms(50));
    load.set(2.0);
    // Blocking waits (no await): a tick on this runtime could never run.
    let until = std::time::Instant::now() + ms(10_000);
    while q.concurrency_limit() != Some(4) && std::time::Instant::now() < until {
        std::thread::sleep(ms(5));
    }
    assert_eq!(q.concurrency_limit(), Some(4));
    // Dropped, the loop stops: the load clears but nothing restores the limit.
    drop(feedback);
    load.set(0.0);
    std::thread::sleep(ms(300));
    assert_eq!(q.concurrency_limit(), Some(4));
    r.feedback_tick();
    assert_eq!(q.concurrency_limit(), Some(8));
}

#[tokio::test(start_paused = true)]
async fn adaptive_limit_backs_off_when_service_slows() {
    let (_r, q) = one(QueueConfig {
        max_concurrency: Some(100),
        max_size: 1000,
        max_wait_ms: 60_000,
        adaptive: Some(AdaptiveConfig {
            algorithm: Algorithm::Aimd,
            initial_limit: 10,
            latency_threshold_ms: 50,
            ..AdaptiveConfig::default()
        }),
        ..QueueConfig::default()
    });
    assert_eq!(q.concurrency_limit(), Some(10));
    // Fast jobs with demand above the limit: the limit grows.
    let run = |hold: u64, n: usize| {
        let q = q.clone();
        async move {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let q = q.clone();
                    tokio::spawn(async move {
                        let _p = q.ask(Request::new()).await.unwrap();
                        sleep(ms(hold)).await;
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    run(10, 200).await;
    let grown = q.concurrency_limit().unwrap();
    assert!(grown > 10, "grew to {grown}");
    run(200, 50).await;
    let shrunk = q.concurrency_limit().unwrap();
    assert!(shrunk < grown, "backed off from {grown} to {shrunk}");
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_limits_counters_and_reasons() {
    let (r, q) = one(QueueConfig {
        max_concurrency: Some(1),
        max_size: 0,
        ..QueueConfig::default()
    });
    let _p = q.ask(Request::new()).await.unwrap();
    let _ = q.ask(Request::new()).await;
    let s = r.snapshot();
    let s = &s["queues"]["q"];
    assert_eq!(s["admitted"], 1);
    assert_eq!(s["rejected"]["concurrency"], 1);
    assert_eq!(s["rejected"]["queue_full"], 0);
    assert_eq!(s["in_flight"], 1);
    assert_eq!(s["queue_length"], 0);
    assert_eq!(s["limits"]["max_concurrency"], 1);
    assert_eq!(s["shedding"], true);
}

#[tokio::test(start_paused = true)]
async fn disabling_a_queue_admits_everything_and_releases_waiters() {
    let (r, q) = one(QueueConfig {
        max_concurrency: Some(1),
        ..QueueConfig::default()
    });
    let _hold = q.ask(Request::new()).await.unwrap();
    let mut w = Box::pin(q.ask(Request::new()));
    assert!(w.as_mut().now_or_never().is_none());
    r.retune_json("q", json!({"enabled": false})).unwrap();
    assert!(w.await.is_ok());
    let extra: Vec<_> = futures_util::future::join_all((0..5).map(|_| q.ask(Request::new()))).await;
    assert!(extra.iter().all(Result::is_ok));
}

#[tokio::test(start_paused = true)]
async fn tower_layer_rejects_with_the_rejected_value() {
    let (r, q) = one(QueueConfig {
        max_concurrency: Some(1),
        max_size: 0,
        ..QueueConfig::default()
    });
    let inner = tower::service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x * 2) });
    let mut svc = RegulatorLayer::new(r.clone(), "q").layer(inner);
    assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), 42);
    let hold = q.ask(Request::new()).await.unwrap();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    let rejected = err.rejected().copied().unwrap();
    assert_eq!(rejected.reason, Reason::Concurrency);
    assert!(matches!(err, RegulatedError::Rejected(_)));
    drop(hold);
    // A classifier sets per-request keys and priorities.
    let inner = tower::service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) });
    let mut svc = RegulatorLayer::new(r, "q")
        .with_classifier(|x: &u32| Request::new().key(u64::from(*x)).non_rejectable())
        .layer(inner);
    let _hold = q.ask(Request::new()).await.unwrap();
    assert_eq!(svc.ready().await.unwrap().call(5).await.unwrap(), 5);
}

#[test]
fn handles_are_cheap_to_share_across_tasks() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Regulator>();
    send_sync::<regulator::Queue>();
    let r = Regulator::new(RegulatorConfig::default()).unwrap();
    let q_ask = r.ask("q", Request::new());
    send(&q_ask);
    let run = r.run("q", Request::new(), async {});
    send(&run);
    fn permit_is_send<T: Send + Sync>() {}
    permit_is_send::<regulator::Permit>();
    permit_is_send::<regulator::Rejected>();
}

#[tokio::test(start_paused = true)]
async fn a_tracking_target_missed_at_the_floor_shows_as_unreachable() {
    let (r, q, lag) = tracking_lag(QueueConfig {
        rate_per_sec: Some(1000.0),
        ..QueueConfig::default()
    });
    let unreachable = |q: &regulator::Queue| q.snapshot()["modifiers"][0]["unreachable"].clone();
    // The downstream stays behind however little is admitted.
    lag.set(80.0);
    for _ in 0..19 {
        r.feedback_tick();
        sleep(ms(250)).await;
    }
    // At the floor since the second cut, a second in: not yet 5 s.
    assert_eq!(q.snapshot()["limits"]["rate_per_sec"], 10.0);
    assert_eq!(unreachable(&q), false, "not yet 5 s at the floor");
    for _ in 0..8 {
        r.feedback_tick();
        sleep(ms(250)).await;
    }
    assert_eq!(unreachable(&q), true);
    // The lag clears and the limit, filled by the demand, grows clear of
    // the floor (10 % a tick).
    lag.set(10.0);
    for _ in 0..5 {
        demand_tick(&r, &q, 1000).await;
    }
    assert_eq!(unreachable(&q), false);
}
