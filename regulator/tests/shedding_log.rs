//! Log lines only when a queue starts or stops shedding.
//!
//! Alone in its test binary: tracing caches each call site's interest, and
//! a test on another thread that logs the same line first, with no
//! subscriber, can leave it cached as "never" for this test's scoped one
//! (beside the metrics test it failed that way in a few runs of 200).

use std::sync::Arc;

use regulator::{QueueConfig, Request};
use tokio::time::sleep;

mod common;
use common::*;

/// Collects the messages of tracing events.
#[derive(Clone, Default)]
struct Messages(Arc<std::sync::Mutex<Vec<String>>>);

struct MessageVisitor<'a>(&'a mut String);

impl tracing::field::Visit for MessageVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Messages {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut m = String::new();
        event.record(&mut MessageVisitor(&mut m));
        self.0.lock().unwrap().push(m);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(start_paused = true)]
async fn logs_only_when_shedding_starts_and_stops() {
    let messages = Messages::default();
    let _guard = tracing::subscriber::set_default(messages.clone());
    let (_r, q) = one(QueueConfig {
        max_concurrency: Some(1),
        max_size: 0,
        ..QueueConfig::default()
    });
    let hold = q.ask(Request::new()).await.unwrap();
    for _ in 0..1000 {
        assert!(q.ask(Request::new()).await.is_err());
    }
    assert_eq!(
        *messages.0.lock().unwrap(),
        ["regulator queue started shedding"]
    );
    drop(hold);
    sleep(ms(1_000)).await;
    let _p = q.ask(Request::new()).await.unwrap();
    assert_eq!(
        *messages.0.lock().unwrap(),
        [
            "regulator queue started shedding",
            "regulator queue stopped shedding"
        ]
    );
}
