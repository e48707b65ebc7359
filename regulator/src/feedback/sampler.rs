//! Samplers: where load signals come from.
//!
//! A sampler is read once per feedback tick ([`crate::Regulator::feedback_tick`]);
//! `None` means "no signal", which modifiers treat as "not overloaded".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// A source of one load signal.
pub trait Sampler: Send + Sync {
    /// The current value, in the sampler's unit; `None` when there is no data.
    fn sample(&self) -> Option<f64>;
}

/// A value set by hand: a cluster peer's published load, a test signal.
#[derive(Debug, Default)]
pub struct ManualSampler {
    bits: AtomicU64,
    set: std::sync::atomic::AtomicBool,
}

impl ManualSampler {
    /// A sampler with no value yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the value the next tick reads.
    pub fn set(&self, v: f64) {
        self.bits.store(v.to_bits(), Ordering::Relaxed);
        self.set.store(true, Ordering::Release);
    }

    /// Removes the value (no signal).
    pub fn clear(&self) {
        self.set.store(false, Ordering::Release);
    }
}

impl Sampler for ManualSampler {
    fn sample(&self) -> Option<f64> {
        self.set
            .load(Ordering::Acquire)
            .then(|| f64::from_bits(self.bits.load(Ordering::Relaxed)))
    }
}

/// Mean downstream latency in milliseconds over the samples observed since the
/// previous read, fed by the caller ([`crate::Queue::observe_latency`]).
#[derive(Debug, Default)]
pub struct LatencySampler {
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl LatencySampler {
    /// An empty sampler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl Sampler for LatencySampler {
    fn sample(&self) -> Option<f64> {
        let n = self.count.swap(0, Ordering::Relaxed);
        let sum = self.sum_ns.swap(0, Ordering::Relaxed);
        (n > 0).then(|| sum as f64 / n as f64 / 1e6)
    }
}

/// CPU busy percentage (0-100) of the whole machine between two reads, from
/// the first line of `/proc/stat`. `None` on the first read and off Linux.
#[derive(Debug, Default)]
pub struct CpuSampler {
    prev: Mutex<Option<(u64, u64)>>,
}

/// Busy and total jiffies from the text of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait are not busy.
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

impl CpuSampler {
    /// A sampler reading `/proc/stat`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Sampler for CpuSampler {
    fn sample(&self) -> Option<f64> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let (busy, total) = parse_proc_stat(&text)?;
        let mut prev = self
            .prev
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = prev.replace((busy, total));
        let (pb, pt) = last?;
        let dt = total.saturating_sub(pt);
        (dt > 0).then(|| busy.saturating_sub(pb) as f64 * 100.0 / dt as f64)
    }
}

/// Tokio scheduling delay in milliseconds: a probe task sleeps `period` and
/// measures how late it wakes up. A runtime whose workers are all busy (or
/// blocked) wakes it late; the worst lateness since the previous read is
/// reported, or, while the probe is still waiting to run past its time, how
/// late it is already: a runtime so far behind that the probe has not run
/// since the last read is the most overloaded of all, not "no signal".
#[derive(Debug)]
pub struct SchedDelaySampler {
    worst_ns: AtomicU64,
    seen: AtomicU64,
    /// When the probe is due to wake, in ns after `base`; 0 while it runs.
    due_ns: AtomicU64,
    /// On tokio's clock, like the probe's own timing: a paused test clock
    /// must not make a probe look late by the real time that passed.
    base: tokio::time::Instant,
}

impl Default for SchedDelaySampler {
    fn default() -> Self {
        Self {
            worst_ns: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            due_ns: AtomicU64::new(0),
            base: tokio::time::Instant::now(),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl SchedDelaySampler {
    /// Starts the probe on the current runtime. The probe ends when the
    /// returned sampler is dropped.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(period: Duration) -> Arc<Self> {
        let me = Arc::new(Self::default());
        let weak: Weak<Self> = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                let start = tokio::time::Instant::now();
                match weak.upgrade() {
                    Some(me) => me.due_in(period),
                    None => break,
                }
                tokio::time::sleep(period).await;
                let late = start.elapsed().saturating_sub(period);
                let Some(me) = weak.upgrade() else { break };
                me.record(late);
            }
        });
        me
    }

    /// The probe sleeps and is due to wake `period` from now.
    fn due_in(&self, period: Duration) {
        let due = nanos(self.base.elapsed() + period).max(1);
        self.due_ns.store(due, Ordering::Relaxed);
    }

    /// Records one measured lateness (the probe ran).
    pub fn record(&self, late: Duration) {
        self.due_ns.store(0, Ordering::Relaxed);
        self.worst_ns.fetch_max(nanos(late), Ordering::Relaxed);
        self.seen.fetch_add(1, Ordering::Relaxed);
    }
}

impl Sampler for SchedDelaySampler {
    fn sample(&self) -> Option<f64> {
        let seen = self.seen.swap(0, Ordering::Relaxed);
        let worst = self.worst_ns.swap(0, Ordering::Relaxed);
        let due = self.due_ns.load(Ordering::Relaxed);
        let pending = match due {
            0 => 0,
            due => nanos(self.base.elapsed()).saturating_sub(due),
        };
        (seen > 0 || pending > 0).then(|| worst.max(pending) as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_excludes_idle_and_iowait() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_proc_stat(text), Some((150, 1000)));
        assert_eq!(parse_proc_stat("nothing"), None);
    }

    #[test]
    fn latency_sampler_reports_the_window_mean_then_nothing() {
        let s = LatencySampler::new();
        s.observe(Duration::from_millis(10));
        s.observe(Duration::from_millis(30));
        assert_eq!(s.sample(), Some(20.0));
        assert_eq!(s.sample(), None);
    }

    #[test]
    fn manual_sampler_sets_and_clears() {
        let s = ManualSampler::new();
        assert_eq!(s.sample(), None);
        s.set(3.5);
        assert_eq!(s.sample(), Some(3.5));
        s.clear();
        assert_eq!(s.sample(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn sched_delay_probe_reports_lateness() {
        let s = SchedDelaySampler::spawn(Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(35)).await;
        // On the paused clock the probe is never late.
        assert_eq!(s.sample(), Some(0.0));
        s.record(Duration::from_millis(7));
        assert_eq!(s.sample(), Some(7.0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sched_delay_reports_a_probe_that_has_not_run_past_its_time() {
        let s = SchedDelaySampler::spawn(Duration::from_millis(10));
        // Let the probe start its first sleep, then keep the runtime's only
        // thread from running it.
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(100));
        // The probe has not woken once, yet the runtime is 90 ms behind.
        let late = s.sample().expect("a probe past its time is a signal");
        assert!(late >= 80.0, "{late} ms");
    }

    #[test]
    fn cpu_sampler_needs_two_reads() {
        let s = CpuSampler::new();
        let first = s.sample();
        assert!(first.is_none());
        if std::path::Path::new("/proc/stat").exists() {
            std::thread::sleep(Duration::from_millis(20));
            // May still be None if no jiffy elapsed; when present it is a percentage.
            if let Some(v) = s.sample() {
                assert!((0.0..=100.0).contains(&v));
            }
        }
    }
}
