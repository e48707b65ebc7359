//! The in-process Bus: a gateway's calls go straight to this node's auth
//! and messaging roles. The cluster Bus (Redis Streams + pub/sub) would be a
//! second implementation of the same trait.

use std::sync::Arc;

use bytes::Bytes;
use dialtone_auth::{Auth, Issued};
use dialtone_messaging::Messaging;
use dialtone_proto::{Name, Ref, RoomName, codes::Failure};
use dialtone_store::{
    BoxFuture, NewMessage, Store,
    bus::{Bus, ConnId, LoggedIn, Member, Sent},
};

pub struct LocalBus {
    pub auth: Auth,
    pub messaging: Messaging,
    pub store: Arc<dyn Store>,
}

fn logged_in(i: Issued) -> LoggedIn {
    LoggedIn {
        user: i.user,
        token: i.token,
        expires_at: i.expires_at,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Bus for LocalBus {
    fn register(&self, user: Name, password: String) -> BoxFuture<'_, Result<LoggedIn, Failure>> {
        Box::pin(async move { self.auth.register(user, password).await.map(logged_in) })
    }

    fn login_password(
        &self,
        user: Name,
        password: String,
    ) -> BoxFuture<'_, Result<LoggedIn, Failure>> {
        Box::pin(async move {
            self.auth
                .login_password(user, password)
                .await
                .map(logged_in)
        })
    }

    fn login_token(&self, token: String) -> BoxFuture<'_, Result<LoggedIn, Failure>> {
        Box::pin(async move { self.auth.login_token(&token).await.map(logged_in) })
    }

    fn verify_token(&self, token: &str) -> Result<Name, Failure> {
        self.auth.verify(token)
    }

    fn attach(&self, member: Member) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(async move {
            self.auth.touch(&member.user).await?;
            self.messaging.routes().attach(&member);
            Ok(())
        })
    }

    fn detach(&self, conn: ConnId, user: &Name, rooms: Vec<RoomName>) {
        self.messaging.routes().detach(conn, user);
        for room in rooms {
            self.messaging.leave_detached(room, conn);
        }
    }

    fn join(&self, room: RoomName, member: Member) -> BoxFuture<'_, Result<u64, Failure>> {
        Box::pin(self.messaging.join(room, member))
    }

    fn leave(&self, room: RoomName, conn: ConnId) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(self.messaging.leave(room, conn))
    }

    fn send(
        &self,
        room: RoomName,
        from: Name,
        body: String,
        cid: Option<Ref>,
    ) -> BoxFuture<'_, Result<Sent, Failure>> {
        Box::pin(async move {
            let a = self
                .messaging
                .send(NewMessage {
                    room: room.clone(),
                    from,
                    body,
                    cid,
                    ts: now_ms(),
                })
                .await?;
            Ok(Sent {
                room,
                seq: a.seq,
                id: a.id,
            })
        })
    }

    fn user_known<'a>(&'a self, user: &'a Name) -> BoxFuture<'a, Result<bool, Failure>> {
        Box::pin(async move { self.store.user_known(user).await.map_err(Failure::from) })
    }

    fn history(
        &self,
        room: RoomName,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, Failure>> {
        Box::pin(async move { self.messaging.history(&room, after, limit).await })
    }

    fn who(&self, room: RoomName) -> BoxFuture<'_, Result<Vec<Name>, Failure>> {
        Box::pin(async move {
            match room.parties() {
                // A direct room has no joins: its members are its online parties.
                Some((a, b)) => {
                    let mut users: Vec<Name> = [a, b]
                        .into_iter()
                        .filter(|u| self.messaging.routes().is_online(u))
                        .cloned()
                        .collect();
                    users.dedup();
                    Ok(users)
                }
                None => self.messaging.who(room).await,
            }
        })
    }
}
