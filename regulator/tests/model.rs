//! A proptest state-machine model of one queue, on tokio's paused clock.
//!
//! Random sequences of asks (weights, priorities, deadlines, non-rejectable),
//! permit drops, cancellations, retunes and clock advances, under random
//! limits, rates and disciplines. After every step: every ask is answered at
//! most once and by its expiry (`max_wait` or deadline); in flight equals the
//! weight of the permits the driver holds (so permits are freed on drop and on
//! cancellation) and never exceeds the limit (non-rejectable work aside, which
//! is never refused); the queue holds exactly the unanswered asks (a cancelled
//! waiter leaves at once); without a rate nobody waits while the limit has
//! room. At the end every ask not cancelled has been answered exactly once and
//! the queue is empty with nothing in flight.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use regulator::{
    Discipline, Permit, Priority, QueueConfig, Reason, Regulator, RegulatorConfig, Request,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Clone)]
enum Op {
    Ask {
        weight: u32,
        priority: u8,
        deadline_ms: Option<u64>,
    },
    AskNonRejectable,
    Release(usize),
    Cancel(usize),
    Advance(u64),
    Retune {
        max_size: u32,
        max_wait: u64,
        discipline: Discipline,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..=2u32, 0..3u8, proptest::option::of(0..150u64)).prop_map(|(weight, priority, deadline_ms)| Op::Ask { weight, priority, deadline_ms }),
        1 => Just(Op::AskNonRejectable),
        1 => (0..5u32, 5..80u64, discipline()).prop_map(|(max_size, max_wait, discipline)| Op::Retune { max_size, max_wait, discipline }),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Cancel),
        3 => (0..40u64).prop_map(Op::Advance),
    ]
}

fn discipline() -> impl Strategy<Value = Discipline> {
    prop_oneof![
        Just(Discipline::Fifo),
        Just(Discipline::Lifo),
        Just(Discipline::Codel),
        Just(Discipline::AdaptiveLifo),
    ]
}

struct Pending {
    handle: tokio::task::JoinHandle<()>,
    expiry: Instant,
}

async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

type Answer = (usize, Result<Permit, Reason>, Instant);

/// The driver's account of every ask.
#[derive(Default)]
struct Book {
    pending: HashMap<usize, Pending>,
    answered: HashMap<usize, Option<Reason>>,
    /// (non-rejectable, permit)
    held: Vec<(bool, Permit)>,
    non_rejectable: HashSet<usize>,
}

impl Book {
    /// Records the answer to ask `id` (already taken out of `pending`).
    fn record(&mut self, id: usize, res: Result<Permit, Reason>) {
        let nr = self.non_rejectable.contains(&id);
        match res {
            Ok(permit) => {
                self.held.push((nr, permit));
                self.answered.insert(id, None);
            }
            Err(reason) => {
                assert!(!nr, "non-rejectable work rejected ({reason})");
                self.answered.insert(id, Some(reason));
            }
        }
    }
}

fn run_model(
    limit: u32,
    rate: Option<(f64, u32)>,
    max_size: u32,
    mut max_wait: u64,
    discipline: Discipline,
    shed_predicted_timeouts: bool,
    ops: Vec<Op>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut cfg = RegulatorConfig::default();
        let base = QueueConfig {
            max_concurrency: Some(limit),
            rate_per_sec: rate.map(|r| r.0),
            burst: rate.map_or(1, |r| r.1),
            max_size,
            max_wait_ms: max_wait,
            discipline,
            shed_predicted_timeouts,
            codel_interval_ms: 20,
            lifo_timeout_ms: 15,
            ..QueueConfig::default()
        };
        cfg.queues.insert("q".into(), base.clone());
        let r = Regulator::new(cfg).unwrap();
        let q = r.queue("q").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel::<Answer>();
        let mut book = Book::default();
        let mut cancelled = 0usize;
        let mut next_id = 0usize;

        let check = |book: &mut Book, rx: &mut mpsc::UnboundedReceiver<Answer>| {
            while let Ok((id, res, at)) = rx.try_recv() {
                let p = book
                    .pending
                    .remove(&id)
                    .expect("answered exactly once, and not after cancellation");
                assert!(
                    at <= p.expiry + Duration::from_millis(1),
                    "answered after its expiry"
                );
                book.record(id, res);
            }
            let (pending, held) = (&book.pending, &book.held);
            let now = Instant::now();
            for p in pending.values() {
                assert!(
                    now <= p.expiry + Duration::from_millis(1),
                    "a waiter is past its expiry unanswered"
                );
            }
            // Every unanswered ask is a waiter, and nothing else is.
            assert_eq!(q.len(), pending.len(), "queue length = unanswered asks");
            let weight: u64 = held.iter().map(|(_, p)| u64::from(p.weight())).sum();
            assert_eq!(q.in_flight(), weight, "in flight = permits held");
            // Liveness without a rate: a waiter only waits when the limit is
            // (nearly, for weight 2) used up.
            if rate.is_none() && !pending.is_empty() {
                let f = q.in_flight();
                assert!(
                    f > 0 && f + 2 > u64::from(limit),
                    "{} waiting while only {f} of {limit} in flight",
                    pending.len()
                );
            }
            // Non-rejectable work may go past the limit; the rest never does.
            let limited: u64 = held
                .iter()
                .filter(|(nr, _)| !nr)
                .map(|(_, p)| u64::from(p.weight()))
                .sum();
            assert!(
                limited <= u64::from(limit),
                "in flight {limited} above limit {limit}"
            );
        };

        for op in ops {
            match op {
                Op::Ask {
                    weight,
                    priority,
                    deadline_ms,
                } => {
                    let id = next_id;
                    next_id += 1;
                    let now = Instant::now();
                    let mut req = Request::new()
                        .weight(weight.min(limit))
                        .priority(Priority::Rejectable(priority));
                    let mut expiry = now + Duration::from_millis(max_wait);
                    if let Some(d) = deadline_ms {
                        let d = now + Duration::from_millis(d);
                        req = req.deadline(d);
                        expiry = expiry.min(d);
                    }
                    let (q, tx) = (q.clone(), tx.clone());
                    let handle = tokio::spawn(async move {
                        let res = q.ask(req).await.map_err(|e| e.reason);
                        // The driver outlives every task.
                        let _ = tx.send((id, res, Instant::now()));
                    });
                    book.pending.insert(id, Pending { handle, expiry });
                }
                Op::AskNonRejectable => {
                    let id = next_id;
                    next_id += 1;
                    book.non_rejectable.insert(id);
                    let (q, tx) = (q.clone(), tx.clone());
                    let handle = tokio::spawn(async move {
                        let res = q
                            .ask(Request::new().non_rejectable())
                            .await
                            .map_err(|e| e.reason);
                        // The driver outlives every task.
                        let _ = tx.send((id, res, Instant::now()));
                    });
                    // Answered at once.
                    book.pending.insert(
                        id,
                        Pending {
                            handle,
                            expiry: Instant::now(),
                        },
                    );
                }
                Op::Retune {
                    max_size,
                    max_wait: wait,
                    discipline,
                } => {
                    // Waiters keep their expiry; new ones get the new max_wait.
                    max_wait = wait;
                    r.retune(
                        "q",
                        QueueConfig {
                            max_size,
                            max_wait_ms: wait,
                            discipline,
                            ..base.clone()
                        },
                    )
                    .unwrap();
                }
                Op::Release(i) => {
                    if !book.held.is_empty() {
                        let i = i % book.held.len();
                        drop(book.held.swap_remove(i));
                    }
                }
                Op::Cancel(i) => {
                    if !book.pending.is_empty() {
                        let mut ids: Vec<usize> = book.pending.keys().copied().collect();
                        ids.sort_unstable();
                        let id = ids[i % ids.len()];
                        settle().await;
                        // It may have been answered meanwhile; only cancel a real waiter.
                        check(&mut book, &mut rx);
                        if let Some(p) = book.pending.remove(&id) {
                            p.handle.abort();
                            let _ = p.handle.await;
                            cancelled += 1;
                            // An answer sent just before the abort is drained (and dropped) here.
                            while let Ok((aid, res, _)) = rx.try_recv() {
                                if aid != id && book.pending.remove(&aid).is_some() {
                                    book.record(aid, res);
                                }
                            }
                        }
                    }
                }
                Op::Advance(ms) => {
                    // One millisecond at a time, so an answer's timestamp shows
                    // when it was given, not where a big jump landed.
                    for _ in 0..ms {
                        tokio::time::advance(Duration::from_millis(1)).await;
                        settle().await;
                        check(&mut book, &mut rx);
                    }
                }
            }
            settle().await;
            check(&mut book, &mut rx);
        }
        // Let every waiter reach its expiry.
        for _ in 0..max_wait + 200 {
            tokio::time::advance(Duration::from_millis(1)).await;
            settle().await;
            check(&mut book, &mut rx);
        }
        assert!(book.pending.is_empty(), "every ask answered");
        assert_eq!(
            book.answered.len() + cancelled,
            next_id,
            "each ask answered once or cancelled"
        );
        drop(book);
        settle().await;
        assert_eq!(q.in_flight(), 0);
        assert_eq!(q.len(), 0);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn queue_model_holds(
        limit in 1..4u32,
        rate in proptest::option::of((20.0..500.0f64, 1..3u32)),
        max_size in 0..5u32,
        max_wait in 5..80u64,
        discipline in discipline(),
        shed_predicted in proptest::bool::ANY,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        run_model(limit, rate, max_size, max_wait, discipline, shed_predicted, ops);
    }
}
