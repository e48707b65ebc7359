//! A rate shared by several queues, with fair sharing.
//!
//! jobs' group rate lets one busy queue take every token (jobs issue #32).
//! Here the group is a GCRA at the group rate, plus a per-member share: while
//! some member has recently been refused by the group ("starved", within
//! [`WINDOW`]), every member is capped at `rate / k`, where `k` is the number
//! of members that asked within the window. With nobody starved, any member
//! may use the whole rate (work-conserving). A queue that floods therefore
//! cannot keep another from getting its fair share for longer than a couple of
//! token intervals.

use std::sync::Mutex;

use crate::gcra::{self, Nanos};

/// How long a demand or a starvation is remembered.
pub(crate) const WINDOW: Nanos = 1_000_000_000;

#[derive(Debug, Default)]
struct Member {
    name: String,
    share_tat: Nanos,
    last_demand: Option<Nanos>,
    starved_at: Option<Nanos>,
}

#[derive(Debug)]
struct State {
    tat: Nanos,
    interval: Nanos,
    burst: u32,
    members: Vec<Member>,
}

/// A shared rate. Members are identified by their index, from [`Group::join`].
#[derive(Debug)]
pub(crate) struct Group {
    state: Mutex<State>,
}

fn recent(at: Option<Nanos>, now: Nanos) -> bool {
    at.is_some_and(|t| now.saturating_sub(t) < WINDOW)
}

impl Group {
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        let (interval, _) = gcra::params(rate, burst);
        Self {
            state: Mutex::new(State {
                tat: 0,
                interval,
                burst: burst.max(1),
                members: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain numbers behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the rate, keeping the TAT (no fresh burst on retune).
    pub(crate) fn retune(&self, rate: f64, burst: u32) {
        let mut s = self.lock();
        s.interval = gcra::params(rate, burst).0;
        s.burst = burst.max(1);
    }

    /// Registers a member queue by name (idempotent) and returns its index.
    pub(crate) fn join(&self, name: &str) -> usize {
        let mut s = self.lock();
        if let Some(i) = s.members.iter().position(|m| m.name == name) {
            return i;
        }
        s.members.push(Member {
            name: name.to_owned(),
            ..Member::default()
        });
        s.members.len() - 1
    }

    /// Takes one token for `member` at `now`, or says how long to wait.
    pub(crate) fn try_take(&self, member: usize, now: Nanos) -> Result<(), Nanos> {
        let mut s = self.lock();
        let State {
            tat,
            interval,
            burst,
            members,
        } = &mut *s;
        let (interval, burst) = (*interval, u64::from(*burst));
        let Some(me) = members.get_mut(member) else {
            return Ok(());
        };
        me.last_demand = Some(now);
        let new_tat = match gcra::step(*tat, now, interval, interval * burst) {
            Ok(t) => t,
            Err(wait) => {
                members[member].starved_at = Some(now);
                return Err(wait);
            }
        };
        let others_starved = members
            .iter()
            .enumerate()
            .any(|(i, m)| i != member && recent(m.starved_at, now));
        let me = &mut members[member];
        if others_starved {
            let k = members
                .iter()
                .filter(|m| recent(m.last_demand, now))
                .count();
            let k = u64::try_from(k.max(1)).unwrap_or(1);
            let share = interval.saturating_mul(k);
            let me = &mut members[member];
            match gcra::step(me.share_tat, now, share, share * burst) {
                Ok(t) => me.share_tat = t,
                Err(wait) => return Err(wait),
            }
        } else {
            // Not enforced: do not let unenforced use pile up as debt that
            // would punish this member the moment another one starves.
            me.share_tat = me.share_tat.max(now);
        }
        *tat = new_tat;
        Ok(())
    }

    /// Gives back a token taken by [`Group::try_take`].
    pub(crate) fn refund(&self, member: usize) {
        let mut s = self.lock();
        let interval = s.interval;
        s.tat = s.tat.saturating_sub(interval);
        if let Some(m) = s.members.get_mut(member) {
            m.share_tat = m.share_tat.saturating_sub(interval);
        }
    }

    /// Rate in requests per second.
    pub(crate) fn rate(&self) -> f64 {
        1e9 / self.lock().interval as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_lone_member_uses_the_whole_rate() {
        let g = Group::new(100.0, 1);
        let a = g.join("a");
        let mut got = 0;
        for t in 0..1000u64 {
            if g.try_take(a, t * MS).is_ok() {
                got += 1;
            }
        }
        assert_eq!(got, 100);
    }

    #[test]
    fn two_greedy_members_split_evenly() {
        let g = Group::new(100.0, 1);
        let (a, b) = (g.join("a"), g.join("b"));
        assert_eq!(g.join("a"), a);
        let (mut ga, mut gb) = (0, 0);
        // `a` always asks first: without shares it would take every token.
        for t in 0..10_000u64 {
            if g.try_take(a, t * MS).is_ok() {
                ga += 1;
            }
            if g.try_take(b, t * MS).is_ok() {
                gb += 1;
            }
        }
        assert!((ga as i64 - gb as i64).abs() <= 20, "a={ga} b={gb}");
        assert!(ga + gb >= 990, "a={ga} b={gb}");
    }
}
