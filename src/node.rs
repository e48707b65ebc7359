//! Assembles one node: store → auth → messaging shards → gateway, binds the
//! listener and runs until drained.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use dialtone_auth::{Auth, AuthConfig};
use dialtone_gateway::{Gateway, GatewayConfig, http::Admin, listener, router};
use dialtone_messaging::{Messaging, MessagingConfig};
use dialtone_store::{BoxFuture, MemoryStore, Store};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::{config::Config, local_bus::LocalBus};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running node.
pub struct Node {
    addr: SocketAddr,
    gateway: Arc<Gateway>,
    stop_http: Option<oneshot::Sender<()>>,
    http: JoinHandle<()>,
    jwt_secret: Vec<u8>,
}

struct NodeAdmin {
    messaging: Messaging,
}

impl Admin for NodeAdmin {
    fn regulator(&self) -> Value {
        json!({"queues": {}})
    }

    fn retune(&self, queue: &str, _body: Value) -> Result<Value, String> {
        Err(format!("no admission queue named `{queue}`"))
    }

    fn tree(&self) -> Value {
        json!({"name": "root", "kind": "supervisor", "state": "running", "restarts": 0, "children": []})
    }

    fn admit_connect(&self) -> BoxFuture<'_, Result<Option<Box<dyn Send + Sync>>, u64>> {
        Box::pin(async { Ok(None) })
    }

    fn crash_shard(&self, room: String) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move {
            let room = dialtone_proto::RoomName::parse(&room).map_err(str::to_owned)?;
            let shard = self.messaging.shard_of(&room);
            // The crash answers `internal` to this very request: that is the point.
            let answer = self.messaging.crash_shard_of(&room).await;
            Ok(
                json!({"crashed": "messaging_shard", "shard": shard, "answer": answer.err().map(|f| f.code.as_str())}),
            )
        })
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

/// Restarts a shard worker when it panics; its mailbox and membership table
/// survive, so queued requests are served by the next incarnation.
fn supervise_shard(shard: Arc<dialtone_messaging::shard::Shard>) {
    tokio::spawn(async move {
        let mut restarts = 0u64;
        loop {
            match tokio::spawn(shard.clone().run()).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    restarts += 1;
                    tracing::error!(
                        shard = shard.id,
                        restarts,
                        "messaging shard panicked; restarting"
                    );
                }
                Err(_) => return,
            }
        }
    });
}

impl Node {
    /// Builds every role and starts accepting connections.
    ///
    /// # Errors
    /// When the listen address cannot be bound.
    pub async fn start(cfg: Config) -> Result<Node, StartError> {
        let jwt_secret = match &cfg.auth.jwt_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "auth.jwt_secret is unset: using a random secret; tokens die with this process"
                );
                rand::random::<[u8; 32]>().to_vec()
            }
        };
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let workers = if cfg.auth.hash_workers == 0 {
            cores()
        } else {
            cfg.auth.hash_workers
        };
        let auth = Auth::new(
            store.clone(),
            &AuthConfig {
                jwt_secret: jwt_secret.clone(),
                token_ttl: Duration::from_secs(cfg.auth.token_ttl_secs),
                hash_workers: workers,
                hash_queue: cfg.auth.hash_queue,
            },
        );
        let messaging = Messaging::new(
            store.clone(),
            &MessagingConfig {
                shards: cfg.messaging.shards,
                mailbox: cfg.messaging.mailbox,
            },
        );
        for shard in messaging.shards() {
            supervise_shard(shard.clone());
        }
        let bus = Arc::new(LocalBus {
            auth,
            messaging: messaging.clone(),
            store,
        });
        let gw_cfg = GatewayConfig {
            listen: cfg.gateway.listen,
            max_frame_bytes: cfg.limits.max_frame_bytes,
            max_body_bytes: cfg.limits.max_body_bytes,
            login_timeout: cfg.login_timeout(),
            outbox_frames: cfg.gateway.outbox_frames,
            write_timeout: Duration::from_millis(cfg.gateway.write_timeout_ms),
            max_connections: cfg.gateway.max_connections,
            drain_grace: Duration::from_millis(cfg.gateway.drain_grace_ms),
            drain_retry_after: Duration::from_millis(cfg.gateway.drain_retry_after_ms),
            read_buffer_bytes: cfg.gateway.read_buffer_bytes,
            backlog: cfg.gateway.backlog,
            admin_token: cfg.admin.token.clone(),
            fault_injection: cfg.admin.fault_injection,
        };
        let gateway = Gateway::new(gw_cfg, bus, Arc::new(NodeAdmin { messaging }));
        let listener: TcpListener = listener::bind(cfg.gateway.listen, cfg.gateway.backlog)
            .map_err(|source| StartError::Bind {
                addr: cfg.gateway.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: cfg.gateway.listen,
            source,
        })?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let app = router(gateway.clone());
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            // Chat frames are small and latency-bound; never wait for Nagle.
            let _ = tcp.set_nodelay(true);
        });
        let http = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "http server failed");
            }
        });
        let upkeep = gateway.metrics().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(Node {
            addr,
            gateway,
            stop_http: Some(stop_tx),
            http,
            jwt_secret,
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

    /// The drain sequence: readyz 503 and no new upgrades, `goaway` to all,
    /// wait out the grace, close the rest with 1012, stop the listener.
    pub async fn drain(mut self) {
        let cfg = &self.gateway.cfg;
        self.gateway
            .drain
            .run(cfg.drain_grace, cfg.write_timeout)
            .await;
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        // In-flight HTTP requests are short; do not wait forever for one.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.http).await;
    }
}
