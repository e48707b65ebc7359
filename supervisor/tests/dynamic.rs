//! Dynamic pools: children started at run time through a handle.

mod common;

use std::time::Duration;

use common::{Cmd, controlled, events, next, render, send, take, until};
use supervisor::{ChildSpec, ChildState, Restart, StartChildError, SupervisorSpec};
use tokio::time::Instant;

fn slow_to_stop(name: &str) -> ChildSpec {
    ChildSpec::worker(name, Restart::Temporary, |ctx| {
        Box::pin(async move {
            ctx.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(())
        })
    })
}

#[tokio::test(start_paused = true)]
async fn pool_starts_children_at_run_time_and_forgets_temporary_ones_that_end() {
    let (tx, mut rx) = events();
    let (spec, pool) = SupervisorSpec::new("conns").dynamic(16);
    let handle = spec.start_with_events(tx);

    let mut remotes = Vec::new();
    for _ in 0..3 {
        let (child, remote) = controlled("conn", Restart::Temporary);
        pool.start_child(child).await.unwrap();
        remotes.push(remote);
    }
    assert_eq!(pool.len(), 3);
    assert_eq!(handle.snapshot().children.len(), 3);

    send(&remotes[1], Cmd::Panic);
    until(&mut rx, "conn:panicked").await;
    assert_eq!(pool.len(), 2);
    assert_eq!(handle.snapshot().children.len(), 2);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn pool_restarts_a_failed_permanent_child_alone() {
    let (tx, mut rx) = events();
    let (spec, pool) = SupervisorSpec::new("shards").dynamic(16);
    let handle = spec.start_with_events(tx);
    let (a, ra) = controlled("a", Restart::Permanent);
    let (b, _rb) = controlled("b", Restart::Permanent);
    pool.start_child(a).await.unwrap();
    pool.start_child(b).await.unwrap();
    take(&mut rx, 2).await;

    send(&ra, Cmd::Fail);
    assert_eq!(
        take(&mut rx, 3).await,
        ["a:exited(error)", "a:restarting(1)", "a:started"]
    );
    let restarts: Vec<u64> = handle
        .snapshot()
        .children
        .iter()
        .map(|c| c.restarts)
        .collect();
    assert_eq!(restarts, [1, 0]);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn terminate_child_stops_it_and_forgets_it() {
    let (tx, mut rx) = events();
    let (spec, pool) = SupervisorSpec::new("conns").dynamic(16);
    let handle = spec.start_with_events(tx);
    let (a, _ra) = controlled("a", Restart::Permanent);
    let id = pool.start_child(a).await.unwrap();
    take(&mut rx, 1).await;

    assert_eq!(pool.terminate_child(id).await, Ok(()));
    assert_eq!(take(&mut rx, 1).await, ["a:exited(shutdown)"]);
    assert!(pool.is_empty());
    assert_eq!(
        pool.terminate_child(id).await,
        Err(StartChildError::NoSuchChild)
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn pool_children_stop_together_on_shutdown_not_one_by_one() {
    let (spec, pool) = SupervisorSpec::new("conns").dynamic(16);
    let handle = spec.start();
    for _ in 0..3 {
        pool.start_child(slow_to_stop("conn")).await.unwrap();
    }
    let began = Instant::now();
    handle.shutdown().await;
    assert_eq!(began.elapsed(), Duration::from_secs(1));
    assert!(pool.is_empty());
}

#[tokio::test(start_paused = true)]
async fn pool_handle_keeps_working_after_its_parent_restarts_the_pool() {
    let (tx, mut rx) = events();
    let (spec, pool) = SupervisorSpec::new("pool")
        .intensity(0, Duration::from_secs(5))
        .dynamic(16);
    let handle = SupervisorSpec::new("root")
        .intensity(3, Duration::from_secs(5))
        .child(ChildSpec::supervisor(spec))
        .start_with_events(tx);
    take(&mut rx, 1).await;

    let (a, ra) = controlled("a", Restart::Permanent);
    pool.start_child(a).await.unwrap();
    send(&ra, Cmd::Fail);
    assert_eq!(
        until(&mut rx, "pool:started").await,
        [
            "a:started",
            "a:exited(error)",
            "pool:gave_up",
            "pool:exited(error)",
            "pool:restarting(1)",
            "pool:started"
        ]
    );
    // Run-time children are not restarted with the pool, as in OTP.
    assert!(pool.is_empty());
    let (b, _rb) = controlled("b", Restart::Permanent);
    pool.start_child(b).await.unwrap();
    assert_eq!(render(&next(&mut rx).await), "b:started");
    let snap = handle.snapshot();
    assert_eq!(snap.find("pool").unwrap().restarts, 1);
    assert!(snap.find("b").is_some() && snap.find("a").is_none());
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn start_child_on_a_stopped_pool_is_refused() {
    let (spec, pool) = SupervisorSpec::new("conns").dynamic(16);
    let handle = spec.start();
    handle.shutdown().await;
    drop(handle);
    let (a, _ra) = controlled("a", Restart::Temporary);
    // The stopped incarnation answers nothing; the spec (and its queue) is gone.
    assert_eq!(pool.start_child(a).await, Err(StartChildError::NotRunning));
}

#[tokio::test(start_paused = true)]
async fn full_pool_queue_is_refused_at_once() {
    let (spec, pool) = SupervisorSpec::new("conns").dynamic(1);
    let handle = spec.start();
    let (a, _ra) = controlled("a", Restart::Temporary);
    let (b, _rb) = controlled("b", Restart::Temporary);
    // Both requests are made before the pool's task gets to run.
    let first = pool.start_child(a);
    let second = pool.start_child(b);
    let (first, second) = tokio::join!(first, second);
    assert!(first.is_ok());
    assert_eq!(second, Err(StartChildError::Busy));
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn snapshot_of_a_large_pool_lists_up_to_the_limit_then_summarises() {
    let (spec, pool) = SupervisorSpec::new("conns")
        .snapshot_limit(100)
        .dynamic(512);
    let handle = SupervisorSpec::new("root")
        .child(ChildSpec::supervisor(spec))
        .start();
    let mut remotes = Vec::new();
    for _ in 0..250 {
        let (c, remote) = controlled("conn", Restart::Temporary);
        pool.start_child(c).await.unwrap();
        remotes.push(remote); // dropping it would end the worker
    }
    let snap = handle.snapshot();
    let conns = snap.find("conns").unwrap();
    assert_eq!(conns.children.len(), 101);
    let summary = conns.children.last().unwrap();
    assert_eq!(summary.name, "+150 more");
    assert_eq!(summary.state, ChildState::Summary);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn pool_children_sort_after_static_children() {
    let (s, _rs) = controlled("static", Restart::Permanent);
    let (spec, pool) = SupervisorSpec::new("mixed").child(s).dynamic(4);
    let handle = spec.start();
    let (d, _rd) = controlled("dynamic", Restart::Temporary);
    pool.start_child(d).await.unwrap();
    let names: Vec<String> = handle
        .snapshot()
        .children
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["static", "dynamic"]);
    handle.shutdown().await;
}
