//! [`RunState`]: what every simulated user and the collector share during one
//! run. It is created by `run`, handed to goose's transactions inside an `Arc`,
//! and read once more after goose returns to build the summary.

use crate::hist::{Sharded, lock, new_hist, record};
use crate::options::Options;
use crate::plan::ProfilePlan;
use crate::schedule::RatePlan;
use crate::seq::SeqCounts;
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Monotonic counters; `Relaxed` is enough, they are only summed.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sends popped from the timetable (and written, or failed to write).
    pub sent: AtomicU64,
    /// Sends that could not be written to the socket.
    pub write_failures: AtomicU64,
    /// `ok` replies to sends.
    pub acked: AtomicU64,
    /// `error` replies to sends.
    pub send_errors: AtomicU64,
    /// Sends re-sent with the same cid after a reconnect.
    pub resent: AtomicU64,
    /// Live `message` frames received in joined rooms (duplicates included).
    pub received: AtomicU64,
    /// Frames that were not JSON objects with a type.
    pub bad_frames: AtomicU64,
    /// Connections opened.
    pub connects: AtomicU64,
    /// Upgrades refused with HTTP 503.
    pub connect_rejected: AtomicU64,
    /// Connection attempts that failed otherwise.
    pub connect_failed: AtomicU64,
    /// Connections the server closed (or that broke) under a user.
    pub server_closes: AtomicU64,
    /// Reconnects (storm drops and recoveries from server closes).
    pub reconnects: AtomicU64,
    /// Users that never got in (connect/login/join failed for good).
    pub failed_users: AtomicU64,
    /// `goaway` frames.
    pub goaways: AtomicU64,
}

/// Per-room shared facts.
#[derive(Debug, Default)]
pub struct RoomState {
    /// Highest seq acknowledged to any sender of the room.
    pub max_acked: AtomicU64,
}

/// Shared state of one run (see the module docs).
#[derive(Debug)]
pub struct RunState {
    /// The options of the run.
    pub opts: Options,
    /// The profile's decisions.
    pub plan: ProfilePlan,
    /// The rate plan, shared by every user's schedule.
    pub rates: Arc<RatePlan>,
    /// Zero of every µs timestamp in refs, cids and interval logs.
    pub epoch: Instant,
    /// Wall-clock time of `epoch`, for the interval log's StartTime.
    pub epoch_wall: std::time::SystemTime,
    /// Prefix of user and room names.
    pub prefix: String,
    /// The message body every send carries.
    pub body: String,
    /// Users the run expects to start (the barrier before `t0`).
    pub expected_users: usize,
    next_user: AtomicUsize,
    ready: AtomicUsize,
    t0: OnceLock<Instant>,
    started: Notify,
    /// Users still sending; receivers wait for zero before the final check.
    pub senders_active: AtomicUsize,
    rooms: Mutex<HashMap<usize, Arc<RoomState>>>,
    /// Counters.
    pub c: Counters,
    /// Send-to-delivery latency, µs, at every receiver.
    pub delivery: Sharded,
    /// Send-to-ok latency, µs.
    pub send_ok: Sharded,
    /// Other latencies by name (`connect`, `login`, `register`, `join`,
    /// `history`, `reconnect`, `retry_after`, `send_refused`), µs.
    others: Mutex<BTreeMap<&'static str, Histogram<u64>>>,
    /// Error replies by code (sends and requests).
    pub errors_by_code: Mutex<BTreeMap<String, u64>>,
    /// Close codes received, by code.
    pub close_codes: Mutex<BTreeMap<u16, u64>>,
    /// Seq-check counts, summed over receivers as they finish.
    pub seq: Mutex<SeqCounts>,
    /// Sends never answered (no ok, no error) by the end.
    pub unanswered: AtomicU64,
    /// Why the run stopped early, if it did.
    pub stop_reason: Mutex<Option<String>>,
}

impl RunState {
    /// State for a run of `opts`.
    pub fn new(opts: Options, plan: ProfilePlan, prefix: String) -> Self {
        let rates = Arc::new(plan.rates.clone());
        let body = crate::protocol::body(opts.body_bytes);
        Self {
            expected_users: opts.users,
            rates,
            epoch: Instant::now(),
            epoch_wall: std::time::SystemTime::now(),
            prefix,
            body,
            next_user: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            t0: OnceLock::new(),
            started: Notify::new(),
            senders_active: AtomicUsize::new(0),
            rooms: Mutex::new(HashMap::new()),
            c: Counters::default(),
            delivery: Sharded::default(),
            send_ok: Sharded::default(),
            others: Mutex::new(BTreeMap::new()),
            errors_by_code: Mutex::new(BTreeMap::new()),
            close_codes: Mutex::new(BTreeMap::new()),
            seq: Mutex::new(SeqCounts::default()),
            unanswered: AtomicU64::new(0),
            stop_reason: Mutex::new(None),
            opts,
            plan,
        }
    }

    /// µs since the epoch.
    pub fn now_us(&self) -> u64 {
        self.us_of(Instant::now())
    }

    /// µs of `at` since the epoch.
    pub fn us_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// A fresh user index (0, 1, 2, ...).
    pub fn next_user(&self) -> usize {
        self.next_user.fetch_add(1, Ordering::Relaxed)
    }

    /// The room index of user `idx`.
    pub fn room_of(&self, idx: usize) -> usize {
        idx / self.opts.room_size.max(1)
    }

    /// The shared state of room `room`.
    pub fn room(&self, room: usize) -> Arc<RoomState> {
        lock(&self.rooms).entry(room).or_default().clone()
    }

    /// A user is in (joined) or has given up; when all are, sending starts.
    pub fn user_ready(&self) {
        let n = self.ready.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.expected_users {
            self.start_now();
        }
    }

    /// Sets `t0` to now unless it is set, and wakes every waiting sender.
    pub fn start_now(&self) {
        let _ = self.t0.get_or_init(Instant::now);
        self.started.notify_waiters();
    }

    /// The instant sending started, once it has.
    pub fn t0(&self) -> Option<Instant> {
        self.t0.get().copied()
    }

    /// Waits up to `max` for `t0`; returns it if set.
    pub async fn wait_started(&self, max: Duration) -> Option<Instant> {
        if let Some(t) = self.t0() {
            return Some(t);
        }
        let notified = self.started.notified();
        if let Some(t) = self.t0() {
            return Some(t);
        }
        let _ = tokio::time::timeout(max, notified).await;
        self.t0()
    }

    /// Records a latency under `name`.
    pub fn record_other(&self, name: &'static str, d: Duration) {
        let mut m = lock(&self.others);
        record(m.entry(name).or_insert_with(new_hist), d.as_micros() as u64);
    }

    /// A copy of the latency histograms kept by name.
    pub fn others(&self) -> BTreeMap<&'static str, Histogram<u64>> {
        lock(&self.others).clone()
    }

    /// Counts an error reply with `code`; `overloaded` also records its hint.
    pub fn count_error(&self, code: &str, retry_after_ms: Option<u64>) {
        *lock(&self.errors_by_code)
            .entry(code.to_string())
            .or_default() += 1;
        if let Some(ms) = retry_after_ms
            && code == "overloaded"
        {
            self.record_other("retry_after", Duration::from_millis(ms));
        }
    }

    /// Counts a close code.
    pub fn count_close(&self, code: u16) {
        *lock(&self.close_codes).entry(code).or_default() += 1;
    }

    /// Adds one receiver's finished seq counts.
    pub fn add_seq(&self, n: SeqCounts) {
        let mut t = lock(&self.seq);
        t.delivered += n.delivered;
        t.duplicates += n.duplicates;
        t.reorders += n.reorders;
        t.recovered += n.recovered;
        t.gaps += n.gaps;
        t.expected += n.expected;
    }

    /// Records why the run stops early and asks goose to stop (first reason wins).
    pub fn stop(&self, reason: &str) {
        let mut r = lock(&self.stop_reason);
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        goose::trigger_killswitch(reason);
    }
}
