//! One messaging shard: the single writer of the rooms hashed to it.
//!
//! The worker owns ordering (a room's appends and fan-outs happen one at a
//! time, in seq order); the membership table lives outside the worker task,
//! like an ETS table with an heir, so a worker that panics and is restarted
//! finds its rooms' members where they were, and takes seq from the store.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use dialtone_proto::{Name, RoomName, codes::Failure, server};
use dialtone_store::{
    Appended, NewMessage, Store,
    bus::{ConnId, Member},
};
use supervisor::{ChildContext, ChildError, Faults, Mailbox, ServerRef, call};

use crate::{metrics::hot, routes::UserRoutes};

/// A request to a shard.
pub enum Op {
    Join { room: RoomName, member: Member },
    Leave { room: RoomName, conn: ConnId },
    Send(NewMessage),
    Who(RoomName),
}

/// A shard's answer, one variant per [`Op`].
#[derive(Debug)]
pub enum Done {
    Seq(u64),
    Left,
    Appended(Appended),
    Users(Vec<Name>),
}

/// The shard's mailbox: `gen_server:call` semantics from the supervisor
/// crate. A worker that dies holding a request drops its reply slot, which
/// the caller sees as `WorkerDied` (answered `internal`); queued requests
/// wait for the restarted worker.
pub type ShardRef = ServerRef<Op, Result<Done, Failure>>;

#[derive(Default)]
struct Room {
    members: HashMap<ConnId, Member>,
    /// Connections per user, for presence (first in / last out).
    users: HashMap<Name, u32>,
}

impl Room {
    fn broadcast(&self, frame: &Bytes) -> u64 {
        for m in self.members.values() {
            m.outbox.deliver(frame);
        }
        self.members.len() as u64
    }
}

/// What survives a worker restart.
#[derive(Default)]
pub struct Table {
    rooms: HashMap<RoomName, Room>,
}

/// Everything a shard worker needs; shared by its incarnations.
pub struct Shard {
    pub id: usize,
    mailbox: Mailbox<Op, Result<Done, Failure>>,
    faults: Faults,
    /// `messaging.shard.<id>`: armed, the next request panics this worker.
    fault_point: String,
    table: Mutex<Table>,
    store: Arc<dyn Store>,
    routes: Arc<UserRoutes>,
}

impl Shard {
    pub fn new(
        id: usize,
        capacity: usize,
        store: Arc<dyn Store>,
        routes: Arc<UserRoutes>,
        faults: Faults,
    ) -> (Arc<Shard>, ShardRef) {
        let (tx, mailbox) = call::channel(capacity);
        let shard = Shard {
            id,
            mailbox,
            faults,
            fault_point: format!("messaging.shard.{id}"),
            table: Mutex::default(),
            store,
            routes,
        };
        (Arc::new(shard), tx)
    }

    /// Only this shard's worker locks the table, so the lock is uncontended;
    /// a worker that panicked mid-update leaves whole entries behind.
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker loop: serves the mailbox until shutdown. Run it under a
    /// supervisor, which restarts it after a panic; queued requests wait in
    /// the mailbox meanwhile.
    ///
    /// # Errors
    /// Never; a worker ends by shutdown or by panicking.
    pub async fn run(self: Arc<Self>, ctx: ChildContext) -> Result<(), ChildError> {
        let mut inbox = self.mailbox.take().await;
        loop {
            tokio::select! {
                () = ctx.cancelled() => return Ok(()),
                req = inbox.recv() => {
                    let Some(req) = req else { return Ok(()) };
                    // Drills: panic while holding this request's reply slot.
                    self.faults.check(&self.fault_point);
                    let done = self.handle(req.request).await;
                    // The caller may have gone (connection closed); nothing to do then.
                    let _ = req.reply.send(done);
                }
            }
        }
    }

    async fn handle(&self, op: Op) -> Result<Done, Failure> {
        match op {
            Op::Join { room, member } => {
                let seq = self.store.latest_seq(&room).await.map_err(Failure::from)?;
                self.join(&room, member);
                Ok(Done::Seq(seq))
            }
            Op::Leave { room, conn } => {
                self.leave(&room, conn);
                Ok(Done::Left)
            }
            Op::Send(msg) => self.send(msg).await.map(Done::Appended),
            Op::Who(room) => {
                let mut users: Vec<Name> = self
                    .table()
                    .rooms
                    .get(&room)
                    .map(|r| r.users.keys().cloned().collect())
                    .unwrap_or_default();
                users.sort();
                Ok(Done::Users(users))
            }
        }
    }

    fn join(&self, room: &RoomName, member: Member) {
        // Parties of a direct room get its messages through their user
        // routes; registering them as members would deliver twice.
        if room.parties().is_some() {
            return;
        }
        let mut table = self.table();
        let r = table.rooms.entry(room.clone()).or_default();
        if r.members.contains_key(&member.conn) {
            return;
        }
        let user = member.user.clone();
        r.members.insert(member.conn, member);
        let count = r.users.entry(user.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            let n = r.broadcast(&server::presence(room.as_str(), user.as_str(), true));
            hot().presence_out.increment(n);
        }
    }

    fn leave(&self, room: &RoomName, conn: ConnId) {
        let mut table = self.table();
        let Some(r) = table.rooms.get_mut(room) else {
            return;
        };
        let Some(m) = r.members.remove(&conn) else {
            return;
        };
        let last = match r.users.get_mut(&m.user) {
            Some(c) if *c > 1 => {
                *c -= 1;
                false
            }
            _ => {
                r.users.remove(&m.user);
                true
            }
        };
        if last {
            let n = r.broadcast(&server::presence(room.as_str(), m.user.as_str(), false));
            hot().presence_out.increment(n);
        }
        if r.members.is_empty() {
            table.rooms.remove(room);
        }
    }

    async fn send(&self, msg: NewMessage) -> Result<Appended, Failure> {
        let room = msg.room.clone();
        let appended = self.store.append(msg).await.map_err(Failure::from)?;
        if appended.duplicate {
            // Already delivered when first stored; a retry must not repeat it.
            return Ok(appended);
        }
        let delivered = match room.parties() {
            Some((a, b)) => {
                let mut n = self.routes.deliver(a, &appended.frame);
                if a != b {
                    n += self.routes.deliver(b, &appended.frame);
                }
                n
            }
            None => self
                .table()
                .rooms
                .get(&room)
                .map_or(0, |r| r.broadcast(&appended.frame)),
        };
        hot().messages_out.increment(delivered);
        Ok(appended)
    }
}
