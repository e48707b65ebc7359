//! Admission control for tokio services, in the manner of Erlang's `jobs`,
//! tunable while running.
//!
//! A [`Regulator`] owns named queues. Each queue is a stack of regulators
//! (concurrency with per-job weights, rate as GCRA with burst, a rate shared
//! fairly by a group of queues, a per-key rate with a bounded key table) in
//! front of a bounded wait queue (FIFO, LIFO, CoDel or adaptive LIFO, with
//! `max_wait` and per-request deadlines). [`Regulator::ask`] answers with a
//! [`Permit`] (released on drop) or a [`Rejected`] value with a reason and a
//! `retry_after`: overload is a value, never an unbounded wait. Queues are
//! data ([`RegulatorConfig`]), retuned live ([`Regulator::retune`],
//! [`Regulator::reload`], [`Regulator::watch_file`]) without losing waiters or
//! rate state, and damped by feedback (samplers and step-table modifiers, or
//! an adaptive concurrency limit).
//!
//! This crate knows nothing about chat, HTTP or any protocol; it never blocks
//! a thread and never waits without a bound. Time comes from `tokio::time`
//! only, so every policy runs on tokio's paused clock in tests.
//!
//! Modules:
//! - [`config`]: configuration types, defaults, validation, JSON merge.
//! - `regulator`: the [`Regulator`] (queues by name, retune, reload, snapshot, feedback loop).
//! - `queue`: a [`Queue`] handle, the fast path, permit release, retune.
//! - `wait`: enqueueing, waiting, timeouts and cancellation.
//! - `dispatch`: serving waiters (disciplines, CoDel, expiry, rate timers).
//! - `limits`: the regulator stack of one queue (lock-free fast path).
//! - `gcra`, `group`, `keyed`: rate, group rate with fair shares, per-key rate.
//! - `waitq`, `codel`: wait queue storage and the RFC 8289 control law.
//! - [`feedback`]: samplers, modifiers, adaptive limits.
//! - `stats`: counters, `metrics` export, shedding log lines.
//! - `pad`: cache-line padding for the counters every ask writes.
//! - `jitter`: spreads retry hints (no retry storms in waves).
//! - [`layer`]: the tower `Layer`.
//! - [`watch`]: reload from a watched file.
//! - `request`, `reject`, `permit`: the values callers handle.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codel;
pub mod config;
mod dispatch;
pub mod feedback;
mod gcra;
mod group;
mod jitter;
mod keyed;
pub mod layer;
mod limits;
mod pad;
mod permit;
mod queue;
mod regulator;
mod reject;
mod request;
mod stats;
mod wait;
mod waitq;
pub mod watch;

pub use config::{
    AdaptiveConfig, Algorithm, ConfigError, Discipline, GroupConfig, ModifierConfig, QueueConfig,
    RegulatorConfig, Step, Track,
};
pub use feedback::sampler::{
    CpuSampler, LatencySampler, ManualSampler, Sampler, SchedDelaySampler,
};
pub use layer::{RegulatedError, RegulatorLayer, RegulatorService};
pub use permit::Permit;
pub use queue::Queue;
pub use regulator::{FeedbackLoop, Regulator};
pub use reject::{Reason, Rejected};
pub use request::{Priority, Request, hash_key};
pub use watch::WatchHandle;
