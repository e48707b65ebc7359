//! Every lifecycle event is also a `supervisor_events_total` counter.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cmd, controlled, events, send, take, until};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use supervisor::{Restart, SupervisorSpec};

#[derive(Default)]
struct Counting(Mutex<HashMap<String, Arc<Tally>>>);

#[derive(Default)]
struct Tally(AtomicU64);

impl CounterFn for Tally {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl Counting {
    fn get(&self, key: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |t| t.0.load(Ordering::Relaxed))
    }
}

impl Recorder for Counting {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let tally = self.0.lock().unwrap().entry(name).or_default().clone();
        Counter::from_arc(tally)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(start_paused = true)]
async fn lifecycle_events_are_counted_per_supervisor_child_and_event() {
    let recorder = Counting::default();
    // The paused-clock runtime is single-threaded, so a thread-local recorder
    // sees every task.
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (tx, mut rx) = events();
    let (a, ra) = controlled("a", Restart::Permanent);
    let handle = SupervisorSpec::new("root")
        .intensity(1, Duration::from_secs(10))
        .child(a)
        .start_with_events(tx);
    take(&mut rx, 1).await;

    send(&ra, Cmd::Panic);
    until(&mut rx, "a:started").await;
    send(&ra, Cmd::Fail);
    until(&mut rx, "root:gave_up").await;
    assert!(handle.wait().await.is_err());

    let count = |child: &str, event: &str| {
        recorder.get(&format!(
            "supervisor_events_total{{supervisor=root,child={child},event={event}}}"
        ))
    };
    assert_eq!(count("a", "started"), 2);
    assert_eq!(count("a", "panicked"), 1);
    assert_eq!(count("a", "restarting"), 1);
    assert_eq!(count("a", "exited"), 1);
    assert_eq!(count("root", "gave_up"), 1);
}
