//! The live tree as `GET /admin/tree` serves it.

mod common;

use std::time::Duration;

use common::{Cmd, controlled, events, send, take, until};
use serde_json::json;
use supervisor::{ChildSpec, ChildState, Restart, SupervisorHandle, SupervisorSpec};

#[test]
fn handle_is_cheap_to_share_with_http_handlers() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<SupervisorHandle>();
}

#[tokio::test(start_paused = true)]
async fn snapshot_reflects_restarts_and_states_across_the_tree() {
    let (tx, mut rx) = events();
    let (store, _rstore) = controlled("store", Restart::Permanent);
    let (s0, _r0) = controlled("shard-0", Restart::Permanent);
    let (s1, r1) = controlled("shard-1", Restart::Permanent);
    let (job, rjob) = controlled("job", Restart::Transient);
    let handle = SupervisorSpec::new("root")
        .child(store)
        .child(ChildSpec::supervisor(
            SupervisorSpec::new("messaging")
                .intensity(5, Duration::from_secs(10))
                .child(s0)
                .child(s1),
        ))
        .child(job)
        .start_with_events(tx);
    take(&mut rx, 5).await;

    for _ in 0..2 {
        send(&r1, Cmd::Panic);
        until(&mut rx, "shard-1:started").await;
    }
    send(&rjob, Cmd::Exit);
    until(&mut rx, "job:exited(normal)").await;

    let worker = |name: &str, state: &str, restarts: u64| json!({"name": name, "kind": "worker", "state": state, "restarts": restarts, "children": []});
    assert_eq!(
        serde_json::to_value(handle.snapshot()).unwrap(),
        json!({
            "name": "root", "kind": "supervisor", "state": "running", "restarts": 0,
            "children": [
                worker("store", "running", 0),
                {"name": "messaging", "kind": "supervisor", "state": "running", "restarts": 0,
                 "children": [worker("shard-0", "running", 0), worker("shard-1", "running", 2)]},
                worker("job", "stopped", 0),
            ]
        })
    );

    handle.shutdown().await;
    let snap = handle.snapshot();
    assert_eq!(snap.state, ChildState::Stopped);
    assert_eq!(snap.find("shard-1").unwrap().state, ChildState::Stopped);
    assert_eq!(snap.find("shard-1").unwrap().restarts, 2);
}

#[tokio::test(start_paused = true)]
async fn snapshot_shows_a_child_stopping_while_it_uses_its_grace() {
    let handle = SupervisorSpec::new("root")
        .child(ChildSpec::worker("slow", Restart::Permanent, |ctx| {
            Box::pin(async move {
                ctx.cancelled().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(())
            })
        }))
        .start();
    let stopper = handle.clone();
    let stopping = tokio::spawn(async move { stopper.shutdown().await });
    // Move the paused clock to the middle of the child's one-second stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(handle.snapshot().children[0].state, ChildState::Stopping);
    stopping.await.unwrap();
    assert_eq!(handle.snapshot().children[0].state, ChildState::Stopped);
}
