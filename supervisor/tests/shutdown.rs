//! Ordered shutdown: reverse start order, each child within its grace.

mod common;

use std::time::Duration;

use common::{Cmd, controlled, events, send, stubborn, take, until};
use supervisor::{ChildSpec, ChildState, Restart, Strategy, SupervisorSpec};
use tokio::time::Instant;

/// Returns `Ok` one virtual second after being asked to stop.
fn slow_to_stop(name: &str) -> ChildSpec {
    ChildSpec::worker(name, Restart::Permanent, |ctx| {
        Box::pin(async move {
            ctx.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(())
        })
    })
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_children_in_reverse_start_order_through_nested_supervisors() {
    let (tx, mut rx) = events();
    let (a, _ra) = controlled("a", Restart::Permanent);
    let (x, _rx) = controlled("x", Restart::Permanent);
    let (y, _ry) = controlled("y", Restart::Permanent);
    let (b, _rb) = controlled("b", Restart::Permanent);
    let handle = SupervisorSpec::new("root")
        .child(a)
        .child(ChildSpec::supervisor(
            SupervisorSpec::new("inner").child(x).child(y),
        ))
        .child(b)
        .start_with_events(tx);
    take(&mut rx, 5).await;

    handle.shutdown().await;
    assert_eq!(
        take(&mut rx, 5).await,
        [
            "b:exited(shutdown)",
            "y:exited(shutdown)",
            "x:exited(shutdown)",
            "inner:exited(shutdown)",
            "a:exited(shutdown)",
        ]
    );
    assert_eq!(handle.wait().await, Ok(()));
    let snap = handle.snapshot();
    assert_eq!(snap.state, ChildState::Stopped);
    assert!(
        snap.find("y")
            .is_some_and(|y| y.state == ChildState::Stopped)
    );
}

#[tokio::test(start_paused = true)]
async fn child_ignoring_cancel_is_aborted_after_its_grace() {
    let (tx, mut rx) = events();
    let (a, _ra) = controlled("a", Restart::Permanent);
    let handle = SupervisorSpec::new("root")
        .child(a)
        .child(stubborn("deaf").shutdown_grace(Duration::from_secs(2)))
        .start_with_events(tx);
    take(&mut rx, 2).await;

    let began = Instant::now();
    handle.shutdown().await;
    assert_eq!(began.elapsed(), Duration::from_secs(2));
    assert_eq!(
        take(&mut rx, 2).await,
        ["deaf:exited(killed)", "a:exited(shutdown)"]
    );
}

#[tokio::test(start_paused = true)]
async fn workers_get_the_otp_default_grace_of_five_seconds() {
    let handle = SupervisorSpec::new("root").child(stubborn("deaf")).start();
    let began = Instant::now();
    handle.shutdown().await;
    assert_eq!(began.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn cooperative_child_is_waited_for_within_its_grace() {
    let (tx, mut rx) = events();
    let handle = SupervisorSpec::new("root")
        .child(slow_to_stop("slow").shutdown_grace(Duration::from_secs(10)))
        .start_with_events(tx);
    take(&mut rx, 1).await;

    let began = Instant::now();
    handle.shutdown().await;
    assert_eq!(began.elapsed(), Duration::from_secs(1));
    assert_eq!(take(&mut rx, 1).await, ["slow:exited(shutdown)"]);
}

#[tokio::test(start_paused = true)]
async fn graces_add_up_because_children_stop_one_at_a_time() {
    let handle = SupervisorSpec::new("root")
        .child(slow_to_stop("one"))
        .child(slow_to_stop("two"))
        .start();
    let began = Instant::now();
    handle.shutdown().await;
    assert_eq!(began.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn group_restart_aborts_a_stubborn_sibling_after_its_grace() {
    let (tx, mut rx) = events();
    let (a, ra) = controlled("a", Restart::Permanent);
    let handle = SupervisorSpec::new("root")
        .strategy(Strategy::OneForAll)
        .child(a)
        .child(stubborn("deaf").shutdown_grace(Duration::from_millis(300)))
        .start_with_events(tx);
    take(&mut rx, 2).await;

    send(&ra, Cmd::Fail);
    let began = Instant::now();
    assert_eq!(
        until(&mut rx, "deaf:started").await,
        [
            "a:exited(error)",
            "deaf:exited(killed)",
            "a:restarting(1)",
            "deaf:restarting(1)",
            "a:started",
            "deaf:started",
        ]
    );
    assert_eq!(began.elapsed(), Duration::from_millis(300));
    handle.request_shutdown();
    assert_eq!(handle.wait().await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn every_handle_clone_sees_the_same_shutdown() {
    let handle = SupervisorSpec::new("root")
        .child(slow_to_stop("slow"))
        .start();
    let other = handle.clone();
    let waiter = tokio::spawn(async move { other.wait().await });
    handle.shutdown().await;
    handle.shutdown().await; // a second shutdown is a no-op
    assert_eq!(waiter.await.unwrap(), Ok(()));
    assert!(handle.is_finished());
}
