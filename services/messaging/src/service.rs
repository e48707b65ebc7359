//! [`Messaging`]: routes each request to the shard that owns its room.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use dialtone_proto::{ErrorCode, Name, RoomName, codes::Failure};
use dialtone_store::{
    Appended, NewMessage, Store,
    bus::{ConnId, Member},
};
use supervisor::{CallError, Faults};

use crate::{
    routes::UserRoutes,
    shard::{Done, Op, Shard, ShardRef},
};

#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// Shard workers; rooms are hashed over them.
    pub shards: usize,
    /// Requests a shard may have queued before callers get `overloaded`.
    pub mailbox: usize,
    /// Longest wait for a shard's answer before `unavailable`.
    pub call_timeout: Duration,
}

/// Retry hint when a shard's mailbox is full: it drains in well under this.
const SHARD_FULL_RETRY_MS: u64 = 50;

/// The messaging role's front door. Cheap to clone.
#[derive(Clone)]
pub struct Messaging {
    senders: Arc<[ShardRef]>,
    shards: Arc<[Arc<Shard>]>,
    call_timeout: Duration,
    store: Arc<dyn Store>,
    routes: Arc<UserRoutes>,
}

fn call_failure(e: CallError) -> Failure {
    match e {
        CallError::Full => Failure::retry(
            ErrorCode::Overloaded,
            "room worker is busy",
            SHARD_FULL_RETRY_MS,
        ),
        // The worker died holding this very request.
        CallError::WorkerDied => Failure::internal(),
        CallError::Timeout | CallError::Stopped => {
            Failure::retry(ErrorCode::Unavailable, "room worker is restarting", 1000)
        }
    }
}

impl Messaging {
    /// Builds the shards; their workers are started by whoever supervises
    /// them ([`Messaging::shards`] + [`Shard::run`]).
    pub fn new(store: Arc<dyn Store>, cfg: &MessagingConfig, faults: &Faults) -> Self {
        let routes = Arc::new(UserRoutes::default());
        let (shards, senders): (Vec<_>, Vec<_>) = (0..cfg.shards.max(1))
            .map(|i| {
                Shard::new(
                    i,
                    cfg.mailbox.max(1),
                    store.clone(),
                    routes.clone(),
                    faults.clone(),
                )
            })
            .unzip();
        Messaging {
            senders: senders.into(),
            shards: shards.into(),
            call_timeout: cfg.call_timeout,
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

    /// Queues `op` without waiting: a full mailbox is `overloaded` at once.
    async fn call(&self, room: &RoomName, op: Op) -> Result<Done, Failure> {
        let pending = self.senders[self.shard_of(room)]
            .try_call(op)
            .map_err(call_failure)?;
        pending
            .wait(self.call_timeout)
            .await
            .map_err(call_failure)?
    }

    pub async fn join(&self, room: RoomName, member: Member) -> Result<u64, Failure> {
        match self.call(&room.clone(), Op::Join { room, member }).await? {
            Done::Seq(seq) => Ok(seq),
            other => Err(mismatch(&other)),
        }
    }

    pub async fn leave(&self, room: RoomName, conn: ConnId) -> Result<(), Failure> {
        self.call(&room.clone(), Op::Leave { room, conn })
            .await
            .map(drop)
    }

    /// Leaves without a reply and without ever being refused: a closing
    /// connection must leave its rooms even when its shard is busy.
    pub fn leave_detached(&self, room: RoomName, conn: ConnId) {
        let shard = self.senders[self.shard_of(&room)].clone();
        let leave = move |room: &RoomName| Op::Leave {
            room: room.clone(),
            conn,
        };
        if let Err(CallError::Full) = shard.cast(leave(&room)) {
            tokio::spawn(async move {
                // A full mailbox drains in milliseconds; retry until it takes
                // the leave, giving up only if the shard is gone for good.
                for _ in 0..3000 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    match shard.cast(leave(&room)) {
                        Err(CallError::Full) => {}
                        _ => return,
                    }
                }
                tracing::error!(%room, conn, "could not queue a leave for 30 s");
            });
        }
    }

    pub async fn send(&self, msg: NewMessage) -> Result<Appended, Failure> {
        match self.call(&msg.room.clone(), Op::Send(msg)).await? {
            Done::Appended(a) => Ok(a),
            other => Err(mismatch(&other)),
        }
    }

    pub async fn who(&self, room: RoomName) -> Result<Vec<Name>, Failure> {
        match self.call(&room.clone(), Op::Who(room)).await? {
            Done::Users(u) => Ok(u),
            other => Err(mismatch(&other)),
        }
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
            .map_err(Failure::from)
    }
}

fn mismatch(d: &Done) -> Failure {
    tracing::error!(?d, "shard answered with the wrong kind of reply");
    Failure::internal()
}
