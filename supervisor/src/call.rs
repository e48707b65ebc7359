//! `gen_server:call` with a monitor: a typed request/reply mailbox that
//! outlives the worker serving it.
//!
//! [`channel`] gives a [`ServerRef`] for callers and a [`Mailbox`] for the
//! worker factory. Each incarnation of the worker [`take`](Mailbox::take)s the
//! mailbox, so requests queued while a worker restarts are served by the next
//! one. Each call carries a oneshot reply slot; if the worker drops it, by
//! returning, panicking or being aborted while holding the request, the slot's
//! `Drop` tells the caller at once ([`CallError::WorkerDied`]): that drop is
//! the monitor. A request still queued when the last [`Mailbox`] goes away
//! gets [`CallError::Stopped`] instead.
//!
//! Per call: one oneshot allocation, one bounded-queue slot, no other
//! allocation. A full queue is an error at once, never a wait.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard, mpsc, oneshot};

/// Why a call got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The worker ended (error, panic, abort) while holding this request.
    #[error("worker died while handling the request")]
    WorkerDied,
    /// No reply within the timeout; the request may still be served later.
    #[error("call timed out")]
    Timeout,
    /// The mailbox is full; nothing was enqueued.
    #[error("mailbox full")]
    Full,
    /// The server is gone for good: every [`Mailbox`] was dropped.
    #[error("server stopped")]
    Stopped,
}

/// What travels back: the answer, or `WorkerDied` sent by a dropped
/// [`ReplyTo`]. A reply slot dropped while still queued sends nothing, which
/// is how the caller tells "the server is gone" from "the worker died".
type Reply<Resp> = Result<Resp, CallError>;

struct Envelope<Req, Resp> {
    request: Req,
    reply: Option<oneshot::Sender<Reply<Resp>>>,
}

/// A mailbox queue of `capacity` requests shared by every incarnation.
#[must_use]
pub fn channel<Req, Resp>(capacity: usize) -> (ServerRef<Req, Resp>, Mailbox<Req, Resp>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        ServerRef { tx },
        Mailbox {
            rx: Arc::new(Mutex::new(rx)),
        },
    )
}

/// The callers' side. Clone it freely.
pub struct ServerRef<Req, Resp> {
    tx: mpsc::Sender<Envelope<Req, Resp>>,
}

impl<Req, Resp> Clone for ServerRef<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Req, Resp> std::fmt::Debug for ServerRef<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerRef")
            .field("stopped", &self.tx.is_closed())
            .finish()
    }
}

impl<Req, Resp> ServerRef<Req, Resp> {
    /// Send `request` and wait at most `timeout` for the reply.
    ///
    /// # Errors
    /// `Full` or `Stopped` at once; `WorkerDied` as soon as the worker holding
    /// the request ends; `Timeout` otherwise. Never waits longer than `timeout`.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the reply; the request may still be served.
    pub async fn call(&self, request: Req, timeout: Duration) -> Result<Resp, CallError> {
        self.try_call(request)?.wait(timeout).await
    }

    /// Enqueue `request` without waiting and return the pending reply.
    ///
    /// # Errors
    /// `Full` when the mailbox is full, `Stopped` when the server is gone.
    pub fn try_call(&self, request: Req) -> Result<PendingReply<Resp>, CallError> {
        let (reply, rx) = oneshot::channel();
        self.enqueue(Envelope {
            request,
            reply: Some(reply),
        })?;
        Ok(PendingReply { rx })
    }

    /// Fire and forget: enqueue `request`; no reply is expected.
    ///
    /// # Errors
    /// `Full` when the mailbox is full, `Stopped` when the server is gone.
    pub fn cast(&self, request: Req) -> Result<(), CallError> {
        self.enqueue(Envelope {
            request,
            reply: None,
        })
    }

    /// Whether every [`Mailbox`] has been dropped.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    fn enqueue(&self, envelope: Envelope<Req, Resp>) -> Result<(), CallError> {
        self.tx.try_send(envelope).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CallError::Full,
            mpsc::error::TrySendError::Closed(_) => CallError::Stopped,
        })
    }
}

/// A reply that was asked for with [`ServerRef::try_call`].
pub struct PendingReply<Resp> {
    rx: oneshot::Receiver<Reply<Resp>>,
}

impl<Resp> PendingReply<Resp> {
    /// Wait at most `timeout` for the reply.
    ///
    /// # Errors
    /// `WorkerDied`, `Stopped` or `Timeout`, as for [`ServerRef::call`].
    pub async fn wait(self, timeout: Duration) -> Result<Resp, CallError> {
        match tokio::time::timeout(timeout, self.rx).await {
            Ok(Ok(reply)) => reply,
            // Dropped without a word: it never left the queue, and the queue
            // itself is gone.
            Ok(Err(_)) => Err(CallError::Stopped),
            Err(_elapsed) => Err(CallError::Timeout),
        }
    }
}

/// The server's side, given to the worker factory and shared by every
/// incarnation. Dropping every clone stops the server.
pub struct Mailbox<Req, Resp> {
    rx: Arc<Mutex<mpsc::Receiver<Envelope<Req, Resp>>>>,
}

impl<Req, Resp> Clone for Mailbox<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            rx: self.rx.clone(),
        }
    }
}

impl<Req, Resp> std::fmt::Debug for Mailbox<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").finish_non_exhaustive()
    }
}

impl<Req, Resp> Mailbox<Req, Resp> {
    /// Become the one worker reading this mailbox. Waits while a previous
    /// incarnation still holds it (it is released when that task ends).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn take(&self) -> Inbox<Req, Resp> {
        Inbox {
            rx: self.rx.clone().lock_owned().await,
        }
    }
}

impl<Req, Resp> Mailbox<Req, Resp> {
    /// Receive one request while sharing the queue with other workers (a
    /// pool of identical workers): the queue is held only for this receive.
    /// Do not mix with [`take`](Self::take) on the same mailbox: a held
    /// [`Inbox`] blocks this until it is dropped.
    ///
    /// # Cancel safety
    /// Cancel safe: no request is lost if this is dropped unfinished.
    pub async fn recv(&self) -> Option<Request<Req, Resp>> {
        self.rx.lock().await.recv().await.map(Request::from)
    }
}

impl<Req, Resp> From<Envelope<Req, Resp>> for Request<Req, Resp> {
    fn from(e: Envelope<Req, Resp>) -> Self {
        Self {
            request: e.request,
            reply: ReplyTo { tx: e.reply },
        }
    }
}

/// Exclusive read access to a mailbox for one worker incarnation.
pub struct Inbox<Req, Resp> {
    rx: OwnedMutexGuard<mpsc::Receiver<Envelope<Req, Resp>>>,
}

impl<Req, Resp> Inbox<Req, Resp> {
    /// The next request; `None` once every [`ServerRef`] is dropped and the
    /// queue is empty.
    ///
    /// # Cancel safety
    /// Cancel safe: no request is lost if this is dropped unfinished.
    pub async fn recv(&mut self) -> Option<Request<Req, Resp>> {
        self.rx.recv().await.map(Request::from)
    }

    /// Requests waiting in the queue.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no request is waiting.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// One request and where its answer goes.
pub struct Request<Req, Resp> {
    /// The request itself.
    pub request: Req,
    /// Where the reply goes; dropping it unanswered tells the caller
    /// [`CallError::WorkerDied`].
    pub reply: ReplyTo<Resp>,
}

/// The reply slot of one request (empty for casts).
///
/// Dropping it unanswered, by returning, panicking or being aborted, tells
/// the caller [`CallError::WorkerDied`]: this is the monitor.
pub struct ReplyTo<Resp> {
    tx: Option<oneshot::Sender<Reply<Resp>>>,
}

impl<Resp> ReplyTo<Resp> {
    /// Answer the caller. Returns `false` if nobody is waiting any more (the
    /// call timed out, was cancelled, or was a cast).
    pub fn send(mut self, response: Resp) -> bool {
        self.tx
            .take()
            .is_some_and(|tx| tx.send(Ok(response)).is_ok())
    }

    /// Whether nobody waits for this reply, so the work may be skipped.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.tx.as_ref().is_none_or(oneshot::Sender::is_closed)
    }
}

impl<Resp> Drop for ReplyTo<Resp> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // The caller may be gone already; then nobody needs to know.
            let _ = tx.send(Err(CallError::WorkerDied));
        }
    }
}
