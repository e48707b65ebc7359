//! User → connections, for direct messages, which reach every connection of
//! both users without a join.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use dialtone_proto::Name;
use dialtone_store::bus::{ConnId, Deliver, Member};

const SHARDS: usize = 32;

/// One lock's worth of users and their connections' outboxes.
type Table = HashMap<Name, Vec<(ConnId, Arc<dyn Deliver>)>>;

/// Sharded so that logins and logouts of different users rarely contend.
pub struct UserRoutes {
    shards: Vec<Mutex<Table>>,
}

impl Default for UserRoutes {
    fn default() -> Self {
        UserRoutes {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl UserRoutes {
    fn shard(&self, user: &Name) -> MutexGuard<'_, Table> {
        let h = user
            .as_str()
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        // Entries are replaced whole; a poisoned lock still holds consistent data.
        self.shards[h % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn attach(&self, m: &Member) {
        self.shard(&m.user)
            .entry(m.user.clone())
            .or_default()
            .push((m.conn, m.outbox.clone()));
    }

    pub fn detach(&self, conn: ConnId, user: &Name) {
        let mut shard = self.shard(user);
        if let Some(conns) = shard.get_mut(user) {
            conns.retain(|(c, _)| *c != conn);
            if conns.is_empty() {
                shard.remove(user);
            }
        }
    }

    /// Delivers to every connection of `user`; returns how many.
    pub fn deliver(&self, user: &Name, frame: &Bytes) -> u64 {
        let shard = self.shard(user);
        let Some(conns) = shard.get(user) else {
            return 0;
        };
        for (_, out) in conns {
            out.deliver(frame);
        }
        conns.len() as u64
    }

    pub fn is_online(&self, user: &Name) -> bool {
        self.shard(user).contains_key(user)
    }
}
