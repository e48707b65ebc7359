//! The regulator: named queues, groups and samplers, retunable as a whole.
//!
//! Lookups by name go through an `ArcSwap` of the queue map (no lock on the
//! ask path). Changes (retune, reload) are serialised by one mutex that also
//! holds the configuration in force; they build the new map aside and swap it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{self, ConfigError, QueueConfig, RegulatorConfig};
use crate::feedback::sampler::{CpuSampler, Sampler, SchedDelaySampler};
use crate::group::Group;
use crate::limits::GroupLink;
use crate::permit::Permit;
use crate::queue::{Queue, Shared};
use crate::reject::Rejected;
use crate::request::Request;
use crate::watch::WatchHandle;

/// Named queues of admission control. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Regulator {
    inner: Arc<Inner>,
}

struct Control {
    config: RegulatorConfig,
    groups: BTreeMap<String, Arc<Group>>,
}

struct Inner {
    queues: ArcSwap<BTreeMap<String, Queue>>,
    control: Mutex<Control>,
    samplers: Mutex<HashMap<String, Arc<dyn Sampler>>>,
}

impl std::fmt::Debug for Regulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regulator")
            .field(
                "queues",
                &self.inner.queues.load().keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn link(
    groups: &BTreeMap<String, Arc<Group>>,
    queue: &str,
    cfg: &QueueConfig,
) -> Option<GroupLink> {
    let name = cfg.group.as_ref()?;
    let group = groups.get(name)?;
    Some(GroupLink {
        member: group.join(queue),
        group: Arc::clone(group),
    })
}

impl Regulator {
    /// Builds the queues of `cfg`. Needs no runtime.
    ///
    /// # Errors
    /// The first invalid value found; nothing is built.
    pub fn new(cfg: RegulatorConfig) -> Result<Self, ConfigError> {
        config::validate(&cfg)?;
        let groups: BTreeMap<String, Arc<Group>> = cfg
            .groups
            .iter()
            .map(|(n, g)| (n.clone(), Arc::new(Group::new(g.rate_per_sec, g.burst))))
            .collect();
        let queues = cfg
            .queues
            .iter()
            .map(|(n, q)| {
                let shared = Shared::new(n, q.clone(), link(&groups, n, q));
                (n.clone(), Queue { shared })
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                queues: ArcSwap::from_pointee(queues),
                control: Mutex::new(Control {
                    config: cfg,
                    groups,
                }),
                samplers: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        // Control is only replaced whole after validation: a panic cannot leave it half-written.
        self.inner
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A handle on the queue `name`, valid across retunes; `None` if not configured.
    pub fn queue(&self, name: &str) -> Option<Queue> {
        self.inner.queues.load().get(name).cloned()
    }

    /// Asks queue `name` for admission (see [`Queue::ask`]).
    ///
    /// A name that is not configured is unregulated: the request is admitted
    /// at once with a permit that holds nothing. So adding a call site before
    /// its queue is configured changes nothing, and removing a queue from the
    /// configuration turns its regulation off.
    ///
    /// # Errors
    /// The rejection, returned at once or at the latest by `max_wait`/deadline.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the queue cleanly (no slot leaked).
    pub async fn ask(&self, name: &str, req: Request) -> Result<Permit, Rejected> {
        // The fast path runs under the map guard, without cloning the queue
        // handle (an atomic increment shared by every caller).
        let block = {
            let queues = self.inner.queues.load();
            let Some(q) = queues.get(name) else {
                return Ok(Permit::unregulated());
            };
            match q.shared.try_fast(&req) {
                Ok(answer) => return answer,
                Err(block) => (Arc::clone(&q.shared), block),
            }
        };
        let (shared, block) = block;
        shared.wait(req, block).await
    }

    /// Runs `fut` under a permit of queue `name`; the permit is released when
    /// `fut` completes or is dropped.
    ///
    /// # Errors
    /// The rejection, if not admitted (`fut` is then never polled).
    pub async fn run<F: Future>(
        &self,
        name: &str,
        req: Request,
        fut: F,
    ) -> Result<F::Output, Rejected> {
        let _permit = self.ask(name, req).await?;
        Ok(fut.await)
    }

    /// Replaces the configuration of queue `name` (creating the queue if it
    /// does not exist), keeping its waiters, in-flight count and rate state.
    /// Returns the queue's snapshot after the change.
    ///
    /// # Errors
    /// An invalid value or unknown group; the running configuration is kept.
    pub fn retune(&self, name: &str, cfg: QueueConfig) -> Result<serde_json::Value, ConfigError> {
        let mut ctl = self.control();
        self.retune_locked(&mut ctl, name, cfg)
    }

    fn retune_locked(
        &self,
        ctl: &mut Control,
        name: &str,
        cfg: QueueConfig,
    ) -> Result<serde_json::Value, ConfigError> {
        config::validate_queue(name, &cfg, &ctl.config.groups)?;
        let group = link(&ctl.groups, name, &cfg);
        let queue = match self.queue(name) {
            Some(q) => {
                q.shared.retune(cfg.clone(), group);
                q
            }
            None => {
                let q = Queue {
                    shared: Shared::new(name, cfg.clone(), group),
                };
                self.inner.queues.rcu(|m| {
                    let mut m = BTreeMap::clone(m);
                    m.insert(name.to_owned(), q.clone());
                    m
                });
                q
            }
        };
        ctl.config.queues.insert(name.to_owned(), cfg);
        Ok(queue.snapshot())
    }

    /// Retunes from a JSON object with the keys of a queue table. Keys absent
    /// keep their current value (a new queue starts from the defaults); `null`
    /// clears an optional limit. Returns the queue's snapshot.
    ///
    /// # Errors
    /// `Parse` for a malformed body or unknown key, else as [`Regulator::retune`].
    pub fn retune_json(
        &self,
        name: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ConfigError> {
        // Merge and apply under one lock, so concurrent retunes cannot lose
        // each other's keys.
        let mut ctl = self.control();
        let current = ctl.config.queues.get(name).cloned().unwrap_or_default();
        let merged = config::merge_json(&current, body)?;
        self.retune_locked(&mut ctl, name, merged)
    }

    /// Applies a whole new configuration, all or nothing. Existing queues are
    /// retuned in place (waiters and rate state kept), new ones created;
    /// queues absent from `cfg` become unregulated for new asks (their
    /// current waiters and permits finish under the old limits).
    ///
    /// # Errors
    /// The first invalid value; nothing is changed.
    pub fn reload(&self, cfg: RegulatorConfig) -> Result<(), ConfigError> {
        config::validate(&cfg)?;
        let mut ctl = self.control();
        let mut groups = BTreeMap::new();
        for (n, g) in &cfg.groups {
            let group = match ctl.groups.get(n) {
                Some(old) => {
                    old.retune(g.rate_per_sec, g.burst);
                    Arc::clone(old)
                }
                None => Arc::new(Group::new(g.rate_per_sec, g.burst)),
            };
            groups.insert(n.clone(), group);
        }
        let old = self.inner.queues.load_full();
        let mut queues = BTreeMap::new();
        for (n, q) in &cfg.queues {
            let group = link(&groups, n, q);
            let queue = match old.get(n) {
                Some(existing) => {
                    existing.shared.retune(q.clone(), group);
                    existing.clone()
                }
                None => Queue {
                    shared: Shared::new(n, q.clone(), group),
                },
            };
            queues.insert(n.clone(), queue);
        }
        self.inner.queues.store(Arc::new(queues));
        *ctl = Control {
            config: cfg,
            groups,
        };
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> RegulatorConfig {
        self.control().config.clone()
    }

    /// Every queue's snapshot (limits in force, active modifiers, queue
    /// length, in flight, admitted, rejected by reason) and the groups.
    pub fn snapshot(&self) -> serde_json::Value {
        let queues: serde_json::Map<String, serde_json::Value> = self
            .inner
            .queues
            .load()
            .iter()
            .map(|(n, q)| (n.clone(), q.snapshot()))
            .collect();
        let groups: serde_json::Map<String, serde_json::Value> = self
            .control()
            .groups
            .iter()
            .map(|(n, g)| (n.clone(), serde_json::json!({ "rate_per_sec": g.rate() })))
            .collect();
        serde_json::json!({ "queues": queues, "groups": groups })
    }

    /// Registers (or replaces) a sampler that modifiers can name.
    pub fn add_sampler(&self, name: &str, sampler: Arc<dyn Sampler>) {
        self.inner
            .samplers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), sampler);
    }

    /// Samples every sampler once and updates every queue's damping now.
    /// [`Regulator::spawn_feedback`] calls it periodically; tests call it directly.
    pub fn feedback_tick(&self) {
        let samplers = self
            .inner
            .samplers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // Each sampler is read once per tick even if several queues use it,
        // since reading may reset its window.
        let mut values: HashMap<&str, Option<f64>> = HashMap::new();
        for (n, s) in &samplers {
            values.insert(n.as_str(), s.sample());
        }
        let lookup = |name: &str| values.get(name).copied().flatten();
        for q in self.inner.queues.load().values() {
            q.shared.feedback(&lookup);
        }
    }

    /// Starts the feedback loop: registers the `cpu` and `sched_delay`
    /// samplers (unless already registered; the probe runs on the current
    /// runtime) and ticks every `every` on a thread of its own, until the
    /// returned [`FeedbackLoop`] is dropped or the last `Regulator` clone is.
    ///
    /// A thread, not a task: an overloaded runtime is when the loop must
    /// react, and as a task its ticks waited behind the very backlog they
    /// were to cut (5 s apart on a starved node, docs/OVERLOAD.md). The OS
    /// schedules the thread by itself.
    ///
    /// # Panics
    /// Outside a tokio runtime, or when the OS cannot start a thread.
    pub fn spawn_feedback(&self, every: Duration) -> FeedbackLoop {
        {
            let mut s = self
                .inner
                .samplers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.entry("cpu".into())
                .or_insert_with(|| Arc::new(CpuSampler::new()));
            if !s.contains_key("sched_delay") {
                let probe: Arc<dyn Sampler> = SchedDelaySampler::spawn(Duration::from_millis(10));
                s.insert("sched_delay".into(), probe);
            }
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("regulator-feedback".into())
            .spawn(move || {
                // Ends on a stop (the sender dropped) or with the regulator.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let Some(inner) = weak.upgrade() else { break };
                    Regulator { inner }.feedback_tick();
                }
            })
            .expect("start the regulator feedback thread");
        FeedbackLoop {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Watches a configuration file and reloads on change; see [`crate::watch`].
    ///
    /// # Errors
    /// When the watcher cannot be set up (missing parent directory, no inotify).
    pub fn watch_file<P>(&self, path: PathBuf, parse: P) -> std::io::Result<WatchHandle>
    where
        P: Fn(&str) -> Result<RegulatorConfig, String> + Send + 'static,
    {
        crate::watch::watch(self.clone(), path, parse)
    }
}

/// The running feedback loop of [`Regulator::spawn_feedback`]; dropping it
/// stops the loop and waits for a tick in progress to end.
#[derive(Debug)]
#[must_use = "dropping it stops the feedback loop at once"]
pub struct FeedbackLoop {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FeedbackLoop {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // A tick that panicked already said so on stderr.
            let _ = t.join();
        }
    }
}
