//! The Store seam: users, room logs, gap-free seq counters and cid dedupe.
//!
//! Services reach data only through [`Store`], so the Redis backend is a
//! second implementation of the same trait, checked by the same conformance
//! suite ([`conformance`]), not a rewrite of the services.
//!
//! - [`bus`]: the Bus seam between gateways and services.
//! - [`memory`]: the embedded backend, sharded maps behind short mutexes.
//! - [`conformance`]: behaviour every backend must show.

#![forbid(unsafe_code)]

pub mod bus;
pub mod conformance;
pub mod memory;

use std::{future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use dialtone_proto::{Name, Ref, RoomName};

pub use memory::MemoryStore;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("user already exists")]
    UserExists,
    /// The backend cannot be reached; the caller answers `unavailable`.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// The one place a store error becomes a protocol answer.
impl From<StoreError> for dialtone_proto::codes::Failure {
    fn from(e: StoreError) -> Self {
        use dialtone_proto::{ErrorCode, codes::Failure};
        match e {
            StoreError::UserExists => Failure::new(ErrorCode::UserExists, "user already exists"),
            StoreError::Unavailable(why) => Failure::retry(
                ErrorCode::Unavailable,
                format!("store unavailable: {why}"),
                1000,
            ),
        }
    }
}

/// A message to append to a room's log.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room: RoomName,
    pub from: Name,
    pub body: String,
    pub cid: Option<Ref>,
    /// Server time, unix milliseconds.
    pub ts: u64,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub id: Arc<str>,
    /// The encoded `message` frame, shared by fan-out and history.
    pub frame: Bytes,
    /// True when the same user's `cid` was already stored: nothing was
    /// appended and `seq`/`id`/`frame` are the original's.
    pub duplicate: bool,
}

/// Everything the services need to persist. Implementations must make
/// `append` atomic per room: next seq + append + cid dedupe as one step.
pub trait Store: Send + Sync + 'static {
    /// Stores a new user with its password hash (PHC string).
    ///
    /// # Errors
    /// [`StoreError::UserExists`] when the name is taken.
    fn create_user<'a>(
        &'a self,
        user: &'a Name,
        hash: String,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The password hash of a registered user, `None` if there is none
    /// (never registered, or known only from token logins).
    fn password_hash<'a>(
        &'a self,
        user: &'a Name,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// Records that a user exists (a token login), without a password.
    fn touch_user<'a>(&'a self, user: &'a Name) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Whether a user registered or ever logged in.
    fn user_known<'a>(&'a self, user: &'a Name) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Appends with the next seq, or returns the original on a repeated cid.
    fn append(&self, msg: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>>;

    /// The room's latest seq, 0 when empty.
    fn latest_seq<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Up to `limit` message frames with seq > `after`, ascending.
    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Bytes>, StoreError>>;
}

/// A message id: unique per room and seq, opaque to clients.
pub fn message_id(room: &RoomName, seq: u64) -> Arc<str> {
    Arc::from(format!("{room}#{seq}"))
}
