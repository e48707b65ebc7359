//! Telemetry: metrics by queue and reason (the log lines are in
//! `shedding_log.rs`).

use std::sync::Arc;

use regulator::{QueueConfig, Reason, Regulator, RegulatorConfig, Request};

/// A `metrics` recorder keeping counter values by `name{label=value,...}`.
#[derive(Default)]
struct Recorded {
    counters: std::sync::Mutex<std::collections::HashMap<String, Arc<CounterCell>>>,
}

#[derive(Default)]
struct CounterCell(std::sync::atomic::AtomicU64);

impl metrics::CounterFn for CounterCell {
    fn increment(&self, v: u64) {
        self.0.fetch_add(v, std::sync::atomic::Ordering::Relaxed);
    }
    fn absolute(&self, v: u64) {
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }
}

fn key_string(key: &metrics::Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl metrics::Recorder for Recorded {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let cell = Arc::clone(
            self.counters
                .lock()
                .unwrap()
                .entry(key_string(key))
                .or_default(),
        );
        metrics::Counter::from_arc(cell)
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[tokio::test(start_paused = true)]
async fn decisions_are_counted_by_queue_and_reason() {
    let recorded = Recorded::default();
    let mut cfg = RegulatorConfig::default();
    cfg.queues.insert(
        "login".into(),
        QueueConfig {
            max_concurrency: Some(1),
            max_size: 1,
            max_wait_ms: 10,
            ..QueueConfig::default()
        },
    );
    let r = metrics::with_local_recorder(&recorded, || Regulator::new(cfg).unwrap());
    let hold = r.ask("login", Request::new()).await.unwrap();
    let waiter = tokio::spawn({
        let r = r.clone();
        async move { r.ask("login", Request::new()).await.map(drop) }
    });
    tokio::task::yield_now().await;
    assert_eq!(
        r.ask("login", Request::new()).await.unwrap_err().reason,
        Reason::QueueFull
    );
    assert_eq!(waiter.await.unwrap().unwrap_err().reason, Reason::Timeout);
    drop(hold);
    let get = |k: &str| {
        recorded
            .counters
            .lock()
            .unwrap()
            .get(k)
            .map_or(0, |c| c.0.load(std::sync::atomic::Ordering::Relaxed))
    };
    assert_eq!(get("regulator_admitted_total{queue=login}"), 1);
    assert_eq!(
        get("regulator_rejected_total{queue=login,reason=queue_full}"),
        1
    );
    assert_eq!(
        get("regulator_rejected_total{queue=login,reason=timeout}"),
        1
    );
    assert_eq!(get("regulator_timed_out_total{queue=login}"), 1);
    assert_eq!(get("regulator_rejected_total{queue=login,reason=rate}"), 0);
}
