//! The embedded in-memory backend: nothing to install, lost on exit.
//!
//! Rooms live in 64 independently locked shards so that writers of
//! different rooms never contend; each lock is held for a push or a slice copy.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
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
    frames: Vec<Bytes>,
    ids: Vec<Arc<str>>,
    cids: HashMap<String, u64>,
    cid_order: VecDeque<String>,
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
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            rooms: (0..SHARDS).map(|_| Mutex::default()).collect(),
            users: Mutex::default(),
        }
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

    fn shard(&self, room: &RoomName) -> MutexGuard<'_, HashMap<RoomName, RoomLog>> {
        // Truncation is intended: any bits pick a shard.
        #[allow(clippy::cast_possible_truncation)]
        let i = (room.shard_hash() as usize) % SHARDS;
        lock(&self.rooms[i])
    }

    fn append_now(&self, msg: NewMessage) -> Appended {
        let mut shard = self.shard(&msg.room);
        let log = shard.entry(msg.room.clone()).or_default();
        let key = msg
            .cid
            .as_ref()
            .map(|c| format!("{}\u{0}{}", msg.from, c.dedupe_key()));
        if let Some(seq) = key.as_ref().and_then(|k| log.cids.get(k)) {
            let i = usize::try_from(*seq - 1).unwrap_or(usize::MAX);
            return Appended {
                seq: *seq,
                id: log.ids[i].clone(),
                frame: log.frames[i].clone(),
                duplicate: true,
            };
        }
        let seq = log.frames.len() as u64 + 1;
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
        log.frames.push(frame.clone());
        log.ids.push(id.clone());
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
        Box::pin(async move {
            Ok(self
                .shard(room)
                .get(room)
                .map_or(0, |l| l.frames.len() as u64))
        })
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
            let start = usize::try_from(after)
                .unwrap_or(usize::MAX)
                .min(log.frames.len());
            let end = start.saturating_add(limit as usize).min(log.frames.len());
            Ok(log.frames[start..end].to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        crate::conformance::run_all(&MemoryStore::new()).await;
    }
}
