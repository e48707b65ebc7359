//! The password-hashing pool: `workers` supervised tasks share one bounded
//! mailbox; each runs one argon2 job at a time on a thread of its own. So at
//! most `workers` hashes run at once, at most `queue` wait, and a full queue
//! is answered at once: overload is a value, never a wait.
//!
//! The hash threads run at a lower CPU priority ([`HASH_NICE`]) than the
//! async runtime: when both want a core, the kernel preempts a hash for a
//! socket wake-up at once, so refusals and chat traffic are not held behind
//! a 17 ms hash (docs/OVERLOAD.md measures the difference). tokio's shared
//! blocking threads cannot be used for this: a raised nice value cannot be
//! lowered again without privileges.
//!
//! A job that panics takes its worker down with it (the caller gets
//! [`PoolError::Panicked`]); the supervisor restarts the worker (and with
//! it a fresh thread) and the other queued jobs carry on.

use std::{panic::AssertUnwindSafe, sync::mpsc, thread, time::Duration};

use supervisor::{CallError, ChildError, ChildSpec, Faults, Mailbox, Restart, ServerRef, call};
use tokio::sync::oneshot;

use crate::argon::Memory;

/// A job for the pool.
pub enum Job {
    Hash { password: String },
    Verify { password: String, hash: String },
}

/// `Hash` answers the PHC string, `Verify` whether the password matched.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Hashed(String),
    Verified(bool),
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every worker is busy and the queue is full.
    #[error("hash pool queue full")]
    Full,
    /// The worker holding the job died (a panic); it has been restarted.
    #[error("hash worker died")]
    Panicked,
    /// No answer in time, or the pool is stopped.
    #[error("hash pool unavailable")]
    Unavailable,
}

/// Clonable handle to the pool.
#[derive(Clone)]
pub struct HashPool {
    server: ServerRef<Job, Outcome>,
    mailbox: Mailbox<Job, Outcome>,
    workers: usize,
    faults: Faults,
}

/// Longest a caller waits for a queued job: a full queue drains in
/// `queue × 17 ms / workers`, far below this.
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// The hash threads' nice value: 10 gives a hash about a tenth of a core
/// against a busy runtime thread, and lets every wake-up preempt it.
pub const HASH_NICE: i32 = 10;

/// A job and where its result (or panic) goes.
type ThreadJob = (Job, oneshot::Sender<thread::Result<Outcome>>);

/// Starts a worker's hash thread. It ends when the sender is dropped (the
/// worker stopped or died), after the job it may be running.
fn hash_thread(name: String, faults: Faults) -> std::io::Result<mpsc::Sender<ThreadJob>> {
    let (tx, rx) = mpsc::channel::<ThreadJob>();
    thread::Builder::new().name(name).spawn(move || {
        lower_priority();
        // Kept between jobs (see the `argon` module); a panic ends the thread.
        let mut memory = Memory::default();
        for (job, reply) in rx {
            let done = std::panic::catch_unwind(AssertUnwindSafe(|| {
                faults.check("auth.hash");
                run(job, &mut memory)
            }));
            let _ = reply.send(done);
        }
    })?;
    Ok(tx)
}

/// Raises this thread's nice value (Linux applies it per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASH_NICE)
    {
        tracing::warn!(error = %e, "hash thread keeps the default CPU priority");
    }
}

fn run(job: Job, memory: &mut Memory) -> Outcome {
    match job {
        Job::Hash { password } => memory
            .hash(password.as_bytes())
            .map_or(Outcome::Failed, Outcome::Hashed),
        Job::Verify { password, hash } => {
            Outcome::Verified(memory.verify(password.as_bytes(), &hash))
        }
    }
}

impl HashPool {
    pub fn new(workers: usize, queue: usize, faults: Faults) -> Self {
        let (server, mailbox) = call::channel(queue.max(1));
        HashPool {
            server,
            mailbox,
            workers: workers.max(1),
            faults,
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The pool's workers, to start under a supervisor.
    pub fn child_specs(&self) -> Vec<ChildSpec> {
        (0..self.workers)
            .map(|i| {
                let mailbox = self.mailbox.clone();
                let faults = self.faults.clone();
                let name = format!("hash_worker_{i}");
                ChildSpec::worker(name.clone(), Restart::Permanent, move |ctx| {
                    let mailbox = mailbox.clone();
                    let thread = hash_thread(name.clone(), faults.clone());
                    Box::pin(async move {
                        let thread = thread?;
                        loop {
                            let req = tokio::select! {
                                () = ctx.cancelled() => return Ok(()),
                                req = mailbox.recv() => match req {
                                    Some(req) => req,
                                    None => return Ok(()),
                                },
                            };
                            let (tx, rx) = oneshot::channel();
                            if thread.send((req.request, tx)).is_err() {
                                return Err(ChildError::new("hash thread gone"));
                            }
                            match rx.await {
                                Ok(Ok(outcome)) => {
                                    let _ = req.reply.send(outcome);
                                }
                                // Die holding the reply: the caller learns, the supervisor restarts us.
                                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                                Err(_) => return Err(ChildError::new("hash thread gone")),
                            }
                        }
                    })
                })
            })
            .collect()
    }

    /// Queues a job and waits for its outcome.
    ///
    /// # Errors
    /// [`PoolError::Full`] at once when the queue is full; `Panicked` when the
    /// worker died with the job; `Unavailable` when the pool is stopped.
    pub async fn run(&self, job: Job) -> Result<Outcome, PoolError> {
        let pending = self.server.try_call(job).map_err(|e| match e {
            CallError::Full => PoolError::Full,
            _ => PoolError::Unavailable,
        })?;
        pending.wait(JOB_TIMEOUT).await.map_err(|e| match e {
            CallError::WorkerDied => PoolError::Panicked,
            _ => PoolError::Unavailable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervisor::SupervisorSpec;

    fn started(workers: usize, queue: usize) -> (HashPool, supervisor::SupervisorHandle, Faults) {
        let faults = Faults::default();
        let pool = HashPool::new(workers, queue, faults.clone());
        let mut spec = SupervisorSpec::new("auth").intensity(10, Duration::from_secs(10));
        for c in pool.child_specs() {
            spec = spec.child(c);
        }
        (pool, spec.start(), faults)
    }

    #[tokio::test]
    async fn hashes_and_verifies() {
        let (pool, tree, _) = started(2, 4);
        let Outcome::Hashed(h) = pool
            .run(Job::Hash {
                password: "pw".into(),
            })
            .await
            .unwrap()
        else {
            panic!("expected a hash")
        };
        let ok = pool
            .run(Job::Verify {
                password: "pw".into(),
                hash: h.clone(),
            })
            .await;
        assert_eq!(ok, Ok(Outcome::Verified(true)));
        let bad = pool
            .run(Job::Verify {
                password: "no".into(),
                hash: h,
            })
            .await;
        assert_eq!(bad, Ok(Outcome::Verified(false)));
        tree.shutdown().await;
    }

    /// The nice value of this process's threads named `name`.
    #[cfg(target_os = "linux")]
    fn nice_of_threads(name: &str) -> Vec<i32> {
        let tasks = std::fs::read_dir("/proc/self/task").unwrap();
        tasks
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                (comm.trim() == name).then_some(())?;
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                // Fields after the `(comm)`: state is field 3, nice field 19.
                let rest = stat.rsplit_once(')')?.1;
                rest.split_whitespace().nth(16)?.parse().ok()
            })
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_on_named_threads_below_the_runtime_priority() {
        let (pool, tree, _) = started(1, 4);
        let r = pool
            .run(Job::Hash {
                password: "pw".into(),
            })
            .await;
        assert!(matches!(r, Ok(Outcome::Hashed(_))), "{r:?}");
        // Other tests' pools may have a `hash_worker_0` of their own.
        let nice = nice_of_threads("hash_worker_0");
        assert!(
            !nice.is_empty() && nice.iter().all(|n| *n == HASH_NICE),
            "{nice:?}"
        );
        tree.shutdown().await;
    }

    #[tokio::test]
    async fn full_queue_is_answered_at_once() {
        // No workers started: nothing drains the queue of one.
        let pool = HashPool::new(1, 1, Faults::default());
        let queued = pool.server.try_call(Job::Hash {
            password: "a".into(),
        });
        assert!(queued.is_ok());
        assert_eq!(
            pool.run(Job::Hash {
                password: "b".into()
            })
            .await,
            Err(PoolError::Full)
        );
    }

    #[tokio::test]
    async fn a_panicking_job_fails_only_its_caller_and_the_worker_restarts() {
        let (pool, tree, faults) = started(1, 4);
        faults.arm("auth.hash", 1);
        assert_eq!(
            pool.run(Job::Hash {
                password: "a".into()
            })
            .await,
            Err(PoolError::Panicked)
        );
        assert!(matches!(
            pool.run(Job::Hash {
                password: "b".into()
            })
            .await,
            Ok(Outcome::Hashed(_))
        ));
        assert_eq!(tree.snapshot().children[0].restarts, 1);
        tree.shutdown().await;
    }
}
