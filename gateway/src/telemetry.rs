//! Metrics: names in one place, handles cached for hot paths, and the
//! Prometheus recorder (histograms with buckets, so they aggregate across nodes).

use std::{sync::OnceLock, time::Duration};

use dialtone_proto::ErrorCode;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS_OPEN: &str = "dialtone_connections_open";
pub const FRAMES_IN: &str = "dialtone_frames_in_total";
pub const FRAMES_OUT: &str = "dialtone_frames_out_total";
pub const ERRORS: &str = "dialtone_errors_total";
pub const CLOSES: &str = "dialtone_closes_total";
pub const SEND_STORED: &str = "dialtone_send_stored_seconds";
pub const DELIVERY_LAG_MEAN: &str = "dialtone_delivery_lag_mean_seconds";
pub const DELIVERY_LAG_MAX: &str = "dialtone_delivery_lag_max_seconds";
pub const UPGRADES_REFUSED: &str = "dialtone_upgrades_refused_total";
/// Frame in to `overloaded`/`rate_limited` reply written, by frame type and
/// by `waited`: "false" for refusals at the door (the promise is 1 ms),
/// "true" for requests that queued first (bounded by the queue's `max_wait`).
pub const REFUSAL: &str = "dialtone_refusal_seconds";
/// Sends refused because an earlier refusal's wait had not passed: the gateway
/// answers those without asking the `send` queue, so the queue's `rejected`
/// counts do not include them.
pub const STANDING_REFUSALS: &str = "dialtone_send_refusals_standing_total";

const FRAME_TYPES: [&str; 9] = [
    "register", "login", "join", "leave", "send", "history", "who", "ping", "invalid",
];
const REPLY_TYPES: [&str; 5] = ["ok", "error", "pong", "history", "goaway"];

/// Cached handles for everything counted per frame.
pub struct Hot {
    pub connections: Gauge,
    frames_in: Vec<Counter>,
    frames_out: Vec<Counter>,
    errors: Vec<Counter>,
    /// Per frame type: refused at the door, refused after a wait.
    refusals: Vec<[Histogram; 2]>,
    pub send_stored: Histogram,
    pub standing_refusals: Counter,
    /// Mean and max delivery lag over the last sampling window (250 ms).
    pub delivery_lag_mean: Gauge,
    pub delivery_lag_max: Gauge,
}

impl Hot {
    pub fn frame_in(&self, kind: &str) {
        let i = FRAME_TYPES
            .iter()
            .position(|t| *t == kind)
            .unwrap_or(FRAME_TYPES.len() - 1);
        self.frames_in[i].increment(1);
    }

    pub fn frame_out(&self, kind: &str) {
        if let Some(i) = REPLY_TYPES.iter().position(|t| *t == kind) {
            self.frames_out[i].increment(1);
        }
    }

    /// A request of type `kind` was refused for load, `took` after its frame
    /// arrived; `waited` if it queued before the refusal.
    pub fn refused(&self, kind: &str, waited: bool, took: Duration) {
        if let Some(i) = FRAME_TYPES.iter().position(|t| *t == kind) {
            self.refusals[i][usize::from(waited)].record(took.as_secs_f64());
        }
    }

    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].increment(1);
        }
    }
}

pub fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| Hot {
        connections: gauge!(CONNECTIONS_OPEN),
        frames_in: FRAME_TYPES
            .iter()
            .map(|t| counter!(FRAMES_IN, "type" => *t))
            .collect(),
        frames_out: REPLY_TYPES
            .iter()
            .map(|t| counter!(FRAMES_OUT, "type" => *t))
            .collect(),
        errors: ErrorCode::ALL
            .iter()
            .map(|c| counter!(ERRORS, "code" => c.as_str()))
            .collect(),
        refusals: FRAME_TYPES
            .iter()
            .map(|t| {
                [
                    histogram!(REFUSAL, "type" => *t, "waited" => "false"),
                    histogram!(REFUSAL, "type" => *t, "waited" => "true"),
                ]
            })
            .collect(),
        send_stored: histogram!(SEND_STORED),
        standing_refusals: counter!(STANDING_REFUSALS),
        delivery_lag_mean: gauge!(DELIVERY_LAG_MEAN),
        delivery_lag_max: gauge!(DELIVERY_LAG_MAX),
    })
}

pub fn close(code: u16) {
    counter!(CLOSES, "code" => code.to_string()).increment(1);
}

/// Installs the process-wide Prometheus recorder once and returns its handle;
/// later calls (several nodes in one test process) share it.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (a test harness);
            // then this handle renders an empty page, which tests would catch.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
