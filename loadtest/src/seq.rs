//! Per-receiver, per-room check of PROTOCOL.md guarantees 1-3: a room's `seq`
//! is gap-free and every connection sees it ascending.
//!
//! A [`SeqChecker`] follows one user's view of one room across reconnects.
//! Live `message` frames must arrive as `join_seq + 1, join_seq + 2, ...`:
//! - a seq above the next expected one opens a hole (the skipped seqs become
//!   *missing*);
//! - a missing seq that arrives later is a *reorder* (it also fills the hole);
//! - a seq already received is a *duplicate*.
//!
//! After a reconnect the seqs between the last one seen and the new join point
//! are missing until `history` returns them ([`SeqChecker::on_history`]).
//! Whatever is still missing when the checker is finished is a *gap*: a message
//! the server acknowledged and never delivered, which fails the run.

use std::collections::BTreeSet;

/// Counts kept by a [`SeqChecker`]; summed over receivers for the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SeqCounts {
    /// Live messages received in order, or late after a hole (each counted once).
    pub delivered: u64,
    /// Seqs received a second time.
    pub duplicates: u64,
    /// Seqs received live after a higher seq.
    pub reorders: u64,
    /// Seqs missed while disconnected and recovered through `history`.
    pub recovered: u64,
    /// Seqs that should have been delivered and never were (set by `finish`).
    pub gaps: u64,
    /// Deliveries this receiver should have had (set by `finish`).
    pub expected: u64,
}

/// One receiver's view of one room (see the module docs).
#[derive(Debug, Clone)]
pub struct SeqChecker {
    /// Seq of the room when this receiver first joined.
    first_join: u64,
    /// The highest seq received or accounted for; the next live one should be `+1`.
    high: u64,
    /// Seqs below `high` not received yet.
    missing: BTreeSet<u64>,
    /// Seqs that only history can bring back (missed while disconnected).
    offline: BTreeSet<u64>,
    counts: SeqCounts,
}

impl SeqChecker {
    /// Starts following a room joined at `join_seq` (the `seq` in the join `ok`).
    pub fn new(join_seq: u64) -> Self {
        Self {
            first_join: join_seq,
            high: join_seq,
            missing: BTreeSet::new(),
            offline: BTreeSet::new(),
            counts: SeqCounts::default(),
        }
    }

    /// The highest seq seen (or joined at): where a `history` catch-up starts.
    pub fn last_seen(&self) -> u64 {
        self.high
    }

    /// A live `message` frame with `seq`. Returns `true` when it is new (not a duplicate).
    pub fn on_live(&mut self, seq: u64) -> bool {
        if seq > self.high {
            self.missing.extend(self.high + 1..seq);
            self.high = seq;
            self.counts.delivered += 1;
            true
        } else if self.missing.remove(&seq) {
            if self.offline.remove(&seq) {
                // Sent live after all, e.g. queued before the drop.
                self.counts.delivered += 1;
            } else {
                self.counts.reorders += 1;
                self.counts.delivered += 1;
            }
            true
        } else {
            if seq > self.first_join {
                self.counts.duplicates += 1;
            }
            false
        }
    }

    /// The connection was replaced and the room re-joined at `join_seq`: every
    /// seq between the last one seen and `join_seq` must come from `history`.
    pub fn on_rejoin(&mut self, join_seq: u64) {
        if join_seq > self.high {
            for s in self.high + 1..=join_seq {
                self.missing.insert(s);
                self.offline.insert(s);
            }
            self.high = join_seq;
        }
    }

    /// A message returned by `history`. Returns `true` when it filled a hole.
    pub fn on_history(&mut self, seq: u64) -> bool {
        if seq > self.high {
            // Stored after the re-join: this connection is a member, so the
            // live copy is on its way and is the one that counts.
            return false;
        }
        if self.missing.remove(&seq) {
            self.offline.remove(&seq);
            self.counts.recovered += 1;
            return true;
        }
        false
    }

    /// Seqs still missing that only `history` can return.
    pub fn offline_missing(&self) -> usize {
        self.offline.len()
    }

    /// Ends the check knowing the room reached `room_high` while this receiver
    /// was a member (the highest seq acknowledged to any sender). Everything up
    /// to it not received is a gap.
    pub fn finish(&mut self, room_high: u64) -> SeqCounts {
        let target = room_high.max(self.high);
        let tail = target - self.high;
        self.counts.gaps = self.missing.len() as u64 + tail;
        self.counts.expected = target - self.first_join;
        self.counts
    }

    /// The counts so far (gaps and expected are set by [`finish`](Self::finish)).
    pub fn counts(&self) -> SeqCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_gaps() {
        let mut c = SeqChecker::new(3);
        for s in 4..=10 {
            assert!(c.on_live(s));
        }
        let n = c.finish(10);
        assert_eq!(n.delivered, 7);
        assert_eq!(n.expected, 7);
        assert_eq!((n.gaps, n.duplicates, n.reorders), (0, 0, 0));
    }

    #[test]
    fn skipped_seq_is_a_gap() {
        let mut c = SeqChecker::new(0);
        c.on_live(1);
        c.on_live(2);
        c.on_live(5);
        let n = c.finish(5);
        assert_eq!(n.gaps, 2, "3 and 4 never came");
        assert_eq!(n.expected, 5);
        assert_eq!(n.delivered, 3);
    }

    #[test]
    fn acknowledged_but_undelivered_tail_is_a_gap() {
        let mut c = SeqChecker::new(0);
        c.on_live(1);
        let n = c.finish(4);
        assert_eq!(n.gaps, 3);
        assert_eq!(n.expected, 4);
    }

    #[test]
    fn repeated_seq_is_a_duplicate() {
        let mut c = SeqChecker::new(0);
        c.on_live(1);
        c.on_live(2);
        assert!(!c.on_live(2));
        assert!(!c.on_live(1));
        let n = c.finish(2);
        assert_eq!(n.duplicates, 2);
        assert_eq!(n.gaps, 0);
        assert_eq!(n.delivered, 2);
    }

    #[test]
    fn late_seq_is_a_reorder_not_a_gap() {
        let mut c = SeqChecker::new(0);
        c.on_live(1);
        c.on_live(3);
        c.on_live(2);
        let n = c.finish(3);
        assert_eq!(n.reorders, 1);
        assert_eq!(n.gaps, 0);
        assert_eq!(n.duplicates, 0);
        assert_eq!(n.delivered, 3);
    }

    #[test]
    fn seqs_before_the_join_are_not_duplicates() {
        let mut c = SeqChecker::new(5);
        assert!(!c.on_live(5));
        assert_eq!(c.counts().duplicates, 0);
    }

    #[test]
    fn history_fills_what_a_reconnect_missed() {
        let mut c = SeqChecker::new(0);
        c.on_live(1);
        c.on_live(2);
        // Dropped; the room moved on to 6 while we were away.
        c.on_rejoin(6);
        assert_eq!(c.offline_missing(), 4);
        c.on_live(7);
        for s in 1..=6 {
            c.on_history(s);
        }
        assert_eq!(c.offline_missing(), 0);
        let n = c.finish(7);
        assert_eq!(n.gaps, 0);
        assert_eq!(n.recovered, 4);
        assert_eq!(n.expected, 7);
        assert_eq!(n.delivered + n.recovered, 7);
    }

    #[test]
    fn history_overlapping_the_live_stream_is_not_a_duplicate() {
        let mut c = SeqChecker::new(0);
        c.on_live(1);
        c.on_rejoin(3);
        // History answered after seq 4 and 5 were stored but before they
        // arrived live.
        for s in 2..=5 {
            c.on_history(s);
        }
        c.on_live(4);
        c.on_live(5);
        let n = c.finish(5);
        assert_eq!((n.gaps, n.duplicates, n.reorders), (0, 0, 0));
        assert_eq!(n.recovered, 2);
        assert_eq!(n.delivered, 3);
    }

    #[test]
    fn history_that_misses_something_leaves_a_gap() {
        let mut c = SeqChecker::new(0);
        c.on_live(1);
        c.on_rejoin(4);
        c.on_history(2);
        c.on_history(4);
        let n = c.finish(4);
        assert_eq!(n.gaps, 1, "seq 3 was never recovered");
    }
}
