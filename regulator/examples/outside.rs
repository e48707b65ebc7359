//! The README's example: the crate used from plain tokio and through tower.
//! Run with `cargo run -p regulator --example outside`.

use regulator::{QueueConfig, Regulator, RegulatorConfig, RegulatorLayer, Request};
use std::time::Duration;
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() {
    let mut cfg = RegulatorConfig::default();
    cfg.queues.insert(
        "db".into(),
        QueueConfig {
            max_concurrency: Some(8),
            max_size: 32,
            max_wait_ms: 200,
            ..QueueConfig::default()
        },
    );
    let reg = Regulator::new(cfg).expect("valid config");
    // Optional: CPU and scheduler-delay samplers plus the modifier loop.
    let _feedback = reg.spawn_feedback(Duration::from_secs(1));

    // Plain tokio: a permit around the work, or `run`.
    match reg
        .ask(
            "db",
            Request::new().key(42).timeout(Duration::from_millis(300)),
        )
        .await
    {
        Ok(_permit) => { /* do the work; the permit is released on drop */ }
        Err(rejected) => eprintln!(
            "busy: {rejected} (retry in {} ms)",
            rejected.retry_after_ms()
        ),
    }
    let out = reg.run("db", Request::new(), async { 6 * 7 }).await;
    assert_eq!(out, Ok(42));

    // Any tower service behind the same queue.
    let svc = tower::service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x + 1) });
    let svc = RegulatorLayer::new(reg.clone(), "db")
        .with_classifier(|x: &u32| Request::new().key(u64::from(*x)))
        .layer(svc);
    match svc.oneshot(1).await {
        Ok(v) => assert_eq!(v, 2),
        Err(e) => {
            // `RegulatedError::Rejected(Rejected)` or `RegulatedError::Inner(e)`.
            if let Some(r) = e.rejected() {
                eprintln!("503, Retry-After: {}", r.retry_after_ms());
            }
        }
    }
}
