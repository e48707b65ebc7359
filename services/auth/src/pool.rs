//! A fixed pool of OS threads for CPU-heavy work (argon2), with a bounded
//! queue. `run` never waits for a queue slot: a full queue is a value.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread,
};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every thread is busy and the queue is full.
    #[error("hash pool queue full")]
    Full,
    /// The job panicked; the thread survived and took the next job.
    #[error("hash job panicked")]
    Panicked,
}

/// Bounded thread pool. Dropping the last clone ends the threads once the
/// queue drains.
#[derive(Clone)]
pub struct HashPool {
    tx: SyncSender<Job>,
    panics: Arc<AtomicU64>,
    workers: usize,
}

impl HashPool {
    /// Starts `workers` threads sharing a queue of `queue` jobs.
    ///
    /// # Panics
    /// If the OS refuses to start a thread (startup only).
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let panics = Arc::new(AtomicU64::new(0));
        for i in 0..workers {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("auth-hash-{i}"))
                .spawn(move || work(&rx))
                .expect("start auth hash thread");
        }
        HashPool {
            tx,
            panics,
            workers,
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// How many jobs panicked since start (the threads survive them).
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Runs `f` on a pool thread.
    ///
    /// # Errors
    /// [`PoolError::Full`] at once when the queue is full; [`PoolError::Panicked`]
    /// when `f` panicked.
    ///
    /// The job is queued (or refused) when `run` is called, before the
    /// returned future is polled.
    ///
    /// # Cancel safety
    /// Dropping the future does not stop a job already queued; its result is dropped.
    pub fn run<T, F>(&self, f: F) -> impl Future<Output = Result<T, PoolError>> + Send + use<T, F>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let panics = self.panics.clone();
        let job: Job = Box::new(move || match catch_unwind(AssertUnwindSafe(f)) {
            // The caller may have gone away; nothing to tell then.
            Ok(v) => drop(tx.send(v)),
            Err(_) => {
                panics.fetch_add(1, Ordering::Relaxed);
            }
        });
        let queued = match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(PoolError::Full),
        };
        async move { queued?.await.map_err(|_| PoolError::Panicked) }
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // Hold the lock only to take one job, never while running it.
        let job = {
            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
            guard.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[tokio::test]
    async fn runs_jobs_and_returns_results() {
        let pool = HashPool::new(2, 4);
        assert_eq!(pool.run(|| 2 + 2).await, Ok(4));
    }

    #[tokio::test]
    async fn full_queue_is_answered_at_once() {
        let pool = HashPool::new(1, 1);
        let gate = Arc::new(Barrier::new(2));
        let (started_tx, started_rx) = oneshot::channel();
        let g = gate.clone();
        let busy = pool.run(move || {
            let _ = started_tx.send(());
            g.wait();
        });
        started_rx.await.unwrap();
        // The only thread is blocked: one job fits the queue, the next does not.
        let queued = pool.run(|| 1);
        assert_eq!(pool.run(|| 2).await, Err(PoolError::Full));
        gate.wait();
        assert_eq!(busy.await, Ok(()));
        assert_eq!(queued.await, Ok(1));
    }

    #[tokio::test]
    async fn a_panicking_job_reports_and_the_pool_survives() {
        let pool = HashPool::new(1, 4);
        let r: Result<(), _> = pool.run(|| panic!("boom")).await;
        assert_eq!(r, Err(PoolError::Panicked));
        assert_eq!(pool.panics(), 1);
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }
}
