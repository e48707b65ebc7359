//! Checking a configuration before anything is applied, and merging a
//! partial JSON body into a queue table.

use std::collections::BTreeMap;

use super::{GroupConfig, QueueConfig, RegulatorConfig};

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

/// Widest `retry_jitter`: a hint up to five times its floor. Wider spreads
/// nothing more usefully and keeps callers away long after capacity is back.
const MAX_RETRY_JITTER: f64 = 4.0;

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
        ("min_retry_after_ms", q.min_retry_after_ms),
    ] {
        if ms > MAX_MS {
            return Err(invalid(name, field, "must be at most one day"));
        }
    }
    if !(0.0..=MAX_RETRY_JITTER).contains(&q.retry_jitter) {
        return Err(invalid(name, "retry_jitter", "must be in [0, 4]"));
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
        if let Some(t) = &m.track {
            if !t.target.is_finite() {
                return Err(invalid(name, "modifiers.track.target", "must be finite"));
            }
            if !(t.backoff > 0.0 && t.backoff < 1.0) {
                return Err(invalid(
                    name,
                    "modifiers.track.backoff",
                    "must be in (0, 1)",
                ));
            }
            if !(t.increase > 0.0 && t.increase.is_finite()) {
                return Err(invalid(name, "modifiers.track.increase", "must be > 0"));
            }
            if !(t.min_factor > 0.0 && t.min_factor <= 1.0) {
                return Err(invalid(
                    name,
                    "modifiers.track.min_factor",
                    "must be in (0, 1]",
                ));
            }
            if !(t.headroom == 0.0 || (t.headroom >= 1.0 && t.headroom.is_finite())) {
                return Err(invalid(
                    name,
                    "modifiers.track.headroom",
                    "must be 0 (off) or at least 1",
                ));
            }
            if t.cut_burst_ms > MAX_MS {
                return Err(invalid(
                    name,
                    "modifiers.track.cut_burst_ms",
                    "must be at most one day",
                ));
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
    use crate::config::{ModifierConfig, Track};
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

    #[test]
    fn tracking_parameters_are_checked() {
        let with = |track: Track| {
            let mut cfg = RegulatorConfig::default();
            let modifier = ModifierConfig {
                track: Some(track),
                ..ModifierConfig::default()
            };
            cfg.queues.insert(
                "q".into(),
                QueueConfig {
                    modifiers: vec![modifier],
                    ..QueueConfig::default()
                },
            );
            validate(&cfg)
        };
        assert!(with(Track::default()).is_ok());
        for bad in [
            Track {
                backoff: 1.0,
                ..Track::default()
            },
            Track {
                increase: 0.0,
                ..Track::default()
            },
            Track {
                min_factor: 0.0,
                ..Track::default()
            },
            Track {
                target: f64::NAN,
                ..Track::default()
            },
            Track {
                headroom: 0.5,
                ..Track::default()
            },
            Track {
                cut_burst_ms: MAX_MS + 1,
                ..Track::default()
            },
        ] {
            let e = with(bad.clone()).expect_err(&format!("{bad:?}"));
            assert!(e.to_string().contains("modifiers.track"), "{e}");
        }
    }
}
