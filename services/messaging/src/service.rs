//! [`Messaging`]: routes each request to the shard that owns its room.

use std::sync::Arc;

use bytes::Bytes;
use dialtone_proto::{ErrorCode, Name, RoomName, codes::Failure};
use dialtone_store::{
    Appended, NewMessage, Store, StoreError,
    bus::{ConnId, Member},
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    routes::UserRoutes,
    shard::{Command, Shard},
};

#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// Shard workers; rooms are hashed over them.
    pub shards: usize,
    /// Commands a shard may have queued before callers get `overloaded`.
    pub mailbox: usize,
}

/// Retry hint when a shard's mailbox is full: it drains in well under this.
const SHARD_FULL_RETRY_MS: u64 = 50;

/// The messaging role's front door. Cheap to clone.
#[derive(Clone)]
pub struct Messaging {
    senders: Arc<[mpsc::Sender<Command>]>,
    shards: Arc<[Arc<Shard>]>,
    store: Arc<dyn Store>,
    routes: Arc<UserRoutes>,
}

fn died() -> Failure {
    Failure::internal()
}

impl Messaging {
    /// Builds the shards; their workers are started by whoever supervises
    /// them ([`Messaging::shards`] + [`Shard::run`]).
    pub fn new(store: Arc<dyn Store>, cfg: &MessagingConfig) -> Self {
        let routes = Arc::new(UserRoutes::default());
        let (shards, senders): (Vec<_>, Vec<_>) = (0..cfg.shards.max(1))
            .map(|i| Shard::new(i, cfg.mailbox.max(1), store.clone(), routes.clone()))
            .unzip();
        Messaging {
            senders: senders.into(),
            shards: shards.into(),
            store,
            routes,
        }
    }

    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    pub fn routes(&self) -> &UserRoutes {
        &self.routes
    }

    /// The shard index of a room (stable across nodes and builds).
    pub fn shard_of(&self, room: &RoomName) -> usize {
        // Truncation intended: any bits pick a shard.
        #[allow(clippy::cast_possible_truncation)]
        let i = (room.shard_hash() % self.senders.len() as u64) as usize;
        i
    }

    /// Queues `cmd` without waiting: a full mailbox is `overloaded` at once.
    async fn call<T>(
        &self,
        room: &RoomName,
        cmd: impl FnOnce(oneshot::Sender<Result<T, Failure>>) -> Command,
    ) -> Result<T, Failure> {
        let (tx, rx) = oneshot::channel();
        match self.senders[self.shard_of(room)].try_send(cmd(tx)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(Failure::retry(
                    ErrorCode::Overloaded,
                    "room worker is busy",
                    SHARD_FULL_RETRY_MS,
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(Failure::retry(
                    ErrorCode::Unavailable,
                    "messaging is shutting down",
                    1000,
                ));
            }
        }
        // A dropped reply means the worker died holding this request.
        rx.await.unwrap_or_else(|_| Err(died()))
    }

    pub async fn join(&self, room: RoomName, member: Member) -> Result<u64, Failure> {
        self.call(&room.clone(), |reply| Command::Join {
            room,
            member,
            reply,
        })
        .await
    }

    pub async fn leave(&self, room: RoomName, conn: ConnId) -> Result<(), Failure> {
        self.call(&room.clone(), |reply| Command::Leave {
            room,
            conn,
            reply: Some(reply),
        })
        .await
    }

    /// Leaves without a reply and without ever being refused: a closing
    /// connection must leave its rooms even when shards are busy.
    pub fn leave_detached(&self, room: RoomName, conn: ConnId) {
        let tx = self.senders[self.shard_of(&room)].clone();
        let cmd = Command::Leave {
            room,
            conn,
            reply: None,
        };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = tx.try_send(cmd) {
            tokio::spawn(async move {
                // Closed means shutdown; then nobody needs the leave.
                let _ = tx.send(cmd).await;
            });
        }
    }

    pub async fn send(&self, msg: NewMessage) -> Result<Appended, Failure> {
        self.call(&msg.room.clone(), |reply| Command::Send { msg, reply })
            .await
    }

    pub async fn who(&self, room: RoomName) -> Result<Vec<Name>, Failure> {
        self.call(&room.clone(), |reply| Command::Who { room, reply })
            .await
    }

    /// Reads go straight to the store: they need no ordering with writers
    /// beyond what the store gives, and must not queue behind sends.
    pub async fn history(
        &self,
        room: &RoomName,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Bytes>, Failure> {
        self.store
            .history(room, after, limit)
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(why) => Failure::retry(
                    ErrorCode::Unavailable,
                    format!("store unavailable: {why}"),
                    1000,
                ),
                StoreError::UserExists => Failure::internal(),
            })
    }

    /// Fault injection: makes the shard owning `room` panic.
    pub async fn crash_shard_of(&self, room: &RoomName) -> Result<(), Failure> {
        self.call(room, |reply| Command::Crash { reply }).await
    }
}
