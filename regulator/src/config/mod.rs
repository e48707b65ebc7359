//! Configuration as data: what `[regulator]` tables in a TOML file hold.
//!
//! Every field has a default, unknown keys are refused (a typo in a limit must
//! not silently leave a path unprotected), and [`validate`] checks the whole
//! set before anything is applied, so a reload is all-or-nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod validate;

pub use validate::{ConfigError, MAX_MS, MIN_RATE, merge_json, validate, validate_queue};

/// The whole regulator: named queues and the rate groups they may share.
///
/// Build it with `..Default::default()` so added fields do not break callers.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegulatorConfig {
    /// Queues by name (`[regulator.queues.<name>]`).
    pub queues: BTreeMap<String, QueueConfig>,
    /// Shared rates by name (`[regulator.groups.<name>]`), joined with `group = "<name>"`.
    pub groups: BTreeMap<String, GroupConfig>,
}

/// A rate shared fairly by several queues.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// Requests per second for all member queues together.
    pub rate_per_sec: f64,
    /// Requests that may pass at once after an idle period.
    pub burst: u32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            rate_per_sec: 100.0,
            burst: 1,
        }
    }
}

/// Order in which waiters are served.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Discipline {
    /// Oldest first.
    #[default]
    Fifo,
    /// Newest first: under overload the freshest requests, whose callers are
    /// still waiting, are served; old ones time out.
    Lifo,
    /// FIFO with RFC 8289 CoDel drops when the queue stands above `codel_target_ms`.
    Codel,
    /// FIFO until the queue has stood for `codel_interval_ms`, then LIFO with
    /// `lifo_timeout_ms` as the wait limit (Meta's adaptive LIFO).
    AdaptiveLifo,
}

/// One queue: a stack of regulators in front of a bounded wait queue.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `false` admits everything (still counted): regulation off, e.g. to compare.
    pub enabled: bool,
    /// Requests per second (GCRA). `None`: no rate limit.
    pub rate_per_sec: Option<f64>,
    /// Requests that may pass at once after an idle period.
    pub burst: u32,
    /// Sum of weights in flight. `None`: no concurrency limit.
    pub max_concurrency: Option<u32>,
    /// Waiters allowed in the queue; 0 rejects at once whenever a limit is hit.
    pub max_size: u32,
    /// Longest a waiter waits before it is answered `timeout`.
    pub max_wait_ms: u64,
    /// Refuse at once a request whose predicted wait ((waiters ahead + 1) ×
    /// observed service time ÷ limit) already exceeds `max_wait`, instead of letting
    /// it wait `max_wait` to be refused anyway. FIFO and CoDel order only (in
    /// LIFO order a new arrival goes first); while CoDel is dropping, the
    /// limit is `codel_target_ms`.
    pub shed_predicted_timeouts: bool,
    /// Service order of waiters.
    pub discipline: Discipline,
    /// CoDel's acceptable standing delay.
    pub codel_target_ms: u64,
    /// CoDel's window (also how long a queue must stand before adaptive LIFO switches).
    pub codel_interval_ms: u64,
    /// Wait limit of waiters enqueued while adaptive LIFO is in LIFO mode.
    pub lifo_timeout_ms: u64,
    /// Floor of the `retry_after` a rejection carries (except a per-key rate,
    /// whose own timing is exact for its one caller). Without it a shed
    /// request is told to retry when the next token is due, often in under a
    /// millisecond, and every shed client retries at once: a retry storm.
    pub min_retry_after_ms: u64,
    /// Spread of that `retry_after`: each rejection's hint is drawn
    /// uniformly from [hint, hint × (1 + retry_jitter)) (a per-key rate's
    /// stays exact), in [0, 4]. Callers refused together otherwise come
    /// back together, in a wave that takes the burst and is refused again
    /// while the downstream idles between waves. 0 gives every caller the
    /// same hint.
    pub retry_jitter: f64,
    /// Per-key requests per second. `None`: no per-key rate.
    pub key_rate_per_sec: Option<f64>,
    /// Per-key burst.
    pub key_burst: u32,
    /// Keys remembered at most; least recently seen keys are forgotten first.
    pub key_table_size: u32,
    /// Name of a `[groups]` entry whose rate this queue shares.
    pub group: Option<String>,
    /// Step tables that dampen the limits from sampler values.
    pub modifiers: Vec<ModifierConfig>,
    /// Find the concurrency limit by itself (AIMD or gradient).
    pub adaptive: Option<AdaptiveConfig>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rate_per_sec: None,
            burst: 1,
            max_concurrency: None,
            max_size: 100,
            max_wait_ms: 1000,
            shed_predicted_timeouts: false,
            discipline: Discipline::Fifo,
            codel_target_ms: 5,
            codel_interval_ms: 100,
            lifo_timeout_ms: 50,
            min_retry_after_ms: 0,
            retry_jitter: 0.0,
            key_rate_per_sec: None,
            key_burst: 1,
            key_table_size: 10_000,
            group: None,
            modifiers: Vec::new(),
            adaptive: None,
        }
    }
}

/// A jobs-style modifier: a sampler and the damping steps it triggers.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModifierConfig {
    /// Sampler name: `cpu` (percent busy), `sched_delay` (ms), `latency`
    /// (this queue's observed downstream latency, ms) or one registered with
    /// [`crate::Regulator::add_sampler`].
    pub sampler: String,
    /// Steps; the strongest one whose threshold and duration are met applies.
    pub steps: Vec<Step>,
    /// Tracking instead of (or with) steps: find the factor that holds the
    /// sampler at a target, whatever the capacity behind it.
    pub track: Option<Track>,
}

impl Default for ModifierConfig {
    fn default() -> Self {
        Self {
            sampler: "cpu".into(),
            steps: Vec::new(),
            track: None,
        }
    }
}

/// A modifier that tracks a target: each tick the value is above `target`
/// and a quarter worse than at the last cut (or there was none, or it was a
/// second or more ago), the factor drops to `backoff` × the throughput the
/// queue actually admitted (its best tick of the last second, as a share of its configured rate); each
/// tick it is at or below, the factor grows by `increase` (× (1 + increase)),
/// back up to 1. So the limit settles near what the downstream sustains, for
/// any capacity, instead of at fixed fractions of a fixed ceiling. The factor
/// never exceeds `headroom` × that throughput: a limit far above the demand
/// would let a sudden surge through at full rate before the value could rise.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Track {
    /// The sampler value to hold (e.g. 50 ms of delivery lag).
    pub target: f64,
    /// Multiplier on the admitted throughput when above target, in (0, 1).
    pub backoff: f64,
    /// Relative growth per tick at or below target, > 0.
    pub increase: f64,
    /// The factor never goes below this, in (0, 1].
    pub min_factor: f64,
    /// The factor stays within this multiple of the admitted throughput
    /// (never below `min_factor`); while that holds it down, it follows the
    /// demand at this multiple each tick instead of growing by `increase`.
    /// 0 turns the ceiling off; otherwise at least 1.
    pub headroom: f64,
    /// While the tracking, not the demand, holds admissions back (from a
    /// cut until the demand falls below the ceiling again), the queue's
    /// `burst` is at most this many ms of its damped rate. 0: the
    /// configured burst always. A burst counted in requests is seconds of
    /// work at a rate cut far below the configured one: a send burst of
    /// 2,000 at a damped 600/s let waves of held senders in 3 s of fan-out
    /// at once, and every wave cut the rate again (docs/OVERLOAD.md).
    pub cut_burst_ms: u64,
}

impl Default for Track {
    fn default() -> Self {
        Self {
            target: 50.0,
            backoff: 0.8,
            increase: 0.05,
            min_factor: 0.01,
            headroom: 2.0,
            cut_burst_ms: 0,
        }
    }
}

/// When the sampler value is above `above` and has been above the lowest step
/// of its table for `for_ms`, the queue's limits are multiplied by `factor`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Step {
    /// Threshold on the sampler value (strictly above).
    pub above: f64,
    /// How long the overload must have lasted.
    pub for_ms: u64,
    /// Multiplier on rate and concurrency, in (0, 1].
    pub factor: f64,
}

impl Default for Step {
    fn default() -> Self {
        Self {
            above: 0.0,
            for_ms: 0,
            factor: 1.0,
        }
    }
}

/// Adaptive concurrency algorithm.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Additive increase while latency is under `latency_threshold_ms`,
    /// multiplicative decrease (`backoff`) above it.
    #[default]
    Aimd,
    /// Netflix Gradient2: compare short-term latency to a long-term baseline.
    Gradient,
}

/// Adaptive concurrency limit settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConfig {
    /// Which algorithm.
    pub algorithm: Algorithm,
    /// Limit at start and after a retune.
    pub initial_limit: u32,
    /// Floor.
    pub min_limit: u32,
    /// Ceiling (also capped by `max_concurrency` when set).
    pub max_limit: u32,
    /// AIMD: multiplier applied when latency is above the threshold.
    pub backoff: f64,
    /// AIMD: latency above which the limit backs off.
    pub latency_threshold_ms: u64,
    /// Gradient: how much the short-term latency may exceed the baseline.
    pub tolerance: f64,
    /// Gradient: weight of a new limit estimate (0..1].
    pub smoothing: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Aimd,
            initial_limit: 20,
            min_limit: 1,
            max_limit: 1000,
            backoff: 0.9,
            latency_threshold_ms: 100,
            tolerance: 1.5,
            smoothing: 0.2,
        }
    }
}
