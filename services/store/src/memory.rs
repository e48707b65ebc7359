//! The embedded in-memory backend: nothing to install, lost on exit.
//!
//! Rooms live in 64 independently locked shards so that writers of
//! different rooms never contend; each lock is held for a push or a slice copy.
//! Each room keeps its newest `retention` messages: memory stays bounded on a
//! long run, and `history` serves what is kept.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Mutex, MutexGuard},
};

use bytes::Bytes;
use dialtone_proto::{Name, RoomName, server};

use crate::{Appended, BoxFuture, NewMessage, Store, StoreError, message_id};

const SHARDS: usize = 64;
/// How many recent cids each room remembers for dedupe. A retry comes
/// seconds after the original, long before this many newer sends.
pub const CID_WINDOW: usize = 16_384;

#[derive(Default)]
struct RoomLog {
    /// Seq of the message at `frames[0]`; the room's latest seq is
    /// `first_seq + frames.len() - 1` (or `first_seq - 1` when empty).
    first_seq: u64,
    frames: VecDeque<Bytes>,
    cids: HashMap<String, u64>,
    cid_order: VecDeque<String>,
}

impl RoomLog {
    fn latest(&self) -> u64 {
        (self.first_seq + self.frames.len() as u64).saturating_sub(1)
    }

    fn frame(&self, seq: u64) -> Option<&Bytes> {
        let i = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.frames.get(i)
    }
}

#[derive(Default)]
struct Users {
    hashes: HashMap<Name, String>,
    known: HashSet<Name>,
}

/// In-memory [`Store`].
pub struct MemoryStore {
    rooms: Vec<Mutex<HashMap<RoomName, RoomLog>>>,
    users: Mutex<Users>,
    retention: usize,
}

/// Messages kept per room by default: ~25 MB per busy room at 250 bytes each.
pub const DEFAULT_RETENTION: usize = 100_000;

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_retention(DEFAULT_RETENTION)
    }
}

/// A poisoned lock only means another thread panicked mid-update of a map
/// whose entries are each written in one step; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the newest `retention` messages of each room (at least 1).
    pub fn with_retention(retention: usize) -> Self {
        MemoryStore {
            rooms: (0..SHARDS).map(|_| Mutex::default()).collect(),
            users: Mutex::default(),
            retention: retention.max(1),
        }
    }

    fn shard(&self, room: &RoomName) -> MutexGuard<'_, HashMap<RoomName, RoomLog>> {
        // Truncation is intended: any bits pick a shard.
        #[allow(clippy::cast_possible_truncation)]
        let i = (room.shard_hash() as usize) % SHARDS;
        lock(&self.rooms[i])
    }

    fn append_now(&self, msg: NewMessage) -> Appended {
        let mut shard = self.shard(&msg.room);
        let log = shard.entry(msg.room.clone()).or_insert_with(|| RoomLog {
            first_seq: 1,
            ..RoomLog::default()
        });
        let key = msg
            .cid
            .as_ref()
            .map(|c| format!("{}\u{0}{}", msg.from, c.dedupe_key()));
        if let Some(&seq) = key.as_ref().and_then(|k| log.cids.get(k)) {
            return Appended {
                seq,
                id: message_id(&msg.room, seq),
                // A duplicate is never fanned out again; past retention its
                // frame is gone, but seq and id still answer the retry.
                frame: log.frame(seq).cloned().unwrap_or_default(),
                duplicate: true,
            };
        }
        let seq = log.latest() + 1;
        let id = message_id(&msg.room, seq);
        let frame = server::message(&server::Message {
            room: msg.room.as_str(),
            seq,
            id: &id,
            from: msg.from.as_str(),
            body: &msg.body,
            ts: msg.ts,
            cid: msg.cid.as_ref(),
        });
        log.frames.push_back(frame.clone());
        if log.frames.len() > self.retention {
            log.frames.pop_front();
            log.first_seq += 1;
        }
        if let Some(k) = key {
            if log.cid_order.len() == CID_WINDOW
                && let Some(old) = log.cid_order.pop_front()
            {
                log.cids.remove(&old);
            }
            log.cids.insert(k.clone(), seq);
            log.cid_order.push_back(k);
        }
        Appended {
            seq,
            id,
            frame,
            duplicate: false,
        }
    }
}

impl Store for MemoryStore {
    fn create_user<'a>(
        &'a self,
        user: &'a Name,
        hash: String,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut users = lock(&self.users);
            if users.hashes.contains_key(user) {
                return Err(StoreError::UserExists);
            }
            users.hashes.insert(user.clone(), hash);
            users.known.insert(user.clone());
            Ok(())
        })
    }

    fn password_hash<'a>(
        &'a self,
        user: &'a Name,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move { Ok(lock(&self.users).hashes.get(user).cloned()) })
    }

    fn touch_user<'a>(&'a self, user: &'a Name) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut users = lock(&self.users);
            if !users.known.contains(user) {
                users.known.insert(user.clone());
            }
            Ok(())
        })
    }

    fn user_known<'a>(&'a self, user: &'a Name) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Ok(lock(&self.users).known.contains(user)) })
    }

    fn append(&self, msg: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let appended = self.append_now(msg);
        Box::pin(async move { Ok(appended) })
    }

    fn latest_seq<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move { Ok(self.shard(room).get(room).map_or(0, RoomLog::latest)) })
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Bytes>, StoreError>> {
        Box::pin(async move {
            let shard = self.shard(room);
            let Some(log) = shard.get(room) else {
                return Ok(Vec::new());
            };
            // Messages before `first_seq` are past retention: start at the oldest kept.
            let from = after.saturating_add(1).max(log.first_seq);
            let skip = usize::try_from(from - log.first_seq).unwrap_or(usize::MAX);
            Ok(log
                .frames
                .iter()
                .skip(skip)
                .take(limit as usize)
                .cloned()
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use dialtone_proto::{Name, Ref};

    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        crate::conformance::run_all(&MemoryStore::new()).await;
    }

    fn msg(room: &RoomName, cid: Option<&str>) -> NewMessage {
        NewMessage {
            room: room.clone(),
            from: Name::parse("u").unwrap(),
            body: "b".into(),
            cid: cid.map(|c| Ref::Str(c.into())),
            ts: 1,
        }
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_messages_and_seq_keeps_counting() {
        let store = MemoryStore::with_retention(3);
        let room = RoomName::parse("r").unwrap();
        store.append(msg(&room, Some("first"))).await.unwrap();
        for _ in 0..4 {
            store.append(msg(&room, None)).await.unwrap();
        }
        assert_eq!(store.latest_seq(&room).await, Ok(5));
        let seqs = |frames: Vec<Bytes>| -> Vec<u64> {
            frames
                .iter()
                .map(|f| {
                    serde_json::from_slice::<serde_json::Value>(f).unwrap()["seq"]
                        .as_u64()
                        .unwrap()
                })
                .collect()
        };
        assert_eq!(seqs(store.history(&room, 0, 10).await.unwrap()), [3, 4, 5]);
        assert_eq!(seqs(store.history(&room, 3, 10).await.unwrap()), [4, 5]);
        // A retry of an evicted message still gets its original seq and id.
        let retry = store.append(msg(&room, Some("first"))).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!((retry.seq, &*retry.id), (1, "r#1"));
        assert_eq!(store.latest_seq(&room).await, Ok(5));
    }
}
