//! Restart decisions: the intensity window, which siblings restart together,
//! and when (backoff).

use std::time::Duration;

use tokio::time::Instant;

use super::Runner;
use crate::event::EventKind;
use crate::spec::{Restart, Strategy};
use crate::tree::ChildState;

impl Runner {
    pub(super) fn intensity_exceeded(&mut self) -> bool {
        let now = Instant::now();
        let period = self.spec.intensity.period;
        self.restarts.push_back(now);
        while self.restarts.front().is_some_and(|t| *t + period <= now) {
            self.restarts.pop_front();
        }
        self.restarts.len() > self.spec.intensity.max_restarts as usize
    }

    /// Keys restarted together with `key`, in start order. Children that had
    /// already ended for good (stopped, failed, temporary) are not revived.
    pub(super) fn restart_group(&self, key: u64) -> Vec<u64> {
        let dynamic = self.slots.get(&key).is_some_and(|s| s.dynamic);
        let siblings: Vec<u64> = match self.spec.strategy {
            _ if dynamic => return vec![key],
            Strategy::OneForOne => return vec![key],
            Strategy::OneForAll => self.slots.keys().copied().collect(),
            Strategy::RestForOne => self.slots.range(key..).map(|(k, _)| *k).collect(),
        };
        siblings
            .into_iter()
            .filter(|k| {
                let slot = &self.slots[k];
                *k == key
                    || (!slot.dynamic && (slot.running.is_some() || self.pending.contains_key(k)))
            })
            .collect()
    }

    pub(super) fn schedule_restart(&mut self, group: &[u64], trigger: u64) {
        let now = Instant::now();
        let period = self.spec.intensity.period;
        let attempt = self.slots.get_mut(&trigger).map_or(1, |slot| {
            slot.recent.push_back(now);
            while slot.recent.front().is_some_and(|t| *t + period <= now) {
                slot.recent.pop_front();
            }
            u32::try_from(slot.recent.len()).unwrap_or(u32::MAX)
        });
        let delay = self
            .spec
            .backoff
            .map_or(Duration::ZERO, |b| b.delay(attempt));
        for key in group {
            let Some(slot) = self.slots.get(key) else {
                continue;
            };
            if slot.spec.restart == Restart::Temporary {
                slot.node.set_state(ChildState::Stopped);
                continue;
            }
            slot.node.count_restart();
            slot.node.set_state(ChildState::Restarting);
            let name = slot.spec.name.clone();
            self.emitter
                .emit(&name, EventKind::Restarting { attempt, delay });
            self.pending.insert(*key, now + delay);
        }
        if delay.is_zero() {
            self.start_due();
        }
    }

    /// Start every restart whose delay has passed, in start order.
    pub(super) fn start_due(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.pending.remove(&key);
            self.start_child(key);
        }
    }
}
