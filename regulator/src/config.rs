//! Configuration as data: what `[regulator]` tables in a TOML file hold.
//!
//! Every field has a default, unknown keys are refused (a typo in a limit must
//! not silently leave a path unprotected), and [`validate`] checks the whole
//! set before anything is applied, so a reload is all-or-nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// Service order of waiters.
    pub discipline: Discipline,
    /// CoDel's acceptable standing delay.
    pub codel_target_ms: u64,
    /// CoDel's window (also how long a queue must stand before adaptive LIFO switches).
    pub codel_interval_ms: u64,
    /// Wait limit of waiters enqueued while adaptive LIFO is in LIFO mode.
    pub lifo_timeout_ms: u64,
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
            discipline: Discipline::Fifo,
            codel_target_ms: 5,
            codel_interval_ms: 100,
            lifo_timeout_ms: 50,
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
}

impl Default for ModifierConfig {
    fn default() -> Self {
        Self {
            sampler: "cpu".into(),
            steps: Vec::new(),
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

/// A configuration that cannot be applied. The running configuration is kept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range.
    #[error("queue `{queue}`: {field} {problem}")]
    Invalid {
        /// Queue or group name.
        queue: String,
        /// Offending key.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A queue names a group that is not configured.
    #[error("queue `{queue}`: unknown group `{group}`")]
    UnknownGroup {
        /// Queue name.
        queue: String,
        /// The missing group.
        group: String,
    },
    /// A JSON body did not deserialise (unknown key, wrong type).
    #[error("bad config: {0}")]
    Parse(String),
}

fn invalid(queue: &str, field: &'static str, problem: &'static str) -> ConfigError {
    ConfigError::Invalid {
        queue: queue.to_owned(),
        field,
        problem,
    }
}

/// Slowest rate accepted: one request per 1000 s. Slower rates would need
/// intervals past what the nanosecond clock arithmetic is meant to carry.
pub const MIN_RATE: f64 = 0.001;

/// Longest duration accepted for any `*_ms` key: one day.
pub const MAX_MS: u64 = 86_400_000;

fn positive_rate(queue: &str, field: &'static str, v: Option<f64>) -> Result<(), ConfigError> {
    match v {
        Some(r) if !(r.is_finite() && r >= MIN_RATE) => {
            Err(invalid(queue, field, "must be >= 0.001 and finite"))
        }
        _ => Ok(()),
    }
}

/// Checks one queue against the groups it may reference.
///
/// # Errors
/// The first problem found.
pub fn validate_queue(
    name: &str,
    q: &QueueConfig,
    groups: &BTreeMap<String, GroupConfig>,
) -> Result<(), ConfigError> {
    positive_rate(name, "rate_per_sec", q.rate_per_sec)?;
    positive_rate(name, "key_rate_per_sec", q.key_rate_per_sec)?;
    if q.burst == 0 {
        return Err(invalid(name, "burst", "must be >= 1"));
    }
    if q.key_burst == 0 {
        return Err(invalid(name, "key_burst", "must be >= 1"));
    }
    if q.max_concurrency == Some(0) {
        return Err(invalid(name, "max_concurrency", "must be >= 1"));
    }
    if q.key_table_size == 0 {
        return Err(invalid(name, "key_table_size", "must be >= 1"));
    }
    for (field, ms) in [
        ("max_wait_ms", q.max_wait_ms),
        ("codel_interval_ms", q.codel_interval_ms),
        ("lifo_timeout_ms", q.lifo_timeout_ms),
    ] {
        if ms > MAX_MS {
            return Err(invalid(name, field, "must be at most one day"));
        }
    }
    if q.codel_target_ms == 0 || q.codel_interval_ms <= q.codel_target_ms {
        return Err(invalid(
            name,
            "codel_interval_ms",
            "must be above codel_target_ms > 0",
        ));
    }
    if let Some(g) = &q.group
        && !groups.contains_key(g)
    {
        return Err(ConfigError::UnknownGroup {
            queue: name.to_owned(),
            group: g.clone(),
        });
    }
    for m in &q.modifiers {
        for s in &m.steps {
            if !(s.factor > 0.0 && s.factor <= 1.0) {
                return Err(invalid(name, "modifiers.steps.factor", "must be in (0, 1]"));
            }
            if !s.above.is_finite() {
                return Err(invalid(name, "modifiers.steps.above", "must be finite"));
            }
        }
    }
    if let Some(a) = &q.adaptive {
        if a.min_limit == 0 || a.min_limit > a.max_limit {
            return Err(invalid(
                name,
                "adaptive.min_limit",
                "must be in 1..=max_limit",
            ));
        }
        if !(a.backoff > 0.0 && a.backoff < 1.0) {
            return Err(invalid(name, "adaptive.backoff", "must be in (0, 1)"));
        }
        if !(a.smoothing > 0.0 && a.smoothing <= 1.0) {
            return Err(invalid(name, "adaptive.smoothing", "must be in (0, 1]"));
        }
        if !(a.tolerance >= 1.0 && a.tolerance.is_finite()) {
            return Err(invalid(name, "adaptive.tolerance", "must be >= 1"));
        }
    }
    Ok(())
}

/// Checks a whole configuration.
///
/// # Errors
/// The first problem found.
pub fn validate(cfg: &RegulatorConfig) -> Result<(), ConfigError> {
    for (name, g) in &cfg.groups {
        positive_rate(name, "rate_per_sec", Some(g.rate_per_sec))?;
        if g.burst == 0 {
            return Err(invalid(name, "burst", "must be >= 1"));
        }
    }
    for (name, q) in &cfg.queues {
        validate_queue(name, q, &cfg.groups)?;
    }
    Ok(())
}

/// Overlays a partial JSON object on `base`: keys present replace the current
/// value (`null` clears an optional limit), keys absent keep it.
///
/// # Errors
/// `Parse` when the body is not an object, has unknown keys or wrong types.
pub fn merge_json(base: &QueueConfig, body: serde_json::Value) -> Result<QueueConfig, ConfigError> {
    let serde_json::Value::Object(patch) = body else {
        return Err(ConfigError::Parse("body must be a JSON object".into()));
    };
    let mut current = serde_json::to_value(base).map_err(|e| ConfigError::Parse(e.to_string()))?;
    if let serde_json::Value::Object(map) = &mut current {
        for (k, v) in patch {
            map.insert(k, v);
        }
    }
    serde_json::from_value(current).map_err(|e| ConfigError::Parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_table_gives_defaults() {
        let q: QueueConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(q, QueueConfig::default());
        assert!(q.enabled);
        assert_eq!(q.codel_target_ms, 5);
        assert_eq!(q.codel_interval_ms, 100);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<QueueConfig, _> = serde_json::from_value(json!({"rate": 5}));
        assert!(r.is_err());
    }

    #[test]
    fn merge_keeps_absent_keys_and_null_clears() {
        let base = QueueConfig {
            rate_per_sec: Some(10.0),
            max_concurrency: Some(4),
            ..QueueConfig::default()
        };
        let m = merge_json(&base, json!({"max_concurrency": null, "max_size": 7})).unwrap();
        assert_eq!(m.rate_per_sec, Some(10.0));
        assert_eq!(m.max_concurrency, None);
        assert_eq!(m.max_size, 7);
        assert!(merge_json(&base, json!({"nope": 1})).is_err());
        assert!(merge_json(&base, json!([1])).is_err());
    }

    #[test]
    fn validation_rejects_nonsense() {
        let mut cfg = RegulatorConfig::default();
        cfg.queues.insert(
            "a".into(),
            QueueConfig {
                rate_per_sec: Some(0.0),
                ..QueueConfig::default()
            },
        );
        assert!(validate(&cfg).is_err());
        cfg.queues.insert(
            "a".into(),
            QueueConfig {
                group: Some("g".into()),
                ..QueueConfig::default()
            },
        );
        assert!(matches!(
            validate(&cfg),
            Err(ConfigError::UnknownGroup { .. })
        ));
        cfg.groups.insert("g".into(), GroupConfig::default());
        assert!(validate(&cfg).is_ok());
    }
}
