//! The wait queue's storage: waiters ordered by priority, then arrival.
//!
//! Keyed by `(rank, seq)`: rank 0 is the highest priority, seq grows with
//! arrival. FIFO serves the first key, LIFO the newest of the best band; the
//! shedding victim is taken from the worst band. Removal by key is O(log n),
//! which cancellation and timeouts need.

use std::collections::BTreeMap;

use tokio::sync::oneshot;

use crate::gcra::Nanos;
use crate::permit::Permit;
use crate::reject::Rejected;

/// Serve order currently in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    Fifo,
    Lifo,
}

impl Order {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Order::Fifo => "fifo",
            Order::Lifo => "lifo",
        }
    }
}

pub(crate) type Answer = Result<Permit, Rejected>;
pub(crate) type Key = (u8, u64);

#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) tx: oneshot::Sender<Answer>,
    pub(crate) enqueued: Nanos,
    pub(crate) expiry: Nanos,
    /// The expiry comes from the request's deadline, not `max_wait`.
    pub(crate) by_deadline: bool,
    pub(crate) weight: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Waiters {
    map: BTreeMap<Key, Waiter>,
    seq: u64,
    /// Waiters per priority rank (few ranks in use), so counting who is
    /// ahead does not walk the queue.
    bands: BTreeMap<u8, u64>,
}

impl Waiters {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn push(&mut self, rank: u8, w: Waiter) -> Key {
        self.seq += 1;
        let key = (rank, self.seq);
        self.map.insert(key, w);
        *self.bands.entry(rank).or_default() += 1;
        key
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&Waiter> {
        self.map.get(key)
    }

    pub(crate) fn remove(&mut self, key: &Key) -> Option<Waiter> {
        let w = self.map.remove(key)?;
        if let Some(n) = self.bands.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.bands.remove(&key.0);
            }
        }
        Some(w)
    }

    fn band(&self, rank: u8) -> std::collections::btree_map::Range<'_, Key, Waiter> {
        self.map.range((rank, 0)..=(rank, u64::MAX))
    }

    /// Next waiter to serve.
    pub(crate) fn next(&self, order: Order) -> Option<Key> {
        let (&(rank, _), _) = self.map.first_key_value()?;
        match order {
            Order::Fifo => self.band(rank).next(),
            Order::Lifo => self.band(rank).next_back(),
        }
        .map(|(k, _)| *k)
    }

    /// Waiter to shed for a newcomer of rank `rank`: from the lowest-priority
    /// band, the one this order would serve last; only if strictly lower
    /// priority than the newcomer.
    pub(crate) fn victim(&self, order: Order, rank: u8) -> Option<Key> {
        let (&(worst, _), _) = self.map.last_key_value()?;
        if worst <= rank {
            return None;
        }
        match order {
            Order::Fifo => self.band(worst).next_back(),
            Order::Lifo => self.band(worst).next(),
        }
        .map(|(k, _)| *k)
    }

    /// Waiters a newcomer of rank `rank` queues behind (same or higher priority).
    pub(crate) fn ahead_of(&self, rank: u8) -> u64 {
        self.bands.range(..=rank).map(|(_, n)| n).sum()
    }

    /// Oldest enqueue time (the queue's standing delay).
    pub(crate) fn oldest(&self) -> Option<Nanos> {
        self.map.values().map(|w| w.enqueued).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w() -> Waiter {
        Waiter {
            tx: oneshot::channel().0,
            enqueued: 0,
            expiry: 10,
            by_deadline: false,
            weight: 1,
        }
    }

    #[test]
    fn orders_by_priority_then_discipline() {
        let mut q = Waiters::default();
        let low1 = q.push(200, w());
        let hi1 = q.push(10, w());
        let hi2 = q.push(10, w());
        let low2 = q.push(200, w());
        assert_eq!(q.next(Order::Fifo), Some(hi1));
        assert_eq!(q.next(Order::Lifo), Some(hi2));
        assert_eq!(q.victim(Order::Fifo, 10), Some(low2));
        assert_eq!(q.victim(Order::Lifo, 10), Some(low1));
        assert_eq!(
            q.victim(Order::Fifo, 200),
            None,
            "equal priority is not shed"
        );
        q.remove(&hi1);
        q.remove(&hi2);
        assert_eq!(q.next(Order::Fifo), Some(low1));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn counts_waiters_of_equal_or_higher_priority_ahead() {
        let mut q = Waiters::default();
        let low = q.push(200, w());
        let hi = q.push(10, w());
        q.push(128, w());
        assert_eq!(
            (q.ahead_of(10), q.ahead_of(128), q.ahead_of(255)),
            (1, 2, 3)
        );
        q.remove(&hi);
        q.remove(&low);
        // Removing twice changes nothing.
        q.remove(&low);
        assert_eq!((q.ahead_of(128), q.ahead_of(255)), (1, 1));
    }
}
