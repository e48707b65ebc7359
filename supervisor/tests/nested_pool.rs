//! A dynamic pool nested under a static supervisor lists its children.

use std::time::Duration;

use supervisor::{ChildSpec, Restart, SupervisorSpec};

#[tokio::test(start_paused = true)]
async fn nested_pool_children_show_in_the_root_snapshot() {
    let (pool_spec, pool) = SupervisorSpec::new("pool").dynamic(16);
    let root = SupervisorSpec::new("root")
        .child(ChildSpec::supervisor(pool_spec))
        .start();
    for _ in 0..2 {
        pool.start_child(ChildSpec::worker("conn", Restart::Temporary, |ctx| {
            Box::pin(async move {
                ctx.cancelled().await;
                Ok(())
            })
        }))
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let snap = root.snapshot();
    assert_eq!(pool.len(), 2);
    assert_eq!(snap.children[0].children.len(), 2, "{snap:?}");
    root.shutdown().await;
}
