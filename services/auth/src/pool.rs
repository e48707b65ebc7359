//! The password-hashing pool: `workers` supervised tasks share one bounded
//! mailbox; each runs one argon2 job at a time on tokio's blocking threads.
//! So at most `workers` hashes run at once, at most `queue` wait, and a full
//! queue is answered at once: overload is a value, never a wait.
//!
//! A job that panics takes its worker down with it (the caller gets
//! [`PoolError::Panicked`]); the supervisor restarts the worker and the
//! other queued jobs carry on.

use std::time::Duration;

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier},
};
use supervisor::{CallError, ChildSpec, Faults, Mailbox, Restart, ServerRef, call};

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

fn run(job: Job) -> Outcome {
    match job {
        Job::Hash { password } => Argon2::default()
            .hash_password(password.as_bytes())
            .map_or(Outcome::Failed, |h| Outcome::Hashed(h.to_string())),
        Job::Verify { password, hash } => Outcome::Verified(
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok(),
        ),
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
                ChildSpec::worker(format!("hash_worker_{i}"), Restart::Permanent, move |ctx| {
                    let mailbox = mailbox.clone();
                    let faults = faults.clone();
                    Box::pin(async move {
                        loop {
                            let req = tokio::select! {
                                () = ctx.cancelled() => return Ok(()),
                                req = mailbox.recv() => match req {
                                    Some(req) => req,
                                    None => return Ok(()),
                                },
                            };
                            let faults = faults.clone();
                            let job = req.request;
                            let done = tokio::task::spawn_blocking(move || {
                                faults.check("auth.hash");
                                run(job)
                            })
                            .await;
                            match done {
                                Ok(outcome) => {
                                    let _ = req.reply.send(outcome);
                                }
                                // Die holding the reply: the caller learns, the supervisor restarts us.
                                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                                Err(_) => return Ok(()),
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
