//! Feedback: signals that move a queue's limits while it runs.
//!
//! - [`sampler`]: the [`Sampler`](sampler::Sampler) trait and samplers for CPU,
//!   tokio scheduling delay, downstream latency and hand-fed values.
//! - [`modifier`]: jobs-style step tables turning a sampler value (and how long
//!   it has been high) into a damping factor on the configured limits.
//! - [`adaptive`]: a concurrency limit found by AIMD or a gradient algorithm.
//! - `throughput`: what a queue admitted over the last ticks, where a
//!   tracking modifier cuts from.

pub mod adaptive;
pub mod modifier;
pub mod sampler;
pub(crate) mod throughput;
