//! Each strategy restarts the right children in the right order, and each
//! restart type follows its rule.

mod common;

use std::time::Duration;

use common::{Cmd, controlled, events, send, take, until};
use supervisor::{EventKind, Restart, Strategy, SupervisorSpec};

fn three(strategy: Strategy) -> (SupervisorSpec, [common::Remote; 3]) {
    let (a, ra) = controlled("a", Restart::Permanent);
    let (b, rb) = controlled("b", Restart::Permanent);
    let (c, rc) = controlled("c", Restart::Permanent);
    let spec = SupervisorSpec::new("root")
        .strategy(strategy)
        .intensity(10, Duration::from_secs(10))
        .child(a)
        .child(b)
        .child(c);
    (spec, [ra, rb, rc])
}

#[tokio::test(start_paused = true)]
async fn children_start_in_spec_order() {
    let (tx, mut rx) = events();
    let (spec, _remotes) = three(Strategy::OneForOne);
    let handle = spec.start_with_events(tx);
    assert_eq!(
        take(&mut rx, 3).await,
        ["a:started", "b:started", "c:started"]
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_failed_child() {
    let (tx, mut rx) = events();
    let (spec, [_ra, rb, _rc]) = three(Strategy::OneForOne);
    let handle = spec.start_with_events(tx);
    take(&mut rx, 3).await;

    send(&rb, Cmd::Fail);
    assert_eq!(
        take(&mut rx, 3).await,
        ["b:exited(error)", "b:restarting(1)", "b:started"]
    );
    let snap = handle.snapshot();
    let restarts: Vec<u64> = snap.children.iter().map(|c| c.restarts).collect();
    assert_eq!(restarts, [0, 1, 0]);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_for_all_stops_siblings_newest_first_then_restarts_all_in_start_order() {
    let (tx, mut rx) = events();
    let (spec, [_ra, rb, _rc]) = three(Strategy::OneForAll);
    let handle = spec.start_with_events(tx);
    take(&mut rx, 3).await;

    send(&rb, Cmd::Fail);
    assert_eq!(
        until(&mut rx, "c:started").await,
        [
            "b:exited(error)",
            "c:exited(shutdown)",
            "a:exited(shutdown)",
            "a:restarting(1)",
            "b:restarting(1)",
            "c:restarting(1)",
            "a:started",
            "b:started",
            "c:started",
        ]
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_later_siblings_in_start_order() {
    let (tx, mut rx) = events();
    let (spec, [_ra, rb, _rc]) = three(Strategy::RestForOne);
    let handle = spec.start_with_events(tx);
    take(&mut rx, 3).await;

    send(&rb, Cmd::Panic);
    assert_eq!(
        until(&mut rx, "c:started").await,
        [
            "b:panicked",
            "c:exited(shutdown)",
            "b:restarting(1)",
            "c:restarting(1)",
            "b:started",
            "c:started",
        ]
    );
    let a = handle.snapshot().children[0].clone();
    assert_eq!((a.name.as_str(), a.restarts), ("a", 0));
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn panic_is_reported_with_its_message() {
    let (tx, mut rx) = events();
    let (a, ra) = controlled("a", Restart::Permanent);
    let handle = SupervisorSpec::new("root").child(a).start_with_events(tx);
    take(&mut rx, 1).await;

    send(&ra, Cmd::Panic);
    let event = common::next(&mut rx).await;
    assert_eq!(
        event.kind,
        EventKind::Panicked {
            message: "told to panic".to_owned()
        }
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn permanent_child_is_restarted_even_after_a_normal_exit() {
    let (tx, mut rx) = events();
    let (a, ra) = controlled("a", Restart::Permanent);
    let handle = SupervisorSpec::new("root").child(a).start_with_events(tx);
    take(&mut rx, 1).await;

    send(&ra, Cmd::Exit);
    assert_eq!(
        take(&mut rx, 3).await,
        ["a:exited(normal)", "a:restarting(1)", "a:started"]
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn transient_child_is_restarted_after_an_error_but_not_after_a_normal_exit() {
    let (tx, mut rx) = events();
    let (t, rt) = controlled("t", Restart::Transient);
    let (marker, rm) = controlled("marker", Restart::Permanent);
    let handle = SupervisorSpec::new("root")
        .intensity(10, Duration::from_secs(10))
        .child(t)
        .child(marker)
        .start_with_events(tx);
    take(&mut rx, 2).await;

    send(&rt, Cmd::Fail);
    assert_eq!(
        take(&mut rx, 3).await,
        ["t:exited(error)", "t:restarting(1)", "t:started"]
    );
    send(&rt, Cmd::Exit);
    // The marker's restart proves the supervisor moved on without restarting t.
    send(&rm, Cmd::Fail);
    assert_eq!(
        take(&mut rx, 4).await,
        [
            "t:exited(normal)",
            "marker:exited(error)",
            "marker:restarting(1)",
            "marker:started"
        ]
    );
    assert_eq!(
        handle.snapshot().children[0].state,
        supervisor::ChildState::Stopped
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn temporary_child_is_never_restarted_and_shows_failed() {
    let (tx, mut rx) = events();
    let (t, rt) = controlled("t", Restart::Temporary);
    let (m, rm) = controlled("marker", Restart::Permanent);
    let handle = SupervisorSpec::new("root")
        .child(t)
        .child(m)
        .start_with_events(tx);
    take(&mut rx, 2).await;

    send(&rt, Cmd::Panic);
    send(&rm, Cmd::Fail);
    assert_eq!(
        take(&mut rx, 4).await,
        [
            "t:panicked",
            "marker:exited(error)",
            "marker:restarting(1)",
            "marker:started"
        ]
    );
    let t = handle.snapshot().children[0].clone();
    assert_eq!((t.state, t.restarts), (supervisor::ChildState::Failed, 0));
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_for_all_does_not_restart_temporary_siblings() {
    let (tx, mut rx) = events();
    let (a, ra) = controlled("a", Restart::Permanent);
    let (t, _rt) = controlled("t", Restart::Temporary);
    let handle = SupervisorSpec::new("root")
        .strategy(Strategy::OneForAll)
        .child(a)
        .child(t)
        .start_with_events(tx);
    take(&mut rx, 2).await;

    send(&ra, Cmd::Fail);
    assert_eq!(
        take(&mut rx, 4).await,
        [
            "a:exited(error)",
            "t:exited(shutdown)",
            "a:restarting(1)",
            "a:started"
        ]
    );
    assert_eq!(
        handle.snapshot().children[1].state,
        supervisor::ChildState::Stopped
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_factory_that_panics_is_treated_like_a_panicking_child() {
    let (tx, mut rx) = events();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = attempts.clone();
    let flaky = supervisor::ChildSpec::worker("flaky", Restart::Permanent, move |ctx| {
        // Only the first build fails, before any future exists.
        assert!(
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0,
            "bad config"
        );
        Box::pin(async move {
            ctx.cancelled().await;
            Ok(())
        })
    });
    let handle = SupervisorSpec::new("root")
        .child(flaky)
        .start_with_events(tx);
    assert_eq!(
        take(&mut rx, 4).await,
        [
            "flaky:started",
            "flaky:panicked",
            "flaky:restarting(1)",
            "flaky:started"
        ]
    );
    handle.shutdown().await;
    assert_eq!(handle.wait().await, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_on_the_last_child_restarts_only_it() {
    let (tx, mut rx) = events();
    let (spec, [_ra, _rb, rc]) = three(Strategy::RestForOne);
    let handle = spec.start_with_events(tx);
    take(&mut rx, 3).await;

    send(&rc, Cmd::Fail);
    assert_eq!(
        take(&mut rx, 3).await,
        ["c:exited(error)", "c:restarting(1)", "c:started"]
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn handle_subscribers_see_events_from_the_moment_they_subscribe() {
    let (spec, [ra, _rb, _rc]) = three(Strategy::OneForOne);
    let handle = spec.start();
    let mut rx = handle.subscribe();
    send(&ra, Cmd::Exit);
    assert_eq!(
        take(&mut rx, 3).await,
        ["a:exited(normal)", "a:restarting(1)", "a:started"]
    );
    handle.shutdown().await;
}
