//! Restart intensity, escalation to the parent, and backoff.

mod common;

use std::time::Duration;

use common::{Cmd, controlled, events, next, render, send, take, until};
use supervisor::{ChildSpec, ChildState, EventKind, Restart, SupervisorSpec};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn exceeding_intensity_stops_children_and_root_wait_returns_the_reason() {
    let (tx, mut rx) = events();
    let (a, ra) = controlled("a", Restart::Permanent);
    let (b, _rb) = controlled("b", Restart::Permanent);
    let handle = SupervisorSpec::new("root")
        .intensity(2, Duration::from_secs(10))
        .child(a)
        .child(b)
        .start_with_events(tx);
    take(&mut rx, 2).await;

    for _ in 0..2 {
        send(&ra, Cmd::Fail);
        until(&mut rx, "a:started").await;
    }
    send(&ra, Cmd::Fail);
    assert_eq!(
        take(&mut rx, 3).await,
        ["a:exited(error)", "b:exited(shutdown)", "root:gave_up"]
    );
    let err = handle.wait().await.unwrap_err();
    assert_eq!(err.supervisor, "root");
    assert!(
        err.reason.contains("child 'a' failed: told to fail") && err.reason.contains("more than 2"),
        "{err}"
    );
    assert_eq!(handle.snapshot().state, ChildState::Failed);
}

#[tokio::test(start_paused = true)]
async fn restarts_spread_wider_than_the_period_never_give_up() {
    let (tx, mut rx) = events();
    let (a, ra) = controlled("a", Restart::Permanent);
    let handle = SupervisorSpec::new("root")
        .intensity(1, Duration::from_secs(5))
        .child(a)
        .start_with_events(tx);
    take(&mut rx, 1).await;

    for _ in 0..5 {
        send(&ra, Cmd::Fail);
        until(&mut rx, "a:started").await;
        tokio::time::sleep(Duration::from_secs(6)).await; // let the window slide
    }
    assert!(!handle.is_finished());
    assert_eq!(handle.snapshot().children[0].restarts, 5);
    handle.shutdown().await;
    assert!(handle.wait().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn nested_supervisor_that_gives_up_is_restarted_by_its_parent() {
    let (tx, mut rx) = events();
    let (w, rw) = controlled("w", Restart::Permanent);
    let (s, _rs) = controlled("sibling", Restart::Permanent);
    let inner = SupervisorSpec::new("inner")
        .intensity(0, Duration::from_secs(5))
        .child(w);
    let handle = SupervisorSpec::new("root")
        .intensity(3, Duration::from_secs(5))
        .child(s)
        .child(ChildSpec::supervisor(inner))
        .start_with_events(tx);
    // A nested supervisor starts its own children before it counts as started.
    assert_eq!(
        take(&mut rx, 3).await,
        ["sibling:started", "w:started", "inner:started"]
    );

    send(&rw, Cmd::Fail);
    let w_exit = next(&mut rx).await;
    assert_eq!(&*w_exit.supervisor, "root/inner");
    assert_eq!(
        take(&mut rx, 5).await,
        [
            "inner:gave_up",
            "inner:exited(error)",
            "inner:restarting(1)",
            "w:started",
            "inner:started",
        ]
    );
    let snap = handle.snapshot();
    let inner = snap.find("inner").unwrap();
    assert_eq!((inner.state, inner.restarts), (ChildState::Running, 1));
    assert_eq!(snap.find("sibling").unwrap().restarts, 0);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn escalation_through_every_level_fails_the_root_with_the_whole_story() {
    let (tx, mut rx) = events();
    let (w, rw) = controlled("w", Restart::Permanent);
    let leaf = SupervisorSpec::new("leaf")
        .intensity(0, Duration::from_secs(5))
        .child(w);
    let mid = SupervisorSpec::new("mid")
        .intensity(0, Duration::from_secs(5))
        .child(ChildSpec::supervisor(leaf));
    let handle = SupervisorSpec::new("root")
        .intensity(0, Duration::from_secs(5))
        .child(ChildSpec::supervisor(mid))
        .start_with_events(tx);
    take(&mut rx, 3).await;

    send(&rw, Cmd::Panic);
    let story = until(&mut rx, "root:gave_up").await;
    assert_eq!(
        story,
        [
            "w:panicked",
            "leaf:gave_up",
            "leaf:exited(error)",
            "mid:gave_up",
            "mid:exited(error)",
            "root:gave_up"
        ]
    );
    let err = handle.wait().await.unwrap_err();
    assert!(err.reason.contains("'mid'"), "{err}");
    assert!(err.reason.contains("'leaf'"), "{err}");
    assert!(err.reason.contains("panicked: told to panic"), "{err}");
    assert_eq!(
        handle.snapshot().find("mid").unwrap().state,
        ChildState::Failed
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_restarts_exponentially_up_to_the_cap() {
    let (tx, mut rx) = events();
    let (a, ra) = controlled("a", Restart::Permanent);
    let handle = SupervisorSpec::new("root")
        .intensity(10, Duration::from_secs(60))
        .backoff(Duration::from_millis(100), Duration::from_millis(300))
        .child(a)
        .start_with_events(tx);
    take(&mut rx, 1).await;

    let mut delays = Vec::new();
    for _ in 0..4 {
        send(&ra, Cmd::Fail);
        let failed_at = loop {
            let e = next(&mut rx).await;
            if let EventKind::Restarting { .. } = e.kind {
                break Instant::now();
            }
        };
        assert_eq!(handle.snapshot().children[0].state, ChildState::Restarting);
        let e = next(&mut rx).await;
        assert_eq!(render(&e), "a:started");
        delays.push(Instant::now() - failed_at);
    }
    assert_eq!(
        delays,
        [100, 200, 300, 300].map(Duration::from_millis).to_vec()
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restart_event_carries_attempt_and_delay() {
    let (tx, mut rx) = events();
    let (a, ra) = controlled("a", Restart::Permanent);
    let handle = SupervisorSpec::new("root")
        .intensity(10, Duration::from_secs(60))
        .backoff(Duration::from_millis(50), Duration::from_secs(1))
        .child(a)
        .start_with_events(tx);
    take(&mut rx, 1).await;
    send(&ra, Cmd::Fail);
    next(&mut rx).await;
    assert_eq!(
        next(&mut rx).await.kind,
        EventKind::Restarting {
            attempt: 1,
            delay: Duration::from_millis(50)
        }
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_backoff_cancels_the_pending_restart() {
    let (tx, mut rx) = events();
    let (a, ra) = controlled("a", Restart::Permanent);
    let handle = SupervisorSpec::new("root")
        .backoff(Duration::from_secs(30), Duration::from_secs(30))
        .child(a)
        .start_with_events(tx);
    take(&mut rx, 1).await;

    send(&ra, Cmd::Fail);
    assert_eq!(
        take(&mut rx, 2).await,
        ["a:exited(error)", "a:restarting(1)"]
    );
    let began = Instant::now();
    handle.shutdown().await;
    assert_eq!(began.elapsed(), Duration::ZERO);
    assert_eq!(handle.snapshot().children[0].state, ChildState::Stopped);
    assert!(rx.try_recv().is_err(), "nothing was started after shutdown");
}
