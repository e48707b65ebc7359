//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use regulator::{Queue, QueueConfig, Regulator, RegulatorConfig};

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A regulator with one queue named `q`, and that queue's handle.
pub fn one(cfg: QueueConfig) -> (Regulator, Queue) {
    let mut c = RegulatorConfig::default();
    c.queues.insert("q".into(), cfg);
    let r = Regulator::new(c).unwrap();
    let q = r.queue("q").unwrap();
    (r, q)
}
