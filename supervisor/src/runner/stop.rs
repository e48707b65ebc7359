//! Stopping children: cancel, wait up to the grace, then abort.
//!
//! Static children stop one at a time in reverse start order, as OTP does, so
//! a child never outlives something it was started after. Dynamic pool
//! children are independent of each other and stop together (as OTP's
//! `simple_one_for_one`), otherwise 20,000 connections would drain serially.

use std::time::Duration;

use tokio::time::Instant;

use super::{Finished, Outcome, Runner, exit_event};
use crate::dynamic::{PoolCommand, StartChildError};
use crate::tree::ChildState;

impl Runner {
    /// Stop everything, newest first: the pool children, then the static ones.
    pub(super) async fn stop_all(&mut self) {
        self.pending.clear();
        self.refuse_queued();
        let dynamic: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.dynamic)
            .map(|(k, _)| *k)
            .collect();
        self.stop_keys(&dynamic).await;
        for key in dynamic {
            self.forget(key);
        }
        let statics: Vec<u64> = self.slots.keys().rev().copied().collect();
        for key in statics {
            self.stop_keys(&[key]).await;
        }
        for slot in self.slots.values() {
            if slot.node.state() != ChildState::Failed {
                slot.node.set_state(ChildState::Stopped);
            }
        }
    }

    /// Before a group restart: stop the trigger's running siblings in the
    /// group, newest first. The trigger itself has already exited.
    pub(super) async fn stop_siblings(&mut self, group: &[u64], trigger: u64) {
        for key in group.iter().rev().filter(|k| **k != trigger) {
            self.stop_keys(&[*key]).await;
        }
    }

    /// Cancel the given children together, wait for them up to the longest of
    /// their graces, abort whoever is left, and report each exit.
    pub(super) async fn stop_keys(&mut self, keys: &[u64]) {
        let mut waiting = Vec::new();
        let mut grace = Some(Duration::ZERO);
        for key in keys {
            let Some(slot) = self.slots.get_mut(key) else {
                continue;
            };
            let Some(running) = slot.running.as_ref() else {
                continue;
            };
            running.token.cancel();
            slot.node.set_state(ChildState::Stopping);
            grace = grace.zip(slot.spec.grace).map(|(a, b)| a.max(b));
            waiting.push(*key);
        }
        // A child may already have ended while we were busy elsewhere.
        let (ended, kept): (Vec<Finished>, Vec<Finished>) = self
            .deferred
            .drain(..)
            .partition(|f| waiting.contains(&f.key));
        self.deferred.extend(kept);
        for done in ended {
            waiting.retain(|k| *k != done.key);
            self.report_stopped(done.key, &done.outcome);
        }
        let mut deadline = grace.map(|g| Instant::now() + g);
        while !waiting.is_empty() {
            let next = match deadline {
                Some(at) => match tokio::time::timeout_at(at, self.tasks.join_next_with_id()).await
                {
                    Ok(next) => next,
                    Err(_elapsed) => {
                        self.abort_all(&waiting);
                        deadline = None;
                        continue;
                    }
                },
                None => self.tasks.join_next_with_id().await,
            };
            let Some(res) = next else {
                break; // nothing left to wait for: the set is empty
            };
            let Some(done) = self.finished(res) else {
                continue;
            };
            if waiting.contains(&done.key) {
                waiting.retain(|k| *k != done.key);
                self.report_stopped(done.key, &done.outcome);
            } else {
                self.deferred.push_back(done);
            }
        }
    }

    /// Answer requests still queued for a pool that is stopping, so no caller
    /// of `start_child` waits on an incarnation that will not serve it.
    fn refuse_queued(&mut self) {
        let Some(rx) = self.pool.as_deref_mut() else {
            return;
        };
        while let Ok(cmd) = rx.try_recv() {
            // Callers that stopped waiting do not need an answer.
            let _ = match cmd {
                PoolCommand::Start { reply, .. } => {
                    reply.send(Err(StartChildError::NotRunning)).is_ok()
                }
                PoolCommand::Terminate { reply, .. } => {
                    reply.send(Err(StartChildError::NotRunning)).is_ok()
                }
            };
        }
    }

    fn abort_all(&mut self, keys: &[u64]) {
        for key in keys {
            if let Some(running) = self.slots.get(key).and_then(|s| s.running.as_ref()) {
                running.abort.abort();
            }
        }
    }

    fn report_stopped(&mut self, key: u64, outcome: &Outcome) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        slot.running = None;
        slot.node.set_state(ChildState::Stopped);
        let name = slot.spec.name.clone();
        self.emitter.emit(&name, exit_event(outcome, true));
    }
}
