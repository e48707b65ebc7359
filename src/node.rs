//! Assembles one node as a supervision tree (see docs/SUPERVISION.md):
//!
//! ```text
//! dialtone (one_for_one)
//! ├── store                  owns the store handle
//! ├── auth (one_for_one)     hash_worker_0..N: argon2 on blocking threads
//! ├── messaging (one_for_one) shard_0..N: one writer per room
//! ├── gateway (one_for_one)  listener: HTTP + WebSocket accept loop;
//! │                          connections: pool of connection tasks (temporary); keepalive: ping ticker
//! ├── samplers               regulator feedback: CPU, scheduler delay
//! └── metrics                Prometheus upkeep
//! ```
//!
//! one_for_one at the root: every role keeps what must outlive its workers
//! (shard membership tables, mailboxes, the store) outside them, so a role
//! that gives up is restarted alone; a messaging crash loop does not drop
//! every client connection with the gateway.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use dialtone_auth::{Auth, AuthConfig};
use dialtone_gateway::{Gateway, GatewayConfig, http::Admin, listener, router};
use dialtone_messaging::{Messaging, MessagingConfig};
use dialtone_store::{MemoryStore, Store};
use regulator::Regulator;
use serde_json::{Value, json};
use supervisor::{ChildSpec, Faults, GaveUp, Restart, Strategy, SupervisorHandle, SupervisorSpec};

use crate::{config::Config, local_bus::LocalBus};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("regulator: {0}")]
    Regulator(String),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running node.
pub struct Node {
    addr: SocketAddr,
    gateway: Arc<Gateway>,
    tree: SupervisorHandle,
    jwt_secret: Vec<u8>,
    /// Keeps the config file watcher alive (live regulator retuning).
    _watch: Option<regulator::watch::WatchHandle>,
}

struct NodeAdmin {
    messaging: Messaging,
    faults: Faults,
    tree: OnceLock<SupervisorHandle>,
}

impl Admin for NodeAdmin {
    fn tree(&self) -> Value {
        self.tree
            .get()
            .and_then(|t| serde_json::to_value(t.snapshot()).ok())
            .unwrap_or(Value::Null)
    }

    /// `{"point": "<name>", "times": n}` arms a named point;
    /// `{"room": "<room>"}` arms the shard that owns the room.
    fn fault(&self, body: Value) -> Result<Value, String> {
        let times = body.get("times").and_then(Value::as_u64).unwrap_or(1);
        let times = u32::try_from(times).map_err(|_| "`times` is too large".to_owned())?;
        let point = match (
            body.get("point").and_then(Value::as_str),
            body.get("room").and_then(Value::as_str),
        ) {
            (Some(p), None) => p.to_owned(),
            (None, Some(room)) => {
                let room = dialtone_proto::RoomName::parse(room).map_err(str::to_owned)?;
                format!("messaging.shard.{}", self.messaging.shard_of(&room))
            }
            _ => return Err("give `point` or `room`".into()),
        };
        self.faults.arm(point.clone(), times);
        Ok(json!({"armed": point, "times": times}))
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

fn gateway_config(cfg: &Config) -> GatewayConfig {
    GatewayConfig {
        listen: cfg.gateway.listen,
        max_frame_bytes: cfg.limits.max_frame_bytes,
        max_body_bytes: cfg.limits.max_body_bytes,
        login_timeout: cfg.login_timeout(),
        outbox_frames: cfg.gateway.outbox_frames,
        write_timeout: Duration::from_millis(cfg.gateway.write_timeout_ms),
        max_connections: cfg.gateway.max_connections,
        drain_grace: Duration::from_millis(cfg.gateway.drain_grace_ms),
        drain_retry_after: Duration::from_millis(cfg.gateway.drain_retry_after_ms),
        ping_interval: Duration::from_millis(cfg.gateway.ping_interval_ms),
        read_buffer_bytes: cfg.gateway.read_buffer_bytes,
        backlog: cfg.gateway.backlog,
        max_hold: Duration::from_millis(cfg.gateway.max_hold_ms),
        admin_token: cfg.admin.token.clone(),
        fault_injection: cfg.admin.fault_injection,
    }
}

/// A worker that holds a resource for its lifetime and ends on shutdown.
fn holder<T: Send + Sync + 'static>(name: &str, resource: Arc<T>) -> ChildSpec {
    ChildSpec::worker(name, Restart::Permanent, move |ctx| {
        let held = resource.clone();
        Box::pin(async move {
            ctx.cancelled().await;
            drop(held);
            Ok(())
        })
    })
}

/// The accept loop. Each incarnation serves a clone of the bound socket,
/// so a restart never loses the address.
fn listener_spec(std_listener: Arc<std::net::TcpListener>, gateway: Arc<Gateway>) -> ChildSpec {
    ChildSpec::worker("listener", Restart::Permanent, move |ctx| {
        let std_listener = std_listener.clone();
        let app = router(gateway.clone());
        Box::pin(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener.try_clone()?)?;
            let listener = listener::Accept(listener);
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<listener::Peer>(),
            )
            .with_graceful_shutdown(async move { ctx.cancelled().await })
            .await?;
            Ok(())
        })
    })
    .shutdown_grace(Duration::from_secs(5))
}

/// The regulator's feedback loop: samples CPU, scheduler delay and delivery lag, and
/// dampens queue limits by their modifiers.
fn samplers_spec(regulator: Regulator, gateway: &Gateway) -> ChildSpec {
    regulator.add_sampler("delivery_lag", gateway.delivery_lag.clone());
    ChildSpec::worker("samplers", Restart::Permanent, move |ctx| {
        let regulator = regulator.clone();
        Box::pin(async move {
            let feedback = regulator.spawn_feedback(Duration::from_millis(250));
            ctx.cancelled().await;
            drop(feedback);
            Ok(())
        })
    })
}

/// The shared keepalive ticker (see `dialtone_gateway::keepalive`).
fn keepalive_spec(gateway: Arc<Gateway>) -> ChildSpec {
    ChildSpec::worker("keepalive", Restart::Permanent, move |ctx| {
        let gateway = gateway.clone();
        Box::pin(async move {
            let every = gateway.cfg.ping_interval;
            gateway.keepalive.run(every, ctx.cancelled()).await;
            Ok(())
        })
    })
}

fn metrics_spec(gateway: &Gateway) -> ChildSpec {
    let handle = gateway.metrics().clone();
    ChildSpec::worker("metrics", Restart::Permanent, move |ctx| {
        let handle = handle.clone();
        Box::pin(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = ctx.cancelled() => return Ok(()),
                    _ = tick.tick() => handle.run_upkeep(),
                }
            }
        })
    })
}

impl Node {
    /// Builds every role under the supervision tree and starts accepting.
    ///
    /// # Errors
    /// When the listen address cannot be bound.
    pub async fn start(cfg: Config) -> Result<Node, StartError> {
        Self::start_watching(cfg, None).await
    }

    /// Like [`Node::start`], and reloads the regulator queues whenever
    /// `config_file` changes (an invalid file keeps the running settings).
    ///
    /// # Errors
    /// When the listen address cannot be bound or the file not watched.
    pub async fn start_watching(
        cfg: Config,
        config_file: Option<PathBuf>,
    ) -> Result<Node, StartError> {
        let jwt_secret = match &cfg.auth.jwt_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "auth.jwt_secret is unset: using a random secret; tokens die with this process"
                );
                rand::random::<[u8; 32]>().to_vec()
            }
        };
        // Metric handles (the regulator's per-queue ones among them) bind to
        // the recorder present when they are created: install it first.
        dialtone_gateway::telemetry::prometheus();
        let faults = Faults::default();
        let store = Arc::new(MemoryStore::with_retention(cfg.store.memory_retention));
        let dyn_store: Arc<dyn Store> = store.clone();
        let workers = if cfg.auth.hash_workers == 0 {
            cores()
        } else {
            cfg.auth.hash_workers
        };
        let auth = Auth::new(
            dyn_store.clone(),
            &AuthConfig {
                jwt_secret: jwt_secret.clone(),
                token_ttl: Duration::from_secs(cfg.auth.token_ttl_secs),
                hash_workers: workers,
                hash_queue: cfg.auth.hash_queue,
            },
            faults.clone(),
        );
        let messaging = Messaging::new(
            dyn_store.clone(),
            &MessagingConfig {
                shards: cfg.messaging.shards,
                mailbox: cfg.messaging.mailbox,
                call_timeout: Duration::from_millis(cfg.messaging.call_timeout_ms),
            },
            &faults,
        );
        let bus = Arc::new(LocalBus {
            auth: auth.clone(),
            messaging: messaging.clone(),
            store: dyn_store,
        });
        let admin = Arc::new(NodeAdmin {
            messaging: messaging.clone(),
            faults: faults.clone(),
            tree: OnceLock::new(),
        });
        let regulator = Regulator::new(cfg.regulator.clone())
            .map_err(|e| StartError::Regulator(e.to_string()))?;
        let watch = match config_file {
            Some(path) => Some(
                regulator
                    .watch_file(path.clone(), |text| {
                        Config::from_toml_str(text)
                            .map(|c| c.regulator)
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|source| StartError::Watch { path, source })?,
            ),
            None => None,
        };
        let (connections_sup, connections) = SupervisorSpec::new("connections")
            // Connection tasks are temporary: they never restart, so never count.
            .intensity(1, Duration::from_secs(1))
            .dynamic(8192);
        let gateway = Gateway::new(
            gateway_config(&cfg),
            bus,
            regulator.clone(),
            admin.clone(),
            faults,
            connections,
        );

        let bind_err = |source| StartError::Bind {
            addr: cfg.gateway.listen,
            source,
        };
        let bound = listener::bind(cfg.gateway.listen, cfg.gateway.backlog).map_err(bind_err)?;
        let addr = bound.local_addr().map_err(bind_err)?;
        let std_listener = Arc::new(bound.into_std().map_err(bind_err)?);

        let mut auth_sup = SupervisorSpec::new("auth").intensity(10, Duration::from_secs(10));
        for worker in auth.pool().child_specs() {
            auth_sup = auth_sup.child(worker);
        }
        let mut messaging_sup = SupervisorSpec::new("messaging").intensity(
            cfg.messaging.max_restarts,
            Duration::from_millis(cfg.messaging.restart_period_ms),
        );
        for shard in messaging.shards() {
            let shard = shard.clone();
            messaging_sup = messaging_sup.child(ChildSpec::worker(
                format!("shard_{}", shard.id),
                Restart::Permanent,
                move |ctx| Box::pin(shard.clone().run(ctx)),
            ));
        }
        let gateway_sup = SupervisorSpec::new("gateway")
            .intensity(5, Duration::from_secs(10))
            .child(listener_spec(std_listener, gateway.clone()))
            .child(ChildSpec::supervisor(connections_sup))
            .child(keepalive_spec(gateway.clone()));
        let tree = SupervisorSpec::new("dialtone")
            .strategy(Strategy::OneForOne)
            .intensity(3, Duration::from_secs(30))
            .child(holder("store", store))
            .child(ChildSpec::supervisor(auth_sup))
            .child(ChildSpec::supervisor(messaging_sup))
            .child(ChildSpec::supervisor(gateway_sup))
            .child(samplers_spec(regulator, &gateway))
            .child(metrics_spec(&gateway))
            .start();
        // Set once, right after the tree exists; nothing else sets it.
        let _ = admin.tree.set(tree.clone());
        Ok(Node {
            addr,
            gateway,
            tree,
            jwt_secret,
            _watch: watch,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HS256 secret in force (random when unset), for tests and tools.
    pub fn jwt_secret(&self) -> &[u8] {
        &self.jwt_secret
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub fn tree(&self) -> &SupervisorHandle {
        &self.tree
    }

    /// Resolves if the root supervisor gives up (restart intensity exceeded
    /// all the way up); the process should then exit non-zero.
    ///
    /// # Errors
    /// The reason the tree gave up.
    pub async fn failed(&self) -> Result<(), GaveUp> {
        self.tree.wait().await
    }

    /// The drain sequence: readyz 503 and no new upgrades, `goaway` to all,
    /// wait out the grace, close the rest with 1012, then stop the tree in
    /// reverse start order (listener, shards, hash workers, store).
    pub async fn drain(self) {
        let cfg = &self.gateway.cfg;
        self.gateway
            .drain
            .run(cfg.drain_grace, cfg.write_timeout)
            .await;
        self.tree.shutdown().await;
    }
}
