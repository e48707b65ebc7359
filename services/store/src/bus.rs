//! The Bus seam: how a gateway reaches the auth and messaging roles, and how
//! fan-out reaches connections. In one process it is plain calls into tokio
//! tasks (`LocalBus` in the node); in a cluster it is Redis Streams and
//! pub/sub. The gateway sees only this trait.

use std::sync::Arc;

use bytes::Bytes;
use dialtone_proto::{Name, Ref, RoomName, codes::Failure};

use crate::BoxFuture;

/// A connection's identity, unique within a node.
pub type ConnId = u64;

/// Where fan-out puts frames for one connection: a bounded outbox that never
/// blocks the caller (an overflow closes that connection, nobody else waits).
pub trait Deliver: Send + Sync + 'static {
    fn deliver(&self, frame: &Bytes);
}

/// A connection joining a room.
#[derive(Clone)]
pub struct Member {
    pub conn: ConnId,
    pub user: Name,
    pub outbox: Arc<dyn Deliver>,
}

/// An acknowledged `send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub room: RoomName,
    pub seq: u64,
    pub id: Arc<str>,
}

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    pub user: Name,
    pub token: String,
    pub expires_at: u64,
}

/// Every service call a gateway makes. Errors are protocol failures, ready
/// to send to the client.
pub trait Bus: Send + Sync + 'static {
    fn register(&self, user: Name, password: String) -> BoxFuture<'_, Result<LoggedIn, Failure>>;
    fn login_password(
        &self,
        user: Name,
        password: String,
    ) -> BoxFuture<'_, Result<LoggedIn, Failure>>;
    fn login_token(&self, token: String) -> BoxFuture<'_, Result<LoggedIn, Failure>>;
    /// Checks a token without a round trip (the upgrade path must be cheap).
    ///
    /// # Errors
    /// `unauthorized`.
    fn verify_token(&self, token: &str) -> Result<Name, Failure>;

    /// Makes `member`'s connection reachable for direct messages to its
    /// user, and records the user as known.
    fn attach(&self, member: Member) -> BoxFuture<'_, Result<(), Failure>>;
    /// Undoes [`Bus::attach`] and leaves `rooms`; never rejected.
    fn detach(&self, conn: ConnId, user: &Name, rooms: Vec<RoomName>);

    /// Joins; answers the room's latest seq.
    fn join(&self, room: RoomName, member: Member) -> BoxFuture<'_, Result<u64, Failure>>;
    fn leave(&self, room: RoomName, conn: ConnId) -> BoxFuture<'_, Result<(), Failure>>;
    fn send(
        &self,
        room: RoomName,
        from: Name,
        body: String,
        cid: Option<Ref>,
    ) -> BoxFuture<'_, Result<Sent, Failure>>;
    /// Whether a user exists (registered or ever logged in), for direct messages.
    fn user_known<'a>(&'a self, user: &'a Name) -> BoxFuture<'a, Result<bool, Failure>>;
    fn history(
        &self,
        room: RoomName,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, Failure>>;
    fn who(&self, room: RoomName) -> BoxFuture<'_, Result<Vec<Name>, Failure>>;
}
