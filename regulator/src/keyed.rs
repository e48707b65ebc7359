//! Per-key rate (per user, per IP) with a bounded key table.
//!
//! A flood of distinct keys must not exhaust memory, and evicting must not cost
//! a scan per insert (that would turn a key flood into a CPU flood). The table
//! is two generations of hash maps, each at most half the capacity: keys are
//! inserted in the young generation; when it is full the old generation is
//! dropped whole and the young one becomes old. A key seen in the old
//! generation moves back to the young one. So a key survives as long as it was
//! seen within the last half-capacity insertions (an LRU approximation), the
//! table never holds more than `capacity` keys, and each operation is O(1)
//! amortised. Forgetting a key is safe in one direction only: it gets a fresh
//! burst, which is what an idle key would have anyway; a key whose TAT is in
//! the past is dropped at move time since it carries no state.

use std::collections::HashMap;

use crate::gcra::{self, Nanos};

#[derive(Debug)]
pub(crate) struct KeyTable {
    young: HashMap<u64, Nanos>,
    old: HashMap<u64, Nanos>,
    half: usize,
    interval: Nanos,
    tolerance: Nanos,
}

impl KeyTable {
    pub(crate) fn new(rate: f64, burst: u32, capacity: u32) -> Self {
        let mut t = Self {
            young: HashMap::new(),
            old: HashMap::new(),
            half: 1,
            interval: 0,
            tolerance: 0,
        };
        t.retune(rate, burst, capacity);
        t
    }

    /// Changes rate, burst and capacity; remembered keys keep their TAT.
    pub(crate) fn retune(&mut self, rate: f64, burst: u32, capacity: u32) {
        (self.interval, self.tolerance) = gcra::params(rate, burst);
        self.half = (capacity as usize).div_ceil(2).max(1);
        while self.young.len() > self.half {
            self.rotate();
        }
        if self.old.len() > self.half {
            self.old.clear();
        }
    }

    fn rotate(&mut self) {
        self.old = std::mem::take(&mut self.young);
        if self.old.len() > self.half {
            // Only after a shrinking retune: keep at most `half` of them.
            let keep: HashMap<u64, Nanos> = self.old.drain().take(self.half).collect();
            self.old = keep;
        }
    }

    /// Takes one token for `key` at `now`, or says how long until one is available.
    pub(crate) fn try_take(&mut self, key: u64, now: Nanos) -> Result<(), Nanos> {
        let tat = match self.young.get(&key) {
            Some(&t) => t,
            None => self.old.remove(&key).unwrap_or(0),
        };
        let new_tat = gcra::step(tat, now, self.interval, self.tolerance);
        match new_tat {
            Ok(t) => {
                self.store(key, t);
                Ok(())
            }
            Err(wait) => {
                // Keep the (unchanged) debt so the key stays limited.
                self.store(key, tat);
                Err(wait)
            }
        }
    }

    fn store(&mut self, key: u64, tat: Nanos) {
        if !self.young.contains_key(&key) && self.young.len() >= self.half {
            self.rotate();
        }
        self.young.insert(key, tat);
    }

    /// Keys currently remembered.
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// The most keys this table will ever hold.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.half * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_its_own_rate() {
        let mut t = KeyTable::new(1.0, 2, 100);
        assert!(t.try_take(1, 0).is_ok());
        assert!(t.try_take(1, 0).is_ok());
        assert!(t.try_take(1, 0).is_err());
        assert!(t.try_take(2, 0).is_ok());
    }

    #[test]
    fn a_flood_of_keys_stays_within_capacity() {
        let mut t = KeyTable::new(1.0, 1, 1000);
        for k in 0..1_000_000u64 {
            let _ = t.try_take(k, 0);
            assert!(t.len() <= 1000);
        }
        assert!(t.len() <= t.capacity());
    }

    #[test]
    fn a_recently_seen_key_survives_a_flood_of_half_capacity() {
        let mut t = KeyTable::new(1.0, 1, 100);
        assert!(t.try_take(u64::MAX, 0).is_ok());
        for k in 0..49u64 {
            let _ = t.try_take(k, 0);
        }
        assert!(
            t.try_take(u64::MAX, 0).is_err(),
            "key must still be limited"
        );
    }
}
