//! The drain sequence (ranch-style suspend → wait → stop): stop admitting,
//! tell every connection `goaway`, give them a grace period to leave, then
//! close the rest with 1012.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, watch};

use crate::telemetry::hot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// `goaway` sent; connections may finish and leave.
    GoAway,
    /// Grace over: close with 1012 now.
    Close,
}

/// Shared by the router (admission, readiness) and every connection task.
pub struct Drain {
    phase: watch::Sender<Phase>,
    open: AtomicUsize,
    zero: Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            phase: watch::Sender::new(Phase::Running),
            open: AtomicUsize::new(0),
            zero: Notify::new(),
        }
    }
}

/// Counts one open connection until dropped.
pub struct ConnGuard(Arc<Drain>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        hot().connections.decrement(1.0);
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

impl Drain {
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn opened(self: &Arc<Self>) -> ConnGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        hot().connections.increment(1.0);
        ConnGuard(self.clone())
    }

    async fn until_empty(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.zero.notified();
                if self.open_connections() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Runs the whole sequence; returns when every connection is gone or
    /// `close_timeout` after the close order.
    pub async fn run(&self, grace: Duration, close_timeout: Duration) {
        self.phase.send_replace(Phase::GoAway);
        tracing::info!(
            open = self.open_connections(),
            ?grace,
            "draining: goaway sent"
        );
        if !self.until_empty(grace).await {
            tracing::info!(
                open = self.open_connections(),
                "drain grace over: closing with 1012"
            );
            self.phase.send_replace(Phase::Close);
            if !self.until_empty(close_timeout).await {
                tracing::warn!(
                    open = self.open_connections(),
                    "connections did not close in time"
                );
            }
        }
    }
}
