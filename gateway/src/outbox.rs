//! A connection's bounded outbound queue.
//!
//! Fan-out pushes here and never waits: a push into a full queue marks the
//! connection a slow consumer, drops the frame and wakes the connection task,
//! which closes with 1013. Nobody else in the room is slowed down.
//!
//! Two bounds. A connection is a slow consumer when `capacity` frames pile
//! up while its socket takes nothing (the client is not reading: the
//! connection task checks [`Outbox::backed_up`] during a blocked write). When
//! the node itself is behind, its tasks run late and queues grow with the
//! client reading fine; they may then hold [`LATE_ALLOWANCE`] × `capacity`
//! before the push fails, which bounds memory either way.
//!
//! A `VecDeque` behind a mutex instead of a tokio channel: an idle
//! connection's queue allocates nothing, where a channel allocates a block
//! of slots up front, and memory per idle connection is a requirement.

use std::{
    collections::VecDeque,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
};

use bytes::Bytes;
use dialtone_store::bus::Deliver;
use tokio::{sync::Notify, time::Instant};

/// Frames waiting, and since when the oldest has waited.
#[derive(Default)]
pub struct Pending {
    pub frames: VecDeque<Bytes>,
    /// Set when the queue goes from empty to not empty: the age of the
    /// oldest frame at write time is the connection's delivery lag.
    pub since: Option<Instant>,
}

/// How many times `capacity` a queue may hold while its connection task is
/// late rather than its client slow. On a node starved to a quarter core at
/// 10x its send capacity, 840 of 2,000 clients were closed 1013 within
/// seconds: their tasks had not run for 1-4.5 s, while the kernel send
/// queues of their sockets were near empty (they read everything they got).
/// Each reconnected, re-read what it missed with `history`, and so added to
/// the load that made the node late (docs/OVERLOAD.md).
pub const LATE_ALLOWANCE: usize = 4;

pub struct Outbox {
    queue: Mutex<Pending>,
    wake: Notify,
    overflowed: AtomicBool,
    /// How many frames the last batch had: the next batch's first push
    /// makes room for as many at once instead of doubling up from four.
    last_batch: AtomicU32,
    /// Frames that may wait while the socket takes nothing.
    capacity: usize,
    /// Frames that may wait at all.
    limit: usize,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Outbox {
            queue: Mutex::new(Pending::default()),
            wake: Notify::new(),
            overflowed: AtomicBool::new(false),
            last_batch: AtomicU32::new(0),
            capacity,
            limit: capacity.saturating_mul(LATE_ALLOWANCE),
        }
    }

    /// Pushes and unlocks in one step, so a poisoned lock holds whole frames.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame; returns false (and marks overflow) at the limit.
    pub fn push(&self, frame: Bytes) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let accepted = {
            let mut q = self.lock();
            if q.frames.len() < self.limit {
                if q.frames.is_empty() {
                    q.since = Some(Instant::now());
                    let expected = self.last_batch.load(Ordering::Relaxed) as usize;
                    q.frames.reserve(expected.min(self.limit));
                }
                q.frames.push_back(frame);
                true
            } else {
                false
            }
        };
        if !accepted {
            self.overflowed.store(true, Ordering::Relaxed);
        }
        self.wake.notify_one();
        accepted
    }

    /// Takes everything queued, for one batched write. The queue is left
    /// without a buffer, so an idle connection keeps none (the next push
    /// allocates).
    pub fn take(&self) -> Pending {
        let batch = std::mem::take(&mut *self.lock());
        let n = u32::try_from(batch.frames.len()).unwrap_or(u32::MAX);
        self.last_batch.store(n, Ordering::Relaxed);
        batch
    }

    pub fn is_empty(&self) -> bool {
        self.lock().frames.is_empty()
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// At least `capacity` frames wait: a slow consumer if its socket is
    /// taking nothing meanwhile.
    pub fn backed_up(&self) -> bool {
        self.lock().frames.len() >= self.capacity
    }

    /// Resolves after the next push (or at once if one happened unobserved).
    ///
    /// # Cancel safety
    /// Cancel safe; a wake-up consumed by a dropped future is recovered by
    /// checking [`Outbox::is_empty`] before waiting again.
    pub async fn wait(&self) {
        self.wake.notified().await;
    }
}

impl Deliver for Outbox {
    fn deliver(&self, frame: &Bytes) {
        self.push(frame.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_the_frame_and_marks_the_consumer_slow() {
        let o = Outbox::new(2);
        let frames: Vec<Bytes> = (0..2 * LATE_ALLOWANCE)
            .map(|i| Bytes::from(i.to_string()))
            .collect();
        assert!(o.push(frames[0].clone()));
        assert!(!o.backed_up());
        assert!(o.push(frames[1].clone()));
        assert!(o.backed_up(), "capacity reached");
        // A late task's queue may grow past capacity, up to the limit.
        for f in &frames[2..] {
            assert!(o.push(f.clone()));
        }
        assert!(!o.overflowed());
        assert!(!o.push(Bytes::from_static(b"over")));
        assert!(o.overflowed());
        assert!(
            !o.push(Bytes::from_static(b"after")),
            "stays closed after overflow"
        );
        let batch = o.take();
        assert_eq!(o.take().frames.capacity(), 0, "no buffer left behind");
        assert!(!o.backed_up());
        assert_eq!(batch.frames, frames);
        assert!(
            batch.since.is_some(),
            "the oldest frame's time travels with the batch"
        );
    }

    #[test]
    fn a_batch_makes_room_for_as_many_frames_as_the_last_one_at_its_first_push() {
        let o = Outbox::new(64);
        for i in 0..40 {
            o.push(Bytes::from(i.to_string()));
        }
        assert_eq!(o.take().frames.len(), 40);
        o.push(Bytes::from_static(b"next"));
        assert!(
            o.lock().frames.capacity() >= 40,
            "one allocation for the batch"
        );
        assert_eq!(o.take().frames.len(), 1);
        o.push(Bytes::from_static(b"small"));
        assert!(
            o.lock().frames.capacity() < 40,
            "the hint follows the last batch down"
        );
    }

    #[tokio::test]
    async fn push_wakes_a_waiter_even_if_it_arrives_late() {
        let o = Outbox::new(4);
        o.push(Bytes::from_static(b"x"));
        // The permit was stored: wait() returns without another push.
        tokio::time::timeout(std::time::Duration::from_secs(1), o.wait())
            .await
            .expect("stored wake-up");
        assert!(!o.is_empty());
    }
}
