//! The node's configuration: defaults < TOML file < environment
//! (`DIALTONE_` + key path upper-cased, `__` between levels). Unknown keys
//! are errors, so a typo never silently falls back to a default.

use std::{net::SocketAddr, path::Path, time::Duration};

use regulator::{Discipline, ModifierConfig, QueueConfig, RegulatorConfig, Track};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub gateway: GatewaySection,
    pub auth: AuthSection,
    pub limits: LimitsSection,
    pub store: StoreSection,
    pub admin: AdminSection,
    pub messaging: MessagingSection,
    /// `[regulator.queues.<name>]` tables; defaults in [`default_queues`].
    pub regulator: RegulatorConfig,
    pub log: LogSection,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    pub listen: SocketAddr,
    pub outbox_frames: usize,
    pub write_timeout_ms: u64,
    pub max_connections: usize,
    pub drain_grace_ms: u64,
    pub drain_retry_after_ms: u64,
    pub ping_interval_ms: u64,
    pub read_buffer_bytes: usize,
    pub backlog: u32,
    /// Longest a connection goes unread after `overloaded` to a send; 0
    /// answers every frame as it comes (README, "Overload, as a client sees it").
    pub max_hold_ms: u64,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            outbox_frames: 1024,
            write_timeout_ms: 10_000,
            max_connections: 100_000,
            drain_grace_ms: 10_000,
            drain_retry_after_ms: 1000,
            ping_interval_ms: 30_000,
            read_buffer_bytes: 256,
            backlog: 8192,
            max_hold_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// HS256 secret; random per start (with a warning) when unset.
    pub jwt_secret: Option<String>,
    pub login_timeout_ms: u64,
    pub token_ttl_secs: u64,
    /// argon2 threads; 0 means one per core.
    pub hash_workers: usize,
    pub hash_queue: usize,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            jwt_secret: None,
            login_timeout_ms: 10_000,
            token_ttl_secs: 86_400,
            hash_workers: 0,
            hash_queue: 64,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_frame_bytes: usize,
    pub max_body_bytes: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_frame_bytes: 65_536,
            max_body_bytes: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub backend: Backend,
    pub redis_url: String,
    /// Messages the memory backend keeps per room (the newest); older ones
    /// leave `history`. Bounds memory on long runs.
    pub memory_retention: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: Backend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            memory_retention: dialtone_store::memory::DEFAULT_RETENTION,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Bearer token for `/admin/*`; unset hides them (404).
    pub token: Option<String>,
    /// Lets `POST /admin/fault` make workers panic. Never on in production.
    pub fault_injection: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingSection {
    pub shards: usize,
    pub mailbox: usize,
    pub call_timeout_ms: u64,
    /// Restart intensity of the shard supervisor: at most this many
    /// restarts in `restart_period_ms`, else it gives up and escalates.
    pub max_restarts: u32,
    pub restart_period_ms: u64,
}

impl Default for MessagingSection {
    fn default() -> Self {
        MessagingSection {
            shards: 16,
            mailbox: 4096,
            call_timeout_ms: 5000,
            max_restarts: 10,
            restart_period_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `dialtone=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Why a configuration was refused: one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads defaults < `file` < the process environment.
    ///
    /// # Errors
    /// A one-line reason: unreadable file, bad TOML, unknown key, bad value.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (tests).
    ///
    /// # Errors
    /// See [`Config::load`].
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder().add_source(defaults()?);
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("DIALTONE_"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("DIALTONE")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let cfg: Config = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| ConfigError(one_line(&e.to_string())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a config file's text with the process environment on top
    /// (the file watcher's view: environment still wins over the file).
    ///
    /// # Errors
    /// See [`Config::load`].
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let env: config::Map<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("DIALTONE_"))
            .collect();
        let cfg: Config = config::Config::builder()
            .add_source(defaults()?)
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("DIALTONE")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| ConfigError(one_line(&e.to_string())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: &str| Err(ConfigError(s.to_owned()));
        if self.limits.max_frame_bytes < 256 {
            return bad("limits.max_frame_bytes must be at least 256");
        }
        if self.limits.max_body_bytes == 0
            || self.limits.max_body_bytes >= self.limits.max_frame_bytes
        {
            return bad("limits.max_body_bytes must be between 1 and limits.max_frame_bytes");
        }
        if self.gateway.outbox_frames == 0 {
            return bad("gateway.outbox_frames must be at least 1");
        }
        if self.messaging.shards == 0 || self.messaging.mailbox == 0 {
            return bad("messaging.shards and messaging.mailbox must be at least 1");
        }
        if self.auth.jwt_secret.as_deref() == Some("") {
            return bad("auth.jwt_secret must not be empty");
        }
        if self.admin.token.as_deref() == Some("") {
            return bad("admin.token must not be empty (leave it unset to disable admin)");
        }
        if self.store.backend == Backend::Redis {
            return bad("store.backend = \"redis\" is not available in this build; use \"memory\"");
        }
        regulator::Regulator::new(self.regulator.clone())
            .map(drop)
            .map_err(|e| ConfigError(one_line(&format!("regulator: {e}"))))
    }

    pub fn login_timeout(&self) -> Duration {
        Duration::from_millis(self.auth.login_timeout_ms)
    }
}

/// Config defaults as a source, so a file that sets one key of a queue
/// keeps the dialtone defaults of that queue's other keys.
fn defaults() -> Result<config::Config, ConfigError> {
    config::Config::try_from(&Config::default())
        .map_err(|e| ConfigError(one_line(&format!("defaults: {e}"))))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gateway: GatewaySection::default(),
            auth: AuthSection::default(),
            limits: LimitsSection::default(),
            store: StoreSection::default(),
            admin: AdminSection::default(),
            messaging: MessagingSection::default(),
            regulator: RegulatorConfig {
                queues: default_queues(),
                ..RegulatorConfig::default()
            },
            log: LogSection::default(),
        }
    }
}

fn cores() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| u32::try_from(n.get()).unwrap_or(2))
}

/// dialtone's admission queues, documented in ops/dialtone.toml.
pub fn default_queues() -> std::collections::BTreeMap<String, QueueConfig> {
    let q = QueueConfig::default;
    // argon2 costs ~17 ms of one core: more hashes at once than cores only
    // adds latency; a short queue and a short wait keep logins predictable.
    let argon2 = QueueConfig {
        max_concurrency: Some(cores()),
        max_size: 32,
        max_wait_ms: 300,
        // Refused now rather than after waiting 300 ms for the same answer.
        shed_predicted_timeouts: true,
        // About the time a full queue takes to drain.
        min_retry_after_ms: 250,
        discipline: Discipline::Fifo,
        ..q()
    };
    [
        (
            "connect",
            QueueConfig {
                rate_per_sec: Some(20_000.0),
                burst: 5000,
                max_size: 0,
                min_retry_after_ms: 1000,
                ..q()
            },
        ),
        ("login", argon2.clone()),
        ("register", argon2),
        (
            "send",
            QueueConfig {
                // A ceiling well above this node's fan-out capacity; the
                // modifier below lowers it while deliveries fall behind.
                rate_per_sec: Some(20_000.0),
                // Absorbs a spike while the modifier's ceiling catches up:
                // at 200, a 5x spike that a node with its own core carried
                // at p99 28 ms got 502 refusals (docs/OVERLOAD.md).
                burst: 2000,
                modifiers: vec![send_backpressure()],
                // The gateway holds a refused sender's connection unread for
                // this long (README): fewer holds, each answering more
                // frames. 10x kept 72-83 % of 1x on the starved rig with 1 s,
                // 77-98 % with 2.5 s (docs/OVERLOAD.md).
                min_retry_after_ms: 2500,
                // Hints (and so holds) of 2.5-5 s: senders refused together
                // are read again at different times, not in one wave.
                retry_jitter: 1.0,
                max_concurrency: Some(4096),
                max_size: 1024,
                max_wait_ms: 100,
                // A burst waits for a token; sustained overload is refused
                // at the door, not after 100 ms in the queue.
                shed_predicted_timeouts: true,
                discipline: Discipline::Codel,
                key_rate_per_sec: Some(50.0),
                key_burst: 100,
                key_table_size: 100_000,
                ..q()
            },
        ),
        (
            "history",
            QueueConfig {
                max_concurrency: Some(64),
                min_retry_after_ms: 100,
                max_size: 256,
                max_wait_ms: 200,
                ..q()
            },
        ),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_owned(), c))
    .collect()
}

/// jobs-style damping of `send` by the mean delivery lag (ms a fanned-out
/// frame waits before it is written): the longer fan-out is behind, the
/// harder new sends are shed, and the limit comes back when lag clears.
fn send_backpressure() -> ModifierConfig {
    ModifierConfig {
        sampler: "delivery_lag".into(),
        steps: Vec::new(),
        // Hold 50 ms of mean lag; backoff, increase and floor as documented.
        track: Some(Track {
            target: 50.0,
            // After a cut, a fifth of a second of the damped rate passes at
            // once, not the 2,000 sends the burst lets a spike through with.
            cut_burst_ms: 200,
            ..Track::default()
        }),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_match_the_protocol() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.gateway.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.limits.max_frame_bytes, 65_536);
        assert_eq!(c.limits.max_body_bytes, 4096);
        assert_eq!(c.store.backend, Backend::Memory);
        assert_eq!(c.store.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.auth.login_timeout_ms, 10_000);
        assert!(c.auth.jwt_secret.is_none());
        assert!(c.admin.token.is_none());
    }

    #[test]
    fn environment_wins_over_file_and_file_over_defaults() {
        let f = file(
            "[gateway]\nlisten = \"127.0.0.1:7000\"\n[limits]\nmax_body_bytes = 100\n[auth]\njwt_secret = \"from-file\"\n",
        );
        let c = Config::load_from(
            Some(f.path()),
            env(&[
                ("DIALTONE_AUTH__JWT_SECRET", "from-env"),
                ("DIALTONE_LIMITS__MAX_BODY_BYTES", "200"),
            ]),
        )
        .unwrap();
        assert_eq!(c.gateway.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("from-env"));
        assert_eq!(c.limits.max_body_bytes, 200);
    }

    #[test]
    fn numeric_looking_secret_from_env_stays_a_string() {
        let c = Config::load_from(None, env(&[("DIALTONE_AUTH__JWT_SECRET", "12345")])).unwrap();
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("12345"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_in_one_line() {
        let typo = file("[gateway]\nlisten_addr = \"x\"\n");
        let e = Config::load_from(Some(typo.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_addr"), "{e}");
        assert!(!e.contains('\n'));
        let bad =
            Config::load_from(None, env(&[("DIALTONE_GATEWAY__LISTEN", "nowhere")])).unwrap_err();
        assert!(
            bad.to_string().contains("listen") || bad.to_string().contains("address"),
            "{bad}"
        );
        let bad =
            Config::load_from(None, env(&[("DIALTONE_LIMITS__MAX_BODY_BYTES", "0")])).unwrap_err();
        assert!(bad.to_string().contains("max_body_bytes"), "{bad}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let e =
            Config::load_from(Some(Path::new("/nonexistent/dialtone.toml")), env(&[])).unwrap_err();
        assert!(!e.to_string().is_empty());
    }

    #[test]
    fn a_file_setting_one_queue_key_keeps_the_other_defaults() {
        let f = file("[regulator.queues.login]\nmax_size = 7\n");
        let c = Config::load_from(Some(f.path()), env(&[])).unwrap();
        let login = &c.regulator.queues["login"];
        assert_eq!(login.max_size, 7);
        assert_eq!(login.max_wait_ms, 300, "dialtone default kept");
        assert!(c.regulator.queues.contains_key("send"), "other queues kept");
    }

    #[test]
    fn an_invalid_queue_is_refused() {
        let f = file("[regulator.queues.login]\nmax_sizee = 7\n");
        assert!(Config::load_from(Some(f.path()), env(&[])).is_err());
    }

    #[test]
    fn the_documented_example_config_loads_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/dialtone.toml");
        let c = Config::load_from(Some(&path), env(&[])).unwrap();
        let d = Config::default();
        // The whole section: a gateway knob added to one and not the other
        // (as `max_hold_ms` was) fails here.
        assert_eq!(c.gateway, d.gateway);
        assert_eq!(c.messaging.shards, d.messaging.shards);
        assert_eq!(c.regulator.queues, d.regulator.queues);
    }

    #[test]
    fn redis_backend_is_refused_with_a_reason() {
        let e = Config::load_from(None, env(&[("DIALTONE_STORE__BACKEND", "redis")])).unwrap_err();
        assert!(e.to_string().contains("redis"), "{e}");
    }
}
