//! A tower [`Layer`] so any tower or axum service can sit behind a queue.
//!
//! Admission is asked inside the response future, not in `poll_ready`: the
//! readiness of the inner service is kept in a clone taken at `call` (the
//! usual tower pattern), and the permit is held until the inner response
//! future completes or is dropped. A rejection surfaces as
//! [`RegulatedError::Rejected`], carrying the [`Rejected`] value (reason and
//! `retry_after`) for the caller to turn into a 503 or a protocol error.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::regulator::Regulator;
use crate::reject::Rejected;
use crate::request::Request;

/// Turns a service request into an admission [`Request`] (key, priority...).
pub trait Classify<R> {
    /// The admission request for `req`.
    fn classify(&self, req: &R) -> Request;
}

/// Every request is a default [`Request`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Uniform;

impl<R> Classify<R> for Uniform {
    fn classify(&self, _: &R) -> Request {
        Request::default()
    }
}

/// A closure used as a classifier.
#[derive(Clone, Copy, Debug)]
pub struct ClassifyFn<F>(pub F);

impl<R, F: Fn(&R) -> Request> Classify<R> for ClassifyFn<F> {
    fn classify(&self, req: &R) -> Request {
        (self.0)(req)
    }
}

/// Puts services behind queue `queue` of a [`Regulator`].
#[derive(Clone, Debug)]
pub struct RegulatorLayer<C = Uniform> {
    regulator: Regulator,
    queue: Arc<str>,
    classify: C,
}

impl RegulatorLayer<Uniform> {
    /// Every request asks `queue` with a default [`Request`]. The queue is
    /// looked up per call, so it may be configured (or retuned) later.
    pub fn new(regulator: Regulator, queue: &str) -> Self {
        Self {
            regulator,
            queue: Arc::from(queue),
            classify: Uniform,
        }
    }

    /// Uses `f` to build each admission request (per-key rate, priority, weight).
    pub fn with_classifier<F>(self, f: F) -> RegulatorLayer<ClassifyFn<F>> {
        RegulatorLayer {
            regulator: self.regulator,
            queue: self.queue,
            classify: ClassifyFn(f),
        }
    }
}

impl<S, C: Clone> Layer<S> for RegulatorLayer<C> {
    type Service = RegulatorService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RegulatorService {
            inner,
            regulator: self.regulator.clone(),
            queue: Arc::clone(&self.queue),
            classify: self.classify.clone(),
        }
    }
}

/// The service built by [`RegulatorLayer`].
#[derive(Clone, Debug)]
pub struct RegulatorService<S, C = Uniform> {
    inner: S,
    regulator: Regulator,
    queue: Arc<str>,
    classify: C,
}

/// Error of a [`RegulatorService`]: refused by the regulator, or the inner error.
#[derive(Debug)]
pub enum RegulatedError<E> {
    /// Not admitted.
    Rejected(Rejected),
    /// The inner service failed.
    Inner(E),
}

impl<E> RegulatedError<E> {
    /// The rejection, if that is what this is.
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            RegulatedError::Rejected(r) => Some(r),
            RegulatedError::Inner(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RegulatedError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegulatedError::Rejected(r) => r.fmt(f),
            RegulatedError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RegulatedError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegulatedError::Rejected(r) => Some(r),
            RegulatedError::Inner(e) => Some(e),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, C, R> Service<R> for RegulatorService<S, C>
where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
    C: Classify<R>,
{
    type Response = S::Response;
    type Error = RegulatedError<S::Error>;
    type Future = BoxFuture<Result<S::Response, RegulatedError<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(RegulatedError::Inner)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let admission = self.classify.classify(&req);
        // Keep the instance that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let regulator = self.regulator.clone();
        let queue = Arc::clone(&self.queue);
        Box::pin(async move {
            let permit = regulator
                .ask(&queue, admission)
                .await
                .map_err(RegulatedError::Rejected)?;
            let out = inner.call(req).await.map_err(RegulatedError::Inner);
            drop(permit);
            out
        })
    }
}
