//! ask + drop on an uncontended queue, and with two threads on one queue.
//!
//! The futures complete on their first poll on this path, so they are polled
//! once with `now_or_never` (what an async caller pays, without the
//! executor's own cost). They run outside a runtime context on purpose: dev
//! builds enable tokio's `test-util`, under which every `Instant::now()` inside
//! a runtime locks the runtime's test clock; outside one it reads the OS clock,
//! as a production build (without `test-util`) always does. The fast path
//! needs no runtime.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use regulator::{QueueConfig, Regulator, RegulatorConfig, Request};

fn regulator() -> Regulator {
    let mut cfg = RegulatorConfig::default();
    cfg.queues.insert(
        "q".into(),
        QueueConfig {
            // Limits configured (so every regulator on the fast path runs) but never hit.
            max_concurrency: Some(1 << 20),
            rate_per_sec: Some(1e9),
            burst: 1_000_000,
            ..QueueConfig::default()
        },
    );
    Regulator::new(cfg).unwrap()
}

fn ask_drop(r: &Regulator) {
    let permit = r.ask(black_box("q"), Request::new()).now_or_never();
    drop(black_box(
        permit.expect("completes at once").expect("admitted"),
    ));
}

fn bench(c: &mut Criterion) {
    let r = regulator();
    let q = r.queue("q").unwrap();
    let mut g = c.benchmark_group("ask_drop");
    g.bench_function("uncontended_by_name", |b| b.iter(|| ask_drop(&r)));
    g.bench_function("uncontended_queue_handle", |b| {
        b.iter(|| {
            let p = q.ask(Request::new()).now_or_never();
            drop(black_box(p.expect("completes at once").expect("admitted")));
        });
    });
    g.bench_function("unregulated_name", |b| {
        b.iter(|| {
            let p = r.ask(black_box("none"), Request::new()).now_or_never();
            drop(black_box(p.expect("completes at once").expect("admitted")));
        });
    });
    // Context: an ask+drop reads the clock twice.
    g.bench_function("baseline_clock_read", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()));
    });
    g.bench_function("two_threads_by_name", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let r = r.clone();
                    s.spawn(move || {
                        for _ in 0..iters {
                            ask_drop(&r);
                        }
                    });
                }
            });
            // Per ask+drop, as seen by each of the two threads.
            start.elapsed()
        });
    });
    g.finish();
    // Keep the measured queue honest: nothing leaked.
    assert_eq!(q.in_flight(), 0);
}

criterion_group!(benches, bench);
criterion_main!(benches);
