//! `gen_server:call` with a monitor: callers get a reply or a typed error,
//! never a hang, and queued requests outlive worker restarts.

mod common;

use std::time::Duration;

use common::{events, take, until};
use supervisor::call::{self, Mailbox, ServerRef};
use supervisor::{CallError, ChildSpec, Restart, SupervisorSpec};
use tokio::time::Instant;

#[derive(Debug)]
enum Op {
    Double(u32),
    Add(u32),
    Total,
    Panic,
    Fail,
    Hang,
}

const T: Duration = Duration::from_secs(1);

/// A calculator server: a running total that resets on restart.
fn server(mailbox: Mailbox<Op, u32>) -> ChildSpec {
    ChildSpec::worker("calc", Restart::Permanent, move |ctx| {
        let mailbox = mailbox.clone();
        Box::pin(async move {
            let mut inbox = mailbox.take().await;
            let mut total = 0;
            loop {
                let req = tokio::select! {
                    () = ctx.cancelled() => return Ok(()),
                    req = inbox.recv() => match req {
                        Some(req) => req,
                        None => return Ok(()),
                    },
                };
                let reply = req.reply;
                match req.request {
                    Op::Double(n) => drop(reply.send(n * 2)),
                    Op::Add(n) => total += n,
                    Op::Total => drop(reply.send(total)),
                    Op::Panic => panic!("calc crashed"),
                    Op::Fail => return Err(supervisor::ChildError::new("calc failed")),
                    Op::Hang => {
                        let _held = reply;
                        std::future::pending::<()>().await;
                    }
                }
            }
        })
    })
}

fn calc_tree() -> (supervisor::SupervisorHandle, ServerRef<Op, u32>) {
    let (server_ref, mailbox) = call::channel(8);
    let handle = SupervisorSpec::new("root")
        .intensity(5, Duration::from_secs(10))
        .child(server(mailbox))
        .start();
    (handle, server_ref)
}

#[tokio::test(start_paused = true)]
async fn call_returns_the_workers_reply() {
    let (handle, calc) = calc_tree();
    assert_eq!(calc.call(Op::Double(21), T).await, Ok(42));
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn call_to_a_worker_that_panics_while_holding_it_returns_worker_died() {
    let (handle, calc) = calc_tree();
    assert_eq!(calc.call(Op::Panic, T).await, Err(CallError::WorkerDied));
    // The restarted worker serves the next caller.
    assert_eq!(calc.call(Op::Double(1), T).await, Ok(2));
    assert_eq!(handle.snapshot().children[0].restarts, 1);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn call_to_a_worker_that_returns_an_error_while_holding_it_returns_worker_died() {
    let (handle, calc) = calc_tree();
    assert_eq!(calc.call(Op::Fail, T).await, Err(CallError::WorkerDied));
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn queued_calls_survive_a_restart_and_are_served_by_the_new_worker() {
    let (tx, mut rx) = events();
    let (calc, mailbox) = call::channel(8);
    let handle = SupervisorSpec::new("root")
        .child(server(mailbox))
        .start_with_events(tx);
    take(&mut rx, 1).await;

    // All three are queued before the worker reads anything.
    let doomed = calc.try_call(Op::Panic).unwrap();
    let second = calc.try_call(Op::Double(2)).unwrap();
    let third = calc.try_call(Op::Double(3)).unwrap();

    assert_eq!(doomed.wait(T).await, Err(CallError::WorkerDied));
    assert_eq!(second.wait(T).await, Ok(4));
    assert_eq!(third.wait(T).await, Ok(6));
    assert_eq!(
        until(&mut rx, "calc:started").await,
        ["calc:panicked", "calc:restarting(1)", "calc:started"]
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn call_times_out_when_the_worker_holds_the_request_without_replying() {
    let (handle, calc) = calc_tree();
    let began = Instant::now();
    assert_eq!(calc.call(Op::Hang, T).await, Err(CallError::Timeout));
    assert_eq!(began.elapsed(), T);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn full_mailbox_rejects_at_once_without_waiting() {
    let (calc, _mailbox) = call::channel::<Op, u32>(1); // nobody reads it
    let _first = calc.try_call(Op::Double(1)).unwrap();
    let began = Instant::now();
    assert!(matches!(calc.try_call(Op::Double(2)), Err(CallError::Full)));
    assert_eq!(calc.call(Op::Double(3), T).await, Err(CallError::Full));
    assert_eq!(calc.cast(Op::Add(1)), Err(CallError::Full));
    assert_eq!(began.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn calls_get_stopped_once_every_mailbox_is_dropped() {
    let (calc, mailbox) = call::channel::<Op, u32>(4);
    let queued = calc.try_call(Op::Double(1)).unwrap();
    drop(mailbox);
    assert_eq!(queued.wait(T).await, Err(CallError::Stopped));
    assert_eq!(calc.call(Op::Double(1), T).await, Err(CallError::Stopped));
    assert!(calc.is_stopped());
}

#[tokio::test(start_paused = true)]
async fn queued_callers_get_stopped_when_the_tree_gives_up() {
    let (calc, mailbox) = call::channel(8);
    let handle = SupervisorSpec::new("root")
        .intensity(0, Duration::from_secs(10))
        .child(server(mailbox))
        .start();
    let doomed = calc.try_call(Op::Panic).unwrap();
    let waiting = calc.try_call(Op::Double(1)).unwrap();
    assert_eq!(doomed.wait(T).await, Err(CallError::WorkerDied));
    assert!(handle.wait().await.is_err());
    assert_eq!(waiting.wait(T).await, Err(CallError::Stopped));
}

#[tokio::test(start_paused = true)]
async fn casts_are_served_in_order_with_calls() {
    let (handle, calc) = calc_tree();
    calc.cast(Op::Add(2)).unwrap();
    calc.cast(Op::Add(3)).unwrap();
    assert_eq!(calc.call(Op::Total, T).await, Ok(5));
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_can_see_that_its_caller_gave_up() {
    let (calc, mailbox) = call::channel::<Op, u32>(4);
    let pending = calc.try_call(Op::Double(1)).unwrap();
    assert_eq!(
        pending.wait(Duration::from_millis(1)).await,
        Err(CallError::Timeout)
    );
    let mut inbox = mailbox.take().await;
    let req = inbox.recv().await.unwrap();
    assert!(req.reply.is_closed());
    assert!(!req.reply.send(2));
}

#[tokio::test(start_paused = true)]
async fn call_held_by_a_worker_aborted_after_its_grace_returns_worker_died() {
    let (handle, calc) = calc_tree();
    let held = calc.try_call(Op::Hang).unwrap();
    tokio::task::yield_now().await; // let the worker pick it up
    let began = Instant::now();
    handle.request_shutdown();
    assert_eq!(
        held.wait(Duration::from_secs(60)).await,
        Err(CallError::WorkerDied)
    );
    assert_eq!(began.elapsed(), supervisor::spec::DEFAULT_WORKER_GRACE);
}

#[tokio::test(start_paused = true)]
async fn a_pool_of_workers_can_share_one_mailbox() {
    let (calc, mailbox) = call::channel::<Op, u32>(8);
    let workers: Vec<ChildSpec> = (0..3)
        .map(|i| {
            let mailbox = mailbox.clone();
            ChildSpec::worker(format!("w{i}"), Restart::Permanent, move |_ctx| {
                let mailbox = mailbox.clone();
                Box::pin(async move {
                    while let Some(req) = mailbox.recv().await {
                        if let Op::Double(n) = req.request {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            req.reply.send(n * 2);
                        }
                    }
                    Ok(())
                })
            })
        })
        .collect();
    drop(mailbox);
    let handle = workers
        .into_iter()
        .fold(SupervisorSpec::new("auth"), SupervisorSpec::child)
        .start();
    let began = Instant::now();
    let replies =
        futures_util::future::join_all((1..=3).map(|n| calc.call(Op::Double(n), T * 5))).await;
    assert_eq!(replies, [Ok(2), Ok(4), Ok(6)]);
    // Served in parallel: three one-second jobs took one second.
    assert_eq!(began.elapsed(), T);
    handle.shutdown().await;
}
