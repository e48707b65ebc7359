//! The gateway's admission queues (the `regulator` crate), named as in
//! PROTOCOL.md: `connect`, `login`, `register`, `send`, `history`. A
//! rejection becomes the protocol's answer at once: `overloaded` with
//! `retry_after_ms`, or `rate_limited` for the user's own send rate.

use std::time::Duration;

use dialtone_proto::{ErrorCode, codes::Failure};
use regulator::{Permit, Reason, Regulator, Rejected, Request};

pub const CONNECT: &str = "connect";
pub const LOGIN: &str = "login";
pub const REGISTER: &str = "register";
pub const SEND: &str = "send";
pub const HISTORY: &str = "history";

/// A wait as `retry_after_ms`: rounded up, so that a client that waits
/// exactly that long has waited long enough, and at least 1.
pub fn retry_ms(wait: Duration) -> u64 {
    u64::try_from(wait.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Maps a rejection to the one protocol error it means.
pub fn failure(queue: &str, r: &Rejected) -> Failure {
    let ms = retry_ms(r.retry_after);
    match r.reason {
        Reason::KeyRate => Failure::retry(ErrorCode::RateLimited, "you are sending too fast", ms),
        reason => Failure::retry(
            ErrorCode::Overloaded,
            format!("`{queue}` queue refused the request ({reason})"),
            ms,
        ),
    }
}

/// Asks `queue` for a slot.
///
/// # Errors
/// The protocol failure for the rejection.
pub async fn admit(regulator: &Regulator, queue: &str, req: Request) -> Result<Permit, Failure> {
    regulator
        .ask(queue, req)
        .await
        .map_err(|r| failure(queue, &r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_hints_round_up_to_whole_milliseconds() {
        assert_eq!(retry_ms(Duration::ZERO), 1);
        assert_eq!(retry_ms(Duration::from_micros(10)), 1);
        assert_eq!(retry_ms(Duration::from_micros(1_001)), 2);
        assert_eq!(retry_ms(Duration::from_millis(2_000)), 2_000);
    }

    #[test]
    fn key_rate_is_rate_limited_and_everything_else_overloaded() {
        let r = |reason| Rejected {
            reason,
            retry_after: Duration::from_micros(10),
        };
        let f = failure("send", &r(Reason::KeyRate));
        assert_eq!(
            (f.code, f.retry_after_ms),
            (ErrorCode::RateLimited, Some(1))
        );
        for reason in [
            Reason::Rate,
            Reason::Concurrency,
            Reason::QueueFull,
            Reason::Timeout,
            Reason::PredictedTimeout,
            Reason::Codel,
        ] {
            let f = failure("login", &r(reason));
            assert_eq!(f.code, ErrorCode::Overloaded);
            assert!(f.retry_after_ms.is_some_and(|ms| ms >= 1));
        }
    }
}
